//! Test harness: finds the cluster `scripts/cluster.sh` started, builds handles, and asks the
//! *server* which node answered.
#![allow(dead_code)]

use std::time::Duration;

use migration::Migrator;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use sea_orm_replica::{MigrateOptions, NodeConfig, ReplicatedDatabase};

pub mod fault_cluster;
pub mod fingerprint;
pub mod redis;
pub mod scenarios;

/// One `#[tokio::test]` per named scenario, each on the cluster `$setup` gives (`None`: skip).
#[allow(unused_macros)]
macro_rules! scenarios {
    ($setup:expr; $($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let Some(c) = $setup else { return };
            common::scenarios::$name(&c).await;
        }
    )*};
}

/// The scenarios every backend runs.
#[allow(unused_macros)]
macro_rules! every_backend_scenarios {
    ($setup:expr) => {
        scenarios!($setup;
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
            read_your_writes_with_causal_tokens,
            primary_consistency_reads_the_primary_read_only,
            causal_units_keep_transaction_semantics,
            status_reports_nodes_and_monitor_stops_on_drop,
            first_statement_moves_off_a_failed_replica,
        );
    };
}

/// The URLs of one backend's cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub backend: DbBackend,
    pub primary: String,
    /// Replicas that keep up.
    pub replicas: Vec<String>,
    /// A replica that lags on purpose (PostgreSQL only).
    pub lagging: Option<String>,
    /// For SQLite: the database file, removed with the last clone.
    pub file: Option<std::sync::Arc<TempFile>>,
}

