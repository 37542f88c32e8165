//! The write-behind queue on a real broker and a real database: a private Redis per test
//! (`PrivateRedis`: its own port and directory, AOF with `appendfsync always`) and the shared
//! PostgreSQL cluster. Every command writes one row into `queue_probe` (no unique key, so a
//! second application would show as a second row); the server is asked what it holds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::redis::PrivateRedis;
use common::{cluster, served_by};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use sea_orm_replica::queue::{Command, Queue, RedisBroker, Ticket};
use sea_orm_replica::{MigrateOptions, ReplicaError, ReplicatedDatabase, UnitOptions};
use serde::{Deserialize, Serialize};

/// One row per application: `(run, cmd, key, seq)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Write {
    run: String,
    key: String,
    seq: u32,
    /// A poison command fails while `POISON` is set.
    poison: bool,
    /// A slow command sleeps 20 ms in its transaction (to kill a worker mid-batch).
    #[serde(default)]
    slow: bool,
}

impl Command for Write {
    const NAME: &'static str = "write";
    fn key(&self) -> Option<String> {
        Some(self.key.clone())
    }
}

static POISON: AtomicBool = AtomicBool::new(true);

fn queue(broker: RedisBroker) -> Queue {
    Queue::builder("probe")
        .broker(broker)
        .partitions(4)
        .max_attempts(3)
        .handle(|w: Write, unit| {
            Box::pin(async move {
                if w.poison
                    && (POISON.load(Ordering::Relaxed) || w.key.starts_with("always-poison"))
                {
                    return Err(DbErr::Custom(format!("poison {}", w.seq)));
                }
                if w.slow {
                    unit.execute_unprepared("SELECT pg_sleep(0.02)").await?;
                }
                unit.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "INSERT INTO queue_probe (run, key, seq) VALUES ($1, $2, $3)",
                    [w.run.into(), w.key.into(), i64::from(w.seq).into()],
                ))
                .await
                .map(drop)
            })
        })
        .build()
        .expect("queue")
}

struct Setup {
    redis: PrivateRedis,
    db: ReplicatedDatabase,
    queue: Queue,
    run: String,
}

async fn setup(max_pending: Option<u64>) -> Option<Setup> {
    let c = cluster(DbBackend::Postgres)?;
    Some(setup_on(c.handle().await, max_pending).await)
}

/// `queue_probe` and the example migrations (with `sor_applied`) on `db`, a private Redis,
/// and the queue.
async fn setup_on(db: ReplicatedDatabase, max_pending: Option<u64>) -> Setup {
    // once per cluster and process: PostgreSQL's CREATE TABLE IF NOT EXISTS is not safe
    // against itself run at once from parallel tests (a unique violation in pg_type)
    static CREATED: tokio::sync::Mutex<BTreeSet<String>> =
        tokio::sync::Mutex::const_new(BTreeSet::new());
    let mut created = CREATED.lock().await;
    if !created.contains(db.primary().url()) {
        db.primary()
            .connection()
            .execute_unprepared(
                "CREATE TABLE IF NOT EXISTS queue_probe (row_id bigserial PRIMARY KEY, run text NOT NULL, \
                 key text NOT NULL, seq bigint NOT NULL)",
            )
            .await
            .expect("queue_probe");
        created.insert(db.primary().url().to_owned());
    }
    // migrations too, one test at a time (their bookkeeping table has the same race)
    db.migrate::<migration::Migrator>(
        MigrateOptions::new().wait_for_replicas(Duration::from_secs(30)),
    )
    .await
    .expect("migrated, replicas caught up");
    drop(created);
    let redis = tokio::task::spawn_blocking(PrivateRedis::start)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("private redis: {e}"));
    let broker = RedisBroker::connect(redis.url(), "probe")
        .await
        .expect("broker");
    let queue = match max_pending {
        None => queue(broker),
        Some(max) => Queue::builder("probe")
            .broker(broker)
            .max_pending(max)
            .handle(|_: Write, _unit| Box::pin(async { Ok(()) }))
            .build()
            .unwrap(),
    };
    Setup {
        redis,
        db,
        queue,
        run: uuid::Uuid::new_v4().to_string(),
    }
}

