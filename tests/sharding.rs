//! Sharding on real clusters: two PostgreSQL shards (each a primary and a streaming replica),
//! two MariaDB shards (primary and GTID replica), and two SQLite files. Placement is proved by
//! asking each server which rows it holds; fan-out reads are compared with the same rows in
//! one unsharded database queried the same way.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::NotSet, ColumnTrait, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    EntityTrait, Order, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Schema, Set,
    Statement,
};
use sea_orm_replica::shard::{
    Hash, ShardKey, ShardedDatabase, ShardedRepository, Sharding, DEFAULT_RECOVERY_GRACE,
};
use sea_orm_replica::{CausalScope, ReplicaError, ReplicatedDatabase, UnitOptions};

pub mod order {
    use sea_orm::entity::prelude::*;

    /// An order, sharded by customer.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "shard_order")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// Which test run wrote it (every query filters on it).
        pub run: String,
        /// Unique within a run: the final tie-breaker.
        pub seq: i64,
        pub customer_id: i64,
        pub amount: i64,
        pub label: Option<String>,
        pub score: Option<f64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

struct Orders;

impl ShardedRepository for Orders {
    type Entity = order::Entity;
    fn shard_key() -> order::Column {
        order::Column::CustomerId
    }
}

/// Two shards of one backend, and a reference database holding everything.
struct Fixture {
    shards: ShardedDatabase,
    reference: DatabaseConnection,
    /// Direct connections to each shard's primary, by shard index.
    primaries: Vec<DatabaseConnection>,
    _files: Vec<common::TempFile>,
}

fn require(msg: &str) -> Option<Fixture> {
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    if set("CI") || set("SOR_REQUIRE_CLUSTER") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

fn with_db(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("cluster URL");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

async fn create_table(conn: &DatabaseConnection) {
    let backend = conn.get_database_backend();
    let mut stmt = Schema::new(backend).create_table_from_entity(order::Entity);
    stmt.if_not_exists();
    conn.execute(&stmt).await.expect("create shard_order");
}

static REFERENCE_PG: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
static REFERENCE_MY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

async fn fixture(backend: DbBackend) -> Option<Fixture> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (a, b) = match backend {
        DbBackend::Sqlite => {
            let files: Vec<common::TempFile> = (0..3)
                .map(|_| {
                    common::TempFile(
                        std::env::temp_dir()
                            .join(format!("sor-shard-{}.sqlite", uuid::Uuid::new_v4())),
                    )
                })
                .collect();
            let url = |f: &common::TempFile| format!("sqlite://{}?mode=rwc", f.0.display());
            let shards = ShardedDatabase::builder()
                .shard("a", ReplicatedDatabase::builder().primary(url(&files[0])))
                .shard("b", ReplicatedDatabase::builder().primary(url(&files[1])))
                .connect()
                .await
                .expect("two SQLite shards");
            let reference = Database::connect(url(&files[2])).await.expect("reference");
            let primaries = vec![
                Database::connect(url(&files[0])).await.expect("a"),
                Database::connect(url(&files[1])).await.expect("b"),
            ];
            for conn in primaries.iter().chain([&reference]) {
                create_table(conn).await;
            }
            return Some(Fixture {
                shards,
                reference,
                primaries,
                _files: files,
            });
        }
        DbBackend::Postgres => (
            (var("SOR_PG_PRIMARY_URL"), var("SOR_PG_REPLICA_URL")),
            (
                var("SOR_PG_SHARD_B_PRIMARY_URL"),
                var("SOR_PG_SHARD_B_REPLICA_URL"),
            ),
        ),
        _ => (
            (var("SOR_MYSQL_PRIMARY_URL"), var("SOR_MYSQL_REPLICA_URL")),
            (
                var("SOR_MYSQL_SHARD_B_PRIMARY_URL"),
                var("SOR_MYSQL_SHARD_B_REPLICA_URL"),
            ),
        ),
    };
    let ((Some(a1), Some(a2)), (Some(b1), Some(b2))) = (a, b) else {
        return require(&format!(
            "no {} shard clusters: run `scripts/cluster.sh start all` (it starts shard b too) and source its env file",
            backend.as_str()
        ));
    };
    let shards = ShardedDatabase::builder()
        .shard("a", ReplicatedDatabase::builder().primary(&a1).replica(&a2))
        .shard("b", ReplicatedDatabase::builder().primary(&b1).replica(&b2))
        .connect()
        .await
        .expect("two shards");
    let primaries = vec![
        Database::connect(&a1).await.expect("a"),
        Database::connect(&b1).await.expect("b"),
    ];
    // the reference: its own database on shard a's primary server
    let reference_once = if backend == DbBackend::Postgres {
        &REFERENCE_PG
    } else {
        &REFERENCE_MY
    };
    reference_once
        .get_or_init(|| async {
            let exists = match backend {
                DbBackend::Postgres => primaries[0]
                    .query_one_raw(Statement::from_string(
                        backend,
                        "SELECT 1 AS x FROM pg_database WHERE datname = 'sor_shard_ref'",
                    ))
                    .await
                    .expect("pg_database")
                    .is_some(),
                _ => false,
            };
            if !exists {
                let sql = match backend {
                    DbBackend::Postgres => "CREATE DATABASE sor_shard_ref",
                    _ => "CREATE DATABASE IF NOT EXISTS sor_shard_ref",
                };
                primaries[0]
                    .execute_unprepared(sql)
                    .await
                    .expect("create the reference database");
            }
        })
        .await;
    let reference = Database::connect(with_db(&a1, "sor_shard_ref"))
        .await
        .expect("reference");
    for conn in primaries.iter().chain([&reference]) {
        create_table(conn).await;
    }
    Some(Fixture {
        shards,
        reference,
        primaries,
        _files: Vec::new(),
    })
}

/// A small deterministic generator (no extra crate).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % Ord::max(n, 1)
    }
}

