//! The pools of one node, built here rather than by SeaORM's `Database::connect`:
//!
//! - **read-only work runs only on read-only sessions.** Every node has a read-write pool and
//!   a separate read-only pool whose connections the *server* holds read-only from the moment
//!   they open: PostgreSQL `default_transaction_read_only = on` in the startup packet (no round
//!   trip), MariaDB `SET SESSION TRANSACTION READ ONLY` once per connection, SQLite a file
//!   opened read-only with `query_only` and a commit hook that turns every commit into a
//!   rollback. The two kinds never share a connection, so nothing a read-only unit does to its
//!   session can reach a read-write unit.
//! - **no URL reaches a log.** The driver options are parsed here, once; SeaORM's connect span
//!   (which records the whole URL at TRACE) never runs.
//! - **no ping before every acquire.** sqlx pings an idle connection before handing it out
//!   unless told not to; the monitor and the circuit breaker already know whether a node is
//!   alive, and a dead connection fails its statement at the connection level, which moves a
//!   read-only unit to another node.
//! - **lazy.** No pool opens a connection before it is needed, so a node that is down when
//!   the handle is built does not hold up `connect()`: the first health check finds it down.
//! - **the monitor has its own connection.** PostgreSQL and MariaDB nodes get a third pool of
//!   one read-only session ([`CheckPool`]) that only the health checks use, so a saturated
//!   application pool never makes a healthy node look dead. It logs in with the node's own
//!   credentials (the URL's), not the read-only ones: the checks read replication views
//!   (`pg_stat_replication`, `SHOW SLAVE STATUS`) that a role without grants may not see.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use std::time::Instant;

use super::held::Held;
use crate::backend::sqlite_read_only;
use sea_orm::sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sea_orm::sqlx::{self, ConnectOptions, Executor};
use sea_orm::{
    DatabaseConnection, DbBackend, SqlxMySqlConnector, SqlxPostgresConnector, SqlxSqliteConnector,
};

/// Which kind of session a pool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Session {
    /// Ordinary sessions: writes, migrations, read-write units.
    ReadWrite,
    /// Sessions the server holds read-only: every read-only unit, scope and fallback.
    ReadOnly,
}

/// Where a node's connections go: the driver's parsed options. They hold the password, so
/// this type has no `Debug` that prints them.
#[derive(Clone)]
pub(crate) enum Target {
    Postgres(PgConnectOptions),
    MySql(MySqlConnectOptions),
    Sqlite(SqliteConnectOptions),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Postgres(_) => "Target::Postgres(..)",
            Target::MySql(_) => "Target::MySql(..)",
            Target::Sqlite(_) => "Target::Sqlite(..)",
        })
    }
}

/// Pool sizes and timeouts, validated by the configuration.
#[derive(Debug, Clone, Default)]
pub(crate) struct PoolSettings {
    pub max_connections: Option<u32>,
    pub min_connections: Option<u32>,
    pub acquire_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub max_lifetime: Option<Duration>,
    /// Server-side statement timeout (PostgreSQL).
    pub statement_timeout: Option<Duration>,
    pub logging: bool,
    /// Log in as this user (and password) instead of the URL's.
    pub credentials: Option<(String, Option<String>)>,
}

