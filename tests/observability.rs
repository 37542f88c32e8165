//! Metrics and spans after known work, on real servers: the counters move by exactly the
//! units run, on the node the *server* says answered; the Prometheus endpoint names them;
//! statement spans carry OpenTelemetry's names and never a parameter.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{cluster, port_of, served_by, Cluster};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_orm_replica::observe::names;
use sea_orm_replica::web::StatusPage;
use sea_orm_replica::{NodeConfig, ReplicatedDatabase};
use tower::ServiceExt;

// ---- a test recorder: every series, readable without resetting it ---------------------------

#[derive(Default)]
struct Cell {
    value: AtomicU64,
    samples: Mutex<Vec<f64>>,
}

impl CounterFn for Cell {
    fn increment(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }
    fn absolute(&self, n: u64) {
        self.value.fetch_max(n, Ordering::Relaxed);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, v: f64) {
        self.set(f64::from_bits(self.value.load(Ordering::Relaxed)) + v);
    }
    fn decrement(&self, v: f64) {
        self.set(f64::from_bits(self.value.load(Ordering::Relaxed)) - v);
    }
    fn set(&self, v: f64) {
        self.value.store(v.to_bits(), Ordering::Relaxed);
    }
}

impl HistogramFn for Cell {
    fn record(&self, v: f64) {
        self.samples.lock().unwrap().push(v);
    }
}

/// (name, labels) → cell
type Series = Mutex<HashMap<(String, Vec<(String, String)>), Arc<Cell>>>;

#[derive(Default)]
struct TestRecorder {
    series: Series,
}

impl TestRecorder {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        self.series
            .lock()
            .unwrap()
            .entry((key.name().to_owned(), labels))
            .or_default()
            .clone()
    }

    /// The series of `name` whose labels include every pair of `with`.
    fn find(&self, name: &str, with: &[(&str, &str)]) -> Vec<Arc<Cell>> {
        self.series
            .lock()
            .unwrap()
            .iter()
            .filter(|((n, labels), _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, c)| c.clone())
            .collect()
    }

    fn counter(&self, name: &str, with: &[(&str, &str)]) -> u64 {
        self.find(name, with)
            .iter()
            .map(|c| c.value.load(Ordering::Relaxed))
            .sum()
    }

    fn gauge(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        let found = self.find(name, with);
        assert!(found.len() <= 1, "{name} {with:?}: more than one series");
        found
            .first()
            .map(|c| f64::from_bits(c.value.load(Ordering::Relaxed)))
    }

    fn samples(&self, name: &str, with: &[(&str, &str)]) -> usize {
        self.find(name, with)
            .iter()
            .map(|c| c.samples.lock().unwrap().len())
            .sum()
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key))
    }
}

/// The process's recorder (installed once; tests tell their series apart by node names).
fn recorder() -> &'static TestRecorder {
    static RECORDER: OnceLock<&'static TestRecorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder: &'static TestRecorder = Box::leak(Box::default());
        metrics::set_global_recorder(recorder).expect("no other recorder in this test binary");
        recorder
    })
}

fn short() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// Polls `probe` until it holds or `within` passes.
async fn eventually(within: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if probe() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    probe()
}

// ---- counters after known work ---------------------------------------------------------------

