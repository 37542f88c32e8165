//! The replicated database handle and its builder.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseConnectionType, DbBackend, DbErr,
    ExecResult, IsolationLevel, QueryResult, Statement, StreamTrait, TransactionError,
    TransactionOptions, TransactionTrait,
};

use crate::config::{check_duration, Fallback, NodeConfig, ReplicaConfig, ValidNode};
use crate::consistency::Consistency;
use crate::node::monitor::{spawn_monitor, DEFAULT_CHECK_TIMEOUT, DEFAULT_MONITOR_INTERVAL};
use crate::node::pools::{PoolSettings, Pools};
use crate::node::stats::{HandleCounters, NodeCounters, StatsSnapshot};
use crate::node::status::Status;
use crate::node::{Breaker, Node, NodeParts, Role, DEFAULT_BREAKER};
use crate::routing::election::{check_nodes, first_round};
use crate::routing::read::route_read;
use crate::routing::{Balancer, Balancing, Route, RouteReason, Router};
use crate::unit::access::{Access, ReadOnly, ReadWrite, Writable};
use crate::unit::replicated_txn::ReplicatedTransaction;
use crate::unit::scope::{
    in_any_scope, in_read_only_scope, note_write, pin_route, pinned_route, read_consistency,
    record_write, wants_tokens,
};
use crate::unit::statement_kind::{classify, read_check, StatementKind};
use crate::unit::txn::OwnTxn;
use crate::unit::{run_in, UnitOfWork, UnitOptions, UnitStream};
use crate::ReplicaError;

/// A primary and its replicas, each a SeaORM [`DatabaseConnection`] pool.
///
/// Cheap to clone (one `Arc`). Used directly, as a [`ConnectionTrait`], it runs everything on
/// the primary — the safe default — except inside a [`read_only_scope`](crate::read_only_scope),
/// where reads go to a replica and writes are refused. Units of work route by their type:
/// [`begin_read_only`](Self::begin_read_only) / [`read_only`](Self::read_only) to a replica,
/// [`begin_read_write`](Self::begin_read_write) / [`read_write`](Self::read_write) to the primary.
#[derive(Clone, Debug)]
pub struct ReplicatedDatabase {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    router: Router,
    backend: DbBackend,
    counters: HandleCounters,
    retry: ReadRetry,
    replay: crate::replay::ReplayBudget,
    /// Statement spans carry `db.query.text` (never parameters).
    query_text: bool,
}

/// How read-only units move on when nodes fail at the connection level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadRetry {
    /// Nodes tried at most (the first included).
    pub attempts: u32,
    /// No new attempt starts after this much time since the first.
    pub budget: Duration,
}

/// Read-only units try up to 3 nodes within 5 s unless told otherwise.
pub(crate) const DEFAULT_READ_RETRY: ReadRetry = ReadRetry {
    attempts: 3,
    budget: Duration::from_secs(5),
};

/// A node as the builder was given it: to connect, or already connected.
#[derive(Debug)]
enum NodeSpec {
    Config(NodeConfig),
    Pool {
        name: String,
        conn: DatabaseConnection,
    },
}

/// A validated node, before or after connecting.
struct Prepared {
    name: String,
    backend: DbBackend,
    redacted_url: String,
    /// `None` for a pool the caller handed in.
    config: Option<ValidNode>,
    conn: Option<DatabaseConnection>,
}

impl Prepared {
    fn new(spec: NodeSpec, default_name: &str) -> Result<Self, ReplicaError> {
        match spec {
            NodeSpec::Config(config) => {
                let valid = ValidNode::validate(&config, default_name)?;
                Ok(Prepared {
                    name: valid.name.clone(),
                    backend: valid.backend,
                    redacted_url: valid.redacted_url.clone(),
                    config: Some(valid),
                    conn: None,
                })
            }
            NodeSpec::Pool { name, conn }
                if matches!(conn.inner, DatabaseConnectionType::Disconnected) =>
            {
                Err(ReplicaError::Config(format!(
                    "node `{name}`: the connection handed to the builder is disconnected"
                )))
            }
            NodeSpec::Pool { name, conn } => Ok(Prepared {
                name,
                backend: conn.get_database_backend(),
                redacted_url: "(connection handed to the builder)".into(),
                config: None,
                conn: Some(conn),
            }),
        }
    }