fn row(run: &str, seq: i64, rng: &mut Rng) -> order::ActiveModel {
    let label = match rng.below(6) {
        0 => None,
        n => Some(["ab", "b", "ba", "c", "abc"][n as usize - 1].to_owned()),
    };
    let score = match rng.below(5) {
        0 => None,
        n => Some(n as f64 * 0.5),
    };
    order::ActiveModel {
        id: Set(sea_orm_replica::shard::new_id()),
        run: Set(run.to_owned()),
        seq: Set(seq),
        customer_id: Set(rng.below(40) as i64 - 5),
        amount: Set(rng.below(7) as i64),
        label: Set(label),
        score: Set(score),
    }
}

/// Inserts `n` rows through the sharded repository (inside `scope`, so its token carries
/// every shard's position) and the same rows into the reference.
async fn seed(
    f: &Fixture,
    scope: &CausalScope,
    run: &str,
    n: i64,
    rng: &mut Rng,
) -> Vec<order::Model> {
    let mut rows = Vec::new();
    for seq in 0..n {
        let am = row(run, seq, rng);
        let stored = scope
            .run(Orders::insert(&f.shards, am.clone()))
            .await
            .expect("sharded insert");
        order::Entity::insert(am)
            .exec_without_returning(&f.reference)
            .await
            .expect("reference insert");
        rows.push(stored);
    }
    rows
}

fn run_id() -> String {
    format!("r{}", uuid::Uuid::new_v4().simple())
}

async fn ids_on(conn: &DatabaseConnection, run: &str) -> BTreeSet<i64> {
    order::Entity::find()
        .filter(order::Column::Run.eq(run))
        .all(conn)
        .await
        .expect("rows on a primary")
        .into_iter()
        .map(|m| m.seq)
        .collect()
}

