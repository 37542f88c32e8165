//! `shard::pg_hash` against a real PostgreSQL: rows go into tables `PARTITION BY HASH (k)`, the
//! server says which partition each row landed in (`tableoid`), and that must be the partition
//! our hash computes, for every key. `satisfies_hash_partition` is asked about a sample too.
//!
//! Needs `SOR_PG_PRIMARY_URL` (from `scripts/cluster.sh start all`, or any PostgreSQL 13+
//! server where the user may create databases). Unset: skipped with a note, unless
//! `SOR_REQUIRE_CLUSTER` (or `CI`) is set, then a failure.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement, Value};
use sea_orm_replica::shard::pg_hash::{
    hash_bytes, hash_int4, hash_int8, partition_hash, partition_of_i64, partition_of_str,
    partition_of_uuid, remainder,
};
use uuid::Uuid;

/// Rows per table.
const ROWS: usize = 3000;
/// Parameters per INSERT (PostgreSQL allows 65535).
const BATCH: usize = 500;
/// Keys per table checked with `satisfies_hash_partition`.
const SAMPLE: usize = 40;

/// The key column types under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int8,
    Int4,
    Text,
    Uuid,
}

impl Kind {
    fn sql_type(self) -> &'static str {
        match self {
            Kind::Int8 => "bigint",
            Kind::Int4 => "integer",
            Kind::Text => "text",
            Kind::Uuid => "uuid",
        }
    }
}

/// One generated key, as we hash it and as we bind it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Int(i64),
    Text(String),
    Uuid(Uuid),
}

impl Key {
    fn value(&self, kind: Kind) -> Value {
        match (self, kind) {
            (Key::Int(v), Kind::Int4) => Value::from(i32::try_from(*v).unwrap()),
            (Key::Int(v), _) => Value::from(*v),
            (Key::Text(s), _) => Value::from(s.clone()),
            (Key::Uuid(u), _) => Value::from(*u),
        }
    }

    /// Our answer: the remainder of the partition holding this key among `modulus`.
    fn partition(&self, modulus: u64) -> u64 {
        match self {
            Key::Int(v) => partition_of_i64(*v, modulus),
            Key::Text(s) => partition_of_str(s, modulus),
            Key::Uuid(u) => partition_of_uuid(u.as_bytes(), modulus),
        }
    }
}