    /// Builds the node's pools (lazily: nothing is connected yet, see
    /// [`pools`](crate::node::pools)). An SQLite primary is opened at once, so that its file
    /// exists (and is in WAL mode) before any read-only session opens it.
    async fn open(self, role: Role, breaker: Breaker) -> Result<Arc<Node>, ReplicaError> {
        let pools = match (&self.conn, &self.config) {
            (Some(conn), _) => {
                Pools::around(conn.clone(), &PoolSettings::default()).ok_or_else(|| {
                    ReplicaError::Config(format!(
                        "node `{}`: the connection handed to the builder is not an sqlx pool",
                        self.name
                    ))
                })?
            }
            (None, Some(valid)) => {
                let target = valid.target()?;
                let pools = Pools::open(
                    &target,
                    &valid.pool_settings(role, false),
                    &valid.pool_settings(role, true),
                );
                if valid.backend == DbBackend::Sqlite && role == Role::Primary {
                    pools
                        .rw
                        .ping()
                        .await
                        .map_err(|source| ReplicaError::Unreachable {
                            node: self.name.clone(),
                            url: self.redacted_url.clone(),
                            source,
                        })?;
                }
                pools
            }
            (None, None) => {
                return Err(ReplicaError::Config(format!(
                    "node `{}` has neither URL nor pool",
                    self.name
                )))
            }
        };
        let config = self.config.as_ref().map(|c| &c.config);
        Ok(Arc::new(Node::new(NodeParts {
            weight: config.and_then(|c| c.weight).unwrap_or(1),
            statement_timeout: config
                .and_then(|c| c.pool.statement_timeout_ms)
                .map(Duration::from_millis),
            name: self.name,
            role,
            redacted_url: self.redacted_url,
            pools,
            breaker,
        })))
    }
}

/// Builds a [`ReplicatedDatabase`].
///
/// ```no_run
/// # async fn demo() -> Result<(), sea_orm_replica::ReplicaError> {
/// use sea_orm_replica::{NodeConfig, ReplicatedDatabase};
/// let db = ReplicatedDatabase::builder()
///     .primary("postgres://app@127.0.0.1:5432/app")
///     .replica("postgres://app@127.0.0.1:5433/app")
///     .replica_node(NodeConfig::new("postgres://app@127.0.0.1:5434/app").name("far").max_connections(4))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct ReplicatedDatabaseBuilder {
    primary: Option<NodeSpec>,
    candidates: Vec<NodeSpec>,
    replicas: Vec<NodeSpec>,
    fallback: Fallback,
    check_timeout: Option<Duration>,
    breaker: Option<Breaker>,
    retry: Option<ReadRetry>,
    replay: Option<crate::replay::ReplayBudget>,
    sqlite_reader_pool: Option<bool>,
    balancer: Option<Box<dyn Balancer>>,
    causal_wait: Option<Duration>,
    max_lag: Option<Duration>,
    monitor_interval: Option<Duration>,
    shard: Option<Arc<str>>,
    query_text: bool,
}

/// How long a read-only unit with a causal token waits for a replica, unless told otherwise.
pub const DEFAULT_CAUSAL_WAIT: Duration = Duration::from_millis(100);

impl ReplicatedDatabaseBuilder {
    /// Sets the primary by URL.
    pub fn primary(self, url: impl Into<String>) -> Self {
        self.primary_node(NodeConfig::new(url))
    }

    /// Sets the primary with its own name and pool options.
    pub fn primary_node(mut self, node: NodeConfig) -> Self {
        self.primary = Some(NodeSpec::Config(node));
        self
    }

    /// Adds a node that may take over as the primary (failover). The monitor asks every node
    /// its role; read-write units go to the one that reports being the primary. A configured
    /// replica that is promoted takes over too, with no need to list it here (on PostgreSQL,
    /// its new WAL timeline tells it apart from an old primary coming back).
    pub fn primary_candidate(self, url: impl Into<String>) -> Self {
        self.primary_candidate_node(NodeConfig::new(url))
    }

    /// Adds a primary candidate with its own name and pool options.
    pub fn primary_candidate_node(mut self, node: NodeConfig) -> Self {
        self.candidates.push(NodeSpec::Config(node));
        self
    }

    /// Uses a SeaORM connection you already have as the primary (its pool, its options).
    pub fn primary_connection(mut self, name: impl Into<String>, conn: DatabaseConnection) -> Self {
        self.primary = Some(NodeSpec::Pool {
            name: name.into(),
            conn,
        });
        self
    }

    /// Adds a SeaORM connection you already have as a replica.
    pub fn replica_connection(mut self, name: impl Into<String>, conn: DatabaseConnection) -> Self {
        self.replicas.push(NodeSpec::Pool {
            name: name.into(),
            conn,
        });
        self
    }

