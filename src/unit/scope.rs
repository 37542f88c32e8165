//! Ambient, task-scoped routing: Django's `use_replica` context, and the per-request scope
//! the tower layer runs each request in.
//!
//! Inside a read-only scope, statements sent straight to a
//! [`ReplicatedDatabase`](crate::ReplicatedDatabase) (not through a unit) go to a replica, and
//! writes are refused. The first such statement picks the replica, and the rest of the scope
//! stays on it, so one request sees one database and never goes back in time.
//!
//! A [`CausalScope`] also carries a causal token. Read-only units opened inside it, and the
//! handle's reads in a read-only scope, only run where that token has been replayed. Every
//! read-write unit committed inside it, and every write sent straight to the handle, adds its
//! position to the token, which [`CausalScope::written`] hands back (the tower layer puts it in
//! a cookie).
//!
//! Scopes are tokio task-locals. They follow the future across `.await`s and threads, but not
//! into `tokio::spawn`ed tasks (wrap those in their own scope).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::consistency::{CausalToken, Consistency};
use crate::routing::Route;

tokio::task_local! {
    static SCOPE: Arc<ScopeState>;
}

#[derive(Debug, Default)]
struct ScopeState {
    read_only: bool,
    /// The incoming token merged with everything written in the scope.
    token: Mutex<CausalToken>,
    /// Only what was written in the scope.
    written: Mutex<Option<CausalToken>>,
    /// The route each handle (by address of its shared state) took in this scope.
    pinned: Mutex<Vec<(usize, Route)>>,
    /// Sticky-after-write: for this long after the last write, reads go to the primary.
    sticky: Option<Duration>,
    /// When the last write happened (in this scope, or as the client reported it).
    last_write: Mutex<Option<SystemTime>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A scope to run a request (or any task) in: read-only or not, with a causal token.
///
/// ```no_run
/// # use sea_orm_replica::{CausalScope, CausalToken, ReplicatedDatabase};
/// # async fn demo(db: &ReplicatedDatabase, cookie: &str) {
/// let scope = CausalScope::new(false, cookie.parse().ok());
/// scope.run(async { /* handlers: units read where `cookie` was replayed */ }).await;
/// if let Some(token) = scope.written() { /* send token.to_string() back */ }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CausalScope {
    state: Arc<ScopeState>,
}

impl CausalScope {
    /// A scope; `read_only` makes plain handle reads go to a replica and refuses handle writes.
    pub fn new(read_only: bool, token: Option<CausalToken>) -> Self {
        CausalScope {
            state: Arc::new(ScopeState {
                read_only,
                token: Mutex::new(token.unwrap_or_default()),
                ..ScopeState::default()
            }),
        }
    }

    /// Sticky-after-write instead of positions: for `window` after the last write (this
    /// scope's, or `last_write` from an earlier request), read-only work runs on the primary.
    /// Costs nothing to capture; every read in the window costs the primary a query.
    pub fn sticky(self, window: Duration, last_write: Option<SystemTime>) -> Self {
        CausalScope {
            state: Arc::new(ScopeState {
                read_only: self.state.read_only,
                token: Mutex::new(lock(&self.state.token).clone()),
                sticky: Some(window),
                last_write: Mutex::new(last_write),
                ..ScopeState::default()
            }),
        }
    }

    /// When the last write seen by this scope happened, if any.
    pub fn last_write(&self) -> Option<SystemTime> {
        *lock(&self.state.last_write)
    }

    /// Runs `fut` inside the scope.
    pub async fn run<F: Future>(&self, fut: F) -> F::Output {
        SCOPE.scope(self.state.clone(), fut).await
    }

    /// The token of everything written inside the scope, if anything was.
    pub fn written(&self) -> Option<CausalToken> {
        lock(&self.state.written).clone()
    }

    /// The incoming token merged with everything written so far.
    pub fn token(&self) -> CausalToken {
        lock(&self.state.token).clone()
    }
}

/// Runs `fut` in a read-only scope with no token.
///
/// ```no_run
/// # use sea_orm_replica::{read_only_scope, ReplicatedDatabase};
/// # async fn demo(db: &ReplicatedDatabase) {
/// let answer = read_only_scope(async {
///     // plain handle reads in here run on a replica
/// }).await;
/// # }
/// ```
pub async fn read_only_scope<F: Future>(fut: F) -> F::Output {
    CausalScope::new(true, None).run(fut).await
}

/// True inside any scope.
pub(crate) fn in_any_scope() -> bool {
    SCOPE.try_with(|_| ()).is_ok()
}

/// True inside a read-only scope.
pub fn in_read_only_scope() -> bool {
    SCOPE.try_with(|s| s.read_only).unwrap_or(false)
}

/// Inside a scope: what read-only work must respect (the primary while sticky, else the
/// token). Outside any scope, or with nothing to respect: `None`.
pub(crate) fn read_consistency() -> Option<Consistency> {
    SCOPE
        .try_with(|s| {
            if let (Some(window), Some(at)) = (s.sticky, *lock(&s.last_write)) {
                if at.elapsed().map_or(true, |age| age < window) {
                    return Some(Consistency::Primary);
                }
            }
            let token = lock(&s.token).clone();
            (!token.is_empty()).then_some(Consistency::ReadYourWrites(token))
        })
        .ok()
        .flatten()
}

/// Inside any scope: records a write's token. Returns false outside any scope.
pub(crate) fn record_write(token: &CausalToken) -> bool {
    SCOPE
        .try_with(|s| {
            let mut all = lock(&s.token);
            *all = all.merge(token);
            let mut written = lock(&s.written);
            *written = Some(
                written
                    .as_ref()
                    .map_or_else(|| token.clone(), |w| w.merge(token)),
            );
        })
        .is_ok()
}

/// True inside a scope that keeps positions (so writes should capture theirs). A sticky scope
/// only needs to know that a write happened: [`note_write`].
pub(crate) fn wants_tokens() -> bool {
    SCOPE.try_with(|s| s.sticky.is_none()).unwrap_or(false)
}

/// Inside any scope: a write just committed (sticky scopes start their window).
pub(crate) fn note_write() {
    let _ = SCOPE.try_with(|s| *lock(&s.last_write) = Some(SystemTime::now()));
}

/// In a read-only scope: the route this handle is pinned to, if chosen already.
pub(crate) fn pinned_route(key: usize) -> Option<Route> {
    SCOPE
        .try_with(|s| {
            s.read_only
                .then(|| {
                    lock(&s.pinned)
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map(|(_, r)| r.clone())
                })
                .flatten()
        })
        .ok()
        .flatten()
}

/// Pins `route` for this handle in the current scope (first pin wins); returns the pinned one.
pub(crate) fn pin_route(key: usize, route: Route) -> Route {
    SCOPE
        .try_with(|s| {
            let mut pinned = lock(&s.pinned);
            if let Some((_, r)) = pinned.iter().find(|(k, _)| *k == key) {
                return r.clone();
            }
            pinned.push((key, route.clone()));
            route.clone()
        })
        .unwrap_or(route)
}
