//! The lazy unit of work: what a unit promises, its access mode as a type, task-scoped routing,
//! and the read/write check of a statement. Uses [`routing`](crate::routing) to pick its node
//! at the first statement, and the handle for its router and counters.
//!
//! Opening a [`UnitOfWork`] takes nothing from any pool. Its first statement picks the node
//! (read-write → primary; read-only → a replica), takes a connection and, where the unit needs
//! one, starts the transaction. A unit that runs no statement never touches a pool, and its
//! commit is a no-op — the fix Spring needs `LazyConnectionDataSourceProxy` for, built in.
//!
//! # What a unit promises
//!
//! * **Read-write units** are one transaction on the primary: `BEGIN` at the first statement,
//!   `COMMIT` at [`commit`](UnitOfWork::commit) (or when the closure returns `Ok`), rollback on drop.
//! * **Read-only units** run every statement on one node, chosen at the first statement, and
//!   refuse writes before they reach a server. By default each statement sees the data
//!   committed (or, on a replica, replayed) before it started, and never older data than the
//!   statement before it: *statement-level consistency*, what PostgreSQL's default `READ
//!   COMMITTED` gives inside a transaction. It costs no `BEGIN`/`COMMIT` round trips, so a
//!   one-query read-only unit costs what the query costs. Ask for
//!   [`UnitOptions::snapshot`] (or any isolation level) to run them in one `READ ONLY`
//!   transaction that sees a single snapshot.
//! * A read-only unit that falls back to the primary (no replica available) always runs in a
//!   `READ ONLY` transaction, so the server refuses writes too.

pub mod access;
pub mod replicated_txn;
pub mod scope;
pub mod statement_kind;
pub(crate) mod txn;

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::Stream;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, ExecResult, IsolationLevel,
    QueryResult, Statement, StreamTrait, TransactionError, TransactionOptions, TransactionSession,
    TransactionTrait,
};
use tokio::sync::OnceCell;
use tracing::{field::Empty, Instrument, Span};

use access::{Access, ReadWrite};
use scope::{note_write, read_consistency, record_write, wants_tokens};
use statement_kind::read_check;
use txn::OwnTxn;

use crate::backend::{record_applied_sql, Dialect, APPLIED_TABLE};
use crate::consistency::{CausalToken, Consistency};
use crate::node::stats::NodeCounters;
use crate::node::{InFlight, Node};
use crate::observe::record::Outcome;
use crate::routing::read::route_read;
use crate::routing::{Route, RouteReason};
use crate::{ReplicaError, ReplicatedDatabase};

/// Options of one unit of work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitOptions {
    isolation: Option<IsolationLevel>,
    causal: bool,
    synchronous_visibility: bool,
    consistency: Consistency,
    max_wait: Option<Duration>,
    /// One transaction even with no isolation level asked for (the handle's plain `begin`).
    transaction: bool,
    /// The global id of a two-phase unit (a sharded write across shards).
    two_phase: Option<Arc<str>>,
    /// The unit's identity and which run of it this is: recorded in `sor_applied` by the
    /// transaction that commits it.
    identity: Option<(uuid::Uuid, u32)>,
    /// More identities the same commit records (a queue worker's batch of commands).
    also: Option<Arc<[uuid::Uuid]>>,
}

impl UnitOptions {
    /// Default options: read-only units get statement-level consistency; read-write units the
    /// server's default isolation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs the unit in one transaction at this isolation level (for a read-only unit, a
    /// `READ ONLY` transaction: one `BEGIN` and one `COMMIT` more).
    pub fn isolation(mut self, level: IsolationLevel) -> Self {
        self.isolation = Some(level);
        self
    }

    /// A read-only unit whose statements all see one snapshot (`REPEATABLE READ, READ ONLY`).
    pub fn snapshot(self) -> Self {
        self.isolation(IsolationLevel::RepeatableRead)
    }

    /// What a read-only unit must see (default: [`Consistency::Eventual`]).
    pub fn consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    /// Read-your-writes: run only where `token` has been replayed (merged with any token
    /// already given).
    pub fn after(mut self, token: &CausalToken) -> Self {
        self.consistency = match self.consistency {
            Consistency::ReadYourWrites(mine) => Consistency::ReadYourWrites(mine.merge(token)),
            Consistency::Primary => Consistency::Primary,
            Consistency::Eventual | Consistency::BoundedStaleness(_) => {
                Consistency::ReadYourWrites(token.clone())
            }
        };
        self
    }

    /// A read-write unit that will hand out a causal token: on PostgreSQL and MariaDB its
    /// `COMMIT` carries the primary's position in the same round trip, so
    /// [`commit_causal`](UnitOfWork::commit_causal) costs nothing extra. Units inside a
    /// [`CausalScope`](crate::CausalScope) do this by themselves.
    pub fn causal(mut self) -> Self {
        self.causal = true;
        self
    }

