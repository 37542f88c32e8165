//! Request-scoped shard choice: a tower layer that picks each request's shard (from a path
//! segment, a header, the subdomain: any function of the request head) and runs the request
//! in a [`ShardScope`](crate::shard::ShardScope), optionally locked so code cannot switch
//! shards mid-request. Rails' `ShardSelector`.
//!
//! Inside the request, [`ShardedDatabase::current`] is the chosen shard. With `lock`, asking
//! the handle for any other shard fails with `ReplicaError::ShardLocked`.
//! The selector's answer is client input: an unknown shard name or a key no shard holds
//! answers `404 Not Found` without calling the service; a lookup that fails (a directory's
//! database down) answers `503 Service Unavailable`.
//!
//! Put it beside [`CausalLayer`](super::CausalLayer): the token cookie carries one position
//! per shard, so read-your-writes follows each shard.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use sea_orm_replica::shard::ShardedDatabase;
//! use sea_orm_replica::web::{CausalLayer, ShardChoice, ShardLayer};
//!
//! # fn demo(shards: ShardedDatabase) {
//! let app: Router = Router::new()
//!     .route("/tenants/{tenant}/orders", get(|| async { "…" }))
//!     .layer(ShardLayer::new(shards, |head: &http::request::Parts| {
//!         // /tenants/<tenant>/...: the tenant is the shard key
//!         head.uri.path().split('/').nth(2).map(|t| ShardChoice::Key(t.into()))
//!     }).lock())
//!     .layer(CausalLayer::new());
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{request::Parts, Request, Response, StatusCode};

use crate::shard::{ShardKey, ShardedDatabase};
use crate::ReplicaError;

/// What a selector says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardChoice {
    /// The shard that holds this key (the sharding strategy decides).
    Key(ShardKey),
    /// The shard with this name.
    Name(String),
}

type Selector = dyn Fn(&Parts) -> Option<ShardChoice> + Send + Sync;

/// Picks each request's shard. See the [module docs](self).
#[derive(Clone)]
pub struct ShardLayer {
    shards: ShardedDatabase,
    select: Arc<Selector>,
    lock: bool,
}

impl std::fmt::Debug for ShardLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardLayer")
            .field("shards", &self.shards)
            .field("lock", &self.lock)
            .finish()
    }
}

impl ShardLayer {
    /// A layer whose `select` reads the request head; `None`: the request has no shard (it
    /// runs unscoped, and can still ask the handle for any shard).
    pub fn new(
        shards: ShardedDatabase,
        select: impl Fn(&Parts) -> Option<ShardChoice> + Send + Sync + 'static,
    ) -> Self {
        ShardLayer {
            shards,
            select: Arc::new(select),
            lock: false,
        }
    }

    /// The shard key is the value of header `name` (absent: no shard).
    pub fn from_header(shards: ShardedDatabase, name: http::HeaderName) -> Self {
        Self::new(shards, move |head| {
            head.headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .map(|v| ShardChoice::Key(v.trim().into()))
        })
    }

    /// The shard key is the first label of the host name (`acme.example.com` → `acme`).
    pub fn from_subdomain(shards: ShardedDatabase) -> Self {
        Self::new(shards, |head| {
            let host = head
                .headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .or_else(|| head.uri.host())?;
            let label = host.split('.').next()?;
            (!label.is_empty() && host.contains('.')).then(|| ShardChoice::Key(label.into()))
        })
    }

    /// Locks each request to its shard: asking the handle for another shard inside the
    /// request fails with [`ReplicaError::ShardLocked`].
    pub fn lock(mut self) -> Self {
        self.lock = true;
        self
    }
}

impl<S> tower_layer::Layer<S> for ShardLayer {
    type Service = ShardService<S>;

    fn layer(&self, inner: S) -> ShardService<S> {
        ShardService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ShardLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct ShardService<S> {
    inner: S,
    layer: ShardLayer,
}

impl<S: std::fmt::Debug> std::fmt::Debug for ShardService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardService")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for ShardService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (head, body) = req.into_parts();
        let choice = (self.layer.select)(&head);
        let req = Request::from_parts(head, body);
        let layer = self.layer.clone();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let name = match choice {
                None => return inner.call(req).await,
                Some(ShardChoice::Name(name)) => Ok(name),
                Some(ShardChoice::Key(key)) => layer.shards.locate(key).await.map(str::to_owned),
            };
            let scope = name.and_then(|name| layer.shards.scope(&name, layer.lock));
            match scope {
                Ok(scope) => {
                    let span = tracing::debug_span!("shard_scope", lock = layer.lock);
                    tracing::Instrument::instrument(scope.run(inner.call(req)), span).await
                }
                Err(err) => {
                    let status = match err {
                        ReplicaError::UnknownShard { .. } | ReplicaError::NoShardForKey { .. } => {
                            StatusCode::NOT_FOUND
                        }
                        _ => StatusCode::SERVICE_UNAVAILABLE,
                    };
                    tracing::debug!(error = %err, %status, "no shard for the request");
                    let mut resp = Response::new(ResBody::default());
                    *resp.status_mut() = status;
                    Ok(resp)
                }
            }
        })
    }
}
