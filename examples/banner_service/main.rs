//! An axum service over the example entities, with request-scoped routing.
//!
//! ```text
//! cargo run --example banner_service --features axum,prometheus,queue-redis
//! curl -c jar -b jar -XPOST localhost:3000/banners -H 'content-type: application/json' -d '{"name":"sale"}'
//! curl -c jar -b jar localhost:3000/banners/1
//! ```
//! `BIND_ADDR` (default `127.0.0.1:3000`), `DATABASE_URL`, `DATABASE_REPLICA_URLS` (SQLite when unset),
//! or, for the sharded mode (banners by author: `/authors/{author}/banners`), `DATABASE_SHARDS`
//! with `DATABASE_URL_<SHARD>` / `DATABASE_REPLICA_URLS_<SHARD>` (`SOR_SHARDED=1` alone: two
//! SQLite files),
//! `REDIS_URL` (the view counter, `POST /banners/{id}/views`, goes write-behind through a Redis
//! queue; unset, that route answers 503),
//! `SOR_COOKIE_KEY` (hex, at least 32 bytes, e.g. `openssl rand -hex 32`: signs the token cookie;
//! unset, a random key per process, so cookies do not survive a restart),
//! `SOR_STATUS_TOKEN` (at least 16 bytes: turns on the status page's dead-letter actions, each
//! request with `Authorization: Bearer <token>`; unset, the page is read-only).
//!
//! Operators: the status page at `/_db/status`, Prometheus metrics at `/_db/metrics`.

mod app;

use migration::Migrator;
use sea_orm_replica::queue::RedisBroker;
use sea_orm_replica::shard::{ShardedConfig, ShardedDatabase};
use sea_orm_replica::web::StatusPage;
use sea_orm_replica::{MigrateOptions, ReplicaConfig, ReplicaError, ReplicatedDatabase};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // Prometheus metrics at /_db/metrics: installed before any handle, so every metric is
    // described and recorded
    let metrics = sea_orm_replica::observe::prometheus::install()?;
    if let Some(shards) = sharded().await? {
        let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        tracing::info!(shards = ?shards.names().collect::<Vec<_>>(), "sharded banner service listening on http://{}", listener.local_addr()?);
        let ops = app::ops(status_page(StatusPage::sharded(&shards)), Some(metrics));
        axum::serve(listener, app::sharded_app(shards).merge(ops)).await?;
        return Ok(());
    }
    let config = match ReplicaConfig::from_env() {
        Ok(config) => config,
        Err(ReplicaError::MissingEnv(_)) => {
            let file = std::env::temp_dir().join("sea-orm-replica-banner-service.sqlite");
            tracing::info!(
                "DATABASE_URL is not set: using SQLite at {}",
                file.display()
            );
            ReplicaConfig::new(format!("sqlite://{}?mode=rwc", file.display()))
        }
        Err(err) => return Err(err.into()),
    };
    let db = ReplicatedDatabase::connect(config).await?;
    db.migrate::<Migrator>(MigrateOptions::new()).await?;
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(
        "banner service listening on http://{}",
        listener.local_addr()?
    );
    // the view counter, write-behind, when there is a broker; its worker runs in this process
    match std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => {
            let queue = app::views_queue(RedisBroker::connect(&url, "banner_views").await?)?;
            let worker = queue.worker(db.clone()).spawn();
            tracing::info!("views are counted write-behind through Redis");
            let page = status_page(StatusPage::new(&db).queue(queue.clone()));
            let service = app::app_with_views(db, queue).merge(app::ops(page, Some(metrics)));
            axum::serve(listener, service).await?;
            worker.stop().await;
        }
        None => {
            let page = status_page(StatusPage::new(&db));
            axum::serve(listener, app::app(db).merge(app::ops(page, Some(metrics)))).await?
        }
    }
    Ok(())
}

/// The status page, its actions on when `SOR_STATUS_TOKEN` is set.
fn status_page(page: StatusPage) -> StatusPage {
    match std::env::var("SOR_STATUS_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        Some(token) => page.allow_actions(token),
        None => page,
    }
}

/// The sharded mode's handle, when asked for: `DATABASE_SHARDS` (and its URLs), or
/// `SOR_SHARDED=1` for two SQLite files. Migrated on every shard.
async fn sharded() -> Result<Option<ShardedDatabase>, Box<dyn std::error::Error>> {
    let shards = match ShardedConfig::from_env() {
        Ok(config) => ShardedDatabase::connect(config).await?,
        Err(ReplicaError::MissingEnv(_))
            if std::env::var("SOR_SHARDED").is_ok_and(|v| v == "1") =>
        {
            let url = |shard: &str| {
                let file = std::env::temp_dir()
                    .join(format!("sea-orm-replica-banner-service-{shard}.sqlite"));
                format!("sqlite://{}?mode=rwc", file.display())
            };
            ShardedDatabase::builder()
                .shard("a", ReplicatedDatabase::builder().primary(url("a")))
                .shard("b", ReplicatedDatabase::builder().primary(url("b")))
                .connect()
                .await?
        }
        Err(ReplicaError::MissingEnv(_)) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    shards
        .migrate::<Migrator>(MigrateOptions::new())
        .await
        .into_result()?;
    Ok(Some(shards))
}
