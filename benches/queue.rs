//! The write-behind queue against direct writes, side by side in one run.
//!
//! ```text
//! scripts/bench.sh queue     # starts the PostgreSQL cluster and the private Redis, runs this, stops them
//! cargo bench --bench queue --features queue-redis   # with SOR_PG_PRIMARY_URL, SOR_PG_REPLICA_URL, SOR_REDIS_URL
//! ```
//!
//! 1. **enqueue vs a direct write**: `queue.enqueue(cmd)` (a Lua script on Redis with
//!    `appendfsync always`: returns once the AOF is fsynced) against a read-write unit doing
//!    the command's write itself (one INSERT, commit); alternating one by one, p50 and p99.
//! 2. **apply throughput**: N commands enqueued first, then one worker applies them all
//!    (commands/s): reading 1 or 32 deliveries at a time, and applying 1 per transaction or 32
//!    (`apply_batch`, one identity row each); against N direct read-write units one after
//!    another, and 8 at once (writes/s).
//! 3. **end to end**: enqueue, then `wait(ticket)` (woken by Redis' push) against a polling
//!    loop (as `wait` was before pushes), alternating, until the worker has applied it, with
//!    the worker running; p50 and p99.
//!
//! Shared 2-core machine that also runs the servers: read ratios within one run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use sea_orm_replica::queue::{Command, Queue, RedisBroker};
use sea_orm_replica::{MigrateOptions, NodeConfig, ReplicatedDatabase};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct Probe {
    key: u32,
    n: u64,
}

impl Command for Probe {
    const NAME: &'static str = "probe";
    fn key(&self) -> Option<String> {
        Some(self.key.to_string())
    }
}

const INSERT: &str = "INSERT INTO queue_bench (key, n) VALUES ($1, $2)";

async fn write(conn: &impl ConnectionTrait, p: &Probe) -> Result<(), DbErr> {
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        INSERT,
        [i64::from(p.key).into(), (p.n as i64).into()],
    ))
    .await
    .map(drop)
}

fn queue(broker: RedisBroker) -> Queue {
    Queue::builder("bench")
        .broker(broker)
        .partitions(8)
        .max_pending(10_000_000)
        .handle(|p: Probe, unit| Box::pin(async move { write(unit, &p).await }))
        .build()
        .expect("queue")
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p) as usize]
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/bench.sh queue"))
}

async fn direct(db: &ReplicatedDatabase, p: &Probe) -> Result<(), DbErr> {
    let unit = db.begin_read_write();
    write(&unit, p).await?;
    unit.commit().await
}

