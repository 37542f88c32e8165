//! Writes routed by key: a [`ShardedWrite`] writes on one shard (a second is refused with
//! [`ReplicaError::CrossShardWrite`]) unless it is two-phase, in which case its commit is
//! atomic across shards (PostgreSQL `PREPARE TRANSACTION`, MariaDB `XA`) with a durable
//! decision record and [`ShardedDatabase::recover`] for what a crash leaves in doubt.
//!
//! The two-phase protocol (presumed abort):
//! 1. every shard the unit wrote on prepares its transaction as `sor2pc_<uuid v7>`;
//! 2. the decision `commit` is inserted into `sor_two_phase` on the coordinator shard (the
//!    first shard's primary): this row is the commit point;
//! 3. every shard commits its prepared transaction; then the row is deleted.
//!
//! A prepared transaction with no decision row is rolled back by recovery, which first
//! inserts `abort` for it, so a coordinator that is only slow then fails to insert `commit`
//! (the id is the key) and rolls back too. A coordinator also gives up, rolling back, if
//! phase one took longer than half the recovery grace.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use sea_orm::sea_query::{Alias, ColumnDef, Expr, ExprTrait, OnConflict, Query, Table};
use sea_orm::{ConnectionTrait, DbErr, Statement, StatementBuilder};

use super::handle::{shard_error, ShardedDatabase};
use super::key::ShardKey;
use crate::backend::Dialect;
use crate::unit::access::ReadWrite;
use crate::unit::{UnitOfWork, UnitOptions};
use crate::ReplicaError;

/// The table holding two-phase decisions, on the coordinator shard's primary.
pub const DECISION_TABLE: &str = "sor_two_phase";

/// Recovery leaves prepared transactions younger than this alone (their coordinator may still
/// be running) unless told otherwise.
pub const DEFAULT_RECOVERY_GRACE: Duration = Duration::from_secs(60);

/// `abort` decisions are kept this long, so a coordinator stalled between its phases can
/// never find its id free again.
const ABORT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The prefix of every global id this library prepares.
const GID_PREFIX: &str = "sor2pc_";

/// A read-write unit of work across a sharded handle: [`on`](Self::on) gives the unit of the
/// key's shard. Opened by [`ShardedDatabase::begin_write`] (one shard: a second is refused) or
/// [`ShardedDatabase::begin_two_phase`] (any shards; atomic commit). Nothing is connected
/// until a statement runs; dropped without commit, everything rolls back.
///
/// ```no_run
/// # use sea_orm_replica::shard::ShardedDatabase;
/// use sea_orm::ConnectionTrait;
/// # async fn demo(shards: &ShardedDatabase) -> Result<(), sea_orm_replica::ReplicaError> {
/// let write = shards.begin_two_phase()?;
/// write.on(1_i64).await?.execute_unprepared("UPDATE account SET balance = balance - 10 WHERE id = 1").await?;
/// write.on(2_i64).await?.execute_unprepared("UPDATE account SET balance = balance + 10 WHERE id = 2").await?;
/// write.commit().await?;     // both or neither
/// # Ok(()) }
/// ```
pub struct ShardedWrite<'a> {
    shards: &'a ShardedDatabase,
    units: Vec<UnitOfWork<ReadWrite>>,
    /// The global id, for a two-phase unit.
    gid: Option<Arc<str>>,
    /// The shard a one-shard unit writes on, once chosen.
    first: Mutex<Option<usize>>,
}

impl std::fmt::Debug for ShardedWrite<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedWrite")
            .field("gid", &self.gid)
            .field("first", &self.first)
            .finish()
    }
}

