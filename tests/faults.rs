//! Fault injection on real PostgreSQL clusters: a replica killed (`kill -9`) or frozen
//! (`SIGSTOP`) under read load, and a primary stopped and a replica promoted under mixed load.
//!
//! Each test starts its own cluster (`FaultCluster`: its own ports and directory), so the
//! faults never touch the cluster the other tests share, and tears it down at the end. They
//! run when `SOR_FAULT_TESTS=1`, `SOR_REQUIRE_CLUSTER=1` or `CI` is set (`scripts/test.sh`
//! sets them); `SOR_FAULT_SECS` sets the length of the load (default 10 s). Every route a
//! test relies on is confirmed by asking the server (`inet_server_port()`).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fault_cluster::{FaultCluster, ACQUIRE_TIMEOUT, STATEMENT_TIMEOUT};
use entity::{author, banner};
use migration::Migrator;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr,
    EntityTrait, PaginatorTrait, QueryFilter, QuerySelect, Statement,
};
use sea_orm_replica::shard::{Modulo, ShardedDatabase, ShardedRepository};
use sea_orm_replica::{
    MigrateOptions, ReplicaError, ReplicatedDatabase, ReplicatedDatabaseBuilder,
};

fn enabled() -> bool {
    common::fault_tests_enabled("fault-injection tests")
}

fn load_time() -> Duration {
    let secs = std::env::var("SOR_FAULT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(secs)
}

/// The cluster's scripts block; run them off the async workers.
async fn fault<F: FnOnce(&FaultCluster) + Send + 'static>(c: &Arc<FaultCluster>, f: F) {
    let c = c.clone();
    tokio::task::spawn_blocking(move || f(&c))
        .await
        .expect("fault injection");
}

fn builder(c: &FaultCluster) -> ReplicatedDatabaseBuilder {
    c.builder()
}

/// One fault test at a time: a load test on a 2-core machine measures nothing useful while
/// three other clusters start and fail beside it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start(lag: &str) -> (Arc<FaultCluster>, ReplicatedDatabase) {
    let lag = lag.to_owned();
    let c = tokio::task::spawn_blocking(move || FaultCluster::start_pg(&lag))
        .await
        .expect("start")
        .unwrap_or_else(|e| panic!("fault cluster did not start: {e}"));
    let c = Arc::new(c);
    let db = builder(&c).connect().await.expect("connect");
    db.migrate::<Migrator>(MigrateOptions::new().wait_for_replicas(Duration::from_secs(30)))
        .await
        .expect("migrate");
    (c, db)
}

/// The port of the server that runs a statement in a read-only unit, as the server says.
async fn read_port(db: &ReplicatedDatabase) -> Result<i32, DbErr> {
    db.read_only(|u| {
        Box::pin(async move {
            let row = u
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    "SELECT inet_server_port() AS port",
                ))
                .await?
                .ok_or_else(|| DbErr::RecordNotFound("port".into()))?;
            row.try_get::<i32>("", "port")
        })
    })
    .await
    .map_err(|e| DbErr::Custom(e.to_string()))
}

