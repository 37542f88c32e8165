//! Typed errors.
//!
//! Everything the library can refuse or fail at is a [`ReplicaError`]. Inside SeaORM's
//! [`ConnectionTrait`](sea_orm::ConnectionTrait) methods errors must be a [`DbErr`]; the ones
//! this crate raises there are mapped to a recognisable `DbErr` and mapped back by
//! [`ReplicaError::from_db_err`], so callers can always match on the typed variant.

use std::time::Duration;

use sea_orm::{DbErr, RuntimeErr};

/// The `resource` a [`DbErr::AccessDenied`] names when a read-only unit refuses a write.
pub const READ_ONLY_RESOURCE: &str = "read-only unit of work";

const NO_REPLICA_PREFIX: &str = "sea-orm-replica: no eligible replica";
const NO_PRIMARY_PREFIX: &str = "sea-orm-replica: no primary";
const TIMEOUT_PREFIX: &str = "sea-orm-replica: timeout";
const CONFIG_PREFIX: &str = "invalid configuration: ";
const APPLIED_PREFIX: &str = "sea-orm-replica: applied already: unit ";
const UNKNOWN_PREFIX: &str = "sea-orm-replica: commit outcome unknown: unit ";

/// Everything `sea-orm-replica` can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// The configuration is incomplete or contradictory, or asks for what the backend cannot do.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A node's URL could not be used. The URL in the message has its password removed.
    #[error("invalid URL for node `{node}` ({url}): {reason}")]
    InvalidUrl {
        /// Name of the node.
        node: String,
        /// The URL with any password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The nodes do not all speak the same SQL dialect (e.g. a PostgreSQL primary with a MySQL replica).
    #[error("node `{node}` is {found} but the primary is {expected}")]
    BackendMismatch {
        /// Name of the offending node.
        node: String,
        /// Backend of the primary.
        expected: &'static str,
        /// Backend of the offending node.
        found: &'static str,
    },

    /// A node could not be reached when the handle was built.
    #[error("node `{node}` ({url}) is unreachable: {source}")]
    Unreachable {
        /// Name of the node.
        node: String,
        /// The URL with any password redacted.
        url: String,
        /// The driver's error.
        #[source]
        source: DbErr,
    },

    /// A statement that read-only work may not run (a write, a lock, a session change, a
    /// function that acts on the server, more than one statement) was sent through a
    /// read-only unit of work or a read-only scope. It was refused before reaching any server;
    /// the message says what to do instead.
    #[error(
        "refused in a {READ_ONLY_RESOURCE}: `{keyword}`: {}",
        crate::unit::statement_kind::hint_for(keyword)
    )]
    WriteInReadOnly {
        /// What was refused: the statement's leading keyword (`INSERT`, `SET`, `COMMIT`), the
        /// clause (`FOR UPDATE`, `SELECT … INTO`), the function (`pg_promote()`), or
        /// `multiple statements`.
        keyword: String,
    },

    /// No replica was eligible and the handle is configured not to fall back to the primary.
    #[error("no eligible replica for a read-only unit of work ({reason}), and fallback to the primary is disabled")]
    NoReplicaAvailable {
        /// Why no replica qualified.
        reason: String,
    },

    /// No primary is reachable: read-write units fail at once, without waiting on a node known
    /// to be down (read-only units keep running on the replicas).
    #[error("no primary available for a read-write unit of work: {reason}")]
    NoPrimary {
        /// Why: which node was the primary and what its last failure was, or why no node
        /// qualifies.
        reason: String,
    },

    /// A node did not answer within the client-side bound (the statement timeout plus a
    /// grace, or the acquire timeout). The node is taken out of routing.
    #[error("node `{node}` did not answer within {after:?}")]
    Timeout {
        /// Name of the node.
        node: String,
        /// How long the caller waited.
        after: Duration,
    },

    /// Migrations were aimed at a node that the server itself reports to be a replica.
    #[error("migrations must run on the primary, but node `{node}` reports that it is a replica (read-only / in recovery)")]
    MigrationOnReplica {
        /// Name of the node.
        node: String,
    },

    /// The node configured to take writes answered the first health check, at `connect()`,
    /// that it is a replica (PostgreSQL in recovery, MariaDB `read_only`), and no other node
    /// reports being a primary that could take over: the primary URL points at a replica.
    /// (Found later, while the handle runs, the same state makes read-write units fail with
    /// [`NoPrimary`](Self::NoPrimary) and shows in the status view.)
    #[error("node `{node}` ({url}) is configured as the primary but reports being a replica (in recovery / read_only), and no other node reports being the primary")]
    PrimaryIsReplica {
        /// Name of the node.
        node: String,
        /// The URL with any password redacted.
        url: String,
    },

    /// A replica did not replay up to the wanted position in time.
    #[error("replica `{node}` did not reach position {position} within {waited:?}")]
    CatchUpTimeout {
        /// Name of the replica.
        node: String,
        /// The position it was waiting for.
        position: String,
        /// How long it waited.
        waited: Duration,
    },

    /// An environment variable the configuration needs is missing or not unicode.
    #[error("environment variable `{0}` is not set")]
    MissingEnv(&'static str),

    /// A shard name that the sharded handle does not have (from code, a config, a directory
    /// row or a request).
    #[error("no shard called `{name}`")]
    UnknownShard {
        /// The name asked for (at most 64 characters of it).
        name: String,
    },

    /// The sharding strategy has no shard for this key: a range or list that does not cover
    /// it, a directory without a row for it, or a key of a type the strategy cannot place
    /// (e.g. a string for `Modulo`).
    #[error("no shard for key {key}: {reason}")]
    NoShardForKey {
        /// The key (at most 64 characters of it).
        key: String,
        /// Why.
        reason: String,
    },

    /// A sharded write needs its shard-key column, and the model has no value for it.
    #[error("the shard-key column `{column}` has no value: a sharded write must say which shard it goes to")]
    ShardKeyMissing {
        /// The shard-key column.
        column: String,
    },

    /// A write reached a second shard in a unit that is not two-phase: it was refused before
    /// running there, and the unit is still open on the first shard (roll it back or commit it).
    #[error("a write on shard `{second}` in a unit already writing on shard `{first}`: cross-shard writes need a two-phase unit (ShardedDatabase::begin_two_phase)")]
    CrossShardWrite {
        /// The shard the unit writes on.
        first: String,
        /// The other shard the write was for.
        second: String,
    },

    /// The request (or task) is locked to one shard and code asked for another.
    #[error("this request is locked to shard `{locked}`, and shard `{wanted}` was asked for")]
    ShardLocked {
        /// The shard the request is locked to.
        locked: String,
        /// The shard that was asked for.
        wanted: String,
    },

    /// Work on one shard failed (a fan-out read, a migration, a two-phase commit): the error
    /// names the shard.
    #[error("shard `{shard}`: {source}")]
    Shard {
        /// The shard.
        shard: String,
        /// What went wrong there.
        #[source]
        source: Box<ReplicaError>,
    },

    /// A two-phase commit did not complete. `committed` says what is known: `Some(true)`, the
    /// decision to commit is recorded and recovery will finish it on every shard; `Some(false)`,
    /// it was rolled back everywhere (or will be by recovery); `None`, the decision record
    /// could not be read or written, and [`recover`](crate::shard::ShardedDatabase::recover)
    /// settles it.
    #[error("two-phase commit {id} did not complete ({}): {reason}", match committed { Some(true) => "committed; recovery finishes it", Some(false) => "rolled back", None => "outcome unknown until recovery" })]
    TwoPhase {
        /// The transaction's identifier (its global id prefix).
        id: String,
        /// What is known of the outcome.
        committed: Option<bool>,
        /// What failed.
        reason: String,
    },

    /// A unit with an identity ([`UnitOptions::identity`](crate::UnitOptions::identity)) found
    /// its identity recorded already: a run of it committed before (a replay after a lost
    /// answer, or a queued command delivered twice). Nothing was applied this time; the
    /// server refused it (the `sor_applied` primary key), in the same transaction.
    #[error("{APPLIED_PREFIX}{id} committed before; this run was rolled back")]
    AlreadyApplied {
        /// The unit's identity.
        id: uuid::Uuid,
    },

    /// The connection failed while the unit's `COMMIT` was in flight, so whether it committed
    /// is not known here. Ask [`ReplicatedDatabase::applied`](crate::ReplicatedDatabase::applied)
    /// with the identity, or run the unit again with the same identity: the server refuses a
    /// second application ([`ReplicaError::AlreadyApplied`]).
    #[error("{UNKNOWN_PREFIX}{id}: {reason}")]
    CommitOutcomeUnknown {
        /// The unit's identity.
        id: uuid::Uuid,
        /// What failed while the answer was awaited.
        reason: String,
    },

    /// The queue holds its maximum of pending commands; the command was not stored.
    #[error("queue `{queue}` is full: {pending} commands pending, at most {max}")]
    QueueFull {
        /// The queue.
        queue: String,
        /// Commands pending.
        pending: u64,
        /// Its `max_pending`.
        max: u64,
    },

    /// The queue's broker did not answer or refused. For an enqueue, whether the command was
    /// stored is unknown: enqueue it again under the same id
    /// ([`Queue::enqueue_as`](crate::queue::Queue::enqueue_as)), and it is applied once.
    #[error("queue broker: {0}")]
    Broker(String),

    /// The queued command failed too often and is in the dead-letter stream.
    #[error("command {id} was dead-lettered: {error}")]
    DeadLettered {
        /// The command's identity (its ticket).
        id: uuid::Uuid,
        /// Its last error.
        error: String,
    },

    /// An error from SeaORM or the database driver.
    #[error(transparent)]
    Db(DbErr),
}