impl ShardedDatabase {
    /// A read-write unit that writes on one shard, chosen by the first key it is given.
    pub fn begin_write(&self) -> ShardedWrite<'_> {
        self.open_write(None)
    }

    /// A read-write unit that may write on several shards, committed atomically with two-phase
    /// commit. Needs PostgreSQL with `max_prepared_transactions` above zero on every shard, or
    /// MariaDB (`XA`); SQLite shards refuse it. Costs, at commit, one more round trip per shard
    /// and a decision row on the coordinator (the first shard); a crash between the phases
    /// leaves prepared transactions (holding their locks) until [`recover`](Self::recover).
    ///
    /// The decision row is written while the coordinator shard's own participant still holds
    /// its connection: give that shard's primary a pool of two connections or more (with one,
    /// recording the decision waits out the acquire timeout and the write rolls back).
    pub fn begin_two_phase(&self) -> Result<ShardedWrite<'_>, ReplicaError> {
        if !Dialect(self.backend()).supports_two_phase() {
            return Err(ReplicaError::Config(format!(
                "two-phase commit needs PostgreSQL or MariaDB shards; these are {}",
                self.backend().as_str()
            )));
        }
        let gid: Arc<str> = Arc::from(format!("{GID_PREFIX}{}", super::new_id().simple()));
        Ok(self.open_write(Some(gid)))
    }

    fn open_write(&self, gid: Option<Arc<str>>) -> ShardedWrite<'_> {
        let units = self
            .shards()
            .enumerate()
            .map(|(i, (_, db))| {
                let options = match &gid {
                    Some(gid) => UnitOptions::new().two_phase(Arc::from(participant(gid, i))),
                    None => UnitOptions::new(),
                };
                db.begin_unit::<ReadWrite>(options)
            })
            .collect();
        ShardedWrite {
            shards: self,
            units,
            gid,
            first: Mutex::new(None),
        }
    }

    /// Finishes every two-phase transaction a crash left in doubt: on every shard, each
    /// prepared transaction of this library older than `grace` is committed if its decision
    /// row says so, rolled back otherwise (recording `abort` first, so a coordinator still
    /// running cannot commit it after). Run it at start-up and now and then; it is safe to run
    /// from several processes at once. `grace` should exceed the longest a commit's first
    /// phase may take (default [`DEFAULT_RECOVERY_GRACE`]).
    pub async fn recover(&self, grace: Duration) -> Result<RecoveryReport, ReplicaError> {
        let coordinator = Coordinator::of(self).await?;
        let mut report = RecoveryReport::default();
        // unit id → (shard, participant id) prepared there
        let mut seen: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
        for (i, (name, db)) in self.shards().enumerate() {
            let dialect = Dialect(db.backend());
            let primary = db.primary();
            let conn = primary.connection();
            let rows = conn
                .query_all_raw(Statement::from_string(
                    db.backend(),
                    dialect.prepared_list_sql(),
                ))
                .await
                .map_err(|e| shard_error(name, e.into()))?;
            for row in rows {
                let gid: String = row
                    .try_get("", dialect.prepared_list_column())
                    .or_else(|_| {
                        row.try_get::<Vec<u8>>("", dialect.prepared_list_column())
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                    })
                    .map_err(|e| shard_error(name, e.into()))?;
                if gid.starts_with(GID_PREFIX) {
                    seen.entry(unit_id(&gid).to_owned())
                        .or_default()
                        .push((i, gid));
                }
            }
        }
        for (gid, on) in &seen {
            if age_of(gid).is_some_and(|age| age < grace) {
                report.left_in_flight.push(gid.clone());
                continue;
            }
            let commit = match coordinator.decision(gid).await? {
                Some(decision) => decision,
                None => {
                    coordinator.record(gid, false).await?;
                    coordinator.decision(gid).await?.unwrap_or(false)
                }
            };
            for (i, participant) in on {
                let (name, db) =
                    self.shards()
                        .nth(*i)
                        .ok_or_else(|| ReplicaError::UnknownShard {
                            name: i.to_string(),
                        })?;
                let sql = Dialect(db.backend()).finish_prepared_sql(participant, commit);
                db.primary()
                    .connection()
                    .execute_unprepared(&sql)
                    .await
                    .map_err(|e| shard_error(name, e.into()))?;
                let line = (gid.clone(), name.to_owned());
                if commit {
                    report.committed.push(line);
                } else {
                    report.rolled_back.push(line);
                }
            }
            if commit {
                coordinator.forget(gid).await?;
            }
        }
        coordinator.forget_old_aborts().await?;
        if !seen.is_empty() {
            tracing::info!(?report, "two-phase recovery");
        }
        Ok(report)
    }
}

/// What [`ShardedDatabase::recover`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// (global id, shard) of prepared transactions committed.
    pub committed: Vec<(String, String)>,
    /// (global id, shard) of prepared transactions rolled back.
    pub rolled_back: Vec<(String, String)>,
    /// Global ids younger than the grace, left to their coordinator.
    pub left_in_flight: Vec<String>,
}

