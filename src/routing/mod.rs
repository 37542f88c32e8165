//! Routing: which node serves a unit of work, and why.
//!
//! Uses [`node`](crate::node) (what each node is and how it is doing) and the plain values of
//! [`consistency`](crate::consistency); knows nothing of units or of the handle.
//!
//! A read-write unit goes to the current primary. A read-only unit goes to an eligible replica
//! (up, not a primary, within the lag bound) chosen by a [`Balancer`]; with none it falls back
//! to the primary (in a `READ ONLY` transaction) or fails, as [`Fallback`] says. The decision
//! is in memory: no I/O and no allocation.
//!
//! **Which node is the primary** is decided after every round of health checks. The current
//! one stays while it is up and reports being the primary at the highest term seen (the WAL
//! timeline on PostgreSQL). Otherwise the one node that does takes over: a configured primary
//! candidate, or a replica that was promoted (its term is higher). A node that reports being
//! the primary at a lower term (an old primary coming back) is fenced: no units at all. When
//! two nodes qualify, nothing switches. While the primary is down, read-write units fail at
//! once with [`ReplicaError::NoPrimary`](crate::ReplicaError::NoPrimary).
//!
//! | file | what |
//! |---|---|
//! | [`router`] | the router: [`Route`], [`RouteReason`], [`Fallback`] |
//! | [`balancer`] | [`Balancer`] and the built-in strategies; [`Balancing`] names them |
//! | `election` (internal) | primary election and fencing, after each round of checks |
//! | `read` (internal) | read routing under a [`Consistency`](crate::Consistency) |

pub mod balancer;
pub(crate) mod election;
pub(crate) mod read;
pub mod router;

pub use balancer::{Balancer, Balancing, LeastInFlight, LowestLag, Random, RoundRobin, Weighted};
pub(crate) use router::Router;
pub use router::{Fallback, Route, RouteReason};
