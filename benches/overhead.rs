//! What sea-orm-replica costs over raw SeaORM, measured side by side in one run.
//!
//! ```text
//! scripts/bench.sh                         # starts the loopback cluster, runs this, stops it
//! cargo bench --bench overhead             # with SOR_PG_PRIMARY_URL / SOR_PG_REPLICA_URL set
//! scripts/bench-instructions.sh            # client instructions per operation (callgrind)
//! ```
//!
//! Each comparison alternates single raw SeaORM calls and sea-orm-replica calls on the same
//! connection, server and query, and reports medians of the individual latencies, so drift on a
//! shared machine hits both sides alike. A/A controls (raw against raw) show the noise floor.

use std::hint::black_box;
use std::time::{Duration, Instant};

use entity::banner;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, Database, DatabaseConnection, DbErr, EntityTrait,
    TransactionTrait,
};
use sea_orm_replica::{MigrateOptions, ReadOnly, ReadWrite, ReplicatedDatabase, UnitOptions};

const OPS: usize = 10_000;
const WARMUP: usize = 500;

/// One measured operation.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// `find_by_id` on the raw replica pool, autocommit.
    RawSelect,
    /// `find_by_id` in a read-only unit.
    UnitSelect,
    /// `find_by_id` in a snapshot read-only unit (BEGIN / SELECT / COMMIT).
    SnapshotSelect,
    /// one INSERT in a raw SeaORM transaction on the primary.
    RawInsert,
    /// one INSERT in a read-write unit.
    UnitInsert,
    /// one INSERT in a causal read-write unit committed with `commit_causal()` (a token).
    UnitInsertCausal,
}

/// What the operations run against: one connection per node, shared by both sides, so raw
/// SeaORM and the handle talk to the very same server backend.
struct Ctx {
    db: ReplicatedDatabase,
    raw_primary: DatabaseConnection,
    raw_replica: DatabaseConnection,
    id: i32,
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "raw-select" => Op::RawSelect,
            "unit-select" => Op::UnitSelect,
            "snapshot-select" => Op::SnapshotSelect,
            "raw-insert" => Op::RawInsert,
            "unit-insert" => Op::UnitInsert,
            "unit-insert-causal" => Op::UnitInsertCausal,
            _ => return None,
        })
    }

    async fn run(self, c: &Ctx) -> Result<(), DbErr> {
        let new_banner = || banner::ActiveModel {
            name: Set("bench".into()),
            ..Default::default()
        };
        match self {
            Op::RawSelect => {
                black_box(banner::Entity::find_by_id(c.id).one(&c.raw_replica).await?);
            }
            Op::UnitSelect | Op::SnapshotSelect => {
                let options = match self {
                    Op::SnapshotSelect => UnitOptions::new().snapshot(),
                    _ => UnitOptions::new(),
                };
                let unit = c.db.begin_unit::<ReadOnly>(options);
                black_box(banner::Entity::find_by_id(c.id).one(&unit).await?);
                unit.commit().await?;
            }
            Op::RawInsert => {
                let txn = c.raw_primary.begin().await?;
                black_box(new_banner().insert(&txn).await?);
                txn.commit().await?;
            }
            Op::UnitInsert => {
                let unit = c.db.begin_read_write();
                black_box(new_banner().insert(&unit).await?);
                unit.commit().await?;
            }
            Op::UnitInsertCausal => {
                let unit = c.db.begin_unit::<ReadWrite>(UnitOptions::new().causal());
                black_box(new_banner().insert(&unit).await?);
                black_box(unit.commit_causal().await.map_err(DbErr::from)?);
            }
        }
        Ok(())
    }
}

/// CPU time this thread has used, in µs: on a current-thread runtime, all the client's work.
fn thread_cpu_us() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p) as usize]
}

/// Latencies and client CPU of one side.
#[derive(Default)]
struct Samples {
    wall_us: Vec<f64>,
    cpu_us: Vec<f64>,
}

impl Samples {
    async fn measure(&mut self, op: Op, c: &Ctx) -> Result<(), DbErr> {
        let (t, cpu) = (Instant::now(), thread_cpu_us());
        op.run(c).await?;
        self.wall_us.push(t.elapsed().as_secs_f64() * 1e6);
        self.cpu_us.push(thread_cpu_us() - cpu);
        Ok(())
    }
}

/// Alternates single `raw` and `ours` operations (swapping which goes first every time) and
/// prints medians, their ratio, the p90 ratio and client CPU per operation.
async fn compare(c: &Ctx, name: &str, target: &str, raw: Op, ours: Op) -> Result<(), DbErr> {
    for _ in 0..WARMUP {
        raw.run(c).await?;
        ours.run(c).await?;
    }
    let (mut r, mut o) = (Samples::default(), Samples::default());
    for i in 0..OPS {
        if i % 2 == 0 {
            r.measure(raw, c).await?;
            o.measure(ours, c).await?;
        } else {
            o.measure(ours, c).await?;
            r.measure(raw, c).await?;
        }
    }
    let (r50, o50) = (
        percentile(&mut r.wall_us, 0.5),
        percentile(&mut o.wall_us, 0.5),
    );
    let (r90, o90) = (
        percentile(&mut r.wall_us, 0.9),
        percentile(&mut o.wall_us, 0.9),
    );
    let (rc, oc) = (
        percentile(&mut r.cpu_us, 0.5),
        percentile(&mut o.cpu_us, 0.5),
    );
    println!(
        "{name}\n    wall, median: raw {r50:>7.1} µs, ours {o50:>7.1} µs → {:.3}× (target {target}); p90 {:.3}×\n    client CPU, median: raw {rc:>6.1} µs, ours {oc:>6.1} µs → {:+.1} µs per operation",
        o50 / r50,
        o90 / r90,
        oc - rc
    );
    Ok(())
}

