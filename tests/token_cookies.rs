//! Token cookies a client cannot forge to shift load: GET load carrying forged cookies reaches
//! the primary no more often than honest load does. Every read reports which server answered
//! (`inet_server_port()`/`@@port`), on the PostgreSQL cluster with both replicas (one of them
//! 500 ms behind) and on the MariaDB cluster.

#[macro_use]
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, Request, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{cluster, port_of, served_by, Cluster};
use entity::banner;
use hmac::{Hmac, KeyInit, Mac};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, DbBackend, EntityTrait};
use sea_orm_replica::web::{CausalLayer, DEFAULT_COOKIE};
use sea_orm_replica::{NodeConfig, ReplicaError, ReplicatedDatabase};
use serde::Deserialize;
use sha2::Sha256;
use tower::ServiceExt;

const KEY: [u8; 32] = *b"0123456789abcdef0123456789abcdef";
const OTHER_KEY: [u8; 32] = *b"fedcba9876543210fedcba9876543210";

async fn handle(c: &Cluster) -> ReplicatedDatabase {
    let mut builder =
        ReplicatedDatabase::builder().primary_node(NodeConfig::new(&c.primary).name("primary"));
    for (i, url) in c.all_replicas().into_iter().enumerate() {
        builder = builder.replica_node(NodeConfig::new(url).name(format!("replica-{}", i + 1)));
    }
    let db = builder
        .connect()
        .await
        .expect("connect to the test cluster");
    common::migrate_once(&db).await;
    db
}

#[derive(Deserialize)]
struct Id {
    id: Option<i64>,
}

/// `POST /write` inserts a banner (read-write, so the layer sends a token back) and returns its
/// id; `GET /who?id=…` answers, from a read-only unit, which server ran it and whether the
/// banner is there.
fn app(db: ReplicatedDatabase, layer: CausalLayer) -> Router {
    async fn write(State(db): State<ReplicatedDatabase>) -> (StatusCode, Json<serde_json::Value>) {
        let unit = db.begin_read_write();
        let saved = banner::ActiveModel {
            name: Set("token-cookie".into()),
            ..Default::default()
        }
        .insert(&unit)
        .await
        .unwrap();
        unit.commit().await.unwrap();
        let id = i64::from(saved.id);
        (StatusCode::CREATED, Json(serde_json::json!({ "id": id })))
    }
    async fn who(
        State(db): State<ReplicatedDatabase>,
        Query(q): Query<Id>,
    ) -> Json<serde_json::Value> {
        let unit = db.begin_read_only();
        let served = served_by(&unit).await.unwrap();
        let found = match q.id {
            Some(id) => banner::Entity::find_by_id(i32::try_from(id).unwrap())
                .one(&unit)
                .await
                .unwrap()
                .is_some(),
            None => true,
        };
        let reason = unit.route().map(|r| r.reason.as_str()).unwrap_or_default();
        Json(serde_json::json!({
            "port": served.port, "replica": served.replica, "found": found, "reason": reason,
        }))
    }
    Router::new()
        .route("/write", post(write))
        .route("/who", get(who))
        .with_state(db)
        .layer(layer)
}

/// What a GET found out.
#[derive(Debug)]
struct Answer {
    port: i64,
    found: bool,
}

async fn get_who(app: &Router, cookie: Option<&str>, id: Option<i64>) -> Answer {
    let uri = match id {
        Some(id) => format!("/who?id={id}"),
        None => "/who".to_owned(),
    };
    let mut req = Request::get(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "a forged cookie is never an error page"
    );
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    Answer {
        port: body["port"].as_i64().unwrap(),
        found: body["found"].as_bool().unwrap(),
    }
}

/// POSTs a write; returns the banner's id and the `name=value` cookie pair sent back.
async fn post_write(app: &Router, cookie: Option<&str>) -> (i64, String) {
    let mut req = Request::post("/write");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let cookie = resp
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a write sends a cookie back")
        .to_owned();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    (body["id"].as_i64().unwrap(), cookie)
}