impl ReplicaError {
    /// Recovers the typed error from a [`DbErr`] returned through SeaORM's traits.
    ///
    /// Errors this crate raised inside a [`ConnectionTrait`](sea_orm::ConnectionTrait) call
    /// come back as their own variant; any other `DbErr` becomes [`ReplicaError::Db`].
    ///
    /// ```
    /// use sea_orm_replica::ReplicaError;
    /// let err: sea_orm::DbErr = ReplicaError::WriteInReadOnly { keyword: "INSERT".into() }.into();
    /// assert!(matches!(ReplicaError::from_db_err(err), ReplicaError::WriteInReadOnly { .. }));
    /// ```
    pub fn from_db_err(err: DbErr) -> Self {
        match err {
            DbErr::AccessDenied {
                permission,
                resource,
            } if resource == READ_ONLY_RESOURCE => ReplicaError::WriteInReadOnly {
                keyword: permission,
            },
            DbErr::Conn(RuntimeErr::Internal(msg)) if msg.starts_with(NO_REPLICA_PREFIX) => {
                ReplicaError::NoReplicaAvailable {
                    reason: msg
                        .trim_start_matches(NO_REPLICA_PREFIX)
                        .trim_start_matches(": ")
                        .to_owned(),
                }
            }
            DbErr::Conn(RuntimeErr::Internal(msg)) if msg.starts_with(NO_PRIMARY_PREFIX) => {
                ReplicaError::NoPrimary {
                    reason: msg
                        .trim_start_matches(NO_PRIMARY_PREFIX)
                        .trim_start_matches(": ")
                        .to_owned(),
                }
            }
            DbErr::Conn(RuntimeErr::Internal(msg)) if msg.starts_with(TIMEOUT_PREFIX) => {
                match parse_timeout(&msg[TIMEOUT_PREFIX.len()..]) {
                    Some((node, after)) => ReplicaError::Timeout { node, after },
                    None => ReplicaError::Db(DbErr::Conn(RuntimeErr::Internal(msg))),
                }
            }
            DbErr::Custom(msg) if msg.starts_with(CONFIG_PREFIX) => {
                ReplicaError::Config(msg.trim_start_matches(CONFIG_PREFIX).to_owned())
            }
            DbErr::Custom(msg) if msg.starts_with(APPLIED_PREFIX) => {
                match identity_in(&msg[APPLIED_PREFIX.len()..]) {
                    Some((id, _)) => ReplicaError::AlreadyApplied { id },
                    None => ReplicaError::Db(DbErr::Custom(msg)),
                }
            }
            DbErr::Custom(msg) if msg.starts_with(UNKNOWN_PREFIX) => {
                match identity_in(&msg[UNKNOWN_PREFIX.len()..]) {
                    Some((id, rest)) => ReplicaError::CommitOutcomeUnknown {
                        id,
                        reason: rest.trim_start_matches(": ").to_owned(),
                    },
                    None => ReplicaError::Db(DbErr::Custom(msg)),
                }
            }
            other => ReplicaError::Db(other),
        }
    }

