//! A database node: its pool, its configured and observed role, its health (a circuit
//! breaker), its replication lag and position, and the units in flight on it.
//! Uses [`backend`](crate::backend) to ask a server about itself; knows nothing of routing.
//!
//! Health works like a circuit breaker. A connection-level failure (passive: any unit's error;
//! active: the monitor's check) opens it at once: the node is left out of routing. It is
//! re-admitted only when a check answers again. Checks of a down node back off exponentially
//! (`backoff_initial`, doubling up to `backoff_max`). Without a monitor (SQLite), the first
//! unit after the back-off is the check (half-open).

pub(crate) mod held;
pub mod monitor;
pub(crate) mod pools;
pub(crate) mod sessions;
pub mod stats;
pub mod status;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use sea_orm::{DatabaseConnection, DbErr};
use serde::Serialize;

use crate::backend::Dialect;
pub use crate::backend::{Probe, ServerRole};
use crate::consistency::{unix_ms, Position};
use crate::observe::record::{Address, NodeMetrics, Played};
pub use crate::observe::PoolUse;
use pools::Pools;
pub(crate) use sessions::Sessions;
use stats::NodeCounters;

/// The role a node was configured with, or reports.
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

/// Circuit-breaker settings of every node of a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Breaker {
    /// The first back-off after a failure.
    pub initial: Duration,
    /// The longest back-off.
    pub max: Duration,
}

/// One node of a [`ReplicatedDatabase`](crate::ReplicatedDatabase).
#[derive(Debug)]
pub struct Node {
    name: String,
    role: Role,
    redacted_url: String,
    pools: Pools,
    weight: u32,
    /// Client-side bound on one statement (the server-side `statement_timeout` plus a grace),
    /// so a node that stops answering cannot hold a caller.
    statement_bound: Option<Duration>,
    pub(crate) counters: NodeCounters,
    /// The node's metric keys, built once.
    pub(crate) metrics: NodeMetrics,
    /// Lag and health at the monitor's last rounds, for the status page's chart.
    history: Mutex<VecDeque<Sample>>,
    epoch: Instant,
    breaker: Breaker,
    /// True while the circuit is open (the node failed and has not answered a check since).
    down: AtomicBool,
    /// Taken out of read routing by hand ([`ReplicatedDatabase::drain`](crate::ReplicatedDatabase::drain)).
    drained: AtomicBool,
    /// Consecutive failures; sets the back-off.
    failures: AtomicU32,
    /// Milliseconds since `epoch` when the node may next be checked (or tried, unmonitored).
    retry_at_ms: AtomicU64,
    /// Milliseconds since `epoch` when the node went down.
    down_since_ms: AtomicU64,
    /// True when a background monitor re-admits the node (otherwise: half-open after back-off).
    monitored: AtomicBool,
    last_error: Mutex<Option<String>>,
    observed: AtomicU8,
    term: AtomicU64,
    /// Units currently routed here and not finished.
    in_flight: AtomicUsize,
    /// Health checks that answered.
    checks: AtomicU64,
    /// Milliseconds since `epoch` when the last check that answered got its answer (0: none).
    last_check_ms: AtomicU64,
    /// The highest replay position this node is known to have reached. Replay only moves
    /// forward, so an old reading is a safe lower bound.
    replayed: RwLock<Position>,
    /// Replication lag in milliseconds as last measured; `u64::MAX` while unknown.
    lag_ms: AtomicU64,
    /// The highest position this node is known to have written while it was the primary: its
    /// own position at the monitor's checks, and every commit position read from it. Kept
    /// apart from `replayed`, so a demoted primary's lost writes never count as replayed.
    written: RwLock<Position>,
    /// Serialises on-demand reads of the primary's position (for a token beyond `written`);
    /// holds when the last one started.
    written_refresh: tokio::sync::Mutex<Option<Instant>>,
    /// While this node is the primary: the positions the monitor's checks found, with when,
    /// so a replica's lag can be bounded by when the primary last was where the replica is.
    written_at: Mutex<VecDeque<Written>>,
}

