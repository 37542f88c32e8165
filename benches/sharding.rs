//! What sharding costs: the sharded handle against an unsharded one, the key → shard decision,
//! a fan-out read against one node holding every row, and two-phase commit against a
//! one-shard commit. Ratios are measured side by side in one run.
//!
//! ```text
//! scripts/bench.sh sharding                       # starts the loopback cluster, runs this, stops it
//! cargo bench --bench sharding                    # with SOR_PG_PRIMARY_URL / SOR_PG_REPLICA_URL set
//! SOR_BENCH_PARTS=decision cargo bench --bench sharding   # only some parts (units, decision, fan_out, two_phase)
//! ```
//!
//! Method (as `benches/overhead.rs`): each comparison alternates single operations of the two
//! sides, swapping which goes first every time, and reports the medians of the individual
//! latencies, their ratio, the p90 ratio and the client CPU per operation (thread CPU time on
//! a current-thread runtime). A/A controls (a side against itself, or against a twin) show
//! the noise floor. Every handle has one connection per pool and a background monitor that
//! ticks once an hour. `SOR_BENCH_OPS` overrides the operations per side, `SOR_BENCH_ONLY`
//! runs only the comparisons whose name contains a text.
//!
//! 1. **units**: a read-only unit doing a point `SELECT` by primary key (`entity::banner`),
//!    and a read-write unit doing one `INSERT`, opened through `shards.shard(key)` against
//!    the same unit opened on
//!    - the very same [`ReplicatedDatabase`]: shard `a`'s own handle, so both sides use the
//!      same pools and connections and the difference is only the key → shard decision and
//!      the indirection (what the ≤ 1.02× target is about);
//!    - an unsharded handle built from the same URLs with pools of its own (as a user who
//!      does not shard has), with its own A/A control (two such handles).
//!
//!    The sharded handle has two shards, `a` and `b`, both on the same URLs (own pools); the
//!    keys used go to `a`.
//! 2. **decision**: [`Hash::shard_of`] on an `i64`, a 36-byte string (a uuid's text) and a
//!    uuid in a tight loop, [`Sharding::locate`] through the trait object (as the handle
//!    calls it) for [`Hash`] and [`Modulo`], the handle's `locate` / `shard`, and
//!    `begin_write()` with no statement; ns per call and heap allocations per call (a counting
//!    global allocator, on this thread only; it costs every allocation of the bench, both
//!    sides alike, a thread-local increment). Says so when `src/shard/pg_hash.rs` is a stub.
//! 3. **fan_out**: `ORDER BY … LIMIT 20` over 4 shards against the same query on one node
//!    holding all the rows. Five databases on the loopback primary, `sor_bench_s0` to
//!    `sor_bench_s3` and `sor_bench_all` (replicated to the replica like any other), 20,000
//!    rows split by [`Hash`] on `customer_id` over the four and all of them in the fifth.
//!    Both sides read on the replica: each shard is its database on the primary and on the
//!    replica, and the single side is a read-only unit on an unsharded handle over
//!    `sor_bench_all` (primary and replica). Two orders: by the primary key (an index scan),
//!    and by an unindexed column (every row read). The databases are dropped at the end.
//! 4. **two_phase**: a two-phase unit inserting one row on each of two shards, then commit,
//!    against a one-shard unit (`begin_write`) inserting one row, and against two one-shard
//!    units one after the other. This needs a second PostgreSQL server: PostgreSQL's prepared
//!    transaction ids are per server, and the library prepares the same id on every shard,
//!    so two shards that are databases of one server cannot commit in two phases. Shard `b`
//!    is `SOR_PG_SHARD_B_PRIMARY_URL` / `SOR_PG_SHARD_B_REPLICA_URL`; both primaries need
//!    `max_prepared_transactions` above zero. Otherwise the part is skipped, saying why. The
//!    two-phase shards have two connections in their read-write pools
//!    (`SOR_BENCH_2PC_POOL`): the decision row goes to the coordinator's primary on a second
//!    connection while the unit still holds the first (with one, the commit waits for the
//!    acquire timeout and fails). One two-phase commit runs first: if it fails, the error is
//!    printed, `recover` finishes what it left, and the library's comparisons are skipped.
//!    For the record, the same protocol is also sent by hand (sqlx on held connections,
//!    decisions in a table of the bench's own) against one shard's statements by hand.
//!
//! The machine these run on is a shared 2-core box that also runs the servers: compare
//! within a run, and read every ratio next to its A/A control.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entity::banner;
use sea_orm::sqlx::{self, Connection, PgConnection};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectOptions, ConnectionTrait, Database,
    DatabaseConnection, DbBackend, EntityTrait, PaginatorTrait, QueryOrder, QuerySelect, Schema,
    Statement,
};
use sea_orm_replica::backend::Dialect;
use sea_orm_replica::shard::{Hash, Modulo, ShardKey, ShardedDatabase, Sharding};
use sea_orm_replica::{MigrateOptions, NodeConfig, ReplicatedDatabase, Role};
use tokio::sync::Mutex;
use uuid::Uuid;

const OPS: usize = 10_000;
const WARMUP: usize = 500;
const FAN_OUT_OPS: usize = 5_000;
const FAN_OUT_SCAN_OPS: usize = 2_000;
const TWO_PHASE_OPS: usize = 2_000;
const ROWS: i64 = 20_000;
const FAN_OUT_SHARDS: usize = 4;
/// Calls per timing of a synchronous decision; the median of `REPEATS` timings is reported.
const DECISIONS: usize = 2_000_000;
const ASYNC_DECISIONS: usize = 500_000;
const REPEATS: usize = 5;
const MONITOR: Duration = Duration::from_secs(3600);