    /// A read-write unit whose commit returns only once the synchronous replicas have applied
    /// it (PostgreSQL `synchronous_commit = remote_apply`, sent with `BEGIN`: no extra round
    /// trip), so the next read on them sees it with no token. Needs synchronous standbys
    /// (`synchronous_standby_names`); the commit waits for them. MariaDB cannot promise this:
    /// [`ReplicaError::Config`].
    pub fn synchronous_visibility(mut self) -> Self {
        self.synchronous_visibility = true;
        self
    }

    /// How long to wait for a replica to replay the token before using the primary
    /// (default: the handle's `causal_wait`).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = Some(wait);
        self
    }

    /// One transaction at the server's default isolation, even for a read-only unit (what a
    /// plain SeaORM `begin` means).
    pub(crate) fn transaction(mut self) -> Self {
        self.transaction = true;
        self
    }

    /// A unit that ends in two phases under global id `gid` (MariaDB begins it with `XA START`).
    pub(crate) fn two_phase(mut self, gid: Arc<str>) -> Self {
        self.two_phase = Some(gid);
        self
    }

    /// A read-write unit with an identity: its commit also records `id` in `sor_applied`
    /// (one more statement in the `COMMIT` message), so "did it commit?" always has an
    /// answer ([`ReplicatedDatabase::applied`]) and a second unit with the same identity is
    /// refused by the server ([`ReplicaError::AlreadyApplied`]). A lost `COMMIT` answer comes
    /// back as [`ReplicaError::CommitOutcomeUnknown`] carrying `id`. Needs the table
    /// ([`replay::AppliedTableMigration`](crate::replay::AppliedTableMigration)). Take a
    /// fresh uuid v7 per unit ([`uuid::Uuid::now_v7`]), or the id of the command it applies.
    pub fn identity(self, id: uuid::Uuid) -> Self {
        self.run_of(id, 1)
    }

    /// Run `attempt` of the unit with identity `id` (a replay records which run committed).
    pub(crate) fn run_of(mut self, id: uuid::Uuid, attempt: u32) -> Self {
        self.identity = Some((id, attempt));
        self
    }

    /// Identities the commit records besides the unit's own, with the same run (a batch of
    /// queued commands applied in one transaction).
    pub(crate) fn also_recording(mut self, ids: Arc<[uuid::Uuid]>) -> Self {
        self.also = Some(ids);
        self
    }

    /// The isolation level asked for, if any.
    pub fn isolation_level(&self) -> Option<IsolationLevel> {
        self.isolation
    }

    /// The unit's identity, if it has one.
    pub fn identity_id(&self) -> Option<uuid::Uuid> {
        self.identity.map(|(id, _)| id)
    }
}

/// At most this many nodes serve one read-only unit (the first included).
pub(crate) const MAX_READ_ATTEMPTS: u32 = 8;

/// The node of a statement-level read-only unit, and the nodes it moved to when one failed
/// before returning anything (append-only, so a route can be lent out while it moves on).
struct PoolRoutes {
    first: Route,
    /// Allocated at the first move only.
    moved: OnceLock<Box<[OnceLock<Route>; (MAX_READ_ATTEMPTS - 1) as usize]>>,
}

impl PoolRoutes {
    fn new(first: Route) -> Self {
        PoolRoutes {
            first,
            moved: OnceLock::new(),
        }
    }

    fn current(&self) -> &Route {
        self.moved
            .get()
            .and_then(|moved| moved.iter().rev().find_map(OnceLock::get))
            .unwrap_or(&self.first)
    }

    /// Moves to `route`; false when every slot is taken.
    fn move_to(&self, route: Route) -> bool {
        let moved = self.moved.get_or_init(Default::default);
        match moved.iter().find(|slot| slot.get().is_none()) {
            Some(slot) => slot.set(route).is_ok(),
            None => false,
        }
    }
}

/// Where a unit's statements run once it has started.
enum Active {
    /// Each statement on the node's pool (read-only units with statement-level consistency).
    Pool(PoolRoutes),
    /// One transaction (or savepoint) on the node.
    Txn(Route, DatabaseTransaction),
    /// A read-write transaction on a connection the unit holds, whose commit carries the
    /// primary's position (see [`txn`](crate::unit::txn)); `Some` savepoint for a
    /// nested unit.
    Own(Route, Arc<OwnTxn>, Option<Savepoint>),
}

impl Active {
    fn route(&self) -> &Route {
        match self {
            Active::Pool(routes) => routes.current(),
            Active::Txn(route, _) | Active::Own(route, ..) => route,
        }
    }
}

/// A nested unit's savepoint on an [`OwnTxn`]; rolled back if the unit is dropped unfinished.
struct Savepoint {
    txn: Arc<OwnTxn>,
    name: String,
    done: bool,
}