/// The cluster for `backend` from the `SOR_*` variables that `scripts/cluster.sh env` prints.
/// Missing: under CI a failure (no integration test may skip silently), elsewhere a skip that
/// says so.
pub fn cluster(backend: DbBackend) -> Option<Cluster> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (primary, replica, lagging, names) = match backend {
        DbBackend::Postgres => (
            var("SOR_PG_PRIMARY_URL"),
            var("SOR_PG_REPLICA_URL"),
            var("SOR_PG_LAGGING_URL"),
            "SOR_PG_PRIMARY_URL, SOR_PG_REPLICA_URL, SOR_PG_LAGGING_URL",
        ),
        _ => (
            var("SOR_MYSQL_PRIMARY_URL"),
            var("SOR_MYSQL_REPLICA_URL"),
            None,
            "SOR_MYSQL_PRIMARY_URL, SOR_MYSQL_REPLICA_URL",
        ),
    };
    match (primary, replica) {
        (Some(primary), Some(replica)) => Some(Cluster {
            backend,
            primary,
            replicas: vec![replica],
            lagging,
            file: None,
        }),
        _ => {
            let msg = format!(
                "no {} cluster: set {names} (run `scripts/cluster.sh start` and source its env file, or use scripts/test.sh)",
                backend.as_str()
            );
            let set = |name: &str| {
                std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
            };
            if set("CI") || set("SOR_REQUIRE_CLUSTER") {
                panic!("{msg}");
            }
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}

/// A SQLite "cluster": a fresh file; the handle adds the read-only reader pool itself.
pub fn sqlite() -> Option<Cluster> {
    let file =
        TempFile(std::env::temp_dir().join(format!("sor-test-{}.sqlite", uuid::Uuid::new_v4())));
    Some(Cluster {
        backend: DbBackend::Sqlite,
        primary: format!("sqlite://{}?mode=rwc", file.0.display()),
        replicas: vec![],
        lagging: None,
        file: Some(std::sync::Arc::new(file)),
    })
}

/// Removes the SQLite file (and its WAL) when dropped.
#[derive(Debug)]
pub struct TempFile(pub std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Cluster {
    /// A handle over the primary and the replicas that keep up.
    pub async fn handle(&self) -> ReplicatedDatabase {
        self.handle_with(self.replicas.clone()).await
    }

    /// A handle over the primary and exactly these replicas.
    pub async fn handle_with(&self, replicas: Vec<String>) -> ReplicatedDatabase {
        let mut builder = ReplicatedDatabase::builder()
            .primary_node(NodeConfig::new(&self.primary).name("primary"));
        for (i, url) in replicas.into_iter().enumerate() {
            builder = builder.replica_node(NodeConfig::new(url).name(format!("replica-{}", i + 1)));
        }
        let db = builder
            .connect()
            .await
            .expect("connect to the test cluster");
        migrate_once(&db).await;
        db
    }

    /// Every replica URL, lagging one included.
    pub fn all_replicas(&self) -> Vec<String> {
        self.replicas
            .iter()
            .cloned()
            .chain(self.lagging.clone())
            .collect()
    }
}

static MIGRATED: tokio::sync::Mutex<Vec<String>> = tokio::sync::Mutex::const_new(Vec::new());

/// Runs the example migrations once per primary per test binary.
pub async fn migrate_once(db: &ReplicatedDatabase) {
    let mut done = MIGRATED.lock().await;
    let key = db.primary().url().to_owned();
    if !done.contains(&key) {
        create_write_probe(db).await;
        db.migrate::<Migrator>(MigrateOptions::new().wait_for_replicas(Duration::from_secs(30)))
            .await
            .expect("migrate the test schema");
        done.push(key);
    }
}

/// `sor_write_probe()`: a function that writes, so a test can show the *server* refuses a
/// write that no client-side check can see. Created on the primary (and replicated, since the
/// migration run after it waits for the replicas).
async fn create_write_probe(db: &ReplicatedDatabase) {
    let primary = db.primary();
    let sql = match db.backend() {
        DbBackend::Postgres => {
            "CREATE OR REPLACE FUNCTION sor_write_probe() RETURNS int LANGUAGE sql AS \
             $$ INSERT INTO banner (name) VALUES ('write probe') RETURNING 1 $$"
        }
        DbBackend::MySql => {
            "CREATE FUNCTION IF NOT EXISTS sor_write_probe() RETURNS INT DETERMINISTIC MODIFIES SQL DATA \
             BEGIN INSERT INTO banner (name) VALUES ('write probe'); RETURN 1; END"
        }
        _ => return,
    };
    // the function body names `banner`: make sure the table exists first
    db.migrate::<Migrator>(MigrateOptions::new())
        .await
        .expect("migrate the test schema");
    primary
        .connection()
        .execute_unprepared(sql)
        .await
        .expect("create sor_write_probe()");
}

/// Which node answered, as the server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// `inet_server_port()` / `@@port`; 0 for SQLite.
    pub port: i64,
    /// `pg_is_in_recovery()` / `@@read_only` / SQLite `PRAGMA query_only`.
    pub replica: bool,
}

/// Asks the server behind `conn`'s next statement who it is.
pub async fn served_by<C: ConnectionTrait>(conn: &C) -> Result<Served, DbErr> {
    let backend = conn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT inet_server_port()::int8 AS port, pg_is_in_recovery()::int4::int8 AS replica"
        }
        DbBackend::MySql => {
            "SELECT CAST(@@port AS SIGNED) AS port, CAST(@@read_only AS SIGNED) AS replica"
        }
        _ => "SELECT 0 AS port, query_only AS replica FROM pragma_query_only",
    };
    let row = conn
        .query_one_raw(Statement::from_string(backend, sql))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("identity".into()))?;
    Ok(Served {
        port: row.try_get("", "port")?,
        replica: row.try_get::<i64>("", "replica")? != 0,
    })
}

/// The port in a URL (0 when it has none, as for SQLite).
pub fn port_of(url: &str) -> i64 {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.port())
        .map_or(0, i64::from)
}

/// True when the fault-injection tests run (they start clusters of their own and break them):
/// `SOR_FAULT_TESTS`, `SOR_REQUIRE_CLUSTER` or `CI` set (`scripts/test.sh` sets them).
/// Otherwise says which test (`what`) is skipped and how to run it.
pub fn fault_tests_enabled(what: &str) -> bool {
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    let on = set("SOR_FAULT_TESTS") || set("SOR_REQUIRE_CLUSTER") || set("CI");
    if !on {
        eprintln!("{what} skipped: set SOR_FAULT_TESTS=1 (scripts/test.sh does)");
    }
    on
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}