    /// Adds a replica by URL.
    pub fn replica(self, url: impl Into<String>) -> Self {
        self.replica_node(NodeConfig::new(url))
    }

    /// Adds a replica with its own name and pool options.
    pub fn replica_node(mut self, node: NodeConfig) -> Self {
        self.replicas.push(NodeSpec::Config(node));
        self
    }

    /// What read-only units do when no replica is available. Default: [`Fallback::Primary`].
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// For an SQLite file with no replicas: open a read-only reader pool on it. Default: true.
    pub fn sqlite_reader_pool(mut self, enabled: bool) -> Self {
        self.sqlite_reader_pool = Some(enabled);
        self
    }

    /// How long a read-only unit with a causal token waits for a replica to replay it before
    /// running on the primary. Default: [`DEFAULT_CAUSAL_WAIT`] (100 ms); zero never waits.
    pub fn causal_wait(mut self, wait: Duration) -> Self {
        self.causal_wait = Some(wait);
        self
    }

    /// Statement spans record the statement's text as `db.query.text` (OpenTelemetry's name).
    /// Parameters are never recorded: SeaORM sends values as bind parameters, so the text
    /// holds placeholders — but a statement you build by hand with literals in it shows them,
    /// which is why this is off by default. Every statement span has `db.operation.name` and
    /// `db.query.summary` (`SELECT banner`) either way.
    pub fn record_query_text(mut self, enabled: bool) -> Self {
        self.query_text = enabled;
        self
    }

    /// Bounded staleness for the whole handle: replicas measured further behind than `bound`
    /// are not used (an unmeasured replica is not used either). Default: no bound.
    pub fn max_lag(mut self, bound: Duration) -> Self {
        self.max_lag = Some(bound);
        self
    }

    /// How often the background monitor measures replica lag and replay positions.
    /// Default: [`DEFAULT_MONITOR_INTERVAL`] (500 ms).
    pub fn monitor_interval(mut self, interval: Duration) -> Self {
        self.monitor_interval = Some(interval);
        self
    }

