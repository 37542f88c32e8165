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
//! A statement's trip, top to bottom: the handle opens a unit; the unit asks routing for a node
//! at its first statement; the node runs it; the backend knows each server's SQL. Imports flow
//! down this table (one exception: a unit keeps its handle); [`error`] is used by everything
//! below it, and [`consistency`] at the bottom uses nothing from the crate.
//!
//! | module | concept |
//! |---|---|
//! | `web` (feature `tower`) | tower layers: request-scoped routing and the token cookie; the request's shard |
//! | [`shard`] | horizontal sharding: [`ShardedDatabase`](shard::ShardedDatabase), key → shard strategies, fan-out reads, two-phase writes |
//! | [`repository`] | [`Repository`]: typed CRUD in one impl block |
//! | [`queue`] | the durable write-behind queue: typed commands on a broker (Redis Streams), applied once by workers |
//! | [`replay`] | read-write units that ride over a failover, applied once: identities, `sor_applied` |
//! | [`migrate`] | migrations on the primary only |
//! | [`database`] | the [`ReplicatedDatabase`] handle and its builder |
//! | [`config`] | nodes, pools, fallback; serde and environment variables |
//! | [`error`] | [`ReplicaError`] |
//! | [`unit`](mod@unit) | the lazy [`UnitOfWork`] and what it promises |
//! | &nbsp;&nbsp;[`unit::access`] | read-only / read-write as types; [`Writable`] |
//! | &nbsp;&nbsp;[`unit::replicated_txn`] | what SeaORM's `begin` on the handle returns: [`ReplicatedTransaction`], a unit underneath |
//! | &nbsp;&nbsp;[`unit::scope`] | ambient, task-scoped routing: [`read_only_scope`], [`CausalScope`] |
//! | &nbsp;&nbsp;[`unit::statement_kind`] | may a statement run in read-only work: a lexer per dialect, the early refusal |
//! | &nbsp;&nbsp;`unit::txn` (internal) | transactions on a held connection: cancel-safe, session reset, causal commit |
//! | [`routing`] | which node serves a unit, and why |
//! | &nbsp;&nbsp;[`routing::router`] | the router: [`Route`], [`RouteReason`], [`Fallback`] |
//! | &nbsp;&nbsp;[`routing::balancer`] | [`Balancer`] and its strategies; [`Balancing`] |
//! | &nbsp;&nbsp;`routing::election` (internal) | primary election and fencing |
//! | &nbsp;&nbsp;`routing::read` (internal) | read routing under a [`Consistency`] (read your writes, bounded staleness) |
//! | [`node`] | a node: pools, configured and reported role, circuit breaker, lag, units in flight |
//! | &nbsp;&nbsp;`node::pools` (internal) | read-write and read-only session pools, built from the driver's options |
//! | &nbsp;&nbsp;`node::held`, `node::sessions` (internal) | connections kept between uses, one round trip per statement; where a statement runs |
//! | &nbsp;&nbsp;[`node::monitor`] | node health: the background checks (reachability, role, lag) |
//! | &nbsp;&nbsp;[`node::status`], [`node::stats`] | what we show about nodes: the status view, where work went |
//! | [`backend`] | per-backend SQL: roles, identities, replication positions; [`ServerRole`], [`Probe`] |
//! | &nbsp;&nbsp;`backend::sqlite_read_only` (internal) | the SQLite authorizer every read-only session gets |
//! | [`consistency`] | plain values: positions, causal tokens (LSN, GTID), [`Consistency`] |
//! | [`observe`] | span and metric names (OpenTelemetry's), metrics through the `metrics` facade at no cost unheard; a Prometheus recorder |
#![warn(missing_docs)]

pub mod backend;
pub mod config;
pub mod consistency;
pub mod database;
pub mod error;
pub mod migrate;
pub mod node;
pub mod observe;
pub mod queue;
pub mod replay;
pub mod repository;
pub mod routing;
pub mod shard;
pub mod unit;
#[cfg(feature = "tower")]
pub mod web;

pub use config::{Fallback, NodeConfig, PoolConfig, ReplicaConfig};
pub use consistency::{CausalToken, Consistency, Position};
pub use database::{ReplicatedDatabase, ReplicatedDatabaseBuilder};
pub use error::ReplicaError;
pub use migrate::{MigrateOptions, MigrationReport};
pub use node::stats::{NodeStats, StatsSnapshot};
pub use node::status::{NodeStatus, Status};
pub use node::{Node, Probe, Role, ServerRole};
pub use repository::{Page, Repository};
pub use routing::{
    Balancer, Balancing, LeastInFlight, LowestLag, Random, RoundRobin, Route, RouteReason, Weighted,
};
pub use unit::access::{Access, ReadOnly, ReadWrite, Writable};
pub use unit::replicated_txn::ReplicatedTransaction;
pub use unit::scope::{in_read_only_scope, read_only_scope, CausalScope};
pub use unit::{UnitOfWork, UnitOptions};
#[cfg(feature = "tower")]
pub use web::{CausalLayer, RequestAccess};

// The module paths from before the folder layout, so code written against them still compiles
// (`sea_orm_replica::policy::RoundRobin`, `sea_orm_replica::health::DEFAULT_MONITOR_INTERVAL`,
// `sea_orm_replica::request_routing::CausalLayer`, ...). Hidden: the table above is the map.
#[doc(hidden)]
pub use node::monitor as health;
#[doc(hidden)]
pub use node::{stats, status};
#[doc(hidden)]
pub use routing as policy;
#[doc(hidden)]
pub use unit::{access, scope, statement_kind};
#[cfg(feature = "tower")]
#[doc(hidden)]
pub use web::layer as request_routing;
