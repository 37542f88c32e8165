//! Read-after-write consistency policies compared on one workload, side by side in one run.
//!
//! ```text
//! scripts/bench.sh policies          # starts the loopback clusters, runs this, stops them
//! cargo bench --bench policies       # with the SOR_PG_* (and optionally SOR_MYSQL_*) URLs set
//! ```
//!
//! The workload is seeds/002's: a client saves a banner (request 1) and at once reads it back
//! (request 2). Every pair runs under one of four policies, and the policies take turns pair
//! by pair, so drift on a shared machine hits them alike:
//!
//! - **none**: the read is an ordinary read-only unit (eventual consistency);
//! - **token**: the write's commit hands out a causal token, and the read runs only where it
//!   has been replayed ([`UnitOptions::after`]);
//! - **sticky**: for a window after a write, the client's reads run on the primary
//!   ([`CausalScope::sticky`], what Rails' `delay` and Laravel's `sticky` do);
//! - **primary**: every read runs on the primary ([`Consistency::Primary`]).
//!
//! For each policy it reports the stale reads (the banner not found), the share of reads a
//! replica served (as the server says: `pg_is_in_recovery()`, `@@read_only`), and the latency
//! of the write, of the read and of the pair. PostgreSQL runs with a fresh replica and one that
//! lags 500 ms; MariaDB, when its URLs are set, with its one replica.

use std::time::{Duration, Instant, SystemTime};

use entity::banner;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DbBackend, DbErr, Statement, Value,
};
use sea_orm_replica::{
    CausalScope, CausalToken, Consistency, MigrateOptions, ReadOnly, ReadWrite, ReplicatedDatabase,
    UnitOptions,
};

const PAIRS: usize = 300;
/// The time between the write's answer and the read: none (the worst case for a replica), and
/// a 5 ms client round trip (a browser or a service on a nearby host).
const GAPS: [Duration; 2] = [Duration::ZERO, Duration::from_millis(5)];
const WARMUP: usize = 20;
/// The sticky window: longer than the slowest replica's lag, as it must be to avoid stale reads.
const STICKY_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    None,
    Token,
    TokenNoWait,
    Sticky,
    Primary,
}

const POLICIES: [Policy; 5] = [
    Policy::None,
    Policy::Token,
    Policy::TokenNoWait,
    Policy::Sticky,
    Policy::Primary,
];

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::None => "none (eventual)",
            Policy::Token => "causal token (wait ≤ 100 ms)",
            Policy::TokenNoWait => "causal token, no wait",
            Policy::Sticky => "sticky after write (1 s)",
            Policy::Primary => "always primary",
        }
    }
}

/// What one write→read pair gave.
struct Pair {
    write_us: f64,
    read_us: f64,
    stale: bool,
    on_replica: bool,
}

/// What the client carries from the write request to the read request.
enum Carried {
    Nothing,
    Token(CausalToken),
    LastWrite(Option<SystemTime>),
}

fn us(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e6
}

/// The read, in one statement: the banner's name (NULL when not found) and whether the server
/// that answered is a replica.
fn read_statement(backend: DbBackend, id: i32) -> Statement {
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT (SELECT name FROM banner WHERE id = $1) AS name, pg_is_in_recovery() AS on_replica"
        }
        _ => "SELECT (SELECT name FROM banner WHERE id = ?) AS name, @@read_only = 1 AS on_replica",
    };
    Statement::from_sql_and_values(backend, sql, [Value::from(id)])
}

async fn run_pair(db: &ReplicatedDatabase, policy: Policy, gap: Duration) -> Result<Pair, DbErr> {
    let new_banner = banner::ActiveModel {
        name: Set("policy bench".into()),
        ..Default::default()
    };

    // request 1: the write
    let t = Instant::now();
    let (id, carried) = match policy {
        Policy::Token | Policy::TokenNoWait => {
            let unit = db.begin_unit::<ReadWrite>(UnitOptions::new().causal());
            let id = new_banner.insert(&unit).await?.id;
            (id, Carried::Token(unit.commit_causal().await?))
        }
        Policy::Sticky => {
            let scope = CausalScope::new(false, None).sticky(STICKY_WINDOW, None);
            let id = scope
                .run(async {
                    let unit = db.begin_read_write();
                    let id = new_banner.insert(&unit).await?.id;
                    unit.commit().await.map(|()| id)
                })
                .await?;
            (id, Carried::LastWrite(scope.last_write()))
        }
        Policy::None | Policy::Primary => {
            let unit = db.begin_read_write();
            let id = new_banner.insert(&unit).await?.id;
            unit.commit().await?;
            (id, Carried::Nothing)
        }
    };
    let write_us = us(t);
    if !gap.is_zero() {
        tokio::time::sleep(gap).await; // the client's round trip: workload, not synchronisation
    }

    // request 2: the read, at once
    let t = Instant::now();
    let options = match (&carried, policy) {
        (Carried::Token(token), Policy::TokenNoWait) => {
            UnitOptions::new().after(token).max_wait(Duration::ZERO)
        }
        (Carried::Token(token), _) => UnitOptions::new().after(token),
        (_, Policy::Primary) => UnitOptions::new().consistency(Consistency::Primary),
        _ => UnitOptions::new(),
    };
    let read = async {
        let unit = db.begin_unit::<ReadOnly>(options);
        let row = unit.query_one_raw(read_statement(db.backend(), id)).await?;
        unit.commit().await?;
        Ok::<_, DbErr>(row)
    };
    let row = match carried {
        Carried::LastWrite(at) => {
            CausalScope::new(true, None)
                .sticky(STICKY_WINDOW, at)
                .run(read)
                .await?
        }
        Carried::Nothing | Carried::Token(_) => read.await?,
    };
    let read_us = us(t);
    let row = row.ok_or_else(|| DbErr::Custom("the read returned no row".into()))?;
    let name: Option<String> = row.try_get("", "name")?;
    let on_replica = row
        .try_get::<bool>("", "on_replica")
        .or_else(|_| row.try_get::<i64>("", "on_replica").map(|flag| flag == 1))?;
    Ok(Pair {
        write_us,
        read_us,
        stale: name.is_none(),
        on_replica,
    })
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p) as usize]
}