/// A value signed as the layer documents it (`payload.expiry.mac`): what a client holding the
/// key (leaked) could make.
fn sign(key: &[u8], kind: &str, payload: &str) -> String {
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let expiry = format!("{expires:x}");
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in [
        b"sor-causal/1".as_slice(),
        kind.as_bytes(),
        expiry.as_bytes(),
    ] {
        mac.update(part);
        mac.update(b".");
    }
    mac.update(payload.as_bytes());
    let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes().as_slice());
    format!("{DEFAULT_COOKIE}={payload}.{expiry}.{tag}")
}

fn random_value(len: usize) -> String {
    const SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:";
    (0..len)
        .map(|_| SAFE[fastrand::usize(..SAFE.len())] as char)
        .collect()
}

/// The cookie (if any) a client sends with its `i`-th GET.
type CookieFor = Box<dyn Fn(usize) -> Option<String>>;

/// Runs `n` GETs with the cookies `cookie(i)` gives; returns how many the primary served.
async fn primary_reads(
    app: &Router,
    primary_port: i64,
    n: usize,
    mut cookie: impl FnMut(usize) -> Option<String>,
) -> usize {
    let mut on_primary = 0;
    for i in 0..n {
        let answer = get_who(app, cookie(i).as_deref(), None).await;
        on_primary += usize::from(answer.port == primary_port);
    }
    on_primary
}

/// A token far beyond anything the primary has written: an LSN, or a GTID sequence number.
fn far_future(backend: DbBackend, i: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("p:{:X}", 0xFF_0000_0000u64 + i as u64),
        _ => format!("m:0-1-{}", 9_000_000_000u64 + i as u64),
    }
}

async fn forged_cookies_do_not_shift_reads_to_the_primary(c: &Cluster) {
    let backend = c.backend;
    let db = handle(c).await;
    let primary_port = port_of(&c.primary);
    let app = app(db.clone(), CausalLayer::new().signing_key(KEY).unwrap());
    let other = app_with_key(&db, OTHER_KEY);
    const N: usize = 100;

    // honest load: a client writes, then reads with the cookie it got; and cookie-less reads
    let mut honest_primary = 0;
    let mut stale = 0;
    for _ in 0..N {
        let (id, cookie) = post_write(&app, None).await;
        let answer = get_who(&app, Some(&cookie), Some(id)).await;
        honest_primary += usize::from(answer.port == primary_port);
        stale += usize::from(!answer.found);
    }
    honest_primary += primary_reads(&app, primary_port, N, |_| None).await;
    let honest_total = 2 * N;
    assert_eq!(
        stale, 0,
        "an honest cookie must still give read-your-writes"
    );

    // forged load, N reads of each kind
    let (_, foreign) = post_write(&other, None).await; // signed with another key
    let forged: Vec<(&str, CookieFor)> = vec![
        (
            "random bytes",
            Box::new(|i| Some(format!("{DEFAULT_COOKIE}={}", random_value(8 + i % 80)))),
        ),
        (
            "unsigned far-future token",
            Box::new(move |i| Some(format!("{DEFAULT_COOKIE}={}", far_future(backend, i)))),
        ),
        (
            "token signed with another key",
            Box::new(move |_| Some(foreign.clone())),
        ),
        (
            "far-future position signed with the right key",
            Box::new(move |i| Some(sign(&KEY, "t", &far_future(backend, i)))),
        ),
        (
            "signed token with a bad MAC",
            Box::new(move |_| {
                let mut v = sign(&KEY, "t", &far_future(backend, 0));
                v.pop();
                v.push('A');
                Some(v)
            }),
        ),
    ];
    let mut forged_primary = 0;
    let mut forged_total = 0;
    for (what, cookie) in &forged {
        let on_primary = primary_reads(&app, primary_port, N, cookie).await;
        eprintln!("{backend:?} forged ({what}): {on_primary} of {N} GETs on the primary");
        forged_primary += on_primary;
        forged_total += N;
    }
    eprintln!(
        "{backend:?} honest: {honest_primary} of {honest_total} GETs on the primary ({:.1}%); forged: {forged_primary} of {forged_total} ({:.1}%)",
        100.0 * honest_primary as f64 / honest_total as f64,
        100.0 * forged_primary as f64 / forged_total as f64
    );
    assert!(
        forged_primary * honest_total <= honest_primary * forged_total,
        "forged cookies reached the primary more often than honest load"
    );
}