async fn placement_routes_by_key_and_the_servers_agree(f: Fixture) {
    let run = run_id();
    let scope = CausalScope::new(false, None);
    let rows = seed(&f, &scope, &run, 120, &mut Rng(1)).await;
    // every row is on the shard Hash picks for its customer, and on no other (asked of the servers)
    for (i, conn) in f.primaries.iter().enumerate() {
        let want: BTreeSet<i64> = rows
            .iter()
            .filter(|r| Hash::shard_of(&ShardKey::Int(r.customer_id), 2) == i)
            .map(|r| r.seq)
            .collect();
        assert_eq!(ids_on(conn, &run).await, want, "rows on shard {i}");
        assert!(!want.is_empty(), "both shards hold rows");
    }
    if f.shards.backend() != DbBackend::Sqlite {
        let a = common::served_by(&f.primaries[0]).await.unwrap();
        let b = common::served_by(&f.primaries[1]).await.unwrap();
        assert_ne!(a.port, b.port, "two servers");
    }
    // key lookups route by themselves and read the key's shard (a replica, in the scope)
    let customer = rows[0].customer_id;
    let reading = CausalScope::new(true, Some(scope.token()));
    let found = reading
        .run(Orders::find_by_key(&f.shards, customer))
        .await
        .unwrap();
    let want: BTreeSet<i64> = rows
        .iter()
        .filter(|r| r.customer_id == customer)
        .map(|r| r.seq)
        .collect();
    assert_eq!(
        found
            .iter()
            .filter(|m| m.run == run)
            .map(|m| m.seq)
            .collect::<BTreeSet<_>>(),
        want
    );
    let one = reading
        .run(Orders::find_by_id(&f.shards, customer, rows[0].id))
        .await
        .unwrap();
    assert_eq!(one.map(|m| m.seq), Some(rows[0].seq));
    // the wrong key finds nothing: the row is looked for on the key's shard only
    let other = (0..)
        .find(|c| {
            Hash::shard_of(&ShardKey::Int(*c), 2) != Hash::shard_of(&ShardKey::Int(customer), 2)
        })
        .unwrap();
    assert_eq!(
        reading
            .run(Orders::find_by_id(&f.shards, other, rows[0].id))
            .await
            .unwrap(),
        None
    );
    // a write without its key is a typed error
    let mut keyless = row(&run, 999, &mut Rng(2));
    keyless.customer_id = NotSet;
    assert!(matches!(
        Orders::insert(&f.shards, keyless).await,
        Err(ReplicaError::ShardKeyMissing { column }) if column == "customer_id"
    ));
}

/// One fan-out query compared with the reference.
async fn fan_out_equals_the_unsharded_reference(f: Fixture) {
    let run = run_id();
    let scope = CausalScope::new(false, None);
    let mut rng = Rng(7);
    let rows = seed(&f, &scope, &run, 160, &mut rng).await;
    let reading = CausalScope::new(true, Some(scope.token()));
    let columns = [
        order::Column::Amount,
        order::Column::Label,
        order::Column::Score,
        order::Column::CustomerId,
    ];
    let lone_customer = rows[3].customer_id;
    for q in 0..120 {
        // a filter: everything, a threshold, one customer (one shard empty), nothing at all
        let filter = match q % 4 {
            0 => Expr::val(1).eq(1),
            1 => order::Column::Amount.gte(rng.below(7) as i64),
            2 => order::Column::CustomerId.eq(lone_customer),
            _ => order::Column::Amount.gt(100),
        };
        let select = order::Entity::find()
            .filter(order::Column::Run.eq(&run))
            .filter(filter);
        let mut fan = f.shards.fan_out(select.clone());
        let mut reference = select.clone();
        for _ in 0..=rng.below(3) {
            let column = columns[rng.below(4) as usize];
            let dir = if rng.below(2) == 0 {
                Order::Asc
            } else {
                Order::Desc
            };
            fan = fan.order_by(column, dir.clone());
            reference = reference.order_by(column, dir);
        }
        fan = fan.order_by_asc(order::Column::Seq);
        reference = reference.order_by_asc(order::Column::Seq);
        if rng.below(4) != 0 {
            let limit = rng.below(30);
            let offset = rng.below(40);
            fan = fan.limit(limit).offset(offset);
            reference = reference.limit(limit).offset(offset);
        }
        let got: Vec<i64> = reading
            .run(fan.all())
            .await
            .expect("fan-out")
            .into_iter()
            .map(|m| m.seq)
            .collect();
        let want: Vec<i64> = reference
            .all(&f.reference)
            .await
            .expect("reference")
            .into_iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(got, want, "query {q}");

        // aggregates, against the reference's own answers
        let all_rows = select.clone().all(&f.reference).await.unwrap();
        let count = reading
            .run(f.shards.fan_out(select.clone()).count())
            .await
            .unwrap();
        assert_eq!(
            count,
            select.clone().count(&f.reference).await.unwrap(),
            "count {q}"
        );
        let sum = reading
            .run(
                f.shards
                    .fan_out(select.clone())
                    .sum_i64(order::Column::Amount),
            )
            .await
            .unwrap();
        let want_sum =
            (!all_rows.is_empty()).then(|| all_rows.iter().map(|r| r.amount).sum::<i64>());
        assert_eq!(sum, want_sum, "sum {q}");
        let scores: Vec<f64> = all_rows.iter().filter_map(|r| r.score).collect();
        let avg = reading
            .run(f.shards.fan_out(select.clone()).avg(order::Column::Score))
            .await
            .unwrap();
        let want_avg =
            (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64);
        assert!(
            match (avg, want_avg) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                (a, b) => a.is_none() && b.is_none(),
            },
            "avg {q}: {avg:?} {want_avg:?}"
        );
        let fsum = reading
            .run(f.shards.fan_out(select.clone()).sum(order::Column::Score))
            .await
            .unwrap();
        assert!(
            match (
                fsum,
                (!scores.is_empty()).then(|| scores.iter().sum::<f64>())
            ) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                (a, b) => a.is_none() && b.is_none(),
            },
            "float sum {q}"
        );
        for (column, desc) in [
            (order::Column::Label, false),
            (order::Column::Label, true),
            (order::Column::Amount, true),
        ] {
            let fan = f.shards.fan_out(select.clone());
            let got = if desc {
                reading.run(fan.max(column)).await
            } else {
                reading.run(fan.min(column)).await
            }
            .unwrap();
            let reference = select
                .clone()
                .filter(column.is_not_null())
                .order_by(column, if desc { Order::Desc } else { Order::Asc })
                .one(&f.reference)
                .await
                .unwrap();
            use sea_orm::ModelTrait;
            assert_eq!(
                got,
                reference.map(|m| m.get(column)),
                "min/max {column:?} {q}"
            );
        }
    }
    // paging across shards: every page, then past the end
    let select = order::Entity::find().filter(order::Column::Run.eq(&run));
    let per_page = 17;
    let mut seen = Vec::new();
    for p in 0.. {
        let page = reading
            .run(
                f.shards
                    .fan_out(select.clone())
                    .order_by_desc(order::Column::Amount)
                    .order_by_asc(order::Column::Seq)
                    .page(p, per_page),
            )
            .await
            .unwrap();
        assert_eq!(page.total_items, rows.len() as u64);
        assert_eq!(page.total_pages, (rows.len() as u64).div_ceil(per_page));
        if page.items.is_empty() {
            break;
        }
        seen.extend(page.items.into_iter().map(|m| m.seq));
    }
    let want: Vec<i64> = select
        .order_by_desc(order::Column::Amount)
        .order_by_asc(order::Column::Seq)
        .all(&f.reference)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seen, want, "pages");
}

