//! Cancellation under load: unit futures dropped at random points — while a connection is
//! being acquired, in `BEGIN`, in a statement, in `COMMIT`, in `ROLLBACK` — on small pools,
//! and cut off by the node's own statement bound or by a primary frozen with `SIGSTOP`.
//!
//! What must hold afterwards (issue 8, "Cancel safety"):
//!
//! * every write whose `commit` returned `Ok` (acknowledged) is there exactly once, and no
//!   write whose unit was dropped before its `COMMIT` was sent (or that was rolled back) is;
//! * no backend of the handle is left inside a transaction ("idle in transaction" on
//!   PostgreSQL, an InnoDB transaction on an idle MariaDB session, a held write lock on
//!   SQLite);
//! * the same small-pool handle then acknowledges 200 sequential writes, all visible to an
//!   independent connection (the classic failure: a connection pooled inside an open
//!   transaction turns the next acknowledged writes into an invisible transaction that the
//!   next rollback throws away);
//! * read-only units (snapshot units run in a transaction) dropped at random points leave no
//!   frozen snapshot behind: a write made afterwards is seen by every later read-only unit.
//!
//! PostgreSQL and MariaDB run on the shared cluster (`source /tmp/sea-orm-replica-cluster/env`),
//! SQLite on a temporary file. The `SIGSTOP` test starts a private PostgreSQL cluster and runs
//! only with `SOR_FAULT_TESTS=1` (like `tests/faults.rs`). `SOR_CANCEL_SEED` replays a run.
//!
//! Every test prints its figures (where the drops landed, acknowledged writes against rows
//! found, open transactions seen) with `--nocapture`.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fault_cluster::FaultCluster;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement, Value};
use sea_orm_replica::{
    NodeConfig, ReadOnly, ReplicaError, ReplicatedDatabase, UnitOfWork, UnitOptions,
};

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// Tasks running units at once, against pools of two connections.
const TASKS: usize = 8;
/// Units per task in a cancellation run.
const WRITE_UNITS_PER_TASK: usize = 120;
const READ_UNITS_PER_TASK: usize = 80;
/// Sequential acknowledged writes after the cancellations.
const SEQUENTIAL_WRITES: usize = 200;
/// How long open transactions may take to disappear (a dropped unit's background rollback
/// is bounded by 5 s in the library).
const SETTLE: Duration = Duration::from_secs(15);

