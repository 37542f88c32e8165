//! The router: the nodes and the rules to choose among them, a routing decision ([`Route`]) and
//! its reason ([`RouteReason`]), and what to do when no replica is eligible ([`Fallback`]).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Balancer;
use crate::consistency::{CausalToken, Position};
use crate::node::status::{NodeStatus, Status};
use crate::node::{Node, Role, ServerRole};
use crate::ReplicaError;

/// What a read-only unit does when no replica is eligible.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Run on the primary, in a `READ ONLY` transaction (the default).
    #[default]
    Primary,
    /// Fail with [`ReplicaError::NoReplicaAvailable`].
    Error,
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
    /// A read-only unit with a causal token that no replica has, where every replica is
    /// measured (by the monitor) further behind than the unit may wait: the primary at once,
    /// read only, without asking or waiting (MaxScale's `causal_reads=fast`).
    TooFarBehind,
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
            RouteReason::TooFarBehind => {
                "causal token: every replica lags more than the wait; primary at once, read only"
            }
            RouteReason::PrimaryRequested => "primary requested: primary, read only",
        }
    }

    /// A short, stable label for metrics (`db.replica.route_reason`): `write`, `balanced`,
    /// `no_replicas`, `fallback`, `inherited`, `caught_up`, `waited_for_replay`,
    /// `not_replayed`, `too_far_behind`, `primary_requested`.
    pub fn label(self) -> &'static str {
        match self {
            RouteReason::Write => "write",
            RouteReason::Balanced(_) => "balanced",
            RouteReason::NoReplicas => "no_replicas",
            RouteReason::Fallback => "fallback",
            RouteReason::Inherited => "inherited",
            RouteReason::CaughtUp => "caught_up",
            RouteReason::WaitedForReplay => "waited_for_replay",
            RouteReason::NotReplayed => "not_replayed",
            RouteReason::TooFarBehind => "too_far_behind",
            RouteReason::PrimaryRequested => "primary_requested",
        }
    }

    /// The reason's place among the reasons (metric keys are kept per reason).
    pub(crate) fn index(self) -> usize {
        match self {
            RouteReason::Write => 0,
            RouteReason::Balanced(_) => 1,
            RouteReason::NoReplicas => 2,
            RouteReason::Fallback => 3,
            RouteReason::Inherited => 4,
            RouteReason::CaughtUp => 5,
            RouteReason::WaitedForReplay => 6,
            RouteReason::NotReplayed => 7,
            RouteReason::TooFarBehind => 8,
            RouteReason::PrimaryRequested => 9,
        }
    }

    /// True when a read-only unit runs on the primary.
    pub fn is_read_only_on_primary(self) -> bool {
        matches!(
            self,
            RouteReason::NoReplicas
                | RouteReason::Fallback
                | RouteReason::NotReplayed
                | RouteReason::TooFarBehind
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
    pub(super) candidates: Vec<Arc<Node>>,
    /// Nodes configured to serve reads.
    pub replicas: Vec<Arc<Node>>,
    /// The node read-write units go to now.
    pub(super) current: RwLock<Arc<Node>>,
    /// The term of the current primary when it was elected; a configured replica takes over
    /// only with a higher one (it was promoted).
    pub(super) elected_term: AtomicU64,
    /// The highest term any primary has reported: a primary below it is stale (fenced).
    pub(super) highest_term: AtomicU64,
    pub balancer: Box<dyn Balancer>,
    pub fallback: Fallback,
    /// How long a read-only unit with a causal token waits for a replica by default.
    pub causal_wait: Duration,
    /// Replicas measured further behind than this are not used (bounded staleness).
    pub max_lag: Option<Duration>,
    /// The shard this cluster is, when it is one of a sharded handle's: causal tokens keep
    /// its positions under this name.
    pub shard: Option<Arc<str>>,
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
            shard: None,
        })
    }

    /// A causal token at `position` of this cluster: kept under the shard's name when the
    /// cluster is a shard.
    pub fn token(&self, position: Position) -> CausalToken {
        match &self.shard {
            None => CausalToken::new(position),
            Some(name) => CausalToken::on_shard(name, position),
        }
    }

    /// This cluster's position in `token`.
    pub fn position_in<'t>(&self, token: &'t CausalToken) -> &'t Position {
        token.position_for(self.shard.as_deref())
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

    /// True when a read-only unit may use replica `node`: up, not drained by hand, not (or no
    /// longer) a primary, and within `max_lag` when one is given.
    fn readable(node: &Node, max_lag: Option<Duration>) -> bool {
        node.is_available()
            && !node.is_drained()
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
}

// The status view (in `node::status`) is filled in here: only the router knows which node is the
// current primary and which are fenced.
impl Status {
    pub(crate) fn collect(router: &Router) -> Self {
        let primary = router.primary();
        for n in router.nodes().filter(|n| !n.is_monitored()) {
            // no monitor publishes this node's gauges and samples: a status read does
            n.publish();
        }
        let line = |n: &Node| {
            let current_primary = std::ptr::eq(n, &*primary);
            let fenced = router.is_fenced(n);
            let server_role = n.server_role();
            NodeStatus {
                name: n.name().to_owned(),
                url: n.url().to_owned(),
                configured: n.role(),
                server_role,
                current_primary,
                fenced,
                drained: n.is_drained(),
                up: !n.is_down(),
                down_for: n.down_for(),
                last_error: n.last_error().filter(|_| n.is_down()),
                lag: n.lag().filter(|_| server_role != ServerRole::Primary),
                term: n.term(),
                in_flight: n.in_flight(),
                units: n.counters.units.load(std::sync::atomic::Ordering::Relaxed),
                pools: n.pool_use(),
                note: note(n.role(), server_role, current_primary, fenced),
            }
        };
        Status {
            nodes: router.nodes().map(|n| line(n)).collect(),
        }
    }
}

/// What the status view says about a node whose configured role, reported role and routing do
/// not line up; the words match [`ReplicaError::NoPrimary`]'s.
fn note(configured: Role, server: ServerRole, current: bool, fenced: bool) -> Option<String> {
    let role = match configured {
        Role::Primary => "configured as a primary",
        Role::Replica => "configured as a replica",
    };
    match (server, current, fenced) {
        (ServerRole::Replica, true, _) => Some(format!(
            "{role}, but the server reports being a replica (in recovery / read_only), and no \
             other node reports being the primary: read-write units fail with NoPrimary"
        )),
        (ServerRole::Replica, false, _) if configured == Role::Primary => Some(format!(
            "{role}, but the server reports being a replica (in recovery / read_only): it takes \
             no writes"
        )),
        (ServerRole::Primary, false, true) => Some(format!(
            "{role}; reports being a primary, but not the current one (an older term, or a \
             second primary): it gets no units"
        )),
        (ServerRole::Primary, true, _) if configured == Role::Replica => Some(format!(
            "{role}; reports being the primary (promoted) and took over: read-write units go here"
        )),
        _ => None,
    }
}
