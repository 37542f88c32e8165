//! SQLite, the embedded default: one writer pool and a read-only reader pool on one WAL file.

mod common;

use common::{scenarios, sqlite};

macro_rules! on_sqlite {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (c, _file) = sqlite();
            scenarios::$name(&c).await;
        }
    )*};
}

on_sqlite!(
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
);