/// One load test at a time: their figures (where drops land) mean something only when
/// they do not share the two cores with another load, and the server-wide views they read
/// are filtered by their own application name / user anyway.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn seed() -> u64 {
    std::env::var("SOR_CANCEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

fn fault_tests_enabled() -> bool {
    common::fault_tests_enabled("SIGSTOP cancellation test")
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

// ---------------------------------------------------------------------------------------------
// Where a unit is dropped
// ---------------------------------------------------------------------------------------------

/// The phases of a unit, in order. The first statement of a lazy unit routes, acquires a
/// pooled connection and sends `BEGIN` before the statement itself.
const FIRST: u8 = 0;
const SECOND: u8 = 1;
const COMMIT: u8 = 2;
const ROLLBACK: u8 = 3;
/// A timer over the whole unit: it lands wherever the unit is.
const WHOLE: u8 = 9;

const WRITE_PHASES: [&str; 4] = [
    "acquire/BEGIN/first statement",
    "INSERT",
    "COMMIT",
    "ROLLBACK",
];
const READ_PHASES: [&str; 4] = [
    "acquire/BEGIN/first statement",
    "second statement",
    "COMMIT",
    "ROLLBACK",
];

#[derive(Clone, Copy, Debug)]
enum How {
    /// `tokio::time::timeout` (polls the unit once even with a zero duration).
    Timeout,
    /// `tokio::select!` against a timer (random branch order: may drop before the first poll).
    Select,
}

#[derive(Clone, Copy, Debug)]
struct Plan {
    /// `None`: no timer; `Some(WHOLE)`: over the whole unit; `Some(phase)`: over that step.
    cut: Option<u8>,
    how: How,
    after: Duration,
    /// End with `ROLLBACK` instead of `COMMIT`.
    rollback: bool,
    /// For read-only units: a snapshot unit (one `READ ONLY` transaction).
    snapshot: bool,
}

impl Plan {
    fn random(rng: &mut fastrand::Rng) -> Plan {
        let rollback = rng.u8(0..10) < 3;
        let cut = match rng.u8(0..20) {
            0..=2 => None,
            3..=9 => Some(WHOLE),
            _ => Some(match rng.u8(0..4) {
                0 => FIRST,
                1 => SECOND,
                _ if rollback => ROLLBACK,
                _ => COMMIT,
            }),
        };
        // a timer over the whole unit spans its phases; one over a step must be about one
        // round trip long (a local round trip is 0.1–0.5 ms) to land inside it
        let max_us = if cut == Some(WHOLE) { 5_000 } else { 600 };
        let after = match rng.u8(0..4) {
            0 => Duration::ZERO,
            _ => Duration::from_micros(rng.u64(0..=max_us)),
        };
        Plan {
            cut,
            how: if rng.bool() {
                How::Timeout
            } else {
                How::Select
            },
            after,
            rollback,
            snapshot: rng.u8(0..3) != 0,
        }
    }

    fn at(&self, phase: u8) -> bool {
        self.cut == Some(phase)
    }
}

/// Runs `fut`, dropping it when `on` and the plan's timer fires first; `None` when dropped.
async fn timed<F: Future>(on: bool, plan: &Plan, fut: F) -> Option<F::Output> {
    if !on {
        return Some(fut.await);
    }
    match plan.how {
        How::Timeout => tokio::time::timeout(plan.after, fut).await.ok(),
        How::Select => tokio::select! {
            out = fut => Some(out),
            _ = tokio::time::sleep(plan.after) => None,
        },
    }
}

/// How one unit ended.
#[derive(Debug)]
enum Outcome {
    /// `commit` returned `Ok`.
    Acked,
    /// `rollback` returned `Ok` (or a read-only unit finished).
    Ended,
    /// Dropped in this phase.
    Dropped(u8),
    /// Failed in this phase.
    Failed(u8, String),
}

// ---------------------------------------------------------------------------------------------
// Units
// ---------------------------------------------------------------------------------------------

fn insert_sql(backend: DbBackend, table: &str) -> String {
    match backend {
        DbBackend::Postgres => format!("INSERT INTO {table} (v) VALUES ($1)"),
        _ => format!("INSERT INTO {table} (v) VALUES (?)"),
    }
}

/// A read-write unit: `SELECT 1` (acquire, `BEGIN`), `INSERT value`, `COMMIT` or `ROLLBACK`,
/// dropped where the plan says.
async fn write_unit(db: &ReplicatedDatabase, insert: &str, value: &str, plan: Plan) -> Outcome {
    let phase = AtomicU8::new(FIRST);
    let body = async {
        let unit = db.begin_read_write();
        let b = unit.get_database_backend();
        phase.store(FIRST, Ordering::Relaxed);
        let first = unit.query_one_raw(Statement::from_string(b, "SELECT 1"));
        match timed(plan.at(FIRST), &plan, first).await {
            None => return Outcome::Dropped(FIRST),
            Some(Err(e)) => return Outcome::Failed(FIRST, e.to_string()),
            Some(Ok(_)) => {}
        }
        phase.store(SECOND, Ordering::Relaxed);
        let stmt = Statement::from_sql_and_values(b, insert, [Value::from(value)]);
        match timed(plan.at(SECOND), &plan, unit.execute_raw(stmt)).await {
            None => return Outcome::Dropped(SECOND),
            Some(Err(e)) => return Outcome::Failed(SECOND, e.to_string()),
            Some(Ok(_)) => {}
        }
        if plan.rollback {
            phase.store(ROLLBACK, Ordering::Relaxed);
            match timed(plan.at(ROLLBACK), &plan, unit.rollback()).await {
                None => Outcome::Dropped(ROLLBACK),
                Some(Err(e)) => Outcome::Failed(ROLLBACK, e.to_string()),
                Some(Ok(())) => Outcome::Ended,
            }
        } else {
            phase.store(COMMIT, Ordering::Relaxed);
            match timed(plan.at(COMMIT), &plan, unit.commit()).await {
                None => Outcome::Dropped(COMMIT),
                Some(Err(e)) => Outcome::Failed(COMMIT, e.to_string()),
                Some(Ok(())) => Outcome::Acked,
            }
        }
    };
    if plan.at(WHOLE) {
        match timed(true, &plan, body).await {
            Some(outcome) => outcome,
            None => Outcome::Dropped(phase.load(Ordering::Relaxed)),
        }
    } else {
        body.await
    }
}

/// A read-only unit (snapshot or statement-level): two counts, then `COMMIT` or `ROLLBACK`,
/// dropped where the plan says.
async fn read_unit(db: &ReplicatedDatabase, count: &str, plan: Plan) -> Outcome {
    let phase = AtomicU8::new(FIRST);
    let body = async {
        let options = if plan.snapshot {
            UnitOptions::new().snapshot()
        } else {
            UnitOptions::new()
        };
        let unit: UnitOfWork<ReadOnly> = db.begin_unit(options);
        let b = unit.get_database_backend();
        for p in [FIRST, SECOND] {
            phase.store(p, Ordering::Relaxed);
            let q = unit.query_one_raw(Statement::from_string(b, count));
            match timed(plan.at(p), &plan, q).await {
                None => return Outcome::Dropped(p),
                Some(Err(e)) => return Outcome::Failed(p, e.to_string()),
                Some(Ok(_)) => {}
            }
        }
        let p = if plan.rollback { ROLLBACK } else { COMMIT };
        phase.store(p, Ordering::Relaxed);
        let end = async {
            if plan.rollback {
                unit.rollback().await
            } else {
                unit.commit().await
            }
        };
        match timed(plan.at(p), &plan, end).await {
            None => Outcome::Dropped(p),
            Some(Err(e)) => Outcome::Failed(p, e.to_string()),
            Some(Ok(())) => Outcome::Ended,
        }
    };
    if plan.at(WHOLE) {
        match timed(true, &plan, body).await {
            Some(outcome) => outcome,
            None => Outcome::Dropped(phase.load(Ordering::Relaxed)),
        }
    } else {
        body.await
    }
}

// ---------------------------------------------------------------------------------------------
// Bookkeeping
// ---------------------------------------------------------------------------------------------

/// What a cancellation run did.
#[derive(Default)]
struct Tally {
    /// `commit` returned `Ok`: must be there exactly once.
    acked: Mutex<Vec<String>>,
    /// Dropped or failed before `COMMIT` was sent, or rolled back: must not be there.
    absent: Mutex<Vec<String>>,
    /// Dropped or failed during `COMMIT`: either.
    unknown: Mutex<Vec<String>>,
    /// Units that ran to their end (read-only units).
    ended: AtomicUsize,
    dropped: [AtomicUsize; 4],
    failed: [AtomicUsize; 4],
    /// Units that were not dropped: how many failed anyway, and with what.
    errors: Mutex<Vec<String>>,
    units: AtomicUsize,
}

impl Tally {
    fn record(&self, value: Option<String>, outcome: Outcome) {
        self.units.fetch_add(1, Ordering::Relaxed);
        let push = |list: &Mutex<Vec<String>>| {
            if let Some(v) = &value {
                list.lock().unwrap().push(v.clone());
            }
        };
        match outcome {
            Outcome::Acked => push(&self.acked),
            Outcome::Ended => {
                self.ended.fetch_add(1, Ordering::Relaxed);
                push(&self.absent)
            }
            Outcome::Dropped(p) => {
                self.dropped[usize::from(p)].fetch_add(1, Ordering::Relaxed);
                if p == COMMIT {
                    push(&self.unknown)
                } else {
                    push(&self.absent)
                }
            }
            Outcome::Failed(p, e) => {
                self.failed[usize::from(p)].fetch_add(1, Ordering::Relaxed);
                self.errors.lock().unwrap().push(e);
                if p == COMMIT {
                    push(&self.unknown)
                } else {
                    push(&self.absent)
                }
            }
        }
    }

    fn summary(&self, phases: &[&str; 4]) -> String {
        let per = |a: &[AtomicUsize; 4]| {
            phases
                .iter()
                .zip(a)
                .map(|(name, n)| format!("{name} {}", n.load(Ordering::Relaxed)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{} units; dropped in: {}; failed in: {}; acknowledged {}, must be absent {}, unknown (dropped/failed in COMMIT) {}",
            self.units.load(Ordering::Relaxed),
            per(&self.dropped),
            per(&self.failed),
            self.acked.lock().unwrap().len(),
            self.absent.lock().unwrap().len(),
            self.unknown.lock().unwrap().len(),
        )
    }

    /// Error messages, grouped, with counts.
    fn error_kinds(&self) -> Vec<(String, usize)> {
        let mut kinds: HashMap<String, usize> = HashMap::new();
        for e in self.errors.lock().unwrap().iter() {
            let key: String = e.chars().take(160).collect();
            *kinds.entry(key).or_default() += 1;
        }
        let mut kinds: Vec<_> = kinds.into_iter().collect();
        kinds.sort_by_key(|b| std::cmp::Reverse(b.1));
        kinds
    }
}

/// `tasks` tasks, each running `units` write units with random drops.
async fn write_load(
    db: &ReplicatedDatabase,
    table: &str,
    prefix: &str,
    units: usize,
    seed: u64,
    stop: Option<Arc<AtomicBool>>,
) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let insert = insert_sql(db.backend(), table);
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (db, tally, insert, stop) =
                (db.clone(), tally.clone(), insert.clone(), stop.clone());
            let prefix = format!("{prefix}-{t}");
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(t as u64));
                for i in 0..units {
                    if stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                        break;
                    }
                    let value = format!("{prefix}-{i}");
                    let plan = Plan::random(&mut rng);
                    let outcome = write_unit(&db, &insert, &value, plan).await;
                    let failed = matches!(outcome, Outcome::Failed(..));
                    tally.record(Some(value), outcome);
                    if failed {
                        // pacing, not synchronisation: a node taken out fails units at once,
                        // and eight tasks spinning on that would starve two cores
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("load task");
    }
    tally
}

/// `tasks` tasks, each running `units` read-only units with random drops.
async fn read_load(db: &ReplicatedDatabase, table: &str, units: usize, seed: u64) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let count = format!("SELECT COUNT(*) AS n FROM {table}");
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (db, tally, count) = (db.clone(), tally.clone(), count.clone());
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(1000 + t as u64));
                for _ in 0..units {
                    let plan = Plan::random(&mut rng);
                    let outcome = read_unit(&db, &count, plan).await;
                    tally.record(None, outcome);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("load task");
    }
    tally
}