impl Savepoint {
    async fn end(mut self, keep: bool) -> Result<(), DbErr> {
        self.done = true;
        self.txn.end_savepoint(&self.name, keep).await
    }
}

impl Drop for Savepoint {
    fn drop(&mut self) {
        if !self.done {
            self.txn.abandon_savepoint(&self.name);
        }
    }
}

/// A unit of work: read-only or read-write by its type parameter ([`ReadOnly`](crate::ReadOnly),
/// [`ReadWrite`]), lazy, and usable wherever SeaORM takes a connection.
///
/// ```no_run
/// # use sea_orm_replica::ReplicatedDatabase;
/// # use sea_orm::{ConnectionTrait, Statement};
/// # async fn demo(db: &ReplicatedDatabase) -> Result<(), sea_orm::DbErr> {
/// let unit = db.begin_read_only();          // no connection taken yet
/// let row = unit.query_one_raw(Statement::from_string(unit.get_database_backend(), "SELECT 1")).await?;
/// unit.commit().await?;                      // nothing to commit on a statement-level read-only unit
/// # Ok(()) }
/// ```
#[must_use = "a unit of work does nothing until a statement runs in it, and rolls back when dropped"]
pub struct UnitOfWork<A: Access> {
    db: ReplicatedDatabase,
    options: UnitOptions,
    /// Set for nested units: the node their parent uses.
    pinned: Option<Route>,
    /// A nested unit (savepoint or pinned child): its commit is not durable, so it never
    /// records a causal token.
    nested: bool,
    state: OnceCell<Active>,
    /// The unit counted in flight on its node.
    flight: Mutex<Option<InFlight>>,
    /// True once a statement has returned a result: from then on the unit stays on its node.
    delivered: AtomicBool,
    /// True once a statement failed because its node did (the closure form reruns then).
    node_failed: AtomicBool,
    span: Span,
    opened: Instant,
    _access: PhantomData<A>,
}

impl<A: Access> std::fmt::Debug for UnitOfWork<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitOfWork")
            .field("access", &A::NAME)
            .field("options", &self.options)
            .field("node", &self.node_name())
            .finish()
    }
}

impl<A: Access> UnitOfWork<A> {
    pub(crate) fn open(
        db: ReplicatedDatabase,
        options: UnitOptions,
        pinned: Option<Route>,
    ) -> Self {
        db.counters()
            .units_opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // OpenTelemetry's database client names, and ours (`observe::names`)
        let span = tracing::info_span!(
            "unit_of_work",
            otel.kind = "client",
            access = A::NAME,
            db.system.name = Dialect(db.backend()).system_name(),
            db.namespace = Empty,
            server.address = Empty,
            server.port = Empty,
            db.replica.node = Empty,
            db.replica.role = Empty,
            db.replica.route_reason = Empty,
            db.replica.wait_us = Empty,
            db.replica.shard = db.shard_name(),
            error.type = Empty,
        );
        let mut options = options;
        if A::READ_ONLY && options.consistency == Consistency::Eventual {
            // inside a causal scope, read-only units respect the scope's token (or stickiness)
            if let Some(consistency) = read_consistency() {
                options.consistency = consistency;
            }
        }
        UnitOfWork {
            db,
            options,
            nested: pinned.is_some(),
            pinned,
            state: OnceCell::new(),
            flight: Mutex::new(None),
            delivered: AtomicBool::new(false),
            node_failed: AtomicBool::new(false),
            span,
            opened: Instant::now(),
            _access: PhantomData,
        }
    }

    fn started(db: ReplicatedDatabase, options: UnitOptions, active: Active) -> Self {
        let mut unit = Self::open(db, options, None);
        unit.nested = true;
        unit.record_route(active.route(), Instant::now());
        let _ = unit.state.set(active);
        unit
    }

    /// The name of the node this unit runs on; `None` until its first statement.
    pub fn node_name(&self) -> Option<&str> {
        self.state.get().map(|a| a.route().node.name())
    }

    /// The routing decision, once the first statement has made it.
    pub fn route(&self) -> Option<&Route> {
        self.state.get().map(Active::route)
    }

    /// True once a statement has run (and a connection was taken).
    pub fn is_started(&self) -> bool {
        self.state.initialized()
    }

    /// The tracing span of this unit.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Commits. A unit that ran no statement, or ran statement-level reads only, has nothing
    /// to commit and returns at once. Inside a [`CausalScope`](crate::CausalScope) a
    /// read-write unit also records its causal token there (one more round trip).
    ///
    /// A unit with an [identity](UnitOptions::identity) records it in the same transaction,
    /// even when it ran no statement (then it begins just for that).
    pub async fn commit(self) -> Result<(), DbErr> {
        if self.records_identity() && !self.is_started() {
            self.active().await?;
        }
        let wrote = !A::READ_ONLY && !self.nested && self.is_started();
        if wrote && wants_tokens() {
            let token = self.commit_capturing().await.map_err(DbErr::from)?;
            record_write(&token);
            return Ok(());
        }
        self.commit_only().await?;
        if wrote {
            note_write();
        }
        Ok(())
    }

