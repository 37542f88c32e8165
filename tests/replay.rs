//! Units with an identity, on real servers (PostgreSQL, MariaDB, SQLite): the identity is
//! recorded in `sor_applied` by the transaction that commits, a second unit with the same
//! identity is refused by the server and leaves nothing behind, and the replayed closure
//! returns what its committed run returned. The failover paths (a primary stopped and a
//! replica promoted; a `COMMIT` whose answer is lost) are in `tests/faults.rs`.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::{cluster, sqlite, unique, Cluster};
use entity::banner;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr,
    EntityTrait, PaginatorTrait, QueryFilter, Statement, TransactionError,
};
use sea_orm_replica::{ReplicaError, ReplicatedDatabase, UnitOptions};
use uuid::Uuid;

/// `forget_applied` deletes every old identity on the shared primary: it runs alone.
static FORGETTING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn insert(name: &str) -> banner::ActiveModel {
    banner::ActiveModel {
        name: Set(name.to_owned()),
        ..Default::default()
    }
}

/// Rows named `name` on the primary, as the server says.
async fn rows_named(db: &ReplicatedDatabase, name: &str) -> u64 {
    banner::Entity::find()
        .filter(banner::Column::Name.eq(name))
        .count(db.primary().connection())
        .await
        .expect("count on the primary")
}

/// The run recorded for `id` in `sor_applied` on the primary, read directly.
async fn recorded_run(db: &ReplicatedDatabase, id: Uuid) -> Option<i32> {
    let sql = format!("SELECT attempt FROM sor_applied WHERE id = '{id}'");
    db.primary()
        .connection()
        .query_one_raw(Statement::from_string(db.backend(), sql))
        .await
        .expect("read sor_applied")
        .map(|r| r.try_get::<i32>("", "attempt").expect("attempt"))
}

fn typed<E: std::fmt::Debug>(err: TransactionError<E>) -> ReplicaError {
    match err {
        TransactionError::Connection(e) => ReplicaError::from_db_err(e),
        TransactionError::Transaction(e) => panic!("the closure's own error: {e:?}"),
    }
}

async fn identity_is_recorded_with_the_commit_and_refused_twice(c: Cluster) {
    let _shared = FORGETTING.read().await;
    let db = c.handle().await;
    let id = Uuid::now_v7();
    let name = unique("identity");

    let unit = db.begin_unit::<sea_orm_replica::ReadWrite>(UnitOptions::new().identity(id));
    assert_eq!(unit.identity(), Some(id));
    insert(&name).insert(&unit).await.expect("insert");
    assert!(!db.applied(id).await.unwrap(), "not before the commit");
    unit.commit().await.expect("commit");
    assert!(db.applied(id).await.unwrap());
    assert_eq!(recorded_run(&db, id).await, Some(1), "the server holds it");

    // the same identity again: refused by the server, its write rolled back with it
    let again = db.begin_unit::<sea_orm_replica::ReadWrite>(UnitOptions::new().identity(id));
    insert(&name).insert(&again).await.expect("insert");
    let err = ReplicaError::from_db_err(again.commit().await.unwrap_err());
    assert!(
        matches!(err, ReplicaError::AlreadyApplied { id: got } if got == id),
        "{err:?}"
    );
    assert_eq!(
        rows_named(&db, &name).await,
        1,
        "the second unit left nothing"
    );

    // a unit that ran nothing still records its identity (a command that changes nothing
    // is applied all the same)
    let empty = Uuid::now_v7();
    db.begin_unit::<sea_orm_replica::ReadWrite>(UnitOptions::new().identity(empty))
        .commit()
        .await
        .expect("empty commit");
    assert!(db.applied(empty).await.unwrap());

    // rolled back: not recorded; and units without identity record nothing
    let rolled = Uuid::now_v7();
    let unit = db.begin_unit::<sea_orm_replica::ReadWrite>(UnitOptions::new().identity(rolled));
    insert(&unique("rolled")).insert(&unit).await.unwrap();
    unit.rollback().await.unwrap();
    assert!(!db.applied(rolled).await.unwrap());
    assert!(!db.applied(Uuid::now_v7()).await.unwrap());
}

