//! MariaDB GTID replication: a primary and a replica.

mod common;

use common::{cluster, scenarios};
use sea_orm::DbBackend;

macro_rules! on_mariadb {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let Some(c) = cluster(DbBackend::MySql) else { return };
            scenarios::$name(&c).await;
        }
    )*};
}

on_mariadb!(
    read_write_unit_runs_on_primary,
    nested_builder_saves_a_graph_in_a_unit,
    read_only_units_run_on_replicas,
    units_without_statements_take_nothing,
    write_in_read_only_unit_is_refused,
    read_only_fallback_is_read_only_on_the_primary,
    nested_units_are_savepoints,
    repository_crud,
    streams_in_units,
    read_only_scope_routes_handle_reads,
    snapshot_units_run_in_one_read_only_transaction,
    migrations_refuse_a_replica,
    migrations_wait_for_every_replica,
);
