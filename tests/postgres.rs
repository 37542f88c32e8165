//! PostgreSQL streaming replication: a primary, a replica, and a replica that lags 500 ms.

#[macro_use]
mod common;

use common::cluster;
use sea_orm::DbBackend;

every_backend_scenarios!(cluster(DbBackend::Postgres));
scenarios!(cluster(DbBackend::Postgres);
    snapshot_units_run_in_one_read_only_transaction,
    migrations_refuse_a_replica,
    migrations_wait_for_every_replica,
    banner_story_on_a_lagging_replica,
    bounded_staleness_skips_a_paused_replica,
    monitor_measures_replica_lag,
);
