//! The status page (feature `axum`): every node of a handle (per shard) with its role as
//! configured and as the server reports it, routing state, health and last error, lag with a
//! chart of the last minutes, units in flight and per second, pool use, and the queues. One
//! HTML page with its script and styles inline (no build step, no external assets) that
//! polls the JSON view; the same view at `status.json`.
//!
//! ```no_run
//! # async fn demo(db: sea_orm_replica::ReplicatedDatabase) {
//! use sea_orm_replica::web::StatusPage;
//! let app: axum::Router = axum::Router::new()
//!     .nest("/_db/status", StatusPage::new(&db).router());
//! # }
//! ```
//!
//! Read-only unless told: [`allow_actions`](StatusPage::allow_actions) turns on taking a node
//! out of read routing by hand (and back), and retrying and dropping dead letters, each
//! request carrying `Authorization: Bearer <token>`. Everything a
//! node or a command says (names, errors) reaches the page as text, never as markup.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use crate::node::status::NodeStatus;
use crate::node::Sample;
use crate::queue::{Queue, QueueStatus};
use crate::shard::ShardedDatabase;
use crate::{ReplicaError, ReplicatedDatabase};

/// The page's HTML, script and styles.
const PAGE: &str = include_str!("status_page.html");

/// The most points of a node's lag history a view carries.
const CHART_POINTS: usize = 300;

/// Dead letters listed per queue when actions are on.
const DEAD_LETTERS_LISTED: usize = 20;

/// Builds the status page's router.
#[derive(Clone)]
pub struct StatusPage {
    clusters: Vec<(Option<String>, ReplicatedDatabase)>,
    queues: Vec<Queue>,
    refresh: Duration,
    window: Duration,
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for StatusPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusPage")
            .field("clusters", &self.clusters.len())
            .field("queues", &self.queues.len())
            .field("refresh", &self.refresh)
            .field("actions", &self.token.is_some())
            .finish()
    }
}

impl StatusPage {
    /// The page of one replicated cluster.
    pub fn new(db: &ReplicatedDatabase) -> Self {
        Self::of(vec![(None, db.clone())])
    }

    /// The page of a sharded handle: every shard's nodes.
    pub fn sharded(shards: &ShardedDatabase) -> Self {
        Self::of(
            shards
                .shards()
                .map(|(name, db)| (Some(name.to_owned()), db.clone()))
                .collect(),
        )
    }

    fn of(clusters: Vec<(Option<String>, ReplicatedDatabase)>) -> Self {
        StatusPage {
            clusters,
            queues: Vec::new(),
            refresh: Duration::from_secs(1),
            window: Duration::from_secs(300),
            token: None,
        }
    }

    /// Shows a queue: depth, oldest pending age, dead letters.
    pub fn queue(mut self, queue: Queue) -> Self {
        self.queues.push(queue);
        self
    }

    /// How often the page refreshes itself (default 1 s; at least 200 ms).
    pub fn refresh(mut self, every: Duration) -> Self {
        self.refresh = every.max(Duration::from_millis(200));
        self
    }

    /// How far back the lag chart goes (default 5 minutes; a node keeps ten minutes of
    /// samples at the default monitor interval).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Turns on the page's actions (drain or undrain a node, retry or drop a dead letter), each
    /// allowed only with
    /// `Authorization: Bearer <token>`; the page asks for the token when one is used. Serve
    /// the page over TLS and behind your own authentication too: the view names your nodes.
    /// A token shorter than 16 bytes is refused (actions stay off).
    pub fn allow_actions(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        if token.len() >= 16 {
            self.token = Some(token.into());
        } else {
            tracing::error!("status page: action token shorter than 16 bytes; actions stay off");
        }
        self
    }

    /// The router: `GET /` the page, `GET /status.json` the view, and with actions on,
    /// `POST /nodes/{node}/drain` and `…/undrain`, `POST
    /// /queues/{queue}/dead-letters/{entry}/retry` and `…/drop`. Mount it with `Router::nest`.
    pub fn router(self) -> Router {
        let mut router = Router::new()
            .route("/", get(page))
            .route("/status.json", get(view));
        if self.token.is_some() {
            router = router
                .route(
                    "/queues/{queue}/dead-letters/{entry}/{action}",
                    post(dead_letter_action),
                )
                .route("/nodes/{node}/{action}", post(node_action));
        }
        router.with_state(Arc::new(self))
    }

