//! Routing policy: which node serves a unit of work, and why.
//!
//! A read-write unit always goes to the primary. A read-only unit goes to an available replica
//! chosen by a [`Balancer`]; with none available it falls back to the primary (in a `READ ONLY`
//! transaction) or fails, as [`Fallback`] says. The decision is in memory: no I/O, no lock,
//! no allocation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Fallback;
use crate::node::Node;
use crate::ReplicaError;

/// Chooses one replica among the available ones.
pub trait Balancer: Send + Sync + std::fmt::Debug + 'static {
    /// Picks an index in `0..n` for which `available` holds, or `None` when there is none.
    fn pick(&self, n: usize, available: &dyn Fn(usize) -> bool) -> Option<usize>;

    /// The name spans report as part of the route's reason.
    fn name(&self) -> &'static str;
}

/// Takes the available replicas in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn pick(&self, n: usize, available: &dyn Fn(usize) -> bool) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| (start + k) % n).find(|&i| available(i))
    }

    fn name(&self) -> &'static str {
        "round-robin"
    }
}

/// Why a unit went where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteReason {
    /// A read-write unit, or the handle outside any read-only scope.
    Write,
    /// A read-only unit on a replica chosen by the named balancer.
    Balanced(&'static str),
    /// A read-only unit on the primary: no replicas are configured.
    NoReplicas,
    /// A read-only unit on the primary: every replica is unavailable.
    Fallback,
    /// A nested unit on the node its parent already uses.
    Inherited,
    /// A read-only unit with a causal token, on a replica known to have replayed it.
    CaughtUp,
    /// A read-only unit with a causal token, on a replica it waited for.
    WaitedForReplay,
    /// A read-only unit with a causal token no replica replayed in time: the primary, read only.
    NotReplayed,
    /// A read-only unit that asked for the primary: the primary, read only.
    PrimaryRequested,
}

impl RouteReason {
    /// A short text for spans and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteReason::Write => "read-write: primary",
            RouteReason::Balanced(name) => name,
            RouteReason::NoReplicas => "no replicas configured: primary, read only",
            RouteReason::Fallback => "no replica available: fallback to primary, read only",
            RouteReason::Inherited => "nested: parent's node",
            RouteReason::CaughtUp => "causal token: replica has replayed it",
            RouteReason::WaitedForReplay => "causal token: waited for replica to replay it",
            RouteReason::NotReplayed => "causal token: not replayed in time; primary, read only",
            RouteReason::PrimaryRequested => "primary requested: primary, read only",
        }
    }

    /// True when a read-only unit runs on the primary.
    pub fn is_read_only_on_primary(self) -> bool {
        matches!(
            self,
            RouteReason::NoReplicas
                | RouteReason::Fallback
                | RouteReason::NotReplayed
                | RouteReason::PrimaryRequested
        )
    }
}

/// A routing decision.
#[derive(Debug, Clone)]
pub struct Route {
    /// The chosen node.
    pub node: Arc<Node>,
    /// Why.
    pub reason: RouteReason,
}

/// The nodes and the rules to choose among them.
#[derive(Debug)]
pub(crate) struct Router {
    pub primary: Arc<Node>,
    pub replicas: Vec<Arc<Node>>,
    pub balancer: Box<dyn Balancer>,
    pub fallback: Fallback,
    /// How long a read-only unit with a causal token waits for a replica by default.
    pub causal_wait: Duration,
    /// Replicas measured further behind than this are not used (bounded staleness).
    pub max_lag: Option<Duration>,
}

impl Router {
    /// Routes a unit: read-write to the primary, read-only to a replica within the handle's
    /// lag bound.
    pub fn route(&self, read_only: bool) -> Result<Route, ReplicaError> {
        self.route_within(read_only, self.max_lag)
    }

    /// Like [`route`](Self::route), with replicas limited to those measured within `max_lag`.
    pub fn route_within(
        &self,
        read_only: bool,
        max_lag: Option<Duration>,
    ) -> Result<Route, ReplicaError> {
        if !read_only {
            return Ok(Route {
                node: self.primary.clone(),
                reason: RouteReason::Write,
            });
        }
        if self.replicas.is_empty() {
            return Ok(Route {
                node: self.primary.clone(),
                reason: RouteReason::NoReplicas,
            });
        }
        let picked = self.balancer.pick(self.replicas.len(), &|i| {
            let node = &self.replicas[i];
            node.is_available() && max_lag.is_none_or(|bound| node.lag_within(bound))
        });
        match (picked, self.fallback) {
            (Some(i), _) => Ok(Route {
                node: self.replicas[i].clone(),
                reason: RouteReason::Balanced(self.balancer.name()),
            }),
            (None, Fallback::Primary) => Ok(Route {
                node: self.primary.clone(),
                reason: RouteReason::Fallback,
            }),
            (None, Fallback::Error) => Err(ReplicaError::NoReplicaAvailable {
                reason: match max_lag {
                    Some(bound) => format!(
                        "all {} replicas are unavailable or lag more than {bound:?}",
                        self.replicas.len()
                    ),
                    None => format!("all {} replicas are unavailable", self.replicas.len()),
                },
            }),
        }
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        std::iter::once(&*self.primary).chain(self.replicas.iter().map(|n| &**n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles_and_skips_unavailable() {
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..6).map(|_| rr.pick(3, &|_| true).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let picks: Vec<_> = (0..4).map(|_| rr.pick(3, &|i| i != 1).unwrap()).collect();
        assert!(picks.iter().all(|&i| i != 1));
        assert_eq!(rr.pick(3, &|_| false), None);
        assert_eq!(rr.pick(0, &|_| true), None);
    }
}
