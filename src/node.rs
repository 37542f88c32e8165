//! A database node: its pool, its role, its counters and whether it is currently usable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use sea_orm::{DatabaseConnection, DbErr};
use serde::Serialize;

use crate::backend::Dialect;
use crate::consistency::Position;
use crate::stats::NodeCounters;

/// The role a node was configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Takes writes and migrations.
    Primary,
    /// Serves read-only units.
    Replica,
}

impl Role {
    /// `"primary"` or `"replica"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node of a [`ReplicatedDatabase`](crate::ReplicatedDatabase).
#[derive(Debug)]
pub struct Node {
    name: String,
    role: Role,
    redacted_url: String,
    conn: DatabaseConnection,
    pub(crate) counters: NodeCounters,
    /// Milliseconds since `epoch` before which the node is skipped (passive health).
    down_until_ms: AtomicU64,
    epoch: Instant,
    /// The highest replay position this node is known to have reached. Replay only moves
    /// forward, so an old reading is a safe lower bound.
    replayed: RwLock<Position>,
    /// Replication lag in milliseconds as last measured; `u64::MAX` while unknown.
    lag_ms: AtomicU64,
}

const LAG_UNKNOWN: u64 = u64::MAX;

/// How long a node that failed at the connection level is left out of routing.
pub(crate) const PASSIVE_COOLDOWN: Duration = Duration::from_secs(1);

impl Node {
    pub(crate) fn new(
        name: String,
        role: Role,
        redacted_url: String,
        conn: DatabaseConnection,
    ) -> Self {
        Node {
            name,
            role,
            redacted_url,
            conn,
            counters: NodeCounters::default(),
            down_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            replayed: RwLock::new(Position::None),
            lag_ms: AtomicU64::new(LAG_UNKNOWN),
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's configured role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The node's URL with any password redacted.
    pub fn url(&self) -> &str {
        &self.redacted_url
    }

    /// The node's SeaORM connection pool. Statements run here bypass routing and stats.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// The node's SQL dialect.
    pub fn dialect(&self) -> Dialect {
        Dialect(self.conn.get_database_backend())
    }

    /// False while the node is left out after a connection-level failure.
    pub fn is_available(&self) -> bool {
        self.elapsed_ms() >= self.down_until_ms.load(Ordering::Relaxed)
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Replication lag as last measured by the monitor; `None` while unknown.
    pub fn lag(&self) -> Option<Duration> {
        match self.lag_ms.load(Ordering::Relaxed) {
            LAG_UNKNOWN => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    pub(crate) fn set_lag(&self, lag: Option<Duration>) {
        let ms = lag.map_or(LAG_UNKNOWN, |d| {
            u64::try_from(d.as_millis()).unwrap_or(LAG_UNKNOWN - 1)
        });
        self.lag_ms.store(ms, Ordering::Relaxed);
    }

    /// True when the node's measured lag is within `bound` (an unknown lag is not).
    pub(crate) fn lag_within(&self, bound: Duration) -> bool {
        self.lag().is_some_and(|lag| lag <= bound)
    }

    /// The highest replay position this node is known to have reached.
    pub fn known_position(&self) -> Position {
        self.replayed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// True when the node is known to have replayed `wanted`, without asking it.
    pub(crate) fn known_to_have(&self, wanted: &Position) -> bool {
        self.replayed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .has_reached(wanted)
    }

    /// Records a replay position read from the node (keeping the later one).
    pub(crate) fn observe_position(&self, seen: &Position) {
        let mut known = self.replayed.write().unwrap_or_else(|p| p.into_inner());
        *known = known.merge(seen);
    }

    /// Looks at an error from this node; a connection-level one takes the node out of routing
    /// for a short cool-down.
    pub(crate) fn observe_error(&self, err: &DbErr) {
        if matches!(err, DbErr::Conn(_) | DbErr::ConnectionAcquire(_)) {
            let until = self.elapsed_ms() + PASSIVE_COOLDOWN.as_millis() as u64;
            self.down_until_ms.store(until, Ordering::Relaxed);
            tracing::warn!(node = %self.name, error = %err, "node failed at the connection level; left out for {:?}", PASSIVE_COOLDOWN);
        }
    }
}
