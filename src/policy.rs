//! Routing policy: which node serves a unit of work, and why.
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
//! once with [`ReplicaError::NoPrimary`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Fallback;
use crate::node::{Node, ServerRole};
use crate::ReplicaError;

/// Chooses one replica among the eligible ones. Implement it for your own strategy.
pub trait Balancer: Send + Sync + std::fmt::Debug + 'static {
    /// Picks an index into `nodes` for which `eligible` holds, or `None` when there is none.
    /// Nodes expose what a strategy may weigh: [`Node::in_flight`], [`Node::lag`],
    /// [`Node::weight`].
    fn pick(&self, nodes: &[Arc<Node>], eligible: &dyn Fn(usize) -> bool) -> Option<usize>;

    /// The name spans report as part of the route's reason.
    fn name(&self) -> &'static str;
}

/// Takes the eligible replicas in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// The eligible indexes, starting at the next turn.
    fn in_turn<'a>(
        &self,
        n: usize,
        eligible: &'a dyn Fn(usize) -> bool,
    ) -> impl Iterator<Item = usize> + 'a {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(move |k| (start + k) % n)
            .filter(move |&i| eligible(i))
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, nodes: &[Arc<Node>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.in_turn(nodes.len(), eligible).next()
    }

    fn name(&self) -> &'static str {
        "round-robin"
    }
}

/// Picks an eligible replica uniformly at random.
#[derive(Debug, Default)]
pub struct Random;

impl Balancer for Random {
    fn pick(&self, nodes: &[Arc<Node>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let count = (0..nodes.len()).filter(|&i| eligible(i)).count();
        if count == 0 {
            return None;
        }
        let ticket = fastrand::usize(..count);
        (0..nodes.len()).filter(|&i| eligible(i)).nth(ticket)
    }

    fn name(&self) -> &'static str {
        "random"
    }
}

/// Picks an eligible replica at random in proportion to its weight
/// ([`NodeConfig::weight`](crate::NodeConfig::weight), default 1).
#[derive(Debug, Default)]
pub struct Weighted;

impl Balancer for Weighted {
    fn pick(&self, nodes: &[Arc<Node>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let total: u64 = (0..nodes.len())
            .filter(|&i| eligible(i))
            .map(|i| u64::from(nodes[i].weight()))
            .sum();
        if total == 0 {
            return None;
        }
        let mut ticket = fastrand::u64(..total);
        for i in (0..nodes.len()).filter(|&i| eligible(i)) {
            let w = u64::from(nodes[i].weight());
            if ticket < w {
                return Some(i);
            }
            ticket -= w;
        }
        None
    }

    fn name(&self) -> &'static str {
        "weighted"
    }
}

/// Picks the eligible replica with the fewest units in flight (ties in turn).
#[derive(Debug, Default)]
pub struct LeastInFlight {
    turn: RoundRobin,
}

impl Balancer for LeastInFlight {
    fn pick(&self, nodes: &[Arc<Node>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.turn
            .in_turn(nodes.len(), eligible)
            .min_by_key(|&i| nodes[i].in_flight())
    }

    fn name(&self) -> &'static str {
        "least in-flight"
    }
}

/// Picks the eligible replica with the lowest measured lag (unknown lag last; ties in turn).
#[derive(Debug, Default)]
pub struct LowestLag {
    turn: RoundRobin,
}

impl Balancer for LowestLag {
    fn pick(&self, nodes: &[Arc<Node>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.turn
            .in_turn(nodes.len(), eligible)
            .min_by_key(|&i| nodes[i].lag().unwrap_or(Duration::MAX))
    }

    fn name(&self) -> &'static str {
        "lowest lag"
    }
}

/// The built-in balancers by name, for configuration files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balancing {
    /// [`RoundRobin`] (the default).
    #[default]
    RoundRobin,
    /// [`Random`].
    Random,
    /// [`Weighted`].
    Weighted,
    /// [`LeastInFlight`].
    LeastInFlight,
    /// [`LowestLag`].
    LowestLag,
}