/// A position a primary reported, and the checks that found it there.
#[derive(Debug, Clone)]
struct Written {
    position: Position,
    /// When the last check that found it there was sent: every commit acknowledged before
    /// then is at or below `position`.
    last_sent: Instant,
}

/// How many distinct primary positions a node remembers (with a check every 500 ms and
/// steady writes, about two minutes).
const WRITTEN_HISTORY: usize = 256;

const LAG_UNKNOWN: u64 = u64::MAX;

/// The default circuit breaker: first re-check after 500 ms, then doubling up to 10 s.
pub(crate) const DEFAULT_BREAKER: Breaker = Breaker {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(10),
};

/// How much longer than the server-side statement timeout the client waits for an answer.
const STATEMENT_GRACE: Duration = Duration::from_millis(250);

/// Parameters of a new node.
pub(crate) struct NodeParts {
    pub name: String,
    pub role: Role,
    pub redacted_url: String,
    pub pools: Pools,
    pub weight: u32,
    pub statement_timeout: Option<Duration>,
    pub breaker: Breaker,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2)
}

/// One point of a node's recent history: when, its lag then (`None`: unknown), and whether it
/// was up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Replication lag in milliseconds; `None` while unknown (down, or not a replica).
    pub lag_ms: Option<u64>,
    /// Up (in routing) then.
    pub up: bool,
}

/// How many samples a node keeps: ten minutes at the default 500 ms monitor interval.
const HISTORY: usize = 1200;

impl Node {
    pub(crate) fn new(parts: NodeParts) -> Self {
        let metrics = NodeMetrics::new(&parts.name, &Address::of(&parts.redacted_url));
        Node {
            metrics,
            history: Mutex::new(VecDeque::new()),
            name: parts.name,
            role: parts.role,
            redacted_url: parts.redacted_url,
            pools: parts.pools,
            weight: parts.weight.max(1),
            statement_bound: parts.statement_timeout.map(|t| t + STATEMENT_GRACE),
            counters: NodeCounters::default(),
            epoch: Instant::now(),
            breaker: parts.breaker,
            down: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            retry_at_ms: AtomicU64::new(0),
            down_since_ms: AtomicU64::new(0),
            monitored: AtomicBool::new(false),
            last_error: Mutex::new(None),
            observed: AtomicU8::new(ServerRole::Unknown.to_u8()),
            term: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            checks: AtomicU64::new(0),
            last_check_ms: AtomicU64::new(0),
            replayed: RwLock::new(Position::None),
            lag_ms: AtomicU64::new(LAG_UNKNOWN),
            written: RwLock::new(Position::None),
            written_refresh: tokio::sync::Mutex::new(None),
            written_at: Mutex::new(VecDeque::new()),
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The role the node was configured with. What it is now: [`server_role`](Self::server_role).
    pub fn role(&self) -> Role {
        self.role
    }

    /// What the server said it is at the last check.
    pub fn server_role(&self) -> ServerRole {
        ServerRole::from_u8(self.observed.load(Ordering::Relaxed))
    }

    /// The term the server reported at the last check (PostgreSQL: WAL timeline of a primary).
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Relaxed)
    }

    /// The node's URL with any password redacted.
    pub fn url(&self) -> &str {
        &self.redacted_url
    }

    /// The node's weight for [`Weighted`](crate::routing::Weighted) balancing (default 1).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Units routed to this node that have not finished yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The node's read-write SeaORM connection pool (migrations, read-write units).
    /// Statements run here bypass routing and stats. (Idle connections the library holds go
    /// back to this pool first, so none is kept from it.)
    pub fn connection(&self) -> &DatabaseConnection {
        if let Some(held) = &self.pools.rw_held {
            held.give_back_idle();
        }
        &self.pools.rw
    }

    /// The node's read-only pool: sessions the server holds read-only (PostgreSQL
    /// `default_transaction_read_only`, MariaDB `SET SESSION TRANSACTION READ ONLY`, SQLite
    /// opened read-only with `query_only`). Every read-only unit runs here, never on
    /// [`connection`](Self::connection).
    pub fn read_connection(&self) -> &DatabaseConnection {
        if let Some(held) = &self.pools.ro_held {
            held.give_back_idle();
        }
        &self.pools.ro
    }