    /// How long one health check may take before the node counts as down.
    /// Default: [`DEFAULT_CHECK_TIMEOUT`] (1 s).
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = Some(timeout);
        self
    }

    /// The circuit breaker: a node that failed is checked again after `initial`, then after
    /// twice as long on every failed check, up to `max`. Default: 500 ms, 10 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.breaker = Some(Breaker {
            initial,
            max: max.max(initial),
        });
        self
    }

    /// Failover of read-only units: when a node fails at the connection level before the
    /// unit has returned results, the unit moves to another eligible node — at most
    /// `attempts` nodes in all, none started after `budget`. The closure form
    /// ([`read_only`](ReplicatedDatabase::read_only)) reruns the closure; the begin/commit
    /// form retries its first statement. Default: 3 attempts within 5 s; 1 turns it off.
    pub fn read_retries(mut self, attempts: u32, budget: Duration) -> Self {
        self.retry = Some(ReadRetry {
            attempts: attempts.max(1),
            budget,
        });
        self
    }

    /// How long a replayed read-write unit
    /// ([`read_write_replayed`](ReplicatedDatabase::read_write_replayed)) keeps trying across a
    /// primary failover: at most `runs` runs of its closure, none started after `budget`
    /// (waits for an election count against the time, not the runs). Default: 5 runs within
    /// 8 s. Units that do not ask for replay are not affected.
    pub fn replay_budget(mut self, runs: u32, budget: Duration) -> Self {
        self.replay = Some(crate::replay::ReplayBudget {
            runs: runs.max(1),
            time: budget,
        });
        self
    }

    /// How read-only units choose among replicas. Default: [`RoundRobin`](crate::routing::RoundRobin);
    /// see [`routing`](crate::routing) for the others, or implement [`Balancer`].
    pub fn balancer(mut self, balancer: impl Balancer) -> Self {
        self.balancer = Some(Box::new(balancer));
        self
    }

    /// Takes everything from a [`ReplicaConfig`].
    pub fn config(mut self, config: ReplicaConfig) -> Self {
        self.primary = Some(NodeSpec::Config(config.primary));
        self.candidates = config
            .primary_candidates
            .into_iter()
            .map(NodeSpec::Config)
            .collect();
        self.replicas = config.replicas.into_iter().map(NodeSpec::Config).collect();
        self.balancer = Some(config.balancer.balancer());
        self.fallback = config.fallback;
        self.sqlite_reader_pool = Some(config.sqlite_reader_pool);
        let ms = Duration::from_millis;
        self.causal_wait = config.causal_wait_ms.map(ms).or(self.causal_wait);
        self.max_lag = config.max_lag_ms.map(ms).or(self.max_lag);
        self.monitor_interval = config.monitor_interval_ms.map(ms).or(self.monitor_interval);
        self.check_timeout = config.check_timeout_ms.map(ms).or(self.check_timeout);
        if config.backoff_initial_ms.is_some() || config.backoff_max_ms.is_some() {
            self = self.backoff(
                config
                    .backoff_initial_ms
                    .map_or(DEFAULT_BREAKER.initial, ms),
                config.backoff_max_ms.map_or(DEFAULT_BREAKER.max, ms),
            );
        }
        if config.read_attempts.is_some() || config.read_retry_budget_ms.is_some() {
            self = self.read_retries(
                config.read_attempts.unwrap_or(DEFAULT_READ_RETRY.attempts),
                config
                    .read_retry_budget_ms
                    .map_or(DEFAULT_READ_RETRY.budget, ms),
            );
        }
        self
    }

    /// Makes this cluster the shard called `name` of a sharded handle: causal tokens keep its
    /// positions under that name, and nodes not named explicitly are called `name/primary`,
    /// `name/replica-1`, ...
    pub(crate) fn shard(mut self, name: Arc<str>) -> Self {
        self.shard = Some(name);
        self
    }

    /// Validates the configuration and connects to every node.
    pub async fn connect(self) -> Result<ReplicatedDatabase, ReplicaError> {
        self.check_settings()?;
        let default_name = |name: String| match &self.shard {
            Some(shard) => format!("{shard}/{name}"),
            None => name,
        };
        let primary = self
            .primary
            .ok_or_else(|| ReplicaError::Config("no primary configured".into()))?;
        let primary = Prepared::new(primary, &default_name("primary".into()))?;
        let candidates = self
            .candidates
            .into_iter()
            .enumerate()
            .map(|(i, c)| Prepared::new(c, &default_name(format!("primary-{}", i + 2))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut replicas = self
            .replicas
            .into_iter()
            .enumerate()
            .map(|(i, r)| Prepared::new(r, &default_name(format!("replica-{}", i + 1))))
            .collect::<Result<Vec<_>, _>>()?;
        let backend = primary.backend;
        if let Some(odd) = candidates
            .iter()
            .chain(&replicas)
            .find(|r| r.backend != backend)
        {
            return Err(ReplicaError::BackendMismatch {
                node: odd.name.clone(),
                expected: backend.as_str(),
                found: odd.backend.as_str(),
            });
        }
        if let Some(file) = primary.config.as_ref().filter(|c| {
            c.backend == DbBackend::Sqlite
                && replicas.is_empty()
                && self.sqlite_reader_pool.unwrap_or(true)
                && !is_sqlite_memory(&c.config.url)
        }) {
            replicas.push(Prepared {
                name: default_name("sqlite-reader".into()),
                backend,
                redacted_url: file.redacted_url.clone(),
                config: Some(file.clone()),
                conn: None,
            });
        }

        let breaker = self.breaker.unwrap_or(DEFAULT_BREAKER);
        let mut primaries = vec![primary.open(Role::Primary, breaker).await?];
        for c in candidates {
            primaries.push(c.open(Role::Primary, breaker).await?);
        }
        let mut replica_nodes = Vec::with_capacity(replicas.len());
        for r in replicas {
            replica_nodes.push(r.open(Role::Replica, breaker).await?);
        }
        tracing::info!(
            primary = primaries[0].name(),
            candidates = primaries.len() - 1,
            replicas = replica_nodes.len(),
            backend = backend.as_str(),
            "replicated database connected"
        );
        let mut router = Router::new(
            primaries,
            replica_nodes,
            self.balancer
                .unwrap_or_else(|| Balancing::default().balancer()),
            self.fallback,
            self.causal_wait.unwrap_or(DEFAULT_CAUSAL_WAIT),
            self.max_lag,
        )?;
        router.shard = self.shard.clone();
        let inner = Arc::new(Inner {
            router,
            backend,
            counters: HandleCounters::default(),
            retry: self.retry.unwrap_or(DEFAULT_READ_RETRY),
            replay: self.replay.unwrap_or_default(),
            query_text: self.query_text,
        });
        crate::observe::describe();
        if backend != DbBackend::Sqlite {
            let interval = self.monitor_interval.unwrap_or(DEFAULT_MONITOR_INTERVAL);
            let timeout = self.check_timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT);
            for node in inner.router.nodes() {
                node.set_monitored();
            }
            // know every node's role and lag before the first unit; a node that does not
            // answer starts down (the monitor brings it in), unless none answers at all
            // (and a primary URL that points at a replica fails here, typed)
            first_round(&inner.router, timeout).await?;
            spawn_monitor(
                Arc::downgrade(&inner),
                interval,
                move |inner: Arc<Inner>| async move { check_nodes(&inner.router, timeout).await },
            );
        }
        Ok(ReplicatedDatabase { inner })
    }
}

