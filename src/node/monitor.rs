//! Node health: the background monitor. It checks the nodes and records what they report; the
//! election that follows each round belongs to [`routing`](crate::routing).
//!
//! One task per handle, started by the builder for PostgreSQL and MariaDB (SQLite's reader
//! shares the writer's file and never lags). Every `interval` it checks every node at once,
//! each check bounded by `check_timeout`, so a node that hangs cannot hold up the others:
//!
//! - reachable or not: a failed or timed-out check takes the node down (its circuit opens);
//!   a down node is checked again after its back-off, and re-admitted when it answers;
//! - its role and term, as the server reports them (`pg_is_in_recovery()` and the WAL
//!   timeline; `@@read_only`), from which the router elects the primary
//!   (see [`routing`](crate::routing)): after a promotion, read-write units follow without a restart;
//! - its replay position and lag (bounded staleness, causal reads).
//!
//! The task holds only a weak reference to the handle and stops once the handle is dropped.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::join_all;

use super::Node;

/// How often the monitor checks the nodes unless told otherwise.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_millis(500);

/// How long one check may take before the node counts as down, unless told otherwise.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Checks one node: records what it reports and re-admits it, or takes it down.
async fn check(node: &Node, timeout: Duration) {
    let probe = node.dialect().probe(node.connection());
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(probe)) => node.record_probe(&probe),
        Ok(Err(err)) => node.mark_down(&format!("health check failed: {err}")),
        Err(_) => node.mark_down(&format!("health check timed out after {timeout:?}")),
    }
}

/// Checks every node of `nodes` that is due, all at once.
pub(crate) async fn check_due<'a>(nodes: impl Iterator<Item = &'a Arc<Node>>, timeout: Duration) {
    join_all(
        nodes
            .filter(|n| n.due_for_check())
            .map(|n| check(n, timeout)),
    )
    .await;
}

/// Spawns the monitor for `owner`: every `interval`, one `round` (checks, then the election);
/// it ends when `owner` is dropped.
pub(crate) fn spawn_monitor<T, F, R>(owner: Weak<T>, interval: Duration, round: F)
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>) -> R + Send + 'static,
    R: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(owner): Option<Arc<T>> = owner.upgrade() else {
                tracing::debug!("handle dropped: monitor stops");
                return;
            };
            round(owner).await;
        }
    });
}
