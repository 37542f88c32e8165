//! What sea-orm-replica costs over raw SeaORM, measured side by side in one run.
//!
//! ```text
//! scripts/bench.sh                         # starts the loopback cluster, runs this, stops it
//! cargo bench --bench overhead             # with SOR_PG_PRIMARY_URL / SOR_PG_REPLICA_URL set
//! ```
//!
//! Each comparison alternates batches of the raw SeaORM call and the sea-orm-replica call on
//! the same server and query, and reports the median over rounds of the per-round ratio, so
//! drift on a shared machine hits both sides alike.

use std::hint::black_box;
use std::time::{Duration, Instant};

use entity::banner;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, Database, DatabaseConnection, EntityTrait, TransactionTrait,
};
use sea_orm_replica::{NodeConfig, ReadOnly, ReplicatedDatabase, UnitOptions};

const OPS: usize = 10_000;
const WARMUP: usize = 500;

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

/// One comparison: medians of wall time, their ratio, and client CPU per operation.
struct Compared {
    raw_us: f64,
    ours_us: f64,
    ratio: f64,
    p90_ratio: f64,
    raw_cpu_us: f64,
    ours_cpu_us: f64,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p) as usize]
}

/// Alternates single `raw` and `ours` operations (swapping which goes first every time), so
/// both sides see the same machine at the same moment.
async fn side_by_side<R, O, FR, FO>(mut raw: R, mut ours: O) -> Compared
where
    R: FnMut() -> FR,
    O: FnMut() -> FO,
    FR: std::future::Future<Output = ()>,
    FO: std::future::Future<Output = ()>,
{
    for _ in 0..WARMUP {
        raw().await;
        ours().await;
    }
    let (mut raws, mut ourss) = (Vec::with_capacity(OPS), Vec::with_capacity(OPS));
    let (mut raw_cpu, mut ours_cpu) = (Vec::with_capacity(OPS), Vec::with_capacity(OPS));
    for i in 0..OPS {
        for pass in 0..2 {
            let (t, cpu) = (Instant::now(), thread_cpu_us());
            if (pass == 0) == (i % 2 == 0) {
                raw().await;
                raws.push(t.elapsed().as_secs_f64() * 1e6);
                raw_cpu.push(thread_cpu_us() - cpu);
            } else {
                ours().await;
                ourss.push(t.elapsed().as_secs_f64() * 1e6);
                ours_cpu.push(thread_cpu_us() - cpu);
            }
        }
    }
    let (r50, o50) = (percentile(&mut raws, 0.5), percentile(&mut ourss, 0.5));
    let (r90, o90) = (percentile(&mut raws, 0.9), percentile(&mut ourss, 0.9));
    Compared {
        raw_us: r50,
        ours_us: o50,
        ratio: o50 / r50,
        p90_ratio: o90 / r90,
        raw_cpu_us: percentile(&mut raw_cpu, 0.5),
        ours_cpu_us: percentile(&mut ours_cpu, 0.5),
    }
}