#[tokio::test]
async fn postgres_forged_cookies_do_not_shift_reads_to_the_primary() {
    let Some(c) = cluster(DbBackend::Postgres) else {
        return;
    };
    assert!(
        c.lagging.is_some(),
        "the PostgreSQL cluster has a lagging replica"
    );
    forged_cookies_do_not_shift_reads_to_the_primary(&c).await;
}

#[tokio::test]
async fn mariadb_forged_cookies_do_not_shift_reads_to_the_primary() {
    let Some(c) = cluster(DbBackend::MySql) else {
        return;
    };
    forged_cookies_do_not_shift_reads_to_the_primary(&c).await;
}

fn app_with_key(db: &ReplicatedDatabase, key: [u8; 32]) -> Router {
    app(db.clone(), CausalLayer::new().signing_key(key).unwrap())
}

/// Sticky-after-write: a signed timestamp in the future (as if the key leaked) is ignored, and
/// so is an unsigned one; a real recent write still keeps the client on the primary.
#[tokio::test]
async fn postgres_future_sticky_timestamps_are_ignored() {
    let Some(c) = cluster(DbBackend::Postgres) else {
        return;
    };
    let db = handle(&c).await;
    let primary_port = port_of(&c.primary);
    let layer = CausalLayer::new()
        .signing_key(KEY)
        .unwrap()
        .sticky(Duration::from_secs(5));
    let app = app(db.clone(), layer);
    const N: usize = 100;
    let now_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };

    let honest = primary_reads(&app, primary_port, N, |_| None).await;
    let future_signed = primary_reads(&app, primary_port, N, |_| {
        Some(sign(&KEY, "s", &(now_ms() + 3_600_000).to_string()))
    })
    .await;
    let future_unsigned = primary_reads(&app, primary_port, N, |_| {
        Some(format!("{DEFAULT_COOKIE}={}", now_ms() + 3_600_000))
    })
    .await;
    let token_as_sticky = primary_reads(&app, primary_port, N, |_| {
        Some(sign(&KEY, "t", &now_ms().to_string()))
    })
    .await;
    eprintln!(
        "sticky: honest {honest}, future signed {future_signed}, future unsigned {future_unsigned}, token-kind value {token_as_sticky} of {N} GETs on the primary"
    );
    assert!(future_signed <= honest && future_unsigned <= honest && token_as_sticky <= honest);

    // the control: a real write keeps this client on the primary for the window
    let (_, cookie) = post_write(&app, None).await;
    let after_write = primary_reads(&app, primary_port, 10, |_| Some(cookie.clone())).await;
    assert_eq!(
        after_write, 10,
        "a real sticky cookie must still be honoured"
    );
}

/// A token from another instance (same key), newer than this handle's last look at the
/// primary: not refused (the primary is asked its position), so read-your-writes holds.
async fn tokens_from_another_instance_are_honoured(c: &Cluster) {
    let (a, b) = (handle(c).await, handle(c).await);
    let (app_a, app_b) = (app_with_key(&a, KEY), app_with_key(&b, KEY));
    let mut stale = 0;
    for _ in 0..50 {
        let (id, cookie) = post_write(&app_b, None).await;
        stale += usize::from(!get_who(&app_a, Some(&cookie), Some(id)).await.found);
    }
    eprintln!(
        "{:?} cross-instance tokens: {stale} of 50 reads stale",
        c.backend
    );
    assert_eq!(stale, 0, "a token from another instance was not honoured");
}

#[tokio::test]
async fn postgres_tokens_from_another_instance_are_honoured() {
    let Some(c) = cluster(DbBackend::Postgres) else {
        return;
    };
    tokens_from_another_instance_are_honoured(&c).await;
}

#[tokio::test]
async fn mariadb_tokens_from_another_instance_are_honoured() {
    let Some(c) = cluster(DbBackend::MySql) else {
        return;
    };
    tokens_from_another_instance_are_honoured(&c).await;
}

#[test]
fn signing_keys_are_checked() {
    assert!(matches!(
        CausalLayer::new().signing_key([0u8; 31]),
        Err(ReplicaError::Config(_))
    ));
    let layer = CausalLayer::new().signing_key(KEY).unwrap();
    let debug = format!("{layer:?}");
    assert!(debug.contains("Configured") && !debug.contains("0123456789abcdef"));
}