impl ReplicatedDatabaseBuilder {
    /// Every duration the builder holds: above zero where zero makes no sense, and at most
    /// [`MAX_DURATION`]. A typed [`ReplicaError::Config`], never a panic later.
    fn check_settings(&self) -> Result<(), ReplicaError> {
        check_duration("check_timeout", self.check_timeout, false)?;
        check_duration("monitor_interval", self.monitor_interval, false)?;
        check_duration("causal_wait", self.causal_wait, true)?;
        check_duration("max_lag", self.max_lag, true)?;
        if let Some(b) = self.breaker {
            check_duration("backoff initial", Some(b.initial), false)?;
            check_duration("backoff max", Some(b.max), false)?;
        }
        if let Some(r) = self.retry {
            check_duration("read_retries budget", Some(r.budget), true)?;
        }
        if let Some(r) = self.replay {
            check_duration("replay_budget", Some(r.time), true)?;
        }
        Ok(())
    }
}

fn is_sqlite_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

impl ReplicatedDatabase {
    /// Starts a builder.
    pub fn builder() -> ReplicatedDatabaseBuilder {
        ReplicatedDatabaseBuilder::default()
    }

    /// Connects with a [`ReplicaConfig`].
    pub async fn connect(config: ReplicaConfig) -> Result<Self, ReplicaError> {
        Self::builder().config(config).connect().await
    }

    /// Connects with [`ReplicaConfig::from_env`] (`DATABASE_URL`, `DATABASE_REPLICA_URLS`).
    pub async fn connect_from_env() -> Result<Self, ReplicaError> {
        Self::connect(ReplicaConfig::from_env()?).await
    }

    pub(crate) fn router(&self) -> &Router {
        &self.inner.router
    }

    pub(crate) fn counters(&self) -> &HandleCounters {
        &self.inner.counters
    }

    /// The shard this handle is, when it came from a
    /// [`ShardedDatabase`](crate::shard::ShardedDatabase); `None` for an unsharded handle.
    pub fn shard_name(&self) -> Option<&str> {
        self.inner.router.shard.as_deref()
    }

    /// The SQL dialect all nodes share.
    pub fn backend(&self) -> DbBackend {
        self.inner.backend
    }

    /// The node read-write units go to now: the configured primary, or after a failover the
    /// node that took over.
    pub fn primary(&self) -> Arc<Node> {
        self.inner.router.primary()
    }

    /// A snapshot of every node: role (configured and as the server reports it), health,
    /// lag, units in flight — what pgpool's `SHOW POOL_NODES` shows. `Display` prints it as a
    /// table.
    pub fn status(&self) -> Status {
        Status::collect(&self.inner.router)
    }

    /// Takes node `name` out of read routing by hand (pgpool's `pcp_detach_node`, MaxScale's
    /// `maintenance` state): read-only units stop going there (units already on it finish),
    /// while the monitor keeps checking it, so it can take over as the primary in a failover.
    /// Undo with [`undrain`](Self::undrain). The current primary cannot be drained (its
    /// writes have nowhere else to go): [`ReplicaError::Config`], as for an unknown name.
    pub fn drain(&self, name: &str) -> Result<(), ReplicaError> {
        let node = self.named("drain", name)?;
        if Arc::ptr_eq(node, &self.primary()) {
            return Err(ReplicaError::Config(format!(
                "drain: `{name}` is the current primary; read-write units have nowhere else to go"
            )));
        }
        node.set_drained(true);
        Ok(())
    }

    /// Puts a node taken out with [`drain`](Self::drain) back into read routing.
    pub fn undrain(&self, name: &str) -> Result<(), ReplicaError> {
        self.named("undrain", name)?.set_drained(false);
        Ok(())
    }

    /// The node called `name`, or a `Config` error that says what `call` was given.
    fn named(&self, call: &str, name: &str) -> Result<&Arc<Node>, ReplicaError> {
        self.router()
            .nodes()
            .find(|n| n.name() == name)
            .ok_or_else(|| ReplicaError::Config(format!("{call}: no node called `{name}`")))
    }

    /// True when statement spans carry the statement's text.
    pub(crate) fn records_query_text(&self) -> bool {
        self.inner.query_text
    }

