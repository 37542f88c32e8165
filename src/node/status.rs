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
        writeln!(
            f,
            "{:<14} {:<9} {:<8} {:<14} {:<16} {:>9} {:>9} {:>9}",
            "node", "config", "server", "routing", "health", "lag", "in flight", "units"
        )?;
        for n in &self.nodes {
            let routing = match (n.current_primary, n.fenced, n.configured) {
                (true, _, _) => "read-write",
                (false, true, _) => "fenced",
                (false, false, Role::Replica) if n.server_role != ServerRole::Primary => {
                    "read-only"
                }
                _ => "standby",
            };
            let health = match n.down_for {
                None => "up".to_owned(),
                Some(d) => format!("down {:.1}s", d.as_secs_f64()),
            };
            let lag = n
                .lag
                .map_or("-".to_owned(), |d| format!("{}ms", d.as_millis()));
            writeln!(
                f,
                "{:<14} {:<9} {:<8} {:<14} {:<16} {:>9} {:>9} {:>9}",
                n.name,
                n.configured.as_str(),
                n.server_role.as_str(),
                routing,
                health,
                lag,
                n.in_flight,
                n.units
            )?;
            if let Some(err) = &n.last_error {
                writeln!(f, "    last error: {err}")?;
            }
        }
        Ok(())
    }
}
