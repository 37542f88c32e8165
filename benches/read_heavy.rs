//! A read-heavy workload, the library against hand-routed raw SeaORM, side by side in one run.
//!
//! ```text
//! scripts/bench.sh read_heavy          # starts the loopback cluster, runs this, stops it
//! cargo bench --bench read_heavy       # with SOR_PG_PRIMARY_URL / SOR_PG_REPLICA_URL set
//! ```
//!
//! Each unit is, at random, a point read (90 %: `find_by_id` of a random existing banner) or a
//! write (10 %: insert a banner). 1, 4 and 16 tasks run units back to back, against the primary
//! and the replica that does not lag (`SOR_PG_REPLICA_URL`; the lagging one is left out). The
//! sides:
//!
//! - **raw**: what users write today. Two `DatabaseConnection`s from `sea_orm::Database::connect`
//!   with SeaORM's default options (so sqlx's `test_before_acquire` is on), reads in autocommit
//!   on the replica, writes in a `begin()`/`commit()` transaction on the primary.
//! - **library**: a `ReplicatedDatabase` built from the same two URLs, with the default
//!   monitor (a check per node every 500 ms, on its own connection); reads in
//!   `begin_read_only()` units (on the replica's read-only sessions), writes in
//!   `begin_read_write()` units.
//! - **raw, second pools** (A/A control): the raw side again, on pools of its own. Its ratio to
//!   raw is the noise of this machine.
//! - **raw, no ping before acquire**: the raw side with `test_before_acquire(false)`, which
//!   the library's pools also set; it shows what that ping costs by itself.
//! - **held connections, no ping** (a prototype, not the library): the statements SeaORM
//!   builds, run with sqlx on connections taken from the pool once and kept in a stack of the
//!   bench's own, so that sqlx's ping on release (which no pool option turns off) never runs
//!   either; reads are mapped to the model by SeaORM. Writes send `BEGIN`, the INSERT and
//!   `COMMIT`. It shows what a read costs at one round trip.
//! - **sqlx pool, no SeaORM layer**: the same statements with sqlx, but each unit takes its
//!   connection from sqlx's pool (no ping before acquire) and gives it back (ping on release):
//!   the library's round trips without SeaORM's connection layer.
//!
//! `SOR_BENCH_SIDES` (e.g. `1,4`) keeps only some sides (0, raw, always runs).
//!
//! Every pool has the same size (`SOR_BENCH_POOL`, default 10, sqlx's default), and every side
//! keeps its pools for the whole run. The sides take turns in short rounds (`SOR_BENCH_ROUND_MS`,
//! default 1000 ms), in a fresh random order every round, until each has run `SOR_BENCH_SECS`
//! (default 5) per task count, so drift on this shared 2-core machine hits them alike.
//! Reported per side: units per second over all its rounds and the ratio to raw; the median,
//! over rounds, of its throughput over raw's in the same round (less moved by a burst of
//! other work that hits one side's round); p50/p99 latency of reads and of writes.
//!
//! Then, unless `SOR_BENCH_COUNT_UNITS=0`, round trips: raw, library, raw without the ping and
//! held connections run the same workload again (`SOR_BENCH_COUNT_UNITS` units, default 4000) through a loopback proxy that counts what
//! the client sends ([`round_trips`]): statements, sqlx's pings (a bare `Sync`) and TCP sends,
//! per read on the replica and per write on the primary. The proxy slows everything down, so
//! these runs are not timed. The library's monitor ticks once an hour there, so that its checks
//! are not counted.
//!
//! Other settings: `SOR_BENCH_TASKS` (default `1,4,16`); `SOR_BENCH_WRITE_PERCENT` (default
//! 10; 0 or 100 to look at reads or writes alone).

#[path = "support/round_trips.rs"]
mod round_trips;

use std::sync::Arc;
use std::time::{Duration, Instant};