/// Two customers on different shards.
fn two_shards_apart() -> (i64, i64) {
    let a = 1;
    let b = (2..)
        .find(|c| Hash::shard_of(&ShardKey::Int(*c), 2) != Hash::shard_of(&ShardKey::Int(a), 2))
        .unwrap();
    (a, b)
}

async fn cross_shard_writes_are_refused_naming_both_shards(f: Fixture) {
    let run = run_id();
    let (ka, kb) = two_shards_apart();
    let mut rng = Rng(3);
    let write = f.shards.begin_write();
    let mut first = row(&run, 1, &mut rng);
    first.customer_id = Set(ka);
    order::Entity::insert(first)
        .exec_without_returning(write.on(ka).await.unwrap())
        .await
        .unwrap();
    let refused = write.on(kb).await.expect_err("a second shard");
    let (sa, sb) = (
        f.shards.locate(ka).await.unwrap().to_owned(),
        f.shards.locate(kb).await.unwrap().to_owned(),
    );
    match refused {
        ReplicaError::CrossShardWrite { first, second } => {
            assert_eq!((first, second), (sa.clone(), sb.clone()))
        }
        other => panic!("expected CrossShardWrite, got {other:?}"),
    }
    assert!(refused_message_names(&sa, &sb));
    write.commit().await.unwrap();
    let ia = f.shards.names().position(|n| n == sa).unwrap();
    assert_eq!(ids_on(&f.primaries[ia], &run).await.len(), 1);
    assert!(
        ids_on(&f.primaries[1 - ia], &run).await.is_empty(),
        "nothing reached the other shard"
    );
}

fn refused_message_names(a: &str, b: &str) -> bool {
    let text = ReplicaError::CrossShardWrite {
        first: a.into(),
        second: b.into(),
    }
    .to_string();
    text.contains(&format!("`{a}`")) && text.contains(&format!("`{b}`"))
}

async fn prepared_ids(f: &Fixture) -> Vec<String> {
    let mut all = Vec::new();
    for conn in &f.primaries {
        let backend = conn.get_database_backend();
        let (sql, col) = match backend {
            DbBackend::Postgres => (
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()",
                "gid",
            ),
            _ => ("XA RECOVER", "data"),
        };
        for row in conn
            .query_all_raw(Statement::from_string(backend, sql))
            .await
            .unwrap()
        {
            let id: String = row
                .try_get("", col)
                .or_else(|_| {
                    row.try_get::<Vec<u8>>("", col)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                })
                .unwrap();
            all.push(id);
        }
    }
    all
}

