//! The status view: every node, its role, health, lag and load — what pgpool's
//! `SHOW POOL_NODES` shows, from [`ReplicatedDatabase::status`](crate::ReplicatedDatabase::status).
//! The router fills it in (it knows the current primary and which nodes are fenced).

use std::time::Duration;

use serde::Serialize;

use super::{Role, ServerRole};

/// One node's line in the [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// The node's name.
    pub name: String,
    /// The URL, password redacted.
    pub url: String,
    /// The role it was configured with.
    pub configured: Role,
    /// What the server reported at the last check.
    pub server_role: ServerRole,
    /// True for the node read-write units go to now.
    pub current_primary: bool,
    /// True for a node that reports being a primary but is not the one in use (an old
    /// primary that came back, or a split brain): it gets no units.
    pub fenced: bool,
    /// Taken out of read routing by hand ([`drain`](crate::ReplicatedDatabase::drain)).
    pub drained: bool,
    /// Up (in routing) or down (its circuit open).
    pub up: bool,
    /// How long it has been down.
    pub down_for: Option<Duration>,
    /// The last failure seen on it.
    pub last_error: Option<String>,
    /// Replication lag as last measured; `None` when unknown or not a replica.
    pub lag: Option<Duration>,
    /// The server's term (PostgreSQL: timeline of a primary).
    pub term: u64,
    /// Units running on it now.
    pub in_flight: usize,
    /// Units it has served.
    pub units: u64,
    /// Its pools' connections: read-write sessions, then read-only ones.
    pub pools: [super::PoolUse; 2],
    /// What is off about the node, in words, when something is: a configured primary that
    /// reports being a replica (it takes no writes), a fenced primary, a replica that took over.
    pub note: Option<String>,
}

impl NodeStatus {
    /// True for the node read-write units go to while it reports being a replica: read-write
    /// units fail with [`NoPrimary`](crate::ReplicaError::NoPrimary) until a node reports
    /// being the primary.
    pub fn refuses_writes(&self) -> bool {
        self.current_primary && self.server_role == ServerRole::Replica
    }

    /// What its routing column says: `read-write`, `no writes` (the primary reports being a
    /// replica), `read-only`, `drained` (out of read routing by hand), `fenced` or `standby`.
    pub fn routing(&self) -> &'static str {
        match (self.current_primary, self.fenced, self.configured) {
            (true, _, _) if self.refuses_writes() => "no writes",
            (true, _, _) => "read-write",
            (false, true, _) => "fenced",
            (false, false, _) if self.drained => "drained",
            (false, false, Role::Replica) if self.server_role != ServerRole::Primary => "read-only",
            _ => "standby",
        }
    }
}

/// A snapshot of every node of a handle. `Display` prints a table.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Configured primaries first, then replicas.
    pub nodes: Vec<NodeStatus>,
}

impl Status {
    /// The line of the node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the node column fits the longest name (sharded names: `shard/node`)
        let w = self
            .nodes
            .iter()
            .map(|n| n.name.chars().count())
            .max()
            .unwrap_or(0)
            .max(14);
        writeln!(
            f,
            "{:<w$} {:<9} {:<8} {:<14} {:<16} {:>9} {:>9} {:>9}",
            "node", "config", "server", "routing", "health", "lag", "in flight", "units"
        )?;
        for n in &self.nodes {
            let routing = n.routing();
            let health = match n.down_for {
                None => "up".to_owned(),
                Some(d) => format!("down {:.1}s", d.as_secs_f64()),
            };
            let lag = n
                .lag
                .map_or("-".to_owned(), |d| format!("{}ms", d.as_millis()));
            writeln!(
                f,
                "{:<w$} {:<9} {:<8} {:<14} {:<16} {:>9} {:>9} {:>9}",
                n.name,
                n.configured.as_str(),
                n.server_role.as_str(),
                routing,
                health,
                lag,
                n.in_flight,
                n.units
            )?;
            if let Some(note) = &n.note {
                writeln!(f, "    note: {note}")?;
            }
            if let Some(err) = &n.last_error {
                writeln!(f, "    last error: {err}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(configured: Role, server_role: ServerRole, current_primary: bool) -> NodeStatus {
        NodeStatus {
            name: "primary".into(),
            url: "postgres://app@db/app".into(),
            configured,
            server_role,
            current_primary,
            fenced: false,
            drained: false,
            up: true,
            down_for: None,
            last_error: None,
            lag: None,
            term: 0,
            in_flight: 0,
            units: 0,
            pools: Default::default(),
            note: None,
        }
    }

    #[test]
    fn a_primary_that_reports_being_a_replica_takes_no_writes_in_the_view() {
        let mut bad = line(Role::Primary, ServerRole::Replica, true);
        bad.note = Some("configured as a primary, but the server reports being a replica".into());
        assert!(bad.refuses_writes());
        assert_eq!(bad.routing(), "no writes");
        let text = Status { nodes: vec![bad] }.to_string();
        assert!(
            text.contains("no writes") && text.contains("note: configured as a primary"),
            "{text}"
        );
        assert!(!text.contains("read-write"), "{text}");
        let good = line(Role::Primary, ServerRole::Primary, true);
        assert!(!good.refuses_writes());
        assert_eq!(good.routing(), "read-write");
    }
}