/// Runs `f` `n` times and returns nanoseconds per call.
async fn per_call_ns<F: std::future::Future<Output = ()>>(n: u32, mut f: impl FnMut() -> F) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f().await;
    }
    t.elapsed().as_secs_f64() * 1e9 / f64::from(n)
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("{name} is not set: run scripts/bench.sh (it starts the loopback cluster)");
        std::process::exit(2)
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = |url: String| {
        let mut o = sea_orm::ConnectOptions::new(url);
        o.max_connections(1).min_connections(1).sqlx_logging(false);
        o
    };
    let raw_primary = Database::connect(pool(env("SOR_PG_PRIMARY_URL"))).await?;
    let raw_replica = Database::connect(pool(env("SOR_PG_REPLICA_URL"))).await?;
    // the monitor's checks are background work on the one shared connection, not per-operation
    // cost: tick once an hour here (the first round runs at connect)
    let db = ReplicatedDatabase::builder()
        .primary_connection("primary", raw_primary.clone())
        .replica_connection("replica-1", raw_replica.clone())
        .monitor_interval(Duration::from_secs(3600))
        .connect()
        .await?;
    let wait = MigrateOptions::new().wait_for_replicas(Duration::from_secs(30));
    db.migrate::<migration::Migrator>(wait).await?;
    let seeded = banner::ActiveModel {
        name: Set("bench".into()),
        ..Default::default()
    }
    .insert(&raw_primary)
    .await?;
    db.migrate::<migration::Migrator>(wait).await?; // waits for the seeded row to replicate
    let c = Ctx {
        db,
        raw_primary,
        raw_replica,
        id: seeded.id,
    };

    // Instruction-count mode (scripts/bench-instructions.sh runs it under callgrind): one
    // operation, N times, nothing else.
    if let Ok(name) = std::env::var("SOR_BENCH_OP") {
        let op = Op::parse(&name).ok_or_else(|| format!("unknown SOR_BENCH_OP {name}"))?;
        let n: usize = std::env::var("SOR_BENCH_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(100);
        for _ in 0..n {
            op.run(&c).await?;
        }
        return Ok(());
    }
    println!("PostgreSQL on loopback; {OPS} operations per side, alternating one by one\n");

    let before = c.db.stats().total_acquisitions();
    let empty_ns = per_call_ns(1_000_000, || async {
        let _ = black_box(c.db.begin_read_only()).commit().await;
    })
    .await;
    let acquired = c.db.stats().total_acquisitions() - before;
    println!("read-only unit, no statement, open + commit: {empty_ns:.0} ns/unit, {acquired} pool acquisitions (target < 1 µs, 0)");

    let mut eight = ReplicatedDatabase::builder()
        .primary_connection("primary", c.raw_primary.clone())
        .monitor_interval(Duration::from_secs(3600));
    for i in 0..8 {
        eight = eight.replica_connection(format!("r{i}"), c.raw_replica.clone());
    }
    let eight = eight.connect().await?;
    let route_ns = per_call_ns(1_000_000, || async {
        let _ = black_box(eight.route::<ReadOnly>());
    })
    .await;
    println!("routing decision among 8 replicas: {route_ns:.0} ns (target < 1 µs)\n");

    compare(
        &c,
        "point SELECT: read-only unit vs raw autocommit (replica)",
        "≤ 1.10×",
        Op::RawSelect,
        Op::UnitSelect,
    )
    .await?;
    compare(
        &c,
        "point SELECT: snapshot unit (BEGIN…COMMIT) vs raw autocommit",
        "for the record",
        Op::RawSelect,
        Op::SnapshotSelect,
    )
    .await?;
    compare(
        &c,
        "INSERT: read-write unit vs raw SeaORM transaction (primary)",
        "≤ 1.05×",
        Op::RawInsert,
        Op::UnitInsert,
    )
    .await?;
    compare(
        &c,
        "INSERT + causal token: causal unit, commit_causal() vs raw SeaORM transaction (primary)",
        "no extra round trip",
        Op::RawInsert,
        Op::UnitInsertCausal,
    )
    .await?;
    compare(
        &c,
        "control, point SELECT: raw vs raw (A/A)",
        "1.00× ± noise",
        Op::RawSelect,
        Op::RawSelect,
    )
    .await?;
    compare(
        &c,
        "control, INSERT: raw vs raw (A/A)",
        "1.00× ± noise",
        Op::RawInsert,
        Op::RawInsert,
    )
    .await?;

    println!("\n{}", c.db.stats());
    Ok(())
}
