//! The sharded handle: named shards, each a full [`ReplicatedDatabase`], and the strategy that
//! maps a key to one of them.

use std::fmt;
use std::sync::Arc;

use futures_util::future::join_all;
use sea_orm::DbBackend;
use sea_orm_migration::MigratorTrait;
use serde::Serialize;

use super::config::ShardedConfig;
use super::key::ShardKey;
use super::scope::{locked_shard, ScopeLock};
use super::strategy::{Hash, Sharding};
use crate::consistency::valid_shard_name;
use crate::migrate::{MigrateOptions, MigrationReport};
use crate::node::stats::StatsSnapshot;
use crate::node::status::Status;
use crate::{ReplicaError, ReplicatedDatabase, ReplicatedDatabaseBuilder};

/// How many shards a fan-out read asks at once unless told otherwise.
pub const DEFAULT_FAN_OUT_CONCURRENCY: usize = 16;

/// Many replicated clusters behind one handle, routed by a shard key.
///
/// Each shard is a [`ReplicatedDatabase`] (primary, replicas, lazy units, read-only routing,
/// causal tokens, health, failover); [`shard`](Self::shard) picks one by key and everything the
/// unsharded handle has works on it unchanged. Cheap to clone (one `Arc`).
///
/// ```no_run
/// use sea_orm_replica::shard::{Hash, ShardedDatabase};
/// use sea_orm_replica::ReplicatedDatabase;
/// # async fn demo() -> Result<(), sea_orm_replica::ReplicaError> {
/// let shards = ShardedDatabase::builder()
///     .shard("a", ReplicatedDatabase::builder().primary("postgres://app@db-a1/app").replica("postgres://app@db-a2/app"))
///     .shard("b", ReplicatedDatabase::builder().primary("postgres://app@db-b1/app").replica("postgres://app@db-b2/app"))
///     .sharding(Hash)
///     .connect()
///     .await?;
/// let db = shards.shard(42_i64).await?;        // the shard of customer 42: a ReplicatedDatabase
/// let unit = db.begin_read_only();              // on one of its replicas
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ShardedDatabase {
    inner: Arc<Inner>,
}

struct Inner {
    names: Vec<Arc<str>>,
    shards: Vec<ReplicatedDatabase>,
    sharding: Box<dyn Sharding>,
    fan_out_concurrency: usize,
    /// The two-phase decision table exists on the coordinator (checked once).
    decision_table_ready: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for ShardedDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedDatabase")
            .field("shards", &self.inner.names)
            .field("sharding", &self.inner.sharding)
            .finish()
    }
}

/// Builds a [`ShardedDatabase`]: shards in order (the order [`Hash`](struct@super::Hash) and
/// [`Modulo`](super::Modulo) number them), a strategy, limits.
#[must_use]
pub struct ShardedDatabaseBuilder {
    shards: Vec<(String, ReplicatedDatabaseBuilder)>,
    sharding: Option<Box<dyn Sharding>>,
    directory_on: Option<(String, DirectoryOn)>,
    fan_out_concurrency: usize,
}

/// A directory strategy named in a config: built once its shard is connected.
type DirectoryOn =
    Box<dyn FnOnce(ReplicatedDatabase) -> Result<Box<dyn Sharding>, ReplicaError> + Send>;

impl fmt::Debug for ShardedDatabaseBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedDatabaseBuilder")
            .field(
                "shards",
                &self.shards.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("sharding", &self.sharding)
            .finish()
    }
}

impl Default for ShardedDatabaseBuilder {
    fn default() -> Self {
        ShardedDatabaseBuilder {
            shards: Vec::new(),
            sharding: None,
            directory_on: None,
            fan_out_concurrency: DEFAULT_FAN_OUT_CONCURRENCY,
        }
    }
}

impl ShardedDatabaseBuilder {
    /// Adds the shard `name` (ASCII letters, digits, `_`, `-`; at most 64), built like an
    /// unsharded handle: every setting of [`ReplicatedDatabaseBuilder`] works per shard.
    pub fn shard(mut self, name: impl Into<String>, cluster: ReplicatedDatabaseBuilder) -> Self {
        self.shards.push((name.into(), cluster));
        self
    }

    /// How keys map to shards. Default: [`Hash`](struct@super::Hash).
    pub fn sharding(mut self, strategy: impl Sharding) -> Self {
        self.sharding = Some(Box::new(strategy));
        self
    }

    /// A strategy built from the shard `shard` once it is connected (a
    /// [`Directory`](super::Directory) kept on one of the shards).
    pub(crate) fn sharding_on(mut self, shard: String, build: DirectoryOn) -> Self {
        self.directory_on = Some((shard, build));
        self
    }

    /// How many shards a fan-out read asks at once (default 16, at least 1).
    pub fn fan_out_concurrency(mut self, n: usize) -> Self {
        self.fan_out_concurrency = n.max(1);
        self
    }

    /// Uses a [`ShardedConfig`]: its shards, strategy and limits.
    pub fn config(self, config: ShardedConfig) -> Result<Self, ReplicaError> {
        config.apply(self)
    }