async fn two_phase_commits_on_every_shard_or_none(f: Fixture) {
    let (ka, kb) = two_shards_apart();
    let mut rng = Rng(4);
    // commit: on both
    let run = run_id();
    let write = f.shards.begin_two_phase().unwrap();
    for (seq, key) in [(1, ka), (2, kb)] {
        let mut r = row(&run, seq, &mut rng);
        r.customer_id = Set(key);
        order::Entity::insert(r)
            .exec_without_returning(write.on(key).await.unwrap())
            .await
            .unwrap();
    }
    let id = write.id().unwrap().to_owned();
    write.commit().await.expect("two-phase commit");
    assert_eq!(
        ids_on(&f.primaries[0], &run).await.len() + ids_on(&f.primaries[1], &run).await.len(),
        2
    );
    assert!(
        !prepared_ids(&f).await.iter().any(|g| g.starts_with(&id)),
        "nothing left prepared"
    );
    // prepared, then rolled back: on neither
    let run = run_id();
    let write = f.shards.begin_two_phase().unwrap();
    for (seq, key) in [(1, ka), (2, kb)] {
        let mut r = row(&run, seq, &mut rng);
        r.customer_id = Set(key);
        order::Entity::insert(r)
            .exec_without_returning(write.on(key).await.unwrap())
            .await
            .unwrap();
    }
    let prepared = write.prepare().await.expect("phase one");
    let id = prepared.id().to_owned();
    assert_eq!(
        prepared_ids(&f)
            .await
            .iter()
            .filter(|g| g.starts_with(&id))
            .count(),
        2,
        "prepared on both shards"
    );
    prepared.rollback().await.unwrap();
    assert!(
        ids_on(&f.primaries[0], &run).await.is_empty()
            && ids_on(&f.primaries[1], &run).await.is_empty()
    );
    assert!(!prepared_ids(&f).await.iter().any(|g| g.starts_with(&id)));
    // PostgreSQL: a statement that fails aborts its shard's transaction, so the unit rolls
    // back everywhere (MariaDB undoes only the failed statement, and commits the rest)
    if f.shards.backend() != DbBackend::Postgres {
        return;
    }
    let run = run_id();
    let write = f.shards.begin_two_phase().unwrap();
    let mut r = row(&run, 1, &mut rng);
    r.customer_id = Set(ka);
    let dup = r.clone();
    order::Entity::insert(r)
        .exec_without_returning(write.on(ka).await.unwrap())
        .await
        .unwrap();
    let mut r = row(&run, 2, &mut rng);
    r.customer_id = Set(kb);
    order::Entity::insert(r)
        .exec_without_returning(write.on(kb).await.unwrap())
        .await
        .unwrap();
    assert!(order::Entity::insert(dup)
        .exec_without_returning(write.on(ka).await.unwrap())
        .await
        .is_err());
    let err = write
        .commit()
        .await
        .expect_err("one shard's transaction failed");
    assert!(
        matches!(
            err,
            ReplicaError::TwoPhase {
                committed: Some(false),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        ids_on(&f.primaries[0], &run).await.is_empty()
            && ids_on(&f.primaries[1], &run).await.is_empty()
    );
}

/// The child process of [`two_phase_survives_a_client_killed_between_phases`]: prepares a
/// cross-shard write, says so on stdout, and waits to be killed.
async fn two_phase_child(f: Fixture, run: &str) {
    let (ka, kb) = two_shards_apart();
    let mut rng = Rng(5);
    let write = f.shards.begin_two_phase().unwrap();
    for (seq, key) in [(1, ka), (2, kb)] {
        let mut r = row(run, seq, &mut rng);
        r.customer_id = Set(key);
        order::Entity::insert(r)
            .exec_without_returning(write.on(key).await.unwrap())
            .await
            .unwrap();
    }
    let prepared = write.prepare().await.expect("phase one");
    println!("PREPARED {}", prepared.id());
    tokio::time::sleep(Duration::from_secs(600)).await;
}

async fn two_phase_survives_a_client_killed_between_phases(f: Fixture, backend: &str) {
    use std::io::{BufRead, BufReader};
    // twice: killed before the decision (rolled back by recovery), and killed right after
    // recording the decision (committed by recovery)
    for decided in [false, true] {
        let run = run_id();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                &format!("two_phase_child_{backend}"),
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SOR_2PC_CHILD_RUN", &run)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the child test process");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // the harness may print the test's name on the same line first
                if let Some(at) = line.find("PREPARED ") {
                    let _ = tx.send(line[at + "PREPARED ".len()..].trim().to_owned());
                }
            }
        });
        let id = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the child prepared");
        // kill -9 between the phases
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            prepared_ids(&f)
                .await
                .iter()
                .filter(|g| g.starts_with(&id))
                .count(),
            2,
            "in doubt on both shards"
        );
        if decided {
            // what the coordinator wrote before dying: the decision row
            let coordinator = &f.primaries[0];
            coordinator
                .execute_raw(Statement::from_sql_and_values(
                    coordinator.get_database_backend(),
                    match coordinator.get_database_backend() {
                        DbBackend::Postgres => "INSERT INTO sor_two_phase (gid, decision, decided_at_ms) VALUES ($1, 'commit', 0)",
                        _ => "INSERT INTO sor_two_phase (gid, decision, decided_at_ms) VALUES (?, 'commit', 0)",
                    },
                    [id.clone().into()],
                ))
                .await
                .unwrap();
        }
        // young transactions are left to their coordinator
        let report = f.shards.recover(DEFAULT_RECOVERY_GRACE).await.unwrap();
        assert!(report.left_in_flight.contains(&id), "{report:?}");
        let report = f.shards.recover(Duration::ZERO).await.unwrap();
        let (finished, expected_rows) = if decided {
            (&report.committed, 2)
        } else {
            (&report.rolled_back, 0)
        };
        assert_eq!(
            finished.iter().filter(|(g, _)| *g == id).count(),
            2,
            "{report:?}"
        );
        let rows =
            ids_on(&f.primaries[0], &run).await.len() + ids_on(&f.primaries[1], &run).await.len();
        assert_eq!(rows, expected_rows, "all or nothing (decided: {decided})");
        assert!(
            !prepared_ids(&f).await.iter().any(|g| g.starts_with(&id)),
            "nothing left in doubt"
        );
    }
}