/// The id shard `index` prepares a two-phase unit's transaction under: the unit's id and the
/// shard's index, so that shards which share a server never share an id.
fn participant(gid: &str, index: usize) -> String {
    format!("{gid}_{index}")
}

/// The unit's id in a participant id (the decision row's key).
fn unit_id(participant: &str) -> &str {
    participant
        .rsplit_once('_')
        .map_or(participant, |(unit, _)| unit)
}

/// How long ago the uuid v7 in `gid` was made.
fn age_of(gid: &str) -> Option<Duration> {
    let uuid = uuid::Uuid::try_parse(gid.strip_prefix(GID_PREFIX)?).ok()?;
    let (secs, nanos) = uuid.get_timestamp()?.to_unix();
    let made = UNIX_EPOCH + Duration::new(secs, nanos);
    Some(SystemTime::now().duration_since(made).unwrap_or_default())
}

impl<'a> ShardedWrite<'a> {
    /// The unit of the shard that holds `key`. In a one-shard unit, a key on another shard than
    /// the first is refused ([`ReplicaError::CrossShardWrite`], naming both) before anything
    /// runs there.
    pub async fn on(
        &self,
        key: impl Into<ShardKey>,
    ) -> Result<&UnitOfWork<ReadWrite>, ReplicaError> {
        let index = self.shards.locate_index(&key.into()).await?;
        self.on_index(index)
    }

    /// The unit of the shard called `name` (same rule as [`on`](Self::on)).
    pub fn on_shard(&self, name: &str) -> Result<&UnitOfWork<ReadWrite>, ReplicaError> {
        let index = self.shards.index_named(name)?;
        self.on_index(index)
    }

    fn on_index(&self, index: usize) -> Result<&UnitOfWork<ReadWrite>, ReplicaError> {
        // the request lock applies here too
        self.shards.shard_named(self.name(index))?;
        if self.gid.is_none() {
            let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
            match *first {
                Some(f) if f != index => {
                    return Err(ReplicaError::CrossShardWrite {
                        first: self.name(f).to_owned(),
                        second: self.name(index).to_owned(),
                    })
                }
                _ => *first = Some(index),
            }
        }
        Ok(&self.units[index])
    }

    fn name(&self, index: usize) -> &str {
        self.shards.names().nth(index).unwrap_or("?")
    }

    /// The global id of a two-phase unit (what `pg_prepared_xacts` / `XA RECOVER` show).
    pub fn id(&self) -> Option<&str> {
        self.gid.as_deref()
    }

    /// Rolls back on every shard.
    pub async fn rollback(self) -> Result<(), ReplicaError> {
        let results = join_all(self.units.into_iter().map(|u| u.rollback())).await;
        results.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(())
    }

    /// Commits: a one-shard unit (or a two-phase unit that wrote on one shard) commits
    /// plainly; a two-phase unit that wrote on several runs both phases
    /// ([`prepare`](Self::prepare), then [`PreparedWrite::commit`]).
    pub async fn commit(self) -> Result<(), ReplicaError> {
        if self.gid.is_none() || self.units.iter().filter(|u| u.is_started()).count() < 2 {
            let shards = self.shards;
            for (i, unit) in self.units.into_iter().enumerate() {
                unit.commit()
                    .await
                    .map_err(|e| shard_error(shards.names().nth(i).unwrap_or("?"), e.into()))?;
            }
            return Ok(());
        }
        self.prepare().await?.commit().await
    }

