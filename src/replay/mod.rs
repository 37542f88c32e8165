//! Read-write units that ride over a primary failover, applied exactly once.
//!
//! A unit with an identity ([`UnitOptions::identity`]) records it in `sor_applied` in the
//! transaction that commits it: one more statement in the `COMMIT` message (no extra round
//! trip on PostgreSQL and MariaDB). So "did it commit?" always has an answer
//! ([`ReplicatedDatabase::applied`]), and the server itself refuses a second application of
//! the same identity (the table's primary key): [`ReplicaError::AlreadyApplied`].
//!
//! [`ReplicatedDatabase::read_write_replayed`] builds on it. When the unit fails because the
//! primary did (connection lost or refused, no answer in time, no primary elected yet), the
//! closure runs again, on the new primary once there is one, within the handle's
//! [`replay_budget`](crate::ReplicatedDatabaseBuilder::replay_budget):
//!
//! * failed before `COMMIT` was sent: nothing committed; run again;
//! * failed while the `COMMIT` answer was in flight: the outcome is unknown, so the identity is
//!   looked up on the primary (the new one, or the old one when it answers again). Found: that
//!   run committed, and the call returns **the value that run's closure returned** (it was
//!   computed inside the transaction that committed). Not found: run again. If the old
//!   transaction commits after all while the new run is under way, the new run's identity row
//!   collides with it, the server rolls the new run back, and the call again returns the value
//!   of the run that committed.
//!
//! The promise: a replayed unit is applied at most once, whatever fails; it returns `Ok` only
//! when a run committed; it returns [`ReplicaError::CommitOutcomeUnknown`] (carrying the
//! identity) only when the budget ran out before the primary could say. The closure must be
//! database work only: what it does outside the transaction (an e-mail, a call to another
//! service) happens once per run.
//!
//! The table comes from a migration this crate ships, [`AppliedTableMigration`]; add it to
//! your migrator. Rows are kept until [`ReplicatedDatabase::forget_applied`] deletes old ones.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sea_orm::{ConnectionTrait, DbErr, Statement, TransactionError};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager};
use tracing::Instrument;
use uuid::Uuid;

use crate::backend::{applied_lookup_sql, applied_table, APPLIED_TABLE};
use crate::unit::access::ReadWrite;
use crate::{ReplicaError, ReplicatedDatabase, UnitOfWork, UnitOptions};

/// How long a replayed unit keeps trying (see
/// [`replay_budget`](crate::ReplicatedDatabaseBuilder::replay_budget)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplayBudget {
    /// Runs of the closure at most (the first included).
    pub runs: u32,
    /// No new run, and no new look-up, starts after this much time since the first.
    pub time: Duration,
}

impl Default for ReplayBudget {
    fn default() -> Self {
        ReplayBudget {
            runs: 5,
            time: Duration::from_secs(8),
        }
    }
}

/// Waits between runs while the primary is away: 25 ms, doubling to 400 ms.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(25))
    }

    /// Sleeps the next wait, never past `until`.
    async fn wait(&mut self, until: Instant) {
        let wait = self.0.min(until.saturating_duration_since(Instant::now()));
        self.0 = (self.0 * 2).min(Duration::from_millis(400));
        tokio::time::sleep(wait).await;
    }
}

/// What the primary says of an identity.
enum Lookup {
    /// This run committed it.
    Committed(u32),
    /// Not recorded (yet): no run committed, or one is still in flight on a primary that the
    /// next run's identity row will wait for.
    NotFound,
}

/// Why the last run did not commit.
enum Failed<E> {
    Db(DbErr),
    Closure(E),
}