/// How long an SQLite connection waits for the file's lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl Target {
    /// Parses `url` for `backend`. The error never contains the URL.
    pub(crate) fn parse(url: &str, backend: DbBackend) -> Result<Self, String> {
        let why = |e: sqlx::Error| match e {
            sqlx::Error::Configuration(inner) => {
                let text = inner.to_string();
                // sqlx quotes bad values back; keep only its first clause
                text.split(':').next().unwrap_or("invalid").to_owned()
            }
            _ => "invalid URL".to_owned(),
        };
        Ok(match backend {
            DbBackend::Postgres => Target::Postgres(url.parse().map_err(why)?),
            DbBackend::MySql => Target::MySql(url.parse().map_err(why)?),
            _ => Target::Sqlite(url.parse().map_err(why)?),
        })
    }

    /// The options of a pool the caller built, so that its read-only sessions can be opened
    /// the same way.
    pub(crate) fn of(conn: &DatabaseConnection) -> Option<Self> {
        use sea_orm::DatabaseConnectionType as T;
        match &conn.inner {
            T::SqlxPostgresPoolConnection(_) => Some(Target::Postgres(
                (*conn.get_postgres_connection_pool().connect_options()).clone(),
            )),
            T::SqlxMySqlPoolConnection(_) => Some(Target::MySql(
                (*conn.get_mysql_connection_pool().connect_options()).clone(),
            )),
            T::SqlxSqlitePoolConnection(_) => Some(Target::Sqlite(
                (*conn.get_sqlite_connection_pool().connect_options()).clone(),
            )),
            _ => None,
        }
    }

    /// The same server with other credentials (read-only sessions may log in as a role
    /// without write grants). SQLite has no credentials.
    pub(crate) fn with_credentials(self, user: &str, password: Option<&str>) -> Self {
        match self {
            Target::Postgres(o) => {
                let o = o.username(user);
                Target::Postgres(match password {
                    Some(p) => o.password(p),
                    None => o,
                })
            }
            Target::MySql(o) => {
                let o = o.username(user);
                Target::MySql(match password {
                    Some(p) => o.password(p),
                    None => o,
                })
            }
            other => other,
        }
    }

    /// True for an SQLite database that lives in memory.
    pub(crate) fn is_sqlite_memory(&self) -> bool {
        match self {
            Target::Sqlite(o) => {
                let name = o.get_filename().to_string_lossy();
                name.contains(":memory:") || name.starts_with("file:sqlx-in-memory-")
            }
            _ => false,
        }
    }

    /// A lazy pool of `session`s on this target; with `failures`, a connection opened before
    /// the node last failed is closed instead of handed out.
    pub(crate) fn pool(
        &self,
        settings: &PoolSettings,
        session: Session,
        failures: Option<&Arc<Failures>>,
    ) -> DatabaseConnection {
        let read_only = session == Session::ReadOnly;
        let target = match &settings.credentials {
            Some((user, password)) => self.clone().with_credentials(user, password.as_deref()),
            None => self.clone(),
        };
        match &target {
            Target::Postgres(o) => {
                let mut o = o.clone();
                o = log(o, settings.logging);
                let mut params: Vec<(&str, String)> = Vec::new();
                if let Some(t) = settings.statement_timeout {
                    params.push(("statement_timeout", t.as_millis().to_string()));
                }
                if read_only {
                    params.push(("default_transaction_read_only", "on".into()));
                }
                if !params.is_empty() {
                    o = o.options(params);
                }
                let mut opts = apply(PgPoolOptions::new(), settings);
                if let Some(failures) = failures.cloned() {
                    opts = opts.before_acquire(move |_, meta| {
                        let fresh = failures.opened_since_last_failure(meta.age);
                        Box::pin(async move { Ok(fresh) })
                    });
                }
                SqlxPostgresConnector::from_sqlx_postgres_pool(opts.connect_lazy_with(o))
            }
            Target::MySql(o) => {
                let o = log(o.clone(), settings.logging);
                let mut opts = apply(MySqlPoolOptions::new(), settings);
                if let Some(failures) = failures.cloned() {
                    opts = opts.before_acquire(move |_, meta| {
                        let fresh = failures.opened_since_last_failure(meta.age);
                        Box::pin(async move { Ok(fresh) })
                    });
                }
                if read_only {
                    opts = opts.after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("SET SESSION TRANSACTION READ ONLY")
                                .await
                                .map(|_| ())
                        })
                    });
                }
                SqlxMySqlConnector::from_sqlx_mysql_pool(opts.connect_lazy_with(o))
            }
            Target::Sqlite(o) => {
                let memory = target.is_sqlite_memory();
                let mut o = log(o.clone(), settings.logging).busy_timeout(SQLITE_BUSY_TIMEOUT);
                let mut opts = apply(SqlitePoolOptions::new(), settings);
                if read_only {
                    o = o.read_only(true).pragma("query_only", "ON");
                    opts = opts
                        .max_connections(settings.max_connections.unwrap_or(4))
                        .after_connect(|conn, _| {
                            Box::pin(async move {
                                let mut handle = conn.lock_handle().await?;
                                // every commit of a write becomes a rollback (reads never
                                // reach the hook): the engine refuses, whatever the SQL
                                handle.set_commit_hook(|| false);
                                // and only reading actions prepare at all (in memory and
                                // ATTACH included, which the flags above do not cover)
                                let raw = handle.as_raw_handle();
                                // SAFETY: `raw` is the live handle of the locked connection
                                unsafe { sqlite_read_only::install(raw.as_ptr()) }
                                    .map_err(|e| sqlx::Error::Configuration(e.into()))
                            })
                        });
                } else {
                    o = o.create_if_missing(true);
                    if !memory {
                        o = o.journal_mode(SqliteJournalMode::Wal);
                    }
                    // one writer: SQLite takes one write lock at a time anyway
                    opts = opts
                        .max_connections(settings.max_connections.unwrap_or(1))
                        .after_release(|conn, _| {
                            Box::pin(async move {
                                // a unit dropped while its BEGIN was queued leaves the
                                // connection inside a transaction: close it, never reuse it
                                Ok(!sqlite_in_transaction(conn).await?)
                            })
                        });
                    if memory {
                        // the database lives as long as one connection to it does
                        opts = opts
                            .min_connections(1)
                            .idle_timeout(None)
                            .max_lifetime(None);
                    }
                }
                SqlxSqliteConnector::from_sqlx_sqlite_pool(opts.connect_lazy_with(o))
            }
        }
    }
}

