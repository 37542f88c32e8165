//! Configuration of a sharded handle: serde (a TOML or JSON file beside the app) and the
//! environment.
//!
//! | variable | meaning |
//! |---|---|
//! | `DATABASE_SHARDS` | the shard names, comma-separated, in order (required) |
//! | `DATABASE_URL_<SHARD>` | shard `<SHARD>`'s primary (comma-separated: primary candidates) |
//! | `DATABASE_REPLICA_URLS_<SHARD>` | its replicas, comma-separated (optional) |
//! | `DATABASE_SHARDING` | `hash` (default) or `modulo` |
//!
//! `<SHARD>` is the name in upper case with `-` as `_`: shard `eu-1` reads `DATABASE_URL_EU_1`.
//!
//! ```
//! use sea_orm_replica::shard::ShardedConfig;
//! let config: ShardedConfig = serde_json::from_str(r#"{
//!     "sharding": { "strategy": "range", "ranges": [ { "below": 1000, "shard": "a" } ], "rest": "b" },
//!     "shards": [
//!         { "name": "a", "cluster": { "primary": { "url": "postgres://app@a1/app" }, "replicas": [ { "url": "postgres://app@a2/app" } ] } },
//!         { "name": "b", "cluster": { "primary": { "url": "postgres://app@b1/app" }, "fallback": "error" } }
//!     ]
//! }"#).unwrap();
//! assert_eq!(config.shards[1].name, "b");
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::directory::Directory;
use super::handle::ShardedDatabaseBuilder;
use super::key::ShardKey;
use super::strategy::{Hash, List, Modulo, Range};
use crate::{ReplicaConfig, ReplicaError, ReplicatedDatabase};

/// The whole configuration of a [`ShardedDatabase`](super::ShardedDatabase).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardedConfig {
    /// The shards, in order (the order [`Hash`](struct@super::Hash) and [`Modulo`] number them).
    pub shards: Vec<ShardConfig>,
    /// How keys map to shards. Default: `hash`.
    #[serde(default)]
    pub sharding: ShardingConfig,
    /// How many shards a fan-out read asks at once. Default: 16.
    #[serde(default)]
    pub fan_out_concurrency: Option<usize>,
}

/// One shard: a name and a whole [`ReplicaConfig`]. (Nested rather than flattened so that a
/// misspelt setting is an error, not silently ignored.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// The shard's name: 1 to 64 ASCII letters, digits, `_` or `-`.
    pub name: String,
    /// Its primary, replicas and every other setting of an unsharded handle.
    pub cluster: ReplicaConfig,
}

/// A strategy by name, for configs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum ShardingConfig {
    /// [`Hash`](struct@super::Hash): PostgreSQL-compatible hash partitioning.
    #[default]
    Hash,
    /// [`Modulo`]: integer keys modulo the shard count.
    Modulo,
    /// [`Range`]: `ranges` (upper bound, exclusive, and shard) and an optional `rest` shard.
    Range {
        /// The ranges.
        ranges: Vec<RangeConfig>,
        /// The shard for keys past the last bound.
        #[serde(default)]
        rest: Option<String>,
    },
    /// [`List`]: key → shard, and an optional `default` shard.
    List {
        /// Keys (as strings; a key that parses as an integer is an integer key) and shards.
        keys: std::collections::BTreeMap<String, String>,
        /// The shard for keys not listed.
        #[serde(default)]
        default: Option<String>,
    },
    /// [`Directory`]: a lookup table `table` on shard `shard` (its primary), cached for
    /// `ttl_ms`; keys with no row are refused unless `fallback_hash`, which places them by
    /// hash and records that.
    Directory {
        /// The shard whose database holds the table.
        shard: String,
        /// The table's name.
        table: String,
        /// How long a looked-up key is trusted, in milliseconds (default 30000).
        #[serde(default)]
        ttl_ms: Option<u64>,
        /// Place keys with no row by hash (and record it). Default: refuse them.
        #[serde(default)]
        fallback_hash: bool,
    },
}

/// One range of a [`ShardingConfig::Range`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeConfig {
    /// Keys below this (and at or above the previous bound): an integer or a string.
    pub below: RangeBound,
    /// The shard.
    pub shard: String,
}

/// A range bound in a config: an integer or a string.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RangeBound {
    /// An integer bound.
    Int(i64),
    /// A string bound.
    Str(String),
}