// ---------------------------------------------------------------------------------------------
// The server's view
// ---------------------------------------------------------------------------------------------

async fn admin(url: &str) -> DatabaseConnection {
    Database::connect(url)
        .await
        .unwrap_or_else(|e| panic!("admin connection: {e}"))
}

async fn query_i64<C: ConnectionTrait>(c: &C, sql: &str) -> Result<i64, DbErr> {
    let row = c
        .query_one_raw(Statement::from_string(c.get_database_backend(), sql))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(sql.to_owned()))?;
    row.try_get_by_index::<i64>(0)
}

async fn exec<C: ConnectionTrait>(c: &C, sql: &str) {
    c.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn create_table_sql(backend: DbBackend, table: &str) -> String {
    match backend {
        DbBackend::Postgres => {
            format!("CREATE TABLE {table} (id bigserial PRIMARY KEY, v text NOT NULL)")
        }
        DbBackend::MySql => format!(
            "CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(80) NOT NULL) ENGINE=InnoDB"
        ),
        _ => format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT NOT NULL)"),
    }
}

/// Polls `cond` until it holds or `deadline` passes; false on timeout.
async fn poll<F, Fut>(deadline: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `table` exists on a replica (it was created on the primary).
async fn replicated(replica: &DatabaseConnection, table: &str) {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    let ok = poll(Duration::from_secs(30), || async {
        replica
            .query_one_raw(Statement::from_string(replica.get_database_backend(), &sql))
            .await
            .is_ok()
    })
    .await;
    assert!(ok, "{table} did not reach the replica within 30 s");
}

/// How rows of `table` are spread over values.
async fn counts(admin: &DatabaseConnection, table: &str) -> HashMap<String, i64> {
    let rows = admin
        .query_all_raw(Statement::from_string(
            admin.get_database_backend(),
            format!("SELECT v, COUNT(*) AS n FROM {table} GROUP BY v"),
        ))
        .await
        .expect("count rows");
    rows.iter()
        .map(|r| {
            (
                r.try_get::<String>("", "v").expect("v"),
                r.try_get::<i64>("", "n").expect("n"),
            )
        })
        .collect()
}

/// Checks the rows against the tally; returns the report line and the failures.
fn check_rows(tally: &Tally, found: &HashMap<String, i64>) -> (String, Vec<String>) {
    let acked = tally.acked.lock().unwrap();
    let absent = tally.absent.lock().unwrap();
    let unknown = tally.unknown.lock().unwrap();
    let lost: Vec<_> = acked.iter().filter(|v| !found.contains_key(*v)).collect();
    let twice: Vec<_> = found.iter().filter(|(_, n)| **n > 1).collect();
    let ghosts: Vec<_> = absent.iter().filter(|v| found.contains_key(*v)).collect();
    let unknown_found = unknown.iter().filter(|v| found.contains_key(*v)).count();
    let known: std::collections::HashSet<&String> = acked
        .iter()
        .chain(absent.iter())
        .chain(unknown.iter())
        .collect();
    let strays: Vec<_> = found.keys().filter(|v| !known.contains(v)).collect();
    let line = format!(
        "acknowledged {} → found {} (lost {}); found twice {}; must-be-absent {} → found {}; unknown {} → found {}; rows nobody wrote {}",
        acked.len(),
        acked.len() - lost.len(),
        lost.len(),
        twice.len(),
        absent.len(),
        ghosts.len(),
        unknown.len(),
        unknown_found,
        strays.len()
    );
    let mut failures = Vec::new();
    if !lost.is_empty() {
        failures.push(format!(
            "{} acknowledged writes lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    if !twice.is_empty() {
        failures.push(format!(
            "writes found more than once: {:?}",
            &twice[..twice.len().min(5)]
        ));
    }
    if !ghosts.is_empty() {
        failures.push(format!(
            "{} writes of units dropped before COMMIT (or rolled back) are there, e.g. {:?}",
            ghosts.len(),
            &ghosts[..ghosts.len().min(5)]
        ));
    }
    if !strays.is_empty() {
        failures.push(format!(
            "rows nobody wrote: {:?}",
            &strays[..strays.len().min(5)]
        ));
    }
    (line, failures)
}

/// Where to look for transactions left open by the handle's sessions.
enum Watch {
    /// PostgreSQL sessions with this `application_name`.
    Pg {
        admin: DatabaseConnection,
        app: String,
    },
    /// MariaDB sessions of this user.
    My {
        admin: DatabaseConnection,
        user: String,
    },
    /// An SQLite file: a write lock held by a pooled connection.
    Sqlite { path: std::path::PathBuf },
}

impl Watch {
    /// Sessions of the handle idle inside a transaction now.
    async fn open_transactions(&self) -> Result<i64, DbErr> {
        match self {
            Watch::Pg { admin, app } => {
                query_i64(
                    admin,
                    &format!(
                    "SELECT count(*)::int8 FROM pg_stat_activity WHERE application_name = '{app}' \
                         AND state LIKE 'idle in transaction%'"
                ),
                )
                .await
            }
            Watch::My { admin, user } => {
                query_i64(
                    admin,
                    &format!(
                        "SELECT COUNT(*) FROM information_schema.INNODB_TRX t \
                         JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
                         WHERE p.USER = '{user}' AND p.COMMAND = 'Sleep'"
                    ),
                )
                .await
            }
            Watch::Sqlite { path } => sqlite_write_lock_held(path).await,
        }
    }

    /// What the handle's sessions are doing (for the report).
    async fn sessions(&self) -> String {
        let sql = match self {
            Watch::Pg { app, .. } => format!(
                "SELECT coalesce(string_agg(state || ' ' || n, ', '), 'none') AS s FROM \
                 (SELECT coalesce(state, '?') AS state, count(*) AS n FROM pg_stat_activity \
                  WHERE application_name = '{app}' GROUP BY state) x"
            ),
            Watch::My { user, .. } => format!(
                "SELECT COALESCE(GROUP_CONCAT(CONCAT(c, ' ', n) SEPARATOR ', '), 'none') AS s FROM \
                 (SELECT COMMAND AS c, COUNT(*) AS n FROM information_schema.PROCESSLIST \
                  WHERE USER = '{user}' GROUP BY COMMAND) x"
            ),
            Watch::Sqlite { .. } => return "n/a".into(),
        };
        let admin = match self {
            Watch::Pg { admin, .. } | Watch::My { admin, .. } => admin,
            Watch::Sqlite { .. } => unreachable!(),
        };
        match admin
            .query_one_raw(Statement::from_string(admin.get_database_backend(), sql))
            .await
        {
            Ok(Some(row)) => row
                .try_get::<String>("", "s")
                .unwrap_or_else(|e| e.to_string()),
            Ok(None) => "none".into(),
            Err(e) => format!("({e})"),
        }
    }

    /// Polls until no session of the handle is idle in a transaction; (first count, time it
    /// took, settled).
    async fn settle(&self) -> (i64, Duration, bool) {
        let started = Instant::now();
        let first = self.open_transactions().await.unwrap_or(-1);
        let settled = poll(SETTLE, || async {
            self.open_transactions().await.ok() == Some(0)
        })
        .await;
        (first, started.elapsed(), settled)
    }
}

/// 1 when another connection holds SQLite's write lock (a `BEGIN IMMEDIATE` cannot start
/// within 100 ms), else 0.
async fn sqlite_write_lock_held(path: &std::path::Path) -> Result<i64, DbErr> {
    use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
    use sea_orm::sqlx::Connection;
    let options = SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::from_millis(100));
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| DbErr::Custom(e.to_string()))?;
    let held = match sea_orm::sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
    {
        Ok(_) => {
            sea_orm::sqlx::raw_sql("ROLLBACK")
                .execute(&mut conn)
                .await
                .map_err(|e| DbErr::Custom(e.to_string()))?;
            0
        }
        Err(e) if e.to_string().contains("locked") || e.to_string().contains("busy") => 1,
        Err(e) => return Err(DbErr::Custom(e.to_string())),
    };
    let _ = conn.close().await;
    Ok(held)
}

/// `SEQUENTIAL_WRITES` plain read-write units, each acknowledged, then all must be visible to
/// an independent connection. Returns the failures.
async fn sequential_writes(
    db: &ReplicatedDatabase,
    admin: &DatabaseConnection,
    table: &str,
    prefix: &str,
) -> Vec<String> {
    let insert = insert_sql(db.backend(), table);
    let mut acked = Vec::new();
    let mut failures = Vec::new();
    for i in 0..SEQUENTIAL_WRITES {
        let value = format!("{prefix}-{i}");
        match write_unit(
            db,
            &insert,
            &value,
            Plan {
                cut: None,
                how: How::Timeout,
                after: Duration::ZERO,
                rollback: false,
                snapshot: false,
            },
        )
        .await
        {
            Outcome::Acked => acked.push(value),
            other => failures.push(format!("sequential write {i}: {other:?}")),
        }
    }
    let found = counts(admin, table).await;
    let visible = acked
        .iter()
        .filter(|v| found.get(*v).copied() == Some(1))
        .count();
    eprintln!(
        "  sequential writes after the cancellations: {} acknowledged of {SEQUENTIAL_WRITES}, {visible} visible exactly once to an independent connection",
        acked.len()
    );
    if visible != acked.len() {
        let missing: Vec<_> = acked
            .iter()
            .filter(|v| found.get(*v).copied() != Some(1))
            .take(5)
            .collect();
        failures.push(format!(
            "{} of {} acknowledged sequential writes not visible exactly once to an independent connection, e.g. {missing:?}",
            acked.len() - visible,
            acked.len()
        ));
    }
    failures.truncate(10);
    failures
}

/// The sessions of the handle settle with no open transaction; the failure if not.
async fn no_open_transactions(watch: &Watch, what: &str) -> Vec<String> {
    let (first, took, settled) = watch.settle().await;
    let now = watch.open_transactions().await.unwrap_or(-1);
    eprintln!(
        "  {what}: sessions idle in a transaction at the first look {first}, {} after {took:?}; sessions: {}",
        if settled { 0 } else { now },
        watch.sessions().await
    );
    if settled {
        Vec::new()
    } else {
        vec![format!(
            "{what}: {now} sessions still idle inside a transaction after {SETTLE:?} (first look: {first}); sessions: {}",
            watch.sessions().await
        )]
    }
}

fn fail_if_any(test: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{test}: {} failures:\n  - {}",
        failures.len(),
        failures.join("\n  - ")
    );
}