    pub(crate) fn read_retry(&self) -> ReadRetry {
        self.inner.retry
    }

    pub(crate) fn replay_budget(&self) -> crate::replay::ReplayBudget {
        self.inner.replay
    }

    /// The replica nodes (for SQLite, the reader pool).
    pub fn replicas(&self) -> impl ExactSizeIterator<Item = &Node> {
        self.inner.router.replicas.iter().map(|n| &**n)
    }

    /// Every node: configured primaries first, then the replicas.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.inner.router.nodes().map(|n| &**n)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes().find(|n| n.name() == name)
    }

    /// The routing decision a unit of access mode `A` would get now: which node, and why.
    /// Pure and in memory; what a unit does at its first statement.
    pub fn route<A: Access>(&self) -> Result<Route, ReplicaError> {
        self.router().route(A::READ_ONLY)
    }

    /// A copy of the counters: units and statements per node, pool acquisitions, fallbacks.
    pub fn stats(&self) -> StatsSnapshot {
        StatsSnapshot::collect(self.nodes(), &self.inner.counters)
    }

    /// Opens a read-only unit. Takes no connection: the first statement does.
    pub fn begin_read_only(&self) -> UnitOfWork<ReadOnly> {
        self.begin_unit(UnitOptions::default())
    }

    /// Opens a read-write unit on the primary. Takes no connection: the first statement does.
    pub fn begin_read_write(&self) -> UnitOfWork<ReadWrite> {
        self.begin_unit(UnitOptions::default())
    }

    /// Opens a unit with options; the access mode is the type parameter.
    pub fn begin_unit<A: Access>(&self, options: UnitOptions) -> UnitOfWork<A> {
        UnitOfWork::open(self.clone(), options, None)
    }

    /// Runs `callback` in a read-only unit, like SeaORM's
    /// [`transaction`](TransactionTrait::transaction): `Ok` commits, `Err` rolls back.
    ///
    /// Failover: when a node fails at the connection level (refused, lost, no answer within
    /// the statement timeout) and the closure returns `Err`, it runs again in a new unit on
    /// another eligible node, up to the handle's
    /// [`read_retries`](ReplicatedDatabaseBuilder::read_retries) (default 3 nodes within 5 s).
    /// The closure is read-only, so running it again is safe; that is why it is `Fn`.
    pub async fn read_only<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> Fn(
                &'c UnitOfWork<ReadOnly>,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send
            + Sync,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let retry = self.read_retry();
        let started = std::time::Instant::now();
        let mut attempt = 1;
        loop {
            let unit = self.begin_read_only();
            match callback(&unit).await {
                Ok(value) => {
                    unit.commit().await.map_err(TransactionError::Connection)?;
                    return Ok(value);
                }
                Err(err)
                    if unit.saw_node_failure()
                        && attempt < retry.attempts
                        && started.elapsed() < retry.budget =>
                {
                    tracing::warn!(parent: unit.span(), error = %err, attempt, "read-only unit failed with its node; running it again elsewhere");
                    if let Some(route) = unit.route() {
                        route.node.metrics.read_retry();
                    }
                    let _ = unit.rollback().await;
                    attempt += 1;
                }
                Err(err) => {
                    unit.rollback()
                        .await
                        .map_err(TransactionError::Connection)?;
                    return Err(TransactionError::Transaction(err));
                }
            }
        }
    }

    /// Runs `callback` in a read-write unit on the primary: `Ok` commits, `Err` rolls back.
    ///
    /// ```no_run
    /// # use sea_orm_replica::ReplicatedDatabase;
    /// # use sea_orm::{ConnectionTrait, DbErr};
    /// # async fn demo(db: &ReplicatedDatabase) -> Result<(), sea_orm::TransactionError<DbErr>> {
    /// db.read_write(|unit| Box::pin(async move {
    ///     unit.execute_unprepared("UPDATE banner SET name = 'x' WHERE id = 1").await?;
    ///     Ok::<_, DbErr>(())
    /// })).await?;
    /// # Ok(()) }
    /// ```
    pub async fn read_write<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c UnitOfWork<ReadWrite>,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        run_in(self.begin_read_write(), callback).await
    }

    /// Runs `callback` in a unit with options; the access mode is the type parameter. (It
    /// runs the closure once; [`read_only`](Self::read_only) reruns it on another node when
    /// one fails.)
    pub async fn run_unit<A, F, T, E>(
        &self,
        options: UnitOptions,
        callback: F,
    ) -> Result<T, TransactionError<E>>
    where
        A: Access,
        F: for<'c> FnOnce(
                &'c UnitOfWork<A>,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        run_in(self.begin_unit::<A>(options), callback).await
    }

    /// Where a statement sent to the handle goes: the primary, or inside a read-only scope the
    /// scope's replica (after the write check).
    /// With the route, whether the statement calls a routine that is not a known built-in.
    async fn ambient(&self, sql: &str) -> Result<Option<(Route, bool)>, DbErr> {
        if !in_read_only_scope() {
            return Ok(None);
        }
        match read_check(sql, self.inner.backend.into()) {
            Ok(check) => Ok(Some((
                self.scope_route().await?,
                check.calls_unknown_function,
            ))),
            Err(refusal) => Err(ReplicaError::WriteInReadOnly {
                keyword: refusal.what,
            }
            .into()),
        }
    }

    /// In a read-only scope: the node this handle is pinned to, chosen on first use so that it
    /// has replayed the scope's token.
    async fn scope_route(&self) -> Result<Route, ReplicaError> {
        let key = Arc::as_ptr(&self.inner) as usize;
        if let Some(route) = pinned_route(key) {
            return Ok(route);
        }
        let consistency = read_consistency().unwrap_or_default();
        let route = route_read(self.router(), &consistency, self.router().causal_wait).await?;
        let route = pin_route(key, route);
        NodeCounters::bump(&route.node.counters.units);
        if matches!(
            route.reason,
            RouteReason::Fallback | RouteReason::NotReplayed | RouteReason::TooFarBehind
        ) {
            self.counters()
                .fallbacks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::debug!(
            node = route.node.name(),
            reason = route.reason.as_str(),
            "read-only scope routed"
        );
        Ok(route)
    }

    /// After a write sent straight to the handle inside a scope: record the primary's position.
    async fn record_handle_write(&self) -> Result<(), DbErr> {
        let primary = self.primary();
        let position = primary
            .dialect()
            .current_position(&primary.sessions(false))
            .await?;
        primary.observe_written(&position);
        record_write(&self.router().token(position));
        Ok(())
    }
}