    async fn commit_only(self) -> Result<(), DbErr> {
        let span = self.span.clone();
        let identity = self.recorded_identity();
        let record = self.record_sql();
        let result = match self.state.into_inner() {
            Some(Active::Txn(route, txn)) => {
                route
                    .node
                    .bounded(Box::pin(async move {
                        if let Some(sql) = record {
                            txn.execute_unprepared(&sql).await?;
                        }
                        txn.commit().await
                    }))
                    .instrument(span)
                    .await
            }
            Some(Active::Own(_, _, Some(savepoint))) => savepoint.end(true).instrument(span).await,
            Some(Active::Own(route, txn, None)) => {
                route
                    .node
                    .bounded(txn.commit_after(record.as_deref()))
                    .instrument(span)
                    .await
            }
            _ => Ok(()),
        };
        result.map_err(|err| commit_error(identity, err))
    }

    /// True when this unit's commit records its identity: a read-write unit of its own (not
    /// nested) with one.
    fn records_identity(&self) -> bool {
        !A::READ_ONLY && !self.nested && self.options.identity.is_some()
    }

    /// The identity this unit's commit records, if it records one.
    fn recorded_identity(&self) -> Option<(uuid::Uuid, u32)> {
        self.options.identity.filter(|_| self.records_identity())
    }

    /// The statement that records this unit's identities, if its commit records any.
    fn record_sql(&self) -> Option<String> {
        self.recorded_identity().map(|(id, attempt)| {
            record_applied_sql(&id, self.options.also.as_deref().unwrap_or(&[]), attempt)
        })
    }

    /// The unit's identity, if it has one ([`UnitOptions::identity`]).
    pub fn identity(&self) -> Option<uuid::Uuid> {
        self.options.identity_id()
    }

    /// Rolls back, bounded like a statement. A unit that ran no statement returns at once.
    pub async fn rollback(self) -> Result<(), DbErr> {
        let span = self.span.clone();
        match self.state.into_inner() {
            Some(Active::Txn(route, txn)) => {
                route.node.bounded(txn.rollback()).instrument(span).await
            }
            Some(Active::Own(route, _, Some(savepoint))) => {
                route
                    .node
                    .bounded(savepoint.end(false))
                    .instrument(span)
                    .await
            }
            Some(Active::Own(route, txn, None)) => {
                route.node.bounded(txn.rollback()).instrument(span).await
            }
            _ => Ok(()),
        }
    }

    /// The early, friendly refusal of read-only work the server would refuse, and of what a
    /// read-only session does not stop (see [`statement_kind`]).
    /// For a read-only unit, also whether the statement calls a routine that is not a known
    /// built-in (one pass over the text answers both).
    fn guard(&self, sql: &str) -> Result<bool, DbErr> {
        if !A::READ_ONLY {
            return Ok(false);
        }
        match read_check(sql, self.db.backend().into()) {
            Ok(check) => Ok(check.calls_unknown_function),
            Err(refusal) => {
                let err = ReplicaError::WriteInReadOnly {
                    keyword: refusal.what,
                };
                tracing::warn!(parent: &self.span, %err, "refused");
                Err(err.into())
            }
        }
    }

    fn record_route(&self, route: &Route, started: Instant) {
        let node = &route.node;
        NodeCounters::bump(&node.counters.units);
        if !self.nested {
            *self.flight.lock().unwrap_or_else(|p| p.into_inner()) = Some(node.enter());
        }
        let played = node.played();
        node.metrics
            .unit(played, route.reason.index(), route.reason.label());
        if matches!(
            route.reason,
            RouteReason::Fallback | RouteReason::NotReplayed | RouteReason::TooFarBehind
        ) {
            self.db
                .counters()
                .fallbacks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            node.metrics.fallback();
        }
        if self.span.is_disabled() {
            return;
        }
        let address = &node.metrics.address;
        let span = &self.span;
        if !address.namespace.is_empty() {
            span.record("db.namespace", address.namespace.as_str());
        }
        if let Some(host) = &address.host {
            span.record("server.address", host.as_str());
        }
        if let Some(port) = address.port {
            span.record("server.port", port);
        }
        span.record("db.replica.node", node.name());
        span.record("db.replica.role", played.as_str());
        span.record("db.replica.route_reason", route.reason.as_str());
        span.record(
            "db.replica.wait_us",
            started.duration_since(self.opened).as_micros() as u64,
        );
    }