impl Balancing {
    /// The balancer this names.
    pub fn balancer(self) -> Box<dyn Balancer> {
        match self {
            Balancing::RoundRobin => Box::new(RoundRobin::default()),
            Balancing::Random => Box::new(Random),
            Balancing::Weighted => Box::new(Weighted),
            Balancing::LeastInFlight => Box::new(LeastInFlight::default()),
            Balancing::LowestLag => Box::new(LowestLag::default()),
        }
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
    /// Nodes configured to take writes, in order of preference; the first is the primary at
    /// start.
    candidates: Vec<Arc<Node>>,
    /// Nodes configured to serve reads.
    pub replicas: Vec<Arc<Node>>,
    /// The node read-write units go to now.
    current: RwLock<Arc<Node>>,
    /// The term of the current primary when it was elected; a configured replica takes over
    /// only with a higher one (it was promoted).
    elected_term: AtomicU64,
    /// The highest term any primary has reported: a primary below it is stale (fenced).
    highest_term: AtomicU64,
    pub balancer: Box<dyn Balancer>,
    pub fallback: Fallback,
    /// How long a read-only unit with a causal token waits for a replica by default.
    pub causal_wait: Duration,
    /// Replicas measured further behind than this are not used (bounded staleness).
    pub max_lag: Option<Duration>,
}

impl Router {
    pub fn new(
        candidates: Vec<Arc<Node>>,
        replicas: Vec<Arc<Node>>,
        balancer: Box<dyn Balancer>,
        fallback: Fallback,
        causal_wait: Duration,
        max_lag: Option<Duration>,
    ) -> Result<Self, ReplicaError> {
        let first = candidates
            .first()
            .cloned()
            .ok_or_else(|| ReplicaError::Config("no primary configured".into()))?;
        Ok(Router {
            candidates,
            replicas,
            current: RwLock::new(first),
            elected_term: AtomicU64::new(0),
            highest_term: AtomicU64::new(0),
            balancer,
            fallback,
            causal_wait,
            max_lag,
        })
    }