async fn causal_tokens_keep_one_position_per_shard(f: Fixture) {
    let (ka, kb) = two_shards_apart();
    let run = run_id();
    let scope = CausalScope::new(false, None);
    let mut r = row(&run, 1, &mut Rng(6));
    r.customer_id = Set(ka);
    scope.run(Orders::insert(&f.shards, r)).await.unwrap();
    let token = scope.token();
    let sa = f.shards.locate(ka).await.unwrap().to_owned();
    let sb = f.shards.locate(kb).await.unwrap().to_owned();
    let text = token.to_string();
    // the cookie text round-trips and names only the shard written
    assert_eq!(text.parse::<sea_orm_replica::CausalToken>().unwrap(), token);
    if f.shards.backend() != DbBackend::Sqlite {
        assert!(text.starts_with(&format!("{sa}=")), "{text}");
        assert!(!text.contains(&format!("{sb}=")), "{text}");
    }
    // a read on the other shard has nothing to wait for
    let unit = f
        .shards
        .shard(kb)
        .await
        .unwrap()
        .begin_unit::<sea_orm_replica::ReadOnly>(UnitOptions::new().after(&token));
    order::Entity::find()
        .filter(order::Column::Run.eq(&run))
        .all(&unit)
        .await
        .unwrap();
    let reason = unit.route().unwrap().reason.as_str();
    assert!(!reason.starts_with("causal token"), "{reason}");
    unit.commit().await.unwrap();
    // a read on the written shard sees the write
    let unit = f
        .shards
        .shard(ka)
        .await
        .unwrap()
        .begin_unit::<sea_orm_replica::ReadOnly>(UnitOptions::new().after(&token));
    let found = order::Entity::find()
        .filter(order::Column::Run.eq(&run))
        .all(&unit)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    unit.commit().await.unwrap();
}

