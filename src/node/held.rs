//! Connections the library keeps between uses, instead of giving them back to sqlx's pool
//! (PostgreSQL and MariaDB).
//!
//! sqlx 0.9 pings every connection that goes back to its pool (`Floating::return_to_pool`),
//! and no option turns that off: half the round trips of a point read. The ping is there
//! because sqlx cannot tell whether the last use finished. This crate can: a connection comes
//! back to [`Held`] only after the statement, transaction end or stream on it was answered in
//! full; anything cancelled, cut off by a bound or failed at the connection level is closed
//! (see [`Taken`]). So a statement costs one round trip, and cancel safety is unchanged.
//!
//! sqlx's pool still opens the connections and bounds their number (a held connection counts
//! as checked out); one idle for [`IDLE_GIVE_BACK`] goes back to it. A taker that finds no idle held connection waits for whichever comes
//! first: one handed over by a use that finishes, or one from sqlx's pool. Code that uses the pool directly (migrations, the public
//! [`Node::connection`](crate::Node::connection)) first gets back every idle held connection
//! ([`Held::give_back_idle`]); every held connection also goes back to sqlx after
//! [`RECYCLE_AFTER`], where sqlx applies its lifetime and idle rules.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use sea_orm::sqlx::{self, pool::PoolConnection, MySql, Postgres};
use sea_orm::{
    ConnAcquireErr, DatabaseConnection, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr,
    Statement, Values,
};
use sea_query_sqlx::SqlxValues;
use tokio::sync::oneshot;

use super::pools::Failures;
use crate::ReplicaError;

/// `$body` with `$c` bound to the connection inside a [`Conn`], whichever backend it is.
macro_rules! on_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::node::held::Conn::Pg($c) => $body,
            $crate::node::held::Conn::My($c) => $body,
        }
    };
}
pub(crate) use on_conn;

/// A connection taken from sqlx's pool.
pub(crate) enum Conn {
    /// PostgreSQL.
    Pg(PoolConnection<Postgres>),
    /// MySQL / MariaDB.
    My(PoolConnection<MySql>),
}

impl Conn {
    /// Closes the connection without pooling it: the server ends whatever was open.
    pub(crate) fn discard(self) {
        on_conn!(self, |c| drop(c.detach()));
    }
}

/// A held connection goes back to sqlx's pool (one ping) after this long in the library's
/// hands, so sqlx's lifetime and idle rules still apply and direct users of the pool are
/// never kept waiting longer than this.
pub(crate) const RECYCLE_AFTER: Duration = Duration::from_secs(5);

/// A held connection idle this long goes back to sqlx's pool (checked every
/// `IDLE_GIVE_BACK`), so code that kept a clone of the pool finds it there soon.
pub(crate) const IDLE_GIVE_BACK: Duration = Duration::from_millis(250);

/// Rows of a held stream buffered ahead of the reader.
const STREAM_BUFFER: usize = 64;

struct Idle {
    conn: Conn,
    /// When it was taken from sqlx's pool.
    taken: Instant,
    /// When it was last put back.
    since: Instant,
}

/// The idle connections of one pool that the library holds; see the module.
pub(crate) struct Held {
    backend: DbBackend,
    pool: DatabaseConnection,
    idle: Mutex<Stack>,
    failures: Arc<Failures>,
    /// sqlx's own acquire timeout: how long a taker waits.
    acquire_timeout: Duration,
    /// The background task that gives idle connections back has started.
    reaping: std::sync::atomic::AtomicBool,
}

/// What a waiting taker is handed: a connection, or why none could be opened.
type Handed = Result<Idle, DbErr>;

/// Idle connections, and the takers waiting for one: a connection that comes back goes
/// straight to the longest-waiting taker still there.
#[derive(Default)]
struct Stack {
    idle: Vec<Idle>,
    waiters: VecDeque<oneshot::Sender<Handed>>,
    /// Acquisitions from sqlx's pool under way for the waiters (at most one per waiter).
    acquiring: usize,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// A connection in use. Dropped without [`done`](Self::done) (the future using it was
/// dropped, or its use failed; see also [`finish`](Self::finish)), it is closed: its state
/// is unknown.
pub(crate) struct Taken {
    conn: Option<Conn>,
    taken: Instant,
    home: Arc<Held>,
}

impl Taken {
    /// The connection.
    pub(crate) fn conn(&mut self) -> Result<&mut Conn, DbErr> {
        self.conn
            .as_mut()
            .ok_or_else(|| DbErr::Custom("internal: connection already released".into()))
    }