    /// The span of one statement, a child of the unit's: OpenTelemetry's operation name and
    /// summary (and the text, when the handle records it).
    fn statement_span(&self, sql: &str) -> Span {
        let span = tracing::info_span!(
            parent: &self.span,
            "db_statement",
            otel.kind = "client",
            otel.name = Empty,
            db.operation.name = Empty,
            db.query.summary = Empty,
            db.query.text = Empty,
            error.type = Empty,
        );
        if !span.is_disabled() {
            let (operation, table) = statement_kind::summary(sql);
            let summary = match &table {
                Some(table) => format!("{operation} {table}"),
                None => operation.to_owned(),
            };
            span.record("otel.name", summary.as_str());
            span.record("db.operation.name", operation);
            span.record("db.query.summary", summary.as_str());
            if self.db.records_query_text() {
                span.record("db.query.text", sql);
            }
        }
        span
    }

    /// After a statement: its duration in the node's histogram, a failure's class on the spans.
    fn statement_done<T>(
        &self,
        node: &Node,
        span: &Span,
        started: Instant,
        result: &Result<T, DbErr>,
    ) {
        let outcome = match result {
            Ok(_) => Outcome::Ok,
            Err(err) if ReplicaError::is_connection_level(err) => Outcome::Connection,
            Err(_) => Outcome::Database,
        };
        node.metrics
            .statement(node.played(), outcome, started.elapsed());
        let class = match outcome {
            Outcome::Ok => return,
            Outcome::Connection => "connection",
            Outcome::Database => "database",
        };
        span.record("error.type", class);
        self.span.record("error.type", class);
    }

    /// The unit's connection: routes and, where needed, begins on the first call. A read-only
    /// unit whose `BEGIN` fails at the connection level routes again (the failed node is out).
    async fn active(&self) -> Result<&Active, DbErr> {
        match self.state.get() {
            Some(active) => Ok(active),
            // boxed: the start-up path is a large future, and every statement awaits `active`
            None => Box::pin(self.init_active()).await.inspect_err(|err| {
                if !A::READ_ONLY && ReplicaError::is_primary_unavailable(err) {
                    // no primary to begin on (down, or an election under way): a replayed
                    // unit waits and runs again
                    self.node_failed.store(true, Ordering::Relaxed);
                }
            }),
        }
    }

    async fn init_active(&self) -> Result<&Active, DbErr> {
        self.state
            .get_or_try_init(|| async {
                let started = Instant::now();
                let mut attempt = 1;
                loop {
                    match self.start(started).await {
                        Err(err) if self.may_retry(attempt) && ReplicaError::is_connection_level(&err) => {
                            tracing::warn!(parent: &self.span, error = %err, "read-only unit: node failed at begin; routing again");
                            attempt += 1;
                        }
                        other => return other,
                    }
                }
            })
            .instrument(self.span.clone())
            .await
    }

    /// Routes and, where needed, begins.
    async fn start(&self, started: Instant) -> Result<Active, DbErr> {
        let router = self.db.router();
        let route = match &self.pinned {
            Some(route) => route.clone(),
            None if A::READ_ONLY => self.route_read().await?,
            None => router.route(false)?,
        };
        let in_txn = !A::READ_ONLY
            || self.options.isolation.is_some()
            || self.options.transaction
            || route.reason.is_read_only_on_primary();
        let sync_sql = match (A::READ_ONLY, self.options.synchronous_visibility) {
            (false, true) => route
                .node
                .dialect()
                .synchronous_visibility_sql()
                .map_err(|why| DbErr::from(ReplicaError::Config(why.into())))?,
            _ => None,
        };
        let node = &route.node;
        // read-only work only ever runs on the node's read-only sessions
        let active = if in_txn && OwnTxn::supports(node.dialect().0) {
            NodeCounters::bump(&node.counters.acquisitions);
            let txn = node
                .bounded(Box::pin(OwnTxn::begin(
                    node.sessions(A::READ_ONLY),
                    A::READ_ONLY,
                    self.options.isolation,
                    sync_sql,
                    self.options.two_phase.as_deref(),
                )))
                .await?;
            Active::Own(route, Arc::new(txn), None)
        } else if in_txn {
            NodeCounters::bump(&node.counters.acquisitions);
            let pool = if A::READ_ONLY {
                node.read_connection()
            } else {
                node.connection()
            };
            let options = node
                .dialect()
                .transaction_options(A::READ_ONLY, self.options.isolation);
            let txn = node
                .bounded(Box::pin(pool.begin_with_options(options)))
                .await?;
            Active::Txn(route, txn)
        } else {
            Active::Pool(PoolRoutes::new(route))
        };
        self.record_route(active.route(), started);
        tracing::debug!(parent: &self.span, "unit started");
        Ok(active)
    }

