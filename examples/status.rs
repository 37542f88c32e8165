//! Prints every node of a replicated database: role (configured, and as the server reports
//! it), routing, health, lag, units in flight — what pgpool's `SHOW POOL_NODES` shows.
//!
//! ```text
//! DATABASE_URL=postgres://… DATABASE_REPLICA_URLS=postgres://…,postgres://… cargo run --example status
//! cargo run --example status -- --watch        # every second until Ctrl-C
//! ```

use std::time::Duration;

use sea_orm_replica::{ReplicaConfig, ReplicaError, ReplicatedDatabase};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = match ReplicaConfig::from_env() {
        Ok(config) => config,
        Err(ReplicaError::MissingEnv(var)) => {
            eprintln!("set {var} (and DATABASE_REPLICA_URLS) to the nodes to show");
            std::process::exit(2);
        }
        Err(err) => return Err(err.into()),
    };
    let db = ReplicatedDatabase::connect(config).await?;
    let watch = std::env::args().any(|a| a == "--watch");
    loop {
        println!("{}", db.status());
        if !watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
