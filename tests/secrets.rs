//! No secret in any output: a password given in the user-info, as `?password=`, or as the
//! read-only credentials never shows in `Debug`, `Display`, serde output, errors, the status
//! view, or any span or event (ours or a dependency's) at TRACE level.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_orm_replica::{NodeConfig, PoolConfig, ReplicaConfig, ReplicaError, ReplicatedDatabase};

const SECRET: &str = "hunter2xyzzy";

/// Everything written by the tracing subscriber, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

fn trace_everything() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET),
        "{what} shows the secret:\n{}",
        text.lines()
            .filter(|l| l.contains(SECRET))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// With a secret in every place a URL can hold one.
fn secret_urls(host_port: &str) -> Vec<String> {
    vec![
        format!("postgres://app:{SECRET}@{host_port}/app"),
        format!("postgres://app@{host_port}/app?password={SECRET}"),
        format!("postgres://app@{host_port}/app?sslmode=disable&sslpassword={SECRET}"),
        format!("mysql://app@{host_port}/app?password={SECRET}"),
        format!("mariadb://app:{SECRET}@{host_port}/app?ssl-mode=disabled"),
    ]
}

#[test]
fn configs_print_no_secret() {
    for url in secret_urls("db.example:5432") {
        let node = NodeConfig::new(&url)
            .name("n")
            .read_only_credentials("reader", Some(SECRET.to_owned()));
        assert_clean("NodeConfig Debug", &format!("{node:?}"));
        let mut config = ReplicaConfig::new(&url);
        config.replicas.push(node.clone());
        assert_clean("ReplicaConfig Debug", &format!("{config:?}"));
        assert_clean(
            "ReplicaConfig JSON",
            &serde_json::to_string(&config).unwrap(),
        );
        let builder = ReplicatedDatabase::builder()
            .primary(&url)
            .replica_node(node);
        assert_clean("builder Debug", &format!("{builder:?}"));
        assert_clean("redact", &sea_orm_replica::config::redact(&url));
    }
    // the redacted URL keeps everything else
    assert_eq!(
        sea_orm_replica::config::redact(&format!(
            "postgres://app@h/app?sslmode=require&password={SECRET}"
        )),
        "postgres://app@h/app?sslmode=require&password=***"
    );
}

#[tokio::test]
async fn errors_print_no_secret() {
    let (captured, _guard) = trace_everything();
    // bad URLs (typed InvalidUrl), and unreachable nodes (typed Unreachable)
    for url in [
        format!("postgres://app:{SECRET}@/app"),
        format!("redis://app:{SECRET}@h/0?password={SECRET}"),
        format!("nonsense {SECRET}"),
        format!("postgres://app:{SECRET}@127.0.0.1:1/app?password={SECRET}"),
        format!("mysql://app:{SECRET}@127.0.0.1:1/app?password={SECRET}"),
    ] {
        let err = ReplicatedDatabase::builder()
            .primary_node(
                NodeConfig::new(&url)
                    .name("gone")
                    .connect_timeout(Duration::from_millis(500))
                    .acquire_timeout(Duration::from_millis(500)),
            )
            .check_timeout(Duration::from_millis(500))
            .connect()
            .await
            .expect_err(&url);
        assert!(
            matches!(
                err,
                ReplicaError::InvalidUrl { .. } | ReplicaError::Unreachable { .. }
            ),
            "{url}: {err:?}"
        );
        assert_clean("error Display", &err.to_string());
        assert_clean("error Debug", &format!("{err:?}"));
    }
    assert_clean("TRACE output", &captured.text());
}