/// Waits until the queue has nothing pending.
async fn drained(queue: &Queue) {
    while queue.status().await.expect("status").pending > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = ReplicatedDatabase::builder()
        .primary_node(NodeConfig::new(env("SOR_PG_PRIMARY_URL")).max_connections(8))
        .replica_node(NodeConfig::new(env("SOR_PG_REPLICA_URL")))
        .connect()
        .await?;
    db.migrate::<migration::Migrator>(MigrateOptions::new())
        .await?;
    db.primary()
        .connection()
        .execute_unprepared(
            "DROP TABLE IF EXISTS queue_bench; CREATE TABLE queue_bench (id bigserial PRIMARY KEY, key int8, n int8)",
        )
        .await?;
    let redis = env("SOR_REDIS_URL");
    let q = queue(RedisBroker::connect(&redis, "bench").await?);
    let n: usize = std::env::var("SOR_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    println!("PostgreSQL and Redis (appendfsync always) on loopback; {n} operations per side\n");

    // 1. enqueue vs direct write, alternating
    let (mut enq, mut dir) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let p = Probe {
            key: (i % 64) as u32,
            n: i as u64,
        };
        let first_enqueue = i % 2 == 0;
        for side in [first_enqueue, !first_enqueue] {
            let t = Instant::now();
            if side {
                black_box(q.enqueue(&p).await?);
                enq.push(t.elapsed().as_secs_f64() * 1e6);
            } else {
                direct(&db, &p).await?;
                dir.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    let (e50, e99, d50, d99) = (
        pct(&mut enq, 0.5),
        pct(&mut enq, 0.99),
        pct(&mut dir, 0.5),
        pct(&mut dir, 0.99),
    );
    println!("1. enqueue vs a read-write unit doing the write");
    println!("   enqueue  p50 {e50:8.1} µs  p99 {e99:8.1} µs");
    println!("   direct   p50 {d50:8.1} µs  p99 {d99:8.1} µs");
    println!("   ratio    p50 {:.3}×  p99 {:.3}×\n", e50 / d50, e99 / d99);

    // 2. apply throughput: drain what step 1 enqueued, then N more at each batch size
    let w = q.worker(db.clone()).spawn();
    drained(&q).await;
    w.stop().await;
    println!("2. apply throughput, {n} commands enqueued first, one worker (8 partitions)");
    for (read, apply) in [(1usize, 1usize), (32, 1), (32, 32)] {
        for i in 0..n {
            q.enqueue(&Probe {
                key: (i % 64) as u32,
                n: i as u64,
            })
            .await?;
        }
        let t = Instant::now();
        let w = q.worker(db.clone()).batch(read).apply_batch(apply).spawn();
        drained(&q).await;
        let took = t.elapsed();
        let stats = w.stop().await;
        println!(
            "   read {read:>2} at a time, {apply:>2} per transaction: {:8.0} commands/s ({} applied in {took:?})",
            n as f64 / took.as_secs_f64(),
            stats.applied
        );
    }
    let t = Instant::now();
    for i in 0..n {
        direct(
            &db,
            &Probe {
                key: (i % 64) as u32,
                n: i as u64,
            },
        )
        .await?;
    }
    let took = t.elapsed();
    println!(
        "   direct read-write units, one after another: {:8.0} writes/s ({n} in {took:?})",
        n as f64 / took.as_secs_f64()
    );
    let parallel = 8;
    let t = Instant::now();
    let tasks: Vec<_> = (0..parallel)
        .map(|k| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in 0..n / parallel {
                    direct(
                        &db,
                        &Probe {
                            key: k as u32,
                            n: i as u64,
                        },
                    )
                    .await?;
                }
                Ok::<_, DbErr>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let took = t.elapsed();
    println!(
        "   direct read-write units, 8 tasks at once: {:8.0} writes/s\n",
        n as f64 / took.as_secs_f64()
    );

    // 3. end to end: enqueue → applied, the worker running; alternating wait() (Redis pushes
    // each settlement) with a polling loop on the same public API (wait with no timeout: one
    // look), as wait was before pushes (1 ms doubling to 20 ms)
    let w = q.worker(db.clone()).spawn();
    let (mut pushed, mut polled) = (Vec::with_capacity(n / 8), Vec::with_capacity(n / 8));
    for i in 0..n / 4 {
        let t = Instant::now();
        let ticket = q
            .enqueue(&Probe {
                key: (i % 64) as u32,
                n: i as u64,
            })
            .await?;
        if i % 2 == 0 {
            q.wait(&ticket, Duration::from_secs(10))
                .await?
                .ok_or("not applied within 10 s")?;
            pushed.push(t.elapsed().as_secs_f64() * 1e6);
        } else {
            let mut pause = Duration::from_millis(1);
            while q.wait(&ticket, Duration::ZERO).await?.is_none() {
                if t.elapsed() > Duration::from_secs(10) {
                    return Err("not applied within 10 s".into());
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            polled.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    w.stop().await;
    let (pushed50, polled50) = (pct(&mut pushed, 0.5), pct(&mut polled, 0.5));
    println!(
        "3. end to end, enqueue → applied (wait returns the token), {} commands one at a time, alternating:\n   \
         wait (pushed)  p50 {:8.1} µs  p99 {:8.1} µs\n   \
         polling only   p50 {:8.1} µs  p99 {:8.1} µs\n   \
         ratio          p50 {:.3}×",
        pushed.len() + polled.len(),
        pushed50,
        pct(&mut pushed, 0.99),
        polled50,
        pct(&mut polled, 0.99),
        pushed50 / polled50
    );
    println!("\n{}", q.status().await?);
    Ok(())
}
