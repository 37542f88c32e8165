//! A read-write transaction on a connection the unit holds itself, so that its `COMMIT` and
//! the primary's position travel in one round trip.
//!
//! SeaORM's `DatabaseTransaction` keeps its connection private, and the only multi-statement
//! call it offers (`execute_unprepared`) returns no rows. A read-write unit that will hand out
//! a causal token (inside a [`CausalScope`](crate::CausalScope), or opened with
//! [`UnitOptions::causal`](crate::UnitOptions::causal)) therefore runs on a pooled sqlx
//! connection it holds: statements are bound exactly as SeaORM binds them, and rows come back
//! as SeaORM's own `QueryResult`. The commit is one simple-query message, e.g.
//! `COMMIT; SELECT pg_current_wal_insert_lsn()::text`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use futures_util::Stream;
use sea_orm::sqlx::{self, pool::PoolConnection, MySql, Postgres, Row};
use sea_orm::{
    ConnAcquireErr, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, ExecResult,
    IsolationLevel, QueryResult, RuntimeErr, Statement, StreamTrait, Values,
};
use sea_query_sqlx::SqlxValues;
use tokio::sync::Mutex;

use crate::backend::Dialect;
use crate::consistency::Position;

enum Conn {
    Pg(PoolConnection<Postgres>),
    My(PoolConnection<MySql>),
}

/// An open transaction on a connection this crate holds.
pub(crate) struct OwnTxn {
    backend: DbBackend,
    /// `None` once committed or rolled back.
    conn: Mutex<Option<Conn>>,
    /// Statements to run before the next one: rollbacks of savepoints whose unit was dropped.
    pending: std::sync::Mutex<Vec<String>>,
    savepoints: AtomicU32,
}

impl std::fmt::Debug for OwnTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnTxn")
            .field("backend", &self.backend)
            .finish()
    }
}

fn acquire_err(err: sqlx::Error) -> DbErr {
    match err {
        sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        other => DbErr::Conn(RuntimeErr::SqlxError(Arc::new(other))),
    }
}

fn exec_err(err: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(err)))
}

fn query_err(err: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(err)))
}

fn values(stmt: &Statement) -> SqlxValues {
    SqlxValues(stmt.values.clone().unwrap_or(Values(Vec::new())))
}

macro_rules! on_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            Conn::Pg($c) => $body,
            Conn::My($c) => $body,
        }
    };
}

/// Runs `sql` (one or more statements, no parameters), discarding any rows.
async fn run_raw(conn: &mut Conn, sql: String) -> Result<(), DbErr> {
    let q = sqlx::AssertSqlSafe(sql);
    on_conn!(conn, |c| sqlx::raw_sql(q)
        .execute(&mut **c)
        .await
        .map(|_| ()))
    .map_err(exec_err)
}

impl OwnTxn {
    /// True for the backends this path serves (those with replication positions).
    pub(crate) fn supports(backend: DbBackend) -> bool {
        matches!(backend, DbBackend::Postgres | DbBackend::MySql)
    }

    /// Takes a connection from `pool` and begins; `then`: session settings for this
    /// transaction, sent in the same message as `BEGIN`.
    pub(crate) async fn begin(
        pool: &DatabaseConnection,
        isolation: Option<IsolationLevel>,
        then: Option<&str>,
    ) -> Result<Self, DbErr> {
        let backend = pool.get_database_backend();
        let mut begin = match (backend, isolation) {
            (DbBackend::MySql, Some(level)) => {
                format!("SET TRANSACTION ISOLATION LEVEL {level}; START TRANSACTION")
            }
            (_, Some(level)) => format!("BEGIN ISOLATION LEVEL {level}"),
            (_, None) => "BEGIN".to_owned(),
        };
        if let Some(sql) = then {
            begin = format!("{begin}; {sql}");
        }
        let mut conn = match backend {
            DbBackend::Postgres => Conn::Pg(
                pool.get_postgres_connection_pool()
                    .acquire()
                    .await
                    .map_err(acquire_err)?,
            ),
            DbBackend::MySql => Conn::My(
                pool.get_mysql_connection_pool()
                    .acquire()
                    .await
                    .map_err(acquire_err)?,
            ),
            other => {
                return Err(DbErr::BackendNotSupported {
                    db: other.as_str(),
                    ctx: "causal commit",
                })
            }
        };
        run_raw(&mut conn, begin).await?;
        Ok(OwnTxn {
            backend,
            conn: Mutex::new(Some(conn)),
            pending: std::sync::Mutex::new(Vec::new()),
            savepoints: AtomicU32::new(0),
        })
    }