/// Runs one statement sent to the handle: on the primary, or in a read-only scope on its node
/// (inside a `READ ONLY` transaction when that node is the primary).
macro_rules! on_ambient {
    ($self:ident, $sql:expr, |$c:ident| $call:expr) => {{
        let (route, calls) = match $self.ambient($sql).await? {
            Some((route, calls)) => (Some(route), calls),
            None => (None, false),
        };
        let writes =
            route.is_none() && in_any_scope() && matches!(classify($sql), StatementKind::Write(_));
        let records = writes && wants_tokens();
        let node: Arc<Node> = match &route {
            Some(route) => route.node.clone(),
            None => $self.router().writable_primary()?,
        };
        NodeCounters::bump(&node.counters.statements);
        NodeCounters::bump(&node.counters.acquisitions);
        let result = match &route {
            // read-only work on the primary, or a read calling a routine that may set session
            // state: a READ ONLY transaction on read-only sessions, whose end resets the session
            Some(route)
                if OwnTxn::supports(node.dialect().0)
                    && (route.reason.is_read_only_on_primary() || calls) =>
            {
                let txn = node
                    .bounded(OwnTxn::read_only(node.sessions(true), calls))
                    .await?;
                let result = {
                    let $c = &txn;
                    node.bounded($call).await
                };
                node.bounded(txn.end_after(result)).await
            }
            Some(route) if route.reason.is_read_only_on_primary() => {
                let options = node.dialect().transaction_options(true, None);
                let txn = node
                    .bounded(node.read_connection().begin_with_options(options))
                    .await?;
                let result = {
                    let $c = &txn;
                    node.bounded($call).await
                };
                match result {
                    Ok(value) => node.bounded(txn.commit()).await.map(|_| value),
                    Err(err) => Err(err),
                }
            }
            Some(_) => {
                let sessions = node.sessions(true);
                let $c = &sessions;
                node.bounded($call).await
            }
            None => {
                let sessions = node.sessions(false);
                let $c = &sessions;
                node.bounded($call).await
            }
        };
        if records && result.is_ok() {
            $self.record_handle_write().await?;
        } else if writes && result.is_ok() {
            note_write();
        }
        result
    }};
}

impl Writable for ReplicatedDatabase {}

