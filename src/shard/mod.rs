//! Horizontal sharding: many replicated clusters behind one handle, routed by a shard key.
//!
//! Each shard is a whole [`ReplicatedDatabase`](crate::ReplicatedDatabase): primary, replicas,
//! lazy units, read-only routing, causal tokens, health and failover. A [`ShardedDatabase`]
//! names the shards and asks a [`Sharding`] strategy which one holds a key; on that shard
//! everything works as on an unsharded handle. Across shards there are read-only fan-out reads
//! ([`FanOut`]), writes refused unless two-phase ([`ShardedWrite`]), per-shard migrations and
//! status. Not here, on purpose: cross-shard joins and resharding.
//!
//! This module uses the handle, units and values below it; nothing below uses it (a handle
//! only knows its shard's name, for causal tokens).
//!
//! | file | concept |
//! |---|---|
//! | `handle` | [`ShardedDatabase`], its builder, status and migrations per shard |
//! | `config` | [`ShardedConfig`]: serde and environment variables |
//! | `key` | [`ShardKey`], [`new_id`] (uuid v7) |
//! | `strategy` | [`Sharding`] and [`Hash`](struct@Hash), [`Modulo`], [`Range`], [`List`] |
//! | `pg_hash` | PostgreSQL's partition hash, bit for bit |
//! | `directory` | [`Directory`]: key → shard rows, cached |
//! | `scope` | [`ShardScope`]: a request's shard, and the lock to it |
//! | `repository` | [`ShardedRepository`]: CRUD that routes by the shard-key column |
//! | `fan_out`, `merge` | [`FanOut`]: one `Select` on every shard, k-way merged |
//! | `write` | [`ShardedWrite`]: one shard per unit, or two-phase commit across shards |

pub mod config;
pub mod directory;
pub mod fan_out;
pub mod handle;
pub mod key;
pub mod merge;
pub mod pg_hash;
pub mod repository;
pub mod scope;
pub mod strategy;
pub mod write;

pub use config::{ShardConfig, ShardedConfig, ShardingConfig};
pub use directory::Directory;
pub use fan_out::{AllowPartial, FanOut, MissingShard, Partial, Strict};
pub use handle::{
    ShardStatus, ShardedDatabase, ShardedDatabaseBuilder, ShardedMigrationReport, ShardedStatus,
};
pub use key::{new_id, ShardKey};
pub use repository::ShardedRepository;
pub use scope::ShardScope;
pub use strategy::{Hash, List, Modulo, Range, Sharding};
pub use write::{PreparedWrite, RecoveryReport, ShardedWrite, DEFAULT_RECOVERY_GRACE};
