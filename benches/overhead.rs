//! What sea-orm-replica costs over raw SeaORM, measured side by side in one run.
//!
//! ```text
//! scripts/bench.sh                         # starts the loopback cluster, runs this, stops it
//! cargo bench --bench overhead             # with SOR_PG_PRIMARY_URL / SOR_PG_REPLICA_URL set
//! scripts/bench-instructions.sh            # client instructions per operation (callgrind)
//! ```
//!
//! Each comparison alternates single raw SeaORM calls and sea-orm-replica calls (swapping which
//! goes first every time) and reports medians of the individual latencies, so drift on a shared
//! machine hits both sides alike. A/A controls (raw against raw) show the noise floor.
//!
//! # Making the two sides comparable
//!
//! Read-only units no longer run on the pool handed to the builder: every node has a
//! read-write pool and a separate pool of read-only sessions that the library builds itself
//! (with `test_before_acquire(false)`). So "one connection per node, shared by both sides" can
//! no longer be had by handing raw SeaORM's pools to the builder. Instead the handle is built
//! from the URLs with one connection per pool, and each operation is compared twice:
//!
//! - **same session** (the figure the 1.05× targets are about): raw SeaORM runs on the
//!   handle's own pools, [`Node::read_connection`](sea_orm_replica::Node::read_connection) of
//!   the replica for the point SELECT and [`Node::connection`](sea_orm_replica::Node::connection)
//!   of the primary for the INSERT, asked for at each operation. Both sides then talk to the
//!   very same server backend: the difference is what the library does on the client (routing,
//!   the read-only lexer, the unit, the held transaction and its closing message) and what it
//!   saves (the library keeps its connection between uses, where raw SeaORM gives it back to
//!   sqlx's pool, which pings it; asking for the pool gives the library's idle connection back
//!   to sqlx first, and raw SeaORM waits for that ping too). On a 2-core machine that also runs the servers, two separate
//!   connections differ by which backend shares a core with the client (an earlier A/A
//!   control read 0.77×–1.26×); one shared connection removes that.
//! - **as users connect**: raw SeaORM on pools of its own from `Database::connect` with
//!   SeaORM's default options (`test_before_acquire` on) and one connection, which is what a
//!   user who routes by hand has. This includes what the library saves (no ping before
//!   acquire) and the noise of separate connections; its A/A control (two such pools against
//!   each other) shows how much of that noise there is.
//!
//! The background monitor ticks once an hour here: its checks run on their own connection
//! now, but they are background work, not per-operation cost.

use std::hint::black_box;
use std::time::{Duration, Instant};

use entity::banner;
use sea_orm::sqlx;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectOptions, Database, DatabaseConnection, DbBackend,
    DbErr, EntityTrait, QueryTrait, TransactionTrait,
};
use sea_orm_replica::backend::Dialect;
use sea_orm_replica::unit::statement_kind::{self, check_read_only};
use sea_orm_replica::{
    MigrateOptions, NodeConfig, ReadOnly, ReadWrite, ReplicatedDatabase, UnitOptions,
};

const OPS: usize = 10_000;
const WARMUP: usize = 500;

/// One measured operation.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// `find_by_id` in autocommit, raw SeaORM on the handle's read-only session (replica).
    RawSelect,
    /// `find_by_id` in autocommit on a raw pool of SeaORM's default options (replica).
    UserSelect,
    /// The same on a second such pool (A/A control).
    UserSelect2,
    /// `find_by_id` in a read-only unit.
    UnitSelect,
    /// `find_by_id` in a snapshot read-only unit (BEGIN / SELECT / COMMIT).
    SnapshotSelect,
    /// one INSERT in a raw SeaORM transaction on the handle's read-write pool (primary).
    RawInsert,
    /// one INSERT in the closure form, `read_write`.
    ClosureInsert,
    /// one INSERT in the replayed closure form, `read_write_replayed` (its identity row rides
    /// in the COMMIT message).
    ReplayedInsert,
    /// one INSERT in a raw SeaORM transaction on a pool of SeaORM's default options (primary).
    UserInsert,
    /// The same on a second such pool (A/A control).
    UserInsert2,
    /// one INSERT in a read-write unit.
    UnitInsert,
    /// one INSERT in a causal read-write unit committed with `commit_causal()` (a token).
    UnitInsertCausal,
    /// What a read-write unit sends, by hand on a held sqlx connection of the handle's
    /// read-write pool: `BEGIN READ WRITE`, the INSERT, `COMMIT` alone.
    HeldInsert,
    /// The same, with the closing message a unit sends: `COMMIT` and the session reset
    /// ([`Dialect::end_transaction_sql`]).
    HeldInsertReset,
}

/// What the operations run against.
struct Ctx {
    /// The handle, one connection per pool.
    db: ReplicatedDatabase,
    /// Raw SeaORM as users connect: default options, one connection.
    user_primary: [DatabaseConnection; 2],
    user_replica: [DatabaseConnection; 2],
    id: i32,
}