#[async_trait::async_trait]
impl ConnectionTrait for ReplicatedDatabase {
    fn get_database_backend(&self) -> DbBackend {
        self.inner.backend
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        on_ambient!(self, &stmt.sql, |c| c.execute_raw(stmt))
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        if in_read_only_scope() {
            // one statement per call: the extended (prepared) protocol refuses more
            let stmt = Statement::from_string(self.inner.backend, sql);
            return on_ambient!(self, sql, |c| c.execute_raw(stmt));
        }
        on_ambient!(self, sql, |c| c.execute_unprepared(sql))
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        on_ambient!(self, &stmt.sql, |c| c.query_one_raw(stmt))
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        on_ambient!(self, &stmt.sql, |c| c.query_all_raw(stmt))
    }
}

impl StreamTrait for ReplicatedDatabase {
    type Stream<'a> = UnitStream<'a>;

    fn get_database_backend(&self) -> DbBackend {
        self.inner.backend
    }

    /// Streams from the primary, or in a read-only scope from the scope's node, on its
    /// read-only sessions (on the primary too: the server holds the session read-only). A read
    /// that calls a routine that is not a known built-in is read in full first, inside a
    /// read-only transaction of its own whose end resets the session.
    fn stream_raw<'a>(
        &'a self,
        stmt: Statement,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Stream<'a>, DbErr>> + 'a + Send>> {
        Box::pin(async move {
            let (node, read_only, calls): (Arc<Node>, bool, bool) =
                match self.ambient(&stmt.sql).await? {
                    Some((route, calls)) => (route.node, true, calls),
                    None => (self.router().writable_primary()?, false, false),
                };
            NodeCounters::bump(&node.counters.statements);
            NodeCounters::bump(&node.counters.acquisitions);
            if calls && OwnTxn::supports(node.dialect().0) {
                // a routine that may set session state: in its own read-only transaction,
                // whose end resets the session (the rows are read in full first)
                let rows = node
                    .bounded(async {
                        let txn = OwnTxn::read_only(node.sessions(true), true).await?;
                        let rows = txn.query_all_raw(stmt).await;
                        txn.end_after(rows).await
                    })
                    .await?;
                return Ok(
                    Box::pin(futures_util::stream::iter(rows.into_iter().map(Ok)))
                        as UnitStream<'a>,
                );
            }
            let sessions = node.sessions(read_only);
            node.bounded(sessions.stream_raw(stmt)).await
        })
    }
}

impl ReplicatedDatabase {
    /// The unit a plain `begin` opens: inside a read-only scope, a read-only transaction on
    /// the scope's node; outside, a read-write unit on the primary (a read-only one on the
    /// primary's read-only sessions when [`AccessMode::ReadOnly`] is asked for).
    async fn plain_txn(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<ReplicatedTransaction, DbErr> {
        let mut options = UnitOptions::new().transaction();
        if let Some(level) = isolation_level {
            options = options.isolation(level);
        }
        if in_read_only_scope() {
            if access_mode == Some(AccessMode::ReadWrite) {
                return Err(ReplicaError::WriteInReadOnly {
                    keyword: "BEGIN READ WRITE".into(),
                }
                .into());
            }
            let route = self.scope_route().await?;
            return Ok(UnitOfWork::<ReadOnly>::open(self.clone(), options, Some(route)).into());
        }
        Ok(match access_mode {
            Some(AccessMode::ReadOnly) => {
                let options = options.consistency(Consistency::Primary);
                UnitOfWork::<ReadOnly>::open(self.clone(), options, None).into()
            }
            _ => UnitOfWork::<ReadWrite>::open(self.clone(), options, None).into(),
        })
    }
}

/// A plain SeaORM transaction: a [`ReplicatedTransaction`], a unit of work underneath (a
/// read-only one inside a read-only scope). Taken lazily, at its first statement.
#[async_trait::async_trait]
impl TransactionTrait for ReplicatedDatabase {
    type Transaction = ReplicatedTransaction;

    async fn begin(&self) -> Result<ReplicatedTransaction, DbErr> {
        self.plain_txn(None, None).await
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<ReplicatedTransaction, DbErr> {
        self.plain_txn(isolation_level, access_mode).await
    }

    async fn begin_with_options(
        &self,
        options: TransactionOptions,
    ) -> Result<ReplicatedTransaction, DbErr> {
        self.begin_with_config(options.isolation_level, options.access_mode)
            .await
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c ReplicatedTransaction,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        self.transaction_with_config(callback, None, None).await
    }

    async fn transaction_with_config<F, T, E>(
        &self,
        callback: F,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c ReplicatedTransaction,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let txn = self
            .plain_txn(isolation_level, access_mode)
            .await
            .map_err(TransactionError::Connection)?;
        run_in(txn, callback).await
    }
}