/// 10 read-only units on the replica (the server says so), 1 read-write unit on the primary:
/// the unit counters move by exactly that, the duration histogram holds one sample per
/// statement with the chosen node's port, and the monitor publishes lag, breaker and pools.
async fn units_are_counted_on_the_node_that_served_them(c: &Cluster) {
    let rec = recorder();
    let (p, r) = (
        format!("obs-primary-{}", short()),
        format!("obs-replica-{}", short()),
    );
    let db = ReplicatedDatabase::builder()
        .primary_node(NodeConfig::new(&c.primary).name(&p))
        .replica_node(NodeConfig::new(&c.replicas[0]).name(&r).max_connections(3))
        .monitor_interval(Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    let replica_port = port_of(&c.replicas[0]);
    for _ in 0..10 {
        let unit = db.begin_read_only();
        let served = served_by(&unit).await.unwrap();
        assert!(served.replica, "the server says a replica answered");
        assert_eq!(served.port, replica_port);
        unit.commit().await.unwrap();
    }
    let unit = db.begin_read_write();
    assert!(!served_by(&unit).await.unwrap().replica);
    unit.commit().await.unwrap();

    let role = |n: &'static str| (names::ROLE, n);
    let units_r = rec.counter(
        names::UNITS,
        &[
            (names::NODE, &r),
            role("replica"),
            (names::ROUTE_REASON, "balanced"),
        ],
    );
    assert_eq!(units_r, 10, "read-only units counted on the replica");
    assert_eq!(
        rec.counter(names::UNITS, &[(names::NODE, &r)]),
        10,
        "and nowhere else on it"
    );
    let units_p = rec.counter(
        names::UNITS,
        &[
            (names::NODE, &p),
            role("primary"),
            (names::ROUTE_REASON, "write"),
        ],
    );
    assert_eq!(units_p, 1);
    let port = replica_port.to_string();
    let system = match c.backend {
        DbBackend::Postgres => "postgresql",
        _ => "mysql",
    };
    let on_replica = [
        (names::NODE, r.as_str()),
        role("replica"),
        (names::SERVER_PORT, port.as_str()),
        (names::DB_SYSTEM_NAME, system),
    ];
    assert_eq!(rec.samples(names::OPERATION_DURATION, &on_replica), 10);
    assert_eq!(
        rec.samples(names::OPERATION_DURATION, &[(names::NODE, &p)]),
        1
    );
    assert_eq!(rec.counter(names::FALLBACKS, &[(names::NODE, &p)]), 0);

    // a read after a fresh write's token: one more causal wait (handle-wide, so at least one:
    // other tests of this binary read with tokens too), one more duration sample
    let waits_before = rec.counter(names::CAUSAL_WAITS, &[]);
    let unit = db.begin_read_write();
    unit.execute_unprepared("SELECT 1").await.unwrap();
    let token = unit.commit_causal().await.unwrap();
    let unit = db.begin_unit::<sea_orm_replica::ReadOnly>(
        sea_orm_replica::UnitOptions::default().after(&token),
    );
    served_by(&unit).await.unwrap();
    unit.commit().await.unwrap();
    assert!(rec.counter(names::CAUSAL_WAITS, &[]) > waits_before);
    assert!(rec.samples(names::CAUSAL_WAIT_DURATION, &[]) >= 1);

    // the monitor's gauges: lag known, breaker closed, the read-only pool's maximum
    let published = eventually(Duration::from_secs(10), || {
        rec.gauge(names::LAG, &[(names::NODE, &r)])
            .is_some_and(|lag| lag >= 0.0)
    })
    .await;
    assert!(published, "the replica's lag gauge was published");
    assert_eq!(
        rec.gauge(names::BREAKER_OPEN, &[(names::NODE, &r)]),
        Some(0.0)
    );
    let ro_pool = format!("{r}/read_only");
    assert_eq!(
        rec.gauge(names::CONNECTION_MAX, &[(names::POOL_NAME, &ro_pool)]),
        Some(3.0)
    );
    assert!(rec
        .gauge(
            names::CONNECTION_COUNT,
            &[
                (names::POOL_NAME, &ro_pool),
                (names::CONNECTION_STATE, "idle")
            ]
        )
        .is_some());
}

#[tokio::test]
async fn postgres_units_are_counted_on_the_node_that_served_them() {
    let Some(c) = cluster(DbBackend::Postgres) else {
        return;
    };
    units_are_counted_on_the_node_that_served_them(&c).await;
}

#[tokio::test]
async fn mariadb_units_are_counted_on_the_node_that_served_them() {
    let Some(c) = cluster(DbBackend::MySql) else {
        return;
    };
    units_are_counted_on_the_node_that_served_them(&c).await;
}

/// A replica nobody answers at: read-only units fall back to the primary, and the fallback
/// counter, the units' reason and the replica's breaker say so.
#[tokio::test]
async fn fallbacks_and_an_open_breaker_are_counted() {
    let Some(c) = cluster(DbBackend::Postgres) else {
        return;
    };
    let rec = recorder();
    let (p, r) = (
        format!("obs-primary-{}", short()),
        format!("obs-dead-{}", short()),
    );
    let dead = "postgres://postgres@127.0.0.1:1/postgres";
    let db = ReplicatedDatabase::builder()
        .primary_node(NodeConfig::new(&c.primary).name(&p))
        .replica_node(
            NodeConfig::new(dead)
                .name(&r)
                .connect_timeout(Duration::from_millis(300)),
        )
        .monitor_interval(Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    for _ in 0..5 {
        let unit = db.begin_read_only();
        let served = served_by(&unit).await.unwrap();
        assert_eq!(served.port, port_of(&c.primary), "the primary answered");
        unit.commit().await.unwrap();
    }
    assert_eq!(rec.counter(names::FALLBACKS, &[(names::NODE, &p)]), 5);
    assert_eq!(
        rec.counter(
            names::UNITS,
            &[(names::NODE, &p), (names::ROUTE_REASON, "fallback")]
        ),
        5
    );
    assert_eq!(rec.counter(names::UNITS, &[(names::NODE, &r)]), 0);
    let open = eventually(Duration::from_secs(10), || {
        rec.gauge(names::BREAKER_OPEN, &[(names::NODE, &r)]) == Some(1.0)
    })
    .await;
    assert!(open, "the dead replica's breaker is open");
    assert_eq!(
        rec.gauge(names::LAG, &[(names::NODE, &r)]),
        Some(-1.0),
        "its lag is unknown"
    );
}

// ---- the Prometheus endpoint -----------------------------------------------------------------

/// A Prometheus recorder (thread-local, so the test's global recorder is untouched) on a
/// current-thread runtime: after 4 read-only units on SQLite's reader pool (the node
/// `sqlite-reader`), the endpoint's
/// text has the units counter with its labels and the duration histogram's buckets.
#[test]
fn the_prometheus_endpoint_serves_the_metrics_by_their_names() {
    let Some(c) = common::sqlite() else { return };
    let recorder = sea_orm_replica::observe::prometheus::recorder().unwrap();
    let handle = recorder.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            sea_orm_replica::observe::describe();
            let db = ReplicatedDatabase::builder()
                .primary_node(NodeConfig::new(&c.primary).name("prom-primary"))
                .connect()
                .await
                .unwrap();
            db.begin_read_write()
                .execute_unprepared("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
                .await
                .unwrap();
            for _ in 0..4 {
                let unit = db.begin_read_only();
                unit.query_one_raw(Statement::from_string(DbBackend::Sqlite, "SELECT 1"))
                    .await
                    .unwrap();
                unit.commit().await.unwrap();
            }
            let status = db.status();
            assert!(status.node("prom-primary").is_some());
            let app = sea_orm_replica::web::metrics_router(handle);
            let resp = app
                .oneshot(Request::get("/").body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let ctype = resp.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(ctype.starts_with("text/plain"), "{ctype}");
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            String::from_utf8(body.to_vec()).unwrap()
        })
    });
    let units = text
        .lines()
        .find(|l| {
            l.starts_with("sea_orm_replica_units{")
                && l.contains("db_replica_node=\"sqlite-reader\"")
        })
        .unwrap_or_else(|| panic!("no units line for the reader pool:\n{text}"));
    assert!(
        units.contains("db_replica_route_reason=\"balanced\""),
        "{units}"
    );
    assert!(units.contains("db_system_name=\"sqlite\""), "{units}");
    assert!(
        units.trim_end().ends_with(" 4"),
        "4 read-only units: {units}"
    );
    assert!(
        text.contains("db_client_operation_duration_bucket{"),
        "{text}"
    );
    assert!(
        text.contains("le=\"0.005\""),
        "OpenTelemetry's buckets: {text}"
    );
    assert!(text.contains("db_client_connection_max{"), "{text}");
    assert!(
        text.contains("# HELP sea_orm_replica_units"),
        "described: {text}"
    );
}