async fn replayed_closure_runs_once_and_returns_its_value(c: Cluster) {
    let _shared = FORGETTING.read().await;
    let db = c.handle().await;
    let name = unique("replayed");
    let runs = Arc::new(AtomicU32::new(0));
    let saved = db
        .read_write_replayed(|unit| {
            let name = name.clone();
            let runs = runs.clone();
            Box::pin(async move {
                runs.fetch_add(1, Ordering::Relaxed);
                insert(&name).insert(unit).await
            })
        })
        .await
        .expect("replayed unit");
    assert_eq!(runs.load(Ordering::Relaxed), 1);
    assert_eq!(saved.name, name);
    let found = banner::Entity::find_by_id(saved.id)
        .one(db.primary().connection())
        .await
        .unwrap();
    assert_eq!(found.map(|b| b.name), Some(name.clone()));

    // a closure that fails by itself is not run again, and records nothing
    let id = Uuid::now_v7();
    let runs = Arc::new(AtomicU32::new(0));
    let err = db
        .read_write_replayed_as(id, |unit| {
            let name = name.clone();
            let runs = runs.clone();
            Box::pin(async move {
                runs.fetch_add(1, Ordering::Relaxed);
                insert(&name).insert(unit).await?;
                Err::<(), _>(DbErr::Custom("the caller's own reason".into()))
            })
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransactionError::Transaction(DbErr::Custom(ref m)) if m == "the caller's own reason"),
        "{err:?}"
    );
    assert_eq!(runs.load(Ordering::Relaxed), 1);
    assert!(!db.applied(id).await.unwrap());
    assert_eq!(rows_named(&db, &name).await, 1, "its insert rolled back");

    // a command applied once: the second delivery is refused and changes nothing
    let command = Uuid::now_v7();
    let counted = unique("command");
    for delivery in 0..3 {
        let result = db
            .read_write_replayed_as(command, |unit| {
                let counted = counted.clone();
                Box::pin(async move { insert(&counted).insert(unit).await.map(|_| ()) })
            })
            .await;
        match (delivery, result) {
            (0, Ok(())) => {}
            (_, Err(err)) if delivery > 0 => {
                let err = typed(err);
                assert!(
                    matches!(err, ReplicaError::AlreadyApplied { id } if id == command),
                    "{err:?}"
                );
            }
            (d, other) => panic!("delivery {d}: {other:?}"),
        }
    }
    assert_eq!(rows_named(&db, &counted).await, 1, "applied exactly once");
    assert_eq!(recorded_run(&db, command).await, Some(1));
}

async fn forgotten_identities_are_accepted_again(c: Cluster) {
    let _alone = FORGETTING.write().await;
    let db = c.handle().await;
    let id = Uuid::now_v7();
    db.read_write_replayed_as(id, |unit| {
        Box::pin(async move { insert("forget me").insert(unit).await.map(|_| ()) })
    })
    .await
    .unwrap();
    // a retention of an hour keeps it
    db.forget_applied(std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(db.applied(id).await.unwrap());
    // a retention of zero deletes everything recorded before now
    tokio::time::sleep(std::time::Duration::from_millis(5)).await; // the clock moves past it
    assert!(db.forget_applied(std::time::Duration::ZERO).await.unwrap() >= 1);
    assert!(!db.applied(id).await.unwrap());
}

/// The caller drops a replayed unit's future at many points (in BEGIN, in a statement, with
/// the COMMIT in flight), then runs it again under the same identity: applied exactly once,
/// whichever run committed.
async fn a_dropped_replayed_unit_run_again_under_its_identity_applies_once(c: Cluster) {
    let _shared = FORGETTING.read().await;
    let db = c.handle().await;
    let mut again_refused = 0;
    for step in 0..40u64 {
        let id = Uuid::now_v7();
        let name = unique("dropped");
        let run = || {
            let name = name.clone();
            db.read_write_replayed_as(id, move |unit| {
                let name = name.clone();
                Box::pin(async move { insert(&name).insert(unit).await.map(drop) })
            })
        };
        let cut = std::time::Duration::from_micros(step * 100);
        let first = tokio::time::timeout(cut, run()).await;
        let first_committed = matches!(first, Ok(Ok(())));
        match run().await {
            Ok(()) => assert!(!first_committed, "step {step}: applied twice"),
            Err(err) => {
                let err = typed(err);
                assert!(
                    matches!(err, ReplicaError::AlreadyApplied { id: got } if got == id),
                    "step {step}: {err:?}"
                );
                again_refused += 1;
            }
        }
        assert_eq!(rows_named(&db, &name).await, 1, "step {step}: applied once");
        assert!(db.applied(id).await.unwrap(), "step {step}");
    }
    eprintln!(
        "{}: 40 drops at 0..4 ms; the second run found the first committed {again_refused} times",
        c.backend.as_str()
    );
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(c) = cluster(DbBackend::Postgres) { super::$name(c).await }
            })*
        }
        mod mariadb {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(c) = cluster(DbBackend::MySql) { super::$name(c).await }
            })*
        }
        mod sqlite {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(c) = sqlite() { super::$name(c).await }
            })*
        }
    };
}

on_every_backend!(
    identity_is_recorded_with_the_commit_and_refused_twice,
    replayed_closure_runs_once_and_returns_its_value,
    forgotten_identities_are_accepted_again,
    a_dropped_replayed_unit_run_again_under_its_identity_applies_once,
);