    /// Runs `f` on the open connection, after any pending savepoint rollbacks.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, DbErr>
    where
        F: for<'c> FnOnce(
            &'c mut Conn,
        ) -> Pin<Box<dyn Future<Output = Result<T, DbErr>> + Send + 'c>>,
    {
        let mut guard = self.conn.lock().await;
        let conn = guard.as_mut().ok_or_else(|| {
            DbErr::Conn(RuntimeErr::Internal("transaction already finished".into()))
        })?;
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for sql in pending {
            run_raw(conn, sql).await?;
        }
        f(conn).await
    }

    /// Ends the transaction with `sql`; returns the rows of its last statement's first column.
    async fn finish(&self, sql: &'static str) -> Result<Vec<String>, DbErr> {
        let mut guard = self.conn.lock().await;
        let mut conn = guard.take().ok_or_else(|| {
            DbErr::Conn(RuntimeErr::Internal("transaction already finished".into()))
        })?;
        let texts = on_conn!(&mut conn, |c| {
            let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut **c)
                .await
                .map_err(exec_err)?;
            rows.iter()
                .map(|r| r.try_get::<String, _>(0).map_err(query_err))
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(texts)
    }

    /// Commits and reads the primary's position in the same round trip.
    pub(crate) async fn commit_with_position(&self) -> Result<Position, DbErr> {
        let dialect = Dialect(self.backend);
        let sql = dialect.commit_and_position_sql().unwrap_or("COMMIT");
        let texts = self.finish(sql).await?;
        match texts.last() {
            Some(text) => dialect.parse_position(text),
            None => Ok(Position::None),
        }
    }

    /// Commits.
    pub(crate) async fn commit(&self) -> Result<(), DbErr> {
        self.finish("COMMIT").await.map(|_| ())
    }

    /// Rolls back.
    pub(crate) async fn rollback(&self) -> Result<(), DbErr> {
        self.finish("ROLLBACK").await.map(|_| ())
    }

    /// Opens a savepoint; returns its name.
    pub(crate) async fn savepoint(&self) -> Result<String, DbErr> {
        let name = format!(
            "sor_sp_{}",
            self.savepoints.fetch_add(1, Ordering::Relaxed) + 1
        );
        let sql = format!("SAVEPOINT {name}");
        self.with_conn(move |conn| Box::pin(run_raw(conn, sql)))
            .await?;
        Ok(name)
    }

    /// Releases or rolls back to a savepoint.
    pub(crate) async fn end_savepoint(&self, name: &str, keep: bool) -> Result<(), DbErr> {
        let sql = if keep {
            format!("RELEASE SAVEPOINT {name}")
        } else {
            format!("ROLLBACK TO SAVEPOINT {name}")
        };
        self.with_conn(move |conn| Box::pin(run_raw(conn, sql)))
            .await
    }

    /// A savepoint whose unit was dropped: roll back to it before the next statement.
    pub(crate) fn abandon_savepoint(&self, name: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("ROLLBACK TO SAVEPOINT {name}"));
    }
}

impl Drop for OwnTxn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.get_mut().take() else {
            return;
        };
        // Not committed: roll back before the connection goes back to the pool. Without a
        // runtime to do that on, close the connection instead (the server rolls back).
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let mut conn = conn;
                    let _ = run_raw(&mut conn, "ROLLBACK".to_owned()).await;
                });
            }
            Err(_) => on_conn!(conn, |c| drop(c.detach())),
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for OwnTxn {
    fn get_database_backend(&self) -> DbBackend {
        self.backend
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.with_conn(move |conn| {
            Box::pin(async move {
                let v = values(&stmt);
                let q = sqlx::AssertSqlSafe(stmt.sql.as_str());
                Ok(on_conn!(conn, |c| sqlx::query_with(q, v)
                    .execute(&mut **c)
                    .await
                    .map_err(exec_err)?
                    .into()))
            })
        })
        .await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let sql = sql.to_owned();
        self.with_conn(move |conn| {
            Box::pin(async move {
                let q = sqlx::AssertSqlSafe(sql);
                Ok(on_conn!(conn, |c| sqlx::raw_sql(q)
                    .execute(&mut **c)
                    .await
                    .map_err(exec_err)?
                    .into()))
            })
        })
        .await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.with_conn(move |conn| {
            Box::pin(async move {
                let v = values(&stmt);
                let q = sqlx::AssertSqlSafe(stmt.sql.as_str());
                Ok(on_conn!(conn, |c| sqlx::query_with(q, v)
                    .fetch_optional(&mut **c)
                    .await
                    .map_err(query_err)?
                    .map(Into::into)))
            })
        })
        .await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.with_conn(move |conn| {
            Box::pin(async move {
                let v = values(&stmt);
                let q = sqlx::AssertSqlSafe(stmt.sql.as_str());
                Ok(on_conn!(conn, |c| sqlx::query_with(q, v)
                    .fetch_all(&mut **c)
                    .await
                    .map_err(query_err)?
                    .into_iter()
                    .map(Into::into)
                    .collect()))
            })
        })
        .await
    }
}

/// Rows of a causal unit's stream, fetched in full first (the connection is shared with the
/// unit's other statements).
pub(crate) type BufferedStream =
    futures_util::stream::Iter<std::vec::IntoIter<Result<QueryResult, DbErr>>>;

impl StreamTrait for OwnTxn {
    type Stream<'a> = BufferedStream;

    fn get_database_backend(&self) -> DbBackend {
        self.backend
    }

    fn stream_raw<'a>(
        &'a self,
        stmt: Statement,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Stream<'a>, DbErr>> + 'a + Send>> {
        Box::pin(async move {
            let rows = self.query_all_raw(stmt).await?;
            Ok(futures_util::stream::iter(
                rows.into_iter().map(Ok).collect::<Vec<_>>(),
            ))
        })
    }
}

// keep the trait import used in every configuration
#[allow(dead_code)]
fn _assert_stream<S: Stream>(_: S) {}
