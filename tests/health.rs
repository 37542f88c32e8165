//! Health you can trust, on the real clusters:
//!
//! - **busy pool**: the application's pools saturated past `check_timeout` take no healthy node
//!   out (the monitor checks on a connection of its own), and read-write units queued behind
//!   the full pool never fail with `NoPrimary`;
//! - **lag after idle** (PostgreSQL): after 20 s without writes, steady writes to the replica
//!   whose replay is delayed 500 ms: the sampled `Node::lag()` never exceeds twice the true
//!   delay (the replica's own `now() - pg_last_xact_replay_timestamp()` reads the idle time);
//! - **a primary that is a replica**: found by the first round at `connect()` (a typed
//!   `PrimaryIsReplica`); with swapped URLs the status view says which node is which; and a
//!   primary turned read-only while the handle runs (MariaDB `SET GLOBAL read_only`, on a
//!   cluster of its own) shows as "no writes" in the status view while read-write units fail
//!   at once with `NoPrimary`, naming it.
//!
//! The tests take one lock: the lag test needs the shared primary idle (no test of this file
//! writes meanwhile), and a 2-core machine measures nothing well with two at once. Waits are
//! polls with deadlines; the only sleep that is not is the deliberate idle period.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::scenarios::{eventually, new_banner, Banners};
use common::{cluster, migrate_once, port_of, served_by, unique, Cluster};
use sea_orm::{ConnectionTrait, Database, DbBackend, DbErr, Statement, TransactionError};
use sea_orm_replica::{
    MigrateOptions, NodeConfig, ReadWrite, ReplicaError, ReplicatedDatabase, Repository, Role,
    ServerRole,
};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The typed error behind a closure-form unit's error.
fn typed(err: TransactionError<DbErr>) -> ReplicaError {
    match err {
        TransactionError::Connection(e) | TransactionError::Transaction(e) => {
            ReplicaError::from_db_err(e)
        }
    }
}

fn is_pool_timeout(err: &ReplicaError) -> bool {
    matches!(
        err,
        ReplicaError::Db(DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout))
    )
}