#[test]
fn bad_sizes_and_durations_are_typed_errors_not_panics() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = |f: fn(&mut PoolConfig)| {
        let mut p = PoolConfig::default();
        f(&mut p);
        NodeConfig::new("sqlite::memory:").pool(p)
    };
    let nodes = [
        pool(|p| p.max_connections = Some(0)),
        pool(|p| p.read_only_max_connections = Some(0)),
        pool(|p| {
            p.min_connections = Some(5);
            p.max_connections = Some(2)
        }),
        pool(|p| p.acquire_timeout_ms = Some(0)),
        pool(|p| p.connect_timeout_ms = Some(u64::MAX)),
        pool(|p| p.statement_timeout_ms = Some(0)),
        pool(|p| p.idle_timeout_ms = Some(u64::MAX)),
        pool(|p| p.max_lifetime_ms = Some(0)),
        NodeConfig::new("sqlite::memory:").weight(0),
    ];
    for node in nodes {
        let shown = format!("{node:?}");
        let err = rt
            .block_on(ReplicatedDatabase::builder().primary_node(node).connect())
            .expect_err(&shown);
        assert!(matches!(err, ReplicaError::Config(_)), "{shown}: {err:?}");
    }
    let builders: Vec<(&str, sea_orm_replica::ReplicatedDatabaseBuilder)> = vec![
        (
            "check_timeout 0",
            ReplicatedDatabase::builder().check_timeout(Duration::ZERO),
        ),
        (
            "monitor_interval 0",
            ReplicatedDatabase::builder().monitor_interval(Duration::ZERO),
        ),
        (
            "monitor_interval MAX",
            ReplicatedDatabase::builder().monitor_interval(Duration::MAX),
        ),
        (
            "causal_wait MAX",
            ReplicatedDatabase::builder().causal_wait(Duration::MAX),
        ),
        (
            "backoff 0",
            ReplicatedDatabase::builder().backoff(Duration::ZERO, Duration::ZERO),
        ),
        (
            "backoff MAX",
            ReplicatedDatabase::builder().backoff(Duration::MAX, Duration::MAX),
        ),
        (
            "read_retries MAX",
            ReplicatedDatabase::builder().read_retries(u32::MAX, Duration::MAX),
        ),
        (
            "max_lag MAX",
            ReplicatedDatabase::builder().max_lag(Duration::MAX),
        ),
    ];
    for (what, builder) in builders {
        let err = rt
            .block_on(builder.primary("sqlite::memory:").connect())
            .expect_err(what);
        assert!(matches!(err, ReplicaError::Config(_)), "{what}: {err:?}");
    }
}

/// A working handle on the real cluster, with the password (which trust authentication
/// ignores) in the query string and as read-only credentials: status view, node URLs, the
/// units' spans and events, sqlx's own events, all at TRACE.
#[tokio::test]
async fn a_working_handle_prints_no_secret() {
    let Some(c) = common::cluster(DbBackend::Postgres) else {
        return;
    };
    let (captured, _guard) = trace_everything();
    let with_secret = |url: &str| format!("{url}?password={SECRET}&application_name=sor");
    let db = ReplicatedDatabase::builder()
        .primary(with_secret(&c.primary))
        .replica_node(
            NodeConfig::new(with_secret(&c.replicas[0]))
                .read_only_credentials("postgres", Some(SECRET.to_owned())),
        )
        .connect()
        .await
        .unwrap();
    let unit = db.begin_read_only();
    unit.query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT 1"))
        .await
        .unwrap();
    unit.commit().await.unwrap();
    let unit = db.begin_read_write();
    unit.execute_unprepared("SELECT 1").await.unwrap();
    unit.commit().await.unwrap();
    let status = db.status();
    assert_clean("status Display", &status.to_string());
    assert_clean("status Debug", &format!("{status:?}"));
    assert_clean("handle Debug", &format!("{db:?}"));
    for node in db.nodes() {
        assert_clean("Node::url", node.url());
        assert_clean("Node Debug", &format!("{node:?}"));
    }
    let text = captured.text();
    assert!(
        text.contains("unit_of_work"),
        "the subscriber saw the units"
    );
    assert_clean("TRACE output", &text);
}
