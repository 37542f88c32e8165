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
const CONFIG_PREFIX: &str = "invalid configuration: ";

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

    /// A statement that writes (or locks rows) was sent through a read-only unit of work or a
    /// read-only scope. It was refused before reaching any server.
    #[error("write refused in a {READ_ONLY_RESOURCE}: `{keyword}` statement")]
    WriteInReadOnly {
        /// The statement's leading keyword (e.g. `INSERT`), or `UPDATE` for a locking read.
        keyword: String,
    },

    /// No replica was eligible and the handle is configured not to fall back to the primary.
    #[error("no eligible replica for a read-only unit of work ({reason}), and fallback to the primary is disabled")]
    NoReplicaAvailable {
        /// Why no replica qualified.
        reason: String,
    },

    /// Migrations were aimed at a node that the server itself reports to be a replica.
    #[error("migrations must run on the primary, but node `{node}` reports that it is a replica (read-only / in recovery)")]
    MigrationOnReplica {
        /// Name of the node.
        node: String,
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
            DbErr::Custom(msg) if msg.starts_with(CONFIG_PREFIX) => {
                ReplicaError::Config(msg.trim_start_matches(CONFIG_PREFIX).to_owned())
            }
            other => ReplicaError::Db(other),
        }
    }

    /// True for [`ReplicaError::WriteInReadOnly`].
    pub fn is_write_in_read_only(&self) -> bool {
        matches!(self, ReplicaError::WriteInReadOnly { .. })
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
            ReplicaError::Db(err) => err,
            other => DbErr::Custom(other.to_string()),
        }
    }
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
        assert!(matches!(
            ReplicaError::from_db_err(DbErr::RecordNotFound("x".into())),
            ReplicaError::Db(DbErr::RecordNotFound(_))
        ));
    }
}
