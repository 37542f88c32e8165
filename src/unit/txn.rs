//! A transaction on a connection the unit holds itself: every PostgreSQL and MariaDB unit
//! that runs in a transaction (read-write units, and read-only units that ask for a snapshot or
//! fall back to the primary).
//!
//! Holding the sqlx connection, rather than going through SeaORM's `DatabaseTransaction`,
//! gives three things:
//!
//! - **One round trip for a causal commit**: `COMMIT` and the primary's position travel in one
//!   simple-query message (`COMMIT; SELECT pg_current_wal_insert_lsn()::text`).
//! - **Cancel safety**: a unit's future may be dropped at any `.await` — in `BEGIN`, in a
//!   statement, in `COMMIT` or `ROLLBACK` — or cut off by the node's statement bound. An
//!   operation that did not finish leaves the connection in a state nobody knows (a `BEGIN`
//!   the server may still run, a half-read answer), so the connection is closed, never
//!   pooled: the server rolls back whatever was open. A transaction that is merely dropped
//!   unfinished, with nothing in flight, is rolled back in the background and pooled only if
//!   that rollback answers in time. No acknowledged write is lost: a commit is acknowledged
//!   only once the server has answered it.
//! - **Session hygiene**: the message that ends a transaction first undoes what the unit may
//!   have changed in its session, right after `COMMIT`/`ROLLBACK` (PostgreSQL `RESET ALL`, role, advisory locks, cursors,
//!   listeners, temporary tables; MariaDB named locks), in the same round trip. What cannot be
//!   undone that way (a statement the classifier says may leave session state behind, such as
//!   `PREPARE` or a MariaDB `SET`) marks the connection to be closed instead of pooled.
//!
//! Statements are bound exactly as SeaORM binds them, and rows come back as SeaORM's own
//! `QueryResult`. In a read-only transaction even `execute_unprepared` goes through the
//! extended (prepared) protocol, which refuses more than one statement per call.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use futures_util::Stream;
use sea_orm::sqlx::{self, Column, Row};
use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, ExecResult, IsolationLevel, QueryResult, RuntimeErr,
    Statement, StreamTrait,
};
use tokio::sync::Mutex;

use crate::backend::{Dialect, POSITION_COLUMN};
use crate::consistency::Position;
use crate::node::held::{self, exec_err, on_conn, query_err, run_raw, Conn, Taken};
use crate::node::Sessions;
use crate::unit::statement_kind::may_leave_session_state;

/// An open transaction on a connection this crate holds.
pub(crate) struct OwnTxn {
    backend: DbBackend,
    read_only: bool,
    /// `None` once committed or rolled back.
    conn: Mutex<Option<Taken>>,
    /// Statements to run before the next one: rollbacks of savepoints whose unit was dropped.
    pending: std::sync::Mutex<Vec<String>>,
    savepoints: AtomicU32,
    /// An operation did not finish (its future was dropped or timed out): the connection's
    /// state is unknown, so it is closed instead of pooled, and the transaction refuses
    /// everything but a rollback.
    broken: AtomicBool,
    /// A statement may have left session state that the closing message cannot undo.
    dirty: AtomicBool,
    /// The server rolled the whole transaction back (MariaDB deadlock, SQLSTATE 40001): a
    /// later `COMMIT` would commit only what ran after it, so it is refused. (PostgreSQL
    /// needs no flag: see [`Dialect::end_transaction_sql`].)
    rolled_back: AtomicBool,
}

/// Marks its transaction broken unless disarmed: dropped mid-operation, it records that the
/// operation did not finish.
struct InFlight<'a>(&'a AtomicBool);

impl InFlight<'_> {
    fn done(self) {
        std::mem::forget(self);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The SQLSTATE of a database error, if `err` is one.
fn sqlstate(err: &DbErr) -> Option<String> {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match &**e {
                sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
                _ => None,
            }
        }
        _ => None,
    }
}

/// How long the background rollback of a dropped transaction may take before its
/// connection is closed instead.
const BACKGROUND_ROLLBACK_BOUND: Duration = Duration::from_secs(5);

/// A misuse of a finished or abandoned transaction: the statement's fault, not the node's (a
/// connection-level error would take the node out of routing).
fn internal(msg: &str) -> DbErr {
    DbErr::Custom(msg.to_owned())
}

impl OwnTxn {
    /// True for the backends this path serves.
    pub(crate) fn supports(backend: DbBackend) -> bool {
        matches!(backend, DbBackend::Postgres | DbBackend::MySql)
    }

