//! Migrations: always on the primary, checked with the server, optionally waited for on
//! every replica.

use std::time::Duration;

use sea_orm_migration::MigratorTrait;
use tracing::Instrument;

use crate::{Position, ReplicaError, ReplicatedDatabase};

/// How to run migrations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrateOptions {
    steps: Option<u32>,
    wait_for_replicas: Option<Duration>,
}

impl MigrateOptions {
    /// Apply every pending migration, wait for no replica.
    pub fn new() -> Self {
        Self::default()
    }

    /// Apply at most `n` pending migrations.
    pub fn steps(mut self, n: u32) -> Self {
        self.steps = Some(n);
        self
    }

    /// After migrating, wait up to `timeout` for each replica to replay the primary's position.
    pub fn wait_for_replicas(mut self, timeout: Duration) -> Self {
        self.wait_for_replicas = Some(timeout);
        self
    }
}

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The node migrated (always the primary).
    pub node: String,
    /// The primary's replication position after the migrations, when replicas were waited for.
    pub position: Option<Position>,
    /// Replicas confirmed to have replayed that position.
    pub replicas_caught_up: Vec<String>,
}

impl ReplicatedDatabase {
    /// Applies `M`'s pending migrations on the primary.
    ///
    /// A primary URL that points at a replica is already refused by `connect()`
    /// ([`ReplicaError::PrimaryIsReplica`]); the primary is asked again here whether it is a
    /// replica (`pg_is_in_recovery()`, `@@read_only`), so one demoted since fails with
    /// [`ReplicaError::MigrationOnReplica`] before anything runs. With
    /// [`MigrateOptions::wait_for_replicas`] it then waits for every replica to replay the
    /// primary's position, failing with [`ReplicaError::CatchUpTimeout`] if one does not.
    pub async fn migrate<M: MigratorTrait>(
        &self,
        options: MigrateOptions,
    ) -> Result<MigrationReport, ReplicaError> {
        let primary = self.primary();
        let span = tracing::info_span!("migrate", node = primary.name());
        self.migrate_inner::<M>(options).instrument(span).await
    }

    async fn migrate_inner<M: MigratorTrait>(
        &self,
        options: MigrateOptions,
    ) -> Result<MigrationReport, ReplicaError> {
        let primary = self.primary();
        let dialect = primary.dialect();
        if dialect.is_replica(primary.connection()).await? {
            return Err(ReplicaError::MigrationOnReplica {
                node: primary.name().to_owned(),
            });
        }
        M::up(primary.connection(), options.steps).await?;
        let mut report = MigrationReport {
            node: primary.name().to_owned(),
            position: None,
            replicas_caught_up: Vec::new(),
        };
        if let Some(timeout) = options.wait_for_replicas {
            let position = dialect.current_position(primary.connection()).await?;
            for replica in self.replicas() {
                if !dialect
                    .wait_replayed(replica.read_connection(), &position, timeout)
                    .await?
                {
                    return Err(ReplicaError::CatchUpTimeout {
                        node: replica.name().to_owned(),
                        position: position.to_server_text(),
                        waited: timeout,
                    });
                }
                report.replicas_caught_up.push(replica.name().to_owned());
            }
            report.position = Some(position);
        }
        tracing::info!(?report, "migrations applied");
        Ok(report)
    }
}
