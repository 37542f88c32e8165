//! Node health: a background monitor that measures each replica's lag and replay position.
//!
//! One task per handle, started by the builder for PostgreSQL and MariaDB (SQLite's reader
//! shares the writer's file and never lags). It holds only a weak reference to the handle and
//! stops once the handle is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::policy::Router;

/// How often the monitor measures the replicas unless told otherwise.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_millis(500);

/// Measures every replica once: lag and replay position. Errors take the node out of
/// routing (passive health) and leave its lag unknown.
pub(crate) async fn measure_replicas(router: &Router) {
    for node in &router.replicas {
        let dialect = node.dialect();
        let lag = dialect.replica_lag(node.connection()).await;
        let position = dialect.replay_position(node.connection()).await;
        match (lag, position) {
            (Ok(lag), Ok(position)) => {
                node.set_lag(lag);
                node.observe_position(&position);
            }
            (Err(err), _) | (_, Err(err)) => {
                node.set_lag(None);
                node.observe_error(&err);
            }
        }
    }
}

/// Spawns the monitor for `owner`'s router; it ends when `owner` is dropped.
pub(crate) fn spawn_monitor<T, F>(owner: Weak<T>, interval: Duration, router_of: F)
where
    T: Send + Sync + 'static,
    F: Fn(&T) -> &Router + Send + 'static,
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
            measure_replicas(router_of(&owner)).await;
        }
    });
}