impl From<&RangeBound> for ShardKey {
    fn from(b: &RangeBound) -> Self {
        match b {
            RangeBound::Int(i) => ShardKey::Int(*i),
            RangeBound::Str(s) => ShardKey::Str(s.clone()),
        }
    }
}

impl ShardedConfig {
    /// Reads the variables in the [module docs](self).
    pub fn from_env() -> Result<Self, ReplicaError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), with the variables looked up by `get`.
    ///
    /// ```
    /// use sea_orm_replica::shard::ShardedConfig;
    /// let config = ShardedConfig::from_vars(|name| match name {
    ///     "DATABASE_SHARDS" => Some("a,eu-1".into()),
    ///     "DATABASE_URL_A" => Some("postgres://a1/app".into()),
    ///     "DATABASE_URL_EU_1" => Some("postgres://e1/app".into()),
    ///     "DATABASE_REPLICA_URLS_EU_1" => Some("postgres://e2/app".into()),
    ///     _ => None,
    /// }).unwrap();
    /// assert_eq!(config.shards[1].cluster.replicas.len(), 1);
    /// ```
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ReplicaError> {
        let names = get("DATABASE_SHARDS").ok_or(ReplicaError::MissingEnv("DATABASE_SHARDS"))?;
        let mut shards = Vec::new();
        for name in names.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let suffix = name.to_ascii_uppercase().replace('-', "_");
            let url_var = format!("DATABASE_URL_{suffix}");
            let replicas_var = format!("DATABASE_REPLICA_URLS_{suffix}");
            let cluster = ReplicaConfig::from_vars(|var| match var {
                "DATABASE_URL" => get(&url_var),
                "DATABASE_REPLICA_URLS" => get(&replicas_var),
                _ => None,
            })
            .map_err(|e| match e {
                ReplicaError::MissingEnv(_) => {
                    ReplicaError::Config(format!("environment variable `{url_var}` is not set"))
                }
                other => other,
            })?;
            shards.push(ShardConfig {
                name: name.to_owned(),
                cluster,
            });
        }
        let sharding = match get("DATABASE_SHARDING").as_deref().map(str::trim) {
            None | Some("") | Some("hash") => ShardingConfig::Hash,
            Some("modulo") => ShardingConfig::Modulo,
            Some(other) => {
                return Err(ReplicaError::Config(format!(
                    "DATABASE_SHARDING is `{}`: use `hash` or `modulo` (ranges, lists and directories need a config file)",
                    other.chars().take(32).collect::<String>()
                )))
            }
        };
        Ok(ShardedConfig {
            shards,
            sharding,
            fan_out_concurrency: None,
        })
    }

    /// Puts the configuration into a builder.
    pub(crate) fn apply(
        self,
        mut builder: ShardedDatabaseBuilder,
    ) -> Result<ShardedDatabaseBuilder, ReplicaError> {
        for shard in self.shards {
            builder = builder.shard(
                shard.name,
                ReplicatedDatabase::builder().config(shard.cluster),
            );
        }
        if let Some(n) = self.fan_out_concurrency {
            builder = builder.fan_out_concurrency(n);
        }
        Ok(match self.sharding {
            ShardingConfig::Hash => builder.sharding(Hash),
            ShardingConfig::Modulo => builder.sharding(Modulo),
            ShardingConfig::Range { ranges, rest } => {
                let mut range = Range::new();
                for r in &ranges {
                    range = range.below(&r.below, r.shard.clone());
                }
                if let Some(rest) = rest {
                    range = range.rest(rest);
                }
                builder.sharding(range)
            }
            ShardingConfig::List { keys, default } => {
                let mut list = List::new();
                for (key, shard) in keys {
                    list = match key.parse::<i64>() {
                        Ok(i) => list.key(i, shard),
                        Err(_) => list.key(key, shard),
                    };
                }
                if let Some(default) = default {
                    list = list.otherwise(default);
                }
                builder.sharding(list)
            }
            ShardingConfig::Directory {
                shard,
                table,
                ttl_ms,
                fallback_hash,
            } => builder.sharding_on(
                shard,
                Box::new(move |db| {
                    let mut directory = Directory::new(db, table)?;
                    if let Some(ms) = ttl_ms {
                        directory = directory.ttl(Duration::from_millis(ms));
                    }
                    if fallback_hash {
                        directory = directory.fallback(Hash);
                    }
                    Ok(Box::new(directory))
                }),
            ),
        })
    }
}