    /// The view the page shows, as its JSON carries it.
    pub async fn view(&self) -> StatusView {
        let shards = self
            .clusters
            .iter()
            .map(|(shard, db)| {
                let status = db.status();
                let stats = db.stats();
                ClusterView {
                    shard: shard.clone(),
                    units_opened: stats.units_opened,
                    fallbacks: stats.fallbacks,
                    nodes: status
                        .nodes
                        .into_iter()
                        .map(|status| NodeView {
                            history: db
                                .node(&status.name)
                                .map(|n| thin(n.history(self.window)))
                                .unwrap_or_default(),
                            lag_ms: status.lag.map(|d| d.as_millis() as u64),
                            down_for_ms: status.down_for.map(|d| d.as_millis() as u64),
                            routing: status.routing(),
                            status,
                        })
                        .collect(),
                }
            })
            .collect();
        let mut queues = Vec::with_capacity(self.queues.len());
        for queue in &self.queues {
            let (status, error) = match queue.status().await {
                Ok(status) => (Some(status), None),
                Err(err) => (None, Some(err.to_string())),
            };
            let dead = match (&self.token, &status) {
                (Some(_), Some(s)) if s.dead_letters > 0 => queue
                    .dead_letters(DEAD_LETTERS_LISTED)
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(|d| DeadLetterView {
                        entry: d.entry,
                        id: d.id.to_string(),
                        name: d.name,
                        error: d.error,
                        attempts: d.attempts,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            queues.push(QueueView {
                name: queue.name().to_owned(),
                status,
                error,
                dead_letters: dead,
            });
        }
        StatusView {
            generated_at_ms: crate::consistency::unix_ms(),
            refresh_ms: self.refresh.as_millis() as u64,
            window_ms: self.window.as_millis() as u64,
            actions: self.token.is_some(),
            shards,
            queues,
        }
    }
}

/// Every `k`-th sample, so a view carries at most [`CHART_POINTS`] per node.
fn thin(samples: Vec<Sample>) -> Vec<Sample> {
    let k = samples.len().div_ceil(CHART_POINTS).max(1);
    samples.into_iter().step_by(k).collect()
}

/// What the status page shows (its JSON).
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// When the view was taken, milliseconds since the Unix epoch.
    pub generated_at_ms: u64,
    /// How often the page polls, ms.
    pub refresh_ms: u64,
    /// How far back the lag chart goes, ms.
    pub window_ms: u64,
    /// True when the page's actions are on.
    pub actions: bool,
    /// One per shard (one, unnamed, for an unsharded handle).
    pub shards: Vec<ClusterView>,
    /// The queues the page shows.
    pub queues: Vec<QueueView>,
}

/// One cluster (a shard) in the [`StatusView`].
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// The shard's name; `None` for an unsharded handle.
    pub shard: Option<String>,
    /// Units opened on it so far.
    pub units_opened: u64,
    /// Read-only units that fell back to the primary.
    pub fallbacks: u64,
    /// Its nodes.
    pub nodes: Vec<NodeView>,
}

/// One node in the [`StatusView`]: its status line, and its recent lag.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// The status line.
    #[serde(flatten)]
    pub status: NodeStatus,
    /// The routing column: `read-write`, `read-only`, `drained`, `fenced`, `no writes`,
    /// `standby`.
    pub routing: &'static str,
    /// Lag in ms, when known.
    pub lag_ms: Option<u64>,
    /// How long it has been down, ms.
    pub down_for_ms: Option<u64>,
    /// Lag and health over the page's window, oldest first (thinned to 300 points).
    pub history: Vec<Sample>,
}

/// One queue in the [`StatusView`].
#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    /// The queue's name.
    pub name: String,
    /// Its status, when the broker answered.
    pub status: Option<QueueStatus>,
    /// Why it did not.
    pub error: Option<String>,
    /// The first dead letters (with actions on): never their payload.
    pub dead_letters: Vec<DeadLetterView>,
}

