//! Request-scoped routing for web services: a tower [`Layer`](tower_layer::Layer).
//!
//! Each request runs in a [`CausalScope`]. GET and HEAD (and OPTIONS) requests are read-only:
//! plain handle reads go to a replica. Other methods run on the primary. The causal token
//! comes in as a cookie (the default: any cookie-keeping client gets read-your-writes with no
//! code) or a header. After a request that wrote, the layer sets the updated token on the
//! response. This is Rails' `DatabaseSelector`, by log position instead of by clock.
//!
//! ## What a cookie can do
//!
//! The value is signed (HMAC-SHA256, see [`signing`](super::signing)) and expires with the
//! cookie; a value that does not verify is ignored, as if absent. A token only ever moves a
//! read between nodes: it never lets a request write, and a read-only request stays read-only
//! wherever it runs. A token beyond the primary's current position is refused by routing, and
//! a sticky time later than now (plus [`STICKY_CLOCK_SKEW`]) is ignored. So even with the key
//! (leaked), a client can at most make its own reads behave as if it had just written: the
//! same load an honest client puts on the primary by writing before every read.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use http::Method;
//! use sea_orm_replica::web::{CausalLayer, RequestAccess};
//!
//! let app: Router = Router::new()
//!     .route("/banners", get(|| async { "…" }))
//!     .layer(
//!         CausalLayer::new()
//!             .route(Method::GET, "/admin/reindex", RequestAccess::ReadWrite) // a GET that writes
//!             .route(Method::POST, "/search", RequestAccess::ReadOnly),       // a POST that reads
//!     );
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{header, HeaderName, HeaderValue, Method, Request, Response};

use super::signing::{KeySource, Kind, SigningKey};
use crate::queue::{collecting_tickets, Queue, Ticket};
use crate::{CausalScope, CausalToken, ReplicaError};

/// The cookie that carries the tickets of a client's queued commands.
pub const PENDING_COOKIE: &str = "sor_pending";

/// Tickets one pending cookie carries at most (the newest are kept).
pub const MAX_PENDING_TICKETS: usize = 16;

/// Whether a request reads only or may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestAccess {
    /// Plain handle reads go to a replica (respecting the token); handle writes are refused.
    ReadOnly,
    /// Everything on the primary; writes record the token sent back.
    ReadWrite,
}

/// The cookie that carries the causal token unless told otherwise.
pub const DEFAULT_COOKIE: &str = "sor_causal";

/// How far in the future a signed sticky timestamp may be (clock skew between instances);
/// a later one is ignored.
pub const STICKY_CLOCK_SKEW: Duration = Duration::from_secs(2);

type Classifier = dyn Fn(&Method, &str) -> Option<RequestAccess> + Send + Sync;

#[derive(Clone)]
struct Config {
    cookie: Option<String>,
    header: Option<HeaderName>,
    cookie_max_age_secs: u64,
    routes: Vec<(Method, String, RequestAccess)>,
    classify: Option<Arc<Classifier>>,
    /// Sticky-after-write instead of positions: the cookie holds the last write's time.
    sticky: Option<Duration>,
    /// Signs what goes out; what comes back unsigned is ignored.
    key: SigningKey,
    /// Queued commands a request waits for (the pending cookie), and how long at most.
    queue: Option<(Queue, Duration)>,
}

/// The layer. See the [module docs](self).
#[derive(Clone)]
pub struct CausalLayer {
    config: Arc<Config>,
}

impl std::fmt::Debug for CausalLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalLayer")
            .field("cookie", &self.config.cookie)
            .field("header", &self.config.header)
            .field("routes", &self.config.routes)
            .field("key", &self.config.key.source)
            .finish()
    }
}