    /// The use finished and was answered: the connection is idle again (or handed to a
    /// waiting taker).
    pub(crate) fn done(mut self) {
        if let Some(conn) = self.conn.take() {
            self.home.put(conn, self.taken);
        }
    }

    /// After a statement's result: rows, or an error the server answered, keep the
    /// connection; any other failure closes it.
    pub(crate) fn finish<T>(self, result: Result<T, DbErr>) -> Result<T, DbErr> {
        match &result {
            Err(err) if !answered(err) => drop(self),
            _ => self.done(),
        }
        result
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.discard();
            self.home.closed_one();
        }
    }
}

/// True when the connection is known to be fine after `err`: the server answered it with an
/// error of the statement's own (not a shutdown or a recovery conflict). Anything else closes it.
fn answered(err: &DbErr) -> bool {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(&**e, sqlx::Error::Database(_)) && !ReplicaError::is_connection_level(err)
        }
        _ => false,
    }
}

impl Held {
    /// Held connections of `pool` (PostgreSQL or MySQL); `None` for any other pool.
    pub(crate) fn new(pool: &DatabaseConnection, failures: &Arc<Failures>) -> Option<Arc<Self>> {
        use sea_orm::DatabaseConnectionType as T;
        let backend = match &pool.inner {
            T::SqlxPostgresPoolConnection(_) => DbBackend::Postgres,
            T::SqlxMySqlPoolConnection(_) => DbBackend::MySql,
            _ => return None,
        };
        let acquire_timeout = match backend {
            DbBackend::Postgres => pool
                .get_postgres_connection_pool()
                .options()
                .get_acquire_timeout(),
            _ => pool
                .get_mysql_connection_pool()
                .options()
                .get_acquire_timeout(),
        };
        Some(Arc::new(Held {
            backend,
            pool: pool.clone(),
            idle: Mutex::new(Stack::default()),
            failures: Arc::clone(failures),
            acquire_timeout,
            reaping: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Stack> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backend of the pool.
    pub(crate) fn backend(&self) -> DbBackend {
        self.backend
    }

    /// A connection: the most recently used idle one; else the first that comes back from
    /// another use, or that sqlx's pool gives (a new one, or one that went back there),
    /// within sqlx's acquire timeout.
    pub(crate) async fn take(self: &Arc<Self>) -> Result<Taken, DbErr> {
        let deadline = tokio::time::Instant::now() + self.acquire_timeout;
        loop {
            let handed = {
                let mut stack = self.idle();
                match stack.idle.pop() {
                    Some(idle) => Ok(idle),
                    None => {
                        // queued under the lock `put` takes: whatever comes back from now on
                        // goes to the longest waiting
                        let (tx, rx) = oneshot::channel();
                        stack.waiters.push_back(tx);
                        self.keep_acquiring(&mut stack);
                        Err(rx)
                    }
                }
            };
            let idle = match handed {
                Ok(idle) => idle,
                Err(rx) => match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(handed)) => handed?,
                    Ok(Err(_)) => return Err(acquire_err(sqlx::Error::PoolClosed)),
                    Err(_) => return Err(acquire_err(sqlx::Error::PoolTimedOut)),
                },
            };
            // opened (or last known good) before the node failed: closed, like sqlx's own
            // idle connections are (`before_acquire`)
            if self.failures.failed_since(idle.since) {
                idle.conn.discard();
                continue;
            }
            return Ok(Taken {
                conn: Some(idle.conn),
                taken: idle.taken,
                home: Arc::clone(self),
            });
        }
    }

    /// One acquisition from sqlx's pool under way per waiting taker. Each hands what it gets
    /// to the longest waiting taker (or keeps it idle); an error other than a timeout goes
    /// to the longest waiting taker too (a timeout each taker finds by itself).
    fn keep_acquiring(self: &Arc<Self>, stack: &mut Stack) {
        stack.waiters.retain(|w| !w.is_closed());
        if stack.acquiring >= stack.waiters.len() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        stack.acquiring += 1;
        let me = Arc::clone(self);
        rt.spawn(async move {
            let acquired = me.acquire().await;
            let mut stack = me.idle();
            stack.acquiring = stack.acquiring.saturating_sub(1);
            drop(stack);
            match acquired {
                Ok(conn) => me.put(conn, Instant::now()),
                Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)) => {}
                Err(err) => me.hand(Err(err)),
            }
        });
    }

    /// A connection from sqlx's pool.
    async fn acquire(&self) -> Result<Conn, DbErr> {
        Ok(match self.backend {
            DbBackend::Postgres => Conn::Pg(
                self.pool
                    .get_postgres_connection_pool()
                    .acquire()
                    .await
                    .map_err(acquire_err)?,
            ),
            _ => Conn::My(
                self.pool
                    .get_mysql_connection_pool()
                    .acquire()
                    .await
                    .map_err(acquire_err)?,
            ),
        })
    }