/// A dead letter as the page lists it: no payload (it may hold your users' data).
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterView {
    /// The broker's entry id (what retry and drop take).
    pub entry: String,
    /// The command's identity.
    pub id: String,
    /// The command's name.
    pub name: String,
    /// Its last error.
    pub error: String,
    /// How many times it was tried.
    pub attempts: u32,
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // inline script and styles only; no other origin, no framing
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(PAGE),
    )
        .into_response()
}

async fn view(State(page): State<Arc<StatusPage>>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(page.view().await),
    )
        .into_response()
}

/// The answer to a request without the page's bearer token; `None` when it has it.
fn refusal(page: &StatusPage, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &page.token else {
        return Some(StatusCode::NOT_FOUND.into_response());
    };
    if authorized(headers, token) {
        return None;
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required",
        )
            .into_response(),
    )
}

/// `POST /nodes/{node}/drain` or `…/undrain`: takes a node out of read routing by hand, or
/// puts it back ([`ReplicatedDatabase::drain`]).
async fn node_action(
    State(page): State<Arc<StatusPage>>,
    Path((node, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(&page, &headers) {
        return refused;
    }
    let Some((_, db)) = page
        .clusters
        .iter()
        .find(|(_, db)| db.node(&node).is_some())
    else {
        return (StatusCode::NOT_FOUND, "no such node").into_response();
    };
    let done = match action.as_str() {
        "drain" => db.drain(&node),
        "undrain" => db.undrain(&node),
        _ => return (StatusCode::NOT_FOUND, "no such action").into_response(),
    };
    answer(done.map(|()| true), &action, &node, "no such node")
}

/// The answer to an action on `target`: 204 when done (and logged: it changed state), 404
/// (`missing`) when there was nothing to act on, 400 with the error.
fn answer(
    done: Result<bool, ReplicaError>,
    action: &str,
    target: &str,
    missing: &'static str,
) -> Response {
    match done {
        Ok(true) => {
            tracing::warn!(action, target, "status page: action taken");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => (StatusCode::NOT_FOUND, missing).into_response(),
        Err(err) => (StatusCode::BAD_REQUEST, err.to_string()).into_response(),
    }
}

/// True when `headers` carry `Authorization: Bearer <token>`; compared in constant time.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn dead_letter_action(
    State(page): State<Arc<StatusPage>>,
    Path((queue, entry, action)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(&page, &headers) {
        return refused;
    }
    let Some(queue) = page.queues.iter().find(|q| q.name() == queue) else {
        return (StatusCode::NOT_FOUND, "no such queue").into_response();
    };
    let done = match action.as_str() {
        "retry" => queue.retry_dead_letter(&entry).await.map(|t| t.is_some()),
        "drop" => queue.drop_dead_letter(&entry).await.map(|d| d.is_some()),
        _ => return (StatusCode::NOT_FOUND, "no such action").into_response(),
    };
    let target = format!("{}/{entry}", queue.name());
    answer(done, &action, &target, "no such dead letter")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_need_the_exact_bearer_token() {
        let mut headers = HeaderMap::new();
        assert!(!authorized(&headers, "0123456789abcdef"));
        headers.insert(
            header::AUTHORIZATION,
            "Bearer 0123456789abcdee".parse().unwrap(),
        );
        assert!(!authorized(&headers, "0123456789abcdef"));
        headers.insert(
            header::AUTHORIZATION,
            "Bearer 0123456789abcdef0".parse().unwrap(),
        );
        assert!(!authorized(&headers, "0123456789abcdef"));
        headers.insert(
            header::AUTHORIZATION,
            "Basic 0123456789abcdef".parse().unwrap(),
        );
        assert!(!authorized(&headers, "0123456789abcdef"));
        headers.insert(
            header::AUTHORIZATION,
            "Bearer 0123456789abcdef".parse().unwrap(),
        );
        assert!(authorized(&headers, "0123456789abcdef"));
    }

    #[test]
    fn a_long_history_is_thinned_to_the_chart() {
        let samples: Vec<Sample> = (0..1200)
            .map(|i| Sample {
                at_ms: i,
                lag_ms: Some(i),
                up: true,
            })
            .collect();
        let thinned = thin(samples);
        assert!(thinned.len() <= CHART_POINTS && thinned.len() >= CHART_POINTS / 2);
        assert_eq!(thinned[0].at_ms, 0);
    }
}
