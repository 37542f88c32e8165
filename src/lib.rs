//! # sea-orm-replica
//!
//! Replica-aware units of work for [SeaORM](https://www.sea-ql.org/SeaORM/): mark a unit of work
//! read-only and its reads go to a replica; read-write units and migrations go to the primary;
//! the connection is taken at the first statement, not when the unit opens.
//!
//! ```no_run
//! use sea_orm_replica::{ReplicatedDatabase, Repository};
//! # use entity::banner;
//! # struct Banners; impl Repository for Banners { type Entity = banner::Entity; }
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let db = ReplicatedDatabase::connect_from_env().await?;   // DATABASE_URL, DATABASE_REPLICA_URLS
//!
//! let unit = db.begin_read_write();                        // primary, when it first runs
//! let saved = Banners::insert(&unit, banner::ActiveModel { name: sea_orm::Set("spring sale".into()), ..Default::default() }).await?;
//! unit.commit().await?;
//!
//! let unit = db.begin_read_only();                         // a replica, when it first runs
//! let found = Banners::find_by_id(&unit, saved.id).await?;
//! # Ok(()) }
//! ```
//!
//! ## Architecture, one concept per module
//!
//! | module | concept |
//! |---|---|
//! | [`config`] | nodes, pools, fallback; serde and environment variables |
//! | [`database`] | the [`ReplicatedDatabase`] handle and its builder |
//! | [`access`] | read-only / read-write as types; [`Writable`] |
//! | [`unit`](mod@unit) | the lazy [`UnitOfWork`] and what it promises |
//! | [`policy`] | routing policy: which node and why ([`RouteReason`]); balancers; primary election |
//! | [`node`] | a node: pool, configured and reported role, circuit breaker, lag, units in flight |
//! | [`health`] | node health: the background monitor (reachability, role, lag) |
//! | [`status`] | the status view: every node at a glance |
//! | [`scope`] | ambient, task-scoped routing: [`read_only_scope`], [`CausalScope`] |
//! | [`statement_kind`] | is a statement a read or a write |
//! | `request_routing` (feature `tower`) | a tower layer: request-scoped routing and the token cookie |
//! | [`repository`] | [`Repository`]: typed CRUD in one impl block |
//! | [`migrate`] | migrations on the primary only |
//! | `causal_commit` (internal) | read-write units whose `COMMIT` carries the primary's position |
//! | [`consistency`] | consistency positions: causal tokens (LSN, GTID) |
//! | [`backend`] | per-backend SQL: roles, identities, replication positions |
//! | [`stats`] | where work went |
//! | [`error`] | [`ReplicaError`] |
#![warn(missing_docs)]

pub mod access;
pub mod backend;
pub(crate) mod causal_commit;
pub mod config;
pub mod consistency;
pub mod database;
pub mod error;
pub mod health;
pub mod migrate;
pub mod node;
pub mod policy;
pub mod repository;
#[cfg(feature = "tower")]
pub mod request_routing;
pub mod scope;
pub mod statement_kind;
pub mod stats;
pub mod status;
pub mod unit;

pub use access::{Access, ReadOnly, ReadWrite, Writable};
pub use config::{Fallback, NodeConfig, PoolConfig, ReplicaConfig};
pub use consistency::{CausalToken, Consistency, Position};
pub use database::{ReplicatedDatabase, ReplicatedDatabaseBuilder};
pub use error::ReplicaError;
pub use migrate::{MigrateOptions, MigrationReport};
pub use node::{Node, Probe, Role, ServerRole};
pub use policy::{
    Balancer, Balancing, LeastInFlight, LowestLag, Random, RoundRobin, Route, RouteReason, Weighted,
};
pub use repository::{Page, Repository};
pub use scope::{in_read_only_scope, read_only_scope, CausalScope};
pub use stats::{NodeStats, StatsSnapshot};
pub use status::{NodeStatus, Status};
pub use unit::{UnitOfWork, UnitOptions};