use entity::banner;
use sea_orm::sqlx::{self, pool::PoolConnection, postgres::PgPoolOptions, Postgres};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectOptions, ConnectionTrait, Database,
    DatabaseConnection, DbBackend, DbErr, EntityTrait, FromQueryResult, QueryFilter, QueryResult,
    QuerySelect, QueryTrait, TransactionTrait, Values,
};
use sea_orm_replica::{MigrateOptions, NodeConfig, ReplicatedDatabase};
use sea_query_sqlx::SqlxValues;

use round_trips::{host_port, Counts, Proxy};

/// Banners read by the point reads.
const SEED_ROWS: usize = 1_000;
/// Share of units that write, in percent, unless `SOR_BENCH_WRITE_PERCENT` says otherwise.
const WRITE_PERCENT: u32 = 10;
/// Name of every row this bench writes (deleted at the end).
const TAG: &str = "read-heavy-bench";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!(
            "{name} is not set: run scripts/bench.sh read_heavy (it starts the loopback cluster)"
        );
        std::process::exit(2)
    })
}

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One way of running the workload.
enum Side {
    Raw {
        primary: DatabaseConnection,
        replica: DatabaseConnection,
    },
    Library(ReplicatedDatabase),
    /// SeaORM's statements on connections held outside sqlx's pool: no ping at all.
    Held {
        primary: Held,
        replica: Held,
    },
}

/// Connections taken from an sqlx pool once and then kept in a stack of our own, so that
/// neither sqlx's ping before acquire nor its ping on release ever runs. A semaphore of the
/// pool's size bounds the connections out of the pool, so a task that finds the stack empty
/// can always get one from the pool. A connection whose statement failed is dropped (sqlx then
/// pings or closes it); nothing here is cancelled.
///
/// With `stash` false, every connection goes back to sqlx's pool after its unit (and sqlx
/// pings it there): the same path without SeaORM's connection layer, to tell the two apart.
struct Held {
    pool: sqlx::PgPool,
    permits: Arc<tokio::sync::Semaphore>,
    idle: std::sync::Mutex<Vec<PoolConnection<Postgres>>>,
    stash: bool,
}

/// A connection out of the pool, and the permit that counts it.
struct Taken {
    conn: PoolConnection<Postgres>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Held {
    fn new(url: &str, pool: u32, stash: bool) -> Result<Held, sqlx::Error> {
        Ok(Held {
            stash,
            pool: PgPoolOptions::new()
                .max_connections(pool)
                .test_before_acquire(false)
                .connect_lazy(url)?,
            permits: Arc::new(tokio::sync::Semaphore::new(pool as usize)),
            idle: std::sync::Mutex::new(Vec::new()),
        })
    }

    async fn take(&self) -> Result<Taken, DbErr> {
        if !self.stash {
            let conn = self.pool.acquire().await.map_err(sqlx_err)?;
            return Ok(Taken {
                conn,
                _permit: None,
            });
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let idle = self.idle.lock().unwrap().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.pool.acquire().await.map_err(sqlx_err)?,
        };
        Ok(Taken {
            conn,
            _permit: Some(permit),
        })
    }

    fn put(&self, taken: Taken) {
        if self.stash {
            self.idle.lock().unwrap().push(taken.conn);
        } // else dropped: back to sqlx's pool, which pings it
    }
}

fn sqlx_err(e: sqlx::Error) -> DbErr {
    DbErr::Custom(e.to_string())
}

fn new_banner() -> banner::ActiveModel {
    banner::ActiveModel {
        name: Set(TAG.into()),
        ..Default::default()
    }
}

impl Side {
    /// Raw SeaORM pools on `primary` and `replica`: `Database::connect` with default options
    /// but the pool size (and, if `ping` is false, no ping before acquire).
    async fn raw(primary: &str, replica: &str, pool: u32, ping: bool) -> Result<Side, DbErr> {
        let options = |url: &str| {
            let mut o = ConnectOptions::new(url.to_owned());
            o.max_connections(pool);
            if !ping {
                o.test_before_acquire(false);
            }
            o
        };
        Ok(Side::Raw {
            primary: Database::connect(options(primary)).await?,
            replica: Database::connect(options(replica)).await?,
        })
    }