    /// Gives `handed` to the longest waiting taker; `Some` back when nobody waits.
    fn hand_to_waiter(stack: &mut Stack, mut handed: Handed) -> Option<Handed> {
        while let Some(waiter) = stack.waiters.pop_front() {
            match waiter.send(handed) {
                Ok(()) => return None,
                // that taker went away
                Err(back) => handed = back,
            }
        }
        Some(handed)
    }

    /// An error for the longest waiting taker, if any.
    fn hand(&self, err: Handed) {
        let mut stack = self.idle();
        let _ = Self::hand_to_waiter(&mut stack, err);
    }

    /// A connection comes back: to the longest waiting taker, or idle. One held since
    /// `taken` for longer than [`RECYCLE_AFTER`] goes back to sqlx's pool instead (a
    /// waiting taker's acquisition then gets it there).
    fn put(self: &Arc<Self>, conn: Conn, taken: Instant) {
        let now = Instant::now();
        if now.duration_since(taken) >= RECYCLE_AFTER || self.pool_is_closed() {
            drop(conn);
            let mut stack = self.idle();
            self.keep_acquiring(&mut stack);
            return;
        }
        let idle = Idle {
            conn,
            taken,
            since: now,
        };
        let mut stack = self.idle();
        let Some(Ok(idle)) = Self::hand_to_waiter(&mut stack, Ok(idle)) else {
            return;
        };
        stack.idle.push(idle);
        drop(stack);
        self.start_reaping();
    }

    /// Starts, once, the task that gives connections idle for [`IDLE_GIVE_BACK`] back to
    /// sqlx's pool. It ends with the last handle on this `Held`.
    fn start_reaping(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.reaping.load(Ordering::Relaxed) || self.reaping.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.reaping.store(false, Ordering::Relaxed);
            return;
        };
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(IDLE_GIVE_BACK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(held) = weak.upgrade() else { return };
                let now = Instant::now();
                let mut stack = held.idle();
                // oldest first: the stack is in the order the connections came back
                let keep = stack
                    .idle
                    .iter()
                    .position(|i| now.duration_since(i.since) < IDLE_GIVE_BACK)
                    .unwrap_or(stack.idle.len());
                let given: Vec<Idle> = stack.idle.drain(..keep).collect();
                drop(stack);
                drop(given);
            }
        });
    }

    /// After a connection was closed: sqlx's pool may open another for a waiting taker.
    fn closed_one(self: &Arc<Self>) {
        let mut stack = self.idle();
        self.keep_acquiring(&mut stack);
    }

    fn pool_is_closed(&self) -> bool {
        match self.backend {
            DbBackend::Postgres => self.pool.get_postgres_connection_pool().is_closed(),
            _ => self.pool.get_mysql_connection_pool().is_closed(),
        }
    }

    /// Gives every idle held connection back to sqlx's pool, for code about to use that pool
    /// directly.
    pub(crate) fn give_back_idle(&self) {
        let idle = std::mem::take(&mut self.idle().idle);
        drop(idle);
    }

    /// Runs one use of a connection: kept when `f` finishes (see [`Taken::finish`]), closed
    /// when it fails at the connection level or is dropped midway.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, DbErr>
    where
        F: for<'c> FnOnce(
            &'c mut Conn,
        ) -> Pin<Box<dyn Future<Output = Result<T, DbErr>> + Send + 'c>>,
    {
        let mut taken = self.take().await?;
        let result = f(taken.conn()?).await;
        taken.finish(result)
    }
}

// ---------------------------------------------------------------------------------------------
// Statements on a connection, exactly as SeaORM binds them; rows come back as SeaORM's own
// `QueryResult`. Shared with the held transactions (`unit::txn`).
// ---------------------------------------------------------------------------------------------

pub(crate) fn acquire_err(err: sqlx::Error) -> DbErr {
    match err {
        sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        other => DbErr::Conn(RuntimeErr::SqlxError(Arc::new(other))),
    }
}

pub(crate) fn exec_err(err: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(err)))
}

pub(crate) fn query_err(err: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(err)))
}

fn values(stmt: &Statement) -> SqlxValues {
    SqlxValues(stmt.values.clone().unwrap_or(Values(Vec::new())))
}

/// Runs `sql` (one or more statements, no parameters), discarding any rows.
pub(crate) async fn run_raw(conn: &mut Conn, sql: String) -> Result<(), DbErr> {
    let q = sqlx::AssertSqlSafe(sql);
    on_conn!(conn, |c| sqlx::raw_sql(q)
        .execute(&mut **c)
        .await
        .map(|_| ()))
    .map_err(exec_err)
}

