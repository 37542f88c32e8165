//! A tour of sea-orm-replica: migrations, writes, reads, where each unit ran, and the stats.
//!
//! ```text
//! cargo run --example tour                      # SQLite: a writer pool and a read-only reader pool
//! DATABASE_URL=postgres://… DATABASE_REPLICA_URLS=postgres://…,postgres://… cargo run --example tour
//! ```
//! `RUST_LOG=sea_orm_replica=debug` shows the unit-of-work spans.

use std::time::Duration;

use entity::{author, banner};
use migration::Migrator;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr};
use sea_orm::{EntityTrait, QueryFilter};
use sea_orm_replica::backend::Dialect;
use sea_orm_replica::shard::{ShardedConfig, ShardedDatabase, ShardedRepository};
use sea_orm_replica::{
    read_only_scope, CausalScope, MigrateOptions, ReplicaConfig, ReplicaError, ReplicatedDatabase,
    Repository,
};

struct Authors;
impl Repository for Authors {
    type Entity = author::Entity;
}

struct Banners;
impl Repository for Banners {
    type Entity = banner::Entity;
}

/// Authors, sharded by their id: an author and their banners live on one shard.
struct ShardedAuthors;
impl ShardedRepository for ShardedAuthors {
    type Entity = author::Entity;
    fn shard_key() -> author::Column {
        author::Column::Id
    }
}

/// Banners, sharded by author: `insert` goes to the shard of `author_id`.
struct ShardedBanners;
impl ShardedRepository for ShardedBanners {
    type Entity = banner::Entity;
    fn shard_key() -> banner::Column {
        banner::Column::AuthorId
    }
}

impl Banners {
    /// A custom query beside the generated CRUD.
    async fn by_author<C: ConnectionTrait>(
        db: &C,
        author_id: i32,
    ) -> Result<Vec<banner::Model>, DbErr> {
        Self::find_by(db, banner::Column::AuthorId.eq(author_id)).await
    }
}

