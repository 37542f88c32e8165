//! Where work went: counters per node, and a snapshot of them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::node::{Node, Role};

/// Live counters of one node.
#[derive(Debug, Default)]
pub(crate) struct NodeCounters {
    pub units: AtomicU64,
    pub statements: AtomicU64,
    pub acquisitions: AtomicU64,
}

impl NodeCounters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Handle-wide counters.
#[derive(Debug, Default)]
pub(crate) struct HandleCounters {
    pub units_opened: AtomicU64,
    pub fallbacks: AtomicU64,
}

/// What one node has served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStats {
    /// The node's name.
    pub name: String,
    /// Its configured role.
    pub role: Role,
    /// Units of work routed to it (units that ran at least one statement).
    pub units: u64,
    /// Statements it ran for units, scopes and the handle.
    pub statements: u64,
    /// Connections taken from its pool: one per transaction, one per statement outside one.
    pub acquisitions: u64,
}

/// A point-in-time copy of the handle's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Every node, primary first.
    pub nodes: Vec<NodeStats>,
    /// Units of work opened, including those that never ran a statement.
    pub units_opened: u64,
    /// Read-only units that ran on the primary because no replica was eligible.
    pub fallbacks: u64,
}

impl StatsSnapshot {
    pub(crate) fn collect<'a>(
        nodes: impl Iterator<Item = &'a Node>,
        handle: &HandleCounters,
    ) -> Self {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            nodes: nodes
                .map(|n| NodeStats {
                    name: n.name().to_owned(),
                    role: n.role(),
                    units: load(&n.counters.units),
                    statements: load(&n.counters.statements),
                    acquisitions: load(&n.counters.acquisitions),
                })
                .collect(),
            units_opened: load(&handle.units_opened),
            fallbacks: load(&handle.fallbacks),
        }
    }

    /// The stats of the node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeStats> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Pool acquisitions over all nodes.
    pub fn total_acquisitions(&self) -> u64 {
        self.nodes.iter().map(|n| n.acquisitions).sum()
    }
}

impl std::fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<16} {:<8} {:>8} {:>11} {:>13}",
            "node", "role", "units", "statements", "acquisitions"
        )?;
        for n in &self.nodes {
            writeln!(
                f,
                "{:<16} {:<8} {:>8} {:>11} {:>13}",
                n.name, n.role, n.units, n.statements, n.acquisitions
            )?;
        }
        write!(
            f,
            "units opened: {}, fallbacks to primary: {}",
            self.units_opened, self.fallbacks
        )
    }
}
