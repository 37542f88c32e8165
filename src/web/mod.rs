//! Web integration (feature `tower`): request-scoped routing as a tower layer, for axum, hyper
//! or tonic. Uses the task scopes of [`unit`](crate::unit) ([`CausalScope`](crate::CausalScope))
//! and of [`shard`](crate::shard) ([`ShardScope`](crate::shard::ShardScope)), and the
//! consistency values; nothing of routing or nodes.

pub mod layer;
pub mod shard_layer;
pub mod signing;

pub use layer::{CausalLayer, CausalService, RequestAccess, DEFAULT_COOKIE, STICKY_CLOCK_SKEW};
pub use shard_layer::{ShardChoice, ShardLayer, ShardService};
pub use signing::{COOKIE_KEY_ENV, MIN_KEY_BYTES};