fn log<O: ConnectOptions>(o: O, logging: bool) -> O {
    if logging {
        o
    } else {
        o.disable_statement_logging()
    }
}

fn apply<DB: sqlx::Database>(
    mut opts: sqlx::pool::PoolOptions<DB>,
    s: &PoolSettings,
) -> sqlx::pool::PoolOptions<DB> {
    opts = opts.test_before_acquire(false);
    if let Some(n) = s.max_connections {
        opts = opts.max_connections(n);
    }
    if let Some(n) = s.min_connections {
        opts = opts.min_connections(n);
    }
    if let Some(t) = s.acquire_timeout {
        opts = opts.acquire_timeout(t);
    }
    if let Some(t) = s.idle_timeout {
        opts = opts.idle_timeout(t);
    }
    if let Some(t) = s.max_lifetime {
        opts = opts.max_lifetime(t);
    }
    opts
}

/// The pools of a node.
#[derive(Debug, Clone)]
pub(crate) struct Pools {
    /// Read-write sessions.
    pub rw: DatabaseConnection,
    /// Read-only sessions.
    pub ro: DatabaseConnection,
    /// The health checks' own session; `None` for SQLite, which has no monitor.
    pub check: Option<Arc<CheckPool>>,
    /// When the node last failed, shared with the pools' acquire hooks.
    pub failures: Arc<Failures>,
    /// The read-write connections the library holds between uses (PostgreSQL, MySQL).
    pub rw_held: Option<Arc<Held>>,
    /// The read-only ones.
    pub ro_held: Option<Arc<Held>>,
}

impl Pools {
    /// Pools that are never used (tests of routing decisions, which do no I/O).
    #[cfg(test)]
    pub(crate) fn unused() -> Self {
        Pools::assemble(
            DatabaseConnection::default(),
            DatabaseConnection::default(),
            None,
            Arc::default(),
        )
    }

    fn assemble(
        rw: DatabaseConnection,
        ro: DatabaseConnection,
        check: Option<Arc<CheckPool>>,
        failures: Arc<Failures>,
    ) -> Self {
        Pools {
            rw_held: Held::new(&rw, &failures),
            ro_held: Held::new(&ro, &failures),
            rw,
            ro,
            check,
            failures,
        }
    }

    /// The pools on `target`; the read-only one with its own settings, the check pool with the
    /// read-write one's credentials.
    pub(crate) fn open(target: &Target, rw: &PoolSettings, ro: &PoolSettings) -> Self {
        let failures = Arc::<Failures>::default();
        Pools::assemble(
            target.pool(rw, Session::ReadWrite, Some(&failures)),
            target.pool(ro, Session::ReadOnly, Some(&failures)),
            CheckPool::new(target, rw, &failures),
            failures,
        )
    }