/// Errors of units that were not dropped: none is expected (no fault is injected). Returns
/// failures.
fn unexpected_errors(what: &str, tally: &Tally) -> Vec<String> {
    let kinds = tally.error_kinds();
    for (e, n) in &kinds {
        eprintln!("  {what}: {n}× {e}");
    }
    if kinds.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "{what}: {} units failed without being dropped (no fault injected): {:?}",
            tally.errors.lock().unwrap().len(),
            &kinds[..kinds.len().min(3)]
        )]
    }
}

// ---------------------------------------------------------------------------------------------
// Handles
// ---------------------------------------------------------------------------------------------

/// The URL with `application_name` set (PostgreSQL), so the server's views can tell this
/// handle's sessions apart.
fn pg_url(url: &str, app: &str) -> String {
    let mut u = url::Url::parse(url).expect("URL");
    u.query_pairs_mut().append_pair("application_name", app);
    u.to_string()
}

/// The URL with another user (MariaDB), so the server's views can tell this handle's sessions
/// apart.
fn my_url(url: &str, user: &str) -> String {
    let mut u = url::Url::parse(url).expect("URL");
    u.set_username(user).expect("user");
    u.to_string()
}

/// A MariaDB user for one test (as privileged as `root`: the monitor reads replication
/// status), present on the replica too.
async fn my_user(primary: &DatabaseConnection, replica: &DatabaseConnection, user: &str) {
    exec(
        primary,
        &format!("CREATE USER IF NOT EXISTS '{user}'@'127.0.0.1'"),
    )
    .await;
    exec(
        primary,
        &format!("GRANT ALL PRIVILEGES ON *.* TO '{user}'@'127.0.0.1'"),
    )
    .await;
    let sql = format!("SELECT COUNT(*) FROM mysql.user WHERE User = '{user}'");
    let there = poll(Duration::from_secs(30), || async {
        query_i64(replica, &sql).await.ok() == Some(1)
    })
    .await;
    assert!(there, "user {user} did not reach the replica");
}