// ---- spans -----------------------------------------------------------------------------------

/// Every field of every span opened under it, as `name: field=value`.
#[derive(Clone, Default)]
struct Fields(Arc<Mutex<Vec<String>>>);

struct Visit<'a>(&'a mut Vec<String>, &'static str);

impl tracing::field::Visit for Visit<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .push(format!("{}: {}={:?}", self.1, field.name(), value));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0
            .push(format!("{}: {}={}", self.1, field.name(), value));
    }
}

impl<S> tracing_subscriber::Layer<S> for Fields
where
    S: tracing::Subscriber + for<'l> tracing_subscriber::registry::LookupSpan<'l>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        attrs.record(&mut Visit(
            &mut self.0.lock().unwrap(),
            attrs.metadata().name(),
        ));
    }
    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let name = ctx.span(id).map_or("?", |s| s.name());
        values.record(&mut Visit(&mut self.0.lock().unwrap(), name));
    }
}

/// Statement spans name the operation and the table (`INSERT banner`), the unit span the
/// system and the route; a bound parameter never reaches a span, with the query text
/// recorded or not.
#[test]
fn spans_carry_opentelemetry_names_and_never_a_parameter() {
    use tracing_subscriber::layer::SubscriberExt;
    let Some(c) = common::sqlite() else { return };
    let fields = Fields::default();
    let subscriber = tracing_subscriber::registry().with(fields.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secret = "hunter2-5f1c9e";
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            for text in [false, true] {
                let db = ReplicatedDatabase::builder()
                    .primary(&c.primary)
                    .record_query_text(text)
                    .connect()
                    .await
                    .unwrap();
                let unit = db.begin_read_write();
                unit.execute_unprepared(
                    "CREATE TABLE IF NOT EXISTS banner (id INTEGER PRIMARY KEY, name TEXT)",
                )
                .await
                .unwrap();
                unit.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    "INSERT INTO banner (name) VALUES (?)",
                    [secret.into()],
                ))
                .await
                .unwrap();
                unit.commit().await.unwrap();
                // a statement that fails: error.type on the spans
                let unit = db.begin_read_write();
                assert!(unit
                    .execute_unprepared("SELECT * FROM no_such_table")
                    .await
                    .is_err());
            }
        })
    });
    let seen = fields.0.lock().unwrap().clone();
    let has = |line: &str| seen.iter().any(|l| l == line);
    assert!(
        has("db_statement: db.query.summary=INSERT banner"),
        "{seen:#?}"
    );
    assert!(has("db_statement: db.operation.name=INSERT"), "{seen:#?}");
    assert!(has("db_statement: otel.name=INSERT banner"), "{seen:#?}");
    assert!(has("unit_of_work: db.system.name=sqlite"), "{seen:#?}");
    assert!(has("unit_of_work: db.replica.role=primary"), "{seen:#?}");
    assert!(
        has("unit_of_work: db.replica.route_reason=read-write: primary"),
        "{seen:#?}"
    );
    assert!(has("db_statement: error.type=database"), "{seen:#?}");
    assert!(
        has("db_statement: db.query.text=INSERT INTO banner (name) VALUES (?)"),
        "text when asked: {seen:#?}"
    );
    assert_eq!(
        seen.iter()
            .filter(|l| l.starts_with("db_statement: db.query.text="))
            .count(),
        3,
        "text only from the handle that records it (its three statements): {seen:#?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains(secret)),
        "a parameter reached a span: {seen:#?}"
    );
}