    /// For a pool the caller built: it stays the read-write pool, and read-only sessions (and
    /// the check session) are opened with its connect options.
    /// A closed pool stays closed for every kind.
    pub(crate) fn around(rw: DatabaseConnection, ro: &PoolSettings) -> Option<Self> {
        let target = Target::of(&rw)?;
        let failures = Arc::<Failures>::default();
        if is_closed(&rw) {
            let closed = CheckPool::fixed(&target, rw.clone());
            return Some(Pools::assemble(rw.clone(), rw, closed, failures));
        }
        // read-only sessions as many as the handed pool has connections, unless told
        let mut ro = ro.clone();
        ro.max_connections = ro.max_connections.or(Some(max_connections(&rw)));
        Some(Pools::assemble(
            rw,
            target.pool(&ro, Session::ReadOnly, Some(&failures)),
            CheckPool::new(&target, &PoolSettings::default(), &failures),
            failures,
        ))
    }
}

/// How many connections the check pool holds: one. A round checks each node once, and a
/// check that is still running when the next round starts means the node is slow to answer.
const CHECK_CONNECTIONS: u32 = 1;

/// How long the check pool waits for its connection; the monitor's own `check_timeout`
/// bounds every check anyway (this only keeps a pool used on its own from waiting 30 s).
const CHECK_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The monitor's own connection to a node: a lazy pool of one read-only session that no unit
/// ever uses. Waiting for it is waiting for the previous check, never for the application.
///
/// A check that times out mid-statement would leave that one connection to sqlx's release
/// ping, which waits as long as the server does not answer (hours, behind a dead TCP peer);
/// [`reset`](Self::reset) replaces the pool instead, so the next check opens a fresh
/// connection within its own timeout.
pub(crate) struct CheckPool {
    /// Where to open it again; `None` for a pool that cannot be reopened (closed by its owner).
    target: Option<Target>,
    settings: PoolSettings,
    failures: Arc<Failures>,
    pool: RwLock<DatabaseConnection>,
}

impl std::fmt::Debug for CheckPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckPool").finish_non_exhaustive()
    }
}

impl CheckPool {
    /// The check pool of a node on `target` with the credentials of `rw`; `None` for SQLite.
    fn new(target: &Target, rw: &PoolSettings, failures: &Arc<Failures>) -> Option<Arc<Self>> {
        if matches!(target, Target::Sqlite(_)) {
            return None;
        }
        let settings = PoolSettings {
            max_connections: Some(CHECK_CONNECTIONS),
            min_connections: None,
            acquire_timeout: Some(CHECK_ACQUIRE_TIMEOUT),
            idle_timeout: None,
            max_lifetime: rw.max_lifetime,
            statement_timeout: None,
            logging: rw.logging,
            credentials: rw.credentials.clone(),
        };
        let pool = target.pool(&settings, Session::ReadOnly, Some(failures));
        Some(Arc::new(CheckPool {
            target: Some(target.clone()),
            settings,
            failures: Arc::clone(failures),
            pool: RwLock::new(pool),
        }))
    }

    /// A check "pool" that is the given (closed) pool and stays so.
    fn fixed(target: &Target, pool: DatabaseConnection) -> Option<Arc<Self>> {
        if matches!(target, Target::Sqlite(_)) {
            return None;
        }
        Some(Arc::new(CheckPool {
            target: None,
            settings: PoolSettings::default(),
            failures: Arc::default(),
            pool: RwLock::new(pool),
        }))
    }