    /// True when the error says a node failed (connection lost or refused, no answer in
    /// time) rather than the statement: what makes a read-only unit move to another node, and
    /// what takes a node out of routing. Routing refusals ([`NoPrimary`](Self::NoPrimary),
    /// [`NoReplicaAvailable`](Self::NoReplicaAvailable)) are not.
    ///
    /// Besides connection and acquire errors, a statement error counts when the driver lost
    /// the connection (I/O, TLS, protocol) or the server says it is going away (the SQLSTATEs
    /// in [`Dialect::is_node_failure_state`](crate::backend::Dialect::is_node_failure_state)).
    pub fn is_connection_level(err: &DbErr) -> bool {
        use sea_orm::sqlx::Error as Sqlx;
        match err {
            DbErr::Conn(RuntimeErr::Internal(msg)) => {
                !(msg.starts_with(NO_PRIMARY_PREFIX) || msg.starts_with(NO_REPLICA_PREFIX))
            }
            DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => true,
            DbErr::Query(RuntimeErr::SqlxError(e)) | DbErr::Exec(RuntimeErr::SqlxError(e)) => {
                match &**e {
                    Sqlx::Io(_)
                    | Sqlx::Tls(_)
                    | Sqlx::Protocol(_)
                    | Sqlx::PoolTimedOut
                    | Sqlx::PoolClosed
                    | Sqlx::WorkerCrashed => true,
                    Sqlx::Database(db) => db.code().is_some_and(|state| {
                        crate::backend::Dialect::is_node_failure_state(&state)
                    }),
                    _ => false,
                }
            }
            _ => false,
        }
    }