// ---- the status page's JSON and its actions --------------------------------------------------

#[tokio::test]
async fn the_status_view_is_read_only_unless_actions_are_on_and_authorized() {
    let Some(c) = common::sqlite() else { return };
    let db = ReplicatedDatabase::builder()
        .primary_node(NodeConfig::new(&c.primary).name("status-primary"))
        .connect()
        .await
        .unwrap();
    let send = |app: axum::Router, req: Request<Body>| async move {
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    };
    let page = StatusPage::new(&db).router();
    let (status, _, body) = send(
        page.clone(),
        Request::get("/status.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["shards"][0]["nodes"][0]["name"], "status-primary");
    assert_eq!(view["shards"][0]["nodes"][0]["routing"], "read-write");
    assert_eq!(view["actions"], false);
    let (status, headers, html) =
        send(page.clone(), Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("<script>") && !html.contains("src=\"http"),
        "inline, no external assets"
    );
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let action = || Request::post("/queues/q/dead-letters/1-0/retry");
    // read-only: the action does not exist
    let (status, _, _) = send(page, action().body(Body::empty()).unwrap()).await;
    assert!(status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED);
    // a short token is refused: actions stay off
    let short_token = StatusPage::new(&db).allow_actions("short").router();
    let (status, _, body) = send(
        short_token.clone(),
        Request::get("/status.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"actions\":false"), "{body}");
    // on: without the token, with a wrong one, with a forged scheme: 401; right token, no such queue: 404
    let on = StatusPage::new(&db)
        .allow_actions("0123456789abcdef-token")
        .router();
    for auth in [
        None,
        Some("Bearer 0123456789abcdef-tokem"),
        Some("Basic 0123456789abcdef-token"),
        Some("Bearer "),
    ] {
        let mut req = action();
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let (status, _, _) = send(on.clone(), req.body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
    }
    let req = action().header(header::AUTHORIZATION, "Bearer 0123456789abcdef-token");
    let (status, _, _) = send(on, req.body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

// ---- the queue's gauges and counters -----------------------------------------------------------

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Tick {
    n: u32,
}

impl sea_orm_replica::queue::Command for Tick {
    const NAME: &'static str = "tick";
}

/// 5 commands enqueued with no worker: the depth gauge says 5 and the oldest age is set; a
/// worker applies them: Redis pushes each settlement (a second broker hears them), the
/// applied counter says 5 and the depth gauge returns to 0. On a private Redis (own port,
/// AOF) and SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_age_and_applied_are_published() {
    use sea_orm_replica::queue::{Queue, RedisBroker};
    let rec = recorder();
    let Some(c) = common::sqlite() else { return };
    let db = ReplicatedDatabase::builder()
        .primary(&c.primary)
        .connect()
        .await
        .unwrap();
    db.migrate::<migration::Migrator>(sea_orm_replica::MigrateOptions::new())
        .await
        .unwrap();
    let redis = tokio::task::spawn_blocking(common::redis::PrivateRedis::start)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("private redis: {e}"));
    let name = format!("obs{}", short());
    let queue = Queue::builder(&name)
        .broker(RedisBroker::connect(redis.url(), &name).await.unwrap())
        .partitions(2)
        .handle(|_: Tick, unit| {
            Box::pin(async move { unit.execute_unprepared("SELECT 1").await.map(drop) })
        })
        .build()
        .unwrap();
    let mut tickets = Vec::new();
    for n in 0..5 {
        tickets.push(queue.enqueue(&Tick { n }).await.unwrap());
    }
    let status = queue.status().await.unwrap();
    assert_eq!(status.pending, 5);
    let q = [(names::QUEUE, name.as_str())];
    assert_eq!(rec.gauge(names::QUEUE_DEPTH, &q), Some(5.0));
    assert!(rec
        .gauge(names::QUEUE_OLDEST_AGE, &q)
        .is_some_and(|age| age >= 0.0));
    assert_eq!(rec.gauge(names::QUEUE_DEAD_LETTERS, &q), Some(0.0));

    // a second broker on the same queue hears the settlements Redis pushes
    let watcher = RedisBroker::connect(redis.url(), &name).await.unwrap();
    use sea_orm_replica::queue::Broker;
    let pushed: Vec<_> = tickets.iter().map(|t| watcher.settled(t.id())).collect();
    let never = watcher.settled(uuid::Uuid::now_v7());
    // the watcher subscribes in the background: start the worker once Redis counts it
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let channel = format!("sor:{{{name}}}:settled");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut admin)
            .await
            .unwrap();
        if subscribers >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher never subscribed to {channel}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let worker = queue.worker(db.clone()).spawn();
    for push in pushed {
        tokio::time::timeout(Duration::from_secs(20), push)
            .await
            .expect("Redis pushed the settlement");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), never)
            .await
            .is_err(),
        "no push for a command never enqueued"
    );
    for t in &tickets {
        queue.wait(t, Duration::from_secs(20)).await.unwrap();
    }
    let stats = worker.stop().await;
    assert_eq!(stats.applied, 5);
    assert_eq!(rec.counter(names::QUEUE_APPLIED, &q), 5);
    assert_eq!(rec.counter(names::QUEUE_DEAD_LETTERED, &q), 0);
    queue.status().await.unwrap();
    assert_eq!(rec.gauge(names::QUEUE_DEPTH, &q), Some(0.0));
}