async fn compare(label: &str, db: &ReplicatedDatabase) -> Result<(), DbErr> {
    for gap in GAPS {
        compare_at(label, db, gap).await?;
    }
    println!("\n{}", db.stats());
    Ok(())
}

async fn compare_at(label: &str, db: &ReplicatedDatabase, gap: Duration) -> Result<(), DbErr> {
    for i in 0..WARMUP {
        run_pair(db, POLICIES[i % POLICIES.len()], gap).await?;
    }
    let mut results: Vec<Vec<Pair>> = POLICIES.iter().map(|_| Vec::new()).collect();
    for round in 0..PAIRS {
        for k in 0..POLICIES.len() {
            // rotate which policy goes first
            let p = (round + k) % POLICIES.len();
            results[p].push(run_pair(db, POLICIES[p], gap).await?);
        }
    }
    println!(
        "\n{label}; read {} after the write; {PAIRS} write→read pairs per policy, taking turns\n",
        if gap.is_zero() {
            "at once".to_string()
        } else {
            format!("{gap:?}")
        }
    );
    println!("| policy | stale reads | reads on a replica | write p50 | read p50 | read p99 | pair p50 | pair p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut pair_p50 = Vec::new();
    for (policy, pairs) in POLICIES.iter().zip(&results) {
        let stale = pairs.iter().filter(|p| p.stale).count();
        let replica = pairs.iter().filter(|p| p.on_replica).count();
        let mut write: Vec<f64> = pairs.iter().map(|p| p.write_us).collect();
        let mut read: Vec<f64> = pairs.iter().map(|p| p.read_us).collect();
        let mut pair: Vec<f64> = pairs.iter().map(|p| p.write_us + p.read_us).collect();
        let p50 = percentile(&mut pair, 0.5);
        pair_p50.push(p50);
        println!(
            "| {} | {stale}/{PAIRS} | {:.1}% | {:.0} µs | {:.0} µs | {:.0} µs | {p50:.0} µs | {:.0} µs |",
            policy.name(),
            100.0 * replica as f64 / PAIRS as f64,
            percentile(&mut write, 0.5),
            percentile(&mut read, 0.5),
            percentile(&mut read, 0.99),
            percentile(&mut pair, 0.99),
        );
    }
    let base = pair_p50[0];
    let ratios: Vec<String> = POLICIES
        .iter()
        .zip(&pair_p50)
        .map(|(p, v)| format!("{} {:.2}×", p.name(), v / base))
        .collect();
    println!("\npair p50 relative to no policy: {}", ratios.join(", "));
    Ok(())
}

async fn connect(primary: &str, replicas: &[String]) -> Result<ReplicatedDatabase, DbErr> {
    let mut builder = ReplicatedDatabase::builder().primary(primary);
    for url in replicas {
        builder = builder.replica(url.as_str());
    }
    let db = builder.connect().await?;
    let wait = MigrateOptions::new().wait_for_replicas(Duration::from_secs(30));
    db.migrate::<migration::Migrator>(wait).await?;
    Ok(db)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(pg) = env("SOR_PG_PRIMARY_URL") else {
        eprintln!("SOR_PG_PRIMARY_URL is not set: run scripts/bench.sh policies (it starts the loopback clusters)");
        std::process::exit(2)
    };
    let replicas: Vec<String> = ["SOR_PG_REPLICA_URL", "SOR_PG_LAGGING_URL"]
        .into_iter()
        .filter_map(env)
        .collect();
    let db = connect(&pg, &replicas).await?;
    compare(
        "PostgreSQL, a fresh replica and one lagging 500 ms, round-robin, causal wait 100 ms",
        &db,
    )
    .await?;

    if let (Some(primary), Some(replica)) =
        (env("SOR_MYSQL_PRIMARY_URL"), env("SOR_MYSQL_REPLICA_URL"))
    {
        let db = connect(&primary, &[replica]).await?;
        compare("MariaDB, one GTID replica, causal wait 100 ms", &db).await?;
    }
    Ok(())
}