    /// The pool to check through now (a cheap clone of a handle).
    pub(crate) fn get(&self) -> DatabaseConnection {
        self.pool.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Drops the current connection (after a check that did not finish) and starts a fresh
    /// lazy pool. The old connection is abandoned to its release task, not waited for.
    pub(crate) fn reset(&self) {
        if let Some(target) = &self.target {
            let fresh = target.pool(&self.settings, Session::ReadOnly, Some(&self.failures));
            *self.pool.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        }
    }
}

/// When a node last failed. Its pools ask it before handing out an idle connection: one opened
/// before the failure (a restart, a lost network) is closed and replaced rather than handed to
/// a unit that would fail on it. No round trip: the pools do not ping (the monitor knows
/// whether the node is alive), and this is what a ping would have caught after a failure.
#[derive(Debug)]
pub(crate) struct Failures {
    epoch: Instant,
    /// Milliseconds since `epoch` at the last failure, plus one; 0: never failed.
    last_ms: AtomicU64,
}

impl Default for Failures {
    fn default() -> Self {
        Failures {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Failures {
    /// Records a failure of the node now.
    pub(crate) fn note(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX / 2);
        self.last_ms.fetch_max(now + 1, Ordering::Relaxed);
    }

    /// True when the node failed after `at`.
    pub(crate) fn failed_since(&self, at: Instant) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        last != 0
            && u64::try_from(at.saturating_duration_since(self.epoch).as_millis())
                .unwrap_or(u64::MAX)
                < last
    }

    /// True for a connection of this `age` that was opened after the node last failed.
    fn opened_since_last_failure(&self, age: Duration) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last == 0 {
            return true;
        }
        let opened = self.epoch.elapsed().saturating_sub(age);
        u64::try_from(opened.as_millis()).unwrap_or(u64::MAX) >= last
    }
}

/// A pool's connections now (`used` counts those the library holds between statements).
pub(crate) fn pool_use(conn: &DatabaseConnection) -> crate::observe::PoolUse {
    use sea_orm::DatabaseConnectionType as T;
    fn of<DB: sea_orm::sqlx::Database>(pool: &sea_orm::sqlx::Pool<DB>) -> crate::observe::PoolUse {
        let size = pool.size();
        let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(size);
        crate::observe::PoolUse {
            used: size - idle,
            idle,
            max: pool.options().get_max_connections(),
        }
    }
    match &conn.inner {
        T::SqlxPostgresPoolConnection(_) => of(conn.get_postgres_connection_pool()),
        T::SqlxMySqlPoolConnection(_) => of(conn.get_mysql_connection_pool()),
        T::SqlxSqlitePoolConnection(_) => of(conn.get_sqlite_connection_pool()),
        _ => crate::observe::PoolUse::default(),
    }
}

fn is_closed(conn: &DatabaseConnection) -> bool {
    use sea_orm::DatabaseConnectionType as T;
    match &conn.inner {
        T::SqlxPostgresPoolConnection(_) => conn.get_postgres_connection_pool().is_closed(),
        T::SqlxMySqlPoolConnection(_) => conn.get_mysql_connection_pool().is_closed(),
        T::SqlxSqlitePoolConnection(_) => conn.get_sqlite_connection_pool().is_closed(),
        _ => true,
    }
}

/// True when the SQLite connection is inside a transaction, as the engine itself says
/// (`sqlite3_get_autocommit`). Taking the handle waits for every command queued before it.
async fn sqlite_in_transaction(
    conn: &mut sqlx::sqlite::SqliteConnection,
) -> Result<bool, sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let raw = handle.as_raw_handle();
    // SAFETY: `raw` is the live handle of the locked connection; sqlite3_get_autocommit only
    // reads its state and is safe to call from the thread holding the lock.
    let autocommit = unsafe { libsqlite3_sys::sqlite3_get_autocommit(raw.as_ptr()) };
    Ok(autocommit == 0)
}

/// The largest size of a pool the caller built.
fn max_connections(conn: &DatabaseConnection) -> u32 {
    use sea_orm::DatabaseConnectionType as T;
    match &conn.inner {
        T::SqlxPostgresPoolConnection(_) => conn
            .get_postgres_connection_pool()
            .options()
            .get_max_connections(),
        T::SqlxMySqlPoolConnection(_) => conn
            .get_mysql_connection_pool()
            .options()
            .get_max_connections(),
        T::SqlxSqlitePoolConnection(_) => conn
            .get_sqlite_connection_pool()
            .options()
            .get_max_connections(),
        _ => 1,
    }
}