/// Polls `cond` until it holds or `deadline` passes.
async fn eventually<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    while !cond().await {
        assert!(Instant::now() < until, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Latencies and failures of a read load.
#[derive(Default)]
struct Load {
    /// (start offset, latency) of every unit.
    samples: Mutex<Vec<(Duration, Duration)>>,
    failures: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Load {
    fn p99(&self, window: impl Fn(Duration) -> bool) -> (usize, Duration, Duration) {
        let mut v: Vec<Duration> = self
            .samples
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| window(*at))
            .map(|(_, lat)| *lat)
            .collect();
        v.sort();
        let pick = |p: f64| v.get(((v.len().max(1) - 1) as f64 * p) as usize).copied();
        (
            v.len(),
            pick(0.99).unwrap_or_default(),
            v.last().copied().unwrap_or_default(),
        )
    }
}

/// `tasks` tasks running read-only units (a small query) until `stop`.
fn read_load(
    db: &ReplicatedDatabase,
    tasks: usize,
    stop: &Arc<AtomicBool>,
    t0: Instant,
) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let db = db.clone();
    run_load(tasks, stop, t0, move || {
        let db = db.clone();
        async move {
            db.read_only(|u| Box::pin(async move { banner::Entity::find().limit(5).all(u).await }))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
}

/// `tasks` tasks running `op` until `stop`, each run timed and its failure recorded.
fn run_load<F, Fut>(
    tasks: usize,
    stop: &Arc<AtomicBool>,
    t0: Instant,
    op: F,
) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let load = Arc::new(Load::default());
    let handles = (0..tasks)
        .map(|_| {
            let (op, load, stop) = (op.clone(), load.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let at = t0.elapsed();
                    let started = Instant::now();
                    let result = op().await;
                    load.samples.lock().unwrap().push((at, started.elapsed()));
                    if let Err(e) = result {
                        load.failures.fetch_add(1, Ordering::Relaxed);
                        load.errors.lock().unwrap().push(e);
                    }
                }
            })
        })
        .collect();
    (load, handles)
}

/// Stops the load and waits for its tasks.
async fn finish(stop: &AtomicBool, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
}

/// No read-only unit of the load failed.
fn assert_no_failures(load: &Load) {
    let errors = load.errors.lock().unwrap();
    assert_eq!(
        load.failures.load(Ordering::Relaxed),
        0,
        "read-only units failed while another node was up: {:?}",
        errors.iter().take(3).collect::<Vec<_>>()
    );
}

/// Waits until the server on `port` answers a read-only unit again; how long that took.
async fn serves_reads_again(db: &ReplicatedDatabase, port: u16) -> Duration {
    let back = Instant::now();
    eventually(
        "the node serves reads again",
        Duration::from_secs(20),
        || async { read_port(db).await.ok() == Some(i32::from(port)) },
    )
    .await;
    back.elapsed()
}

async fn seed(db: &ReplicatedDatabase, n: usize) {
    for i in 0..n {
        banner::ActiveModel {
            name: Set(format!("seed {i}")),
            ..Default::default()
        }
        .insert(db)
        .await
        .expect("seed");
    }
    db.migrate::<Migrator>(MigrateOptions::new().wait_for_replicas(Duration::from_secs(30)))
        .await
        .expect("replicas caught up");
}

/// A fault test's setting: its own cluster, a handle, and the clock of the load.
struct Scenario {
    c: Arc<FaultCluster>,
    db: ReplicatedDatabase,
    run: Duration,
    t0: Instant,
    stop: Arc<AtomicBool>,
    /// Declared last, so it is released after the cluster is torn down.
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

/// Takes the fault-test lock, starts a cluster and seeds `rows`; `None` when fault tests are off.
async fn scenario(rows: usize) -> Option<Scenario> {
    if !enabled() {
        return None;
    }
    let serial = SERIAL.lock().await;
    let (c, db) = start("0").await;
    seed(&db, rows).await;
    Some(Scenario {
        c,
        db,
        run: load_time(),
        t0: Instant::now(),
        stop: Arc::new(AtomicBool::new(false)),
        _serial: serial,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_killed_under_read_load() {
    let Some(Scenario {
        _serial, // first bound, last dropped: after the cluster
        c,
        db,
        run,
        t0,
        stop,
    }) = scenario(20).await
    else {
        return;
    };
    let (load, tasks) = read_load(&db, 8, &stop, t0);

    tokio::time::sleep(run / 3).await; // let the load run before the fault: workload timing
    let killed_at = t0.elapsed();
    fault(&c, |c| c.kill("replica1")).await;
    tokio::time::sleep(run - run / 3).await;
    finish(&stop, tasks).await;

    let (n, p99, max) = load.p99(|_| true);
    let (n_fault, p99_fault, max_fault) =
        load.p99(|at| at >= killed_at && at < killed_at + Duration::from_secs(2));
    let (n_before, p99_before, _) = load.p99(|at| at < killed_at);
    eprintln!(
        "kill -9 replica1 under 8 readers for {run:?}: {n} read-only units, {} failed; p99 {p99:?} (max {max:?}); \
         before the kill p99 {p99_before:?} ({n_before} units); in the 2 s after it p99 {p99_fault:?}, max {max_fault:?} ({n_fault} units)",
        load.failures.load(Ordering::Relaxed)
    );
    assert_no_failures(&load);
    let status = db.status();
    eprintln!("{status}");
    assert!(!status.node("replica1").unwrap().up, "replica1 is down");
    let r2 = i32::from(c.port("replica2"));
    for _ in 0..10 {
        assert_eq!(
            read_port(&db).await.unwrap(),
            r2,
            "the server says replica2 serves reads"
        );
    }

    fault(&c, |c| c.restart("replica1")).await;
    let back = serves_reads_again(&db, c.port("replica1")).await;
    eprintln!("replica1 restarted: serving reads again after {back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_frozen_under_read_load() {
    let Some(Scenario {
        _serial, // first bound, last dropped: after the cluster
        c,
        db,
        run,
        t0,
        stop,
    }) = scenario(20).await
    else {
        return;
    };
    let (load, tasks) = read_load(&db, 8, &stop, t0);

    tokio::time::sleep(run / 3).await;
    let paused_at = t0.elapsed();
    fault(&c, |c| c.pause("replica1")).await;
    tokio::time::sleep(run / 3).await;
    let (n_paused, p99_paused, max_paused) = load.p99(|at| at >= paused_at);
    fault(&c, |c| c.resume("replica1")).await;
    tokio::time::sleep(run - 2 * (run / 3)).await;
    finish(&stop, tasks).await;

    // a unit on the frozen node waits at most the longer of the statement bound (timeout +
    // 250 ms grace) and the acquire timeout, then runs elsewhere; allow 1 s on top
    let limit = ACQUIRE_TIMEOUT.max(STATEMENT_TIMEOUT + Duration::from_millis(250))
        + Duration::from_secs(1);
    let (n, p99, max) = load.p99(|_| true);
    eprintln!(
        "SIGSTOP replica1 under 8 readers: {n} units, {} failed; p99 {p99:?}, max {max:?} (limit {limit:?}); \
         while frozen: {n_paused} units, p99 {p99_paused:?}, max {max_paused:?}",
        load.failures.load(Ordering::Relaxed)
    );
    assert_no_failures(&load);
    assert!(max < limit, "a unit waited {max:?}, beyond {limit:?}");

    let back = serves_reads_again(&db, c.port("replica1")).await;
    eprintln!("SIGCONT: replica1 serving reads again {back:?} after the check began");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promotion_moves_writes_and_loses_none() {
    let Some(Scenario {
        _serial,
        c,
        db,
        run,
        t0,
        stop,
    }) = scenario(5).await
    else {
        return;
    };
    let (reads, mut tasks) = read_load(&db, 4, &stop, t0);

    // writers: every acknowledged insert is remembered; a commit that fails is in doubt
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    // (when, fast NoPrimary refusal?, message)
    let failed_writes = Arc::new(Mutex::new(Vec::<(Duration, bool, String)>::new()));
    for w in 0..2 {
        let (db, stop, acked, failed) = (
            db.clone(),
            stop.clone(),
            acked.clone(),
            failed_writes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let name = format!("failover {w}-{i}");
                let unit = db.begin_read_write();
                let result = async {
                    banner::ActiveModel {
                        name: Set(name.clone()),
                        ..Default::default()
                    }
                    .insert(&unit)
                    .await?;
                    unit.commit().await
                }
                .await;
                match result {
                    Ok(()) => acked.lock().unwrap().push(name),
                    Err(e) => {
                        let message = e.to_string();
                        let refused =
                            matches!(ReplicaError::from_db_err(e), ReplicaError::NoPrimary { .. });
                        failed
                            .lock()
                            .unwrap()
                            .push((t0.elapsed(), refused, message));
                        tokio::time::sleep(Duration::from_millis(20)).await; // client back-off
                    }
                }
            }
        }));
    }

    tokio::time::sleep(run / 3).await;
    let fault_at = t0.elapsed();
    fault(&c, |c| {
        c.stop_node("primary");
        c.promote("replica1");
    })
    .await;
    let promoted_at = t0.elapsed();
    tokio::time::sleep(run - run / 3).await;
    finish(&stop, tasks).await;

    let failed = failed_writes.lock().unwrap().clone();
    let window = match (failed.first(), failed.last()) {
        (Some(first), Some(last)) => last.0.saturating_sub(first.0),
        _ => Duration::ZERO,
    };
    let acked = acked.lock().unwrap().clone();
    let typed = failed.iter().filter(|(_, refused, _)| *refused).count();
    let resumed = failed
        .last()
        .map_or(Duration::ZERO, |last| last.0.saturating_sub(promoted_at));
    eprintln!(
        "stop primary + promote replica1 (the script took {:?} for both) under 2 writers and 4 readers: writes failed for {window:?} \
         ({} failed writes, {typed} of them fast NoPrimary refusals), and went through again {resumed:?} after the promotion finished; \
         {} acknowledged; reads: {} units, {} failed",
        promoted_at - fault_at,
        failed.len(),
        acked.len(),
        reads.samples.lock().unwrap().len(),
        reads.failures.load(Ordering::Relaxed),
    );
    assert_no_failures(&reads);
    assert_eq!(
        db.primary().name(),
        "replica1",
        "read-write units follow the promotion"
    );

    // every acknowledged write is on the new primary, once; nothing more than the in-doubt
    let new_primary = db.primary();
    let present: Vec<String> = banner::Entity::find()
        .filter(banner::Column::Name.starts_with("failover "))
        .all(new_primary.connection())
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    let mut unique = present.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), present.len(), "no write applied twice");
    let missing: Vec<_> = acked.iter().filter(|n| !present.contains(n)).collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    // a write that failed other than by a fast refusal may or may not have committed
    let in_doubt = failed.iter().filter(|(_, refused, _)| !refused).count();
    assert!(
        present.len() <= acked.len() + in_doubt,
        "{} rows for {} acknowledged and {in_doubt} in-doubt writes",
        present.len(),
        acked.len()
    );
    eprintln!(
        "rows present: {}, acknowledged: {}",
        present.len(),
        acked.len()
    );

    // the server says where writes go now
    let r1 = i32::from(c.port("replica1"));
    let port = db
        .read_write(|u| {
            Box::pin(async move {
                let row = u
                    .query_one_raw(Statement::from_string(
                        DbBackend::Postgres,
                        "SELECT inet_server_port() AS port, pg_is_in_recovery() AS replica",
                    ))
                    .await?
                    .ok_or_else(|| DbErr::RecordNotFound("port".into()))?;
                assert!(!row.try_get::<bool>("", "replica")?);
                row.try_get::<i32>("", "port")
            })
        })
        .await
        .unwrap();
    assert_eq!(port, r1);

    // the old primary comes back, still thinking it is the primary: it must get nothing
    let checks = db.node("primary").unwrap().checks();
    fault(&c, |c| c.restart("primary")).await;
    eventually(
        "the monitor sees the old primary again",
        Duration::from_secs(20),
        || async { db.node("primary").unwrap().checks() > checks + 2 },
    )
    .await;
    let status = db.status();
    eprintln!("{status}");
    let old = status.node("primary").unwrap();
    assert!(old.fenced, "the returning old primary is fenced");
    assert_eq!(db.primary().name(), "replica1");
    for i in 0..20 {
        let unit = db.begin_read_write();
        banner::ActiveModel {
            name: Set(format!("after return {i}")),
            ..Default::default()
        }
        .insert(&unit)
        .await
        .unwrap();
        unit.commit().await.unwrap();
    }
    let on_old = banner::Entity::find()
        .filter(banner::Column::Name.starts_with("after return"))
        .count(db.node("primary").unwrap().connection())
        .await
        .unwrap();
    assert_eq!(on_old, 0, "no write reached the old primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_primary_fails_fast_and_reads_go_on() {
    let Some(Scenario { _serial, c, db, .. }) = scenario(3).await else {
        return;
    };
    fault(&c, |c| c.kill("primary")).await;
    // the first write finds the primary gone (or the monitor already has)
    eventually(
        "the primary is seen down",
        Duration::from_secs(10),
        || async {
            db.read_write(|u| {
                Box::pin(async move {
                    u.execute_unprepared("INSERT INTO banner (name) VALUES ('x')")
                        .await
                })
            })
            .await
            .is_err()
                && db.node("primary").unwrap().is_down()
        },
    )
    .await;
    let started = Instant::now();
    let err = db
        .read_write(|u| {
            Box::pin(async move {
                u.execute_unprepared("INSERT INTO banner (name) VALUES ('y')")
                    .await
            })
        })
        .await
        .unwrap_err();
    let took = started.elapsed();
    let (sea_orm::TransactionError::Connection(err) | sea_orm::TransactionError::Transaction(err)) =
        err;
    let typed = ReplicaError::from_db_err(err);
    eprintln!("read-write unit with the primary down: {typed} (after {took:?})");
    assert!(matches!(typed, ReplicaError::NoPrimary { .. }), "{typed:?}");
    assert!(typed.to_string().contains("primary"));
    assert!(
        took < Duration::from_millis(50),
        "fails fast, took {took:?}"
    );
    // read-only units keep working on the replicas
    let replicas = [i32::from(c.port("replica1")), i32::from(c.port("replica2"))];
    for _ in 0..10 {
        assert!(replicas.contains(&read_port(&db).await.unwrap()));
    }
}

/// Banners sharded by author: modulo of the author id, even authors on shard `a`, odd on `b`.
struct ShardedBanners;

impl ShardedRepository for ShardedBanners {
    type Entity = banner::Entity;
    fn shard_key() -> banner::Column {
        banner::Column::AuthorId
    }
}

fn authored(author: i32, name: String) -> banner::ActiveModel {
    banner::ActiveModel {
        name: Set(name),
        author_id: Set(Some(author)),
        ..Default::default()
    }
}

/// A sharded fault test's setting: two clusters of their own as shards `a` and `b`.
struct ShardScenario {
    a: Arc<FaultCluster>,
    b: Arc<FaultCluster>,
    shards: ShardedDatabase,
    run: Duration,
    t0: Instant,
    stop: Arc<AtomicBool>,
    /// Declared last, so it is released after the clusters are torn down.
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

/// Takes the fault-test lock, starts two clusters (at once) as shards `a` and `b`, migrates
/// both and seeds `per_shard` banners on each (authors 0 and 1); `None` when fault tests are off.
async fn shard_scenario(per_shard: usize) -> Option<ShardScenario> {
    if !enabled() {
        return None;
    }
    let serial = SERIAL.lock().await;
    let start = || tokio::task::spawn_blocking(|| FaultCluster::start_pg("0"));
    let (a, b) = tokio::join!(start(), start());
    let [a, b] = [a, b].map(|c| {
        Arc::new(
            c.expect("start")
                .unwrap_or_else(|e| panic!("fault cluster did not start: {e}")),
        )
    });
    let shards = ShardedDatabase::builder()
        .shard("a", builder(&a))
        .shard("b", builder(&b))
        .sharding(Modulo)
        .connect()
        .await
        .expect("connect");
    let caught_up = MigrateOptions::new().wait_for_replicas(Duration::from_secs(30));
    shards
        .migrate::<Migrator>(caught_up)
        .await
        .into_result()
        .expect("migrate");
    for id in 0..2 {
        let db = shards.shard(id).await.expect("the author's shard");
        db.read_write(|u| {
            Box::pin(async move {
                author::ActiveModel {
                    id: Set(id),
                    name: Set(format!("author {id}")),
                }
                .insert(u)
                .await
            })
        })
        .await
        .expect("author");
    }
    for i in 0..2 * per_shard {
        ShardedBanners::insert(&shards, authored((i % 2) as i32, format!("seed {i}")))
            .await
            .expect("seed");
    }
    shards
        .migrate::<Migrator>(caught_up)
        .await
        .into_result()
        .expect("replicas caught up");
    Some(ShardScenario {
        a,
        b,
        shards,
        run: load_time(),
        t0: Instant::now(),
        stop: Arc::new(AtomicBool::new(false)),
        _serial: serial,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shard_replica_killed_under_fan_out_load() {
    let Some(ShardScenario {
        _serial,
        a,
        b: _b,
        shards,
        run,
        t0,
        stop,
    }) = shard_scenario(10).await
    else {
        return;
    };
    // readers: a sorted, limited fan-out and a count over both shards, each complete
    let fan = shards.clone();
    let (load, tasks) = run_load(6, &stop, t0, move || {
        let shards = fan.clone();
        async move {
            let first = shards
                .fan_out(banner::Entity::find())
                .order_by_asc(banner::Column::Name)
                .limit(8)
                .all()
                .await
                .map_err(|e| e.to_string())?;
            let count = shards
                .fan_out(banner::Entity::find())
                .count()
                .await
                .map_err(|e| e.to_string())?;
            match (first.len(), count) {
                (8, 20) => Ok(()),
                (n, count) => Err(format!("{n} rows of 8, count {count} of 20")),
            }
        }
    });

    tokio::time::sleep(run / 3).await;
    let killed_at = t0.elapsed();
    fault(&a, |c| c.kill("replica1")).await;
    tokio::time::sleep(run - run / 3).await;
    finish(&stop, tasks).await;

    let (n, p99, max) = load.p99(|_| true);
    let (n_fault, p99_fault, max_fault) =
        load.p99(|at| at >= killed_at && at < killed_at + Duration::from_secs(2));
    eprintln!(
        "kill -9 shard a's replica1 under 6 fan-out readers for {run:?}: {n} fan-outs (sorted page + count), {} failed; \
         p99 {p99:?} (max {max:?}); in the 2 s after the kill p99 {p99_fault:?}, max {max_fault:?} ({n_fault})",
        load.failures.load(Ordering::Relaxed)
    );
    assert_no_failures(&load);
    let status = shards.status();
    eprintln!("{status}");
    let shard_a = status.shard("a").expect("shard a in the status");
    assert!(
        !shard_a.node("replica1").unwrap().up,
        "a's replica1 is down"
    );
    let on_a = shards.shard_named("a").unwrap();
    let r2 = i32::from(a.port("replica2"));
    for _ in 0..10 {
        assert_eq!(
            read_port(on_a).await.unwrap(),
            r2,
            "the server says a's replica2 serves a's reads"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_primary_down_fails_fast_naming_it_and_other_shards_write() {
    let Some(ShardScenario {
        _serial,
        a,
        b,
        shards,
        ..
    }) = shard_scenario(3).await
    else {
        return;
    };
    fault(&b, |c| c.kill("primary")).await;
    let on_b = shards.shard_named("b").unwrap();
    eventually(
        "shard b's primary is seen down",
        Duration::from_secs(10),
        || async {
            ShardedBanners::insert(&shards, authored(1, "probe".into()))
                .await
                .is_err()
                && on_b.node("primary").unwrap().is_down()
        },
    )
    .await;

    let started = Instant::now();
    let err = ShardedBanners::insert(&shards, authored(1, "refused".into()))
        .await
        .unwrap_err();
    let took = started.elapsed();
    eprintln!("a write to shard b with its primary down: {err} (after {took:?})");
    match &err {
        ReplicaError::Shard { shard, source } => {
            assert_eq!(shard, "b", "{err:?}");
            assert!(
                matches!(**source, ReplicaError::NoPrimary { .. }),
                "{err:?}"
            );
        }
        other => panic!("not a shard error: {other:?}"),
    }
    assert!(err.to_string().contains("shard `b`"), "{err}");
    // well under the acquire timeout: the monitor already knows, nothing is dialled
    assert!(took < ACQUIRE_TIMEOUT / 4, "fails fast, took {took:?}");

    // shard a keeps writing: on a's primary, as the server says
    for i in 0..10 {
        ShardedBanners::insert(&shards, authored(0, format!("after b died {i}")))
            .await
            .expect("shard a takes writes");
    }
    let on_a = shards.shard_named("a").unwrap();
    let written = banner::Entity::find()
        .filter(banner::Column::Name.starts_with("after b died"))
        .count(on_a.node("primary").unwrap().connection())
        .await
        .unwrap();
    assert_eq!(written, 10, "every write is on a's primary");
    let port = on_a
        .read_write(|u| {
            Box::pin(async move {
                u.query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    "SELECT inet_server_port() AS port",
                ))
                .await?
                .ok_or_else(|| DbErr::RecordNotFound("port".into()))?
                .try_get::<i32>("", "port")
            })
        })
        .await
        .unwrap();
    assert_eq!(port, i32::from(a.port("primary")));

    // shard b still serves reads from its replicas, and the fan-out still sees every row
    let replicas = [i32::from(b.port("replica1")), i32::from(b.port("replica2"))];
    for _ in 0..10 {
        assert!(replicas.contains(&read_port(on_b).await.unwrap()));
    }
    let count = shards
        .fan_out(banner::Entity::find().filter(banner::Column::Name.starts_with("seed ")))
        .count()
        .await
        .unwrap();
    assert_eq!(count, 6, "a's 3 seeds and b's 3, b's from its replica");
}

/// What replayed writers acknowledged, what failed (with when), and their tasks.
type Writers = (
    Arc<Mutex<Vec<String>>>,
    Arc<Mutex<Vec<(Duration, String)>>>,
    Vec<tokio::task::JoinHandle<()>>,
);

/// The writers of a replay test: each inserts banners named `"{prefix} {w}-{i}"` through
/// `read_write_replayed` until `stop`; what was acknowledged, and what failed (with when).
fn replayed_writers(
    db: &ReplicatedDatabase,
    writers: usize,
    prefix: &'static str,
    stop: &Arc<AtomicBool>,
    t0: Instant,
) -> Writers {
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let failed = Arc::new(Mutex::new(Vec::<(Duration, String)>::new()));
    let tasks = (0..writers)
        .map(|w| {
            let (db, stop, acked, failed) =
                (db.clone(), stop.clone(), acked.clone(), failed.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let name = format!("{prefix} {w}-{i}");
                    let result = db
                        .read_write_replayed(|unit| {
                            let name = name.clone();
                            Box::pin(async move {
                                banner::ActiveModel {
                                    name: Set(name),
                                    ..Default::default()
                                }
                                .insert(unit)
                                .await
                            })
                        })
                        .await;
                    match result {
                        Ok(saved) => acked.lock().unwrap().push(saved.name),
                        Err(e) => failed.lock().unwrap().push((t0.elapsed(), e.to_string())),
                    }
                }
            })
        })
        .collect();
    (acked, failed, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replayed_writes_ride_over_a_promotion() {
    let Some(Scenario {
        _serial,
        c,
        db,
        run,
        t0,
        stop,
    }) = scenario(5).await
    else {
        return;
    };
    let (reads, mut tasks) = read_load(&db, 4, &stop, t0);
    let (acked, failed, writers) = replayed_writers(&db, 2, "replayed", &stop, t0);
    tasks.extend(writers);

    tokio::time::sleep(run / 3).await;
    fault(&c, |c| {
        c.stop_node("primary");
        c.promote("replica1");
    })
    .await;
    tokio::time::sleep(run - run / 3).await;
    finish(&stop, tasks).await;

    let failed = failed.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    let stats = db.stats();
    eprintln!(
        "stop primary + promote replica1 under 2 replayed writers and 4 readers: {} writes acknowledged, {} failed; \
         reads: {} units, {} failed; {stats:?}",
        acked.len(),
        failed.len(),
        reads.samples.lock().unwrap().len(),
        reads.failures.load(Ordering::Relaxed),
    );
    assert!(
        failed.is_empty(),
        "replayed read-write units failed within the budget: {:?}",
        failed.iter().take(3).collect::<Vec<_>>()
    );
    assert_no_failures(&reads);
    assert_eq!(db.primary().name(), "replica1");

    // on the new primary, as the server says: every acknowledged write, once; nothing else
    let present: Vec<String> = banner::Entity::find()
        .filter(banner::Column::Name.starts_with("replayed "))
        .all(db.primary().connection())
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    let mut unique = present.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), present.len(), "no write applied twice");
    let mut want = acked.clone();
    want.sort();
    assert_eq!(
        unique, want,
        "the rows present are exactly the acknowledged writes"
    );
}

/// A table whose `COMMIT` takes 3 s on the server for rows noted `slow` (a deferred
/// constraint trigger sleeps; the unit lifts the server's statement timeout), so a test can
/// freeze the primary while the answer is in flight, however slow the machine is to do it.
async fn slow_commit_table(db: &ReplicatedDatabase) {
    let primary = db.primary();
    for sql in [
        "CREATE TABLE replay_probe (id serial PRIMARY KEY, run int NOT NULL, note text NOT NULL)",
        "CREATE FUNCTION replay_probe_slow() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$",
        "CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON replay_probe DEFERRABLE INITIALLY DEFERRED \
         FOR EACH ROW WHEN (NEW.note = 'slow') EXECUTE FUNCTION replay_probe_slow()",
    ] {
        primary.connection().execute_unprepared(sql).await.unwrap();
    }
    // the replicas have it too (a migration run waits for them)
    db.migrate::<Migrator>(MigrateOptions::new().wait_for_replicas(Duration::from_secs(30)))
        .await
        .expect("replicas caught up");
}

/// Runs a replayed unit whose first run's `COMMIT` is slow; `on_commit` (the fault) runs
/// while that `COMMIT` is on the server. Returns the run whose value came back.
async fn replay_with_commit_in_flight<F>(
    c: &Arc<FaultCluster>,
    db: &ReplicatedDatabase,
    fault_now: F,
) -> u32
where
    F: FnOnce(&FaultCluster) + Send + 'static,
{
    let runs = Arc::new(AtomicU64::new(0));
    let committing = Arc::new(tokio::sync::Notify::new());
    let call = {
        let (db, runs, committing) = (db.clone(), runs.clone(), committing.clone());
        tokio::spawn(async move {
            db.read_write_replayed(|unit| {
                let (runs, committing) = (runs.clone(), committing.clone());
                Box::pin(async move {
                    let run = runs.fetch_add(1, Ordering::SeqCst) as u32 + 1;
                    let note = if run == 1 { "slow" } else { "fast" };
                    // no server-side bound on this COMMIT: a frozen server resumed later
                    // finishes it instead of cancelling it
                    unit.execute_unprepared("SET LOCAL statement_timeout = 0")
                        .await?;
                    unit.execute_unprepared(&format!(
                        "INSERT INTO replay_probe (run, note) VALUES ({run}, '{note}')"
                    ))
                    .await?;
                    if run == 1 {
                        committing.notify_one();
                    }
                    Ok::<u32, DbErr>(run)
                })
            })
            .await
        })
    };
    committing.notified().await;
    tokio::time::sleep(Duration::from_millis(100)).await; // the COMMIT is on the server now
    fault(c, fault_now).await;
    let value = call.await.unwrap().expect("the replayed unit commits once");
    eprintln!(
        "the closure ran {} times; the value of run {value} came back",
        runs.load(Ordering::SeqCst)
    );
    value
}

/// The rows of `replay_probe` on the current primary (run numbers), and the run `sor_applied`
/// holds for any identity, as the server says.
async fn probe_rows(db: &ReplicatedDatabase) -> (Vec<i32>, Vec<i32>) {
    let conn = db.primary().connection().clone();
    let runs = |sql: &'static str| {
        let conn = conn.clone();
        async move {
            conn.query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.try_get_by_index::<i32>(0).unwrap())
                .collect::<Vec<_>>()
        }
    };
    (
        runs("SELECT run FROM replay_probe ORDER BY id").await,
        runs("SELECT attempt FROM sor_applied").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_commit_answer_on_a_dead_primary_runs_again_on_the_new_one() {
    let Some(Scenario { _serial, c, db, .. }) = scenario(0).await else {
        return;
    };
    slow_commit_table(&db).await;
    // freeze the primary mid-COMMIT; it never answers: kill it, promote replica1
    let value = replay_with_commit_in_flight(&c, &db, |c| {
        c.pause("primary");
        std::thread::sleep(Duration::from_millis(1500)); // the client's bound passes
        c.kill("primary");
        c.promote("replica1");
    })
    .await;
    assert_eq!(value, 2, "run 1 never committed: run 2's value");
    assert_eq!(db.primary().name(), "replica1");
    let (rows, recorded) = probe_rows(&db).await;
    assert_eq!(rows, vec![2], "one row, run 2's, on the new primary");
    assert_eq!(recorded, vec![2], "sor_applied says run 2 committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_commit_answer_that_committed_returns_the_first_run() {
    let Some(Scenario { _serial, c, db, .. }) = scenario(0).await else {
        return;
    };
    slow_commit_table(&db).await;
    // freeze the primary mid-COMMIT past the client's bound, then let it finish the COMMIT
    let value = replay_with_commit_in_flight(&c, &db, |c| {
        c.pause("primary");
        std::thread::sleep(Duration::from_millis(1500));
        c.resume("primary");
    })
    .await;
    assert_eq!(value, 1, "run 1 committed: its value, not a second run's");
    assert_eq!(db.primary().name(), "primary");
    let (rows, recorded) = probe_rows(&db).await;
    assert_eq!(rows, vec![1], "one row, run 1's");
    assert_eq!(recorded, vec![1]);
}