    /// Validates the shard names and the strategy, then connects every shard (at once).
    pub async fn connect(self) -> Result<ShardedDatabase, ReplicaError> {
        if self.shards.is_empty() {
            return Err(ReplicaError::Config(
                "a sharded handle needs at least one shard".into(),
            ));
        }
        let mut names: Vec<Arc<str>> = Vec::with_capacity(self.shards.len());
        for (name, _) in &self.shards {
            if !valid_shard_name(name) {
                return Err(ReplicaError::Config(format!(
                    "shard name `{}` must be 1 to 64 ASCII letters, digits, `_` or `-`",
                    name.chars().take(64).collect::<String>()
                )));
            }
            if names.iter().any(|n| **n == **name) {
                return Err(ReplicaError::Config(format!(
                    "shard `{name}` is configured twice"
                )));
            }
            names.push(Arc::from(name.as_str()));
        }
        if let Some(strategy) = &self.sharding {
            strategy.check(&names)?;
        }
        let connects =
            self.shards
                .into_iter()
                .zip(&names)
                .map(|((name, cluster), arc)| async move {
                    cluster
                        .shard(arc.clone())
                        .connect()
                        .await
                        .map_err(|e| shard_error(&name, e))
                });
        let shards = join_all(connects)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(odd) = shards
            .iter()
            .position(|s| s.backend() != shards[0].backend())
        {
            return Err(ReplicaError::Config(format!(
                "shard `{}` is {} but shard `{}` is {}: every shard must speak the same SQL",
                names[odd],
                shards[odd].backend().as_str(),
                names[0],
                shards[0].backend().as_str()
            )));
        }
        let sharding = match (self.sharding, self.directory_on) {
            (_, Some((on, build))) => {
                let index = super::strategy::index_of(&names, &on)?;
                let strategy = build(shards[index].clone())?;
                strategy.check(&names)?;
                strategy
            }
            (Some(strategy), None) => strategy,
            (None, None) => Box::new(Hash),
        };
        tracing::info!(shards = ?names, ?sharding, "sharded database connected");
        Ok(ShardedDatabase {
            inner: Arc::new(Inner {
                names,
                shards,
                sharding,
                fan_out_concurrency: self.fan_out_concurrency,
                decision_table_ready: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }
}

/// `err` on shard `name`.
pub(crate) fn shard_error(name: &str, err: ReplicaError) -> ReplicaError {
    match err {
        already @ ReplicaError::Shard { .. } => already,
        other => ReplicaError::Shard {
            shard: name.to_owned(),
            source: Box::new(other),
        },
    }
}

impl ShardedDatabase {
    /// Starts a builder.
    pub fn builder() -> ShardedDatabaseBuilder {
        ShardedDatabaseBuilder::default()
    }

    /// Connects with a [`ShardedConfig`] (serde: TOML, JSON, ...).
    pub async fn connect(config: ShardedConfig) -> Result<Self, ReplicaError> {
        Self::builder().config(config)?.connect().await
    }

    /// Connects with [`ShardedConfig::from_env`].
    pub async fn connect_from_env() -> Result<Self, ReplicaError> {
        Self::connect(ShardedConfig::from_env()?).await
    }

    /// The shard that holds `key`: a [`ReplicatedDatabase`] on which units, closures,
    /// repositories, scopes and tokens work unchanged.
    ///
    /// Fails with [`ReplicaError::NoShardForKey`] when the strategy has no shard for it, and
    /// with [`ReplicaError::ShardLocked`] inside a request locked to another shard.
    pub async fn shard(
        &self,
        key: impl Into<ShardKey>,
    ) -> Result<&ReplicatedDatabase, ReplicaError> {
        let index = self.locate_index(&key.into()).await?;
        self.checked(index)
    }

    /// The same as [`shard`](Self::shard) (the name Rails and web2py users look for).
    pub async fn for_key(
        &self,
        key: impl Into<ShardKey>,
    ) -> Result<&ReplicatedDatabase, ReplicaError> {
        self.shard(key).await
    }

    /// The name of the shard that holds `key`, without the request lock's check.
    pub async fn locate(&self, key: impl Into<ShardKey>) -> Result<&str, ReplicaError> {
        let index = self.locate_index(&key.into()).await?;
        Ok(&self.inner.names[index])
    }

    pub(crate) async fn locate_index(&self, key: &ShardKey) -> Result<usize, ReplicaError> {
        let index = self.inner.sharding.locate(key, &self.inner.names).await?;
        if index >= self.inner.shards.len() {
            return Err(ReplicaError::NoShardForKey {
                key: key.shown(),
                reason: format!(
                    "the strategy answered shard index {index}, and there are {} shards",
                    self.inner.shards.len()
                ),
            });
        }
        Ok(index)
    }

    /// The shard called `name`.
    pub fn shard_named(&self, name: &str) -> Result<&ReplicatedDatabase, ReplicaError> {
        self.checked(self.index_named(name)?)
    }

    /// The index of the shard called `name`, or [`ReplicaError::UnknownShard`].
    pub(crate) fn index_named(&self, name: &str) -> Result<usize, ReplicaError> {
        super::strategy::index_of(&self.inner.names, name)
    }

    /// The shard at `index`, unless the request is locked to another.
    fn checked(&self, index: usize) -> Result<&ReplicatedDatabase, ReplicaError> {
        if let Some(locked) = locked_shard(self.id()) {
            if locked != index {
                return Err(ReplicaError::ShardLocked {
                    locked: self.inner.names[locked].to_string(),
                    wanted: self.inner.names[index].to_string(),
                });
            }
        }
        Ok(&self.inner.shards[index])
    }

    /// The shard the current request (or task) was scoped to by
    /// [`ShardScope`](super::ShardScope) or the tower layer, if any.
    pub fn current(&self) -> Option<&ReplicatedDatabase> {
        super::scope::scoped_shard(self.id()).map(|i| &self.inner.shards[i])
    }

    /// Identifies this handle (and its clones) in task-local scopes.
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as *const () as usize
    }

    /// A scope for the shard called `name`; `lock` refuses every other shard inside it.
    pub fn scope(&self, name: &str, lock: bool) -> Result<super::ShardScope, ReplicaError> {
        let index = self.index_named(name)?;
        Ok(super::ShardScope::new(ScopeLock {
            owner: self.id(),
            shard: index,
            lock,
        }))
    }

    /// Every shard, in order, with its name. Ignores the request lock: for fan-out, status and
    /// operations across shards.
    pub fn shards(&self) -> impl ExactSizeIterator<Item = (&str, &ReplicatedDatabase)> {
        self.inner
            .names
            .iter()
            .map(|n| &**n)
            .zip(self.inner.shards.iter())
    }

    /// The shard names, in order.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.inner.names.iter().map(|n| &**n)
    }

    /// The SQL dialect every shard speaks.
    pub fn backend(&self) -> DbBackend {
        self.inner.shards[0].backend()
    }

    pub(crate) fn decision_table_ready(&self) -> &std::sync::atomic::AtomicBool {
        &self.inner.decision_table_ready
    }

    pub(crate) fn fan_out_limit(&self) -> usize {
        self.inner.fan_out_concurrency
    }

    /// Every shard's status view, grouped by shard.
    pub fn status(&self) -> ShardedStatus {
        ShardedStatus {
            shards: self
                .shards()
                .map(|(name, db)| ShardStatus {
                    shard: name.to_owned(),
                    status: db.status(),
                })
                .collect(),
        }
    }

    /// Every shard's counters, by shard.
    pub fn stats(&self) -> Vec<(String, StatsSnapshot)> {
        self.shards()
            .map(|(name, db)| (name.to_owned(), db.stats()))
            .collect()
    }

    /// Applies `M`'s pending migrations on every shard's primary, all at once, and reports per
    /// shard. A shard that fails does not stop the others; each shard's line says what
    /// happened there (applied, or the error naming the shard).
    pub async fn migrate<M: MigratorTrait>(
        &self,
        options: MigrateOptions,
    ) -> ShardedMigrationReport {
        let runs = self.shards().map(|(name, db)| async move {
            (
                name.to_owned(),
                db.migrate::<M>(options)
                    .await
                    .map_err(|e| shard_error(name, e)),
            )
        });
        ShardedMigrationReport {
            shards: join_all(runs).await,
        }
    }
}

/// The status view of every shard (`Display`: one table per shard).
#[derive(Debug, Clone, Serialize)]
pub struct ShardedStatus {
    /// Per shard, in order.
    pub shards: Vec<ShardStatus>,
}

/// One shard's status.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    /// The shard's name.
    pub shard: String,
    /// Its nodes.
    pub status: Status,
}

impl ShardedStatus {
    /// The status of the shard called `name`.
    pub fn shard(&self, name: &str) -> Option<&Status> {
        self.shards
            .iter()
            .find(|s| s.shard == name)
            .map(|s| &s.status)
    }
}

impl fmt::Display for ShardedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.shards {
            writeln!(f, "shard {}", s.shard)?;
            write!(f, "{}", s.status)?;
        }
        Ok(())
    }
}

/// What [`ShardedDatabase::migrate`] did on each shard.
#[derive(Debug)]
pub struct ShardedMigrationReport {
    /// Per shard, in order: its report, or the error (a [`ReplicaError::Shard`] naming it).
    pub shards: Vec<(String, Result<MigrationReport, ReplicaError>)>,
}

impl ShardedMigrationReport {
    /// True when every shard migrated.
    pub fn all_ok(&self) -> bool {
        self.shards.iter().all(|(_, r)| r.is_ok())
    }

    /// The shards that failed, by name.
    pub fn failed(&self) -> Vec<&str> {
        self.shards
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// The per-shard reports, or the first shard's error.
    pub fn into_result(self) -> Result<Vec<(String, MigrationReport)>, ReplicaError> {
        self.shards
            .into_iter()
            .map(|(name, r)| r.map(|report| (name, report)))
            .collect()
    }
}