fn primary_url() -> Option<String> {
    if let Some(url) = std::env::var("SOR_PG_PRIMARY_URL")
        .ok()
        .filter(|v| !v.is_empty())
    {
        return Some(url);
    }
    let msg = "no PostgreSQL: set SOR_PG_PRIMARY_URL (run `scripts/cluster.sh start all` and \
               source /tmp/sea-orm-replica-cluster/env, or point it at any server)";
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    if set("SOR_REQUIRE_CLUSTER") || set("CI") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

fn with_db(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("SOR_PG_PRIMARY_URL is a URL");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// Keys that stress the integer fold: both signs, the 32-bit edges, the 64-bit edges, and
/// random values of every magnitude.
fn int8_keys(rng: &mut fastrand::Rng) -> Vec<Key> {
    let mut keys: Vec<i64> = vec![
        0,
        1,
        -1,
        2,
        -2,
        i64::MAX,
        i64::MIN,
        i64::MAX - 1,
        i64::MIN + 1,
        i64::from(i32::MAX),
        i64::from(i32::MIN),
        i64::from(i32::MAX) + 1,
        i64::from(i32::MIN) - 1,
        i64::from(u32::MAX),
        1 << 32,
        -(1 << 32),
    ];
    while keys.len() < ROWS {
        let v = match rng.u8(0..4) {
            0 => rng.i64(..),
            1 => rng.i64(-1000..1000),
            // a random magnitude: exercises high halves that are small but not zero
            2 => rng.i64(..) >> rng.u32(0..63),
            _ => i64::from(rng.i32(..)),
        };
        keys.push(v);
    }
    keys.into_iter().map(Key::Int).collect()
}

fn int4_keys(rng: &mut fastrand::Rng) -> Vec<Key> {
    let mut keys: Vec<i32> = vec![0, 1, -1, i32::MAX, i32::MIN, i32::MAX - 1, i32::MIN + 1];
    while keys.len() < ROWS {
        keys.push(match rng.bool() {
            true => rng.i32(..),
            false => rng.i32(-1000..1000),
        });
    }
    keys.into_iter().map(|v| Key::Int(i64::from(v))).collect()
}

/// Strings of every byte length from 0 to 60 (so every tail length of the 12-byte blocks),
/// then random lengths, mixing ASCII with 2-, 3- and 4-byte UTF-8 characters.
fn text_keys(rng: &mut fastrand::Rng) -> Vec<Key> {
    const POOL: &[char] = &[
        'a', 'b', 'z', 'A', 'Z', '0', '9', ' ', '-', '_', '\'', '"', '\\', '%', '\n', '\t', 'é',
        'ß', 'ü', 'Ω', 'ж', '€', '日', '本', '語', 'テ', '❤', '🦀', '😀', '\u{7f}', '\u{1}',
    ];
    let mut keys: Vec<String> = (0..=60)
        .map(|n| (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect())
        .collect();
    keys.push(Uuid::nil().hyphenated().to_string());
    while keys.len() < ROWS {
        let len = match rng.u8(0..4) {
            0 => rng.usize(0..4),
            1 => 36,
            _ => rng.usize(0..80),
        };
        let ascii_only = rng.bool();
        let s: String = (0..len)
            .map(|_| {
                if ascii_only {
                    char::from(rng.u8(0x20..0x7f))
                } else {
                    POOL[rng.usize(0..POOL.len())]
                }
            })
            .collect();
        keys.push(s);
    }
    keys.into_iter().map(Key::Text).collect()
}

fn uuid_keys(rng: &mut fastrand::Rng) -> Vec<Key> {
    let mut keys = vec![Uuid::nil(), Uuid::max()];
    while keys.len() < ROWS {
        keys.push(match rng.u8(0..3) {
            0 => Uuid::new_v4(),
            1 => Uuid::now_v7(),
            _ => Uuid::from_u128(rng.u128(..)),
        });
    }
    keys.into_iter().map(Key::Uuid).collect()
}

/// Creates `name` partitioned by hash on `k kind` with `modulus` partitions `name_p{r}`.
async fn create_partitioned(
    db: &DatabaseConnection,
    name: &str,
    kind: Kind,
    modulus: u64,
) -> Result<(), DbErr> {
    let mut sql = format!(
        "CREATE TABLE {name} (k {} NULL) PARTITION BY HASH (k);\n",
        kind.sql_type()
    );
    for r in 0..modulus {
        sql.push_str(&format!(
            "CREATE TABLE {name}_p{r} PARTITION OF {name} FOR VALUES WITH (MODULUS {modulus}, REMAINDER {r});\n"
        ));
    }
    db.execute_unprepared(&sql).await.map(|_| ())
}

async fn insert(
    db: &DatabaseConnection,
    table: &str,
    kind: Kind,
    keys: &[Key],
) -> Result<(), DbErr> {
    for chunk in keys.chunks(BATCH) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("(${i})")).collect();
        let sql = format!("INSERT INTO {table} (k) VALUES {}", placeholders.join(", "));
        let values: Vec<Value> = chunk.iter().map(|k| k.value(kind)).collect();
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await?;
    }
    Ok(())
}

/// Where the server put each row: (partition remainder, key), read back through the parent.
async fn placements(
    db: &DatabaseConnection,
    table: &str,
    kind: Kind,
) -> Result<Vec<(u64, Key)>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT tableoid::regclass::text, k FROM {table} WHERE k IS NOT NULL"),
        ))
        .await?;
    rows.iter()
        .map(|row| {
            let partition: String = row.try_get_by_index(0)?;
            let r = partition
                .rsplit_once("_p")
                .and_then(|(_, r)| r.parse::<u64>().ok())
                .ok_or_else(|| DbErr::Custom(format!("unexpected partition name {partition}")))?;
            let key = match kind {
                Kind::Int8 => Key::Int(row.try_get_by_index::<i64>(1)?),
                Kind::Int4 => Key::Int(i64::from(row.try_get_by_index::<i32>(1)?)),
                Kind::Text => Key::Text(row.try_get_by_index::<String>(1)?),
                Kind::Uuid => Key::Uuid(row.try_get_by_index::<Uuid>(1)?),
            };
            Ok((r, key))
        })
        .collect()
}

/// `satisfies_hash_partition(table, modulus, remainder, key)`.
async fn satisfies(
    db: &DatabaseConnection,
    table: &str,
    kind: Kind,
    modulus: u64,
    remainder: u64,
    key: &Key,
) -> Result<bool, DbErr> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "SELECT satisfies_hash_partition('{table}'::regclass, {modulus}, {remainder}, $1::{})",
                kind.sql_type()
            ),
            [key.value(kind)],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("no row".into()))?;
    row.try_get_by_index(0)
}