// ---- failover and elections, on a cluster of its own -------------------------------------------

/// The primary stopped and replica1 promoted: the failover counter names replica1 once, the
/// election counter moved, and the units after it count on replica1 as the primary (the server
/// says it is no longer in recovery). Runs with the fault tests (`SOR_FAULT_TESTS=1`,
/// `SOR_REQUIRE_CLUSTER=1` or `CI`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_counted_with_its_new_primary() {
    if !common::fault_tests_enabled("failover metrics test") {
        return;
    }
    let rec = recorder();
    let cluster = Arc::new(
        tokio::task::spawn_blocking(|| common::fault_cluster::FaultCluster::start_pg("0"))
            .await
            .unwrap()
            .unwrap(),
    );
    let db = cluster.builder().connect().await.unwrap();
    let elections_before = rec.counter(names::ELECTIONS, &[]);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || {
        c.stop_node("primary");
        c.promote("replica1");
    })
    .await
    .unwrap();
    let switched = eventually(Duration::from_secs(30), || {
        db.primary().name() == "replica1"
    })
    .await;
    assert!(switched, "the handle never switched to replica1");
    assert_eq!(
        rec.counter(names::FAILOVERS, &[(names::NODE, "replica1")]),
        1
    );
    assert_eq!(
        rec.counter(names::FAILOVERS, &[]),
        1,
        "one failover in this process"
    );
    assert!(rec.counter(names::ELECTIONS, &[]) > elections_before);
    let unit = db.begin_read_write();
    let served = served_by(&unit).await.unwrap();
    assert!(!served.replica, "the promoted node takes writes");
    assert_eq!(served.port, i64::from(cluster.port("replica1")));
    unit.commit().await.unwrap();
    let on_new_primary = [
        (names::NODE, "replica1"),
        (names::ROLE, "primary"),
        (names::ROUTE_REASON, "write"),
    ];
    assert_eq!(rec.counter(names::UNITS, &on_new_primary), 1);
}