async fn requests_can_be_locked_to_their_shard(f: Fixture) {
    let (ka, kb) = two_shards_apart();
    let sb = f.shards.locate(kb).await.unwrap().to_owned();
    let sa = f.shards.locate(ka).await.unwrap().to_owned();
    let locked = f.shards.scope(&sb, true).unwrap();
    let shards = f.shards.clone();
    locked
        .run(async {
            assert_eq!(
                shards.current().and_then(|d| d.shard_name()),
                Some(sb.as_str())
            );
            assert!(shards.shard(kb).await.is_ok());
            match shards.shard(ka).await {
                Err(ReplicaError::ShardLocked { locked, wanted }) => {
                    assert_eq!((locked, wanted), (sb.clone(), sa.clone()))
                }
                other => panic!("expected ShardLocked, got {other:?}"),
            }
            assert!(shards.shard_named(&sa).is_err());
            assert!(matches!(
                shards.begin_write().on(ka).await,
                Err(ReplicaError::ShardLocked { .. })
            ));
        })
        .await;
    // unlocked: the choice is only the default
    f.shards
        .scope(&sb, false)
        .unwrap()
        .run(async { assert!(f.shards.shard(ka).await.is_ok()) })
        .await;
    assert!(f.shards.current().is_none());
    assert!(matches!(
        f.shards.scope("nope", true),
        Err(ReplicaError::UnknownShard { .. })
    ));
}

async fn status_and_migrations_are_per_shard(f: Fixture) {
    let status = f.shards.status();
    let text = status.to_string();
    for name in ["a", "b"] {
        assert!(text.contains(&format!("shard {name}")), "{text}");
        assert!(
            status
                .shard(name)
                .unwrap()
                .nodes
                .iter()
                .all(|n| n.name.starts_with(&format!("{name}/"))),
            "{text}"
        );
    }
    let report = f
        .shards
        .migrate::<migration::Migrator>(
            sea_orm_replica::MigrateOptions::new().wait_for_replicas(Duration::from_secs(30)),
        )
        .await;
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(
        report
            .shards
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(f.shards.stats().len(), 2);
}

macro_rules! backend_tests {
    ($modname:ident, $backend:expr, $label:literal, [$($name:ident),*]) => {
        mod $modname {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(f) = fixture($backend).await else { return };
                    super::$name(f).await;
                }
            )*
        }
    };
}

backend_tests!(
    pg,
    DbBackend::Postgres,
    "pg",
    [
        placement_routes_by_key_and_the_servers_agree,
        fan_out_equals_the_unsharded_reference,
        cross_shard_writes_are_refused_naming_both_shards,
        two_phase_commits_on_every_shard_or_none,
        causal_tokens_keep_one_position_per_shard,
        requests_can_be_locked_to_their_shard,
        status_and_migrations_are_per_shard
    ]
);

backend_tests!(
    mariadb,
    DbBackend::MySql,
    "mariadb",
    [
        placement_routes_by_key_and_the_servers_agree,
        fan_out_equals_the_unsharded_reference,
        cross_shard_writes_are_refused_naming_both_shards,
        two_phase_commits_on_every_shard_or_none,
        causal_tokens_keep_one_position_per_shard,
        requests_can_be_locked_to_their_shard,
        status_and_migrations_are_per_shard
    ]
);

backend_tests!(
    sqlite,
    DbBackend::Sqlite,
    "sqlite",
    [
        placement_routes_by_key_and_the_servers_agree,
        fan_out_equals_the_unsharded_reference,
        cross_shard_writes_are_refused_naming_both_shards,
        causal_tokens_keep_one_position_per_shard,
        requests_can_be_locked_to_their_shard,
        status_and_migrations_are_per_shard
    ]
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_survives_a_client_killed_between_phases_pg() {
    let Some(f) = fixture(DbBackend::Postgres).await else {
        return;
    };
    two_phase_survives_a_client_killed_between_phases(f, "pg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_survives_a_client_killed_between_phases_mariadb() {
    let Some(f) = fixture(DbBackend::MySql).await else {
        return;
    };
    two_phase_survives_a_client_killed_between_phases(f, "mariadb").await;
}

#[tokio::test]
#[ignore = "the child process of two_phase_survives_a_client_killed_between_phases_pg"]
async fn two_phase_child_pg() {
    let Ok(run) = std::env::var("SOR_2PC_CHILD_RUN") else {
        return;
    };
    let Some(f) = fixture(DbBackend::Postgres).await else {
        return;
    };
    two_phase_child(f, &run).await;
}

#[tokio::test]
#[ignore = "the child process of two_phase_survives_a_client_killed_between_phases_mariadb"]
async fn two_phase_child_mariadb() {
    let Ok(run) = std::env::var("SOR_2PC_CHILD_RUN") else {
        return;
    };
    let Some(f) = fixture(DbBackend::MySql).await else {
        return;
    };
    two_phase_child(f, &run).await;
}

#[tokio::test]
async fn two_phase_is_refused_on_sqlite_and_migration_failures_name_their_shard() {
    let Some(f) = fixture(DbBackend::Sqlite).await else {
        return;
    };
    assert!(matches!(
        f.shards.begin_two_phase(),
        Err(ReplicaError::Config(_))
    ));
    // a migration that fails on shard b only
    f.primaries[1]
        .execute_unprepared("CREATE TABLE shard_mig_probe (id INTEGER)")
        .await
        .unwrap();
    let report = f
        .shards
        .migrate::<failing::Migrator>(sea_orm_replica::MigrateOptions::new())
        .await;
    assert_eq!(report.failed(), ["b"]);
    match &report.shards[1].1 {
        Err(ReplicaError::Shard { shard, .. }) => assert_eq!(shard, "b"),
        other => panic!("{other:?}"),
    }
    assert!(report.shards[0].1.is_ok(), "shard a migrated");
    let on_a = f.primaries[0]
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT count(*) AS n FROM shard_mig_probe",
        ))
        .await;
    assert!(on_a.is_ok(), "shard a has the table");
}