impl Ctx {
    /// The handle's read-write pool on the primary, asked for at each use: the library's idle
    /// held connection goes back to it first (`Node::connection`).
    fn same_primary(&self) -> DatabaseConnection {
        self.db.primary().connection().clone()
    }

    /// The handle's read-only pool on the replica, likewise.
    fn same_replica(&self) -> Result<DatabaseConnection, DbErr> {
        let replica = self.db.replicas().next();
        let replica = replica.ok_or_else(|| DbErr::Custom("no replica".into()))?;
        Ok(replica.read_connection().clone())
    }
}

/// A point SELECT in autocommit.
async fn select(conn: &DatabaseConnection, id: i32) -> Result<Option<banner::Model>, DbErr> {
    banner::Entity::find_by_id(id).one(conn).await
}

/// One INSERT in a raw SeaORM transaction.
async fn insert(conn: &DatabaseConnection) -> Result<(), DbErr> {
    let txn = conn.begin().await?;
    black_box(
        banner::ActiveModel {
            name: Set("bench".into()),
            ..Default::default()
        }
        .insert(&txn)
        .await?,
    );
    txn.commit().await
}

fn sqlx_err(e: sqlx::Error) -> DbErr {
    DbErr::Custom(e.to_string())
}

/// The message that ends a read-write unit that wrote, as `Dialect::end_transaction_sql`
/// builds it: a statement that fails in an aborted transaction, `COMMIT`, the session reset.
fn unit_commit_sql() -> String {
    let reset = Dialect(DbBackend::Postgres)
        .session_reset_sql()
        .unwrap_or_default();
    format!("SELECT 1 AS sor_alive; COMMIT; {reset}")
}