impl Default for CausalLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl CausalLayer {
    /// Token in the `sor_causal` cookie; GET/HEAD/OPTIONS read-only, everything else read-write.
    ///
    /// The cookie is signed with the key in `SOR_COOKIE_KEY` (hex, at least 32 bytes) when
    /// that is set, else with a random key made once per process: then cookies do not survive
    /// a restart and are not accepted by other instances (their reads just lose
    /// read-your-writes until the next write). A `SOR_COOKIE_KEY` that cannot be used is
    /// logged as an error and the random key used instead; [`from_env`](Self::from_env) fails
    /// instead, and [`signing_key`](Self::signing_key) sets the key from configuration.
    pub fn new() -> Self {
        let key = match SigningKey::from_env() {
            Ok(Some(key)) => key,
            Ok(None) => SigningKey::per_process(),
            Err(err) => {
                tracing::error!(%err, "cookie signing key unusable: using a per-process random key");
                SigningKey::per_process()
            }
        };
        Self::with_key(key)
    }

    /// Like [`new`](Self::new), but the signing key must come from `SOR_COOKIE_KEY` (hex, at
    /// least 64 digits, e.g. `openssl rand -hex 32`): [`ReplicaError::MissingEnv`] when it is
    /// unset, a [`ReplicaError::Config`] when it is not hex or too short.
    pub fn from_env() -> Result<Self, ReplicaError> {
        SigningKey::from_env()?
            .map(Self::with_key)
            .ok_or(ReplicaError::MissingEnv(super::signing::COOKIE_KEY_ENV))
    }

    fn with_key(key: SigningKey) -> Self {
        CausalLayer {
            config: Arc::new(Config {
                cookie: Some(DEFAULT_COOKIE.to_owned()),
                header: None,
                cookie_max_age_secs: 300,
                routes: Vec::new(),
                classify: None,
                sticky: None,
                key,
                queue: None,
            }),
        }
    }

    /// Signs cookies (and headers) with this key: raw bytes, at least 32 (e.g. 32 random
    /// bytes from your secret store). Give every instance behind one site the same key, so a
    /// token issued by one is accepted by all. Shorter keys are a [`ReplicaError::Config`].
    pub fn signing_key(self, key: impl AsRef<[u8]>) -> Result<Self, ReplicaError> {
        let key = SigningKey::new(key.as_ref(), KeySource::Configured)?;
        Ok(self.with(|c| c.key = key))
    }

    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// Names the cookie (default [`DEFAULT_COOKIE`]).
    pub fn cookie(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.with(|c| c.cookie = Some(name))
    }

    /// Carries the token in this header instead of a cookie (for API clients).
    pub fn header(self, name: HeaderName) -> Self {
        self.with(|c| {
            c.header = Some(name);
            c.cookie = None;
        })
    }

    /// How long the cookie lives (default 300 s: once replicas caught up it is not needed).
    /// The signed value carries the same expiry: a client that keeps sending it past that
    /// gets no effect from it.
    pub fn cookie_max_age(self, secs: u64) -> Self {
        self.with(|c| c.cookie_max_age_secs = secs)
    }

    /// Sticky-after-write (Rails' `delay`, Laravel's `sticky`) instead of log positions: for
    /// `window` after a client's last write, its reads run on the primary. The cookie holds
    /// the write's time. Cheaper to capture than a token, but every read in the window loads
    /// the primary, and a replica lagging more than `window` still serves stale reads.
    pub fn sticky(self, window: Duration) -> Self {
        self.with(|c| c.sticky = Some(window))
    }

    /// Read your queued writes across requests: the tickets of commands a request enqueues on
    /// `queue` go back in a signed cookie ([`PENDING_COOKIE`]), and a later read-only request
    /// of that client first waits (up to `max_wait` in all) until they are applied, then runs
    /// after their commits' tokens, so a GET after a queued POST reads its write from a
    /// replica. Read-write requests carry the tickets on without waiting.
    /// Tickets not applied within the wait stay in the cookie; applied ones leave it.
    pub fn queue(self, queue: Queue, max_wait: Duration) -> Self {
        self.with(|c| c.queue = Some((queue, max_wait)))
    }

    /// Overrides the access of one route (method and exact path).
    pub fn route(self, method: Method, path: impl Into<String>, access: RequestAccess) -> Self {
        let path = path.into();
        self.with(|c| c.routes.push((method, path, access)))
    }

