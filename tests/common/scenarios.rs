//! Scenarios every backend must pass, each proven by asking the server which node answered.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use entity::{author, banner};
use futures_util::StreamExt;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr,
    EntityTrait, Statement, StreamTrait, TransactionError, TransactionTrait,
};
use sea_orm_replica::{
    read_only_scope, Fallback, NodeConfig, ReplicaError, ReplicatedDatabase, Repository,
    ServerRole, UnitOptions,
};

use super::{port_of, served_by, unique, Cluster};

pub struct Authors;
impl Repository for Authors {
    type Entity = author::Entity;
}

pub struct Banners;
impl Repository for Banners {
    type Entity = banner::Entity;
}

pub fn new_banner(name: &str) -> banner::ActiveModel {
    banner::ActiveModel {
        name: Set(name.to_owned()),
        ..Default::default()
    }
}

async fn count_named(db: &ReplicatedDatabase, name: &str) -> u64 {
    Banners::count_by(db, banner::Column::Name.eq(name))
        .await
        .expect("count on the primary")
}

/// Whether the server refuses a write the client-side check cannot see: `SELECT
/// sor_write_probe()`, a function that inserts a row (created by the harness). SQLite has no
/// stored functions; there the reader pool's `query_only` is asked instead.
async fn server_refuses_hidden_write<C: ConnectionTrait>(conn: &C) -> bool {
    let backend = conn.get_database_backend();
    if backend == DbBackend::Sqlite {
        return served_by(conn).await.expect("ask the session").replica;
    }
    let probe = Statement::from_string(backend, "SELECT sor_write_probe() AS n");
    match conn.query_one_raw(probe).await {
        Ok(_) => false,
        Err(err) => {
            let text = err.to_string().to_lowercase();
            assert!(
                text.contains("read-only") || text.contains("read only"),
                "unexpected error: {err}"
            );
            true
        }
    }
}

pub async fn read_write_unit_runs_on_primary(c: &Cluster) {
    let db = c.handle().await;
    let unit = db.begin_read_write();
    let served = served_by(&unit).await.unwrap();
    assert_eq!(served.port, port_of(&c.primary));
    assert!(
        !served.replica,
        "a read-write unit ran on a replica: {served:?}"
    );
    assert_eq!(unit.node_name(), Some("primary"));
    unit.commit().await.unwrap();
}

pub async fn read_only_units_run_on_replicas(c: &Cluster) {
    let db = c.handle_with(c.all_replicas()).await;
    let expected: BTreeSet<i64> = c.all_replicas().iter().map(|u| port_of(u)).collect();
    let mut seen = BTreeSet::new();
    for _ in 0..2 * db.replicas().len().max(1) {
        let unit = db.begin_read_only();
        let served = served_by(&unit).await.unwrap();
        assert!(
            served.replica,
            "a read-only unit ran on a read-write node: {served:?}"
        );
        seen.insert(served.port);
        unit.commit().await.unwrap();
    }
    if c.backend != DbBackend::Sqlite {
        assert_eq!(seen, expected, "round-robin must use every replica");
    }
    // the closure form too
    let served = db
        .read_only(|u| Box::pin(async move { served_by(u).await }))
        .await
        .unwrap();
    assert!(served.replica);
}

pub async fn units_without_statements_take_nothing(c: &Cluster) {
    let db = c.handle().await;
    let before = db.stats();
    for _ in 0..1000 {
        db.begin_read_only().commit().await.unwrap();
        db.begin_read_write().commit().await.unwrap();
        db.begin_read_write().rollback().await.unwrap();
        let unit = db.begin_read_only();
        assert!(!unit.is_started());
        drop(unit);
    }
    let after = db.stats();
    assert_eq!(after.total_acquisitions(), before.total_acquisitions());
    assert_eq!(after.units_opened, before.units_opened + 4000);
    // and the first statement is what takes the connection
    let unit = db.begin_read_write();
    served_by(&unit).await.unwrap();
    assert!(unit.is_started());
    unit.commit().await.unwrap();
    assert_eq!(
        db.stats().total_acquisitions(),
        before.total_acquisitions() + 1
    );
}