    /// The read-only (`read_only`) or read-write sessions, as the library runs statements on
    /// them: held between uses on PostgreSQL and MariaDB (see [`held`]), the SeaORM pool on
    /// SQLite.
    pub(crate) fn sessions(&self, read_only: bool) -> Sessions<'_> {
        let (held, pool) = if read_only {
            (&self.pools.ro_held, &self.pools.ro)
        } else {
            (&self.pools.rw_held, &self.pools.rw)
        };
        match held {
            Some(held) => Sessions::Held(held),
            None => Sessions::Pool(pool),
        }
    }

    /// The health checks' own connection (a pool of one read-only session no unit uses), so
    /// that a saturated application pool never delays a check. SQLite has none (no monitor).
    pub(crate) fn check_connection(&self) -> DatabaseConnection {
        match &self.pools.check {
            Some(check) => check.get(),
            None => self.pools.ro.clone(),
        }
    }

    /// After a check that did not finish: its connection is dropped, not waited for, and the
    /// next check opens a new one.
    pub(crate) fn reset_check_connection(&self) {
        if let Some(check) = &self.pools.check {
            check.reset();
        }
    }

    /// The node's SQL dialect.
    pub fn dialect(&self) -> Dialect {
        Dialect(self.pools.rw.get_database_backend())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX / 2)
    }

    /// True when routing may use the node: its circuit is closed, or (with no monitor to
    /// re-admit it) its back-off has passed and the next unit is the trial.
    pub fn is_available(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
            || (!self.monitored.load(Ordering::Relaxed)
                && self.now_ms() >= self.retry_at_ms.load(Ordering::Relaxed))
    }

    /// True while the node is down (its circuit open), whether or not a trial is due.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// How long the node has been down; `None` while it is up.
    pub fn down_for(&self) -> Option<Duration> {
        self.is_down().then(|| {
            Duration::from_millis(
                self.now_ms()
                    .saturating_sub(self.down_since_ms.load(Ordering::Relaxed)),
            )
        })
    }

    /// The last failure seen on the node (connection error, failed or timed-out check).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// True when the monitor should check the node now: always while up, and after the
    /// back-off while down.
    pub(crate) fn due_for_check(&self) -> bool {
        !self.is_down() || self.now_ms() >= self.retry_at_ms.load(Ordering::Relaxed)
    }

    /// True while the node is taken out of read routing by hand.
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    pub(crate) fn set_drained(&self, drained: bool) {
        if self.drained.swap(drained, Ordering::Relaxed) != drained {
            tracing::warn!(node = %self.name, drained, "node taken {} read routing by hand", if drained { "out of" } else { "back into" });
        }
    }

    pub(crate) fn is_monitored(&self) -> bool {
        self.monitored.load(Ordering::Relaxed)
    }

    pub(crate) fn set_monitored(&self) {
        self.monitored.store(true, Ordering::Relaxed);
    }

    /// Opens the circuit: the node is left out until a check answers (or, unmonitored, until
    /// its back-off passes). Each consecutive failure doubles the back-off.
    pub(crate) fn mark_down(&self, why: &str) {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let backoff = self
            .breaker
            .initial
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.breaker.max);
        let now = self.now_ms();
        // connections opened before now are not handed out again (see `pools::Failures`)
        self.pools.failures.note();
        self.retry_at_ms.store(now + ms(backoff), Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            self.down_since_ms.store(now, Ordering::Relaxed);
            tracing::warn!(node = %self.name, reason = why, "node down; next check in {backoff:?}");
            self.metrics.breaker(true);
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_owned());
        self.set_lag(None);
    }

    /// Closes the circuit after a successful check or trial.
    pub(crate) fn mark_up(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(node = %self.name, "node answers again: back in routing");
            self.metrics.breaker(false);
        }
    }

    /// How many health checks of this node have answered (the monitor's heartbeat).
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// Records what a health check found (answered at `answered`), and re-admits the node.
    /// The lag is set by the round once every check has answered
    /// ([`set_lag`](Self::set_lag)): a replica's lag is best read against its primary.
    pub(crate) fn record_probe(&self, probe: &Probe, answered: Instant) {
        self.checks.fetch_add(1, Ordering::Relaxed);
        let at = u64::try_from(answered.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX / 2)
            .max(1);
        self.last_check_ms.fetch_max(at, Ordering::Relaxed);
        let before = ServerRole::from_u8(self.observed.swap(probe.role.to_u8(), Ordering::Relaxed));
        if self.role == Role::Primary
            && probe.role == ServerRole::Replica
            && before != ServerRole::Replica
        {
            tracing::error!(
                node = %self.name,
                "node configured as a primary reports being a replica (in recovery / read_only): it takes no writes"
            );
        }
        self.term.store(probe.term, Ordering::Relaxed);
        match probe.role {
            ServerRole::Replica => self.observe_position(&probe.position),
            ServerRole::Primary => self.observe_written(&probe.position),
            _ => {}
        }
        self.mark_up();
    }

    /// True when a check sent to this node by the monitor answered at or after `since_ms`
    /// (milliseconds since `epoch`): the node was alive then.
    fn answered_check_since(&self, since_ms: u64) -> bool {
        self.monitored.load(Ordering::Relaxed)
            && self.last_check_ms.load(Ordering::Relaxed) >= since_ms.max(1)
    }

    /// While this node is the primary: remembers that a check sent at `sent` found it at
    /// `position`.
    pub(crate) fn note_written_at(&self, position: &Position, sent: Instant) {
        let mut history = self.written_at.lock().unwrap_or_else(|p| p.into_inner());
        match history.back_mut() {
            Some(last) if last.position == *position => last.last_sent = last.last_sent.max(sent),
            _ => {
                if history.len() == WRITTEN_HISTORY {
                    history.pop_front();
                }
                history.push_back(Written {
                    position: position.clone(),
                    last_sent: sent,
                });
            }
        }
    }

    /// The last time a check found this node (as the primary) at a position `replayed` has
    /// reached: everything committed before then, a replica at `replayed` has. `None` when
    /// the history does not go back that far.
    pub(crate) fn last_written_at_or_below(&self, replayed: &Position) -> Option<Instant> {
        let history = self.written_at.lock().unwrap_or_else(|p| p.into_inner());
        history
            .iter()
            .rev()
            .find(|w| replayed.has_reached(&w.position))
            .map(|w| w.last_sent)
    }

    /// Runs `fut` (one statement or transaction step on this node) within the node's
    /// client-side statement bound; past it, the node is taken down and the caller gets a
    /// connection-level error instead of waiting on a server that does not answer.
    pub(crate) async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, DbErr>>,
    ) -> Result<T, DbErr> {
        let started = self.now_ms();
        let mut timed_out = false;
        let result = match self.statement_bound {
            Some(bound) => match tokio::time::timeout(bound, fut).await {
                Ok(result) => result,
                Err(_) => {
                    timed_out = true;
                    Err(crate::ReplicaError::Timeout {
                        node: self.name.clone(),
                        after: bound,
                    }
                    .into())
                }
            },
            None => fut.await,
        };
        match &result {
            // the bound covers the wait for a pooled connection too: when the monitor's own
            // connection got an answer meanwhile, the node is alive and the time went to a
            // full pool or a slow statement, which is no reason to take the node out
            Err(_) if timed_out && self.answered_check_since(started) => {
                tracing::debug!(node = %self.name, "statement bound passed while the node answered its checks: node stays in");
            }
            Err(err) => self.observe_error(err),
            Ok(_) if !self.monitored.load(Ordering::Relaxed) && self.is_down() => self.mark_up(),
            Ok(_) => {}
        }
        result
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

    /// The highest position this node is known to have written as the primary (the monitor's
    /// checks and the commits read from it). Causal tokens beyond the current primary's
    /// position are refused; see [`routing`](crate::routing).
    pub fn written_position(&self) -> Position {
        self.written
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// True when this node is known to have written (as the primary) up to `wanted`.
    pub(crate) fn has_written(&self, wanted: &Position) -> bool {
        self.written
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .has_reached(wanted)
    }

    /// Records a position read from this node as the primary (keeping the later one).
    pub(crate) fn observe_written(&self, seen: &Position) {
        let mut known = self.written.write().unwrap_or_else(|p| p.into_inner());
        *known = known.merge(seen);
    }

    /// The lock that serialises on-demand reads of this node's written position; it holds
    /// when the last read started.
    pub(crate) fn written_refresh(&self) -> &tokio::sync::Mutex<Option<Instant>> {
        &self.written_refresh
    }

    /// Looks at an error from this node; a connection-level one opens its circuit. A pool
    /// that timed out handing out a connection does not: it says the application's pool is
    /// full, not that the node failed (the monitor checks on a connection of its own, and
    /// takes the node out if it really does not answer).
    pub(crate) fn observe_error(&self, err: &DbErr) {
        if is_pool_timeout(err) {
            tracing::debug!(node = %self.name, "pool timed out: the node stays in (the monitor decides)");
            return;
        }
        if crate::ReplicaError::is_connection_level(err) {
            self.mark_down(&err.to_string());
        }
    }

    /// The role this node plays now, for spans and metrics: what the server reported at the
    /// last check, the configured role until then.
    pub(crate) fn played(&self) -> Played {
        match (self.server_role(), self.role) {
            (ServerRole::Primary, _) | (ServerRole::Unknown, Role::Primary) => Played::Primary,
            _ => Played::Replica,
        }
    }

    /// Its pools' connections now: read-write sessions, then read-only ones.
    pub fn pool_use(&self) -> [PoolUse; 2] {
        [
            pools::pool_use(&self.pools.rw),
            pools::pool_use(&self.pools.ro),
        ]
    }

    /// After a monitor round (or a status read on a handle without a monitor): publishes the
    /// node's gauges (lag, breaker, units in flight, pools) and keeps a sample of its lag for
    /// the status page's chart.
    pub(crate) fn publish(&self) {
        let up = !self.is_down();
        let lag = self.lag();
        self.metrics.lag(lag);
        self.metrics.breaker(!up);
        self.metrics.in_flight(self.in_flight());
        let [rw, ro] = self.pool_use();
        self.metrics.pool(false, rw);
        self.metrics.pool(true, ro);
        let at_ms = unix_ms();
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() >= HISTORY {
            history.pop_front();
        }
        history.push_back(Sample {
            at_ms,
            lag_ms: lag.map(ms),
            up,
        });
    }

    /// The samples of the last `window` (oldest first).
    pub fn history(&self, window: Duration) -> Vec<Sample> {
        let from = unix_ms().saturating_sub(ms(window));
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history
            .iter()
            .filter(|s| s.at_ms >= from)
            .copied()
            .collect()
    }

    /// Counts a unit in flight here until the guard drops.
    pub(crate) fn enter(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// True for "no connection free in the pool in time" (sqlx `PoolTimedOut`).
fn is_pool_timeout(err: &DbErr) -> bool {
    use sea_orm::{ConnAcquireErr, RuntimeErr};
    match err {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout) => true,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e)) => {
            matches!(**e, sea_orm::sqlx::Error::PoolTimedOut)
        }
        _ => false,
    }
}

/// A unit in flight on a node; dropping it ends the unit there.
#[derive(Debug)]
pub(crate) struct InFlight(std::sync::Arc<Node>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;

    /// Replicas `r0`, `r1`, … with these weights; their pools are never used.
    pub(crate) fn nodes(weights: &[u32]) -> Vec<Arc<Node>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| {
                Arc::new(Node::new(NodeParts {
                    name: format!("r{i}"),
                    role: Role::Replica,
                    redacted_url: String::new(),
                    pools: Pools::unused(), // never used: no I/O here
                    weight,
                    statement_timeout: None,
                    breaker: DEFAULT_BREAKER,
                }))
            })
            .collect()
    }

    #[test]
    fn a_failed_node_stays_out_until_its_backoff_passes_unmonitored() {
        let one = nodes(&[1]);
        assert!(one[0].is_available());
        one[0].mark_down("connection refused");
        assert!(!one[0].is_available() && one[0].is_down());
        assert_eq!(one[0].last_error().as_deref(), Some("connection refused"));
        one[0].mark_up();
        assert!(one[0].is_available() && one[0].down_for().is_none());
    }
}
