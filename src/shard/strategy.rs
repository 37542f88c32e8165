//! How a key maps to a shard: the [`Sharding`] trait and the strategies that need no I/O
//! ([`Hash`](struct@Hash), [`Modulo`], [`Range`], [`List`]); [`Directory`](super::Directory) looks keys up
//! in a table.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use super::key::ShardKey;
use super::pg_hash;
use crate::ReplicaError;

/// Where a key lives: pluggable. The sharded handle calls [`locate`](Self::locate) with the
/// key and its shard names (in the order they were configured) and gets a shard index.
///
/// ```
/// use async_trait::async_trait;
/// use sea_orm_replica::shard::{ShardKey, Sharding};
/// use sea_orm_replica::ReplicaError;
///
/// /// Tenants whose name starts with `eu-` live on shard 0, the rest on shard 1.
/// #[derive(Debug)]
/// struct ByRegion;
///
/// #[async_trait]
/// impl Sharding for ByRegion {
///     async fn locate(&self, key: &ShardKey, _shards: &[std::sync::Arc<str>]) -> Result<usize, ReplicaError> {
///         Ok(match key {
///             ShardKey::Str(s) if s.starts_with("eu-") => 0,
///             _ => 1,
///         })
///     }
/// }
/// ```
#[async_trait]
pub trait Sharding: Send + Sync + Debug + 'static {
    /// The index (into `shards`) of the shard that holds `key`.
    async fn locate(&self, key: &ShardKey, shards: &[Arc<str>]) -> Result<usize, ReplicaError>;

    /// Checked once when the sharded handle is built: e.g. that every shard the strategy names
    /// exists. Default: nothing to check.
    fn check(&self, shards: &[Arc<str>]) -> Result<(), ReplicaError> {
        let _ = shards;
        Ok(())
    }
}

/// The index of the shard called `name`, or [`ReplicaError::UnknownShard`].
pub(crate) fn index_of(shards: &[Arc<str>], name: &str) -> Result<usize, ReplicaError> {
    shards
        .iter()
        .position(|s| &**s == name)
        .ok_or_else(|| ReplicaError::UnknownShard {
            name: name.chars().take(64).collect(),
        })
}

/// Hash sharding compatible with PostgreSQL's `PARTITION BY HASH`: with N shards, a key goes to
/// shard *i* exactly when PostgreSQL, for a table partitioned `BY HASH (key)` with
/// `MODULUS N`, puts it in the partition `REMAINDER i` (the same hash functions and seed:
/// `hashint8extended` for integers, as a `bigint` column; `hashtextextended` for strings;
/// `uuid_hash_extended` for uuids). So data can move between one partitioned PostgreSQL table
/// and N shards without re-hashing, the choice PgDog and Citus make for the same reason.
/// Adding a shard moves most keys: plan the count up front (or use a [`Directory`](super::Directory)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Hash;

impl Hash {
    /// The shard index of `key` among `shards` shards (pure; no allocation). `shards` must be
    /// at least 1 (0 gives 0).
    pub fn shard_of(key: &ShardKey, shards: usize) -> usize {
        let modulus = shards.max(1) as u64;
        let index = match key {
            ShardKey::Int(v) => pg_hash::partition_of_i64(*v, modulus),
            ShardKey::Str(s) => pg_hash::partition_of_str(s, modulus),
            ShardKey::Uuid(u) => pg_hash::partition_of_uuid(u.as_bytes(), modulus),
        };
        // below `shards`, which is a usize
        index as usize
    }
}

#[async_trait]
impl Sharding for Hash {
    async fn locate(&self, key: &ShardKey, shards: &[Arc<str>]) -> Result<usize, ReplicaError> {
        Ok(Hash::shard_of(key, shards.len()))
    }
}

/// Integer keys modulo the number of shards (the seed's `shard_key % 2`); negative keys by
/// the Euclidean remainder. Strings and uuids are refused ([`ReplicaError::NoShardForKey`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Modulo;

#[async_trait]
impl Sharding for Modulo {
    async fn locate(&self, key: &ShardKey, shards: &[Arc<str>]) -> Result<usize, ReplicaError> {
        match key {
            ShardKey::Int(v) => Ok(v.rem_euclid(shards.len().max(1) as i64) as usize),
            other => Err(ReplicaError::NoShardForKey {
                key: other.shown(),
                reason: "modulo sharding takes integer keys only".into(),
            }),
        }
    }
}

/// Ranges of keys: each shard holds the keys below its upper bound and at or above the
/// previous bound; keys past the last bound go to the `rest` shard, if any.
///
/// ```
/// use sea_orm_replica::shard::Range;
/// // 0..1000 on "small", 1000..1_000_000 on "medium", the rest on "large"
/// let ranges = Range::new().below(1000, "small").below(1_000_000, "medium").rest("large");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Range {
    /// (exclusive upper bound, shard name), by bound.
    bounds: Vec<(ShardKey, String)>,
    rest: Option<String>,
}

impl Range {
    /// No ranges yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys below `bound` (and at or above the previous bound) go to `shard`.
    pub fn below(mut self, bound: impl Into<ShardKey>, shard: impl Into<String>) -> Self {
        self.bounds.push((bound.into(), shard.into()));
        self.bounds.sort_by(|a, b| a.0.cmp(&b.0));
        self
    }

