//! A directory: a table of key → shard in a database the user names, cached in memory. For
//! tenants that move: moving one is a row update, not a re-hash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sea_orm::sea_query::{Alias, ColumnDef, Expr, ExprTrait, OnConflict, Query, Table};
use sea_orm::{ConnectionTrait, DbErr};

use super::key::ShardKey;
use super::strategy::{index_of, Sharding};
use crate::consistency::Consistency;
use crate::unit::access::ReadOnly;
use crate::unit::UnitOptions;
use crate::{ReplicaError, ReplicatedDatabase};

/// How long a looked-up key is trusted unless told otherwise.
pub const DEFAULT_DIRECTORY_TTL: Duration = Duration::from_secs(30);

/// At most this many keys are cached; past it the cache starts over.
const MAX_CACHED: usize = 100_000;

/// Key → shard rows in table `table` (columns `shard_key`, `shard`; both text) of `db`,
/// cached for a TTL. Lookups read the directory's primary (in a read-only transaction), so a
/// move is seen by this process at once ([`assign`](Self::assign) drops the cached entry) and
/// by other processes within the TTL.
///
/// Keys are stored as their text ([`ShardKey::to_text`]): the integer 7 and the string "7" are
/// the same row. Keys with no row are refused ([`ReplicaError::NoShardForKey`]) unless a
/// fallback strategy is set, whose answer is then recorded (first placement wins).
///
/// ```no_run
/// # use sea_orm_replica::{ReplicatedDatabase, shard::{Directory, Hash}};
/// # async fn demo(meta: ReplicatedDatabase) -> Result<(), sea_orm_replica::ReplicaError> {
/// let directory = Directory::new(meta, "tenant_shard")?.fallback(Hash);
/// directory.create_table().await?;
/// directory.assign(&"acme".into(), "b").await?;   // acme moves to shard b
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Directory {
    db: ReplicatedDatabase,
    table: String,
    ttl: Duration,
    fallback: Option<Box<dyn Sharding>>,
    cache: Mutex<HashMap<ShardKey, (Arc<str>, Instant)>>,
}

impl Directory {
    /// A directory in table `table` of `db`. The name must be a plain identifier (letters,
    /// digits, `_`; not starting with a digit; at most 63 characters).
    pub fn new(db: ReplicatedDatabase, table: impl Into<String>) -> Result<Self, ReplicaError> {
        let table = table.into();
        let plain = !table.is_empty()
            && table.len() <= 63
            && !table.starts_with(|c: char| c.is_ascii_digit())
            && table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !plain {
            return Err(ReplicaError::Config(format!(
                "directory table name `{}` is not a plain identifier",
                table.chars().take(64).collect::<String>()
            )));
        }
        Ok(Directory {
            db,
            table,
            ttl: DEFAULT_DIRECTORY_TTL,
            fallback: None,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// How long a looked-up key is trusted (default 30 s). Zero: every lookup reads the table.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Keys with no row are placed by `strategy`, and the placement is recorded.
    pub fn fallback(mut self, strategy: impl Sharding) -> Self {
        self.fallback = Some(Box::new(strategy));
        self
    }

    /// Creates the table if it does not exist (on the directory's primary).
    pub async fn create_table(&self) -> Result<(), ReplicaError> {
        let stmt = Table::create()
            .table(Alias::new(&self.table))
            .if_not_exists()
            .col(
                ColumnDef::new(Alias::new("shard_key"))
                    .string_len(255)
                    .not_null()
                    .primary_key(),
            )
            .col(
                ColumnDef::new(Alias::new("shard"))
                    .string_len(64)
                    .not_null(),
            )
            .to_owned();
        self.db.execute(&stmt).await?;
        Ok(())
    }

    /// Records that `key` lives on `shard` (insert or update, on the primary) and forgets the
    /// cached entry. Moving the rows is the caller's job: do it before, then assign.
    pub async fn assign(&self, key: &ShardKey, shard: &str) -> Result<(), ReplicaError> {
        self.write(key, shard, true).await?;
        self.forget(key);
        Ok(())
    }

    /// Forgets the cached entry of `key` (the next lookup reads the table).
    pub fn forget(&self, key: &ShardKey) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ShardKey, (Arc<str>, Instant)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn write(&self, key: &ShardKey, shard: &str, replace: bool) -> Result<(), DbErr> {
        let mut conflict = OnConflict::column(Alias::new("shard_key"));
        // not placed yet: a no-op update keeps the first placement (portable, unlike DO NOTHING)
        conflict.update_column(Alias::new(if replace { "shard" } else { "shard_key" }));
        let stmt = Query::insert()
            .into_table(Alias::new(&self.table))
            .columns([Alias::new("shard_key"), Alias::new("shard")])
            .values_panic([key.to_text().into(), shard.into()])
            .on_conflict(conflict)
            .to_owned();
        let unit = self.db.begin_read_write();
        unit.execute(&stmt).await?;
        unit.commit().await
    }

    async fn read(&self, key: &ShardKey) -> Result<Option<String>, DbErr> {
        let stmt = Query::select()
            .column(Alias::new("shard"))
            .from(Alias::new(&self.table))
            .and_where(Expr::col(Alias::new("shard_key")).eq(key.to_text()))
            .to_owned();
        let unit = self
            .db
            .begin_unit::<ReadOnly>(UnitOptions::new().consistency(Consistency::Primary));
        let row = unit.query_one(&stmt).await?;
        unit.commit().await?;
        row.map(|r| r.try_get_by_index::<String>(0)).transpose()
    }
}

#[async_trait]
impl Sharding for Directory {
    async fn locate(&self, key: &ShardKey, shards: &[Arc<str>]) -> Result<usize, ReplicaError> {
        if let Some((name, at)) = self.lock().get(key) {
            if at.elapsed() < self.ttl {
                return index_of(shards, name);
            }
        }
        let name = match self.read(key).await? {
            Some(name) => name,
            None => match &self.fallback {
                Some(strategy) => {
                    let placed = strategy.locate(key, shards).await?;
                    self.write(key, &shards[placed], false).await?;
                    // another process may have placed it first: its row wins
                    self.read(key)
                        .await?
                        .unwrap_or_else(|| shards[placed].to_string())
                }
                None => {
                    return Err(ReplicaError::NoShardForKey {
                        key: key.shown(),
                        reason: format!("no row in directory table `{}`", self.table),
                    })
                }
            },
        };
        let index = index_of(shards, &name)?;
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key.clone(), (shards[index].clone(), Instant::now()));
        Ok(index)
    }

    fn check(&self, shards: &[Arc<str>]) -> Result<(), ReplicaError> {
        self.fallback.as_ref().map_or(Ok(()), |f| f.check(shards))
    }
}