mod failing {
    use sea_orm_migration::prelude::*;

    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(Probe)]
        }
    }

    #[derive(DeriveMigrationName)]
    struct Probe;

    #[async_trait::async_trait]
    impl MigrationTrait for Probe {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .get_connection()
                .execute_unprepared("CREATE TABLE shard_mig_probe (id INTEGER)")
                .await
                .map(|_| ())
        }
    }
}

#[test]
fn configs_parse_from_toml_json_and_the_environment() {
    let toml_text = r#"
        fan_out_concurrency = 4
        [sharding]
        strategy = "list"
        keys = { kr = "asia", "7" = "europe" }
        default = "europe"
        [[shards]]
        name = "asia"
        cluster = { primary = { url = "postgres://app@a1/app" }, replicas = [ { url = "postgres://app@a2/app" } ] }
        [[shards]]
        name = "europe"
        [shards.cluster]
        primary = { url = "postgres://app@e1/app" }
        fallback = "error"
        max_lag_ms = 2000
    "#;
    let config: sea_orm_replica::shard::ShardedConfig = toml::from_str(toml_text).expect("TOML");
    assert_eq!(config.shards.len(), 2);
    assert_eq!(config.shards[0].cluster.replicas.len(), 1);
    // typos are refused, per shard too
    assert!(toml::from_str::<sea_orm_replica::shard::ShardedConfig>(
        &toml_text.replace("replicas =", "replica =")
    )
    .is_err());
    let env = sea_orm_replica::shard::ShardedConfig::from_vars(|v| match v {
        "DATABASE_SHARDS" => Some("a, b".into()),
        "DATABASE_URL_A" => Some("postgres://a/app".into()),
        _ => None,
    });
    assert!(matches!(env, Err(ReplicaError::Config(m)) if m.contains("DATABASE_URL_B")));
}

#[tokio::test]
async fn bad_shard_names_and_strategies_are_typed_errors() {
    let sqlite = || ReplicatedDatabase::builder().primary("sqlite::memory:");
    for bad in ["", "a b", "a=b", "a|b", &"x".repeat(65)] {
        let err = ShardedDatabase::builder()
            .shard(bad, sqlite())
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(err, ReplicaError::Config(_)), "{bad:?}: {err:?}");
    }
    let err = ShardedDatabase::builder()
        .shard("a", sqlite())
        .shard("a", sqlite())
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, ReplicaError::Config(_)));
    let err = ShardedDatabase::builder()
        .shard("a", sqlite())
        .sharding(sea_orm_replica::shard::Range::new().below(10, "zz"))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, ReplicaError::UnknownShard { .. }), "{err:?}");
    // a strategy answering an index out of range is a typed error, not a panic
    #[derive(Debug)]
    struct Wild;
    #[async_trait::async_trait]
    impl Sharding for Wild {
        async fn locate(
            &self,
            _: &ShardKey,
            _: &[std::sync::Arc<str>],
        ) -> Result<usize, ReplicaError> {
            Ok(99)
        }
    }
    let shards = ShardedDatabase::builder()
        .shard("a", sqlite())
        .sharding(Wild)
        .connect()
        .await
        .unwrap();
    assert!(matches!(
        shards.shard(1).await,
        Err(ReplicaError::NoShardForKey { .. })
    ));
    assert!(matches!(
        shards.shard_named("../etc"),
        Err(ReplicaError::UnknownShard { .. })
    ));
}