/// A sharded handle's status view has every shard's nodes under the shard's name.
#[tokio::test]
async fn the_sharded_status_view_groups_nodes_by_shard() {
    let (Some(a), Some(b)) = (common::sqlite(), common::sqlite()) else {
        return;
    };
    let shards = sea_orm_replica::shard::ShardedDatabase::builder()
        .shard("a", ReplicatedDatabase::builder().primary(&a.primary))
        .shard("b", ReplicatedDatabase::builder().primary(&b.primary))
        .connect()
        .await
        .unwrap();
    let view = StatusPage::sharded(&shards).view().await;
    let names: Vec<Option<&str>> = view.shards.iter().map(|s| s.shard.as_deref()).collect();
    assert_eq!(names, [Some("a"), Some("b")]);
    for cluster in &view.shards {
        assert!(!cluster.nodes.is_empty());
        let shard = cluster.shard.as_deref().unwrap_or_default();
        assert!(cluster
            .nodes
            .iter()
            .all(|n| n.status.name.starts_with(&format!("{shard}/"))));
    }
}

/// With actions on and the token given, `POST /nodes/{node}/drain` takes a replica out of
/// read routing (the server says reads then run on the primary) and `undrain` puts it back;
/// the current primary cannot be drained; unknown nodes and missing tokens are refused.
#[tokio::test]
async fn a_replica_drained_from_the_status_page_gets_no_reads_until_undrained() {
    let Some(c) = cluster(DbBackend::Postgres) else {
        return;
    };
    let (p, r) = (
        format!("drain-primary-{}", short()),
        format!("drain-replica-{}", short()),
    );
    let db = ReplicatedDatabase::builder()
        .primary_node(NodeConfig::new(&c.primary).name(&p))
        .replica_node(NodeConfig::new(&c.replicas[0]).name(&r))
        .connect()
        .await
        .unwrap();
    let token = "drain-token-0123456789";
    let page = StatusPage::new(&db).allow_actions(token).router();
    let post = |path: String, auth: Option<&'static str>| {
        let page = page.clone();
        async move {
            let mut req = Request::post(path);
            if let Some(t) = auth {
                req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            page.oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap()
                .status()
        }
    };
    let reader_port = || async {
        let unit = db.begin_read_only();
        let served = served_by(&unit).await.unwrap();
        unit.commit().await.unwrap();
        served.port
    };
    assert_eq!(reader_port().await, port_of(&c.replicas[0]));

    assert_eq!(
        post(format!("/nodes/{r}/drain"), None).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(!db.node(&r).unwrap().is_drained());
    assert_eq!(
        post(format!("/nodes/{r}/drain"), Some(token)).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(db.status().node(&r).unwrap().routing(), "drained");
    for _ in 0..5 {
        assert_eq!(
            reader_port().await,
            port_of(&c.primary),
            "drained: reads fall back to the primary"
        );
    }
    assert_eq!(
        post(format!("/nodes/{p}/drain"), Some(token)).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post("/nodes/no-such-node/drain".into(), Some(token)).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post(format!("/nodes/{r}/explode"), Some(token)).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post(format!("/nodes/{r}/undrain"), Some(token)).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        reader_port().await,
        port_of(&c.replicas[0]),
        "back in routing"
    );
}