pub async fn write_in_read_only_unit_is_refused(c: &Cluster) {
    let db = c.handle().await;
    let name = unique("refused");
    let unit = db.begin_read_only();
    let err = new_banner(&name).insert(&unit).await.unwrap_err();
    assert!(ReplicaError::from_db_err(err).is_write_in_read_only());
    for sql in [
        "DELETE FROM banner",
        "WITH d AS (DELETE FROM banner RETURNING id) SELECT * FROM d",
        "SELECT * FROM banner FOR UPDATE",
    ] {
        let err = unit.execute_unprepared(sql).await.unwrap_err();
        assert!(
            ReplicaError::from_db_err(err).is_write_in_read_only(),
            "{sql}"
        );
    }
    assert!(
        !unit.is_started(),
        "the refusal must come before any connection is taken"
    );
    let err = unit
        .begin_with_config(None, Some(sea_orm::AccessMode::ReadWrite))
        .await
        .unwrap_err();
    assert!(ReplicaError::from_db_err(err).is_write_in_read_only());
    drop(unit);
    assert_eq!(count_named(&db, &name).await, 0);
}

pub async fn read_only_fallback_is_read_only_on_the_primary(c: &Cluster) {
    let db = ReplicatedDatabase::builder()
        .primary(&c.primary)
        .sqlite_reader_pool(false)
        .connect()
        .await
        .unwrap();
    super::migrate_once(&db).await;
    let unit = db.begin_read_only();
    let served = served_by(&unit).await.unwrap();
    assert_eq!(served.port, port_of(&c.primary));
    if c.backend == DbBackend::Sqlite {
        // one file, no server to ask: the primary's own read-only sessions served it
        assert!(
            served.replica,
            "read-only work runs on a query_only session"
        );
        assert_eq!(unit.node_name(), Some("primary"));
    } else {
        assert!(!served.replica);
        assert!(
            server_refuses_hidden_write(&unit).await,
            "fallback unit must run READ ONLY on the server"
        );
    }
    unit.commit().await.unwrap();
    // with fallback disabled, no replica is a typed error
    let strict = ReplicatedDatabase::builder()
        .primary(&c.primary)
        .replica_node(NodeConfig::new(c.replicas.first().unwrap_or(&c.primary)).name("only"))
        .sqlite_reader_pool(false)
        .fallback(Fallback::Error)
        .connect()
        .await
        .unwrap();
    let unit = strict.begin_read_only();
    served_by(&unit).await.unwrap(); // the replica is up: fine
    drop(unit);
    assert!(
        !server_refuses_hidden_write(&db).await,
        "outside units the handle is the read-write primary"
    );
}

pub async fn nested_units_are_savepoints(c: &Cluster) {
    let db = c.handle().await;
    let (a, b, d) = (unique("outer"), unique("rolled-back"), unique("released"));
    let unit = db.begin_read_write();
    Banners::insert(&unit, new_banner(&a)).await.unwrap();
    let inner = unit.begin().await.unwrap();
    Banners::insert(&inner, new_banner(&b)).await.unwrap();
    inner.rollback().await.unwrap();
    unit.transaction(|t| {
        let d = d.clone();
        Box::pin(async move { Banners::insert(t, new_banner(&d)).await })
    })
    .await
    .unwrap();
    unit.commit().await.unwrap();
    assert_eq!(
        (
            count_named(&db, &a).await,
            count_named(&db, &b).await,
            count_named(&db, &d).await
        ),
        (1, 0, 1)
    );
    // an Err from the closure rolls the whole unit back
    let e = unique("closure-err");
    let result = db
        .read_write(|u| {
            let e = e.clone();
            Box::pin(async move {
                Banners::insert(u, new_banner(&e)).await?;
                Err::<(), DbErr>(DbErr::Custom("changed my mind".into()))
            })
        })
        .await;
    assert!(matches!(result, Err(TransactionError::Transaction(_))));
    assert_eq!(count_named(&db, &e).await, 0);
}