    async fn route_read(&self) -> Result<Route, ReplicaError> {
        let router = self.db.router();
        let wait = self.options.max_wait.unwrap_or(router.causal_wait);
        route_read(router, &self.options.consistency, wait).await
    }

    /// True when a failure on attempt `attempt` may move this unit to another node: a
    /// read-only unit that is not nested, has returned nothing yet, and is within the
    /// handle's attempts and time budget.
    fn may_retry(&self, attempt: u32) -> bool {
        let retry = self.db.read_retry();
        A::READ_ONLY
            && !self.nested
            && !self.delivered.load(Ordering::Relaxed)
            && attempt < retry.attempts.min(MAX_READ_ATTEMPTS)
            && self.opened.elapsed() < retry.budget
    }

    /// After the first statement of a statement-level read-only unit failed with its node:
    /// routes again (the failed node is out now) and moves the unit there. Only to another
    /// replica: a unit that would fall back to the primary needs a `READ ONLY` transaction,
    /// which a started unit cannot open, so it gives up (the closure form then reruns on the
    /// primary).
    async fn move_on(&self, routes: &PoolRoutes, err: DbErr) -> Result<(), DbErr> {
        let from = routes.current().node.name().to_owned();
        let route = match self.route_read().await {
            Ok(route) if !route.reason.is_read_only_on_primary() => route,
            _ => return Err(err),
        };
        tracing::warn!(parent: &self.span, error = %err, from, to = route.node.name(), "read-only unit: node failed before returning anything; moving on");
        routes.current().node.metrics.read_retry();
        self.record_route(&route, Instant::now());
        if routes.move_to(route) {
            Ok(())
        } else {
            Err(err)
        }
    }

    /// True when a statement of this unit failed because its node did.
    pub(crate) fn saw_node_failure(&self) -> bool {
        self.node_failed.load(Ordering::Relaxed)
    }

    /// Opens a nested unit: a savepoint inside this unit's transaction, or, for a
    /// statement-level read-only unit, a unit pinned to the same node.
    async fn nested(&self, options: UnitOptions) -> Result<Self, DbErr> {
        match self.active().await? {
            Active::Txn(route, txn) => {
                let savepoint = txn.begin().await?;
                let route = Route {
                    node: route.node.clone(),
                    reason: RouteReason::Inherited,
                };
                Ok(Self::started(
                    self.db.clone(),
                    options,
                    Active::Txn(route, savepoint),
                ))
            }
            Active::Pool(routes) => {
                let route = Route {
                    node: routes.current().node.clone(),
                    reason: RouteReason::Inherited,
                };
                Ok(Self::open(self.db.clone(), options, Some(route)))
            }
            Active::Own(route, txn, _) => {
                let name = txn.savepoint().await?;
                let route = Route {
                    node: route.node.clone(),
                    reason: RouteReason::Inherited,
                };
                let savepoint = Savepoint {
                    txn: txn.clone(),
                    name,
                    done: false,
                };
                Ok(Self::started(
                    self.db.clone(),
                    options,
                    Active::Own(route, txn.clone(), Some(savepoint)),
                ))
            }
        }
    }
}

impl UnitOfWork<ReadWrite> {
    /// Two-phase commit, phase one: prepares this unit's transaction as `gid` on its node.
    /// `Ok(None)`: the unit ran nothing (nothing to prepare); `Ok(Some(node))`: prepared there.
    pub(crate) async fn prepare_two_phase(
        &self,
        gid: &str,
    ) -> Result<Option<Arc<crate::Node>>, DbErr> {
        match self.state.get() {
            None => Ok(None),
            Some(Active::Own(route, txn, None)) => {
                route
                    .node
                    .bounded(Box::pin(txn.prepare(gid)))
                    .instrument(self.span.clone())
                    .await?;
                Ok(Some(route.node.clone()))
            }
            Some(_) => Err(ReplicaError::Config(
                "a two-phase unit needs a transaction of its own on PostgreSQL or MariaDB (not nested, not SQLite)".into(),
            )
            .into()),
        }
    }