fn small(url: &str, name: &str) -> NodeConfig {
    NodeConfig::new(url)
        .name(name)
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
}

/// A backend of the shared cluster, with the names this test's sessions carry.
struct Shared {
    backend: DbBackend,
    admin: DatabaseConnection,
    replica_admin: DatabaseConnection,
    /// The handle's URLs: tagged with an application name or user.
    tagged_primary: String,
    tagged_replica: String,
    tag: String,
}

impl Shared {
    async fn open(backend: DbBackend, tag: &str) -> Option<Shared> {
        let c = common::cluster(backend)?;
        let primary_admin = admin(&c.primary).await;
        let replica_admin = admin(&c.replicas[0]).await;
        let (tagged_primary, tagged_replica) = match backend {
            DbBackend::Postgres => (pg_url(&c.primary, tag), pg_url(&c.replicas[0], tag)),
            _ => {
                my_user(&primary_admin, &replica_admin, tag).await;
                (my_url(&c.primary, tag), my_url(&c.replicas[0], tag))
            }
        };
        Some(Shared {
            backend,
            admin: primary_admin,
            replica_admin,
            tagged_primary,
            tagged_replica,
            tag: tag.to_owned(),
        })
    }

    fn watch(&self, on_replica: bool) -> Watch {
        let admin = if on_replica {
            self.replica_admin.clone()
        } else {
            self.admin.clone()
        };
        match self.backend {
            DbBackend::Postgres => Watch::Pg {
                admin,
                app: self.tag.clone(),
            },
            _ => Watch::My {
                admin,
                user: self.tag.clone(),
            },
        }
    }

    async fn table(&self, kind: &str) -> String {
        let table = format!("sor_cancel_{kind}_{}", short_id());
        exec(&self.admin, &create_table_sql(self.backend, &table)).await;
        table
    }

    async fn drop_table(&self, table: &str) {
        let _ = self
            .admin
            .execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
            .await;
    }
}