/// `(key, seq)` of every row of `run` in insertion order, as the primary holds them.
async fn rows(db: &ReplicatedDatabase, run: &str) -> Vec<(String, i64)> {
    db.primary()
        .connection()
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT key, seq FROM queue_probe WHERE run = $1 ORDER BY row_id",
            [run.into()],
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.try_get("", "key").unwrap(), r.try_get("", "seq").unwrap()))
        .collect()
}

/// Every key's rows are in `seq` order and each `(key, seq)` is there once.
fn assert_once_in_order(rows: &[(String, i64)], want: usize) {
    let mut by_key: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (key, seq) in rows {
        by_key.entry(key).or_default().push(*seq);
    }
    let unique: BTreeSet<_> = rows.iter().collect();
    assert_eq!(unique.len(), rows.len(), "a command applied twice");
    assert_eq!(rows.len(), want, "every command applied");
    for (key, seqs) in by_key {
        let mut sorted = seqs.clone();
        sorted.sort();
        assert_eq!(seqs, sorted, "key {key} applied out of order");
    }
}

async fn wait_all(queue: &Queue, tickets: &[Ticket]) {
    for t in tickets {
        queue
            .wait(t, Duration::from_secs(60))
            .await
            .expect("wait")
            .unwrap_or_else(|| panic!("{t} not applied within 60 s"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_apply_once_in_order_per_key_across_two_workers() {
    let Some(s) = setup(None).await else { return };
    let writes: Vec<Write> = (0..200)
        .map(|i| Write {
            run: s.run.clone(),
            key: format!("k{}", i % 10),
            seq: i,
            poison: false,
            slow: false,
        })
        .collect();
    // enqueued before any worker runs, then two workers share the partitions
    let mut tickets = Vec::new();
    for w in &writes[..100] {
        tickets.push(s.queue.enqueue(w).await.expect("enqueue"));
    }
    let a = s.queue.worker(s.db.clone()).spawn();
    let b = s.queue.worker(s.db.clone()).spawn();
    for w in &writes[100..] {
        tickets.push(s.queue.enqueue(w).await.expect("enqueue"));
    }
    wait_all(&s.queue, &tickets).await;
    let (a, b) = (a.stop().await, b.stop().await);
    eprintln!("worker a: {a:?}\nworker b: {b:?}");
    assert_eq!(a.applied + b.applied, 200);
    assert_once_in_order(&rows(&s.db, &s.run).await, 200);
    let status = s.queue.status().await.unwrap();
    eprintln!("{status}");
    assert_eq!(status.pending, 0);
    assert_eq!(status.oldest_pending_ms, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_gives_a_token_that_reads_the_write_on_a_replica() {
    let Some(s) = setup(None).await else { return };
    let worker = s.queue.worker(s.db.clone()).spawn();
    let key = format!("token-{}", s.run);
    let ticket = s
        .queue
        .enqueue(&Write {
            run: s.run.clone(),
            key: key.clone(),
            seq: 1,
            poison: false,
            slow: false,
        })
        .await
        .unwrap();
    let token = s
        .queue
        .wait(&ticket, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("applied");
    assert!(!token.is_empty(), "the commit's position: {token}");
    // the next read-only unit after the token sees the write, on a replica
    let unit =
        s.db.begin_unit::<sea_orm_replica::ReadOnly>(UnitOptions::new().after(&token));
    let found = unit
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM queue_probe WHERE run = $1",
            [s.run.clone().into()],
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    let served = served_by(&unit).await.unwrap();
    unit.commit().await.unwrap();
    assert_eq!(found, 1);
    assert!(served.replica, "read on a replica, as the server says");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_commands_are_dead_lettered_and_the_key_goes_on() {
    let Some(s) = setup(None).await else { return };
    POISON.store(true, Ordering::Relaxed);
    let worker = s
        .queue
        .worker(s.db.clone())
        .retry_delay(Duration::from_millis(10))
        .spawn();
    let w = |seq, poison| Write {
        run: s.run.clone(),
        key: "same".into(),
        seq,
        poison,
        slow: false,
    };
    let first = s.queue.enqueue(&w(1, false)).await.unwrap();
    let bad = s.queue.enqueue(&w(2, true)).await.unwrap();
    let after = s.queue.enqueue(&w(3, false)).await.unwrap();
    s.queue
        .wait(&first, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let err = s
        .queue
        .wait(&bad, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ReplicaError::DeadLettered { id, error } if *id == bad.id() && error.contains("poison 2")),
        "{err:?}"
    );
    s.queue
        .wait(&after, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rows(&s.db, &s.run).await,
        vec![("same".into(), 1), ("same".into(), 3)]
    );

    let dead = s.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id, dead[0].attempts), (bad.id(), 3));
    assert_eq!(s.queue.status().await.unwrap().dead_letters, 1);
    // fixed: retried, applied once
    POISON.store(false, Ordering::Relaxed);
    let again = s
        .queue
        .retry_dead_letter(&dead[0].entry)
        .await
        .unwrap()
        .expect("the dead letter");
    assert_eq!(again, bad, "the same identity");
    s.queue
        .wait(&again, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the retried command was applied");
    assert_eq!(rows(&s.db, &s.run).await.len(), 3);
    assert!(s.queue.dead_letters(10).await.unwrap().is_empty());
    // hostile entry ids are refused before they reach Redis
    for entry in ["", "-", "0", "1-2-3", "abc-1", "1-1 OR 1", &"9".repeat(40)] {
        assert!(matches!(
            s.queue.drop_dead_letter(entry).await,
            Err(ReplicaError::Config(_))
        ));
    }
    assert_eq!(s.queue.drop_dead_letter("1-1").await.unwrap(), None);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_commit_together_and_a_poison_falls_back_one_by_one() {
    let Some(s) = setup(None).await else { return };
    let writes: Vec<Write> = (0..40)
        .map(|seq| Write {
            run: s.run.clone(),
            key: "always-poison-k".into(),
            seq,
            poison: seq == 17,
            slow: false,
        })
        .collect();
    let mut tickets = Vec::new();
    for w in &writes {
        tickets.push(s.queue.enqueue(w).await.unwrap());
    }
    let worker = s
        .queue
        .worker(s.db.clone())
        .apply_batch(8)
        .retry_delay(Duration::from_millis(10))
        .spawn();
    for (i, t) in tickets.iter().enumerate() {
        let outcome = s.queue.wait(t, Duration::from_secs(30)).await;
        match i {
            17 => assert!(
                matches!(outcome, Err(ReplicaError::DeadLettered { .. })),
                "{outcome:?}"
            ),
            _ => assert!(matches!(outcome, Ok(Some(_))), "{i}: {outcome:?}"),
        }
    }
    let stats = worker.stop().await;
    eprintln!("batches of 8 with a poison at 17: {stats:?}");
    let present = rows(&s.db, &s.run).await;
    let want: Vec<(String, i64)> = (0..40)
        .filter(|&seq| seq != 17)
        .map(|seq| ("always-poison-k".to_owned(), seq))
        .collect();
    assert_eq!(present, want, "every other command once, in order");
    assert_eq!(stats.applied, 39);
    assert_eq!(stats.dead_lettered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_enqueue_retried_under_its_id_is_applied_once() {
    let Some(s) = setup(None).await else { return };
    let mut tickets = Vec::new();
    for step in 0..30u32 {
        let id = uuid::Uuid::now_v7();
        let w = Write {
            run: s.run.clone(),
            key: format!("drop-{step}"),
            seq: step,
            poison: false,
            slow: false,
        };
        // dropped before, while or after Redis stores it; then enqueued again, same id
        let cut = Duration::from_micros(u64::from(step) * 40);
        let _ = tokio::time::timeout(cut, s.queue.enqueue_as(id, &w)).await;
        tickets.push(s.queue.enqueue_as(id, &w).await.expect("enqueue"));
    }
    let worker = s.queue.worker(s.db.clone()).spawn();
    wait_all(&s.queue, &tickets).await;
    let stats = worker.stop().await;
    eprintln!("30 enqueues dropped at 0..1.2 ms and retried: {stats:?}");
    assert_once_in_order(&rows(&s.db, &s.run).await, 30);
    assert_eq!(stats.applied, 30, "a command stored twice is applied once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_typed_and_stores_nothing() {
    let Some(s) = setup(Some(3)).await else {
        return;
    };
    let w = |seq| Write {
        run: s.run.clone(),
        key: format!("k{seq}"),
        seq,
        poison: false,
        slow: false,
    };
    for seq in 0..3 {
        s.queue.enqueue(&w(seq)).await.unwrap();
    }
    let err = s.queue.enqueue(&w(3)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ReplicaError::QueueFull {
                pending: 3,
                max: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(s.queue.status().await.unwrap().pending, 3);
    // a command with no handler, and a ticket that is not a uuid
    #[derive(Clone, Serialize, Deserialize)]
    struct Unknown;
    impl Command for Unknown {
        const NAME: &'static str = "unknown";
    }
    assert!(matches!(
        s.queue.enqueue(&Unknown).await,
        Err(ReplicaError::Config(_))
    ));
    assert!("not-a-ticket".parse::<Ticket>().is_err());
    // queue names that would reach outside the queue's hash tag, or are not names at all
    for name in ["", "a}:x", "a b", "{x}", &"n".repeat(65), "a\nb", "sor:*"] {
        assert!(
            matches!(
                RedisBroker::connect(s.redis.url(), name).await,
                Err(ReplicaError::Config(_))
            ),
            "{name:?}"
        );
    }
    // a URL that is not one, and a command larger than MAX_PAYLOAD
    assert!(matches!(
        RedisBroker::connect("redis://[::1", "probe").await,
        Err(ReplicaError::Config(_))
    ));
    let huge = Write {
        run: "x".repeat(sea_orm_replica::queue::MAX_PAYLOAD),
        key: "k".into(),
        seq: 0,
        poison: false,
        slow: false,
    };
    let open = Queue::builder("probe")
        .broker(RedisBroker::connect(s.redis.url(), "probe").await.unwrap())
        .handle(|_: Write, _unit| Box::pin(async { Ok(()) }))
        .build()
        .unwrap();
    assert!(matches!(
        open.enqueue(&huge).await,
        Err(ReplicaError::Config(_))
    ));
    assert_eq!(
        s.queue.status().await.unwrap().pending,
        3,
        "nothing more stored"
    );
    drop(s.redis);
}

/// Fault tests run when `SOR_FAULT_TESTS`, `SOR_REQUIRE_CLUSTER` or `CI` is set.
fn faults_enabled() -> bool {
    common::fault_tests_enabled("queue fault test")
}

/// What an enqueuer got: acknowledged tickets with their writes, and failed writes.
type Enqueued = (Vec<(Ticket, Write)>, Vec<Write>);

/// Enqueues `(key, seq)` writes from `tasks` tasks until `stop`: the acknowledged tickets,
/// and the writes whose enqueue failed (stored or not: unknown).
fn enqueue_load(
    queue: &Queue,
    run: &str,
    tasks: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Enqueued>> {
    (0..tasks)
        .map(|t| {
            let (queue, run, stop) = (queue.clone(), run.to_owned(), stop.clone());
            tokio::spawn(async move {
                let (mut acked, mut failed) = (Vec::new(), Vec::new());
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let w = Write {
                        run: run.clone(),
                        key: format!("t{t}-k{}", seq % 3),
                        seq,
                        poison: false,
                        slow: false,
                    };
                    match queue.enqueue(&w).await {
                        Ok(ticket) => acked.push((ticket, w)),
                        Err(ReplicaError::Broker(_)) => {
                            failed.push(w);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("enqueue: {e}"),
                    }
                }
                (acked, failed)
            })
        })
        .collect()
}

/// Every acknowledged write is present once; nothing is present that was not enqueued
/// (acknowledged, or failed with its outcome unknown); every key in order.
async fn assert_acknowledged_applied_once(s: &Setup, acked: &[(Ticket, Write)], failed: &[Write]) {
    wait_all(&s.queue, &acked.iter().map(|(t, _)| *t).collect::<Vec<_>>()).await;
    let present = rows(&s.db, &s.run).await;
    let as_row = |w: &Write| (w.key.clone(), i64::from(w.seq));
    let acked_rows: BTreeSet<_> = acked.iter().map(|(_, w)| as_row(w)).collect();
    let maybe: BTreeSet<_> = failed.iter().map(as_row).collect();
    let unique: BTreeSet<_> = present.iter().cloned().collect();
    assert_eq!(unique.len(), present.len(), "a command applied twice");
    assert!(
        acked_rows.is_subset(&unique),
        "an acknowledged enqueue was lost"
    );
    assert!(
        unique
            .iter()
            .all(|r| acked_rows.contains(r) || maybe.contains(r)),
        "a row nobody enqueued"
    );
    let mut by_key: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (key, seq) in &present {
        by_key.entry(key).or_default().push(*seq);
    }
    for (key, seqs) in by_key {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "key {key} out of order: {seqs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_and_restarted_from_its_aof_loses_no_acknowledged_command() {
    if !faults_enabled() {
        return;
    }
    let Some(s) = setup(None).await else { return };
    let worker = s.queue.worker(s.db.clone()).spawn();
    let stop = Arc::new(AtomicBool::new(false));
    let load = enqueue_load(&s.queue, &s.run, 2, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let redis = Arc::new(s.redis);
    let r = redis.clone();
    tokio::task::spawn_blocking(move || {
        r.kill();
        std::thread::sleep(Duration::from_millis(700));
        r.restart();
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut failed) = (Vec::new(), Vec::new());
    for task in load {
        let (a, f) = task.await.unwrap();
        acked.extend(a);
        failed.extend(f);
    }
    let s = Setup {
        redis: Arc::try_unwrap(redis).unwrap_or_else(|_| panic!("redis still shared")),
        ..s
    };
    assert_acknowledged_applied_once(&s, &acked, &failed).await;
    let stats = worker.stop().await;
    eprintln!(
        "kill -9 Redis under 2 enqueuers, restarted from its AOF 0.7 s later: {} enqueues acknowledged, {} failed \
         (outcome unknown); all acknowledged applied once; worker {stats:?}",
        acked.len(),
        failed.len()
    );
    assert!(!failed.is_empty(), "the kill was felt by the enqueuers");
    assert_eq!(s.queue.status().await.unwrap().pending, 0);
}

/// Commands in the take-over tests.
const TAKE_OVER: u32 = 150;

/// `n` slow writes (20 ms in their transaction) over 5 keys, enqueued: their tickets.
async fn enqueue_slow(s: &Setup, n: u32) -> Vec<Ticket> {
    let mut tickets = Vec::new();
    for i in 0..n {
        let w = Write {
            run: s.run.clone(),
            key: format!("k{}", i % 5),
            seq: i,
            poison: false,
            slow: true,
        };
        tickets.push(s.queue.enqueue(&w).await.unwrap());
    }
    tickets
}

/// Waits (60 s at most) until `at_least` commands of the run are applied.
async fn until_applied(s: &Setup, at_least: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while rows(&s.db, &s.run).await.len() < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first worker applied too little"
        );
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
}

/// Another worker takes the partitions once the first one's leases (1 s) lapse and finishes:
/// every command once, in order per key.
async fn take_over(s: &Setup, tickets: &[Ticket], first: &str) {
    let by_first = rows(&s.db, &s.run).await.len();
    let worker = s.queue.worker(s.db.clone()).spawn();
    wait_all(&s.queue, tickets).await;
    let stats = worker.stop().await;
    eprintln!("{first} applied {by_first}; the next worker: {stats:?}");
    assert_once_in_order(&rows(&s.db, &s.run).await, TAKE_OVER as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_batch_is_taken_over_and_nothing_applies_twice() {
    use std::io::{BufRead, BufReader};
    if !faults_enabled() {
        return;
    }
    let Some(s) = setup(None).await else { return };
    let tickets = enqueue_slow(&s, TAKE_OVER).await;
    // a worker in another process, killed with SIGKILL once it has applied some
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "queue_worker_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SOR_QUEUE_CHILD_REDIS", s.redis.url())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the child worker");
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("child: {line}");
        }
    });
    until_applied(&s, 40).await;
    child.kill().unwrap(); // SIGKILL, mid-batch
    child.wait().unwrap();
    take_over(&s, &tickets, "the child, killed with SIGKILL,").await;
}

/// A worker's futures dropped wherever they are (its runtime shut down mid-apply: in a
/// statement, in COMMIT, in the acknowledgement), its handle with them; the next worker takes
/// the partitions once the leases lapse: every command applied once, in order per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_dropped_mid_apply_is_taken_over_and_nothing_applies_twice() {
    let Some(s) = setup(None).await else { return };
    let Some(c) = cluster(DbBackend::Postgres) else {
        return;
    };
    let tickets = enqueue_slow(&s, TAKE_OVER).await;
    let url = s.redis.url().to_owned();
    let (drop_now, dropped) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let worker = rt.block_on(async {
            let db = c.handle().await;
            let q = queue(RedisBroker::connect(&url, "probe").await.unwrap());
            q.worker(db).lease(Duration::from_secs(1)).spawn()
        });
        let _ = dropped.recv();
        // every task's future dropped at the await it is in; then the handle
        rt.shutdown_background();
        drop(worker);
    });
    until_applied(&s, 40).await;
    drop_now.send(()).unwrap();
    tokio::task::spawn_blocking(move || other.join().unwrap())
        .await
        .unwrap();
    take_over(&s, &tickets, "the dropped worker").await;
}

#[tokio::test]
#[ignore = "the child process of a_worker_killed_mid_batch_is_taken_over_and_nothing_applies_twice"]
async fn queue_worker_child() {
    let Ok(url) = std::env::var("SOR_QUEUE_CHILD_REDIS") else {
        return;
    };
    let Some(c) = cluster(DbBackend::Postgres) else {
        return;
    };
    let db = c.handle().await;
    let q = queue(RedisBroker::connect(&url, "probe").await.unwrap());
    let _worker = q.worker(db).lease(Duration::from_secs(1)).spawn();
    println!("WORKING");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// A fault on the database under enqueue load, on a cluster of its own: nothing acknowledged
/// is lost, nothing applied twice.
async fn database_fault_under_enqueue_load<F>(fault: F, what: &str, primary_after: &str)
where
    F: FnOnce(&common::fault_cluster::FaultCluster) + Send + 'static,
{
    if !faults_enabled() {
        return;
    }
    let c = tokio::task::spawn_blocking(|| common::fault_cluster::FaultCluster::start_pg("0"))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("fault cluster: {e}"));
    let c = Arc::new(c);
    let db = c.builder().connect().await.expect("connect");
    let s = setup_on(db, None).await;
    let worker = s.queue.worker(s.db.clone()).spawn();
    let stop = Arc::new(AtomicBool::new(false));
    let load = enqueue_load(&s.queue, &s.run, 2, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at = std::time::Instant::now();
    let cc = c.clone();
    tokio::task::spawn_blocking(move || fault(&cc))
        .await
        .unwrap();
    let fault_took = at.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut failed) = (Vec::new(), Vec::new());
    for task in load {
        let (a, f) = task.await.unwrap();
        acked.extend(a);
        failed.extend(f);
    }
    assert!(failed.is_empty(), "enqueue does not need the database");
    assert_acknowledged_applied_once(&s, &acked, &failed).await;
    let stats = worker.stop().await;
    eprintln!(
        "{what} (took {fault_took:?}) under 2 enqueuers: {} enqueues acknowledged, 0 failed; all applied once on {}, \
         in per-key order; worker {stats:?}",
        acked.len(),
        s.db.primary().name()
    );
    // the fault happened where we think: the server that took the writes
    assert_eq!(s.db.primary().name(), primary_after);
    let on_new: i64 =
        s.db.primary()
            .connection()
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT (NOT pg_is_in_recovery())::int4::int8 AS p",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "p")
            .unwrap();
    assert_eq!(on_new, 1, "the rows were read from a primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_commands_ride_over_a_primary_promotion() {
    let _one = FAULTS.lock().await;
    database_fault_under_enqueue_load(
        |c| {
            c.stop_node("primary");
            c.promote("replica1");
        },
        "stop the primary, promote replica1",
        "replica1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_commands_wait_out_a_primary_frozen_past_the_statement_bound() {
    let _one = FAULTS.lock().await;
    database_fault_under_enqueue_load(
        |c| {
            c.pause("primary");
            std::thread::sleep(Duration::from_secs(3));
            c.resume("primary");
        },
        "SIGSTOP the primary for 3 s (statement bound 750 ms)",
        "primary",
    )
    .await;
}

/// The database fault tests start a cluster each: one at a time.
static FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A command of a sharded queue: applied on the primary of its customer's shard.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ShardedWrite {
    customer: i64,
    seq: u32,
}

impl Command for ShardedWrite {
    const NAME: &'static str = "sharded_write";
    fn key(&self) -> Option<String> {
        Some(self.customer.to_string())
    }
    fn shard_key(&self) -> Option<sea_orm_replica::shard::ShardKey> {
        Some(self.customer.into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_worker_applies_each_command_on_its_shard() {
    use sea_orm_replica::shard::{Modulo, ShardedDatabase};
    let files: Vec<common::TempFile> = (0..2)
        .map(|_| {
            common::TempFile(
                std::env::temp_dir().join(format!("sor-queue-{}.sqlite", uuid::Uuid::new_v4())),
            )
        })
        .collect();
    let url = |f: &common::TempFile| format!("sqlite://{}?mode=rwc", f.0.display());
    let shards = ShardedDatabase::builder()
        .shard("a", ReplicatedDatabase::builder().primary(url(&files[0])))
        .shard("b", ReplicatedDatabase::builder().primary(url(&files[1])))
        .sharding(Modulo)
        .connect()
        .await
        .unwrap();
    shards
        .migrate::<migration::Migrator>(MigrateOptions::new())
        .await
        .into_result()
        .unwrap();
    for (_, db) in shards.shards() {
        db.primary()
            .connection()
            .execute_unprepared("CREATE TABLE sharded_probe (customer INTEGER, seq INTEGER)")
            .await
            .unwrap();
    }
    let redis = tokio::task::spawn_blocking(PrivateRedis::start)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("private redis: {e}"));
    let queue = Queue::builder("sharded")
        .broker(RedisBroker::connect(redis.url(), "sharded").await.unwrap())
        .handle(|w: ShardedWrite, unit| {
            Box::pin(async move {
                unit.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    "INSERT INTO sharded_probe (customer, seq) VALUES (?, ?)",
                    [w.customer.into(), i64::from(w.seq).into()],
                ))
                .await
                .map(drop)
            })
        })
        .build()
        .unwrap();
    let mut tickets = Vec::new();
    for seq in 0..40 {
        let w = ShardedWrite {
            customer: i64::from(seq % 4),
            seq,
        };
        tickets.push(queue.enqueue(&w).await.unwrap());
    }
    let worker = queue.sharded_worker(shards.clone()).apply_batch(8).spawn();
    wait_all(&queue, &tickets).await;
    let stats = worker.stop().await;
    assert_eq!(stats.applied, 40, "{stats:?}");
    // each shard holds exactly its customers' rows, once each: even customers on a, odd on b
    for (i, (name, db)) in shards.shards().enumerate() {
        let rows: Vec<(i64, i64)> = db
            .primary()
            .connection()
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT customer, seq FROM sharded_probe ORDER BY rowid",
            ))
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.try_get("", "customer").unwrap(),
                    r.try_get("", "seq").unwrap(),
                )
            })
            .collect();
        assert_eq!(rows.len(), 20, "shard {name}");
        assert!(
            rows.iter().all(|(c, _)| c % 2 == i as i64),
            "shard {name}: {rows:?}"
        );
        for customer in [i as i64, i as i64 + 2] {
            let seqs: Vec<i64> = rows
                .iter()
                .filter(|(c, _)| *c == customer)
                .map(|r| r.1)
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "customer {customer} in order"
            );
        }
    }
}
