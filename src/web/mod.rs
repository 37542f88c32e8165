//! Web integration (feature `tower`): request-scoped routing as a tower layer, for axum, hyper
//! or tonic. Uses the task scopes of [`unit`](crate::unit) ([`CausalScope`](crate::CausalScope))
//! and the consistency values; nothing of routing or nodes.

pub mod layer;
pub mod signing;

pub use layer::{CausalLayer, CausalService, RequestAccess, DEFAULT_COOKIE, STICKY_CLOCK_SKEW};
pub use signing::{COOKIE_KEY_ENV, MIN_KEY_BYTES};