async fn scalar_i64(conn: &impl ConnectionTrait, sql: &str) -> i64 {
    let backend = conn.get_database_backend();
    conn.query_one_raw(Statement::from_string(backend, sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("one row")
        .try_get::<i64>("", "v")
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Busy pool
// ---------------------------------------------------------------------------------------------

/// How long the holders keep every application connection busy.
const HOLD_SECS: u64 = 3;

/// How the application's connections are kept busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Units whose statement sleeps in the server for the whole hold; queued units wait for a
    /// connection up to `acquire_timeout` (500 ms).
    Sleep,
    /// Long units that ran one statement and keep their connection (idle in a transaction);
    /// nodes have a statement bound (1 s, plus 250 ms in the client) shorter than the hold,
    /// and a longer `acquire_timeout` (5 s): queued units hit the statement bound while
    /// waiting for a connection.
    LongUnits,
}

/// The statement bound of [`Hold::LongUnits`].
const BOUND: Duration = Duration::from_secs(1);

/// Every pool the application has on the primary (read-write) and the replica (read-only) is
/// held for 3 s, ten times the check timeout. Meanwhile no node goes down, the checks keep
/// coming, routing always has a primary, and read-write units queued behind the full pool fail
/// (if at all) with the pool's timeout or the statement bound, never with `NoPrimary`; once
/// the holders finish, writes go through at once.
async fn busy_pool_takes_no_healthy_node_out(c: &Cluster, hold: Hold) {
    let _serial = SERIAL.lock().await;
    let acquire = match hold {
        Hold::Sleep => Duration::from_millis(500),
        Hold::LongUnits => Duration::from_secs(5),
    };
    let node = |url: &str, name: &str| {
        let node = NodeConfig::new(url)
            .name(name)
            .max_connections(2)
            .acquire_timeout(acquire);
        match hold {
            Hold::Sleep => node,
            Hold::LongUnits => node.statement_timeout(BOUND),
        }
    };
    let db = ReplicatedDatabase::builder()
        .primary_node(node(&c.primary, "primary"))
        .replica_node(node(&c.replicas[0], "replica-1"))
        .check_timeout(Duration::from_millis(300))
        .monitor_interval(Duration::from_millis(100))
        .connect()
        .await
        .expect("connect");
    migrate_once(&db).await;

    let tag = unique("held").replace('-', "_");
    let sql = match (hold, c.backend) {
        (Hold::Sleep, DbBackend::Postgres) => format!("SELECT pg_sleep({HOLD_SECS}) AS {tag}"),
        (Hold::Sleep, _) => format!("SELECT SLEEP({HOLD_SECS}) AS {tag}"),
        (Hold::LongUnits, _) => format!("SELECT 1 AS {tag}"),
    };
    // the long units say when they hold their connection
    let barrier = Arc::new(tokio::sync::Barrier::new(5));
    let mut holders = Vec::new();
    for _ in 0..2 {
        let (rw, rw_sql, rw_barrier) = (db.clone(), sql.clone(), barrier.clone());
        holders.push(tokio::spawn(async move {
            let unit = rw.begin_read_write();
            unit.execute_unprepared(&rw_sql).await?;
            if hold == Hold::LongUnits {
                rw_barrier.wait().await;
                tokio::time::sleep(Duration::from_secs(HOLD_SECS)).await; // the long unit's work
            }
            unit.commit().await
        }));
        let (ro, ro_sql, ro_barrier) = (db.clone(), sql.clone(), barrier.clone());
        holders.push(tokio::spawn(async move {
            let unit = ro.begin_read_only();
            let stmt = Statement::from_string(unit.get_database_backend(), ro_sql);
            unit.query_one_raw(stmt).await?;
            if hold == Hold::LongUnits {
                ro_barrier.wait().await;
                tokio::time::sleep(Duration::from_secs(HOLD_SECS)).await;
            }
            unit.commit().await
        }));
    }

    match hold {
        Hold::LongUnits => {
            tokio::time::timeout(Duration::from_secs(5), barrier.wait())
                .await
                .expect("the holders did not get every connection");
        }
        Hold::Sleep => {
            // the server says when all four sleep
            let running = match c.backend {
                DbBackend::Postgres => format!(
                    "SELECT count(*)::int8 AS v FROM pg_stat_activity WHERE query LIKE '%AS {tag}' AND state = 'active'"
                ),
                _ => format!(
                    "SELECT CAST(COUNT(*) AS SIGNED) AS v FROM information_schema.PROCESSLIST WHERE INFO LIKE '%AS {tag}'"
                ),
            };
            let primary_server = Database::connect(c.primary.as_str()).await.unwrap();
            let replica_server = Database::connect(c.replicas[0].as_str()).await.unwrap();
            let held = eventually(Duration::from_secs(2), || async {
                scalar_i64(&primary_server, &running).await == 2
                    && scalar_i64(&replica_server, &running).await == 2
            })
            .await;
            assert!(held, "the holders did not get every connection");
        }
    }
    let window = Instant::now();
    let checks_before: Vec<u64> = db.nodes().map(|n| n.checks()).collect();

    // read-write units queued behind the full pool, one every 100 ms while it is held
    let queued = {
        let db = db.clone();
        let tag = tag.clone();
        tokio::spawn(async move {
            let mut units = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for i in 0..(HOLD_SECS * 10) {
                tick.tick().await;
                let (db, name) = (db.clone(), format!("{tag}-{i}"));
                units.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let result = db
                        .read_write(|u| {
                            Box::pin(async move {
                                Banners::insert(u, new_banner(&name)).await?;
                                Ok::<_, DbErr>(())
                            })
                        })
                        .await
                        .map_err(typed);
                    (started.elapsed(), result)
                }));
            }
            let mut out = Vec::new();
            for u in units {
                out.push(u.await.expect("queued unit"));
            }
            out
        })
    };

    // watch every node while the pools are held
    let mut samples = 0;
    let mut downs = Vec::new();
    let mut no_route = Vec::new();
    while holders.iter().any(|h| !h.is_finished()) {
        for n in db.nodes() {
            if n.is_down() {
                downs.push(format!("{}: {:?}", n.name(), n.last_error()));
            }
        }
        if let Err(e) = db.route::<ReadWrite>() {
            no_route.push(e.to_string());
        }
        samples += 1;
        assert!(
            window.elapsed() < Duration::from_secs(HOLD_SECS + 5),
            "the holders never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held_for = window.elapsed();
    let checks: Vec<u64> = db
        .nodes()
        .zip(&checks_before)
        .map(|(n, before)| n.checks() - before)
        .collect();
    for h in holders {
        h.await.unwrap().expect("a holder failed");
    }
    let outcomes = queued.await.unwrap();
    let ok = outcomes.iter().filter(|(_, r)| r.is_ok()).count();
    let waited_out = |e: &ReplicaError| match hold {
        Hold::Sleep => is_pool_timeout(e),
        Hold::LongUnits => matches!(e, ReplicaError::Timeout { node, .. } if node == "primary"),
    };
    let timeouts = outcomes
        .iter()
        .filter(|(_, r)| r.as_ref().is_err_and(waited_out))
        .count();
    let no_primary: Vec<String> = outcomes
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .filter(|e| matches!(e, ReplicaError::NoPrimary { .. }))
        .map(|e| e.to_string())
        .collect();
    let other: Vec<String> = outcomes
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .filter(|e| !waited_out(e) && !matches!(e, ReplicaError::NoPrimary { .. }))
        .map(|e| e.to_string())
        .collect();
    let slowest = outcomes.iter().map(|(d, _)| *d).max().unwrap_or_default();
    eprintln!(
        "busy pool ({}, {hold:?}): every application connection held {held_for:.1?}; {} read-write units queued: \
         {ok} ok, {timeouts} {}, {} NoPrimary, {} other \
         (slowest {slowest:.1?}); checks during the hold {:?}; {samples} samples, {} with a node down",
        c.backend.as_str(),
        outcomes.len(),
        match hold {
            Hold::Sleep => format!("pool timeouts (acquire_timeout {acquire:?})"),
            Hold::LongUnits => format!("statement-bound timeouts ({BOUND:?} + 250 ms)"),
        },
        no_primary.len(),
        other.len(),
        db.nodes().map(|n| n.name()).zip(&checks).collect::<Vec<_>>(),
        downs.len(),
    );
    assert!(downs.is_empty(), "a healthy node was taken out: {downs:?}");
    assert!(
        no_route.is_empty(),
        "routing lost the primary: {no_route:?}"
    );
    assert!(
        no_primary.is_empty(),
        "queued units failed with NoPrimary: {no_primary:?}"
    );
    assert!(other.is_empty(), "queued units failed otherwise: {other:?}");
    let expected = (held_for.as_millis() / 100 / 2) as u64;
    assert!(
        checks.iter().all(|&n| n >= expected),
        "checks stalled while the pools were full: {checks:?} (expected at least {expected} each)"
    );
    // the pool is free again: a write goes through at once
    let started = Instant::now();
    let unit = db.begin_read_write();
    Banners::insert(&unit, new_banner(&format!("{tag}-after")))
        .await
        .expect("write after the hold");
    unit.commit().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn postgres_busy_pool_takes_no_healthy_node_out() {
    if let Some(c) = cluster(DbBackend::Postgres) {
        busy_pool_takes_no_healthy_node_out(&c, Hold::Sleep).await;
    }
}

#[tokio::test]
async fn mariadb_busy_pool_takes_no_healthy_node_out() {
    if let Some(c) = cluster(DbBackend::MySql) {
        busy_pool_takes_no_healthy_node_out(&c, Hold::Sleep).await;
    }
}

#[tokio::test]
async fn postgres_long_units_past_the_statement_bound_take_no_healthy_node_out() {
    if let Some(c) = cluster(DbBackend::Postgres) {
        busy_pool_takes_no_healthy_node_out(&c, Hold::LongUnits).await;
    }
}

#[tokio::test]
async fn mariadb_long_units_past_the_statement_bound_take_no_healthy_node_out() {
    if let Some(c) = cluster(DbBackend::MySql) {
        busy_pool_takes_no_healthy_node_out(&c, Hold::LongUnits).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Lag after idle
// ---------------------------------------------------------------------------------------------

/// The deliberate idle period.
const IDLE: Duration = Duration::from_secs(20);
/// Writes after it: one every 50 ms.
const WRITES: usize = 100;
const WRITE_EVERY: Duration = Duration::from_millis(50);

fn pg_interval(text: &str) -> Duration {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num.parse().unwrap_or(0);
    match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "min" => Duration::from_secs(n * 60),
        "" => Duration::from_millis(n),
        other => panic!("recovery_min_apply_delay in {other}?"),
    }
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted
        .get((sorted.len().saturating_sub(1)) * p / 100)
        .copied()
        .unwrap_or_default()
}

#[tokio::test]
async fn postgres_lag_after_idle_stays_within_twice_the_true_delay() {
    let Some(c) = cluster(DbBackend::Postgres) else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let lagging = c
        .lagging
        .clone()
        .expect("the PostgreSQL cluster has a lagging replica");
    let db = ReplicatedDatabase::builder()
        .primary_node(NodeConfig::new(&c.primary).name("primary"))
        .replica_node(NodeConfig::new(&lagging).name("lagging"))
        .monitor_interval(Duration::from_millis(100))
        .connect()
        .await
        .expect("connect");
    migrate_once(&db).await;
    let primary_server = Database::connect(c.primary.as_str()).await.unwrap();
    let replica_server = Database::connect(lagging.as_str()).await.unwrap();
    let configured = {
        let row = replica_server
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT current_setting('recovery_min_apply_delay') AS d",
            ))
            .await
            .unwrap()
            .unwrap();
        pg_interval(&row.try_get::<String>("", "d").unwrap())
    };
    assert!(
        configured > Duration::ZERO,
        "the lagging replica has no apply delay"
    );
    let lsn = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8 AS v";
    let lag = || db.node("lagging").and_then(|n| n.lag());

    // 1. the deliberate idle period (nothing of ours writes; the lag is sampled throughout)
    let wal_before = scalar_i64(&primary_server, lsn).await;
    let idle_started = Instant::now();
    let mut idle_samples = Vec::new();
    while idle_started.elapsed() < IDLE {
        idle_samples.push(lag());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle_wal = scalar_i64(&primary_server, lsn).await - wal_before;

    // 2. steady writes; the lag sampled every 10 ms from the first write on
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                out.push((started.elapsed(), db.node("lagging").unwrap().lag()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            out
        })
    };
    let tag = unique("lag");
    let committed: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let writer = {
        let (db, tag, committed) = (db.clone(), tag.clone(), committed.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WRITE_EVERY);
            for k in 0..WRITES {
                tick.tick().await;
                Banners::insert(&db, new_banner(&format!("{tag}-{k:04}")))
                    .await
                    .expect("write");
                committed.lock().unwrap().push(Instant::now());
            }
        })
    };
    // when each write becomes visible on the lagging replica, and what the replica's own
    // view of its lag (the old measure) says meanwhile
    let watch = format!(
        "SELECT count(*)::int8 AS n, \
         CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
         ELSE (EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000)::int8 END AS own \
         FROM banner WHERE name LIKE '{tag}-%'"
    );
    let mut seen_at: Vec<Instant> = Vec::new();
    let mut own_max = 0i64;
    let deadline = Instant::now() + WRITE_EVERY * WRITES as u32 + Duration::from_secs(15);
    while seen_at.len() < WRITES {
        let row = replica_server
            .query_one_raw(Statement::from_string(DbBackend::Postgres, watch.clone()))
            .await
            .unwrap()
            .unwrap();
        let n = row.try_get::<i64>("", "n").unwrap() as usize;
        own_max = own_max.max(row.try_get::<Option<i64>>("", "own").unwrap().unwrap_or(0));
        let now = Instant::now();
        while seen_at.len() < n {
            seen_at.push(now);
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {WRITES} writes reached the lagging replica",
            seen_at.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();

    let committed = committed.lock().unwrap().clone();
    let mut delays: Vec<Duration> = committed
        .iter()
        .zip(&seen_at)
        .map(|(c, s)| s.saturating_duration_since(*c))
        .collect();
    delays.sort();
    let true_delay = pct(&delays, 50);
    let mut lags: Vec<Duration> = samples.iter().filter_map(|(_, l)| *l).collect();
    lags.sort();
    let unknown = samples.iter().filter(|(_, l)| l.is_none()).count();
    let idle_max = idle_samples
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or_default();
    let first_500ms: Vec<Duration> = samples
        .iter()
        .filter(|(t, _)| *t < Duration::from_millis(500))
        .filter_map(|(_, l)| *l)
        .collect();
    eprintln!(
        "lag after {IDLE:?} idle (primary WAL moved {idle_wal} bytes meanwhile: {}), then {WRITES} writes \
         every {WRITE_EVERY:?} to a replica delayed {configured:?}:\n  \
         true delay (commit to visible on the replica): min {:?} median {true_delay:?} max {:?}\n  \
         Node::lag() samples: {} ({} unknown): min {:?} median {:?} p99 {:?} max {:?}; \
         max in the first 500 ms of writes {:?}; max while idle {idle_max:?}\n  \
         the replica's own view (now() - pg_last_xact_replay_timestamp()) read up to {own_max} ms",
        if idle_wal < 64 * 1024 { "idle" } else { "others wrote" },
        delays[0],
        delays[delays.len() - 1],
        samples.len(),
        unknown,
        lags.first().copied().unwrap_or_default(),
        pct(&lags, 50),
        pct(&lags, 99),
        lags.last().copied().unwrap_or_default(),
        first_500ms.iter().max(),
    );
    let bound = true_delay * 2;
    assert!(
        lags.last().is_some_and(|max| *max <= bound),
        "a lag sample exceeded twice the true delay {true_delay:?}: max {:?}",
        lags.last()
    );
    assert!(
        idle_max <= bound,
        "a lag sample while idle exceeded twice the delay: {idle_max:?}"
    );
    // and it is a measurement, not zeros: under steady writes it does read the delay
    assert!(
        pct(&lags, 90) >= true_delay / 2,
        "the lag under steady writes never read the delay: {:?}",
        pct(&lags, 90)
    );
}

// ---------------------------------------------------------------------------------------------
// A primary that is a replica
// ---------------------------------------------------------------------------------------------

/// A primary URL that points at a replica fails `connect()` at once with a typed error that
/// names the node, instead of a handle whose every write the server refuses.
async fn a_primary_url_that_points_at_a_replica_fails_connect(c: &Cluster) {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut builder =
        ReplicatedDatabase::builder().primary_node(NodeConfig::new(&c.replicas[0]).name("primary"));
    if let Some(lagging) = &c.lagging {
        builder = builder.replica_node(NodeConfig::new(lagging).name("replica-1"));
    }
    let err = builder
        .connect()
        .await
        .expect_err("a replica as the primary");
    let text = err.to_string();
    assert!(
        matches!(&err, ReplicaError::PrimaryIsReplica { node, .. } if node == "primary"),
        "{err:?}"
    );
    assert!(text.contains("reports being a replica"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    eprintln!(
        "{}: connect() refused in {:.0?}: {text}",
        c.backend.as_str(),
        started.elapsed()
    );
}

#[tokio::test]
async fn postgres_a_primary_url_that_points_at_a_replica_fails_connect() {
    if let Some(c) = cluster(DbBackend::Postgres) {
        a_primary_url_that_points_at_a_replica_fails_connect(&c).await;
    }
}

#[tokio::test]
async fn mariadb_a_primary_url_that_points_at_a_replica_fails_connect() {
    if let Some(c) = cluster(DbBackend::MySql) {
        a_primary_url_that_points_at_a_replica_fails_connect(&c).await;
    }
}

/// PostgreSQL with the two URLs swapped: the node that reports being the primary (at a
/// timeline) takes the writes, and the status view says of each node what it is configured
/// as, what it reports, and where units go — the same words in `Status`, its fields and its
/// `Display`.
#[tokio::test]
async fn postgres_swapped_urls_take_writes_on_the_real_primary_and_the_status_says_so() {
    let Some(c) = cluster(DbBackend::Postgres) else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let db = ReplicatedDatabase::builder()
        .primary_node(NodeConfig::new(&c.replicas[0]).name("primary"))
        .replica_node(NodeConfig::new(&c.primary).name("replica-1"))
        .monitor_interval(Duration::from_millis(100))
        .connect()
        .await
        .expect("the real primary takes over at connect");
    let status = db.status();
    let text = status.to_string();
    let configured = status.node("primary").unwrap();
    assert_eq!(
        (configured.configured, configured.server_role),
        (Role::Primary, ServerRole::Replica),
        "{text}"
    );
    assert!(
        !configured.current_primary && configured.routing() == "standby",
        "{text}"
    );
    assert!(
        configured
            .note
            .as_deref()
            .is_some_and(|n| n.contains("reports being a replica")),
        "{text}"
    );
    let real = status.node("replica-1").unwrap();
    assert_eq!(
        (real.configured, real.server_role),
        (Role::Replica, ServerRole::Primary),
        "{text}"
    );
    assert!(
        real.current_primary && real.routing() == "read-write",
        "{text}"
    );
    assert!(
        real.note
            .as_deref()
            .is_some_and(|n| n.contains("took over")),
        "{text}"
    );
    assert!(
        text.contains("reports being a replica") && text.contains("took over"),
        "{text}"
    );
    let unit = db.begin_read_write();
    let served = served_by(&unit).await.unwrap();
    assert!(
        !served.replica && served.port == port_of(&c.primary),
        "{served:?}"
    );
    unit.rollback().await.unwrap();
    eprintln!("swapped URLs:\n{text}");
}

/// A MariaDB cluster of its own (`scripts/cluster.sh start mariadb` in its own directory and
/// ports), so the test can turn its primary read-only. Stopped and deleted when dropped.
struct OwnMariaDb {
    dir: PathBuf,
    port_base: u16,
    primary: String,
    replica: String,
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh");

impl OwnMariaDb {
    fn script(dir: &std::path::Path, port_base: u16, args: &[&str]) -> std::process::Output {
        Command::new("bash")
            .arg(SCRIPT)
            .args(args)
            .env("CLUSTER_DIR", dir)
            .env("SOR_MYSQL_PORT_BASE", port_base.to_string())
            .env("SOR_PG_PORT_BASE", (port_base + 5).to_string())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run scripts/cluster.sh")
    }

    fn start() -> Self {
        let port_base = (0..200u16)
            .map(|i| 57_300 + ((std::process::id() as u16).wrapping_add(i * 10) % 2000))
            .find(|&b| (b..b + 2).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()))
            .expect("two free ports");
        let dir = std::env::temp_dir().join(format!(
            "sor-health-mariadb-{}-{port_base}",
            std::process::id()
        ));
        let out = Self::script(&dir, port_base, &["start", "mariadb"]);
        let own = OwnMariaDb {
            primary: format!("mysql://root@127.0.0.1:{port_base}/app"),
            replica: format!("mysql://root@127.0.0.1:{}/app", port_base + 1),
            dir,
            port_base,
        };
        assert!(
            out.status.success(),
            "scripts/cluster.sh start mariadb failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        own
    }
}

impl Drop for OwnMariaDb {
    fn drop(&mut self) {
        Self::script(&self.dir, self.port_base, &["stop", "mariadb"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The primary turns read-only while the handle runs (`SET GLOBAL read_only = 1`, as a
/// demotion does): within a few checks the status view shows it as "no writes", with a note,
/// in its fields and its `Display`; read-write units fail at once with `NoPrimary` naming it
/// rather than sending writes the server refuses one by one; writable again, it takes writes.
#[tokio::test]
async fn mariadb_primary_turned_read_only_refuses_writes_fast_and_the_status_says_so() {
    if cluster(DbBackend::MySql).is_none() {
        return; // no MariaDB on this machine
    }
    let _serial = SERIAL.lock().await;
    let own = tokio::task::spawn_blocking(OwnMariaDb::start)
        .await
        .unwrap();
    let db = ReplicatedDatabase::builder()
        .primary_node(NodeConfig::new(&own.primary).name("primary"))
        .replica_node(NodeConfig::new(&own.replica).name("replica-1"))
        .monitor_interval(Duration::from_millis(100))
        .connect()
        .await
        .expect("connect");
    let control = Database::connect(own.primary.as_str()).await.unwrap();
    control
        .execute_unprepared("SET GLOBAL read_only = 1")
        .await
        .unwrap();
    let seen = eventually(Duration::from_secs(5), || async {
        db.status().node("primary").unwrap().refuses_writes()
    })
    .await;
    let status = db.status();
    let text = status.to_string();
    assert!(
        seen,
        "the status never showed the read-only primary:\n{text}"
    );
    let line = status.node("primary").unwrap();
    assert_eq!(
        (
            line.configured,
            line.server_role,
            line.current_primary,
            line.up
        ),
        (Role::Primary, ServerRole::Replica, true, true),
        "{text}"
    );
    assert_eq!(line.routing(), "no writes");
    assert!(
        line.note
            .as_deref()
            .is_some_and(|n| n.contains("reports being a replica") && n.contains("NoPrimary")),
        "{text}"
    );
    assert!(text.contains("no writes"), "{text}");
    assert!(
        status.nodes.iter().all(|n| n.routing() != "read-write"),
        "{text}"
    );

    let started = Instant::now();
    let err = db
        .read_write(|u| {
            Box::pin(async move {
                u.execute_unprepared("SELECT 1").await?;
                Ok::<_, DbErr>(())
            })
        })
        .await
        .map_err(typed)
        .expect_err("no writes on a read-only primary");
    let refused_in = started.elapsed();
    match &err {
        ReplicaError::NoPrimary { reason } => assert!(
            reason.contains("`primary`") && reason.contains("replica"),
            "{reason}"
        ),
        other => panic!("expected NoPrimary, got {other:?}"),
    }
    assert!(refused_in < Duration::from_millis(50), "{refused_in:?}");
    eprintln!("primary turned read-only: refused in {refused_in:?}: {err}\n{text}");
    // migrations ask the server themselves, and refuse too
    let err = db
        .migrate::<migration::Migrator>(MigrateOptions::new())
        .await
        .expect_err("no migrations on a read-only primary");
    assert!(
        matches!(&err, ReplicaError::MigrationOnReplica { node } if node == "primary"),
        "{err}"
    );

    control
        .execute_unprepared("SET GLOBAL read_only = 0")
        .await
        .unwrap();
    let back = eventually(Duration::from_secs(5), || async {
        db.status().node("primary").unwrap().routing() == "read-write"
    })
    .await;
    assert!(back, "{}", db.status());
    let unit = db.begin_read_write();
    let served = served_by(&unit).await.expect("writes again");
    assert!(!served.replica && served.port == port_of(&own.primary));
    unit.rollback().await.unwrap();
    drop(db);
    drop(own);
}
