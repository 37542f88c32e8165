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
//! as checked out). Code that uses the pool directly (migrations, the public
//! [`Node::connection`](crate::Node::connection)) first gets back every idle held connection
//! ([`Held::give_back_idle`]); every held connection also goes back to sqlx after
//! [`RECYCLE_AFTER`], where sqlx applies its lifetime and idle rules.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use sea_orm::sqlx::{self, pool::PoolConnection, MySql, Postgres};
use sea_orm::{
    ConnAcquireErr, DatabaseConnection, DbBackend, DbErr, ExecResult,
    QueryResult, RuntimeErr, Statement, Values,
};
use sea_query_sqlx::SqlxValues;

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
}

/// Idle connections, and how many takers wait in sqlx's pool for one (a connection that
/// comes back while someone waits goes to sqlx's pool, which hands it to them).
#[derive(Default)]
struct Stack {
    idle: Vec<Idle>,
    waiting: usize,
}

/// A taker counted as waiting in sqlx's pool until dropped.
struct Waiting<'a>(&'a Held);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut stack = self.0.idle();
        stack.waiting = stack.waiting.saturating_sub(1);
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// A connection in use. Dropped without [`done`](Self::done) or [`keep`](Self::keep) (the
/// future using it was dropped, or its use failed), it is closed: its state is unknown.
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

    /// The use finished and was answered: the connection is idle again, held for the next.
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
        Some(Arc::new(Held {
            backend,
            pool: pool.clone(),
            idle: Mutex::new(Stack::default()),
            failures: Arc::clone(failures),
        }))
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Stack> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backend of the pool.
    pub(crate) fn backend(&self) -> DbBackend {
        self.backend
    }

    /// A connection: the most recently used idle one, or one from sqlx's pool.
    pub(crate) async fn take(self: &Arc<Self>) -> Result<Taken, DbErr> {
        let waiting = loop {
            let mut stack = self.idle();
            let Some(idle) = stack.idle.pop() else {
                // counted under the same lock that `put` checks: a connection put back from
                // now on goes to sqlx's pool, where this taker waits
                stack.waiting += 1;
                break Waiting(self);
            };
            drop(stack);
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
        };
        let conn = match self.backend {
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
        };
        drop(waiting);
        Ok(Taken {
            conn: Some(conn),
            taken: Instant::now(),
            home: Arc::clone(self),
        })
    }

    /// An idle connection comes back; one held since `taken` for longer than
    /// [`RECYCLE_AFTER`] goes back to sqlx's pool instead.
    fn put(&self, conn: Conn, taken: Instant) {
        let now = Instant::now();
        if now.duration_since(taken) >= RECYCLE_AFTER || self.pool_is_closed() {
            drop(conn);
            return;
        }
        let mut stack = self.idle();
        if stack.waiting > 0 {
            // someone waits in sqlx's pool: it gets this one from there
            drop(stack);
            drop(conn);
            return;
        }
        // the least recently used one, idle too long: back to sqlx, which reaps idle ones
        let stale = stack
            .idle
            .first()
            .is_some_and(|oldest| now.duration_since(oldest.since) >= RECYCLE_AFTER);
        let stale = stale.then(|| stack.idle.remove(0));
        stack.idle.push(Idle {
            conn,
            taken,
            since: now,
        });
        drop(stack);
        drop(stale);
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
        F: for<'c> FnOnce(&'c mut Conn) -> Pin<Box<dyn Future<Output = Result<T, DbErr>> + Send + 'c>>,
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
pub(crate) async fn query_all(conn: &mut Conn, stmt: &Statement) -> Result<Vec<QueryResult>, DbErr> {
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
    pub(crate) async fn execute_raw(self: &Arc<Self>, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.run(|c| Box::pin(async move { execute(c, &stmt).await }))
            .await
    }

    /// One or more statements, unprepared.
    pub(crate) async fn execute_unprepared(self: &Arc<Self>, sql: &str) -> Result<ExecResult, DbErr> {
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