    /// Keys at or above the last bound go to `shard` (otherwise they are refused).
    pub fn rest(mut self, shard: impl Into<String>) -> Self {
        self.rest = Some(shard.into());
        self
    }

    fn shard_name(&self, key: &ShardKey) -> Result<&str, ReplicaError> {
        let same_kind = |b: &ShardKey| std::mem::discriminant(b) == std::mem::discriminant(key);
        if !self.bounds.iter().all(|(b, _)| same_kind(b)) {
            return Err(ReplicaError::NoShardForKey {
                key: key.shown(),
                reason: "the range bounds are of another key type".into(),
            });
        }
        let at = self.bounds.partition_point(|(bound, _)| bound <= key);
        match self.bounds.get(at) {
            Some((_, shard)) => Ok(shard),
            None => self
                .rest
                .as_deref()
                .ok_or_else(|| ReplicaError::NoShardForKey {
                    key: key.shown(),
                    reason: "above the last range, and no `rest` shard".into(),
                }),
        }
    }
}

#[async_trait]
impl Sharding for Range {
    async fn locate(&self, key: &ShardKey, shards: &[Arc<str>]) -> Result<usize, ReplicaError> {
        index_of(shards, self.shard_name(key)?)
    }

    fn check(&self, shards: &[Arc<str>]) -> Result<(), ReplicaError> {
        for name in self.bounds.iter().map(|(_, s)| s).chain(&self.rest) {
            index_of(shards, name)?;
        }
        Ok(())
    }
}

/// An explicit list of keys per shard (regions, tenants), with an optional default shard for
/// keys not listed.
///
/// ```
/// use sea_orm_replica::shard::List;
/// let regions = List::new().key("kr", "asia").key("jp", "asia").key("de", "europe").otherwise("us");
/// ```
#[derive(Debug, Clone, Default)]
pub struct List {
    keys: HashMap<ShardKey, String>,
    default: Option<String>,
}

impl List {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// `key` lives on `shard`.
    pub fn key(mut self, key: impl Into<ShardKey>, shard: impl Into<String>) -> Self {
        self.keys.insert(key.into(), shard.into());
        self
    }

    /// Keys not listed live on `shard` (otherwise they are refused).
    pub fn otherwise(mut self, shard: impl Into<String>) -> Self {
        self.default = Some(shard.into());
        self
    }
}

#[async_trait]
impl Sharding for List {
    async fn locate(&self, key: &ShardKey, shards: &[Arc<str>]) -> Result<usize, ReplicaError> {
        let name = self
            .keys
            .get(key)
            .or(self.default.as_ref())
            .ok_or_else(|| ReplicaError::NoShardForKey {
                key: key.shown(),
                reason: "not in the list, and no default shard".into(),
            })?;
        index_of(shards, name)
    }

    fn check(&self, shards: &[Arc<str>]) -> Result<(), ReplicaError> {
        for name in self.keys.values().chain(&self.default) {
            index_of(shards, name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<Arc<str>> {
        (0..n).map(|i| Arc::from(format!("s{i}"))).collect()
    }

    #[tokio::test]
    async fn modulo_takes_the_euclidean_remainder_of_integers_only() {
        let shards = names(2);
        assert_eq!(Modulo.locate(&7.into(), &shards).await.unwrap(), 1);
        assert_eq!(Modulo.locate(&(-7).into(), &shards).await.unwrap(), 1);
        assert_eq!(Modulo.locate(&i64::MIN.into(), &shards).await.unwrap(), 0);
        assert!(matches!(
            Modulo.locate(&"x".into(), &shards).await,
            Err(ReplicaError::NoShardForKey { .. })
        ));
    }

    #[tokio::test]
    async fn ranges_are_half_open_and_refuse_gaps_and_other_types() {
        let shards = names(3);
        let r = Range::new().below(100, "s1").below(10, "s0");
        assert_eq!(r.locate(&(-5).into(), &shards).await.unwrap(), 0);
        assert_eq!(r.locate(&9.into(), &shards).await.unwrap(), 0);
        assert_eq!(r.locate(&10.into(), &shards).await.unwrap(), 1);
        assert!(r.locate(&100.into(), &shards).await.is_err());
        assert!(r.locate(&"a".into(), &shards).await.is_err());
        let r = r.rest("s2");
        assert_eq!(r.locate(&100.into(), &shards).await.unwrap(), 2);
        assert!(Range::new().below(1, "nope").check(&shards).is_err());
    }

    #[tokio::test]
    async fn lists_place_listed_keys_and_the_default() {
        let shards = names(2);
        let l = List::new().key("kr", "s1");
        assert_eq!(l.locate(&"kr".into(), &shards).await.unwrap(), 1);
        assert!(l.locate(&"de".into(), &shards).await.is_err());
        let l = l.otherwise("s0");
        assert_eq!(l.locate(&"de".into(), &shards).await.unwrap(), 0);
        assert!(List::new().otherwise("x").check(&shards).is_err());
    }
}
