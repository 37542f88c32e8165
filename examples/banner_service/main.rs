//! An axum service over the example entities, with request-scoped routing.
//!
//! ```text
//! cargo run --example banner_service --features tower
//! curl -c jar -b jar -XPOST localhost:3000/banners -H 'content-type: application/json' -d '{"name":"sale"}'
//! curl -c jar -b jar localhost:3000/banners/1
//! ```
//! `BIND_ADDR` (default `127.0.0.1:3000`), `DATABASE_URL`, `DATABASE_REPLICA_URLS` (SQLite when unset),
//! `SOR_COOKIE_KEY` (hex, at least 32 bytes, e.g. `openssl rand -hex 32`: signs the token cookie;
//! unset, a random key per process, so cookies do not survive a restart).

mod app;

use migration::Migrator;
use sea_orm_replica::{MigrateOptions, ReplicaConfig, ReplicaError, ReplicatedDatabase};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
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
    axum::serve(listener, app::app(db)).await?;
    Ok(())
}
