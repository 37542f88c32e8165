//! The banner service's status page in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`; `scripts/test.sh` installs them), over a PostgreSQL cluster of its own:
//! a replica is frozen (SIGSTOP) and the page shows it down within two refreshes of the
//! handle noticing. A screenshot is saved under the test's output
//! (`target/tmp/status_page.png`). Runs with the fault tests (`SOR_FAULT_TESTS=1`,
//! `SOR_REQUIRE_CLUSTER=1` or `CI`).

#[path = "../examples/banner_service/app.rs"]
#[allow(dead_code)]
mod app;
mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fault_cluster::FaultCluster;
use migration::Migrator;
use sea_orm::ConnectionTrait;
use sea_orm_replica::web::StatusPage;
use sea_orm_replica::MigrateOptions;
use serde_json::json;

/// A node name that is markup with a script in it.
const HOSTILE: &str =
    "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>";

fn enabled() -> bool {
    common::fault_tests_enabled("status page browser test")
}

/// chromedriver on a port of its own, and the profile directory of the browser it starts.
/// Dropped (a pass or a panic): the driver is killed, and so is every browser process on
/// that profile (a browser whose session was never closed outlives its driver), then the
/// directory is removed.
struct Driver(Child, u16, std::path::PathBuf);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.2.as_os_str())
            .status();
        let _ = std::fs::remove_dir_all(&self.2);
    }
}

async fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver; scripts/test.sh installs it)");
    let profile =
        std::env::temp_dir().join(format!("sor-chromium-{}", uuid::Uuid::new_v4().simple()));
    let driver = Driver(child, port, profile);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    driver
}

/// Runs `script` in the page and returns what it returns.
async fn eval(client: &fantoccini::Client, script: &str) -> serde_json::Value {
    client.execute(script, vec![]).await.unwrap()
}

/// `data-health` of the node's row, and the page's refresh count.
async fn row(client: &fantoccini::Client, node: &str) -> (Option<String>, u64) {
    let v = eval(
        client,
        &format!(
            "const r = document.querySelector('tr[data-node=\"{node}\"]');
             return [r ? r.dataset.health : null, Number(document.body.dataset.refresh)];"
        ),
    )
    .await;
    (v[0].as_str().map(str::to_owned), v[1].as_u64().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_shows_down_on_the_status_page_within_two_refreshes() {
    if !enabled() {
        return;
    }
    let cluster = Arc::new(
        tokio::task::spawn_blocking(|| FaultCluster::start_pg("0"))
            .await
            .unwrap()
            .unwrap(),
    );
    let db = cluster.builder().connect().await.unwrap();
    db.migrate::<Migrator>(MigrateOptions::new()).await.unwrap();
    let refresh = Duration::from_millis(500);
    // a second page over a node whose name is markup: it must show as text, never run
    let lite = common::sqlite().unwrap();
    let evil = sea_orm_replica::ReplicatedDatabase::builder()
        .primary_node(sea_orm_replica::NodeConfig::new(&lite.primary).name(HOSTILE))
        .connect()
        .await
        .unwrap();
    let service = app::app(db.clone())
        .merge(app::ops(StatusPage::new(&db).refresh(refresh), None))
        .nest("/evil", StatusPage::new(&evil).router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, service).await });
    // some traffic, so the page has units to count
    for i in 0..20 {
        let unit = db.begin_read_only();
        common::served_by(&unit).await.unwrap();
        unit.commit().await.unwrap();
        if i % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let driver = start_driver().await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", format!("--user-data-dir={}", driver.2.display()),
            ],
        }),
    );
    let client =
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.1))
            .await
            .expect("a WebDriver session in headless Chromium");
    client
        .goto(&format!("http://{addr}/_db/status"))
        .await
        .unwrap();

    // the page renders every node, replica1 up
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (health, _) = row(&client, "replica1").await;
        if health.as_deref() == Some("up") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed replica1 up: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in ["primary", "replica2"] {
        assert!(row(&client, node).await.0.is_some(), "{node} has a row");
    }

    // replica2 stops replaying while the primary writes: its lag climbs on the chart
    let replica2 = sea_orm::Database::connect(cluster.replica2_url())
        .await
        .unwrap();
    replica2
        .execute_unprepared("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let write = |sql: &'static str| {
        let db = db.clone();
        async move {
            let unit = db.begin_read_write();
            unit.execute_unprepared(sql).await.unwrap();
            unit.commit().await.unwrap();
        }
    };
    write("CREATE TABLE lag_ticks (at timestamptz DEFAULT now())").await;
    let lagging = Instant::now();
    while lagging.elapsed() < Duration::from_secs(2) {
        write("INSERT INTO lag_ticks DEFAULT VALUES").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lag = eval(
        &client,
        "return document.querySelectorAll('svg[data-chart] polyline').length;",
    )
    .await;
    assert!(lag.as_u64().unwrap_or(0) >= 1, "lag chart lines: {lag}");

    // freeze replica1; once the handle has it down, the page must show it within two refreshes
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.pause("replica1"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while db.status().node("replica1").is_some_and(|n| n.up) {
        assert!(
            Instant::now() < deadline,
            "the handle never took the frozen replica down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, noticed_at) = row(&client, "replica1").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown_at = loop {
        let (health, refreshes) = row(&client, "replica1").await;
        if health.as_deref() == Some("down") {
            break refreshes;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed replica1 down"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(
        shown_at <= noticed_at + 2,
        "shown down at refresh {shown_at}, the handle had it down at refresh {noticed_at}"
    );

    // the DOM says it in words, and the others stay up
    let text = eval(
        &client,
        "return document.querySelector('tr[data-node=\"replica1\"]').innerText;",
    )
    .await;
    assert!(text.as_str().unwrap_or_default().contains("down"), "{text}");
    assert_eq!(row(&client, "replica2").await.0.as_deref(), Some("up"));
    assert_eq!(row(&client, "primary").await.0.as_deref(), Some("up"));
    // a chart per cluster, with a line per node that has a lag
    let lines = eval(
        &client,
        "return document.querySelectorAll('svg[data-chart] polyline').length;",
    )
    .await;
    assert!(lines.as_u64().unwrap_or(0) >= 1, "lag chart lines: {lines}");

    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status_page.png");
    std::fs::write(&out, &png).unwrap();
    eprintln!("screenshot: {}", out.display());

    replica2
        .execute_unprepared("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.resume("replica1"))
        .await
        .unwrap();

    // hostile text from a node: shown as text, no element made of it, no script run
    client.goto(&format!("http://{addr}/evil")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = eval(
            &client,
            "return document.querySelector('tr[data-node] td')?.textContent ?? null;",
        )
        .await;
        if shown.as_str() == Some(HOSTILE) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hostile name never showed as text: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let images = eval(
        &client,
        "return document.querySelectorAll('img, main script').length;",
    )
    .await;
    assert_eq!(
        images.as_u64(),
        Some(0),
        "markup from a node name became elements"
    );
    let title = eval(&client, "return document.title;").await;
    assert_eq!(
        title.as_str(),
        Some("sea-orm-replica status"),
        "a node name ran script"
    );
    client.close().await.unwrap();
    drop(driver);
}
