//! Synchronous visibility (seeds/003) on PostgreSQL. With replica1 a synchronous standby, a
//! read-write unit with `synchronous_visibility()` returns from its commit only once replica1
//! has applied it, so the very next read there sees the write, with no token. In its own test
//! binary: making a standby synchronous slows every commit on the primary while it lasts.

#[macro_use]
mod common;

use std::time::Duration;

use common::scenarios::{eventually, new_banner, Banners};
use common::{cluster, served_by};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_orm_replica::{ReadWrite, ReplicaError, Repository, UnitOptions};

async fn set_sync_standby(primary: &sea_orm::DatabaseConnection, names: Option<&str>) {
    let sql = match names {
        Some(n) => format!("ALTER SYSTEM SET synchronous_standby_names = '{n}'"),
        None => "ALTER SYSTEM RESET synchronous_standby_names".into(),
    };
    primary.execute_unprepared(&sql).await.unwrap();
    primary
        .execute_unprepared("SELECT pg_reload_conf()")
        .await
        .unwrap();
}

#[tokio::test]
async fn synchronous_visibility_makes_the_next_replica_read_see_the_write() {
    let Some(c) = cluster(DbBackend::Postgres) else {
        return;
    };
    let admin = sea_orm::Database::connect(c.primary.as_str())
        .await
        .unwrap();
    set_sync_standby(&admin, Some("replica1")).await;
    let synced = eventually(Duration::from_secs(20), || async {
        let row = admin
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT count(*)::int8 AS n FROM pg_stat_replication WHERE application_name = 'replica1' AND sync_state = 'sync'",
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "n").unwrap() == 1
    })
    .await;

    let db = c.handle_with(vec![c.replicas[0].clone()]).await;
    let (mut stale, mut on_replica, mut stale_without) = (0, 0, 0);
    for i in 0..200 {
        let unit = db.begin_unit::<ReadWrite>(UnitOptions::new().synchronous_visibility());
        let saved = Banners::insert(&unit, new_banner(&format!("sync-{i}")))
            .await
            .unwrap();
        unit.commit().await.unwrap();
        let read = db.begin_read_only();
        stale += usize::from(
            Banners::find_by_id(&read, saved.id)
                .await
                .unwrap()
                .is_none(),
        );
        on_replica += usize::from(served_by(&read).await.unwrap().replica);

        let unit = db.begin_read_write();
        let saved = Banners::insert(&unit, new_banner(&format!("async-{i}")))
            .await
            .unwrap();
        unit.commit().await.unwrap();
        let read = db.begin_read_only();
        stale_without += usize::from(
            Banners::find_by_id(&read, saved.id)
                .await
                .unwrap()
                .is_none(),
        );
    }
    set_sync_standby(&admin, None).await;
    eprintln!(
        "synchronous visibility: {stale} of 200 replica reads stale ({on_replica} on the replica); \
         plain commits: {stale_without} of 200 stale"
    );
    assert!(synced, "replica1 never became a synchronous standby");
    assert_eq!(
        stale, 0,
        "a read right after a remote_apply commit missed the write"
    );
    assert_eq!(on_replica, 200, "every read must have run on the replica");
}

#[tokio::test]
async fn synchronous_visibility_is_a_typed_error_on_mariadb() {
    let Some(c) = cluster(DbBackend::MySql) else {
        return;
    };
    let db = c.handle().await;
    let unit = db.begin_unit::<ReadWrite>(UnitOptions::new().synchronous_visibility());
    let err = Banners::insert(&unit, new_banner("never"))
        .await
        .unwrap_err();
    let err = ReplicaError::from_db_err(err);
    assert!(
        matches!(&err, ReplicaError::Config(m) if m.contains("synchronous visibility needs PostgreSQL")),
        "{err:?}"
    );
}