    /// The library on the same two servers, pools of the same size.
    async fn library(
        primary: &str,
        replica: &str,
        pool: u32,
        monitor: Option<Duration>,
    ) -> Result<Side, Box<dyn std::error::Error>> {
        let mut b = ReplicatedDatabase::builder()
            .primary_node(NodeConfig::new(primary).max_connections(pool))
            .replica_node(NodeConfig::new(replica).max_connections(pool));
        if let Some(every) = monitor {
            b = b.monitor_interval(every);
        }
        Ok(Side::Library(b.connect().await?))
    }

    /// One unit: a point read of `id`, or a write. Returns false for a read that found
    /// nothing (it must not happen: the rows were replicated before the run).
    async fn unit(&self, write: bool, id: i32) -> Result<bool, DbErr> {
        match (self, write) {
            (Side::Raw { replica, .. }, false) => {
                Ok(banner::Entity::find_by_id(id).one(replica).await?.is_some())
            }
            (Side::Raw { primary, .. }, true) => {
                let txn = primary.begin().await?;
                new_banner().insert(&txn).await?;
                txn.commit().await?;
                Ok(true)
            }
            (Side::Library(db), false) => {
                let unit = db.begin_read_only();
                let found = banner::Entity::find_by_id(id).one(&unit).await?;
                unit.commit().await?;
                Ok(found.is_some())
            }
            (Side::Library(db), true) => {
                let unit = db.begin_read_write();
                new_banner().insert(&unit).await?;
                unit.commit().await?;
                Ok(true)
            }
            (Side::Held { replica, .. }, false) => {
                // the statement SeaORM builds and sends, and SeaORM's own row mapping
                let stmt = banner::Entity::find_by_id(id).build(DbBackend::Postgres);
                let values = SqlxValues(stmt.values.clone().unwrap_or(Values(Vec::new())));
                let mut conn = replica.take().await?;
                let row = sqlx::query_with(sqlx::AssertSqlSafe(stmt.sql.as_str()), values)
                    .fetch_optional(&mut *conn.conn)
                    .await
                    .map_err(sqlx_err)?;
                replica.put(conn);
                let found = row
                    .map(|r| banner::Model::from_query_result(&QueryResult::from(r), ""))
                    .transpose()?;
                Ok(found.is_some())
            }
            (Side::Held { primary, .. }, true) => {
                let mut conn = primary.take().await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe("BEGIN"))
                    .execute(&mut *conn.conn)
                    .await
                    .map_err(sqlx_err)?;
                sqlx::query(r#"INSERT INTO "banner" ("name") VALUES ($1) RETURNING "id", "name", "author_id""#)
                    .bind(TAG)
                    .fetch_one(&mut *conn.conn)
                    .await
                    .map_err(sqlx_err)?;
                sqlx::raw_sql(sqlx::AssertSqlSafe("COMMIT"))
                    .execute(&mut *conn.conn)
                    .await
                    .map_err(sqlx_err)?;
                primary.put(conn);
                Ok(true)
            }
        }
    }
}

/// What one side did in one or more rounds.
#[derive(Default)]
struct Tally {
    reads: u64,
    writes: u64,
    missed: u64,
    failed: u64,
    elapsed: Duration,
    read_us: Vec<u32>,
    write_us: Vec<u32>,
    first_error: Option<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.reads += other.reads;
        self.writes += other.writes;
        self.missed += other.missed;
        self.failed += other.failed;
        self.elapsed += other.elapsed;
        self.read_us.extend(other.read_us);
        self.write_us.extend(other.write_us);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn units_per_s(&self) -> f64 {
        (self.reads + self.writes) as f64 / self.elapsed.as_secs_f64()
    }
}

/// The `p` quantile, in µs (NaN for no samples).
fn percentile(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    f64::from(v[((v.len() - 1) as f64 * p) as usize])
}

/// What the tasks share.
struct Ctx {
    sides: Vec<(&'static str, Side)>,
    ids: Vec<i32>,
    write_percent: u32,
}

/// Runs side `s` with `tasks` tasks, each until `until` (a deadline) or for `units` units.
async fn round(ctx: &Arc<Ctx>, s: usize, tasks: usize, limit: Limit) -> Tally {
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let side = &ctx.sides[s].1;
                let mut rng =
                    fastrand::Rng::with_seed(started.elapsed().as_nanos() as u64 ^ t as u64);
                let mut tally = Tally::default();
                let mut done = 0usize;
                loop {
                    match limit {
                        Limit::Until(deadline) if Instant::now() >= deadline => break,
                        Limit::Units(n) if done >= n => break,
                        _ => {}
                    }
                    done += 1;
                    let write = rng.u32(..100) < ctx.write_percent;
                    let id = ctx.ids[rng.usize(..ctx.ids.len())];
                    let t0 = Instant::now();
                    let outcome = side.unit(write, id).await;
                    let us = t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                    match outcome {
                        Ok(found) => {
                            if write {
                                tally.writes += 1;
                                tally.write_us.push(us);
                            } else {
                                tally.reads += 1;
                                tally.read_us.push(us);
                                if !found {
                                    tally.missed += 1;
                                }
                            }
                        }
                        Err(err) => {
                            tally.failed += 1;
                            if tally.first_error.is_none() {
                                tally.first_error = Some(err.to_string());
                            }
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for h in handles {
        total.add(h.await.expect("bench task panicked"));
    }
    total.elapsed = started.elapsed();
    total
}

#[derive(Clone, Copy)]
enum Limit {
    Until(Instant),
    /// Units per task.
    Units(usize),
}

/// Inserts `SEED_ROWS` banners on the primary and waits until the replica has them all.
async fn seed(
    primary: &DatabaseConnection,
    replica: &DatabaseConnection,
) -> Result<Vec<i32>, DbErr> {
    let seed_tag = format!("{TAG}-seed-{}", std::process::id());
    banner::Entity::insert_many((0..SEED_ROWS).map(|_| banner::ActiveModel {
        name: Set(seed_tag.clone()),
        ..Default::default()
    }))
    .exec(primary)
    .await?;
    let ids: Vec<i32> = banner::Entity::find()
        .select_only()
        .column(banner::Column::Id)
        .filter(banner::Column::Name.eq(seed_tag.as_str()))
        .into_tuple()
        .all(primary)
        .await?;
    let waited = Instant::now();
    loop {
        let on_replica = banner::Entity::find()
            .filter(banner::Column::Name.eq(seed_tag.as_str()))
            .all(replica)
            .await?
            .len();
        if on_replica == ids.len() {
            return Ok(ids);
        }
        if waited.elapsed() > Duration::from_secs(30) {
            return Err(DbErr::Custom("the replica did not catch up in 30 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn report(name: &str, t: &mut Tally, raw_rate: f64, median_ratio: f64) -> String {
    let rate = t.units_per_s();
    let ms = |v: f64| v / 1000.0;
    let (r50, r99) = (
        percentile(&mut t.read_us, 0.5),
        percentile(&mut t.read_us, 0.99),
    );
    let (w50, w99) = (
        percentile(&mut t.write_us, 0.5),
        percentile(&mut t.write_us, 0.99),
    );
    let mut line = format!(
        "| {name:<28} | {rate:>8.0} | {:>6.3}× | {median_ratio:>6.3}× | {:>6.2} / {:>6.2} | {:>6.2} / {:>6.2} | {:>4.1}% |",
        rate / raw_rate,
        ms(r50),
        ms(r99),
        ms(w50),
        ms(w99),
        t.writes as f64 * 100.0 / (t.reads + t.writes).max(1) as f64,
    );
    if t.missed > 0 || t.failed > 0 {
        line += &format!(
            " {} missed, {} failed (first: {})",
            t.missed,
            t.failed,
            t.first_error.as_deref().unwrap_or("-")
        );
    }
    line
}

/// Runs the workload through counting proxies: round trips per read and per write.
async fn count_round_trips(
    primary_url: &str,
    replica_url: &str,
    pool: u32,
    units: usize,
    ids: Vec<i32>,
    write_percent: u32,
    task_counts: &[usize],
) -> Result<(), Box<dyn std::error::Error>> {
    let primary_proxy = Proxy::start(host_port(primary_url)).await?;
    let replica_proxy = Proxy::start(host_port(replica_url)).await?;
    let (p, r) = (
        primary_proxy.url(primary_url),
        replica_proxy.url(replica_url),
    );
    let sides = vec![
        (
            "raw (default options)",
            Side::raw(&p, &r, pool, true).await?,
        ),
        (
            "library",
            Side::library(&p, &r, pool, Some(Duration::from_secs(3600))).await?,
        ),
        (
            "raw, no ping before acquire",
            Side::raw(&p, &r, pool, false).await?,
        ),
        (
            "held connections, no ping",
            Side::Held {
                primary: Held::new(&p, pool, true)?,
                replica: Held::new(&r, pool, true)?,
            },
        ),
    ];
    let ctx = Arc::new(Ctx {
        sides,
        ids,
        write_percent,
    });
    println!("\nRound trips per unit, counted on the wire ({units} units per line, through a proxy; not timed)\n");
    println!("| side | tasks | per read: statements + pings = round trips (sends) | per write: statements + pings = round trips (sends) | connections opened |");
    println!("|---|---|---|---|---|");
    for &tasks in task_counts {
        for s in 0..ctx.sides.len() {
            // warm: connections open, statements prepared
            round(&ctx, s, tasks, Limit::Units(200 / tasks + 1)).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (p0, r0) = (primary_proxy.counts(), replica_proxy.counts());
            let t = round(&ctx, s, tasks, Limit::Units(units / tasks)).await;
            // release pings run in the background after a unit returns
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (dp, dr) = (
                primary_proxy.counts().since(&p0),
                replica_proxy.counts().since(&r0),
            );
            let per = |c: &Counts, n: u64| {
                let n = n.max(1) as f64;
                format!(
                    "{:.2} + {:.2} = **{:.2}** ({:.2})",
                    (c.simple + c.extended) as f64 / n,
                    c.pings as f64 / n,
                    c.round_trips() as f64 / n,
                    c.sends as f64 / n
                )
            };
            let mut note = String::new();
            if t.failed > 0 || t.missed > 0 {
                note = format!(" ({} failed, {} missed)", t.failed, t.missed);
            }
            println!(
                "| {} | {tasks} | {} | {} | {}{note} |",
                ctx.sides[s].0,
                per(&dr, t.reads),
                per(&dp, t.writes),
                dp.connections + dr.connections,
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (primary_url, replica_url) = (env("SOR_PG_PRIMARY_URL"), env("SOR_PG_REPLICA_URL"));
    let secs: f64 = setting("SOR_BENCH_SECS", 5.0);
    let round_ms: u64 = setting("SOR_BENCH_ROUND_MS", 1000);
    let pool: u32 = setting("SOR_BENCH_POOL", 10);
    let count_units: usize = setting("SOR_BENCH_COUNT_UNITS", 4000);
    let write_percent: u32 = setting("SOR_BENCH_WRITE_PERCENT", WRITE_PERCENT).min(100);
    let task_counts: Vec<usize> = std::env::var("SOR_BENCH_TASKS")
        .unwrap_or_else(|_| "1,4,16".into())
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
        .collect();

    let admin = Database::connect(ConnectOptions::new(primary_url.clone())).await?;
    let replica_admin = Database::connect(ConnectOptions::new(replica_url.clone())).await?;
    {
        let wait = MigrateOptions::new().wait_for_replicas(Duration::from_secs(30));
        let db = ReplicatedDatabase::builder()
            .primary(&primary_url)
            .replica(&replica_url)
            .connect()
            .await?;
        db.migrate::<migration::Migrator>(wait).await?;
    }
    let ids = seed(&admin, &replica_admin).await?;

    let sides = vec![
        (
            "raw (default options)",
            Side::raw(&primary_url, &replica_url, pool, true).await?,
        ),
        (
            "library",
            Side::library(&primary_url, &replica_url, pool, None).await?,
        ),
        (
            "raw, second pools (A/A)",
            Side::raw(&primary_url, &replica_url, pool, true).await?,
        ),
        (
            "raw, no ping before acquire",
            Side::raw(&primary_url, &replica_url, pool, false).await?,
        ),
        (
            "held connections, no ping",
            Side::Held {
                primary: Held::new(&primary_url, pool, true)?,
                replica: Held::new(&replica_url, pool, true)?,
            },
        ),
        (
            "sqlx pool, no SeaORM layer",
            Side::Held {
                primary: Held::new(&primary_url, pool, false)?,
                replica: Held::new(&replica_url, pool, false)?,
            },
        ),
    ];
    // SOR_BENCH_SIDES: a comma-separated list of side numbers (0 = raw, always kept)
    let sides = match std::env::var("SOR_BENCH_SIDES") {
        Ok(list) => {
            let keep: Vec<usize> = list
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect();
            sides
                .into_iter()
                .enumerate()
                .filter(|(i, _)| *i == 0 || keep.contains(i))
                .map(|(_, s)| s)
                .collect()
        }
        Err(_) => sides,
    };
    let ctx = Arc::new(Ctx {
        sides,
        ids: ids.clone(),
        write_percent,
    });
    let round_len = Duration::from_millis(round_ms);
    let mut order_rng = fastrand::Rng::with_seed(8);
    let rounds = ((secs * 1000.0) / round_ms as f64).ceil().max(1.0) as usize;
    println!(
        "PostgreSQL on loopback (primary + one streaming replica); {}% point reads, {}% inserts; pools of {pool} per node and side; \
         {rounds} rounds of {round_ms} ms per side and task count, sides in a random order every round",
        100 - write_percent,
        write_percent
    );
    for &tasks in &task_counts {
        // warm-up: open the pools' connections, prepare the statements
        for s in 0..ctx.sides.len() {
            round(&ctx, s, tasks, Limit::Until(Instant::now() + round_len / 4)).await;
        }
        let n = ctx.sides.len();
        let mut tallies: Vec<Tally> = ctx.sides.iter().map(|_| Tally::default()).collect();
        // per round: each side's throughput over raw's in the same round
        let mut round_ratios: Vec<Vec<f64>> = vec![Vec::new(); n];
        let mut order: Vec<usize> = (0..n).collect();
        for _ in 0..rounds {
            // a fresh order every round: no side always follows the same one
            order_rng.shuffle(&mut order);
            let mut rates = vec![0.0; n];
            for &s in &order {
                let t = round(&ctx, s, tasks, Limit::Until(Instant::now() + round_len)).await;
                rates[s] = t.units_per_s();
                tallies[s].add(t);
            }
            for s in 0..n {
                round_ratios[s].push(rates[s] / rates[0]);
            }
        }
        let raw_rate = tallies[0].units_per_s();
        println!("\n{tasks} task(s)\n");
        println!("| side | units/s | vs raw | vs raw, median of rounds | read p50 / p99 ms | write p50 / p99 ms | writes |");
        println!("|---|---|---|---|---|---|---|");
        for (s, t) in tallies.iter_mut().enumerate() {
            let median = {
                let v = &mut round_ratios[s];
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            println!("{}", report(ctx.sides[s].0, t, raw_rate, median));
        }
    }
    for (_, side) in &ctx.sides {
        if let Side::Library(db) = side {
            println!("\n{}", db.stats());
        }
    }
    drop(ctx);

    if count_units > 0 {
        count_round_trips(
            &primary_url,
            &replica_url,
            pool,
            count_units,
            ids,
            write_percent,
            &task_counts,
        )
        .await?;
    }

    admin
        .execute_unprepared(&format!("DELETE FROM banner WHERE name LIKE '{TAG}%'"))
        .await?;
    Ok(())
}