fn report(name: &str, target: &str, c: Compared) {
    println!(
        "{name}\n    wall, median: raw {:>7.1} µs, ours {:>7.1} µs → {:.3}× (target {target}); p90 {:.3}×\n    client CPU, median: raw {:>6.1} µs, ours {:>6.1} µs → +{:.1} µs per operation",
        c.raw_us, c.ours_us, c.ratio, c.p90_ratio, c.raw_cpu_us, c.ours_cpu_us, c.ours_cpu_us - c.raw_cpu_us
    );
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("{name} is not set: run scripts/bench.sh (it starts the loopback cluster)");
        std::process::exit(2)
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let primary_url = env("SOR_PG_PRIMARY_URL");
    let replica_url = env("SOR_PG_REPLICA_URL");
    let pool = |url: &str| {
        let mut o = sea_orm::ConnectOptions::new(url.to_owned());
        o.max_connections(4).min_connections(1).sqlx_logging(false);
        o
    };
    let db = ReplicatedDatabase::builder()
        .primary_node(NodeConfig::new(&primary_url).max_connections(4))
        .replica_node(NodeConfig::new(&replica_url).max_connections(4))
        .connect()
        .await?;
    db.migrate::<migration::Migrator>(
        sea_orm_replica::MigrateOptions::new().wait_for_replicas(Duration::from_secs(30)),
    )
    .await?;
    let raw_primary: DatabaseConnection = Database::connect(pool(&primary_url)).await?;
    let raw_replica: DatabaseConnection = Database::connect(pool(&replica_url)).await?;

    let seeded = banner::ActiveModel {
        name: Set("bench".into()),
        ..Default::default()
    }
    .insert(&raw_primary)
    .await?;
    db.migrate::<migration::Migrator>(
        sea_orm_replica::MigrateOptions::new().wait_for_replicas(Duration::from_secs(30)),
    )
    .await?;
    let id = seeded.id;

    // Instruction-count mode (scripts/bench-instructions.sh runs it under callgrind): one
    // operation, N times, nothing else.
    if let Ok(op) = std::env::var("SOR_BENCH_OP") {
        let n: usize = std::env::var("SOR_BENCH_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(100);
        for _ in 0..n {
            match op.as_str() {
                "raw-select" => {
                    black_box(banner::Entity::find_by_id(id).one(&raw_replica).await?);
                }
                "unit-select" => {
                    let unit = db.begin_read_only();
                    black_box(banner::Entity::find_by_id(id).one(&unit).await?);
                    unit.commit().await?;
                }
                "raw-insert" => {
                    let txn = raw_primary.begin().await?;
                    black_box(
                        banner::ActiveModel {
                            name: Set("raw".into()),
                            ..Default::default()
                        }
                        .insert(&txn)
                        .await?,
                    );
                    txn.commit().await?;
                }
                "unit-insert" => {
                    let unit = db.begin_read_write();
                    black_box(
                        banner::ActiveModel {
                            name: Set("unit".into()),
                            ..Default::default()
                        }
                        .insert(&unit)
                        .await?,
                    );
                    unit.commit().await?;
                }
                other => return Err(format!("unknown SOR_BENCH_OP {other}").into()),
            }
        }
        return Ok(());
    }
    println!("PostgreSQL on loopback; {OPS} operations per side, alternating one by one\n");

    // 1. a unit that runs no statement
    let before = db.stats().total_acquisitions();
    let n = 1_000_000u32;
    let t = Instant::now();
    for _ in 0..n {
        black_box(db.begin_read_only()).commit().await?;
    }
    let empty_ns = t.elapsed().as_secs_f64() * 1e9 / f64::from(n);
    let acquired = db.stats().total_acquisitions() - before;
    println!(
        "{:<58} {empty_ns:>8.0} ns/unit, {acquired} pool acquisitions   (target < 1 µs, 0)",
        "read-only unit, no statement: open + commit"
    );

    // 2. routing decision with 8 replicas
    let mut eight = ReplicatedDatabase::builder().primary(&primary_url);
    for i in 0..8 {
        eight = eight.replica_node(
            NodeConfig::new(&replica_url)
                .name(format!("r{i}"))
                .max_connections(1),
        );
    }
    let eight = eight.connect().await?;
    let n = 1_000_000u32;
    let t = Instant::now();
    for _ in 0..n {
        black_box(eight.route::<ReadOnly>()?);
    }
    let route_ns = t.elapsed().as_secs_f64() * 1e9 / f64::from(n);
    println!(
        "{:<58} {route_ns:>8.0} ns/decision   (target < 1 µs)\n",
        "routing decision, 8 replicas"
    );

    // 3. one point SELECT: raw autocommit on the replica vs a read-only unit
    let select = side_by_side(
        || async {
            black_box(banner::Entity::find_by_id(id).one(&raw_replica).await.ok());
        },
        || async {
            let unit = db.begin_read_only();
            black_box(banner::Entity::find_by_id(id).one(&unit).await.ok());
            let _ = unit.commit().await;
        },
    )
    .await;
    report(
        "point SELECT: read-only unit vs raw autocommit (replica)",
        "≤ 1.10×",
        select,
    );

    // 3b. the naive alternative, for the record: a snapshot unit (BEGIN / SELECT / COMMIT)
    let snapshot = side_by_side(
        || async {
            black_box(banner::Entity::find_by_id(id).one(&raw_replica).await.ok());
        },
        || async {
            let unit = db.begin_unit::<ReadOnly>(UnitOptions::new().snapshot());
            black_box(banner::Entity::find_by_id(id).one(&unit).await.ok());
            let _ = unit.commit().await;
        },
    )
    .await;
    report(
        "point SELECT: snapshot unit (BEGIN…COMMIT) vs raw autocommit",
        "for the record",
        snapshot,
    );

    // 4. one INSERT: raw SeaORM transaction vs a read-write unit, both on the primary
    let insert = side_by_side(
        || async {
            let txn = raw_primary.begin().await.expect("begin");
            black_box(
                banner::ActiveModel {
                    name: Set("raw".into()),
                    ..Default::default()
                }
                .insert(&txn)
                .await
                .ok(),
            );
            txn.commit().await.expect("commit");
        },
        || async {
            let unit = db.begin_read_write();
            black_box(
                banner::ActiveModel {
                    name: Set("unit".into()),
                    ..Default::default()
                }
                .insert(&unit)
                .await
                .ok(),
            );
            unit.commit().await.expect("commit");
        },
    )
    .await;
    report(
        "INSERT: read-write unit vs raw SeaORM transaction (primary)",
        "≤ 1.05×",
        insert,
    );

    // 5. controls: the same raw call on two pools (A/A); the ratio it shows is the noise floor
    let raw_primary_b: DatabaseConnection = Database::connect(pool(&primary_url)).await?;
    let raw_replica_b: DatabaseConnection = Database::connect(pool(&replica_url)).await?;
    let control_select = side_by_side(
        || async {
            black_box(banner::Entity::find_by_id(id).one(&raw_replica).await.ok());
        },
        || async {
            black_box(
                banner::Entity::find_by_id(id)
                    .one(&raw_replica_b)
                    .await
                    .ok(),
            );
        },
    )
    .await;
    report(
        "control, point SELECT: raw autocommit vs raw autocommit (A/A)",
        "1.00× ± noise",
        control_select,
    );
    let control_insert = side_by_side(
        || async {
            let txn = raw_primary.begin().await.expect("begin");
            black_box(
                banner::ActiveModel {
                    name: Set("raw".into()),
                    ..Default::default()
                }
                .insert(&txn)
                .await
                .ok(),
            );
            txn.commit().await.expect("commit");
        },
        || async {
            let txn = raw_primary_b.begin().await.expect("begin");
            black_box(
                banner::ActiveModel {
                    name: Set("raw".into()),
                    ..Default::default()
                }
                .insert(&txn)
                .await
                .ok(),
            );
            txn.commit().await.expect("commit");
        },
    )
    .await;
    report(
        "control, INSERT: raw transaction vs raw transaction (A/A)",
        "1.00× ± noise",
        control_insert,
    );

    println!("\n{}", db.stats());
    Ok(())
}
