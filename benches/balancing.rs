//! Balancing strategies on a skewed setup: one replica freezes (`SIGSTOP`) for 250 ms of
//! every second, the other keeps answering.
//!
//! ```text
//! scripts/bench.sh balancing          # starts the loopback cluster, runs this, stops it
//! ```
//!
//! For each strategy, 8 tasks run read-only units (a point `SELECT`) for a few seconds; the
//! strategies take turns, twice each. Reported: throughput, p50/p99/max latency, and the share
//! of units the freezing replica served. Health settings are the defaults (checks every
//! 500 ms, 1 s check timeout), so the bursts are mostly shorter than what the monitor catches:
//! what the balancer does is what shows. Each replica has a 500 ms statement timeout, after
//! which a unit moves to another node.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use entity::banner;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use sea_orm_replica::{
    Balancer, LeastInFlight, LowestLag, MigrateOptions, NodeConfig, Random, ReplicatedDatabase,
    RoundRobin, Weighted,
};

const TASKS: usize = 8;
const ROUND: Duration = Duration::from_secs(4);
const ROUNDS: usize = 2;
const FROZEN: Duration = Duration::from_millis(250);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("{name} is not set: run scripts/bench.sh balancing");
        std::process::exit(2)
    })
}

/// The pids of one node of the loopback cluster, from `scripts/cluster.sh pids`.
fn pids(node: &str) -> Vec<i32> {
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"))
        .args(["pids", node])
        .env("CLUSTER_DIR", env("SOR_CLUSTER_DIR"))
        .output();
    match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn signal(pids: &[i32], sig: i32) {
    for &pid in pids {
        // SAFETY: sends a signal to a process of our own test cluster.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Freezes `node` for `FROZEN` of every second until `stop`, then leaves it running.
fn freeze_bursts(node: &'static str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let p = pids(node);
            signal(&p, libc::SIGSTOP);
            std::thread::sleep(FROZEN);
            signal(&p, libc::SIGCONT);
            std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
        }
    })
}

struct Outcome {
    units: u64,
    failed: u64,
    on_slow: u64,
    latencies: Vec<Duration>,
}

async fn run(name: &str, balancer: impl Balancer, replicas: &[(String, u32)], id: i32) -> Outcome {
    let mut builder = ReplicatedDatabase::builder()
        .primary(env("SOR_PG_PRIMARY_URL"))
        .balancer(balancer);
    for (i, (url, weight)) in replicas.iter().enumerate() {
        builder = builder.replica_node(
            NodeConfig::new(url)
                .name(format!("replica{}", i + 1))
                .weight(*weight)
                .max_connections(TASKS as u32)
                .statement_timeout(Duration::from_millis(500))
                .acquire_timeout(Duration::from_secs(1)),
        );
    }
    let db = builder.connect().await.expect("connect");
    let stop = Arc::new(AtomicBool::new(false));
    let (units, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (db, stop, units, failed, latencies) = (
                db.clone(),
                stop.clone(),
                units.clone(),
                failed.clone(),
                latencies.clone(),
            );
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = db
                        .read_only(|u| {
                            Box::pin(async move { banner::Entity::find_by_id(id).one(u).await })
                        })
                        .await;
                    mine.push(t.elapsed());
                    units.fetch_add(1, Ordering::Relaxed);
                    if r.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(mine);
            })
        })
        .collect();
    tokio::time::sleep(ROUND).await; // the measured period
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let on_slow = db
        .stats()
        .nodes
        .iter()
        .find(|n| n.name == "replica1")
        .map_or(0, |n| n.units);
    let _ = name;
    let latencies = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    Outcome {
        units: units.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        on_slow,
        latencies,
    }
}

fn pct(v: &[Duration], p: f64) -> Duration {
    v.get(((v.len().max(1) - 1) as f64 * p) as usize)
        .copied()
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let primary = env("SOR_PG_PRIMARY_URL");
    let replicas = [env("SOR_PG_REPLICA_URL"), env("SOR_PG_LAGGING_URL")];
    let setup = ReplicatedDatabase::builder()
        .primary(&primary)
        .replica(&replicas[0])
        .replica(&replicas[1])
        .connect()
        .await?;
    let wait = MigrateOptions::new().wait_for_replicas(Duration::from_secs(30));
    setup.migrate::<migration::Migrator>(wait).await?;
    let seeded = banner::ActiveModel {
        name: Set("balancing bench".into()),
        ..Default::default()
    }
    .insert(&setup)
    .await?;
    setup.migrate::<migration::Migrator>(wait).await?; // the row is on both replicas
    drop(setup);

    // the freezing replica gets weight 1, the healthy one 3 (what an operator who knows would set)
    let weighted = [(replicas[0].clone(), 1), (replicas[1].clone(), 3)];
    let equal = [(replicas[0].clone(), 1), (replicas[1].clone(), 1)];
    let names = [
        "round-robin",
        "random",
        "weighted 1:3",
        "least in-flight",
        "lowest lag",
    ];
    let mut totals: Vec<Outcome> = names
        .iter()
        .map(|_| Outcome {
            units: 0,
            failed: 0,
            on_slow: 0,
            latencies: Vec::new(),
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let freezer = freeze_bursts("replica1", stop.clone());
    for round in 0..ROUNDS {
        for k in 0..names.len() {
            let i = (round + k) % names.len();
            let out = match i {
                0 => run(names[i], RoundRobin::default(), &equal, seeded.id).await,
                1 => run(names[i], Random, &equal, seeded.id).await,
                2 => run(names[i], Weighted, &weighted, seeded.id).await,
                3 => run(names[i], LeastInFlight::default(), &equal, seeded.id).await,
                _ => run(names[i], LowestLag::default(), &equal, seeded.id).await,
            };
            let t = &mut totals[i];
            t.units += out.units;
            t.failed += out.failed;
            t.on_slow += out.on_slow;
            t.latencies.extend(out.latencies);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = freezer.join();
    signal(&pids("replica1"), libc::SIGCONT);

    println!(
        "replica1 frozen {FROZEN:?} of every second; {TASKS} tasks, {ROUNDS} rounds of {ROUND:?} per strategy, taking turns\n"
    );
    println!("| strategy | units/s | p50 | p99 | max | failed | on the freezing replica |");
    println!("|---|---|---|---|---|---|---|");
    let base = totals[0].units as f64;
    for (name, t) in names.iter().zip(totals.iter_mut()) {
        t.latencies.sort();
        let secs = (ROUND * ROUNDS as u32).as_secs_f64();
        println!(
            "| {name} | {:.0} ({:.2}×) | {:.2} ms | {:.1} ms | {:.0} ms | {} | {:.1}% |",
            t.units as f64 / secs,
            t.units as f64 / base,
            pct(&t.latencies, 0.5).as_secs_f64() * 1e3,
            pct(&t.latencies, 0.99).as_secs_f64() * 1e3,
            t.latencies
                .last()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e3,
            t.failed,
            100.0 * t.on_slow as f64 / t.units.max(1) as f64,
        );
    }
    Ok(())
}
