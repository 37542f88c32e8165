//! The banner service over real replicas: a client that keeps cookies always reads its writes.

#[macro_use]
mod common;
#[path = "../examples/banner_service/app.rs"]
#[allow(dead_code)]
mod app;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{cluster, Cluster};
use sea_orm::DbBackend;
use tower::ServiceExt;

/// Sends one request; returns the status, the body and any `Set-Cookie` pair.
async fn send(
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, serde_json::Value, Option<String>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let cookie = resp
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, body, cookie)
}

/// `n` POST→GET pairs; with `keep_cookies`, the client sends back what it was given.
/// Returns how many GETs did not find the banner just created.
async fn pairs(app: &axum::Router, n: usize, keep_cookies: bool) -> usize {
    let mut jar: Option<String> = None;
    let mut stale = 0;
    for i in 0..n {
        let mut post = Request::post("/banners").header(header::CONTENT_TYPE, "application/json");
        if let Some(c) = jar.as_ref().filter(|_| keep_cookies) {
            post = post.header(header::COOKIE, c);
        }
        let (status, body, cookie) = send(
            app,
            post.body(Body::from(format!(r#"{{"name":"http-{i}"}}"#)))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert!(cookie.is_some(), "a write must send the causal token back");
        jar = cookie;
        let id = body["id"].as_i64().unwrap();
        let mut get = Request::get(format!("/banners/{id}"));
        if let Some(c) = jar.as_ref().filter(|_| keep_cookies) {
            get = get.header(header::COOKIE, c);
        }
        let (status, body, _) = send(app, get.body(Body::empty()).unwrap()).await;
        match status {
            StatusCode::OK => assert_eq!(body["id"].as_i64(), Some(id)),
            StatusCode::NOT_FOUND => stale += 1,
            other => panic!("GET /banners/{id}: {other}"),
        }
    }
    stale
}

async fn cookie_clients_read_their_writes(c: &Cluster) {
    let db = c.handle_with(c.all_replicas()).await;
    let app = app::app(db.clone());
    let before = db.stats();
    let stale = pairs(&app, 300, true).await;
    let after = db.stats();
    let replica_units: u64 = after
        .nodes
        .iter()
        .filter(|n| n.role == sea_orm_replica::Role::Replica)
        .map(|n| n.units)
        .sum::<u64>()
        - before
            .nodes
            .iter()
            .filter(|n| n.role == sea_orm_replica::Role::Replica)
            .map(|n| n.units)
            .sum::<u64>();
    eprintln!("{:?} HTTP with cookies: {stale} of 300 GETs stale; {replica_units} of 300 GETs on replicas", c.backend);
    assert_eq!(stale, 0, "a cookie-keeping client missed its own write");
    assert!(
        replica_units > 0,
        "no GET with a token was served by a replica"
    );
    if c.backend == DbBackend::Postgres {
        let stale = pairs(&app, 100, false).await;
        eprintln!(
            "{:?} HTTP without cookies: {stale} of 100 GETs stale",
            c.backend
        );
        assert!(
            stale > 0,
            "without the cookie some GETs should miss on the lagging replica"
        );
    }
    // and the list endpoint works (handle reads in a read-only request)
    let (status, body, _) = send(&app, Request::get("/banners").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.as_array().is_some_and(|a| !a.is_empty()));
}

#[tokio::test]
async fn postgres_cookie_clients_read_their_writes() {
    let Some(c) = cluster(DbBackend::Postgres) else {
        return;
    };
    cookie_clients_read_their_writes(&c).await;
}

#[tokio::test]
async fn mariadb_cookie_clients_read_their_writes() {
    let Some(c) = cluster(DbBackend::MySql) else {
        return;
    };
    cookie_clients_read_their_writes(&c).await;
}

/// Sticky-after-write: no positions; for the window after a write, the client's reads go to
/// the primary. No stale reads, and no replica serves them.
#[tokio::test]
async fn postgres_sticky_clients_read_their_writes_on_the_primary() {
    let Some(c) = cluster(DbBackend::Postgres) else {
        return;
    };
    let db = c.handle_with(c.all_replicas()).await;
    let layer = sea_orm_replica::web::CausalLayer::new().sticky(std::time::Duration::from_secs(5));
    let app = app::app_with(db.clone(), layer);
    let primary_units = |db: &sea_orm_replica::ReplicatedDatabase| {
        db.stats().node("primary").map_or(0, |n| n.units)
    };
    let before = primary_units(&db);
    let stale = pairs(&app, 100, true).await;
    let on_primary = primary_units(&db) - before;
    eprintln!("Postgres HTTP sticky: {stale} of 100 GETs stale; {on_primary} units on the primary (100 POST + 100 GET)");
    assert_eq!(stale, 0);
    assert_eq!(
        on_primary, 200,
        "every GET in the sticky window must run on the primary"
    );
}

/// The sharded mode over two PostgreSQL shards (shard a reads from its delayed replica too):
/// a client that keeps cookies reads every write at once, on whichever shard it went to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sharded_cookie_clients_read_their_writes() {
    use sea_orm_replica::shard::ShardedDatabase;
    use sea_orm_replica::{MigrateOptions, ReplicatedDatabase};
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    let (Some(a1), Some(a2), Some(lag), Some(b1), Some(b2)) = (
        var("SOR_PG_PRIMARY_URL"),
        var("SOR_PG_REPLICA_URL"),
        var("SOR_PG_LAGGING_URL"),
        var("SOR_PG_SHARD_B_PRIMARY_URL"),
        var("SOR_PG_SHARD_B_REPLICA_URL"),
    ) else {
        assert!(
            std::env::var("SOR_REQUIRE_CLUSTER").is_err(),
            "no PostgreSQL shard clusters"
        );
        return;
    };
    let shards = ShardedDatabase::builder()
        .shard(
            "a",
            ReplicatedDatabase::builder()
                .primary(a1)
                .replica(a2)
                .replica(lag),
        )
        .shard("b", ReplicatedDatabase::builder().primary(b1).replica(b2))
        .connect()
        .await
        .unwrap();
    shards
        .migrate::<migration::Migrator>(
            MigrateOptions::new().wait_for_replicas(std::time::Duration::from_secs(30)),
        )
        .await
        .into_result()
        .unwrap();
    let app = app::sharded_app(shards.clone());
    let mut jar: Option<String> = None;
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..30 {
        let author = 1000 + i % 7;
        seen.insert(shards.locate(author).await.unwrap().to_owned());
        let mut post = Request::post(format!("/authors/{author}/banners"))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(c) = &jar {
            post = post.header(header::COOKIE, c);
        }
        let (status, body, cookie) = send(
            &app,
            post.body(Body::from(format!(r#"{{"name":"s-{i}"}}"#)))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        jar = cookie.or(jar);
        let id = body["id"].as_i64().unwrap();
        let get = Request::get(format!("/authors/{author}/banners/{id}"))
            .header(header::COOKIE, jar.clone().unwrap())
            .body(Body::empty())
            .unwrap();
        let (status, body, _) = send(&app, get).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "read-your-writes on shard of author {author}"
        );
        assert_eq!(body["id"].as_i64(), Some(id));
    }
    assert_eq!(seen.len(), 2, "the authors spread over both shards");
    // a path that names no shard is a 404 from the layer, before any handler
    let (status, _, _) = send(
        &app,
        Request::get("/authors/abc/banners")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // the fan-out list merges both shards
    // with the cookie: every shard's replica has the client's writes
    let list = Request::get("/banners")
        .header(header::COOKIE, jar.clone().unwrap())
        .body(Body::empty())
        .unwrap();
    let (status, body, _) = send(&app, list).await;
    assert_eq!(status, StatusCode::OK);
    let authors: std::collections::BTreeSet<i64> = body
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["author_id"].as_i64())
        .collect();
    assert!(authors.len() >= 2, "{authors:?} {body}");
}

/// Views counted write-behind: `POST /banners/{id}/views` answers 202 with a ticket once a
/// private Redis holds it; `GET …/views?after=TICKET` waits for it and reads it on a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_are_counted_write_behind_and_read_back() {
    let Some(c) = cluster(DbBackend::Postgres) else {
        return;
    };
    let db = c.handle().await;
    let redis = tokio::task::spawn_blocking(common::redis::PrivateRedis::start)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("private redis: {e}"));
    let broker = sea_orm_replica::queue::RedisBroker::connect(redis.url(), "banner_views")
        .await
        .unwrap();
    let queue = app::views_queue(broker).unwrap();
    let worker = queue.worker(db.clone()).spawn();
    let app = app::app_with_views(db.clone(), queue);
    let banner = 900_000 + (std::process::id() % 10_000) as i64;
    let mut ticket = String::new();
    for _ in 0..3 {
        let (status, body, _) = send(
            &app,
            Request::post(format!("/banners/{banner}/views"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ticket = body["ticket"].as_str().unwrap().to_owned();
    }
    let before = db.stats();
    let (status, body, _) = send(
        &app,
        Request::get(format!("/banners/{banner}/views?after={ticket}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["views"].as_i64(),
        Some(3),
        "all three views, read after the last"
    );
    let after = db.stats();
    let on = |s: &sea_orm_replica::StatsSnapshot, node: &str| s.node(node).map_or(0, |n| n.units);
    assert_eq!(
        on(&after, "replica-1") - on(&before, "replica-1"),
        1,
        "the read ran on the replica"
    );
    // with the pending cookie instead of `after`: the layer waits for the client's views
    let mut jar: Option<String> = None;
    for _ in 0..2 {
        let mut post = Request::post(format!("/banners/{banner}/views"));
        if let Some(c) = &jar {
            post = post.header(header::COOKIE, c);
        }
        let (status, _, cookie) = send(&app, post.body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let cookie = cookie.expect("the pending cookie");
        assert!(cookie.starts_with("sor_pending="), "{cookie}");
        jar = Some(cookie);
    }
    let (status, body, cookie) = send(
        &app,
        Request::get(format!("/banners/{banner}/views"))
            .header(header::COOKIE, jar.clone().unwrap())
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["views"].as_i64(),
        Some(5),
        "the cookie's two views counted"
    );
    assert_eq!(
        cookie.as_deref(),
        Some("sor_pending="),
        "applied tickets leave the cookie"
    );
    // a forged pending cookie is ignored, as if absent
    let forged = jar.unwrap().replace("sor_pending=", "sor_pending=x");
    let (status, _, _) = send(
        &app,
        Request::get(format!("/banners/{banner}/views"))
            .header(header::COOKIE, forged)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // a ticket that is not one is the client's mistake
    let (status, _, _) = send(
        &app,
        Request::get(format!("/banners/{banner}/views?after=1%27%20OR%201=1"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // without a queue, the route says so instead of writing on the request path
    let (status, _, _) = send(
        &app::app(db.clone()),
        Request::post(format!("/banners/{banner}/views"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    worker.stop().await;
}