    /// True when the primary may be back soon: the error is
    /// [connection-level](Self::is_connection_level) or a [`NoPrimary`](Self::NoPrimary)
    /// refusal (an election may be under way). What makes a replayed unit run again.
    pub fn is_primary_unavailable(err: &DbErr) -> bool {
        Self::is_connection_level(err)
            || matches!(err, DbErr::Conn(RuntimeErr::Internal(msg)) if msg.starts_with(NO_PRIMARY_PREFIX))
    }

    /// True for [`ReplicaError::WriteInReadOnly`].
    pub fn is_write_in_read_only(&self) -> bool {
        matches!(self, ReplicaError::WriteInReadOnly { .. })
    }
}

/// The error of a unit run as a closure (`read_only`, `read_write`, `run_unit`) whose closure
/// fails with a [`DbErr`]: either way it is the database's error, typed.
impl From<sea_orm::TransactionError<DbErr>> for ReplicaError {
    fn from(err: sea_orm::TransactionError<DbErr>) -> Self {
        match err {
            sea_orm::TransactionError::Connection(e)
            | sea_orm::TransactionError::Transaction(e) => ReplicaError::from_db_err(e),
        }
    }
}

impl From<DbErr> for ReplicaError {
    fn from(err: DbErr) -> Self {
        ReplicaError::from_db_err(err)
    }
}