type BoxErr = Box<dyn std::error::Error>;
type Res = Result<(), BoxErr>;

/// Counts heap allocations of the current thread, to show which decisions allocate.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_allocation() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.try_with(Cell::get).unwrap_or(0)
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only a
// thread-local `Cell` that needs no allocation and has no destructor.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The table of the fan-out part: orders, sharded by customer.
mod bench_order {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sor_bench_order")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub customer_id: i64,
        /// Not indexed: ordering by it reads every row.
        pub amount: i64,
        pub note: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

// ---------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------

/// One measured operation on a context.
trait Op: Copy {
    type Ctx;
    async fn run(self, c: &Self::Ctx) -> Res;
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
    async fn measure<O: Op>(&mut self, op: O, c: &O::Ctx) -> Res {
        let (t, cpu) = (Instant::now(), thread_cpu_us());
        op.run(c).await?;
        self.wall_us.push(t.elapsed().as_secs_f64() * 1e6);
        self.cpu_us.push(thread_cpu_us() - cpu);
        Ok(())
    }
}

/// Operations per side: `default`, or `SOR_BENCH_OPS`.
fn ops(default: usize) -> usize {
    std::env::var("SOR_BENCH_OPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
        .max(1)
}

/// Alternates single `base` and `ours` operations (swapping which goes first every time) and
/// prints medians, their ratio, the p90 ratio and client CPU per operation.
async fn compare<O: Op>(c: &O::Ctx, n: usize, name: &str, target: &str, base: O, ours: O) -> Res {
    // SOR_BENCH_ONLY: run only the comparisons whose name contains this text
    if std::env::var("SOR_BENCH_ONLY").is_ok_and(|only| !name.contains(&only)) {
        return Ok(());
    }
    let n = ops(n);
    for _ in 0..WARMUP.min(n) {
        base.run(c).await?;
        ours.run(c).await?;
    }
    let (mut b, mut o) = (Samples::default(), Samples::default());
    for i in 0..n {
        if i % 2 == 0 {
            b.measure(base, c).await?;
            o.measure(ours, c).await?;
        } else {
            o.measure(ours, c).await?;
            b.measure(base, c).await?;
        }
    }
    let (b50, o50) = (
        percentile(&mut b.wall_us, 0.5),
        percentile(&mut o.wall_us, 0.5),
    );
    let (b90, o90) = (
        percentile(&mut b.wall_us, 0.9),
        percentile(&mut o.wall_us, 0.9),
    );
    let (bc, oc) = (
        percentile(&mut b.cpu_us, 0.5),
        percentile(&mut o.cpu_us, 0.5),
    );
    println!(
        "{name}\n    wall, median: base {b50:>8.1} µs, ours {o50:>8.1} µs → {:.3}× (target {target}); p90 {b90:.1} → {o90:.1} µs, {:.3}×\n    client CPU, median: base {bc:>7.1} µs, ours {oc:>7.1} µs → {:+.1} µs per operation ({n} per side)",
        o50 / r(b50),
        o90 / r(b90),
        oc - bc
    );
    Ok(())
}

/// A divisor that is never zero.
fn r(x: f64) -> f64 {
    if x > 0.0 {
        x
    } else {
        f64::MIN_POSITIVE
    }
}

/// Median ns per call and allocations per call of `f` over `keys`, `DECISIONS` calls a timing.
fn sync_decision<T>(keys: &[T], mut f: impl FnMut(&T) -> usize) -> (f64, f64) {
    let mask = keys.len() - 1; // a power of two
    let mut timings = Vec::with_capacity(REPEATS);
    let mut allocs = 0;
    for _ in 0..REPEATS {
        let before = allocations();
        let t = Instant::now();
        let mut acc = 0usize;
        for i in 0..DECISIONS {
            acc = acc.wrapping_add(f(black_box(&keys[i & mask])));
        }
        timings.push(t.elapsed().as_secs_f64() * 1e9 / DECISIONS as f64);
        allocs = allocations() - before;
        black_box(acc);
    }
    (
        percentile(&mut timings, 0.5),
        allocs as f64 / DECISIONS as f64,
    )
}

/// The same for an async call, `ASYNC_DECISIONS` calls a timing.
async fn async_decision<F: Future<Output = usize>>(mut f: impl FnMut(usize) -> F) -> (f64, f64) {
    let mut timings = Vec::with_capacity(REPEATS);
    let mut allocs = 0;
    for _ in 0..REPEATS {
        let before = allocations();
        let t = Instant::now();
        let mut acc = 0usize;
        for i in 0..ASYNC_DECISIONS {
            acc = acc.wrapping_add(f(black_box(i)).await);
        }
        timings.push(t.elapsed().as_secs_f64() * 1e9 / ASYNC_DECISIONS as f64);
        allocs = allocations() - before;
        black_box(acc);
    }
    (
        percentile(&mut timings, 0.5),
        allocs as f64 / ASYNC_DECISIONS as f64,
    )
}

fn print_decision(what: &str, (ns, allocs): (f64, f64)) {
    println!("    {what:<58} {ns:>7.1} ns/op, {allocs:.2} allocations/op");
}

// ---------------------------------------------------------------------------------------
// Part 1: a one-shard unit through the sharded handle
// ---------------------------------------------------------------------------------------

struct Units {
    /// Shards `a` and `b`, both on the loopback cluster's URLs (pools of their own).
    shards: ShardedDatabase,
    /// Shard `a`'s own handle: the same pools as `shards.shard(key)`.
    direct: ReplicatedDatabase,
    /// Unsharded handles on the same URLs, pools of their own.
    unsharded: [ReplicatedDatabase; 2],
    /// An integer key on shard `a`.
    key: i64,
    /// A 36-byte string key (a uuid's text) on shard `a`.
    key_text: String,
    /// The banner the point SELECT reads.
    id: i32,
}

#[derive(Debug, Clone, Copy)]
enum UnitOp {
    /// Read-only unit on shard `a`'s own handle.
    DirectSelect,
    /// Read-only unit on `shards.shard(i64)`.
    ShardedSelect,
    /// Read-only unit on `shards.shard(&str)`.
    ShardedSelectText,
    /// Read-only unit on an unsharded handle with pools of its own.
    UnshardedSelect,
    /// The same on a second such handle (A/A control).
    UnshardedSelect2,
    /// Read-write unit on shard `a`'s own handle.
    DirectInsert,
    /// Read-write unit on `shards.shard(i64)`.
    ShardedInsert,
    /// `shards.begin_write()`, `on(i64)`, commit.
    ShardedWriteInsert,
    /// Read-write unit on an unsharded handle.
    UnshardedInsert,
    /// The same on a second one (A/A control).
    UnshardedInsert2,
}

fn new_banner() -> banner::ActiveModel {
    banner::ActiveModel {
        name: Set("bench".into()),
        ..Default::default()
    }
}

/// A point SELECT in a read-only unit of `db`.
async fn select_in(db: &ReplicatedDatabase, id: i32) -> Res {
    let unit = db.begin_read_only();
    black_box(banner::Entity::find_by_id(id).one(&unit).await?);
    unit.commit().await?;
    Ok(())
}

/// One INSERT in a read-write unit of `db`.
async fn insert_in(db: &ReplicatedDatabase) -> Res {
    let unit = db.begin_read_write();
    black_box(new_banner().insert(&unit).await?);
    unit.commit().await?;
    Ok(())
}

impl Op for UnitOp {
    type Ctx = Units;

    async fn run(self, c: &Units) -> Res {
        match self {
            UnitOp::DirectSelect => select_in(&c.direct, c.id).await,
            UnitOp::ShardedSelect => select_in(c.shards.shard(c.key).await?, c.id).await,
            UnitOp::ShardedSelectText => {
                select_in(c.shards.shard(c.key_text.as_str()).await?, c.id).await
            }
            UnitOp::UnshardedSelect => select_in(&c.unsharded[0], c.id).await,
            UnitOp::UnshardedSelect2 => select_in(&c.unsharded[1], c.id).await,
            UnitOp::DirectInsert => insert_in(&c.direct).await,
            UnitOp::ShardedInsert => insert_in(c.shards.shard(c.key).await?).await,
            UnitOp::ShardedWriteInsert => {
                let write = c.shards.begin_write();
                black_box(new_banner().insert(write.on(c.key).await?).await?);
                write.commit().await?;
                Ok(())
            }
            UnitOp::UnshardedInsert => insert_in(&c.unsharded[0]).await,
            UnitOp::UnshardedInsert2 => insert_in(&c.unsharded[1]).await,
        }
    }
}

/// A cluster's builder: one connection per pool, the monitor hourly.
fn cluster(
    primary: &str,
    replica: &str,
    rw_pool: u32,
) -> sea_orm_replica::ReplicatedDatabaseBuilder {
    ReplicatedDatabase::builder()
        .primary_node(NodeConfig::new(primary).max_connections(rw_pool))
        .replica_node(NodeConfig::new(replica).max_connections(1))
        .monitor_interval(MONITOR)
}

/// The first key `make(i)` for i = 0, 1, … that `Hash` puts on shard `shard` of `n`.
fn key_on<K: Into<ShardKey> + Clone>(shard: usize, n: usize, make: impl Fn(u64) -> K) -> K {
    (0..10_000_u64)
        .map(&make)
        .find(|k| Hash::shard_of(&k.clone().into(), n) == shard)
        .expect("no key among 10,000 lands on the shard: is Hash constant?")
}

async fn units_part(primary: &str, replica: &str) -> Result<Units, BoxErr> {
    let shards = ShardedDatabase::builder()
        .shard("a", cluster(primary, replica, 1))
        .shard("b", cluster(primary, replica, 1))
        .sharding(Hash)
        .connect()
        .await?;
    let direct = shards.shard_named("a")?.clone();
    let unsharded = [
        cluster(primary, replica, 1).connect().await?,
        cluster(primary, replica, 1).connect().await?,
    ];
    let wait = MigrateOptions::new().wait_for_replicas(Duration::from_secs(30));
    unsharded[0].migrate::<migration::Migrator>(wait).await?;
    let unit = unsharded[0].begin_read_write();
    let seeded = new_banner().insert(&unit).await?;
    unit.commit().await?;
    unsharded[0].migrate::<migration::Migrator>(wait).await?; // waits for the row to replicate
    let key = key_on(0, 2, |i| i as i64);
    let key_text = key_on(0, 2, |i| {
        Uuid::from_u128(u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
            .hyphenated()
            .to_string()
    });
    Ok(Units {
        shards,
        direct,
        unsharded,
        key,
        key_text,
        id: seeded.id,
    })
}

async fn run_units(c: &Units) -> Res {
    println!("== 1. a one-shard unit: sharded handle vs unsharded ==\n");
    let same = "same pools: shard a's own handle";
    let own = "own pools: an unsharded handle on the same URLs";
    use UnitOp::*;
    for (name, target, base, ours) in [
        (
            format!("point SELECT, read-only unit: shards.shard(i64) vs {same}"),
            "≤ 1.02×",
            DirectSelect,
            ShardedSelect,
        ),
        (
            format!("point SELECT, read-only unit: shards.shard(&str, 36 bytes) vs {same}"),
            "for the record",
            DirectSelect,
            ShardedSelectText,
        ),
        (
            format!("point SELECT, read-only unit: shards.shard(i64) vs {own}"),
            "≤ 1.02× ± noise",
            UnshardedSelect,
            ShardedSelect,
        ),
        (
            format!("INSERT, read-write unit: shards.shard(i64) vs {same}"),
            "≤ 1.02×",
            DirectInsert,
            ShardedInsert,
        ),
        (
            format!("INSERT: shards.begin_write().on(i64) vs read-write unit, {same}"),
            "for the record",
            DirectInsert,
            ShardedWriteInsert,
        ),
        (
            format!("INSERT, read-write unit: shards.shard(i64) vs {own}"),
            "≤ 1.02× ± noise",
            UnshardedInsert,
            ShardedInsert,
        ),
        (
            format!("control, point SELECT: shard a's handle vs itself (A/A, {same})"),
            "1.00× ± noise",
            DirectSelect,
            DirectSelect,
        ),
        (
            format!("control, INSERT: shard a's handle vs itself (A/A, {same})"),
            "1.00× ± noise",
            DirectInsert,
            DirectInsert,
        ),
        (
            "control, point SELECT: two unsharded handles (A/A, own pools)".into(),
            "1.00× ± noise",
            UnshardedSelect,
            UnshardedSelect2,
        ),
        (
            "control, INSERT: two unsharded handles (A/A, own pools)".into(),
            "1.00× ± noise",
            UnshardedInsert,
            UnshardedInsert2,
        ),
    ] {
        compare(c, OPS, &name, target, base, ours).await?;
    }
    println!();
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Part 2: the shard decision
// ---------------------------------------------------------------------------------------

/// `strategy.locate`, as the handle calls it (an unknown shard as `usize::MAX`).
async fn locate_with(strategy: &dyn Sharding, key: &ShardKey, names: &[Arc<str>]) -> usize {
    strategy.locate(key, names).await.unwrap_or(usize::MAX)
}

async fn run_decision(shards: &ShardedDatabase) -> Res {
    let real =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/shard/pg_hash.rs"))
            .map(|s| !s.starts_with("//! STUB"))
            .unwrap_or(true);
    println!(
        "== 2. the shard decision (target < 100 ns){} ==\n",
        if real {
            ""
        } else {
            "; src/shard/pg_hash.rs is a STUB: these hash figures are not the real hash's"
        }
    );
    const KEYS: usize = 1024;
    let ints: Vec<ShardKey> = (0..KEYS as i64)
        .map(|i| ShardKey::Int((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) as i64))
        .collect();
    let uuids: Vec<Uuid> = (0..KEYS as u128)
        .map(|i| Uuid::from_u128(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
        .collect();
    let texts: Vec<String> = uuids.iter().map(|u| u.hyphenated().to_string()).collect();
    let text_keys: Vec<ShardKey> = texts.iter().map(|t| ShardKey::Str(t.clone())).collect();
    let uuid_keys: Vec<ShardKey> = uuids.iter().map(|u| ShardKey::Uuid(*u)).collect();
    let n = black_box(FAN_OUT_SHARDS);

    println!("  pure, synchronous:");
    print_decision(
        "Hash::shard_of(&ShardKey::Int)",
        sync_decision(&ints, |k| Hash::shard_of(k, n)),
    );
    print_decision(
        "Hash::shard_of(&ShardKey::Str), 36 bytes",
        sync_decision(&text_keys, |k| Hash::shard_of(k, n)),
    );
    print_decision(
        "Hash::shard_of(&ShardKey::Uuid)",
        sync_decision(&uuid_keys, |k| Hash::shard_of(k, n)),
    );
    print_decision(
        "ShardKey::from(&str) + Hash::shard_of, 36 bytes",
        sync_decision(&texts, |t| Hash::shard_of(&ShardKey::from(t.as_str()), n)),
    );

    println!("  through the Sharding trait object (as the handle calls it):");
    let names: Vec<Arc<str>> = (0..FAN_OUT_SHARDS)
        .map(|i| Arc::from(format!("s{i}")))
        .collect();
    let hash: Box<dyn Sharding> = Box::new(Hash);
    let modulo: Box<dyn Sharding> = Box::new(Modulo);
    print_decision(
        "Hash.locate(i64)",
        async_decision(|i| locate_with(&*hash, &ints[i % KEYS], &names)).await,
    );
    print_decision(
        "Hash.locate(36-byte string)",
        async_decision(|i| locate_with(&*hash, &text_keys[i % KEYS], &names)).await,
    );
    print_decision(
        "Modulo.locate(i64)",
        async_decision(|i| locate_with(&*modulo, &ints[i % KEYS], &names)).await,
    );

    println!("  the sharded handle (2 shards, Hash):");
    let int_of = |i: usize| match &ints[i % KEYS] {
        ShardKey::Int(v) => *v,
        _ => 0,
    };
    print_decision(
        "shards.locate(i64) → shard name",
        async_decision(|i| async move { shards.locate(int_of(i)).await.map_or(0, str::len) }).await,
    );
    print_decision(
        "shards.shard(i64) → &ReplicatedDatabase",
        async_decision(|i| async move {
            shards
                .shard(int_of(i))
                .await
                .map_or(0, |db| db as *const ReplicatedDatabase as usize)
        })
        .await,
    );
    print_decision(
        "shards.shard(&str), 36 bytes → &ReplicatedDatabase",
        async_decision(|i| {
            let text = texts[i % KEYS].as_str();
            async move {
                shards
                    .shard(text)
                    .await
                    .map_or(0, |db| db as *const ReplicatedDatabase as usize)
            }
        })
        .await,
    );
    println!("  a read-write unit that runs no statement, open + commit (no pool touched):");
    let direct = shards.shard_named("a")?;
    print_decision(
        "shard a's handle: begin_read_write() + commit",
        async_decision(
            |_| async move { usize::from(direct.begin_read_write().commit().await.is_ok()) },
        )
        .await,
    );
    print_decision(
        "shards.begin_write() + on(i64) + commit (2 shards)",
        async_decision(|i| async move {
            let write = shards.begin_write();
            let on = write.on(int_of(i)).await.is_ok();
            usize::from(on && write.commit().await.is_ok())
        })
        .await,
    );
    println!();
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Part 3: fan-out ORDER BY … LIMIT 20
// ---------------------------------------------------------------------------------------

struct FanOutCtx {
    shards: ShardedDatabase,
    all: ReplicatedDatabase,
}

#[derive(Debug, Clone, Copy)]
enum FanOp {
    FanOutById,
    SingleById,
    FanOutByAmount,
    SingleByAmount,
}

/// The newest 20 orders (by id, an index scan) or the 20 largest (by amount, unindexed),
/// across the shards.
async fn fan_out_newest(
    shards: &ShardedDatabase,
    by_amount: bool,
) -> Result<Vec<bench_order::Model>, BoxErr> {
    use bench_order::Column;
    let fan = shards.fan_out(bench_order::Entity::find());
    let fan = if by_amount {
        fan.order_by_desc(Column::Amount).order_by_desc(Column::Id)
    } else {
        fan.order_by_desc(Column::Id)
    };
    Ok(fan.limit(20).all().await?)
}

/// The same on one node, in a read-only unit.
async fn single_newest(
    db: &ReplicatedDatabase,
    by_amount: bool,
) -> Result<Vec<bench_order::Model>, BoxErr> {
    use bench_order::Column;
    let select = bench_order::Entity::find();
    let select = if by_amount {
        select
            .order_by_desc(Column::Amount)
            .order_by_desc(Column::Id)
    } else {
        select.order_by_desc(Column::Id)
    };
    let unit = db.begin_read_only();
    let rows = select.limit(20).all(&unit).await?;
    unit.commit().await?;
    Ok(rows)
}

impl Op for FanOp {
    type Ctx = FanOutCtx;

    async fn run(self, c: &FanOutCtx) -> Res {
        black_box(match self {
            FanOp::FanOutById => fan_out_newest(&c.shards, false).await?,
            FanOp::SingleById => single_newest(&c.all, false).await?,
            FanOp::FanOutByAmount => fan_out_newest(&c.shards, true).await?,
            FanOp::SingleByAmount => single_newest(&c.all, true).await?,
        });
        Ok(())
    }
}

/// `url` with its database replaced by `db`.
fn with_db(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("the cluster URL parses");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

async fn connect_one(url: &str) -> Result<DatabaseConnection, BoxErr> {
    let mut o = ConnectOptions::new(url.to_owned());
    o.max_connections(1).min_connections(1).sqlx_logging(false);
    Ok(Database::connect(o).await?)
}

const FAN_OUT_DBS: [&str; FAN_OUT_SHARDS + 1] = [
    "sor_bench_s0",
    "sor_bench_s1",
    "sor_bench_s2",
    "sor_bench_s3",
    "sor_bench_all",
];

async fn drop_fan_out_dbs(admin: &DatabaseConnection) -> Res {
    for db in FAN_OUT_DBS {
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await?;
    }
    Ok(())
}

/// A deterministic spread of values (no extra crate).
fn mix(i: i64) -> i64 {
    let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((x ^ (x >> 29)) % 1_000_000) as i64
}

async fn fan_out_part(
    primary: &str,
    replica: &str,
    admin: &DatabaseConnection,
) -> Result<FanOutCtx, BoxErr> {
    drop_fan_out_dbs(admin).await?;
    for db in FAN_OUT_DBS {
        admin
            .execute_unprepared(&format!("CREATE DATABASE {db}"))
            .await?;
    }
    let mut conns = Vec::new();
    for db in FAN_OUT_DBS {
        let conn = connect_one(&with_db(primary, db)).await?;
        let create = Schema::new(DbBackend::Postgres).create_table_from_entity(bench_order::Entity);
        conn.execute(&create).await?;
        conns.push(conn);
    }
    let mut per_shard = vec![Vec::new(); FAN_OUT_SHARDS];
    let mut all = Vec::new();
    for id in 1..=ROWS {
        let customer_id = mix(id) % 5_000;
        let row = bench_order::ActiveModel {
            id: Set(id),
            customer_id: Set(customer_id),
            amount: Set(mix(id + 1_000_003)),
            note: Set(format!("order {id} of customer {customer_id}")),
        };
        per_shard[Hash::shard_of(&ShardKey::Int(customer_id), FAN_OUT_SHARDS)].push(row.clone());
        all.push(row);
    }
    let counts: Vec<usize> = per_shard.iter().map(Vec::len).chain([all.len()]).collect();
    for (conn, rows) in conns.iter().zip(per_shard.into_iter().chain([all])) {
        for chunk in rows.chunks(1_000) {
            bench_order::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(conn)
                .await?;
        }
        conn.execute_unprepared("ANALYZE sor_bench_order").await?;
    }
    for conn in conns {
        conn.close().await?;
    }
    // every row on the replica before measuring
    let deadline = Instant::now() + Duration::from_secs(60);
    for (db, want) in FAN_OUT_DBS.iter().zip(&counts) {
        let conn = connect_one(&with_db(replica, db)).await?;
        loop {
            let have = bench_order::Entity::find().count(&conn).await.unwrap_or(0);
            if have == *want as u64 {
                break;
            }
            if Instant::now() > deadline {
                return Err(
                    format!("{db}: {have} of {want} rows on the replica after 60 s").into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        conn.close().await?;
    }
    println!(
        "rows per shard: {:?}, all: {}",
        &counts[..FAN_OUT_SHARDS],
        counts[FAN_OUT_SHARDS]
    );
    let mut builder = ShardedDatabase::builder().sharding(Hash);
    for (i, db) in FAN_OUT_DBS[..FAN_OUT_SHARDS].iter().enumerate() {
        builder = builder.shard(
            format!("s{i}"),
            cluster(&with_db(primary, db), &with_db(replica, db), 1),
        );
    }
    let shards = builder.connect().await?;
    let all = cluster(
        &with_db(primary, "sor_bench_all"),
        &with_db(replica, "sor_bench_all"),
        1,
    )
    .connect()
    .await?;
    for by_amount in [false, true] {
        let (fan, single) = (
            fan_out_newest(&shards, by_amount).await?,
            single_newest(&all, by_amount).await?,
        );
        if fan != single || fan.len() != 20 {
            return Err(
                format!("fan-out and single node disagree (by amount: {by_amount})").into(),
            );
        }
    }
    Ok(FanOutCtx { shards, all })
}

/// Units that ran on a replica, of all units that ran, over `dbs`.
fn on_replicas<'a>(dbs: impl Iterator<Item = &'a ReplicatedDatabase>) -> (u64, u64) {
    dbs.flat_map(|db| db.stats().nodes)
        .fold((0, 0), |(r, all), n| {
            (
                r + if n.role == Role::Replica { n.units } else { 0 },
                all + n.units,
            )
        })
}

async fn run_fan_out(c: &FanOutCtx) -> Res {
    println!("== 3. fan-out ORDER BY … LIMIT 20: 4 shards vs one node with every row (reads on the replica, both sides) ==\n");
    use FanOp::*;
    for (name, n, base, ours) in [
        (format!("ORDER BY id DESC LIMIT 20 (primary key index): fan-out over {FAN_OUT_SHARDS} shards vs one node"), FAN_OUT_OPS, SingleById, FanOutById),
        (format!("ORDER BY amount DESC, id DESC LIMIT 20 (no index, every row read): fan-out over {FAN_OUT_SHARDS} shards vs one node"), FAN_OUT_SCAN_OPS, SingleByAmount, FanOutByAmount),
        ("control, ORDER BY id DESC LIMIT 20: one node vs itself (A/A)".into(), FAN_OUT_OPS, SingleById, SingleById),
    ] {
        compare(c, n, &name, "none", base, ours).await?;
    }
    let (fr, fa) = on_replicas(c.shards.shards().map(|(_, db)| db));
    let (sr, sa) = on_replicas([&c.all].into_iter());
    println!("units on a replica: fan-out {fr} of {fa}, one node {sr} of {sa}\n");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Part 4: two-phase commit
// ---------------------------------------------------------------------------------------

struct TwoPhaseCtx {
    shards: ShardedDatabase,
    /// Shard a's and shard b's primary URLs.
    primaries: [String; 2],
    key_a: i64,
    key_b: i64,
}

#[derive(Debug, Clone, Copy)]
enum WriteOp {
    /// `begin_write()`, one INSERT on shard a, commit.
    OneShard,
    /// `begin_two_phase()`, one INSERT on shard a and one on shard b, commit (both phases).
    TwoPhase,
    /// `begin_two_phase()`, one INSERT on shard a only, commit (a plain commit).
    TwoPhaseOneShard,
    /// Two `begin_write()` units, one INSERT each, on a then on b.
    TwoSequential,
}

async fn one_shard_insert(shards: &ShardedDatabase, key: i64) -> Res {
    let write = shards.begin_write();
    black_box(new_banner().insert(write.on(key).await?).await?);
    write.commit().await?;
    Ok(())
}

impl Op for WriteOp {
    type Ctx = TwoPhaseCtx;

    async fn run(self, c: &TwoPhaseCtx) -> Res {
        match self {
            WriteOp::OneShard => one_shard_insert(&c.shards, c.key_a).await,
            WriteOp::TwoSequential => {
                one_shard_insert(&c.shards, c.key_a).await?;
                one_shard_insert(&c.shards, c.key_b).await
            }
            WriteOp::TwoPhase | WriteOp::TwoPhaseOneShard => {
                let write = c.shards.begin_two_phase()?;
                black_box(new_banner().insert(write.on(c.key_a).await?).await?);
                if matches!(self, WriteOp::TwoPhase) {
                    black_box(new_banner().insert(write.on(c.key_b).await?).await?);
                }
                write.commit().await?;
                Ok(())
            }
        }
    }
}

async fn max_prepared(db: &ReplicatedDatabase) -> Result<i64, BoxErr> {
    let row = db
        .primary()
        .connection()
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SHOW max_prepared_transactions",
        ))
        .await?
        .ok_or("SHOW max_prepared_transactions returned no row")?;
    Ok(row
        .try_get::<String>("", "max_prepared_transactions")?
        .parse()?)
}

/// The two-phase context, or why the part cannot run here.
async fn two_phase_part(
    primary: &str,
    replica: &str,
) -> Result<Result<TwoPhaseCtx, String>, BoxErr> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(b_primary), Some(b_replica)) = (
        var("SOR_PG_SHARD_B_PRIMARY_URL"),
        var("SOR_PG_SHARD_B_REPLICA_URL"),
    ) else {
        return Ok(Err("SOR_PG_SHARD_B_PRIMARY_URL / SOR_PG_SHARD_B_REPLICA_URL are not set: two-phase commit needs a second PostgreSQL server (prepared transaction ids are per server, and every shard prepares the same id)".into()));
    };
    let (a, b) = (url::Url::parse(primary)?, url::Url::parse(&b_primary)?);
    if (a.host_str(), a.port()) == (b.host_str(), b.port()) {
        return Ok(Err("shard b's primary is the same server as shard a's: prepared transaction ids are per server, and every shard prepares the same id".into()));
    }
    let pool = std::env::var("SOR_BENCH_2PC_POOL")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    let shards = ShardedDatabase::builder()
        .shard("a", cluster(primary, replica, pool))
        .shard("b", cluster(&b_primary, &b_replica, pool))
        .sharding(Hash)
        .connect()
        .await?;
    for (name, db) in shards.shards() {
        let max = max_prepared(db).await?;
        if max == 0 {
            return Ok(Err(format!("max_prepared_transactions is 0 on shard {name}'s primary: two-phase commit is refused there")));
        }
    }
    let wait = MigrateOptions::new().wait_for_replicas(Duration::from_secs(30));
    shards
        .migrate::<migration::Migrator>(wait)
        .await
        .into_result()?;
    let report = shards.recover(Duration::ZERO).await?;
    if report != Default::default() {
        println!("left over from an earlier run, recovered: {report:?}");
    }
    Ok(Ok(TwoPhaseCtx {
        shards,
        primaries: [primary.to_owned(), b_primary],
        key_a: key_on(0, 2, |i| i as i64),
        key_b: key_on(1, 2, |i| i as i64),
    }))
}

async fn run_two_phase(c: &TwoPhaseCtx) -> Res {
    println!("== 4. two-phase commit across 2 shards (2 primaries) vs one-shard commits ==\n");
    // one trial first: a commit that fails is reported (and recovered), not measured
    let trial = WriteOp::TwoPhase.run(c).await;
    let report = c.shards.recover(Duration::ZERO).await?;
    match trial {
        Err(e) => println!(
            "two-phase commit through the library FAILS here, so it is not measured: {e}\n(recovery then finished it: {report:?})\n"
        ),
        Ok(()) => {
            use WriteOp::*;
            for (name, target, base, ours) in [
                ("two-phase unit, one INSERT on each of 2 shards, commit vs one-shard unit (begin_write), one INSERT, commit", "none", OneShard, TwoPhase),
                ("two-phase unit, one INSERT on each of 2 shards, commit vs two one-shard units one after the other", "none", TwoSequential, TwoPhase),
                ("two-phase unit that writes on one shard (plain commit) vs one-shard unit", "≈ 1.00×", OneShard, TwoPhaseOneShard),
                ("control: one-shard unit vs itself (A/A)", "1.00× ± noise", OneShard, OneShard),
            ] {
                compare(c, TWO_PHASE_OPS, name, target, base, ours).await?;
            }
            let report = c.shards.recover(Duration::ZERO).await?;
            if report != Default::default() {
                println!("prepared transactions left behind, recovered: {report:?}");
            }
        }
    }
    let by_hand = ByHand::connect(c).await?;
    println!("for the record, the protocol by hand (sqlx on held connections, not the library): the statements a one-shard unit and a two-phase unit send\n");
    use HandOp::*;
    for (name, target, base, ours) in [
        ("by hand: two-phase, one INSERT on each of 2 shards (BEGIN, INSERT ×2; PREPARE ×2 at once; decision INSERT, SELECT; COMMIT PREPARED ×2 at once; decision DELETE) vs one shard (BEGIN, INSERT, the unit's closing message)", "none", OneShardByHand, TwoPhaseByHand),
        ("by hand: one shard vs the library's one-shard unit (how close the hand-made one is)", "≈ 1.00×", LibraryOneShard, OneShardByHand),
    ] {
        compare(&by_hand, TWO_PHASE_OPS, name, target, base, ours).await?;
    }
    by_hand.clean_up().await?;
    println!();
    Ok(())
}

/// The statements of a one-shard unit and of a two-phase unit, sent by hand on held
/// connections: shard a's and shard b's primaries, and a second connection to a's primary for
/// the decision (in a table of the bench's own).
struct ByHand {
    a: Mutex<PgConnection>,
    b: Mutex<PgConnection>,
    coordinator: Mutex<PgConnection>,
    /// For the calibration against the library.
    shards: ShardedDatabase,
    key_a: i64,
}

const HAND_DECISIONS: &str = "sor_bench_decision";
const HAND_GID_PREFIX: &str = "sor_bench_";
const HAND_INSERT: &str =
    r#"INSERT INTO "banner" ("name") VALUES ($1) RETURNING "id", "name", "author_id""#;

#[derive(Debug, Clone, Copy)]
enum HandOp {
    OneShardByHand,
    TwoPhaseByHand,
    LibraryOneShard,
}

async fn raw(conn: &Mutex<PgConnection>, sql: String) -> Res {
    let mut conn = conn.lock().await;
    black_box(
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *conn)
            .await?,
    );
    Ok(())
}

/// `BEGIN READ WRITE`, then the INSERT SeaORM sends (prepared, bound).
async fn begin_and_insert(conn: &Mutex<PgConnection>) -> Res {
    raw(conn, "BEGIN READ WRITE".into()).await?;
    let mut c = conn.lock().await;
    black_box(
        sqlx::query(HAND_INSERT)
            .bind("bench")
            .fetch_one(&mut *c)
            .await?,
    );
    Ok(())
}

impl ByHand {
    async fn connect(c: &TwoPhaseCtx) -> Result<ByHand, BoxErr> {
        let [a, b] = &c.primaries;
        let by_hand = ByHand {
            a: Mutex::new(PgConnection::connect(a).await?),
            b: Mutex::new(PgConnection::connect(b).await?),
            coordinator: Mutex::new(PgConnection::connect(a).await?),
            shards: c.shards.clone(),
            key_a: c.key_a,
        };
        by_hand.clean_up().await?;
        raw(
            &by_hand.coordinator,
            format!("CREATE TABLE {HAND_DECISIONS} (gid varchar(64) PRIMARY KEY, decision varchar(8) NOT NULL, decided_at_ms bigint NOT NULL)"),
        )
        .await?;
        Ok(by_hand)
    }

    /// Rolls back what an interrupted run left prepared; drops the decision table.
    async fn clean_up(&self) -> Res {
        for conn in [&self.a, &self.b] {
            let gids: Vec<String> = {
                let mut c = conn.lock().await;
                sqlx::query_scalar(
                    "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE 'sor\\_bench\\_%'",
                )
                .fetch_all(&mut *c)
                .await?
            };
            for gid in gids {
                raw(conn, format!("ROLLBACK PREPARED '{gid}'")).await?;
            }
        }
        raw(
            &self.coordinator,
            format!("DROP TABLE IF EXISTS {HAND_DECISIONS}"),
        )
        .await
    }
}

impl Op for HandOp {
    type Ctx = ByHand;

    async fn run(self, c: &ByHand) -> Res {
        let dialect = Dialect(DbBackend::Postgres);
        match self {
            HandOp::LibraryOneShard => one_shard_insert(&c.shards, c.key_a).await,
            HandOp::OneShardByHand => {
                begin_and_insert(&c.a).await?;
                raw(&c.a, dialect.end_transaction_sql("COMMIT", true, None)).await
            }
            HandOp::TwoPhaseByHand => {
                let gid = format!("{HAND_GID_PREFIX}{}", Uuid::now_v7().simple());
                begin_and_insert(&c.a).await?;
                begin_and_insert(&c.b).await?;
                let (pa, pb) = tokio::join!(
                    raw(&c.a, dialect.prepare_sql(&gid)),
                    raw(&c.b, dialect.prepare_sql(&gid))
                );
                pa?;
                pb?;
                raw(
                    &c.coordinator,
                    format!("INSERT INTO {HAND_DECISIONS} (gid, decision, decided_at_ms) VALUES ('{gid}', 'commit', 0) ON CONFLICT (gid) DO NOTHING"),
                )
                .await?;
                raw(
                    &c.coordinator,
                    format!("SELECT decision FROM {HAND_DECISIONS} WHERE gid = '{gid}'"),
                )
                .await?;
                let (fa, fb) = tokio::join!(
                    raw(&c.a, dialect.finish_prepared_sql(&gid, true)),
                    raw(&c.b, dialect.finish_prepared_sql(&gid, true))
                );
                fa?;
                fb?;
                raw(
                    &c.coordinator,
                    format!("DELETE FROM {HAND_DECISIONS} WHERE gid = '{gid}'"),
                )
                .await
            }
        }
    }
}

// ---------------------------------------------------------------------------------------

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!(
            "{name} is not set: run scripts/bench.sh sharding (it starts the loopback cluster)"
        );
        std::process::exit(2)
    })
}

/// Whether part `name` runs (`SOR_BENCH_PARTS`, comma-separated; default all).
fn part(name: &str) -> bool {
    std::env::var("SOR_BENCH_PARTS")
        .map_or(true, |parts| parts.split(',').any(|p| p.trim() == name))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Res {
    let (primary, replica) = (env("SOR_PG_PRIMARY_URL"), env("SOR_PG_REPLICA_URL"));
    println!(
        "PostgreSQL on loopback; one connection per pool; alternating single operations, medians\n"
    );
    let started = Instant::now();
    if part("units") || part("decision") {
        let units = units_part(&primary, &replica).await?;
        if part("units") {
            run_units(&units).await?;
        }
        if part("decision") {
            run_decision(&units.shards).await?;
        }
    }
    if part("fan_out") {
        let admin = connect_one(&with_db(&primary, "postgres")).await?;
        let result = match fan_out_part(&primary, &replica, &admin).await {
            Ok(c) => {
                let ran = run_fan_out(&c).await;
                drop(c);
                ran
            }
            Err(e) => Err(e),
        };
        drop_fan_out_dbs(&admin).await?;
        result?;
    }
    if part("two_phase") {
        match two_phase_part(&primary, &replica).await? {
            Ok(c) => run_two_phase(&c).await?,
            Err(why) => println!("== 4. two-phase commit: SKIPPED: {why} ==\n"),
        }
    }
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
