//! Fast causal reads (MaxScale's `causal_reads=fast`): once the monitor has measured that the
//! only replica lags more than a token read may wait, token reads go to the primary at once
//! instead of waiting out `causal_wait` on it every time. Checked by route reason and by the
//! server that answered, on the PostgreSQL replica 500 ms behind
//! (`recovery_min_apply_delay`, `$SOR_PG_LAGGING_URL`).

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{cluster, served_by};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_orm_replica::{
    CausalToken, NodeConfig, ReadOnly, ReplicatedDatabase, RouteReason, UnitOptions,
};

const CAUSAL_WAIT: Duration = Duration::from_millis(100);

/// A write committed with a causal token.
async fn write(db: &ReplicatedDatabase) -> CausalToken {
    let unit = db.begin_read_write();
    unit.execute_raw(Statement::from_string(
        DbBackend::Postgres,
        "INSERT INTO banner (name) VALUES ('fast-causal')",
    ))
    .await
    .unwrap();
    unit.commit_causal().await.unwrap()
}

/// A read after `token` (waiting at most `wait`, default the handle's): why it went where it
/// went, and whether the server that ran it is a replica.
async fn read_after(
    db: &ReplicatedDatabase,
    token: &CausalToken,
    wait: Option<Duration>,
) -> (RouteReason, bool) {
    let mut options = UnitOptions::new().after(token);
    if let Some(wait) = wait {
        options = options.max_wait(wait);
    }
    let unit = db.begin_unit::<ReadOnly>(options);
    let served = served_by(&unit).await.unwrap();
    (unit.route().unwrap().reason, served.replica)
}

#[tokio::test]
async fn postgres_token_reads_skip_a_replica_too_far_behind() {
    let Some(c) = cluster(DbBackend::Postgres) else {
        return;
    };
    let Some(lagging) = c.lagging.clone() else {
        panic!("the PostgreSQL cluster has a lagging replica");
    };
    let db = ReplicatedDatabase::builder()
        .primary_node(NodeConfig::new(&c.primary).name("primary"))
        .replica_node(NodeConfig::new(&lagging).name("lagging"))
        .causal_wait(CAUSAL_WAIT)
        .monitor_interval(Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    common::migrate_once(&db).await;

    // best effort (others may be writing to the shared cluster): let the replica catch up, so
    // that the monitor first sees it as not lagging and has to learn
    let idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(3)
        && db
            .node("lagging")
            .and_then(|n| n.lag())
            .is_none_or(|lag| lag > CAUSAL_WAIT)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // steady writes until the monitor has measured the lag
    let start = Instant::now();
    let mut learning: Vec<RouteReason> = Vec::new();
    loop {
        let token = write(&db).await;
        let lag = db.node("lagging").and_then(|n| n.lag());
        if lag.is_some_and(|lag| lag > CAUSAL_WAIT) {
            eprintln!("monitor measured {lag:?} after {:?}", start.elapsed());
            break;
        }
        learning.push(read_after(&db, &token, None).await.0);
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the monitor never measured the lag (last: {lag:?})"
        );
    }
    eprintln!("while learning: {learning:?}");
    assert!(
        learning.len() <= 20,
        "the monitor took {} token reads to learn the lag",
        learning.len()
    );

    // now every token read goes to the primary at once: no ask, no wait
    const N: usize = 50;
    let mut fast = 0;
    let mut on_replica = 0;
    let mut others = Vec::new();
    for _ in 0..N {
        let token = write(&db).await;
        let (reason, replica) = read_after(&db, &token, None).await;
        match reason {
            RouteReason::TooFarBehind => fast += 1,
            other => others.push(other),
        }
        on_replica += usize::from(replica);
    }
    eprintln!(
        "with only a replica 500 ms behind and causal_wait {CAUSAL_WAIT:?}: {fast} of {N} token reads straight to the primary, {on_replica} on the replica, others: {others:?}"
    );
    assert_eq!(
        fast, N,
        "token reads waited on a replica known to be too far behind"
    );
    assert_eq!(on_replica, 0);
    assert!(db.stats().fallbacks >= N as u64, "counted as fallbacks");

    // a read that may wait longer than the lag still waits, and the replica serves it
    let mut waited = 0;
    for _ in 0..3 {
        let token = write(&db).await;
        let (reason, replica) = read_after(&db, &token, Some(Duration::from_secs(3))).await;
        eprintln!("with a 3 s wait: {reason:?}, replica: {replica}");
        waited += usize::from(
            replica && matches!(reason, RouteReason::WaitedForReplay | RouteReason::CaughtUp),
        );
    }
    assert_eq!(
        waited, 3,
        "a read that can wait long enough must still use the replica"
    );
}
