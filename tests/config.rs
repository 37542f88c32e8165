//! Bad input gets a clear typed error: URLs, mixed backends, unreachable nodes.

use std::time::Duration;

use sea_orm_replica::{NodeConfig, ReplicaConfig, ReplicaError, ReplicatedDatabase};

#[tokio::test]
async fn bad_urls_are_typed_errors_naming_the_node() {
    for (url, reason) in [
        ("redis://127.0.0.1/0", "unsupported scheme"),
        ("not a url", "no scheme"),
        ("postgres://user:secret@/app", "host"),
    ] {
        let err = ReplicatedDatabase::builder()
            .primary("sqlite::memory:")
            .replica_node(NodeConfig::new(url).name("r9"))
            .connect()
            .await
            .unwrap_err();
        match &err {
            ReplicaError::InvalidUrl {
                node, reason: why, ..
            } => {
                assert_eq!(node, "r9");
                assert!(why.contains(reason), "{why}");
            }
            other => panic!("{url}: expected InvalidUrl, got {other:?}"),
        }
        assert!(
            !err.to_string().contains("secret"),
            "password leaked: {err}"
        );
    }
}

#[tokio::test]
async fn mixed_backends_are_refused() {
    let err = ReplicatedDatabase::builder()
        .primary("sqlite::memory:")
        .replica("postgres://app@127.0.0.1:1/app")
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ReplicaError::BackendMismatch { node, expected: "Sqlite", found: "Postgres" } if node == "replica-1"),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unreachable_node_is_named_and_its_password_hidden() {
    let err = ReplicatedDatabase::builder()
        .primary_node(
            NodeConfig::new("postgres://app:hunter2@127.0.0.1:1/app")
                .name("gone")
                .connect_timeout(Duration::from_secs(2))
                .acquire_timeout(Duration::from_secs(2)),
        )
        .connect()
        .await
        .unwrap_err();
    match &err {
        ReplicaError::Unreachable { node, url, .. } => {
            assert_eq!(node, "gone");
            assert_eq!(url, "postgres://app:***@127.0.0.1:1/app");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(!err.to_string().contains("hunter2"));
}

#[tokio::test]
async fn no_primary_is_a_config_error() {
    let err = ReplicatedDatabase::builder().connect().await.unwrap_err();
    assert!(matches!(err, ReplicaError::Config(_)));
}

#[test]
fn config_deserializes_with_defaults_and_rejects_unknown_fields() {
    let c: ReplicaConfig =
        serde_json::from_str(r#"{"primary": {"url": "sqlite::memory:"}}"#).unwrap();
    assert!(c.replicas.is_empty());
    assert!(c.sqlite_reader_pool);
    assert_eq!(c.fallback, sea_orm_replica::Fallback::Primary);
    assert_eq!(
        (c.causal_wait_ms, c.max_lag_ms, c.monitor_interval_ms),
        (None, None, None)
    );
    let c: ReplicaConfig = serde_json::from_str(
        r#"{"primary": {"url": "sqlite::memory:"}, "causal_wait_ms": 250, "max_lag_ms": 2000, "monitor_interval_ms": 100}"#,
    )
    .unwrap();
    assert_eq!(
        (c.causal_wait_ms, c.max_lag_ms, c.monitor_interval_ms),
        (Some(250), Some(2000), Some(100))
    );
    let err = serde_json::from_str::<ReplicaConfig>(
        r#"{"primary": {"url": "x", "pool": {"max_conn": 3}}}"#,
    );
    assert!(err.is_err(), "a misspelt pool option must not be ignored");
}

#[tokio::test]
async fn pools_you_already_have_can_be_nodes() {
    let primary = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
    let db = ReplicatedDatabase::builder()
        .primary_connection("mine", primary)
        .connect()
        .await
        .unwrap();
    assert_eq!(db.primary().name(), "mine");
    assert_eq!(
        db.replicas().len(),
        0,
        "no reader pool is invented for a pool handed in"
    );
    let unit = db.begin_read_only();
    use sea_orm::ConnectionTrait;
    unit.execute_unprepared("SELECT 1").await.unwrap();
    assert_eq!(unit.node_name(), Some("mine"));
    assert_eq!(
        unit.route().unwrap().reason,
        sea_orm_replica::RouteReason::NoReplicas
    );
}

/// A replica that fails at the connection level is left out; the next read-only unit falls
/// back to the primary (read only), or fails with a typed error when fallback is off.
#[tokio::test]
async fn a_failed_replica_is_left_out_and_fallback_is_configurable() {
    use sea_orm::ConnectionTrait;
    use sea_orm_replica::{Fallback, RouteReason};
    for fallback in [Fallback::Primary, Fallback::Error] {
        let primary = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        let dead = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        dead.close_by_ref().await.unwrap();
        let db = ReplicatedDatabase::builder()
            .primary_connection("primary", primary)
            .replica_connection("dead", dead)
            .fallback(fallback)
            .connect()
            .await
            .unwrap();
        let unit = db.begin_read_only();
        assert!(unit.execute_unprepared("SELECT 1").await.is_err());
        assert_eq!(unit.node_name(), Some("dead"));
        assert!(!db.node("dead").unwrap().is_available());

        let unit = db.begin_read_only();
        let result = unit.execute_unprepared("SELECT 1").await;
        match fallback {
            Fallback::Primary => {
                result.unwrap();
                assert_eq!(unit.route().unwrap().reason, RouteReason::Fallback);
                assert_eq!(db.stats().fallbacks, 1);
            }
            Fallback::Error => {
                let err = ReplicaError::from_db_err(result.unwrap_err());
                assert!(
                    matches!(err, ReplicaError::NoReplicaAvailable { .. }),
                    "{err:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_disconnected_pool_is_refused_not_a_panic() {
    let err = ReplicatedDatabase::builder()
        .primary_connection("nothing", sea_orm::DatabaseConnection::default())
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ReplicaError::Config(ref m) if m.contains("nothing")),
        "{err:?}"
    );
}