impl From<ReplicaError> for DbErr {
    fn from(err: ReplicaError) -> Self {
        match err {
            ReplicaError::WriteInReadOnly { keyword } => DbErr::AccessDenied {
                permission: keyword,
                resource: READ_ONLY_RESOURCE.to_owned(),
            },
            ReplicaError::NoReplicaAvailable { reason } => DbErr::Conn(RuntimeErr::Internal(
                format!("{NO_REPLICA_PREFIX}: {reason}"),
            )),
            ReplicaError::NoPrimary { reason } => DbErr::Conn(RuntimeErr::Internal(format!(
                "{NO_PRIMARY_PREFIX}: {reason}"
            ))),
            ReplicaError::Timeout { node, after } => DbErr::Conn(RuntimeErr::Internal(format!(
                "{TIMEOUT_PREFIX}: node `{node}` did not answer within {}ms",
                after.as_millis()
            ))),
            ReplicaError::Db(err) => err,
            other => DbErr::Custom(other.to_string()),
        }
    }
}

/// The identity at the start of `text`, and what follows it.
fn identity_in(text: &str) -> Option<(uuid::Uuid, &str)> {
    let id = text.get(..36)?.parse().ok()?;
    Some((id, &text[36..]))
}

/// Reads ": node `NAME` did not answer within Nms" back.
fn parse_timeout(rest: &str) -> Option<(String, Duration)> {
    let rest = rest.strip_prefix(": node `")?;
    let (node, rest) = rest.split_once('`')?;
    let ms = rest
        .strip_prefix(" did not answer within ")?
        .strip_suffix("ms")?
        .parse()
        .ok()?;
    Some((node.to_owned(), Duration::from_millis(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors_survive_a_trip_through_dberr() {
        let db: DbErr = ReplicaError::NoReplicaAvailable {
            reason: "all replicas down".into(),
        }
        .into();
        match ReplicaError::from_db_err(db) {
            ReplicaError::NoReplicaAvailable { reason } => assert_eq!(reason, "all replicas down"),
            other => panic!("unexpected {other:?}"),
        }
        let db: DbErr = ReplicaError::WriteInReadOnly {
            keyword: "DELETE".into(),
        }
        .into();
        assert!(db.to_string().contains("read-only unit of work"));
        assert!(ReplicaError::from_db_err(db).is_write_in_read_only());
        for typed in [
            ReplicaError::NoPrimary {
                reason: "primary `a` is down".into(),
            },
            ReplicaError::Timeout {
                node: "r1".into(),
                after: Duration::from_millis(1250),
            },
        ] {
            let text = typed.to_string();
            let db: DbErr = typed.into();
            assert_eq!(ReplicaError::from_db_err(db.clone()).to_string(), text);
            assert_eq!(
                ReplicaError::is_connection_level(&db),
                text.contains("did not answer")
            );
        }
        assert!(matches!(
            ReplicaError::from_db_err(DbErr::RecordNotFound("x".into())),
            ReplicaError::Db(DbErr::RecordNotFound(_))
        ));
    }

    #[test]
    fn identity_errors_survive_a_trip_through_dberr() {
        let id = uuid::Uuid::now_v7();
        let db: DbErr = ReplicaError::AlreadyApplied { id }.into();
        assert!(
            matches!(ReplicaError::from_db_err(db), ReplicaError::AlreadyApplied { id: got } if got == id)
        );
        let db: DbErr = ReplicaError::CommitOutcomeUnknown {
            id,
            reason: "connection reset: a: b".into(),
        }
        .into();
        match ReplicaError::from_db_err(db) {
            ReplicaError::CommitOutcomeUnknown { id: got, reason } => {
                assert_eq!(got, id);
                assert_eq!(reason, "connection reset: a: b");
            }
            other => panic!("unexpected {other:?}"),
        }
        // a message that only looks like one stays the database's error
        let forged = DbErr::Custom(format!("{APPLIED_PREFIX}not-a-uuid"));
        assert!(matches!(
            ReplicaError::from_db_err(forged),
            ReplicaError::Db(_)
        ));
        let no_primary: DbErr = ReplicaError::NoPrimary { reason: "x".into() }.into();
        assert!(ReplicaError::is_primary_unavailable(&no_primary));
        assert!(!ReplicaError::is_connection_level(&no_primary));
    }
}
