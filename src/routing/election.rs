//! Primary election and fencing, decided after every round of health checks (the rules are
//! described in [`routing`](super)), and the round itself: check the nodes, then elect, then
//! read the replicas' lag against the elected primary.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{DbErr, RuntimeErr};

use super::Router;
use crate::node::monitor::{check_due, measure_lags, record};
use crate::node::{Node, ServerRole};
use crate::ReplicaError;

/// One round: checks every node that is due, all at once; records what they said; elects the
/// primary; then sets every answered node's lag (a replica's read against that primary).
/// Nothing awaits between recording and the lags, so no unit sees a half-recorded round.
pub(crate) async fn check_nodes(router: &Router, timeout: Duration) {
    let round = check_due(router.nodes(), timeout).await;
    record(&round);
    router.elect();
    measure_lags(&round, &router.primary());
    for node in router.nodes() {
        node.publish();
    }
}

/// The round `connect()` runs before handing out the handle. It fails when no node answered
/// at all ([`ReplicaError::Unreachable`], naming the primary), and when the node that would
/// take writes answered that it is a replica while no node reports being a primary that could
/// take over ([`ReplicaError::PrimaryIsReplica`]): a primary URL that points at a replica is a
/// configuration mistake, found here rather than by the first write. A primary that is only
/// down (unreachable) does not fail `connect()`: it starts down and the monitor brings it in.
pub(crate) async fn first_round(router: &Router, timeout: Duration) -> Result<(), ReplicaError> {
    check_nodes(router, timeout).await;
    let primary = router.primary();
    if router.nodes().all(|n| n.is_down()) {
        return Err(ReplicaError::Unreachable {
            node: primary.name().to_owned(),
            url: primary.url().to_owned(),
            source: DbErr::Conn(RuntimeErr::Internal(
                primary.last_error().unwrap_or_default(),
            )),
        });
    }
    if !primary.is_down() && primary.server_role() == ServerRole::Replica {
        return Err(ReplicaError::PrimaryIsReplica {
            node: primary.name().to_owned(),
            url: primary.url().to_owned(),
        });
    }
    Ok(())
}

impl Router {
    /// After a round of health checks: keeps the current primary while it is up and reports
    /// being the primary at the highest term seen; otherwise switches to the one node that
    /// does — a configured primary candidate, or a replica that was promoted (a higher term).
    /// A node that reports being the primary at a lower term (an old primary coming back) is
    /// never chosen. When the choice is ambiguous (two such nodes), it does not switch, and
    /// read-write units fail with [`ReplicaError::NoPrimary`](crate::ReplicaError::NoPrimary) while the current one is down.
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
        crate::observe::record::handle::election();
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
                next.metrics.failover();
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