    /// Two-phase commit, phase one: every shard the unit wrote on prepares its transaction.
    /// Once this returns, the write survives this process: a crash leaves it prepared until
    /// [`ShardedDatabase::recover`] rolls it back (no decision was recorded). If a shard
    /// fails to prepare, every shard rolls back and the error says which.
    pub async fn prepare(self) -> Result<PreparedWrite<'a>, ReplicaError> {
        let Some(gid) = self.gid.clone() else {
            return Err(ReplicaError::Config(
                "prepare needs a two-phase unit (ShardedDatabase::begin_two_phase)".into(),
            ));
        };
        let shards = self.shards;
        let coordinator = Coordinator::of(shards).await?;
        let started = std::time::Instant::now();
        let prepared = join_all(self.units.iter().enumerate().map(|(i, u)| {
            let id = participant(&gid, i);
            async move { u.prepare_two_phase(&id).await }
        }))
        .await;
        let failed = prepared
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.as_ref().err().map(|e| (i, e.to_string())));
        let units: Vec<(usize, UnitOfWork<ReadWrite>, bool)> = self
            .units
            .into_iter()
            .zip(prepared)
            .enumerate()
            .map(|(i, (unit, p))| (i, unit, matches!(p, Ok(Some(_)))))
            .collect();
        let write = PreparedWrite {
            shards,
            coordinator,
            gid,
            units,
            started,
        };
        if let Some((i, e)) = failed {
            let gid = write.gid.to_string();
            let _ = write.finish(false).await;
            return Err(ReplicaError::TwoPhase {
                id: gid,
                committed: Some(false),
                reason: format!(
                    "shard `{}` did not prepare: {e}",
                    shards.names().nth(i).unwrap_or("?")
                ),
            });
        }
        tracing::debug!(gid = %write.gid, "two-phase commit: prepared");
        Ok(write)
    }
}

/// A two-phase unit after phase one: prepared on every shard it wrote on.
#[must_use = "a prepared write holds its locks until it is committed, rolled back or recovered"]
pub struct PreparedWrite<'a> {
    shards: &'a ShardedDatabase,
    coordinator: Coordinator<'a>,
    gid: Arc<str>,
    /// (shard index, unit, prepared there).
    units: Vec<(usize, UnitOfWork<ReadWrite>, bool)>,
    started: std::time::Instant,
}

impl std::fmt::Debug for PreparedWrite<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedWrite")
            .field("gid", &self.gid)
            .finish()
    }
}

impl PreparedWrite<'_> {
    /// The global id (what `pg_prepared_xacts` / `XA RECOVER` show).
    pub fn id(&self) -> &str {
        &self.gid
    }

    /// Phase two: records the decision (the commit point), then commits on every shard. A
    /// shard that does not answer stays prepared and committed by recovery: the error then
    /// says `committed: Some(true)`.
    pub async fn commit(self) -> Result<(), ReplicaError> {
        let decided = if self.started.elapsed() > DEFAULT_RECOVERY_GRACE / 2 {
            false
        } else {
            match self.coordinator.record(&self.gid, true).await {
                // recovery may have recorded `abort` first: the first decision wins
                Ok(()) => self.coordinator.decision(&self.gid).await.ok().flatten() == Some(true),
                Err(e) => {
                    return Err(ReplicaError::TwoPhase {
                        id: self.gid.to_string(),
                        committed: None,
                        reason: format!("recording the decision failed: {e}"),
                    })
                }
            }
        };
        let gid = self.gid.to_string();
        let unfinished = self.finish(decided).await;
        match (decided, unfinished.is_empty()) {
            (true, true) => Ok(()),
            (true, false) => Err(ReplicaError::TwoPhase {
                id: gid,
                committed: Some(true),
                reason: format!("phase two did not finish: {}", unfinished.join("; ")),
            }),
            (false, _) => Err(ReplicaError::TwoPhase {
                id: gid,
                committed: Some(false),
                reason:
                    "the decision was abort (recovery got there first, or phase one took too long)"
                        .into(),
            }),
        }
    }

    /// Rolls back on every shard.
    pub async fn rollback(self) -> Result<(), ReplicaError> {
        let gid = self.gid.to_string();
        let unfinished = self.finish(false).await;
        if unfinished.is_empty() {
            Ok(())
        } else {
            Err(ReplicaError::TwoPhase {
                id: gid,
                committed: Some(false),
                reason: format!(
                    "rollback did not finish (recovery will): {}",
                    unfinished.join("; ")
                ),
            })
        }
    }

    /// Phase two on every shard at once; the shards that did not finish, described.
    async fn finish(self, commit: bool) -> Vec<String> {
        let shards = self.shards;
        let gid = self.gid.clone();
        let ends = join_all(self.units.into_iter().map(|(i, unit, prepared)| {
            let gid = gid.clone();
            async move {
                let result = if prepared {
                    unit.finish_two_phase(&participant(&gid, i), commit).await
                } else {
                    unit.rollback().await
                };
                (i, result)
            }
        }))
        .await;
        let unfinished: Vec<String> = ends
            .into_iter()
            .filter_map(|(i, r)| {
                r.err()
                    .map(|e| format!("shard `{}`: {e}", shards.names().nth(i).unwrap_or("?")))
            })
            .collect();
        if commit && unfinished.is_empty() {
            // best effort: recovery forgets it too
            let _ = self.coordinator.forget(&gid).await;
        }
        unfinished
    }
}