/// `BEGIN READ WRITE`, the INSERT SeaORM sends (prepared, bound) and `end` (one simple-query
/// message, its rows read like a unit reads them), on a connection held from the handle's
/// read-write pool: the unit's wire traffic without the unit.
async fn held_insert(c: &Ctx, end: String) -> Result<(), sqlx::Error> {
    let mut conn = c
        .same_primary()
        .get_postgres_connection_pool()
        .acquire()
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe("BEGIN READ WRITE"))
        .execute(&mut *conn)
        .await?;
    black_box(
        sqlx::query(
            r#"INSERT INTO "banner" ("name") VALUES ($1) RETURNING "id", "name", "author_id""#,
        )
        .bind("bench")
        .fetch_one(&mut *conn)
        .await?,
    );
    black_box(
        sqlx::raw_sql(sqlx::AssertSqlSafe(end))
            .fetch_all(&mut *conn)
            .await?,
    );
    Ok(())
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "raw-select" => Op::RawSelect,
            "user-select" => Op::UserSelect,
            "unit-select" => Op::UnitSelect,
            "snapshot-select" => Op::SnapshotSelect,
            "raw-insert" => Op::RawInsert,
            "user-insert" => Op::UserInsert,
            "unit-insert" => Op::UnitInsert,
            "unit-insert-causal" => Op::UnitInsertCausal,
            "held-insert" => Op::HeldInsert,
            "held-insert-reset" => Op::HeldInsertReset,
            "closure-insert" => Op::ClosureInsert,
            "replayed-insert" => Op::ReplayedInsert,
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
                black_box(select(&c.same_replica()?, c.id).await?);
            }
            Op::UserSelect => {
                black_box(select(&c.user_replica[0], c.id).await?);
            }
            Op::UserSelect2 => {
                black_box(select(&c.user_replica[1], c.id).await?);
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
            Op::RawInsert => insert(&c.same_primary()).await?,
            Op::UserInsert => insert(&c.user_primary[0]).await?,
            Op::UserInsert2 => insert(&c.user_primary[1]).await?,
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
            Op::ClosureInsert => {
                let saved =
                    c.db.read_write(|u| Box::pin(async move { new_banner().insert(u).await }))
                        .await;
                black_box(saved.map_err(|e| DbErr::Custom(e.to_string()))?);
            }
            Op::ReplayedInsert => {
                let saved = c
                    .db
                    .read_write_replayed(|u| Box::pin(async move { new_banner().insert(u).await }))
                    .await;
                black_box(saved.map_err(|e| DbErr::Custom(e.to_string()))?);
            }
            Op::HeldInsert => held_insert(c, "COMMIT".into()).await.map_err(sqlx_err)?,
            Op::HeldInsertReset => {
                // SOR_BENCH_END: try another closing message instead of the library's
                let end = std::env::var("SOR_BENCH_END").unwrap_or_else(|_| unit_commit_sql());
                held_insert(c, end).await.map_err(sqlx_err)?
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
    let (primary_url, replica_url) = (env("SOR_PG_PRIMARY_URL"), env("SOR_PG_REPLICA_URL"));
    // as a user routing by hand connects: SeaORM's default options, one connection
    let user = |url: &str| {
        let mut o = ConnectOptions::new(url.to_owned());
        o.max_connections(1).min_connections(1);
        Database::connect(o)
    };
    let user_primary = [user(&primary_url).await?, user(&primary_url).await?];
    let user_replica = [user(&replica_url).await?, user(&replica_url).await?];
    // the handle from the same URLs, one connection per pool (read-write and read-only on
    // each node); its own pools are also where the "same session" raw side runs
    let db = ReplicatedDatabase::builder()
        .primary_node(NodeConfig::new(&primary_url).max_connections(1))
        .replica_node(NodeConfig::new(&replica_url).max_connections(1))
        .monitor_interval(Duration::from_secs(3600))
        .connect()
        .await?;
    let wait = MigrateOptions::new().wait_for_replicas(Duration::from_secs(30));
    db.migrate::<migration::Migrator>(wait).await?;
    let seeded = banner::ActiveModel {
        name: Set("bench".into()),
        ..Default::default()
    }
    .insert(&user_primary[0])
    .await?;
    db.migrate::<migration::Migrator>(wait).await?; // waits for the seeded row to replicate
    let c = Ctx {
        db,
        user_primary,
        user_replica,
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
        .primary_connection("primary", c.same_primary())
        .monitor_interval(Duration::from_secs(3600));
    for i in 0..8 {
        eight = eight.replica_connection(format!("r{i}"), c.user_replica[1].clone());
    }
    let eight = eight.connect().await?;
    let route_ns = per_call_ns(1_000_000, || async {
        let _ = black_box(eight.route::<ReadOnly>());
    })
    .await;
    println!("routing decision among 8 replicas: {route_ns:.0} ns (target < 1 µs)");
    let point_select = banner::Entity::find_by_id(c.id)
        .build(DbBackend::Postgres)
        .sql;
    let lexer_ns = per_call_ns(1_000_000, || async {
        let _ = black_box(check_read_only(
            black_box(&point_select),
            statement_kind::Dialect::Postgres,
        ));
    })
    .await;
    println!(
        "read-only check (the lexer) on the point SELECT ({} bytes): {lexer_ns:.0} ns\n",
        point_select.len()
    );
    drop(eight);

    let same = "same read-only session";
    let users = "own pool, SeaORM's default options";
    for (name, target, raw, ours) in [
        (
            format!("point SELECT: read-only unit vs raw autocommit (replica, {same})"),
            "≤ 1.05×",
            Op::RawSelect,
            Op::UnitSelect,
        ),
        (
            format!("point SELECT: read-only unit vs raw autocommit as users connect (replica, {users})"),
            "what a user sees",
            Op::UserSelect,
            Op::UnitSelect,
        ),
        (
            format!("point SELECT: snapshot unit (BEGIN…COMMIT) vs raw autocommit ({same})"),
            "for the record",
            Op::RawSelect,
            Op::SnapshotSelect,
        ),
        (
            "INSERT: read-write unit vs raw SeaORM transaction (primary, same read-write session)".into(),
            "≤ 1.05×",
            Op::RawInsert,
            Op::UnitInsert,
        ),
        (
            format!("INSERT: read-write unit vs raw SeaORM transaction as users connect (primary, {users})"),
            "what a user sees",
            Op::UserInsert,
            Op::UnitInsert,
        ),
        (
            "INSERT + causal token: causal unit, commit_causal() vs raw SeaORM transaction (same session)".into(),
            "no extra round trip",
            Op::RawInsert,
            Op::UnitInsertCausal,
        ),
        (
            "INSERT: replayed read-write closure (identity row in the COMMIT message) vs plain read_write closure (same session)".into(),
            "≤ 1.05×",
            Op::ClosureInsert,
            Op::ReplayedInsert,
        ),
        (
            "for the record, INSERT by hand on a held connection: BEGIN, INSERT, COMMIT vs raw SeaORM transaction (same session)".into(),
            "the unit's wire traffic, no reset",
            Op::RawInsert,
            Op::HeldInsert,
        ),
        (
            "for the record, INSERT by hand on a held connection: a unit's closing message (SELECT 1; COMMIT; session reset) vs COMMIT alone (same session)".into(),
            "what the reset costs",
            Op::HeldInsert,
            Op::HeldInsertReset,
        ),
        (
            format!("control, point SELECT: raw vs raw ({same}, A/A)"),
            "1.00× ± noise",
            Op::RawSelect,
            Op::RawSelect,
        ),
        (
            "control, INSERT: raw vs raw (same read-write session, A/A)".into(),
            "1.00× ± noise",
            Op::RawInsert,
            Op::RawInsert,
        ),
        (
            format!("control, point SELECT: two raw pools ({users}, A/A)"),
            "1.00× ± noise",
            Op::UserSelect,
            Op::UserSelect2,
        ),
        (
            format!("control, INSERT: two raw pools ({users}, A/A)"),
            "1.00× ± noise",
            Op::UserInsert,
            Op::UserInsert2,
        ),
    ] {
        // SOR_BENCH_ONLY: run only the comparisons whose name contains this text
        if std::env::var("SOR_BENCH_ONLY").is_ok_and(|only| !name.contains(&only)) {
            continue;
        }
        compare(&c, &name, target, raw, ours).await?;
    }

    println!("\n{}", c.db.stats());
    Ok(())
}