    /// Takes a connection from `sessions` and begins (read-only when `read_only`); `then`:
    /// session settings for this transaction, sent in the same message as `BEGIN`.
    pub(crate) async fn begin(
        sessions: Sessions<'_>,
        read_only: bool,
        isolation: Option<IsolationLevel>,
        then: Option<&str>,
        two_phase: Option<&str>,
    ) -> Result<Self, DbErr> {
        let backend = sessions.backend();
        let Some(held) = sessions.held() else {
            return Err(DbErr::BackendNotSupported {
                db: backend.as_str(),
                ctx: "held transaction",
            });
        };
        let dialect = Dialect(backend);
        let mut begin = two_phase
            .and_then(|gid| dialect.begin_two_phase_sql(gid, isolation))
            .unwrap_or_else(|| dialect.begin_sql(read_only, isolation));
        if let Some(sql) = then {
            begin = format!("{begin}; {sql}");
        }
        let conn = held.take().await?;
        let txn = OwnTxn {
            backend,
            read_only,
            conn: Mutex::new(Some(conn)),
            pending: std::sync::Mutex::new(Vec::new()),
            savepoints: AtomicU32::new(0),
            broken: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            rolled_back: AtomicBool::new(false),
        };
        // dropped before BEGIN answers: `txn` drops broken and closes the connection
        txn.with_conn(move |conn| Box::pin(run_raw(conn, begin)))
            .await?;
        Ok(txn)
    }

    /// A read-only transaction on `sessions` for one read; `isolate`: see
    /// [`isolate_session`](Self::isolate_session).
    pub(crate) async fn read_only(sessions: Sessions<'_>, isolate: bool) -> Result<Self, DbErr> {
        let txn = OwnTxn::begin(sessions, true, None, None, None).await?;
        if isolate {
            txn.isolate_session();
        }
        Ok(txn)
    }

    /// Ends the transaction after `result`: commits when it is `Ok`, rolls back otherwise (the
    /// statement's error is the one returned).
    pub(crate) async fn end_after<T>(&self, result: Result<T, DbErr>) -> Result<T, DbErr> {
        match result {
            Ok(value) => self.commit().await.map(|()| value),
            Err(err) => {
                let _ = self.rollback().await;
                Err(err)
            }
        }
    }