/// Asks the server that runs `conn`'s next statement who it is.
async fn served_by<C: ConnectionTrait>(conn: &C) -> Result<String, DbErr> {
    Ok(Dialect(conn.get_database_backend())
        .server_identity(conn)
        .await?
        .to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .init();

    let config = match ReplicaConfig::from_env() {
        Ok(config) => config,
        Err(ReplicaError::MissingEnv(_)) => {
            let file = std::env::temp_dir().join(format!(
                "sea-orm-replica-tour-{}.sqlite",
                std::process::id()
            ));
            println!(
                "DATABASE_URL is not set: using SQLite at {}",
                file.display()
            );
            ReplicaConfig::new(format!("sqlite://{}?mode=rwc", file.display()))
        }
        Err(err) => return Err(err.into()),
    };
    let db = ReplicatedDatabase::connect(config).await?;
    println!("\n== nodes");
    for node in db.nodes() {
        println!("  {:<14} {:<8} {}", node.name(), node.role(), node.url());
    }

    println!("\n== migrations (primary only; waits for replicas to replay them)");
    let report = db
        .migrate::<Migrator>(MigrateOptions::new().wait_for_replicas(Duration::from_secs(30)))
        .await?;
    println!(
        "  applied on {}; replicas caught up: {:?}",
        report.node, report.replicas_caught_up
    );

    println!("\n== a read-write unit: insert an author and two banners");
    let unit = db.begin_read_write();
    println!("  opened; connection taken yet? {}", unit.is_started());
    let author = Authors::insert(
        &unit,
        author::ActiveModel {
            name: Set("Ada".into()),
            ..Default::default()
        },
    )
    .await?;
    let mut ids = Vec::new();
    for name in ["spring sale", "free shipping"] {
        let b = banner::ActiveModel {
            name: Set(name.into()),
            author_id: Set(Some(author.id)),
            ..Default::default()
        };
        ids.push(Banners::insert(&unit, b).await?.id);
    }
    println!(
        "  ran on node {:?}; the server says: {}",
        unit.node_name().unwrap_or("-"),
        served_by(&unit).await?
    );
    unit.commit().await?;

    println!("\n== a read-only unit: read them back");
    let found = db
        .read_only(|unit| {
            Box::pin(async move {
                let banners = Banners::by_author(unit, author.id).await?;
                let page = Banners::page(unit, 0, 10).await?;
                let who = served_by(unit).await?;
                println!(
                    "  ran on node {:?}; the server says: {who}",
                    unit.node_name().unwrap_or("-")
                );
                println!(
                    "  page 0: {} of {} banners",
                    page.items.len(),
                    page.total_items
                );
                Ok::<_, DbErr>(banners)
            })
        })
        .await?;
    for b in &found {
        println!("  #{} {:?}", b.id, b.name);
    }
    if found.len() < ids.len() {
        println!(
            "  (replica lag: {} of {} banners visible yet — the next issue adds read-your-writes)",
            found.len(),
            ids.len()
        );
    }

    println!("\n== a write in a read-only unit is refused before it reaches a server");
    let unit = db.begin_read_only();
    // `Banners::insert(&unit, …)` would not compile (a read-only unit is not `Writable`);
    // SeaORM's own API compiles, and is refused at run time with a typed error:
    let attempt = banner::ActiveModel {
        name: Set("nope".into()),
        ..Default::default()
    };
    match sea_orm::ActiveModelTrait::insert(attempt, &unit)
        .await
        .map_err(ReplicaError::from_db_err)
    {
        Err(e @ ReplicaError::WriteInReadOnly { .. }) => {
            println!("  {e}; connection taken: {}", unit.is_started())
        }
        other => println!("  unexpected: {other:?}"),
    }

    println!("\n== a unit that runs nothing takes nothing");
    let before = db.stats().total_acquisitions();
    db.begin_read_only().commit().await?;
    db.begin_read_write().commit().await?;
    println!(
        "  pool acquisitions: {} → {}",
        before,
        db.stats().total_acquisitions()
    );

    println!(
        "\n== a read-only scope (seeds/002's use_replica): plain handle reads go to a replica"
    );
    let (count, who) = read_only_scope(async {
        Ok::<_, DbErr>((Banners::count(&db).await?, served_by(&db).await?))
    })
    .await?;
    println!("  {count} banners; the server says: {who}");
    println!(
        "  outside the scope the handle is the primary: {}",
        served_by(&db).await?
    );

    println!("\n== a replayed read-write unit: run again across a primary failover, applied once");
    let saved = db
        .read_write_replayed(|unit| {
            Box::pin(async move {
                Banners::insert(
                    unit,
                    banner::ActiveModel {
                        name: Set("replayed".into()),
                        ..Default::default()
                    },
                )
                .await
            })
        })
        .await?;
    println!(
        "  saved banner {}; its identity is in sor_applied, so the server refuses a second application",
        saved.id
    );
    queue_tour(&db, saved.id).await?;

    println!("\n== stats\n{}", db.stats());
    println!(
        "\n== status (what `cargo run --example status` prints)\n{}",
        db.status()
    );
    sharding().await
}

/// The write-behind queue (feature `queue-redis`, `REDIS_URL`): enqueue a command, wait for a
/// worker to apply it, read it back on a replica after its commit's token.
#[cfg(feature = "queue-redis")]
async fn queue_tour(db: &ReplicatedDatabase, id: i32) -> Result<(), Box<dyn std::error::Error>> {
    use sea_orm::sea_query::Expr;
    use sea_orm_replica::queue::{Command, Queue, RedisBroker};
    use sea_orm_replica::{ReadOnly, UnitOptions};
    use serde::{Deserialize, Serialize};

    let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) else {
        println!("\n== the write-behind queue: set REDIS_URL to see it");
        return Ok(());
    };
    println!("\n== the write-behind queue: enqueue → wait → read on a replica");
    #[derive(Clone, Serialize, Deserialize)]
    struct Rename {
        id: i32,
        name: String,
    }
    impl Command for Rename {
        const NAME: &'static str = "rename";
        fn key(&self) -> Option<String> {
            Some(self.id.to_string()) // one banner's renames apply in order
        }
    }
    let queue = Queue::builder("tour")
        .broker(RedisBroker::connect(&url, "tour").await?)
        .handle(|r: Rename, unit| {
            Box::pin(async move {
                banner::Entity::update_many()
                    .col_expr(banner::Column::Name, Expr::value(r.name))
                    .filter(banner::Column::Id.eq(r.id))
                    .exec(unit)
                    .await
                    .map(drop)
            })
        })
        .build()?;
    let worker = queue.worker(db.clone()).spawn();
    let ticket = queue
        .enqueue(&Rename {
            id,
            name: "renamed by the queue".into(),
        })
        .await?;
    println!("  enqueued {ticket}: on Redis's disk, no database round trip on the way");
    let token = queue
        .wait(&ticket, Duration::from_secs(10))
        .await?
        .ok_or("not applied within 10 s")?;
    println!("  applied by the worker; its commit's causal token: {token}");
    let unit = db.begin_unit::<ReadOnly>(UnitOptions::new().after(&token));
    let name = Banners::find_by_id(&unit, id).await?.map(|b| b.name);
    let who = served_by(&unit).await?;
    unit.commit().await?;
    println!("  read back {name:?}; the server says: {who}");
    println!("  {}", queue.status().await?);
    worker.stop().await;
    Ok(())
}

