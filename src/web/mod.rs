//! Web integration (feature `tower`): request-scoped routing as a tower layer, for axum, hyper
//! or tonic. Uses the task scopes of [`unit`](crate::unit) ([`CausalScope`](crate::CausalScope))
//! and of [`shard`](crate::shard) ([`ShardScope`](crate::shard::ShardScope)), and the
//! consistency values; nothing of routing or nodes. With feature `axum`: the status page
//! ([`StatusPage`]); with `axum` and `prometheus`: the metrics endpoint ([`metrics_router`]).

pub mod layer;
#[cfg(all(feature = "axum", feature = "prometheus"))]
pub mod metrics_endpoint;
pub mod shard_layer;
pub mod signing;
#[cfg(feature = "axum")]
pub mod status_page;

pub use layer::{CausalLayer, CausalService, RequestAccess, DEFAULT_COOKIE, STICKY_CLOCK_SKEW};
#[cfg(all(feature = "axum", feature = "prometheus"))]
pub use metrics_endpoint::metrics_router;
pub use shard_layer::{ShardChoice, ShardLayer, ShardService};
pub use signing::{COOKIE_KEY_ENV, MIN_KEY_BYTES};
#[cfg(feature = "axum")]
pub use status_page::{StatusPage, StatusView};