pub async fn repository_crud(c: &Cluster) {
    let db = c.handle().await;
    let unit = db.begin_read_write();
    let who = Authors::insert(
        &unit,
        author::ActiveModel {
            name: Set(unique("author")),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let tag = unique("crud");
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut b = new_banner(&format!("{tag}-{i}"));
        b.author_id = Set(Some(who.id));
        ids.push(Banners::insert(&unit, b).await.unwrap().id);
    }
    let found = Banners::find_by_id(&unit, ids[0])
        .await
        .unwrap()
        .expect("inserted row");
    let mut changed: banner::ActiveModel = found.into();
    changed.name = Set(format!("{tag}-renamed"));
    let updated = Banners::update(&unit, changed).await.unwrap();
    assert_eq!(updated.name, format!("{tag}-renamed"));
    let saved = Banners::save(&unit, new_banner(&format!("{tag}-saved")))
        .await
        .unwrap();
    assert!(!saved.id.is_not_set(), "save returns the stored row");
    assert_eq!(Banners::delete_by_id(&unit, ids[1]).await.unwrap(), 1);
    let by_author = Banners::count_by(&unit, banner::Column::AuthorId.eq(who.id))
        .await
        .unwrap();
    assert_eq!(by_author, 2);
    assert!(Banners::exists(&unit, ids[2]).await.unwrap());
    assert!(!Banners::exists(&unit, ids[1]).await.unwrap());
    let page = Banners::page(&unit, 0, 2).await.unwrap();
    assert_eq!(page.items.len(), 2);
    assert!(page.total_items >= 3);
    let last = Banners::find_by_id(&unit, ids[2]).await.unwrap().unwrap();
    assert_eq!(Banners::delete(&unit, last).await.unwrap(), 1);
    // ActiveModel and Entity APIs straight on the unit
    let via_entity = banner::Entity::find_by_id(ids[0]).one(&unit).await.unwrap();
    assert!(via_entity.is_some());
    unit.commit().await.unwrap();
    assert_eq!(
        Banners::count_by(&db, banner::Column::AuthorId.eq(who.id))
            .await
            .unwrap(),
        1
    );
}

pub async fn streams_in_units(c: &Cluster) {
    let db = c.handle().await;
    let sql = "SELECT 1 AS n UNION ALL SELECT 2 UNION ALL SELECT 3";
    let unit = db.begin_read_only();
    let stmt = Statement::from_string(db.backend(), sql);
    let rows: Vec<_> = unit.stream_raw(stmt).await.unwrap().collect().await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(Result::is_ok));
    assert!(served_by(&unit).await.unwrap().replica);
    drop(unit);
    // in a read-write unit the stream runs inside its transaction and sees its writes
    let name = unique("streamed");
    let unit = db.begin_read_write();
    Banners::insert(&unit, new_banner(&name)).await.unwrap();
    let found: Vec<_> = {
        let stream = banner::Entity::find()
            .filter(banner::Column::Name.eq(&*name))
            .stream(&unit)
            .await
            .unwrap();
        stream.collect().await
    };
    assert_eq!(found.len(), 1);
    unit.rollback().await.unwrap();
    assert_eq!(count_named(&db, &name).await, 0);
}

use sea_orm::QueryFilter;

pub async fn read_only_scope_routes_handle_reads(c: &Cluster) {
    let db = c.handle().await;
    let outside = served_by(&db).await.unwrap();
    assert_eq!(outside.port, port_of(&c.primary));
    assert!(!outside.replica);
    let name = unique("scoped");
    let (first, second, refused, txn) = read_only_scope(async {
        let first = served_by(&db).await.unwrap();
        let second = served_by(&db).await.unwrap();
        let refused = Banners::insert(&db, new_banner(&name)).await.unwrap_err();
        let txn = db.begin().await.unwrap();
        let in_txn = served_by(&txn).await.unwrap();
        txn.commit().await.unwrap();
        (first, second, refused, in_txn)
    })
    .await;
    assert!(
        first.replica && txn.replica,
        "scope reads must run on a replica"
    );
    assert_eq!(first, second, "a scope stays on one replica");
    assert!(ReplicaError::from_db_err(refused).is_write_in_read_only());
    assert_eq!(count_named(&db, &name).await, 0);
}