#[cfg(not(feature = "queue-redis"))]
async fn queue_tour(_: &ReplicatedDatabase, _: i32) -> Result<(), Box<dyn std::error::Error>> {
    println!("\n== the write-behind queue: run with `--features queue-redis` and REDIS_URL set");
    Ok(())
}

/// Two shards (`DATABASE_SHARDS` and friends, or two SQLite files): banners placed by author.
async fn sharding() -> Result<(), Box<dyn std::error::Error>> {
    println!("\n== sharding: banners placed by author over two shards");
    let shards = match ShardedConfig::from_env() {
        Ok(config) => ShardedDatabase::connect(config).await?,
        Err(ReplicaError::MissingEnv(_)) => {
            let file = |shard: &str| {
                std::env::temp_dir().join(format!(
                    "sea-orm-replica-tour-{}-{shard}.sqlite",
                    std::process::id()
                ))
            };
            println!("  DATABASE_SHARDS is not set: two SQLite files, a and b");
            ShardedDatabase::builder()
                .shard(
                    "a",
                    ReplicatedDatabase::builder()
                        .primary(format!("sqlite://{}?mode=rwc", file("a").display())),
                )
                .shard(
                    "b",
                    ReplicatedDatabase::builder()
                        .primary(format!("sqlite://{}?mode=rwc", file("b").display())),
                )
                .connect()
                .await?
        }
        Err(err) => return Err(err.into()),
    };
    let report = shards.migrate::<Migrator>(MigrateOptions::new()).await;
    println!(
        "  migrations: {} shards, failed: {:?}",
        report.shards.len(),
        report.failed()
    );
    report.into_result()?;

    // writes route by key; the scope collects one causal position per shard
    let scope = CausalScope::new(false, None);
    scope
        .run(async {
            for id in 1..=4 {
                ShardedAuthors::insert(
                    &shards,
                    author::ActiveModel {
                        id: Set(id),
                        name: Set(format!("author {id}")),
                    },
                )
                .await?;
                for n in 1..=2 {
                    ShardedBanners::insert(
                        &shards,
                        banner::ActiveModel {
                            name: Set(format!("banner {n} of author {id}")),
                            author_id: Set(Some(id)),
                            ..Default::default()
                        },
                    )
                    .await?;
                }
                println!("  author {id} lives on shard {}", shards.locate(id).await?);
            }
            Ok::<_, ReplicaError>(())
        })
        .await?;
    println!(
        "  the token (one cookie) holds a position per shard: {:?}",
        scope.token().to_string()
    );

    // reads: a key lookup on its shard, then one query on every shard, merged
    let reading = CausalScope::new(true, Some(scope.token()));
    reading
        .run(async {
            let mine = ShardedBanners::find_by_key(&shards, 3).await?;
            println!("  author 3's banners (one shard): {}", mine.len());
            let top = shards
                .fan_out(
                    banner::Entity::find().filter(banner::Column::Name.starts_with("banner 2")),
                )
                .order_by_desc(banner::Column::AuthorId)
                .limit(3)
                .all()
                .await?;
            let names: Vec<_> = top.iter().map(|b| b.name.as_str()).collect();
            println!("  fan-out, ORDER BY author_id DESC LIMIT 3: {names:?}");
            let total = shards.fan_out(banner::Entity::find()).count().await?;
            println!(
                "  fan-out count: {total} banners on {} shards",
                shards.names().len()
            );
            Ok::<_, ReplicaError>(())
        })
        .await?;

    // one unit, two shards: refused unless two-phase
    let write = shards.begin_write();
    let first = write.on(1).await?;
    banner::Entity::insert(banner::ActiveModel {
        name: Set("x".into()),
        author_id: Set(Some(1)),
        ..Default::default()
    })
    .exec(first)
    .await?;
    for id in 2..=4 {
        if let Err(e) = write.on(id).await {
            println!("  refused: {e}");
            break;
        }
    }
    write.rollback().await?;
    println!("\n== status, grouped by shard\n{}", shards.status());
    Ok(())
}