/// Runs every table; returns the disagreements (empty on success) and how many rows it checked.
async fn check_all(db: &DatabaseConnection, seed: u64) -> Result<(Vec<String>, usize), DbErr> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let key_sets = [
        (Kind::Int8, int8_keys(&mut rng)),
        (Kind::Int4, int4_keys(&mut rng)),
        (Kind::Text, text_keys(&mut rng)),
        (Kind::Uuid, uuid_keys(&mut rng)),
    ];
    let mut failures = Vec::new();
    let mut checked = 0;
    for (kind, keys) in &key_sets {
        let moduli: &[u64] = match kind {
            Kind::Int8 => &[4, 7],
            Kind::Int4 => &[4, 5],
            Kind::Text => &[4, 3],
            Kind::Uuid => &[4, 7],
        };
        for &modulus in moduli {
            let table = format!("t_{}_{modulus}", kind.sql_type());
            create_partitioned(db, &table, *kind, modulus).await?;
            insert(db, &table, *kind, keys).await?;
            let placed = placements(db, &table, *kind).await?;
            if placed.len() != keys.len() {
                failures.push(format!(
                    "{table}: {} rows read back, {} inserted",
                    placed.len(),
                    keys.len()
                ));
            }
            let mut per_partition: HashMap<u64, usize> = HashMap::new();
            for (r, key) in &placed {
                *per_partition.entry(*r).or_default() += 1;
                let ours = key.partition(modulus);
                if ours != *r {
                    failures.push(format!(
                        "{table}: {key:?} is in REMAINDER {r}, we said {ours}"
                    ));
                }
            }
            checked += placed.len();
            // every partition gets rows: a constant or broken hash would not spread them
            if per_partition.len() as u64 != modulus {
                failures.push(format!("{table}: rows in only {:?}", per_partition.keys()));
            }
            // satisfies_hash_partition: true for our remainder, false for the next one
            for key in keys.iter().step_by(keys.len() / SAMPLE) {
                let ours = key.partition(modulus);
                if !satisfies(db, &table, *kind, modulus, ours, key).await? {
                    failures.push(format!(
                        "{table}: satisfies_hash_partition false for {key:?} in {ours}"
                    ));
                }
                let other = (ours + 1) % modulus;
                if satisfies(db, &table, *kind, modulus, other, key).await? {
                    failures.push(format!(
                        "{table}: satisfies_hash_partition true for {key:?} in {other}"
                    ));
                }
            }
        }
    }

    // A NULL key: PostgreSQL skips NULL columns, so the row hash is 0 and the row goes to
    // REMAINDER 0 whatever the modulus.
    db.execute_unprepared("INSERT INTO t_bigint_7 (k) VALUES (NULL)")
        .await?;
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT tableoid::regclass::text FROM t_bigint_7 WHERE k IS NULL",
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("the NULL row is missing".into()))?;
    let partition: String = row.try_get_by_index(0)?;
    if partition != "t_bigint_7_p0" || remainder(0, 7) != 0 {
        failures.push(format!("NULL key in {partition}, expected t_bigint_7_p0"));
    }

    // The column hashes themselves, against the SQL functions, for a few keys of each type.
    for (kind, keys) in &key_sets {
        for key in keys.iter().step_by(keys.len() / SAMPLE) {
            let (function, ours) = match (kind, key) {
                (Kind::Int8, Key::Int(v)) => ("hashint8extended", hash_int8(*v)),
                (Kind::Int4, Key::Int(v)) => {
                    ("hashint4extended", hash_int4(i32::try_from(*v).unwrap()))
                }
                (Kind::Text, Key::Text(s)) => ("hashtextextended", hash_bytes(s.as_bytes())),
                (Kind::Uuid, Key::Uuid(u)) => ("uuid_hash_extended", hash_bytes(u.as_bytes())),
                _ => unreachable!(),
            };
            let row = db
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    format!(
                        "SELECT {function}($1::{}, {})",
                        kind.sql_type(),
                        sea_orm_replica::shard::pg_hash::HASH_PARTITION_SEED as i64
                    ),
                    [key.value(*kind)],
                ))
                .await?
                .ok_or_else(|| DbErr::Custom("no row".into()))?;
            let theirs: i64 = row.try_get_by_index(0)?;
            if theirs as u64 != ours {
                failures.push(format!(
                    "{function}({key:?}) = {theirs}, we said {}",
                    ours as i64
                ));
            }
            // and the partition is the single-column row hash modulo the modulus
            if remainder(partition_hash(ours), 4) != key.partition(4) {
                failures.push(format!(
                    "partition_of_* disagrees with remainder(partition_hash(..)) for {key:?}"
                ));
            }
        }
    }
    Ok((failures, checked))
}

#[tokio::test]
async fn partitions_agree_with_postgres() {
    let Some(url) = primary_url() else { return };
    let admin = Database::connect(url.as_str())
        .await
        .expect("connect to SOR_PG_PRIMARY_URL");
    let db_name = format!("sor_pghash_{}", Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {db_name}"))
        .await
        .expect("create the test database");

    let seed = std::env::var("SOR_PG_HASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("pg_hash keys from seed {seed} (SOR_PG_HASH_SEED={seed} repeats them)");

    let outcome = match Database::connect(with_db(&url, &db_name)).await {
        Ok(db) => {
            let outcome = check_all(&db, seed).await;
            let _ = db.close().await;
            outcome
        }
        Err(e) => Err(e),
    };
    let dropped = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .await;
    let _ = admin.close().await;

    let (failures, checked) = outcome.expect("the partition checks ran");
    dropped.expect("drop the test database");
    assert!(
        failures.is_empty(),
        "{} disagreements with PostgreSQL (seed {seed}), first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("{checked} rows: every one in the partition pg_hash computes");
}
