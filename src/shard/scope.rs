//! Request-scoped shard choice: a task-local scope that names the request's shard and can lock
//! the request to it, so code cannot switch shards mid-request (Rails' `ShardSelector` with
//! `lock: true`).

use std::future::Future;

tokio::task_local! {
    static SHARD: ScopeLock;
}

/// Which shard of which sharded handle a scope is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScopeLock {
    /// The sharded handle ([`ShardedDatabase::id`](super::ShardedDatabase)).
    pub owner: usize,
    /// The shard's index.
    pub shard: usize,
    /// Refuse every other shard of that handle inside the scope.
    pub lock: bool,
}

/// A scope that runs a future with one shard chosen (and maybe locked): made by
/// [`ShardedDatabase::scope`](super::ShardedDatabase::scope); the tower layer
/// ([`ShardLayer`](crate::web::ShardLayer)) runs each request in one.
///
/// ```no_run
/// # async fn demo(shards: sea_orm_replica::shard::ShardedDatabase) -> Result<(), sea_orm_replica::ReplicaError> {
/// let scope = shards.scope("b", true)?;
/// scope.run(async {
///     let db = shards.current().expect("in the scope");    // shard b
///     assert!(shards.shard_named("a").is_err());           // locked to b
/// }).await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ShardScope {
    lock: ScopeLock,
}

impl ShardScope {
    pub(crate) fn new(lock: ScopeLock) -> Self {
        ShardScope { lock }
    }

    /// Runs `fut` inside the scope.
    pub async fn run<F: Future>(&self, fut: F) -> F::Output {
        SHARD.scope(self.lock, fut).await
    }
}

/// The shard the current scope chose for handle `owner`.
pub(crate) fn scoped_shard(owner: usize) -> Option<usize> {
    SHARD
        .try_with(|s| (s.owner == owner).then_some(s.shard))
        .ok()
        .flatten()
}

/// The shard the current scope locks handle `owner` to.
pub(crate) fn locked_shard(owner: usize) -> Option<usize> {
    SHARD
        .try_with(|s| (s.owner == owner && s.lock).then_some(s.shard))
        .ok()
        .flatten()
}
