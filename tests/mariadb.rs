//! MariaDB GTID replication: a primary and a replica.

#[macro_use]
mod common;

use common::cluster;
use sea_orm::DbBackend;

every_backend_scenarios!(cluster(DbBackend::MySql));
scenarios!(cluster(DbBackend::MySql);
    snapshot_units_run_in_one_read_only_transaction,
    migrations_refuse_a_replica,
    migrations_wait_for_every_replica,
    monitor_measures_replica_lag,
);