/// The decision table on the coordinator shard's primary.
struct Coordinator<'a> {
    db: &'a crate::ReplicatedDatabase,
}

impl<'a> Coordinator<'a> {
    /// The first shard's primary, with the table created if missing.
    async fn of(shards: &'a ShardedDatabase) -> Result<Self, ReplicaError> {
        let (name, db) = shards
            .shards()
            .next()
            .ok_or_else(|| ReplicaError::Config("no shards".into()))?;
        let ready = shards.decision_table_ready();
        if ready.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(Coordinator { db });
        }
        let create = Table::create()
            .table(Alias::new(DECISION_TABLE))
            .if_not_exists()
            .col(
                ColumnDef::new(Alias::new("gid"))
                    .string_len(64)
                    .not_null()
                    .primary_key(),
            )
            .col(
                ColumnDef::new(Alias::new("decision"))
                    .string_len(8)
                    .not_null(),
            )
            .col(
                ColumnDef::new(Alias::new("decided_at_ms"))
                    .big_integer()
                    .not_null(),
            )
            .to_owned();
        let backend = db.backend();
        db.primary()
            .connection()
            .execute_raw(backend.build(&create))
            .await
            .map_err(|e| shard_error(name, e.into()))?;
        ready.store(true, std::sync::atomic::Ordering::Release);
        Ok(Coordinator { db })
    }

    fn conn(&self) -> sea_orm::DatabaseConnection {
        self.db.primary().connection().clone()
    }

    /// Runs one statement on the coordinator's primary, in autocommit.
    async fn execute(&self, stmt: &impl StatementBuilder) -> Result<(), DbErr> {
        let backend = self.db.backend();
        self.conn()
            .execute_raw(backend.build(stmt))
            .await
            .map(|_| ())
    }

    /// Inserts the decision for `gid` unless one exists (the first decision wins).
    async fn record(&self, gid: &str, commit: bool) -> Result<(), DbErr> {
        let now = i64::try_from(crate::consistency::unix_ms()).unwrap_or(i64::MAX);
        let insert = Query::insert()
            .into_table(Alias::new(DECISION_TABLE))
            .columns([
                Alias::new("gid"),
                Alias::new("decision"),
                Alias::new("decided_at_ms"),
            ])
            .values_panic([
                gid.into(),
                if commit { "commit" } else { "abort" }.into(),
                now.into(),
            ])
            .on_conflict(
                // a no-op update keeps the first decision (portable, unlike DO NOTHING)
                OnConflict::column(Alias::new("gid"))
                    .update_column(Alias::new("gid"))
                    .to_owned(),
            )
            .to_owned();
        self.execute(&insert).await
    }

    /// The decision for `gid`, if any.
    async fn decision(&self, gid: &str) -> Result<Option<bool>, DbErr> {
        let select = Query::select()
            .column(Alias::new("decision"))
            .from(Alias::new(DECISION_TABLE))
            .and_where(Expr::col(Alias::new("gid")).eq(gid))
            .to_owned();
        let backend = self.db.backend();
        let row = self.conn().query_one_raw(backend.build(&select)).await?;
        row.map(|r| r.try_get_by_index::<String>(0).map(|d| d == "commit"))
            .transpose()
    }

    /// Deletes the decision for `gid` (a finished commit).
    async fn forget(&self, gid: &str) -> Result<(), DbErr> {
        let delete = Query::delete()
            .from_table(Alias::new(DECISION_TABLE))
            .and_where(Expr::col(Alias::new("gid")).eq(gid))
            .to_owned();
        self.execute(&delete).await
    }

    /// Deletes `abort` decisions older than the retention.
    async fn forget_old_aborts(&self) -> Result<(), DbErr> {
        let cutoff = SystemTime::now()
            .checked_sub(ABORT_RETENTION)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default()
            .as_millis() as i64;
        let delete = Query::delete()
            .from_table(Alias::new(DECISION_TABLE))
            .and_where(Expr::col(Alias::new("decision")).eq("abort"))
            .and_where(Expr::col(Alias::new("decided_at_ms")).lt(cutoff))
            .to_owned();
        self.execute(&delete).await
    }
}