/// Tags sessions per test: PostgreSQL application names and MariaDB user names.
fn tag(backend: DbBackend, what: &str) -> String {
    match backend {
        DbBackend::Postgres => format!("sor_cancel_{what}_{}", &short_id()[..6]),
        // MariaDB user names: at most 80 characters; one per test kind, reused across runs
        _ => format!("sor_cancel_{what}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Read-write units dropped at random points
// ---------------------------------------------------------------------------------------------

async fn writes_survive_cancellation(backend: DbBackend) {
    let Some(s) = Shared::open(backend, &tag(backend, "rw")).await else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let seed = seed();
    let table = s.table("rw").await;
    let db = ReplicatedDatabase::builder()
        .primary_node(small(&s.tagged_primary, "primary"))
        .connect()
        .await
        .expect("connect");
    let name = backend.as_str();
    eprintln!("[{name}] read-write cancellation: seed {seed} (SOR_CANCEL_SEED), {TASKS} tasks × {WRITE_UNITS_PER_TASK} units, pool of 2");
    let started = Instant::now();
    let tally = write_load(&db, &table, "w", WRITE_UNITS_PER_TASK, seed, None).await;
    eprintln!(
        "  {} in {:?}",
        tally.summary(&WRITE_PHASES),
        started.elapsed()
    );

    let mut failures = unexpected_errors("errors", &tally);
    let watch = s.watch(false);
    failures.extend(no_open_transactions(&watch, "after the cancellations").await);
    let (line, f) = check_rows(&tally, &counts(&s.admin, &table).await);
    eprintln!("  {line}");
    failures.extend(f);
    failures.extend(sequential_writes(&db, &s.admin, &table, "seq").await);
    failures.extend(no_open_transactions(&watch, "after the sequential writes").await);
    drop(db);
    s.drop_table(&table).await;
    fail_if_any(&format!("[{name}] read-write cancellation"), failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_writes_survive_cancellation() {
    writes_survive_cancellation(DbBackend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_writes_survive_cancellation() {
    writes_survive_cancellation(DbBackend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_writes_survive_cancellation() {
    let c = common::sqlite().expect("sqlite");
    let path = c.file.as_ref().expect("file").0.clone();
    let _serial = SERIAL.lock().await;
    let seed = seed();
    let db = ReplicatedDatabase::builder()
        .primary_node(small(&c.primary, "primary"))
        .connect()
        .await
        .expect("connect");
    let admin = admin(&c.primary).await;
    let table = format!("sor_cancel_rw_{}", short_id());
    exec(&admin, &create_table_sql(DbBackend::Sqlite, &table)).await;
    eprintln!("[sqlite] read-write cancellation: seed {seed}, {TASKS} tasks × {WRITE_UNITS_PER_TASK} units, writer pool of 2");
    let started = Instant::now();
    let tally = write_load(&db, &table, "w", WRITE_UNITS_PER_TASK, seed, None).await;
    eprintln!(
        "  {} in {:?}",
        tally.summary(&WRITE_PHASES),
        started.elapsed()
    );

    let mut failures = unexpected_errors("errors", &tally);
    let watch = Watch::Sqlite { path };
    failures
        .extend(no_open_transactions(&watch, "after the cancellations (write lock held)").await);
    let (line, f) = check_rows(&tally, &counts(&admin, &table).await);
    eprintln!("  {line}");
    failures.extend(f);
    failures.extend(sequential_writes(&db, &admin, &table, "seq").await);
    failures.extend(
        no_open_transactions(&watch, "after the sequential writes (write lock held)").await,
    );
    fail_if_any("[sqlite] read-write cancellation", failures);
}

// ---------------------------------------------------------------------------------------------
// Read-only units dropped at random points: no frozen snapshot
// ---------------------------------------------------------------------------------------------

/// After `marker` was written through an admin connection: the first read-only unit that
/// sees it (waiting for the replica), then every one of `rounds` statement-level and snapshot
/// units must see it. Returns failures.
async fn every_reader_sees(
    db: &ReplicatedDatabase,
    table: &str,
    marker: &str,
    rounds: usize,
) -> Vec<String> {
    let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE v = '{marker}'");
    let sees = |snapshot: bool| {
        let sql = sql.clone();
        async move {
            let options = if snapshot {
                UnitOptions::new().snapshot()
            } else {
                UnitOptions::new()
            };
            let unit: UnitOfWork<ReadOnly> = db.begin_unit(options);
            let n = query_i64(&unit, &sql).await;
            let node = unit.node_name().map(str::to_owned);
            let _ = unit.commit().await;
            (n, node)
        }
    };
    let started = Instant::now();
    let caught_up = poll(Duration::from_secs(15), || async {
        matches!(sees(false).await.0, Ok(1))
    })
    .await;
    if !caught_up {
        return vec![format!(
            "a row written through an admin connection was not seen by a read-only unit within 15 s (last: {:?})",
            sees(false).await
        )];
    }
    let mut failures = Vec::new();
    let mut nodes: HashMap<String, usize> = HashMap::new();
    for i in 0..rounds {
        for snapshot in [false, true] {
            let (n, node) = sees(snapshot).await;
            *nodes.entry(node.unwrap_or_default()).or_default() += 1;
            if !matches!(n, Ok(1)) {
                failures.push(format!(
                    "read-only unit {i} ({}) after the row was visible: {n:?} — a frozen snapshot or a lagging node",
                    if snapshot { "snapshot" } else { "statement-level" }
                ));
            }
        }
    }
    eprintln!(
        "  a fresh row seen by read-only units {:?} after the first caught up; {rounds}×2 units after it, by node {nodes:?}; {} did not see it",
        started.elapsed(),
        failures.len()
    );
    failures.truncate(10);
    failures
}

async fn readers_survive_cancellation(backend: DbBackend) {
    let Some(s) = Shared::open(backend, &tag(backend, "ro")).await else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let seed = seed();
    let table = s.table("ro").await;
    exec(
        &s.admin,
        &format!("INSERT INTO {table} (v) VALUES ('seed')"),
    )
    .await;
    replicated(&s.replica_admin, &table).await;
    let name = backend.as_str();
    let mut failures = Vec::new();
    // on the replica (statement-level units on its read-only pool, snapshot units in a
    // READ ONLY transaction there), then with no replica (READ ONLY transactions on the
    // primary's read-only pool)
    for with_replica in [true, false] {
        let mut builder =
            ReplicatedDatabase::builder().primary_node(small(&s.tagged_primary, "primary"));
        if with_replica {
            builder = builder.replica_node(small(&s.tagged_replica, "replica"));
        }
        let db = builder.connect().await.expect("connect");
        let where_ = if with_replica {
            "replica"
        } else {
            "primary fallback"
        };
        if with_replica {
            // the replica serves read-only units (the server says so)
            let on_replica = poll(Duration::from_secs(15), || async {
                let unit = db.begin_read_only();
                let served = common::served_by(&unit).await;
                let _ = unit.commit().await;
                matches!(served, Ok(common::Served { replica: true, .. }))
            })
            .await;
            assert!(
                on_replica,
                "[{name}] read-only units never reached the replica"
            );
        }
        eprintln!("[{name}] read-only cancellation on the {where_}: seed {seed}, {TASKS} tasks × {READ_UNITS_PER_TASK} units (2/3 snapshot units), pool of 2");
        let started = Instant::now();
        let tally = read_load(&db, &table, READ_UNITS_PER_TASK, seed).await;
        eprintln!(
            "  {}; {} ran to their end, in {:?}",
            tally.summary(&READ_PHASES),
            tally.ended.load(Ordering::Relaxed),
            started.elapsed()
        );
        failures.extend(unexpected_errors(&format!("{where_}: errors"), &tally));
        failures.extend(
            no_open_transactions(
                &s.watch(with_replica),
                &format!("{where_}: after the cancellations"),
            )
            .await,
        );
        let marker = format!("marker-{}", short_id());
        exec(
            &s.admin,
            &format!("INSERT INTO {table} (v) VALUES ('{marker}')"),
        )
        .await;
        failures.extend(
            every_reader_sees(&db, &table, &marker, 20)
                .await
                .into_iter()
                .map(|f| format!("{where_}: {f}")),
        );
    }
    s.drop_table(&table).await;
    fail_if_any(&format!("[{name}] read-only cancellation"), failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_readers_survive_cancellation() {
    readers_survive_cancellation(DbBackend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_readers_survive_cancellation() {
    readers_survive_cancellation(DbBackend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_readers_survive_cancellation() {
    let c = common::sqlite().expect("sqlite");
    let path = c.file.as_ref().expect("file").0.clone();
    let _serial = SERIAL.lock().await;
    let seed = seed();
    let db = ReplicatedDatabase::builder()
        .primary_node(small(&c.primary, "primary"))
        .connect()
        .await
        .expect("connect");
    let admin = admin(&c.primary).await;
    let table = format!("sor_cancel_ro_{}", short_id());
    exec(&admin, &create_table_sql(DbBackend::Sqlite, &table)).await;
    exec(&admin, &format!("INSERT INTO {table} (v) VALUES ('seed')")).await;
    eprintln!("[sqlite] read-only cancellation: seed {seed}, {TASKS} tasks × {READ_UNITS_PER_TASK} units (2/3 snapshot units)");
    let started = Instant::now();
    let tally = read_load(&db, &table, READ_UNITS_PER_TASK, seed).await;
    eprintln!(
        "  {}; {} ran to their end, in {:?}",
        tally.summary(&READ_PHASES),
        tally.ended.load(Ordering::Relaxed),
        started.elapsed()
    );
    let mut failures = unexpected_errors("errors", &tally);
    failures.extend(
        no_open_transactions(
            &Watch::Sqlite { path },
            "after the cancellations (write lock held)",
        )
        .await,
    );
    let marker = format!("marker-{}", short_id());
    exec(
        &admin,
        &format!("INSERT INTO {table} (v) VALUES ('{marker}')"),
    )
    .await;
    failures.extend(every_reader_sees(&db, &table, &marker, 20).await);
    fail_if_any("[sqlite] read-only cancellation", failures);
}

// ---------------------------------------------------------------------------------------------
// The node's own statement bound
// ---------------------------------------------------------------------------------------------

async fn session_id<C: ConnectionTrait>(c: &C) -> Result<i64, DbErr> {
    let sql = match c.get_database_backend() {
        DbBackend::Postgres => "SELECT pg_backend_pid()::int8",
        _ => "SELECT CAST(CONNECTION_ID() AS SIGNED)",
    };
    query_i64(c, sql).await
}

/// One plain read-write unit writing `value`; its session id.
async fn write_once(db: &ReplicatedDatabase, insert: &str, value: &str) -> Result<i64, DbErr> {
    let unit = db.begin_read_write();
    let b = unit.get_database_backend();
    let pid = session_id(&unit).await?;
    unit.execute_raw(Statement::from_sql_and_values(
        b,
        insert,
        [Value::from(value)],
    ))
    .await?;
    unit.commit().await?;
    Ok(pid)
}

/// The statement bound (`statement_timeout(300 ms)`: the client gives up at 550 ms) cuts a
/// unit off in a long statement: later units on the handle work, the cut-off unit's commit is
/// refused and its write is not there, refusing that commit is no reason to take the primary
/// out, the cut-off session is never handed out again, and it goes away at the server.
async fn statement_bound_closes_the_connection(backend: DbBackend) {
    let Some(s) = Shared::open(backend, &tag(backend, "bound")).await else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let name = backend.as_str();
    let table = s.table("bound").await;
    let db = ReplicatedDatabase::builder()
        .primary_node(
            NodeConfig::new(&s.tagged_primary)
                .name("primary")
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(5))
                .statement_timeout(Duration::from_millis(300)),
        )
        .connect()
        .await
        .expect("connect");
    let b = backend;
    let insert = insert_sql(b, &table);
    let mut failures = Vec::new();

    let cut = db.begin_read_write();
    let pid = session_id(&cut).await.expect("session id");
    cut.execute_raw(Statement::from_sql_and_values(
        b,
        &insert,
        [Value::from("cut")],
    ))
    .await
    .expect("insert");
    let sleep = match b {
        DbBackend::Postgres => {
            // the server's own statement_timeout (300 ms) would answer first: switch it off for
            // this transaction, so that only the client's bound can end the statement
            cut.execute_unprepared("SET LOCAL statement_timeout = 0")
                .await
                .expect("SET LOCAL");
            "SELECT pg_sleep(2)"
        }
        _ => "SELECT SLEEP(2)",
    };
    let started = Instant::now();
    let slept = cut.query_one_raw(Statement::from_string(b, sleep)).await;
    let took = started.elapsed();
    eprintln!(
        "[{name}] statement bound: `{sleep}` on session {pid} returned after {took:?}: {:?}",
        slept.as_ref().map(|_| "a row")
    );
    match &slept {
        Ok(_) => failures.push(format!(
            "`{sleep}` was not cut off by the 300 ms statement bound ({took:?})"
        )),
        Err(e) if !ReplicaError::is_connection_level(e) => failures.push(format!(
            "`{sleep}` cut off with an error that is not the statement bound: {e}"
        )),
        Err(_) => {}
    }
    if took > Duration::from_millis(1500) {
        failures.push(format!("the statement bound let the caller wait {took:?}"));
    }

    // later units work (the cut-off unit is still held, unfinished)
    let after_started = Instant::now();
    let deadline = after_started + Duration::from_secs(15);
    let mut first_error = None;
    let mut attempts = 0;
    let next = loop {
        attempts += 1;
        let result = write_once(&db, &insert, "after-1").await;
        if result.is_ok() || Instant::now() >= deadline {
            break result;
        }
        if first_error.is_none() {
            first_error = result.err().map(|e| e.to_string());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "  next unit after the bound: {next:?} after {:?} ({attempts} attempts; the first failed with {first_error:?})",
        after_started.elapsed()
    );
    if let Err(e) = &next {
        failures.push(format!(
            "no read-write unit succeeded within 15 s after the statement bound: {e}"
        ));
    }

    // the cut-off unit's commit is refused: nothing of it is acknowledged
    let committed = cut.commit().await;
    eprintln!("  commit of the cut-off unit: {committed:?}");
    if committed.is_ok() {
        failures.push("the commit of a unit whose statement was cut off returned Ok".into());
    }
    // refusing that commit says nothing about the node: the very next unit works at once
    let up = db.status().node("primary").map(|n| n.up);
    let right_after = write_once(&db, &insert, "after-2").await;
    eprintln!("  unit right after the refused commit: {right_after:?} (primary up in the status view: {up:?} → {:?})",
        db.status().node("primary").map(|n| n.up));
    if let Err(e) = &right_after {
        failures.push(format!(
            "after the library refused to commit the cut-off unit (\"transaction abandoned\"), the healthy primary was taken out of routing: the next read-write unit failed with: {e}"
        ));
    }

    // the cut-off session is never handed out again
    let mut seen = Vec::new();
    for i in 0..6 {
        let value = format!("later-{i}");
        let deadline = Instant::now() + Duration::from_secs(15);
        let result = loop {
            let r = write_once(&db, &insert, &value).await;
            if r.is_ok() || Instant::now() >= deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        match result {
            Ok(p) => seen.push(p),
            Err(e) => failures.push(format!("later unit {i}: {e}")),
        }
    }
    eprintln!("  sessions of the later units: {seen:?} (the cut-off one was {pid})");
    if seen.contains(&pid) {
        failures.push(format!(
            "a later unit ran on session {pid}, the one whose statement was cut off: it was pooled in an unknown state"
        ));
    }
    let found = counts(&s.admin, &table).await;
    eprintln!("  rows: {found:?}");
    if found.contains_key("cut") {
        failures.push("the write of the unit cut off by the statement bound is there".into());
    }
    for v in ["after-1", "after-2"] {
        let expected = match v {
            "after-1" => next.is_ok(),
            _ => right_after.is_ok(),
        };
        if expected && found.get(v).copied() != Some(1) {
            failures.push(format!(
                "the acknowledged write {v} is not there exactly once: {found:?}"
            ));
        }
    }
    // the cut-off session ends (its statement finishes, then it finds the socket closed)
    let gone_sql = match b {
        DbBackend::Postgres => {
            format!("SELECT count(*)::int8 FROM pg_stat_activity WHERE pid = {pid}")
        }
        _ => format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {pid}"),
    };
    let gone_started = Instant::now();
    let gone = poll(Duration::from_secs(10), || async {
        query_i64(&s.admin, &gone_sql).await.ok() == Some(0)
    })
    .await;
    eprintln!(
        "  session {pid} gone at the server: {gone} ({:?} after the checks began)",
        gone_started.elapsed()
    );
    if !gone {
        failures.push(format!(
            "session {pid} (cut off by the statement bound) still exists 10 s later"
        ));
    }
    failures.extend(no_open_transactions(&s.watch(false), "after the statement bound").await);
    drop(db);
    s.drop_table(&table).await;
    fail_if_any(&format!("[{name}] statement bound"), failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_statement_bound_closes_the_connection() {
    statement_bound_closes_the_connection(DbBackend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_statement_bound_closes_the_connection() {
    statement_bound_closes_the_connection(DbBackend::MySql).await;
}

/// PostgreSQL's own `statement_timeout` (set by the library from `statement_timeout(300 ms)`)
/// cancels `pg_sleep(2)`: the transaction is aborted, so a `commit` after it cannot commit
/// anything. It must not be acknowledged: either `commit` fails, or the write made before is
/// there. (PostgreSQL answers `COMMIT` in an aborted transaction with `ROLLBACK`, not an
/// error.) The pooled connection then serves the next unit normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_commit_after_a_server_timeout_is_not_acknowledged() {
    let Some(s) = Shared::open(DbBackend::Postgres, &tag(DbBackend::Postgres, "srvto")).await
    else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let b = DbBackend::Postgres;
    let table = s.table("srvto").await;
    let db = ReplicatedDatabase::builder()
        .primary_node(
            NodeConfig::new(&s.tagged_primary)
                .name("primary")
                .max_connections(1)
                .statement_timeout(Duration::from_millis(300)),
        )
        .connect()
        .await
        .expect("connect");
    let insert = insert_sql(b, &table);
    let mut failures = Vec::new();

    let unit = db.begin_read_write();
    let pid = session_id(&unit).await.expect("pid");
    unit.execute_raw(Statement::from_sql_and_values(
        b,
        &insert,
        [Value::from("before-timeout")],
    ))
    .await
    .expect("insert");
    let started = Instant::now();
    let slept = unit
        .query_one_raw(Statement::from_string(b, "SELECT pg_sleep(2)"))
        .await;
    eprintln!(
        "[postgres] server statement_timeout: pg_sleep(2) on session {pid} after {:?}: {:?}",
        started.elapsed(),
        slept.as_ref().map(|_| "a row")
    );
    assert!(
        slept.is_err(),
        "pg_sleep(2) was not cancelled by statement_timeout = 300 ms"
    );
    let committed = unit.commit().await;
    let found = counts(&s.admin, &table).await;
    eprintln!("  commit after the cancelled statement: {committed:?}; rows: {found:?}");
    if committed.is_ok() && found.get("before-timeout").copied() != Some(1) {
        failures.push(format!(
            "commit returned Ok after the server cancelled a statement of the unit (its transaction was aborted), \
             but the unit's INSERT is not there: an acknowledged write is lost (rows: {found:?})"
        ));
    }
    // the connection itself is fine: the next unit works
    let next = db
        .read_write(|u| {
            let insert = insert.clone();
            Box::pin(async move {
                u.execute_raw(Statement::from_sql_and_values(
                    b,
                    &insert,
                    [Value::from("next")],
                ))
                .await?;
                session_id(u).await
            })
        })
        .await;
    eprintln!("  next unit: {next:?}");
    if next.is_err() {
        failures.push(format!("the next unit failed: {next:?}"));
    }
    failures.extend(no_open_transactions(&s.watch(false), "after the server timeout").await);
    drop(db);
    s.drop_table(&table).await;
    fail_if_any(
        "[postgres] commit after a server-side statement timeout",
        failures,
    );
}

// ---------------------------------------------------------------------------------------------
// A primary frozen with SIGSTOP while units are in flight
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_frozen_primary_loses_no_acknowledged_write() {
    if !fault_tests_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let seed = seed();
    let c = tokio::task::spawn_blocking(|| FaultCluster::start_pg("0"))
        .await
        .expect("start")
        .unwrap_or_else(|e| panic!("fault cluster did not start: {e}"));
    let c = Arc::new(c);
    let app = format!("sor_cancel_stop_{}", &short_id()[..6]);
    let admin = admin(c.primary_url()).await;
    let table = format!("sor_cancel_stop_{}", short_id());
    exec(&admin, &create_table_sql(DbBackend::Postgres, &table)).await;
    let node = |url: &str, name: &str| {
        NodeConfig::new(pg_url(url, &app))
            .name(name)
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_secs(1))
            .statement_timeout(Duration::from_millis(300))
    };
    let db = ReplicatedDatabase::builder()
        .primary_node(node(c.primary_url(), "primary"))
        .replica_node(node(c.replica1_url(), "replica1"))
        .monitor_interval(Duration::from_millis(100))
        .check_timeout(Duration::from_millis(500))
        .backoff(Duration::from_millis(200), Duration::from_secs(2))
        .connect()
        .await
        .expect("connect");

    eprintln!("[postgres] SIGSTOP: seed {seed}, {TASKS} tasks, pool of 2, statement bound 300 ms (+250 ms)");
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (db, table, stop) = (db.clone(), table.clone(), stop.clone());
        tokio::spawn(
            async move { write_load(&db, &table, "f", usize::MAX, seed, Some(stop)).await },
        )
    };
    // the tally lives in the load task: watch the table instead
    let rows = || async {
        query_i64(&admin, &format!("SELECT COUNT(*)::int8 FROM {table}"))
            .await
            .unwrap_or(0)
    };
    let warm = poll(Duration::from_secs(30), || async { rows().await >= 100 }).await;
    assert!(warm, "the load did not write 100 rows within 30 s");
    let before = rows().await;
    let c2 = c.clone();
    let paused_at = Instant::now();
    tokio::task::spawn_blocking(move || c2.pause("primary"))
        .await
        .expect("pause");
    let pause_took = paused_at.elapsed();
    // hold the primary frozen until the units in flight have been cut off by the bound and
    // the node is taken out (the status view says so), at most 10 s
    let out = poll(Duration::from_secs(10), || async {
        db.status().node("primary").is_some_and(|n| !n.up)
    })
    .await;
    // the fault's length, not a synchronisation: keep it frozen a while longer, so that units
    // which started before it was taken out run into the statement bound
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let frozen_for = paused_at.elapsed();
    let c2 = c.clone();
    tokio::task::spawn_blocking(move || c2.resume("primary"))
        .await
        .expect("resume");
    eprintln!("  primary frozen for {frozen_for:?} (the pause script took {pause_took:?}; taken out of routing: {out}); {before} rows before");
    let resumed = rows().await;
    let again = poll(Duration::from_secs(30), || async {
        rows().await >= resumed + 100
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let tally = load.await.expect("load");
    eprintln!("  {}", tally.summary(&WRITE_PHASES));
    for (e, n) in tally.error_kinds().iter().take(8) {
        eprintln!("  {n}× {e}");
    }
    let mut failures = Vec::new();
    if !again {
        failures.push(
            "the load did not write 100 more rows within 30 s after the primary was resumed".into(),
        );
    }
    let watch = Watch::Pg {
        admin: admin.clone(),
        app: app.clone(),
    };
    failures.extend(no_open_transactions(&watch, "after SIGSTOP/SIGCONT").await);
    let (line, f) = check_rows(&tally, &counts(&admin, &table).await);
    eprintln!("  {line}");
    failures.extend(f);
    // the handle may still count the primary out for a moment: wait until it writes again
    let writes = poll(Duration::from_secs(15), || async {
        db.read_write(|u| {
            Box::pin(async move { u.execute_unprepared("SELECT 1").await.map(|_| ()) })
        })
        .await
        .is_ok()
    })
    .await;
    assert!(writes, "the handle does not write again 15 s after SIGCONT");
    failures.extend(sequential_writes(&db, &admin, &table, "seq").await);
    failures.extend(no_open_transactions(&watch, "after the sequential writes").await);
    drop(db);
    fail_if_any("[postgres] SIGSTOP on the primary", failures);
}