    /// The node read-write units go to now.
    pub fn primary(&self) -> Arc<Node> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The primary, or why no read-write unit can run now (fail fast: a node known to be down
    /// is not tried).
    pub fn writable_primary(&self) -> Result<Arc<Node>, ReplicaError> {
        let primary = self.primary();
        if !primary.is_available() {
            return Err(ReplicaError::NoPrimary {
                reason: format!(
                    "primary `{}` is down{}",
                    primary.name(),
                    primary
                        .last_error()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            });
        }
        if primary.server_role() == ServerRole::Replica {
            return Err(ReplicaError::NoPrimary {
                reason: format!(
                    "`{}` reports that it is a replica, and no other node reports being the primary",
                    primary.name()
                ),
            });
        }
        Ok(primary)
    }

    /// True when a read-only unit may use replica `node`: up, not (or no longer) a primary, and
    /// within `max_lag` when one is given.
    fn readable(node: &Node, max_lag: Option<Duration>) -> bool {
        node.is_available()
            && node.server_role() != ServerRole::Primary
            && max_lag.is_none_or(|bound| node.lag_within(bound))
    }

    /// True when read-only units may use replica `i` (no lag bound).
    pub fn replica_usable(&self, i: usize) -> bool {
        Self::readable(&self.replicas[i], None)
    }

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
                node: self.writable_primary()?,
                reason: RouteReason::Write,
            });
        }
        if self.replicas.is_empty() {
            return Ok(Route {
                node: self.primary(),
                reason: RouteReason::NoReplicas,
            });
        }
        let picked = self.balancer.pick(&self.replicas, &|i| {
            Self::readable(&self.replicas[i], max_lag)
        });
        let fallback = match (picked, self.fallback) {
            (None, Fallback::Primary) => Some(self.primary()).filter(|p| p.is_available()),
            _ => None,
        };
        match (picked, fallback) {
            (Some(i), _) => Ok(Route {
                node: self.replicas[i].clone(),
                reason: RouteReason::Balanced(self.balancer.name()),
            }),
            (None, Some(primary)) => Ok(Route {
                node: primary,
                reason: RouteReason::Fallback,
            }),
            (None, _) => Err(ReplicaError::NoReplicaAvailable {
                reason: match (max_lag, self.fallback) {
                    (Some(bound), _) => format!(
                        "all {} replicas are unavailable or lag more than {bound:?}",
                        self.replicas.len()
                    ),
                    (None, Fallback::Primary) => format!(
                        "all {} replicas and the primary are unavailable",
                        self.replicas.len()
                    ),
                    (None, Fallback::Error) => {
                        format!("all {} replicas are unavailable", self.replicas.len())
                    }
                },
            }),
        }
    }

    /// Every node, configured primaries first.
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.candidates.iter().chain(self.replicas.iter())
    }

    /// After a round of health checks: keeps the current primary while it is up and reports
    /// being the primary at the highest term seen; otherwise switches to the one node that
    /// does — a configured primary candidate, or a replica that was promoted (a higher term).
    /// A node that reports being the primary at a lower term (an old primary coming back) is
    /// never chosen. When the choice is ambiguous (two such nodes), it does not switch, and
    /// read-write units fail with [`ReplicaError::NoPrimary`] while the current one is down.
    pub fn elect(&self) {
        let up_primary = |n: &Node| !n.is_down() && n.server_role() == ServerRole::Primary;
        if let Some(top) = self
            .nodes()
            .filter(|n| up_primary(n))
            .map(|n| n.term())
            .max()
        {
            self.highest_term.fetch_max(top, Ordering::Relaxed);
        }
        let highest = self.highest_term.load(Ordering::Relaxed);
        let current = self.primary();
        if up_primary(&current) && current.term() >= highest {
            self.elected_term.store(current.term(), Ordering::Relaxed);
            return;
        }
        let elected_term = self.elected_term.load(Ordering::Relaxed);
        let is_candidate = |n: &Arc<Node>| self.candidates.iter().any(|c| Arc::ptr_eq(c, n));
        let eligible: Vec<&Arc<Node>> = self
            .nodes()
            .filter(|n| !Arc::ptr_eq(n, &current))
            .filter(|n| up_primary(n) && n.term() >= highest)
            .filter(|n| is_candidate(n) || n.term() > elected_term)
            .collect();
        match eligible.as_slice() {
            [] => {}
            [next] => {
                tracing::warn!(
                    from = current.name(),
                    to = next.name(),
                    term = next.term(),
                    "primary failover: read-write units now go to `{}`",
                    next.name()
                );
                self.elected_term.store(next.term(), Ordering::Relaxed);
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(next);
            }
            several => {
                let names: Vec<&str> = several.iter().map(|n| n.name()).collect();
                tracing::error!(
                    nodes = ?names,
                    "several nodes report being the primary at term {highest}: not switching"
                );
            }
        }
    }

    /// True when `node` reports being a primary but is not the one in use (a stale primary).
    pub fn is_fenced(&self, node: &Node) -> bool {
        node.server_role() == ServerRole::Primary && !std::ptr::eq(node, &*self.primary())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::node::NodeParts;

    fn nodes(weights: &[u32]) -> Vec<Arc<Node>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| {
                Arc::new(Node::new(NodeParts {
                    name: format!("r{i}"),
                    role: crate::Role::Replica,
                    redacted_url: String::new(),
                    conn: sea_orm::DatabaseConnection::default(), // never used: no I/O here
                    weight,
                    statement_timeout: None,
                    breaker: crate::node::DEFAULT_BREAKER,
                }))
            })
            .collect()
    }

    #[test]
    fn round_robin_cycles_and_skips_unavailable() {
        let (three, none) = (nodes(&[1, 1, 1]), nodes(&[]));
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..6).map(|_| rr.pick(&three, &|_| true)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2].map(Some));
        let picks: Vec<_> = (0..4).map(|_| rr.pick(&three, &|i| i != 1)).collect();
        assert!(picks.iter().all(|&i| i.is_some() && i != Some(1)));
        assert_eq!(rr.pick(&three, &|_| false), None);
        assert_eq!(rr.pick(&none, &|_| true), None);
    }

    #[test]
    fn strategies_pick_what_they_promise() {
        let three = nodes(&[1, 1, 8]);
        // weighted: about 8 in 10 on the heavy node
        let heavy = (0..10_000)
            .filter(|_| Weighted.pick(&three, &|_| true) == Some(2))
            .count();
        assert!((7_000..9_000).contains(&heavy), "{heavy}");
        assert_eq!(Weighted.pick(&three, &|i| i == 0), Some(0));
        // random: every eligible node, never an ineligible one
        let mut seen = [0; 3];
        for _ in 0..3_000 {
            if let Some(i) = Random.pick(&three, &|i| i != 1) {
                seen[i] += 1;
            }
        }
        assert!(
            seen[0] > 1_000 && seen[1] == 0 && seen[2] > 1_000,
            "{seen:?}"
        );
        // least in flight
        let _busy = [three[0].enter(), three[0].enter(), three[2].enter()];
        assert_eq!(LeastInFlight::default().pick(&three, &|_| true), Some(1));
        assert_eq!(LeastInFlight::default().pick(&three, &|i| i != 1), Some(2));
        // lowest lag: unknown lag last
        three[0].set_lag(Some(Duration::from_millis(30)));
        three[1].set_lag(Some(Duration::from_millis(5)));
        assert_eq!(LowestLag::default().pick(&three, &|_| true), Some(1));
        assert_eq!(LowestLag::default().pick(&three, &|i| i != 1), Some(0));
    }

    #[test]
    fn a_failed_node_stays_out_until_its_backoff_passes_unmonitored() {
        let one = nodes(&[1]);
        assert!(one[0].is_available());
        one[0].mark_down("connection refused");
        assert!(!one[0].is_available() && one[0].is_down());
        assert_eq!(one[0].last_error().as_deref(), Some("connection refused"));
        one[0].mark_up();
        assert!(one[0].is_available() && one[0].down_for().is_none());
    }
}
