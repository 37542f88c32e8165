//! The ambient read-only scope: the `use_replica` context of seeds/002, task-scoped.
//!
//! Inside [`read_only_scope`], statements sent straight to a
//! [`ReplicatedDatabase`](crate::ReplicatedDatabase) (not through a unit) go to a replica, and
//! writes are refused. The first such statement picks the replica; the rest of the scope stays
//! on it, so one request sees one database and never goes back in time. The scope is a tokio
//! task-local: it follows the future across `.await`s and threads, but not into
//! `tokio::spawn`ed tasks (wrap those in their own scope).

use std::future::Future;
use std::sync::Mutex;

use crate::policy::Route;
use crate::ReplicaError;

tokio::task_local! {
    static READ_ONLY_SCOPE: ScopeState;
}

#[derive(Default)]
struct ScopeState {
    /// The route each handle (by address of its shared state) took in this scope.
    pinned: Mutex<Vec<(usize, Route)>>,
}

/// Runs `fut` in a read-only scope.
///
/// ```no_run
/// # use sea_orm_replica::{read_only_scope, ReplicatedDatabase};
/// # use sea_orm::EntityTrait;
/// # async fn demo(db: &ReplicatedDatabase) {
/// let answer = read_only_scope(async {
///     // plain handle reads in here run on a replica
/// }).await;
/// # }
/// ```
pub async fn read_only_scope<F: Future>(fut: F) -> F::Output {
    READ_ONLY_SCOPE.scope(ScopeState::default(), fut).await
}

/// True inside [`read_only_scope`].
pub fn in_read_only_scope() -> bool {
    READ_ONLY_SCOPE.try_with(|_| ()).is_ok()
}

/// In a scope: the route this handle is pinned to (choosing it with `choose` the first time).
/// Outside any scope: `None`.
pub(crate) fn scoped_route(
    key: usize,
    choose: impl FnOnce() -> Result<Route, ReplicaError>,
) -> Option<Result<Route, ReplicaError>> {
    READ_ONLY_SCOPE
        .try_with(|state| {
            let mut pinned = state.pinned.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, route)) = pinned.iter().find(|(k, _)| *k == key) {
                return Ok(route.clone());
            }
            let route = choose()?;
            pinned.push((key, route.clone()));
            Ok(route)
        })
        .ok()
}