impl ReplicatedDatabase {
    /// Runs `callback` in a read-write unit with a fresh identity (uuid v7) and reruns it
    /// across a primary failover, applying it exactly once: see the [module](crate::replay).
    ///
    /// ```no_run
    /// # use sea_orm_replica::ReplicatedDatabase;
    /// # use sea_orm::{ConnectionTrait, DbErr};
    /// # async fn demo(db: &ReplicatedDatabase) -> Result<(), sea_orm::TransactionError<DbErr>> {
    /// let rows = db.read_write_replayed(|unit| Box::pin(async move {
    ///     let done = unit.execute_unprepared("UPDATE banner SET name = 'x' WHERE id = 1").await?;
    ///     Ok::<_, DbErr>(done.rows_affected())
    /// })).await?;                       // the value of the run that committed
    /// # Ok(()) }
    /// ```
    ///
    /// Errors: the closure's own error (`TransactionError::Transaction`) ends it at once,
    /// unless the primary failed under it; [`ReplicaError::CommitOutcomeUnknown`] when the
    /// budget ran out with a commit unanswered; otherwise the last run's error. Needs the
    /// `sor_applied` table ([`AppliedTableMigration`]). On a sharded handle, call it on the
    /// shard: `shards.shard(key).await?.read_write_replayed(..)`.
    pub async fn read_write_replayed<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> Fn(
                &'c UnitOfWork<ReadWrite>,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send
            + Sync,
        T: Send,
        E: Display + Debug + Send,
    {
        self.read_write_replayed_as(Uuid::now_v7(), callback).await
    }

    /// [`read_write_replayed`](Self::read_write_replayed) under a given identity: the id of
    /// the command the unit applies, so that a second delivery of it is refused by the
    /// server ([`ReplicaError::AlreadyApplied`], as `TransactionError::Connection`).
    pub async fn read_write_replayed_as<F, T, E>(
        &self,
        id: Uuid,
        callback: F,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> Fn(
                &'c UnitOfWork<ReadWrite>,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send
            + Sync,
        T: Send,
        E: Display + Debug + Send,
    {
        let span = tracing::info_span!("replayed_unit", %id, runs = tracing::field::Empty);
        self.replay(id, None, callback).instrument(span).await
    }

    /// A replayed unit that applies several identities at once (a queue worker's batch):
    /// all are recorded by the one commit, so they commit together or not at all; `ids[0]`
    /// is the one looked up. A second application of any of them refuses the whole unit.
    pub(crate) async fn read_write_replayed_batch<F, T, E>(
        &self,
        ids: &[Uuid],
        callback: F,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> Fn(
                &'c UnitOfWork<ReadWrite>,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send
            + Sync,
        T: Send,
        E: Display + Debug + Send,
    {
        let Some((&id, more)) = ids.split_first() else {
            return Err(conn(ReplicaError::Config("an empty batch".into())));
        };
        let span = tracing::info_span!("replayed_unit", %id, batch = ids.len(), runs = tracing::field::Empty);
        self.replay(id, Some(Arc::from(more)), callback)
            .instrument(span)
            .await
    }

    async fn replay<F, T, E>(
        &self,
        id: Uuid,
        also: Option<Arc<[Uuid]>>,
        callback: F,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> Fn(
                &'c UnitOfWork<ReadWrite>,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send
            + Sync,
        T: Send,
        E: Display + Debug + Send,
    {
        let budget = self.replay_budget();
        let until = Instant::now() + budget.time;
        let mut backoff = Backoff::new();
        // runs whose COMMIT went unanswered, with the values their closures returned
        let mut unanswered: Vec<(u32, T)> = Vec::new();
        let mut run = 0;
        // runs that reached a server (a refusal for want of a primary is a wait, not a run)
        let mut spent = 0;
        loop {
            run += 1;
            tracing::Span::current().record("runs", run);
            let mut options = UnitOptions::new().run_of(id, run);
            if let Some(also) = &also {
                options = options.also_recording(also.clone());
            }
            let unit = self.begin_unit::<ReadWrite>(options);
            let outcome = callback(&unit).await;
            if unit.is_started() {
                spent += 1;
            }
            let failed = match outcome {
                Ok(value) => match unit.commit().await.map_err(ReplicaError::from_db_err) {
                    Ok(()) => return Ok(value),
                    Err(ReplicaError::AlreadyApplied { .. }) if unanswered.is_empty() => {
                        // another unit with this identity committed: not a replay of ours
                        return Err(conn(ReplicaError::AlreadyApplied { id }));
                    }
                    Err(ReplicaError::AlreadyApplied { .. }) => {
                        // an earlier run committed after all: its value is the answer
                        return self.settle(id, unanswered, until).await;
                    }
                    Err(ReplicaError::CommitOutcomeUnknown { reason, .. }) => {
                        tracing::warn!(run, %reason, "replayed unit: the COMMIT answer was lost; asking the primary");
                        unanswered.push((run, value));
                        match self.look_up(id, until, &mut backoff).await {
                            Ok(Lookup::Committed(r)) => return take_run(id, unanswered, r),
                            Ok(Lookup::NotFound) => {
                                Failed::Db(ReplicaError::CommitOutcomeUnknown { id, reason }.into())
                            }
                            Err(_) => {
                                return Err(conn(ReplicaError::CommitOutcomeUnknown { id, reason }))
                            }
                        }
                    }
                    Err(err) => {
                        let err = DbErr::from(err);
                        if !ReplicaError::is_primary_unavailable(&err) {
                            return Err(TransactionError::Connection(err));
                        }
                        Failed::Db(err)
                    }
                },
                Err(err) if unit.saw_node_failure() => {
                    let _ = unit.rollback().await;
                    Failed::Closure(err)
                }
                Err(err) => {
                    unit.rollback()
                        .await
                        .map_err(TransactionError::Connection)?;
                    return Err(TransactionError::Transaction(err));
                }
            };
            if spent >= budget.runs || Instant::now() >= until {
                tracing::warn!(runs = run, "replayed unit: budget spent");
                return Err(match (unanswered.is_empty(), failed) {
                    // a run may have committed: say so, with the identity
                    (false, _) => conn(ReplicaError::CommitOutcomeUnknown {
                        id,
                        reason: format!("the replay budget ran out after {run} runs"),
                    }),
                    (true, Failed::Db(err)) => TransactionError::Connection(err),
                    (true, Failed::Closure(err)) => TransactionError::Transaction(err),
                });
            }
            match &failed {
                Failed::Db(err) => {
                    tracing::warn!(run, error = %err, "replayed unit: the primary failed; running it again")
                }
                Failed::Closure(err) => {
                    tracing::warn!(run, error = %err, "replayed unit: the primary failed under the closure; running it again")
                }
            }
            backoff.wait(until).await;
        }
    }

    /// An earlier, unanswered run committed: which one, and its value.
    async fn settle<T, E>(
        &self,
        id: Uuid,
        mut unanswered: Vec<(u32, T)>,
        until: Instant,
    ) -> Result<T, TransactionError<E>> {
        if unanswered.len() == 1 {
            let (_, value) = unanswered.remove(0);
            return Ok(value);
        }
        match self.look_up(id, until, &mut Backoff::new()).await {
            Ok(Lookup::Committed(run)) => take_run(id, unanswered, run),
            // committed (the server said so), but which run's value is not known
            _ => Err(conn(ReplicaError::AlreadyApplied { id })),
        }
    }

    /// Asks the primary for `id` until it answers or `until` passes (waiting out an election).
    async fn look_up(
        &self,
        id: Uuid,
        until: Instant,
        backoff: &mut Backoff,
    ) -> Result<Lookup, ReplicaError> {
        loop {
            match self.applied_run(id).await {
                Ok(Some(run)) => return Ok(Lookup::Committed(run)),
                Ok(None) => return Ok(Lookup::NotFound),
                Err(err) if Instant::now() < until => {
                    tracing::debug!(error = %err, "replayed unit: the primary cannot say yet");
                    backoff.wait(until).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// True when a unit with identity `id` committed, as the current primary says (for the
    /// begin/commit form after [`ReplicaError::CommitOutcomeUnknown`]).
    ///
    /// `false` means not committed *yet*: a `COMMIT` still in flight on a primary that is slow
    /// but alive may land later. To settle it for good, run the unit again with the same
    /// identity: its identity row waits for the one in flight, and the server refuses the
    /// second ([`ReplicaError::AlreadyApplied`]) if the first committed.
    pub async fn applied(&self, id: Uuid) -> Result<bool, ReplicaError> {
        Ok(self.applied_run(id).await?.is_some())
    }

    /// The run of identity `id` that committed, as the current primary says.
    pub(crate) async fn applied_run(&self, id: Uuid) -> Result<Option<u32>, ReplicaError> {
        let route = self.router().route(false)?;
        let node = &route.node;
        let stmt = Statement::from_string(self.backend(), applied_lookup_sql(&id));
        let row = node
            .bounded(Box::pin(node.read_connection().query_one_raw(stmt)))
            .await
            .map_err(ReplicaError::from_db_err)?;
        row.map(|r| r.try_get_by_index::<i32>(0).map(|run| run.max(0) as u32))
            .transpose()
            .map_err(ReplicaError::from_db_err)
    }

    /// Deletes the identities recorded more than `older_than` ago; how many. After that, a
    /// unit with one of those identities is no longer refused: keep them longer than any
    /// command can be delivered again (the queue's retention).
    pub async fn forget_applied(&self, older_than: Duration) -> Result<u64, ReplicaError> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default()
            .as_millis();
        let route = self.router().route(false)?;
        let node = &route.node;
        let stmt = Statement::from_string(
            self.backend(),
            format!("DELETE FROM {APPLIED_TABLE} WHERE applied_at_ms < {cutoff}"),
        );
        let done = node
            .bounded(Box::pin(node.connection().execute_raw(stmt)))
            .await
            .map_err(ReplicaError::from_db_err)?;
        Ok(done.rows_affected())
    }
}

/// The value of run `run` among the unanswered ones.
fn take_run<T, E>(id: Uuid, unanswered: Vec<(u32, T)>, run: u32) -> Result<T, TransactionError<E>> {
    unanswered
        .into_iter()
        .find(|(r, _)| *r == run)
        .map(|(_, value)| value)
        // recorded by a run this call did not see unanswered: another unit with this identity
        .ok_or_else(|| conn(ReplicaError::AlreadyApplied { id }))
}

fn conn<E>(err: ReplicaError) -> TransactionError<E> {
    TransactionError::Connection(err.into())
}

/// Creates `sor_applied`, where units with an identity record it (see the
/// [module](crate::replay)). Add it to your migrator's list:
///
/// ```ignore
/// fn migrations() -> Vec<Box<dyn MigrationTrait>> {
///     vec![Box::new(m20240101_create_banner::Migration), Box::new(sea_orm_replica::replay::AppliedTableMigration)]
/// }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AppliedTableMigration;

impl MigrationName for AppliedTableMigration {
    fn name(&self) -> &str {
        "m20261207_000001_sea_orm_replica_applied"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AppliedTableMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(applied_table()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use sea_orm::sea_query::{Alias, Table};
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new(APPLIED_TABLE))
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