pub async fn snapshot_units_run_in_one_read_only_transaction(c: &Cluster) {
    let db = c.handle().await;
    let unit = db.begin_unit::<sea_orm_replica::ReadOnly>(UnitOptions::new().snapshot());
    let served = served_by(&unit).await.unwrap();
    assert!(served.replica);
    if c.backend == DbBackend::Postgres {
        let row = unit
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT current_setting('transaction_isolation') AS iso",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get::<String>("", "iso").unwrap(), "repeatable read");
        assert!(server_refuses_hidden_write(&unit).await);
    }
    unit.commit().await.unwrap();
}

/// A primary URL that points at a replica is refused before any migration can run: by
/// `connect()` itself (its first round of checks asks every node its role). A primary demoted
/// after `connect()` is refused by `migrate` (`MigrationOnReplica`, in tests/health.rs).
pub async fn migrations_refuse_a_replica(c: &Cluster) {
    let err = ReplicatedDatabase::builder()
        .primary_node(NodeConfig::new(&c.replicas[0]).name("oops-a-replica"))
        .connect()
        .await
        .expect_err("a replica as the primary");
    assert!(
        matches!(&err, ReplicaError::PrimaryIsReplica { node, .. } if node == "oops-a-replica"),
        "{err}"
    );
}

pub async fn migrations_wait_for_every_replica(c: &Cluster) {
    let db = c.handle_with(c.all_replicas()).await;
    let report = db
        .migrate::<migration::Migrator>(
            sea_orm_replica::MigrateOptions::new().wait_for_replicas(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(report.node, "primary");
    assert_eq!(report.replicas_caught_up.len(), c.all_replicas().len());
    assert!(report.position.is_some());
    // and the schema is there on every replica, as the replicas themselves say
    for replica in db.replicas() {
        let n = replica
            .connection()
            .query_one_raw(Statement::from_string(
                db.backend(),
                "SELECT COUNT(*) AS n FROM banner",
            ))
            .await;
        assert!(n.is_ok(), "{} has no banner table: {n:?}", replica.name());
    }
}

/// seeds/002: a banner saved, then "not found" on the lagging replica. The read-write unit
/// sees it; the read-only unit on the lagging replica does not (the next issue fixes that).
pub async fn banner_story_on_a_lagging_replica(c: &Cluster) {
    let lagging = c.lagging.clone().expect("a lagging replica");
    let db = c.handle_with(vec![lagging.clone()]).await;
    let name = unique("banner-story");
    let unit = db.begin_read_write();
    let saved = Banners::insert(&unit, new_banner(&name)).await.unwrap();
    unit.commit().await.unwrap();

    let unit = db.begin_read_only();
    let on_replica = Banners::find_by_id(&unit, saved.id).await.unwrap();
    let served = served_by(&unit).await.unwrap();
    drop(unit);
    assert_eq!(served.port, port_of(&lagging));
    assert!(served.replica);
    assert_eq!(
        on_replica, None,
        "the lagging replica already had the banner: lag is not in effect"
    );

    let unit = db.begin_read_write();
    assert_eq!(
        Banners::find_by_id(&unit, saved.id).await.unwrap(),
        Some(saved.clone())
    );
    drop(unit);

    // it does arrive: poll with a deadline
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let unit = db.begin_read_only();
        if Banners::find_by_id(&unit, saved.id)
            .await
            .unwrap()
            .is_some()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lagging replica never replayed the banner"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SeaORM 2.0's nested builder: an author and its banners saved in one call, inside a unit
/// (which it drives through `TransactionTrait`).
pub async fn nested_builder_saves_a_graph_in_a_unit(c: &Cluster) {
    let db = c.handle().await;
    let name = unique("nested-author");
    let unit = db.begin_read_write();
    author::ActiveModel::builder()
        .set_name(name.clone())
        .add_banner(banner::ActiveModel::builder().set_name(format!("{name}-1")))
        .add_banner(banner::ActiveModel::builder().set_name(format!("{name}-2")))
        .save(&unit)
        .await
        .unwrap();
    assert_eq!(unit.node_name(), Some("primary"));
    unit.commit().await.unwrap();
    let who = Authors::find_one_by(&db, author::Column::Name.eq(&*name))
        .await
        .unwrap()
        .expect("author saved");
    assert_eq!(
        Banners::count_by(&db, banner::Column::AuthorId.eq(who.id))
            .await
            .unwrap(),
        2
    );
}

/// Outcome of a run of write→read pairs.
#[derive(Debug, Default)]
struct Pairs {
    stale: usize,
    on_replica: usize,
    total: usize,
}

/// `n` pairs: insert a banner in a read-write unit, then read it at once in a read-only unit,
/// with the write's causal token (`with_token`) or without. Which node served each read is
/// asked of the server.
async fn write_read_pairs(db: &ReplicatedDatabase, n: usize, with_token: bool) -> Pairs {
    let mut out = Pairs::default();
    for i in 0..n {
        let unit = db.begin_read_write();
        let saved = Banners::insert(&unit, new_banner(&format!("pair-{i}")))
            .await
            .unwrap();
        let token = unit.commit_causal().await.unwrap();
        // the token travels as a string, as it would in a cookie
        let token: sea_orm_replica::CausalToken = token.to_string().parse().unwrap();
        let options = if with_token {
            UnitOptions::new().after(&token)
        } else {
            UnitOptions::new()
        };
        let unit = db.begin_unit::<sea_orm_replica::ReadOnly>(options);
        let found = Banners::find_by_id(&unit, saved.id).await.unwrap();
        let served = served_by(&unit).await.unwrap();
        out.total += 1;
        out.stale += usize::from(found.is_none());
        out.on_replica += usize::from(served.replica);
    }
    out
}

pub async fn read_your_writes_with_causal_tokens(c: &Cluster) {
    let db = c.handle_with(c.all_replicas()).await;
    let with = write_read_pairs(&db, 1000, true).await;
    eprintln!(
        "{:?} with tokens: {} of {} reads stale, {:.1}% served by replicas",
        c.backend,
        with.stale,
        with.total,
        100.0 * with.on_replica as f64 / with.total as f64
    );
    assert_eq!(
        with.stale, 0,
        "a read with the write's token missed the write"
    );
    assert!(
        with.on_replica > 0,
        "no read with a token was served by a replica"
    );
    if c.backend != DbBackend::Sqlite {
        let without = write_read_pairs(&db, 200, false).await;
        eprintln!(
            "{:?} without tokens: {} of {} reads stale, {:.1}% served by replicas",
            c.backend,
            without.stale,
            without.total,
            100.0 * without.on_replica as f64 / without.total as f64
        );
        assert!(
            without.stale > 0,
            "without tokens some reads should be stale on a replica"
        );
    }
}

pub async fn primary_consistency_reads_the_primary_read_only(c: &Cluster) {
    let db = c.handle().await;
    let unit = db.begin_unit::<sea_orm_replica::ReadOnly>(
        UnitOptions::new().consistency(sea_orm_replica::Consistency::Primary),
    );
    let served = served_by(&unit).await.unwrap();
    assert_eq!(served.port, port_of(&c.primary));
    if c.backend == DbBackend::Sqlite {
        // one file, no server to ask: the primary's own read-only sessions served it
        assert!(
            served.replica,
            "read-only work runs on a query_only session"
        );
        assert_eq!(unit.node_name(), Some("primary"));
    } else {
        assert!(!served.replica);
        assert!(server_refuses_hidden_write(&unit).await);
    }
    assert_eq!(
        unit.route().unwrap().reason,
        sea_orm_replica::RouteReason::PrimaryRequested
    );
    // and a unit that wrote nothing has an empty token, taken without any pool
    let before = db.stats().total_acquisitions();
    let token = db.begin_read_write().commit_causal().await.unwrap();
    assert_eq!(token.position(), &sea_orm_replica::Position::None);
    assert_eq!(db.stats().total_acquisitions(), before);
}

/// Polls `check` until it returns true or `deadline` passes; returns whether it did.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Bounded staleness: a replica whose replay is paused falls behind the bound and is skipped;
/// resumed, it is used again. The node that served is asked of the server.
pub async fn bounded_staleness_skips_a_paused_replica(c: &Cluster) {
    let replica_url = c.replicas[0].clone();
    let db = ReplicatedDatabase::builder()
        .primary_node(NodeConfig::new(&c.primary).name("primary"))
        .replica_node(NodeConfig::new(&replica_url).name("replica-1"))
        .max_lag(Duration::from_millis(300))
        .monitor_interval(Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    super::migrate_once(&db).await;
    let served_replica = || async {
        let unit = db.begin_read_only();
        served_by(&unit).await.unwrap().replica
    };
    assert!(
        eventually(Duration::from_secs(10), served_replica).await,
        "replica never within the bound"
    );

    let control = sea_orm::Database::connect(replica_url.as_str())
        .await
        .unwrap();
    control
        .execute_unprepared("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let skipped = eventually(Duration::from_secs(15), || async {
        Banners::insert(&db, new_banner("staleness")).await.unwrap();
        !served_replica().await
    })
    .await;
    let lag_seen = db.node("replica-1").unwrap().lag();
    control
        .execute_unprepared("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    let used_again = eventually(Duration::from_secs(15), served_replica).await;

    assert!(
        skipped,
        "a paused replica beyond the lag bound was still used"
    );
    assert!(
        lag_seen.is_some_and(|l| l > Duration::from_millis(300)),
        "measured lag: {lag_seen:?}"
    );
    assert!(used_again, "the resumed replica was not used again");
    assert!(db.stats().fallbacks > 0);
}

/// The background monitor measures every replica's lag and replay position.
pub async fn monitor_measures_replica_lag(c: &Cluster) {
    let mut builder = ReplicatedDatabase::builder()
        .primary(&c.primary)
        .monitor_interval(Duration::from_millis(50));
    for url in c.all_replicas() {
        builder = builder.replica(url);
    }
    let db = builder.connect().await.unwrap();
    let measured = eventually(Duration::from_secs(10), || async {
        db.replicas()
            .all(|n| n.lag().is_some() && n.known_position() != sea_orm_replica::Position::None)
    })
    .await;
    let report: Vec<_> = db
        .replicas()
        .map(|n| (n.name().to_owned(), n.lag(), n.known_position()))
        .collect();
    assert!(measured, "not every replica was measured: {report:?}");
}

/// A causal read-write unit (its own connection; the token rides on the COMMIT) behaves like
/// any unit: savepoints released, rolled back, or abandoned by dropping; dropped unfinished,
/// nothing is kept.
pub async fn causal_units_keep_transaction_semantics(c: &Cluster) {
    use sea_orm_replica::ReadWrite;
    let db = c.handle().await;
    let n: Vec<String> = (0..6).map(|i| unique(&format!("causal-{i}"))).collect();
    let unit = db.begin_unit::<ReadWrite>(UnitOptions::new().causal());
    Banners::insert(&unit, new_banner(&n[0])).await.unwrap();
    let inner = unit.begin().await.unwrap();
    Banners::insert(&inner, new_banner(&n[1])).await.unwrap();
    inner.rollback().await.unwrap();
    let inner = unit.begin().await.unwrap();
    Banners::insert(&inner, new_banner(&n[2])).await.unwrap();
    inner.commit().await.unwrap();
    let abandoned = unit.begin().await.unwrap();
    Banners::insert(&abandoned, new_banner(&n[3]))
        .await
        .unwrap();
    drop(abandoned);
    Banners::insert(&unit, new_banner(&n[4])).await.unwrap();
    let token = unit.commit_causal().await.unwrap();
    if c.backend != DbBackend::Sqlite {
        assert_ne!(token.position(), &sea_orm_replica::Position::None);
    }
    let dropped = db.begin_unit::<ReadWrite>(UnitOptions::new().causal());
    Banners::insert(&dropped, new_banner(&n[5])).await.unwrap();
    drop(dropped);
    let mut counts = Vec::new();
    for name in &n {
        counts.push(count_named(&db, name).await);
    }
    assert_eq!(counts, [1, 0, 1, 0, 1, 0]);
    // the token is good for read-your-writes
    let unit = db.begin_unit::<sea_orm_replica::ReadOnly>(UnitOptions::new().after(&token));
    assert_eq!(
        Banners::count_by(&unit, banner::Column::Name.eq(&*n[4]))
            .await
            .unwrap(),
        1
    );
}

/// The status view reports every node with the role its server claims, and the monitor (one
/// task per handle) stops once the handle is dropped.
pub async fn status_reports_nodes_and_monitor_stops_on_drop(c: &Cluster) {
    let mut builder = ReplicatedDatabase::builder()
        .primary(&c.primary)
        .monitor_interval(Duration::from_millis(20));
    for url in c.all_replicas() {
        builder = builder.replica(url);
    }
    let db = builder.connect().await.unwrap();
    let status = db.status();
    let text = status.to_string();
    let primary = status.node("primary").unwrap();
    assert!(
        primary.current_primary && primary.up && !primary.fenced,
        "{text}"
    );
    let expected = match c.backend {
        DbBackend::Sqlite => (ServerRole::Unknown, ServerRole::Unknown),
        _ => (ServerRole::Primary, ServerRole::Replica),
    };
    assert_eq!(primary.server_role, expected.0, "{text}");
    for n in db.replicas() {
        let line = status.node(n.name()).unwrap();
        assert_eq!(line.server_role, expected.1, "{text}");
        assert!(line.up && !line.current_primary, "{text}");
        assert!(text.contains(n.name()));
    }
    if c.backend == DbBackend::Sqlite {
        return; // no monitor: SQLite's reader shares the writer's file
    }
    let node = db.primary(); // outlives the handle
    assert!(
        eventually(Duration::from_secs(10), || async { node.checks() >= 5 }).await,
        "the monitor checks every 20 ms"
    );
    drop(db);
    // give a check that was under way time to finish, then watch 25 intervals for more
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after_drop = node.checks();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        node.checks(),
        after_drop,
        "the monitor stopped with the handle"
    );
}

/// Begin/commit form: a read-only unit whose node fails at its first statement (nothing
/// returned yet) moves to another replica, and the failed node is out of routing.
pub async fn first_statement_moves_off_a_failed_replica(c: &Cluster) {
    if c.backend == DbBackend::Sqlite {
        return; // one file: no other replica to move to
    }
    let replicas = c.all_replicas();
    let (doomed_url, live_url) = (&replicas[0], replicas.last().unwrap());
    let doomed = sea_orm::Database::connect(doomed_url.as_str())
        .await
        .unwrap();
    let db = ReplicatedDatabase::builder()
        .primary(&c.primary)
        .replica_connection("doomed", doomed.clone())
        .replica_node(NodeConfig::new(live_url).name("live"))
        .monitor_interval(Duration::from_secs(3600)) // only the unit can notice
        .connect()
        .await
        .unwrap();
    // the node fails after the handle was built: its read-only sessions (the pool read-only
    // units use, opened with the handed pool's options) go away
    db.node("doomed")
        .unwrap()
        .read_connection()
        .close_by_ref()
        .await
        .unwrap();
    let unit = db.begin_read_only();
    let served = served_by(&unit).await.expect("moved to the live replica");
    assert_eq!(unit.node_name(), Some("live"));
    assert!(
        served.replica && served.port == port_of(live_url),
        "{served:?}"
    );
    assert!(db.node("doomed").unwrap().is_down());
    assert_eq!(db.node("doomed").unwrap().in_flight(), 0);
    assert_eq!(db.node("live").unwrap().in_flight(), 1);
    unit.commit().await.unwrap();
    assert_eq!(db.node("live").unwrap().in_flight(), 0);
}