/// One statement, prepared.
pub(crate) async fn execute(conn: &mut Conn, stmt: &Statement) -> Result<ExecResult, DbErr> {
    let v = values(stmt);
    let q = sqlx::AssertSqlSafe(stmt.sql.as_str());
    Ok(on_conn!(conn, |c| sqlx::query_with(q, v)
        .execute(&mut **c)
        .await
        .map_err(exec_err)?
        .into()))
}

/// One or more statements, unprepared (the simple protocol).
pub(crate) async fn execute_unprepared(conn: &mut Conn, sql: &str) -> Result<ExecResult, DbErr> {
    let q = sqlx::AssertSqlSafe(sql.to_owned());
    Ok(on_conn!(conn, |c| sqlx::raw_sql(q)
        .execute(&mut **c)
        .await
        .map_err(exec_err)?
        .into()))
}

/// The first row of one statement.
pub(crate) async fn query_one(
    conn: &mut Conn,
    stmt: &Statement,
) -> Result<Option<QueryResult>, DbErr> {
    let v = values(stmt);
    let q = sqlx::AssertSqlSafe(stmt.sql.as_str());
    Ok(on_conn!(conn, |c| sqlx::query_with(q, v)
        .fetch_optional(&mut **c)
        .await
        .map_err(query_err)?
        .map(Into::into)))
}

/// Every row of one statement.
pub(crate) async fn query_all(
    conn: &mut Conn,
    stmt: &Statement,
) -> Result<Vec<QueryResult>, DbErr> {
    let v = values(stmt);
    let q = sqlx::AssertSqlSafe(stmt.sql.as_str());
    Ok(on_conn!(conn, |c| sqlx::query_with(q, v)
        .fetch_all(&mut **c)
        .await
        .map_err(query_err)?
        .into_iter()
        .map(Into::into)
        .collect()))
}

/// A stream of rows.
pub(crate) type RowStream<'a> = Pin<Box<dyn Stream<Item = Result<QueryResult, DbErr>> + Send + 'a>>;

/// Each call on its own held connection, like a call on a SeaORM pool.
impl Held {
    /// One statement, prepared.
    pub(crate) async fn execute_raw(
        self: &Arc<Self>,
        stmt: Statement,
    ) -> Result<ExecResult, DbErr> {
        self.run(|c| Box::pin(async move { execute(c, &stmt).await }))
            .await
    }

    /// One or more statements, unprepared.
    pub(crate) async fn execute_unprepared(
        self: &Arc<Self>,
        sql: &str,
    ) -> Result<ExecResult, DbErr> {
        let sql = sql.to_owned();
        self.run(|c| Box::pin(async move { execute_unprepared(c, &sql).await }))
            .await
    }

    /// The first row of one statement.
    pub(crate) async fn query_one_raw(
        self: &Arc<Self>,
        stmt: Statement,
    ) -> Result<Option<QueryResult>, DbErr> {
        self.run(|c| Box::pin(async move { query_one(c, &stmt).await }))
            .await
    }

    /// Every row of one statement.
    pub(crate) async fn query_all_raw(
        self: &Arc<Self>,
        stmt: Statement,
    ) -> Result<Vec<QueryResult>, DbErr> {
        self.run(|c| Box::pin(async move { query_all(c, &stmt).await }))
            .await
    }

    /// A stream on a held connection: a task reads the rows into a small buffer. The
    /// connection is kept only when every row was read; a stream dropped early closes it.
    pub(crate) async fn stream_raw(
        self: &Arc<Self>,
        stmt: Statement,
    ) -> Result<RowStream<'static>, DbErr> {
        let mut taken = self.take().await?;
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            let Ok(conn) = taken.conn() else { return };
            let v = values(&stmt);
            let q = sqlx::AssertSqlSafe(stmt.sql.as_str());
            let finished = on_conn!(conn, |c| {
                let mut rows = sqlx::query_with(q, v).fetch(&mut **c);
                loop {
                    match rows.next().await {
                        None => break true,
                        Some(Ok(row)) => {
                            if tx.send(Ok(QueryResult::from(row))).await.is_err() {
                                // the reader went away midway: the rest is unread
                                break false;
                            }
                        }
                        Some(Err(e)) => {
                            let err = query_err(e);
                            let keep = answered(&err);
                            let _ = tx.send(Err(err)).await;
                            break keep;
                        }
                    }
                }
            });
            if finished {
                taken.done();
            }
        });
        Ok(Box::pin(stream_of(rx)))
    }
}

/// The receiving end of a channel as a stream.
fn stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}
