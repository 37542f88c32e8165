//! What metrics cost: the point-SELECT read-only unit with a Prometheus recorder in force vs
//! none, side by side in one run (target ≤ 1.03×).
//!
//! ```text
//! scripts/bench.sh metrics                     # starts the PostgreSQL cluster, runs this, stops it
//! cargo bench --bench metrics --features prometheus    # with SOR_PG_PRIMARY_URL / SOR_PG_REPLICA_URL set
//! ```
//!
//! One current-thread runtime; the Prometheus recorder is the thread's local recorder
//! (`metrics::set_default_local_recorder`) for every other unit, so both sides share the
//! handle, its connections and the machine's drift, and the recorder only sees the units it
//! measures. The order flips every pair. Reported: medians and p99 of the individual
//! latencies, on PostgreSQL (a replica on loopback) and on SQLite (the reader pool: no
//! network, so the recorder's share is as large as it gets). An A/A control (no recorder on
//! either side) shows the noise floor. A rendering of the recorder at the end checks that it
//! did record.

use std::hint::black_box;
use std::time::{Duration, Instant};

use entity::banner;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use sea_orm_replica::observe::prometheus;
use sea_orm_replica::{MigrateOptions, NodeConfig, ReplicatedDatabase};

const OPS: usize = 20_000;
const WARMUP: usize = 1_000;

async fn unit_select(db: &ReplicatedDatabase, id: i32) {
    let unit = db.begin_read_only();
    let found = banner::Entity::find_by_id(id).one(&unit).await;
    black_box(found.ok().flatten());
    let _ = unit.commit().await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Alternates units with the recorder (`a_on`, `b_on` say which side has it) and returns the
/// ratio of medians b/a and both sides' p50/p99.
async fn compare(
    db: &ReplicatedDatabase,
    id: i32,
    recorder: &metrics_exporter_prometheus::PrometheusRecorder,
    a_on: bool,
    b_on: bool,
) -> (f64, [Duration; 4]) {
    let mut sides = [Vec::with_capacity(OPS), Vec::with_capacity(OPS)];
    for i in 0..WARMUP + OPS {
        for k in 0..2 {
            // flip the order every pair
            let side = if i % 2 == 0 { k } else { 1 - k };
            let on = if side == 0 { a_on } else { b_on };
            let started = Instant::now();
            if on {
                let _local = metrics::set_default_local_recorder(recorder);
                unit_select(db, id).await;
            } else {
                unit_select(db, id).await;
            }
            if i >= WARMUP {
                sides[side].push(started.elapsed());
            }
        }
    }
    for s in &mut sides {
        s.sort();
    }
    let p = |s: &[Duration]| [percentile(s, 0.5), percentile(s, 0.99)];
    let [a50, a99] = p(&sides[0]);
    let [b50, b99] = p(&sides[1]);
    (b50.as_secs_f64() / a50.as_secs_f64(), [a50, a99, b50, b99])
}

async fn report(name: &str, db: &ReplicatedDatabase, id: i32) {
    let recorder = prometheus::recorder().expect("a Prometheus recorder");
    let handle = recorder.handle();
    let (aa, [a50, _, b50, _]) = compare(db, id, &recorder, false, false).await;
    println!("{name}: A/A (no recorder on either side): {aa:.3}× (p50 {a50:?} vs {b50:?})");
    let (ratio, [a50, a99, b50, b99]) = compare(db, id, &recorder, false, true).await;
    println!(
        "{name}: point-SELECT read-only unit, Prometheus recorder vs none: {ratio:.3}× \
         (p50 {b50:?} vs {a50:?}; p99 {b99:?} vs {a99:?}) — target ≤ 1.03×"
    );
    let text = handle.render();
    let recorded = text
        .lines()
        .filter(|l| l.starts_with("sea_orm_replica_units{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    println!(
        "{name}: the recorder counted {recorded} units (expected {})\n",
        WARMUP + OPS
    );
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        if let (Some(primary), Some(replica)) = (env("SOR_PG_PRIMARY_URL"), env("SOR_PG_REPLICA_URL")) {
            let db = ReplicatedDatabase::builder()
                .primary_node(NodeConfig::new(&primary).max_connections(1))
                .replica_node(NodeConfig::new(&replica).max_connections(1))
                .monitor_interval(Duration::from_secs(3600))
                .connect()
                .await?;
            let wait = MigrateOptions::new().wait_for_replicas(Duration::from_secs(30));
            db.migrate::<migration::Migrator>(wait).await?;
            let seeded = insert(&db).await?;
            db.migrate::<migration::Migrator>(wait).await?; // the row reaches the replica
            report("PostgreSQL (replica on loopback)", &db, seeded).await;
        } else {
            println!("SOR_PG_PRIMARY_URL / SOR_PG_REPLICA_URL unset: PostgreSQL skipped (scripts/bench.sh metrics sets them)\n");
        }
        let file = std::env::temp_dir().join(format!("sor-bench-metrics-{}.sqlite", std::process::id()));
        let db = ReplicatedDatabase::builder()
            .primary(format!("sqlite://{}?mode=rwc", file.display()))
            .connect()
            .await?;
        db.migrate::<migration::Migrator>(MigrateOptions::new()).await?;
        let seeded = insert(&db).await?;
        report("SQLite (reader pool)", &db, seeded).await;
        drop(db);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

async fn insert(db: &ReplicatedDatabase) -> Result<i32, sea_orm::DbErr> {
    let unit = db.begin_read_write();
    let saved = banner::ActiveModel {
        name: Set("bench".into()),
        ..Default::default()
    }
    .insert(&unit)
    .await?;
    unit.commit().await?;
    Ok(saved.id)
}