    /// Two-phase commit, phase two, on the session that prepared `gid`.
    pub(crate) async fn finish_two_phase(self, gid: &str, commit: bool) -> Result<(), DbErr> {
        match self.state.get() {
            Some(Active::Own(route, txn, None)) => {
                let (node, txn) = (route.node.clone(), txn.clone());
                let span = self.span.clone();
                drop(self);
                node.bounded(Box::pin(txn.finish_prepared(gid, commit)))
                    .instrument(span)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Commits, then returns a [`CausalToken`]: the primary's position after this commit.
    /// Hand it to a later read-only unit ([`UnitOptions::after`]) — in this process or another —
    /// and that unit reads only where this write has been replayed. A unit that ran no
    /// statement returns an empty token without touching any pool.
    ///
    /// Cost: for a unit opened with [`UnitOptions::causal`] (or inside a
    /// [`CausalScope`](crate::CausalScope)) on PostgreSQL or MariaDB, nothing but one more
    /// statement in the `COMMIT` message; otherwise one more round trip to the primary after
    /// the commit (`pg_current_wal_insert_lsn()` / `@@gtid_binlog_pos`).
    pub async fn commit_causal(self) -> Result<CausalToken, ReplicaError> {
        if self.nested {
            return Err(ReplicaError::Config(
                "commit_causal on a nested unit: a savepoint is not durable until the outer unit commits".into(),
            ));
        }
        let token = self.commit_capturing().await?;
        record_write(&token);
        Ok(token)
    }
}

impl<A: Access> UnitOfWork<A> {
    /// Commits and reads the primary's position after the commit; an empty token when the
    /// unit ran nothing.
    async fn commit_capturing(self) -> Result<CausalToken, ReplicaError> {
        let Some(route) = self.route().cloned() else {
            return Ok(CausalToken::default());
        };
        let span = self.span.clone();
        let db = self.db.clone();
        if let Some(Active::Own(_, txn, None)) = self.state.get() {
            // the position (and the identity row) ride on the COMMIT: no extra round trip
            let txn = txn.clone();
            let identity = self.recorded_identity();
            let record = self.record_sql();
            drop(self);
            let position = route
                .node
                .bounded(txn.commit_with_position(record.as_deref()))
                .instrument(span)
                .await
                .map_err(|err| commit_error(identity, err))?;
            // the primary has written this far: tokens up to here are real
            route.node.observe_written(&position);
            return Ok(db.router().token(position));
        }
        self.commit_only().await?;
        let node = &route.node;
        let position = node
            .bounded(node.dialect().current_position(&node.sessions(false)))
            .instrument(span)
            .await?;
        node.observe_written(&position);
        Ok(db.router().token(position))
    }
}

/// Runs one statement on whatever the unit is connected to, bounded by the node's statement
/// timeout. The driver's statement future is large (SeaORM's spans every backend), so it is
/// boxed once rather than moved through the wrappers. `$input` (the statement) is cloned only while a failure could still move the unit
/// to another node: the first statement of a statement-level read-only unit.
macro_rules! on_active {
    ($self:ident, $sql:expr, $input:expr, |$c:ident, $i:ident| $call:expr) => {{
        let statement_span = $self.statement_span($sql);
        let calls = $self.guard($sql)?;
        // a read calling a routine that may set session state runs in its own read-only
        // transaction, whose end resets the session (see `isolated`)
        let isolate = calls && OwnTxn::supports($self.db.backend());
        let mut input = Some($input);
        let mut attempt = 1;
        loop {
            let active = $self.active().await?;
            let node = &active.route().node;
            NodeCounters::bump(&node.counters.statements);
            let routes = match active {
                Active::Pool(routes) if $self.may_retry(attempt) => Some(routes),
                _ => None,
            };
            let $i = match if routes.is_some() {
                input.clone()
            } else {
                input.take()
            } {
                Some(input) => input,
                None => break Err(DbErr::Custom("internal: statement already sent".into())),
            };
            let started = Instant::now();
            let result = match active {
                Active::Pool(_) if isolate => {
                    NodeCounters::bump(&node.counters.acquisitions);
                    node.bounded(Box::pin(async {
                        let txn = OwnTxn::read_only(node.sessions(true), true).await?;
                        let result = {
                            let $c = &txn;
                            $call.await
                        };
                        txn.end_after(result).await
                    }))
                    .instrument(statement_span.clone())
                    .await
                }
                Active::Pool(_) => {
                    NodeCounters::bump(&node.counters.acquisitions);
                    let sessions = node.sessions(true);
                    let $c = &sessions;
                    node.bounded(Box::pin($call))
                        .instrument(statement_span.clone())
                        .await
                }
                Active::Txn(_, txn) => {
                    let $c = txn;
                    node.bounded(Box::pin($call))
                        .instrument(statement_span.clone())
                        .await
                }
                Active::Own(_, txn, _) => {
                    let $c = &**txn;
                    node.bounded(Box::pin($call))
                        .instrument(statement_span.clone())
                        .await
                }
            };
            $self.statement_done(node, &statement_span, started, &result);
            match result {
                Ok(value) => {
                    $self.delivered.store(true, Ordering::Relaxed);
                    break Ok(value);
                }
                Err(err) if ReplicaError::is_connection_level(&err) => {
                    $self.node_failed.store(true, Ordering::Relaxed);
                    match routes {
                        Some(routes) => match Box::pin($self.move_on(routes, err)).await {
                            Ok(()) => attempt += 1,
                            Err(err) => break Err(err),
                        },
                        None => break Err(err),
                    }
                }
                Err(err) => break Err(err),
            }
        }
    }};
}

#[async_trait::async_trait]
impl<A: Access> ConnectionTrait for UnitOfWork<A> {
    fn get_database_backend(&self) -> DbBackend {
        self.db.backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        on_active!(self, &stmt.sql, stmt, |c, s| c.execute_raw(s))
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        if A::READ_ONLY {
            // one statement per call: the extended (prepared) protocol refuses more
            let stmt = Statement::from_string(self.db.backend(), sql);
            return on_active!(self, sql, stmt, |c, s| c.execute_raw(s));
        }
        on_active!(self, sql, sql, |c, s| c.execute_unprepared(s))
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        on_active!(self, &stmt.sql, stmt, |c, s| c.query_one_raw(s))
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        on_active!(self, &stmt.sql, stmt, |c, s| c.query_all_raw(s))
    }
}

/// The row stream of a unit of work.
pub type UnitStream<'a> = Pin<Box<dyn Stream<Item = Result<QueryResult, DbErr>> + Send + 'a>>;

impl<A: Access> StreamTrait for UnitOfWork<A> {
    type Stream<'a> = UnitStream<'a>;

    fn get_database_backend(&self) -> DbBackend {
        self.db.backend()
    }

    fn stream_raw<'a>(
        &'a self,
        stmt: Statement,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Stream<'a>, DbErr>> + 'a + Send>> {
        Box::pin(async move {
            on_active!(self, &stmt.sql, stmt, |c, s| async move {
                c.stream_raw(s).await.map(|s| Box::pin(s) as UnitStream<'a>)
            })
        })
    }
}

#[async_trait::async_trait]
impl<A: Access> TransactionSession for UnitOfWork<A> {
    async fn commit(self) -> Result<(), DbErr> {
        UnitOfWork::commit(self).await
    }

    async fn rollback(self) -> Result<(), DbErr> {
        UnitOfWork::rollback(self).await
    }
}

#[async_trait::async_trait]
impl<A: Access> TransactionTrait for UnitOfWork<A> {
    type Transaction = UnitOfWork<A>;

    async fn begin(&self) -> Result<Self, DbErr> {
        self.nested(self.options.clone()).await
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<Self, DbErr> {
        if A::READ_ONLY && access_mode == Some(AccessMode::ReadWrite) {
            return Err(ReplicaError::WriteInReadOnly {
                keyword: "BEGIN READ WRITE".into(),
            }
            .into());
        }
        let options = UnitOptions {
            isolation: isolation_level.or(self.options.isolation),
            ..self.options.clone()
        };
        self.nested(options).await
    }

    async fn begin_with_options(&self, options: TransactionOptions) -> Result<Self, DbErr> {
        self.begin_with_config(options.isolation_level, options.access_mode)
            .await
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c Self) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let unit = self.begin().await.map_err(TransactionError::Connection)?;
        run_in(unit, callback).await
    }

    async fn transaction_with_config<F, T, E>(
        &self,
        callback: F,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c Self) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let unit = self
            .begin_with_config(isolation_level, access_mode)
            .await
            .map_err(TransactionError::Connection)?;
        run_in(unit, callback).await
    }
}

/// A failed commit of a unit with an identity, typed: the server refused the identity row
/// ([`ReplicaError::AlreadyApplied`]), or the connection failed while the `COMMIT` message
/// was in flight ([`ReplicaError::CommitOutcomeUnknown`]). Other errors pass through.
fn commit_error(identity: Option<(uuid::Uuid, u32)>, err: DbErr) -> DbErr {
    let Some((id, _)) = identity else {
        return err;
    };
    if matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    ) {
        let text = err.to_string();
        if text.contains(APPLIED_TABLE) || text.contains(&id.hyphenated().to_string()) {
            return ReplicaError::AlreadyApplied { id }.into();
        }
    }
    if ReplicaError::is_connection_level(&err) {
        return ReplicaError::CommitOutcomeUnknown {
            id,
            reason: err.to_string(),
        }
        .into();
    }
    err
}

/// Runs `callback` in `unit`: commits on `Ok`, rolls back on `Err`.
pub(crate) async fn run_in<U, F, T, E>(unit: U, callback: F) -> Result<T, TransactionError<E>>
where
    U: TransactionSession + Sync,
    F: for<'c> FnOnce(&'c U) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>> + Send,
    T: Send,
    E: std::fmt::Display + std::fmt::Debug + Send,
{
    let result = callback(&unit).await;
    match result {
        Ok(value) => {
            unit.commit().await.map_err(TransactionError::Connection)?;
            Ok(value)
        }
        Err(err) => {
            unit.rollback()
                .await
                .map_err(TransactionError::Connection)?;
            Err(TransactionError::Transaction(err))
        }
    }
}