    /// Decides the access of requests the explicit routes do not name; `None` keeps the default.
    pub fn classify_with<F>(self, f: F) -> Self
    where
        F: Fn(&Method, &str) -> Option<RequestAccess> + Send + Sync + 'static,
    {
        self.with(|c| c.classify = Some(Arc::new(f)))
    }
}

impl Config {
    fn access(&self, method: &Method, path: &str) -> RequestAccess {
        if let Some((_, _, access)) = self
            .routes
            .iter()
            .find(|(m, p, _)| m == method && p == path)
        {
            return *access;
        }
        if let Some(access) = self.classify.as_ref().and_then(|f| f(method, path)) {
            return access;
        }
        match *method {
            Method::GET | Method::HEAD | Method::OPTIONS => RequestAccess::ReadOnly,
            _ => RequestAccess::ReadWrite,
        }
    }

    fn kind(&self) -> Kind {
        match self.sticky {
            None => Kind::Token,
            Some(_) => Kind::Sticky,
        }
    }

    /// The payload the client sent back, signed by us and not expired: the header, else the
    /// first cookie of our name that verifies. Anything else is as if nothing was sent.
    fn incoming<'r, B>(&self, req: &'r Request<B>) -> Option<&'r str> {
        let kind = self.kind();
        if let Some(name) = &self.header {
            if let Some(value) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
                return self.verified(kind, value);
            }
        }
        self.signed_cookie(req, self.cookie.as_deref()?, kind)
    }

    /// The first cookie called `name` whose value verifies as `kind`; its payload.
    fn signed_cookie<'r, B>(&self, req: &'r Request<B>, name: &str, kind: Kind) -> Option<&'r str> {
        req.headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(k, _)| *k == name)
            .find_map(|(_, v)| self.verified(kind, v.trim_matches('"')))
    }

    fn verified<'v>(&self, kind: Kind, value: &'v str) -> Option<&'v str> {
        let payload = self.key.open(kind, value);
        if payload.is_none() {
            tracing::debug!("causal cookie ignored: not signed with this layer's key, or expired");
        }
        payload
    }

    /// The request's scope: with the client's token, or (sticky) its last write's time. A
    /// sticky time later than now (beyond [`STICKY_CLOCK_SKEW`]) is ignored. Tokens beyond
    /// the primary's position are refused later, by routing (only it knows the primary).
    fn scope<B>(
        &self,
        req: &Request<B>,
        read_only: bool,
        applied: Option<CausalToken>,
    ) -> CausalScope {
        let incoming = self.incoming(req);
        match self.sticky {
            None => {
                let token: Option<CausalToken> = incoming.and_then(|v| v.parse().ok());
                let token = match (token, applied) {
                    (Some(a), Some(b)) => Some(a.merge(&b)),
                    (a, b) => a.or(b),
                };
                CausalScope::new(read_only, token)
            }
            Some(window) => {
                let latest = SystemTime::now() + STICKY_CLOCK_SKEW;
                let last_write = incoming
                    .and_then(|v| v.parse::<u64>().ok())
                    .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
                    .filter(|at| {
                        let plausible = *at <= latest;
                        if !plausible {
                            tracing::debug!("sticky timestamp in the future: ignored");
                        }
                        plausible
                    });
                CausalScope::new(read_only, None).sticky(window, last_write)
            }
        }
    }

    /// What to send back after the request, signed: the new token, or (sticky) the new write
    /// time.
    fn outgoing(&self, scope: &CausalScope, before: Option<SystemTime>) -> Option<String> {
        let payload = match self.sticky {
            None => scope.written().map(|t| t.to_string()),
            Some(_) => scope
                .last_write()
                .filter(|at| Some(*at) != before)
                .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis().to_string()),
        }?;
        self.key.seal(
            self.kind(),
            &payload,
            Duration::from_secs(self.cookie_max_age_secs),
        )
    }

    /// The tickets in the client's pending cookie, if it verifies (at most
    /// [`MAX_PENDING_TICKETS`]; what does not parse is dropped).
    fn pending<B>(&self, req: &Request<B>) -> Vec<uuid::Uuid> {
        if self.queue.is_none() {
            return Vec::new();
        }
        self.signed_cookie(req, PENDING_COOKIE, Kind::Pending)
            .map(|payload| {
                payload
                    .split(',')
                    .filter_map(|t| t.parse().ok())
                    .take(MAX_PENDING_TICKETS)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits (up to the layer's bound in all) for `tickets`: the merged token of those
    /// applied, and those still pending.
    async fn wait_for(&self, tickets: Vec<uuid::Uuid>) -> (Option<CausalToken>, Vec<uuid::Uuid>) {
        let Some((queue, max_wait)) = &self.queue else {
            return (None, tickets);
        };
        let until = tokio::time::Instant::now() + *max_wait;
        let (mut token, mut still): (Option<CausalToken>, Vec<uuid::Uuid>) = (None, Vec::new());
        for id in tickets {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match queue.wait(&Ticket::from_id(id), left).await {
                Ok(Some(t)) => token = Some(token.map_or(t.clone(), |m| m.merge(&t))),
                // dead-lettered: nothing will come of waiting
                Err(ReplicaError::DeadLettered { .. }) => {}
                Ok(None) | Err(_) => still.push(id),
            }
        }
        (token, still)
    }

    /// Sets (or clears) the pending cookie when the tickets changed.
    fn set_pending<B>(&self, resp: &mut Response<B>, before: &[uuid::Uuid], now: &[uuid::Uuid]) {
        if before == now {
            return;
        }
        let value = if now.is_empty() {
            format!("{PENDING_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")
        } else {
            let payload = now
                .iter()
                .map(uuid::Uuid::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let Some(sealed) = self.key.seal(
                Kind::Pending,
                &payload,
                Duration::from_secs(self.cookie_max_age_secs),
            ) else {
                return;
            };
            format!(
                "{PENDING_COOKIE}={sealed}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
                self.cookie_max_age_secs
            )
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            resp.headers_mut().append(header::SET_COOKIE, value);
        }
    }

    fn set_token<B>(&self, resp: &mut Response<B>, token: &str) {
        if let Some(name) = &self.header {
            if let Ok(value) = HeaderValue::from_str(token) {
                resp.headers_mut().insert(name.clone(), value);
            }
        }
        if let Some(cookie) = &self.cookie {
            let value = format!(
                "{cookie}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
                self.cookie_max_age_secs
            );
            if let Ok(value) = HeaderValue::from_str(&value) {
                resp.headers_mut().append(header::SET_COOKIE, value);
            }
        }
    }
}

impl<S> tower_layer::Layer<S> for CausalLayer {
    type Service = CausalService<S>;

    fn layer(&self, inner: S) -> CausalService<S> {
        CausalService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service [`CausalLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct CausalService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for CausalService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalService")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for CausalService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let config = self.config.clone();
        let access = config.access(req.method(), req.uri().path());
        let pending = config.pending(&req);
        let span = tracing::debug_span!("request_scope", ?access, path = req.uri().path());
        // the service that was made ready handles this request; a fresh clone waits for the next
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(tracing::Instrument::instrument(
            async move {
                // a read waits for the client's queued commands first: applied ones add their
                // tokens; a write carries them on
                let (applied, mut still) =
                    if access == RequestAccess::ReadOnly && !pending.is_empty() {
                        config.wait_for(pending.clone()).await
                    } else {
                        (None, pending.clone())
                    };
                let scope = config.scope(&req, access == RequestAccess::ReadOnly, applied);
                let before = scope.last_write();
                let (resp, enqueued) = if config.queue.is_some() {
                    collecting_tickets(scope.run(inner.call(req))).await
                } else {
                    (scope.run(inner.call(req)).await, Vec::new())
                };
                let mut resp = resp?;
                if let Some(token) = config.outgoing(&scope, before) {
                    config.set_token(&mut resp, &token);
                }
                if config.queue.is_some() && config.cookie.is_some() {
                    still.extend(enqueued);
                    let keep = still.len().saturating_sub(MAX_PENDING_TICKETS);
                    config.set_pending(&mut resp, &pending, &still[keep..]);
                }
                Ok(resp)
            },
            span,
        ))
    }
}