    /// For a read that calls a routine the text cannot see into: on MariaDB, where the reset
    /// cannot undo what a routine may set (user variables, `LAST_INSERT_ID(expr)`), the
    /// connection is closed at the end instead of pooled; PostgreSQL's reset covers it.
    pub(crate) fn isolate_session(&self) {
        if self.backend == DbBackend::MySql {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Notes that `sql` may leave session state the closing message cannot undo.
    pub(crate) fn note_session_state(&self, sql: &str) {
        if may_leave_session_state(sql, self.backend) {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Runs `f` on the open connection, after any pending savepoint rollbacks. An
    /// operation that does not finish breaks the transaction.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, DbErr>
    where
        F: for<'c> FnOnce(
            &'c mut Conn,
        ) -> Pin<Box<dyn Future<Output = Result<T, DbErr>> + Send + 'c>>,
    {
        let mut guard = self.conn.lock().await;
        if self.broken.load(Ordering::Relaxed) {
            return Err(internal(
                "transaction abandoned: an earlier statement did not finish (cancelled or timed out); roll back",
            ));
        }
        let conn = guard
            .as_mut()
            .ok_or_else(|| internal("transaction already finished"))?
            .conn()?;
        let in_flight = InFlight(&self.broken);
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for sql in pending {
            if let Err(err) = run_raw(conn, sql).await {
                in_flight.done();
                return Err(err);
            }
        }
        let result = f(conn).await;
        in_flight.done();
        if let Err(err) = &result {
            if self.backend == DbBackend::MySql && sqlstate(err).as_deref() == Some("40001") {
                self.rolled_back.store(true, Ordering::Relaxed);
            }
        }
        result
    }

    /// Ends the transaction with `end` (`COMMIT` or `ROLLBACK`), after `before` (the unit's
    /// identity row, in the same message) and followed by the session reset and `position` (a
    /// query whose column is [`POSITION_COLUMN`]); returns the position rows. The connection goes back to the pool only when the message was answered without
    /// error and the session holds nothing the reset cannot undo; otherwise it is closed.
    async fn finish(
        &self,
        end: &str,
        before: Option<&str>,
        position: Option<&str>,
    ) -> Result<Vec<String>, DbErr> {
        let mut guard = self.conn.lock().await;
        // dropped before the answer (cancelled, or cut off by the statement bound): closed
        let mut taken = guard
            .take()
            .ok_or_else(|| internal("transaction already finished"))?;
        let dialect = Dialect(self.backend);
        if self.broken.load(Ordering::Relaxed) {
            // the server rolls back what the closed connection had open
            return if end == "ROLLBACK" {
                Ok(Vec::new())
            } else {
                Err(internal(
                    "transaction abandoned: an earlier statement did not finish (cancelled or timed out); it was rolled back",
                ))
            };
        }
        if end == "COMMIT" && self.rolled_back.load(Ordering::Relaxed) {
            return Err(internal(
                "transaction rolled back by the server (deadlock): nothing was committed; run the unit again",
            ));
        }
        let mut sql = dialect.end_transaction_sql(end, !self.read_only, position);
        if let Some(before) = before {
            sql = format!("{before}; {sql}");
        }
        let texts = on_conn!(taken.conn()?, |c| {
            match sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut **c)
                .await
            {
                Ok(rows) => rows
                    .iter()
                    .filter(|r| r.columns().first().map(|c| c.name()) == Some(POSITION_COLUMN))
                    .map(|r| r.try_get::<String, _>(0).map_err(query_err))
                    .collect::<Result<Vec<_>, _>>(),
                Err(err) => Err(exec_err(err)),
            }
        })?;
        if !self.dirty.load(Ordering::Relaxed) {
            // answered, and nothing left behind that the reset cannot undo: held for the next
            taken.done();
        }
        Ok(texts)
    }

    /// Commits (after `before`, in the same message) and reads the primary's position in the
    /// same round trip.
    pub(crate) async fn commit_with_position(
        &self,
        before: Option<&str>,
    ) -> Result<Position, DbErr> {
        let dialect = Dialect(self.backend);
        let texts = self
            .finish("COMMIT", before, dialect.position_sql())
            .await?;
        match texts.last() {
            Some(text) => dialect.parse_position(text),
            None => Ok(Position::None),
        }
    }

    /// Commits.
    pub(crate) async fn commit(&self) -> Result<(), DbErr> {
        self.commit_after(None).await
    }

    /// Commits, after `before` (a statement sent in the same message).
    pub(crate) async fn commit_after(&self, before: Option<&str>) -> Result<(), DbErr> {
        self.finish("COMMIT", before, None).await.map(|_| ())
    }

    /// Rolls back.
    pub(crate) async fn rollback(&self) -> Result<(), DbErr> {
        self.finish("ROLLBACK", None, None).await.map(|_| ())
    }

    /// Two-phase commit, phase one: prepares the transaction as `gid`. Once this answers, the
    /// transaction survives this session (and the server's restart) until phase two.
    pub(crate) async fn prepare(&self, gid: &str) -> Result<(), DbErr> {
        if self.rolled_back.load(Ordering::Relaxed) {
            return Err(internal(
                "transaction rolled back by the server (deadlock): nothing to prepare; run the unit again",
            ));
        }
        let sql = Dialect(self.backend).prepare_sql(gid);
        self.with_conn(move |conn| Box::pin(run_raw(conn, sql)))
            .await
    }

    /// Two-phase commit, phase two: commits (or rolls back) the prepared `gid` on this
    /// session, with the session reset, and ends the unit's hold on the connection.
    pub(crate) async fn finish_prepared(&self, gid: &str, commit: bool) -> Result<(), DbErr> {
        // alone: PostgreSQL refuses `COMMIT PREPARED` inside the implicit transaction block a
        // multi-statement message makes; then the session reset ends the unit's hold
        let end = Dialect(self.backend).finish_prepared_sql(gid, commit);
        self.with_conn(move |conn| Box::pin(run_raw(conn, end)))
            .await?;
        self.finish("SELECT 1 AS sor_done", None, None)
            .await
            .map(|_| ())
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
        let Some(mut taken) = self.conn.get_mut().take() else {
            return;
        };
        let clean = !*self.broken.get_mut() && !*self.dirty.get_mut();
        // Not finished. With nothing in flight, roll back (and reset the session) in the
        // background and pool the connection only if that answers in time; otherwise, or
        // without a runtime, close it: the server rolls back.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if clean => {
                let sql = Dialect(self.backend).end_transaction_sql("ROLLBACK", false, None);
                rt.spawn(async move {
                    let rolled_back = match taken.conn() {
                        Ok(conn) => {
                            tokio::time::timeout(BACKGROUND_ROLLBACK_BOUND, run_raw(conn, sql))
                                .await
                        }
                        Err(_) => return,
                    };
                    // answered in time: held for the next; otherwise closed on drop
                    if matches!(rolled_back, Ok(Ok(()))) {
                        taken.done();
                    }
                });
            }
            _ => drop(taken),
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for OwnTxn {
    fn get_database_backend(&self) -> DbBackend {
        self.backend
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.note_session_state(&stmt.sql);
        self.with_conn(move |conn| Box::pin(async move { held::execute(conn, &stmt).await }))
            .await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        if self.read_only {
            // one statement per call: the extended protocol refuses more
            return self
                .execute_raw(Statement::from_string(self.backend, sql))
                .await;
        }
        self.note_session_state(sql);
        let sql = sql.to_owned();
        self.with_conn(move |conn| {
            Box::pin(async move { held::execute_unprepared(conn, &sql).await })
        })
        .await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.note_session_state(&stmt.sql);
        self.with_conn(move |conn| Box::pin(async move { held::query_one(conn, &stmt).await }))
            .await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.note_session_state(&stmt.sql);
        self.with_conn(move |conn| Box::pin(async move { held::query_all(conn, &stmt).await }))
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
