//! The banner service's routes: seeds/002's banner, saved and read back at once.

use std::time::Duration;

use axum::extract::{FromRef, Path, Query as UrlQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use entity::{author, banner};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, DbErr};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use sea_orm_replica::observe::prometheus::PrometheusHandle;
use sea_orm_replica::queue::{Command, Queue, RedisBroker, Ticket};
use sea_orm_replica::shard::{ShardedDatabase, ShardedRepository};
use sea_orm_replica::web::{metrics_router, CausalLayer, ShardChoice, ShardLayer, StatusPage};
use sea_orm_replica::{ReadOnly, ReplicaError, ReplicatedDatabase, Repository, UnitOptions};
use serde::{Deserialize, Serialize};

struct Banners;
impl Repository for Banners {
    type Entity = banner::Entity;
}

/// `POST /banners` body.
#[derive(Debug, Deserialize)]
pub struct NewBanner {
    pub name: String,
}

/// A banner as the API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BannerOut {
    pub id: i32,
    pub name: String,
    pub author_id: Option<i32>,
}

impl From<banner::Model> for BannerOut {
    fn from(b: banner::Model) -> Self {
        BannerOut {
            id: b.id,
            name: b.name,
            author_id: b.author_id,
        }
    }
}

/// What a handler can fail with.
pub enum ApiError {
    NotFound,
    BadRequest(String),
    Unavailable(String),
    Db(DbErr),
}

impl From<DbErr> for ApiError {
    fn from(err: DbErr) -> Self {
        ApiError::Db(err)
    }
}

impl From<ReplicaError> for ApiError {
    fn from(err: ReplicaError) -> Self {
        match err {
            ReplicaError::QueueFull { .. } | ReplicaError::Broker(_) => {
                ApiError::Unavailable(err.to_string())
            }
            err => ApiError::Db(err.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({"error": "not found"})),
            )
                .into_response(),
            ApiError::BadRequest(why) => (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": why })),
            )
                .into_response(),
            ApiError::Unavailable(why) => {
                tracing::warn!(%why, "queue unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(serde_json::json!({"error": "try again later"})),
                )
                    .into_response()
            }
            ApiError::Db(err) => {
                tracing::error!(%err, "database error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(serde_json::json!({"error": "database error"})),
                )
                    .into_response()
            }
        }
    }
}

/// `POST /banners` → 201 `{"id": …}`, on the primary. The layer sends the causal token back.
async fn create(
    State(db): State<ReplicatedDatabase>,
    Json(body): Json<NewBanner>,
) -> Result<impl IntoResponse, ApiError> {
    let unit = db.begin_read_write();
    let saved = Banners::insert(
        &unit,
        banner::ActiveModel {
            name: Set(body.name),
            ..Default::default()
        },
    )
    .await?;
    unit.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "id": saved.id })),
    ))
}

/// `GET /banners/{id}` → 200 or 404, on a replica that has the client's writes.
async fn show(
    State(db): State<ReplicatedDatabase>,
    Path(id): Path<i32>,
) -> Result<Json<BannerOut>, ApiError> {
    let unit = db.begin_read_only();
    let found = Banners::find_by_id(&unit, id).await?;
    found.map(|b| Json(b.into())).ok_or(ApiError::NotFound)
}

/// `GET /banners` → the list (the handle itself: a replica, in this read-only request).
async fn list(State(db): State<ReplicatedDatabase>) -> Result<Json<Vec<BannerOut>>, ApiError> {
    Ok(Json(
        Banners::find_all(&db)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// One view of a banner, counted write-behind: the request stores it on the queue and
/// returns; a worker adds it to `banner_views`. One banner's views apply in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddView {
    pub banner_id: i32,
}

impl Command for AddView {
    const NAME: &'static str = "add_view";
    fn key(&self) -> Option<String> {
        Some(self.banner_id.to_string())
    }
}

/// The view counter's queue on `broker`: `AddView` adds one to the banner's row of
/// `banner_views` (an upsert), in a read-write unit on the primary, exactly once.
pub fn views_queue(broker: RedisBroker) -> Result<Queue, ReplicaError> {
    Queue::builder("banner_views")
        .broker(broker)
        .handle(|view: AddView, unit| {
            Box::pin(async move {
                let views = Alias::new("views");
                let upsert = Query::insert()
                    .into_table(Alias::new("banner_views"))
                    .columns([Alias::new("banner_id"), views.clone()])
                    .values_panic([view.banner_id.into(), 1i64.into()])
                    .on_conflict(
                        OnConflict::column(Alias::new("banner_id"))
                            .value(
                                views.clone(),
                                Expr::col((Alias::new("banner_views"), views)).add(1),
                            )
                            .to_owned(),
                    )
                    .to_owned();
                unit.execute(&upsert).await.map(drop)
            })
        })
        .build()
}

/// The service's state: the handle, and the view counter's queue when there is a broker.
#[derive(Clone)]
pub struct AppState {
    pub db: ReplicatedDatabase,
    pub views: Option<Queue>,
}

impl FromRef<AppState> for ReplicatedDatabase {
    fn from_ref(state: &AppState) -> Self {
        state.db.clone()
    }
}

/// `POST /banners/{id}/views` → 202 `{"ticket": …}` once the queue holds the view durably
/// (no database round trip on the request path); 503 without a queue or when it is full.
async fn add_view(
    State(state): State<AppState>,
    Path(id): Path<i32>,
) -> Result<impl IntoResponse, ApiError> {
    let queue = state
        .views
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("no queue: set REDIS_URL".into()))?;
    let ticket = queue.enqueue(&AddView { banner_id: id }).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "ticket": ticket.to_string() })),
    ))
}

/// `GET /banners/{id}/views` query: `after`, a ticket from `POST …/views`.
#[derive(Debug, Deserialize)]
pub struct ViewsQuery {
    pub after: Option<String>,
}

/// `GET /banners/{id}/views[?after=TICKET]` → `{"views": n}` from a replica. With `after`,
/// waits (at most 2 s) until that view is applied, then reads only where its commit is
/// visible: the client sees its own view counted.
async fn views(
    State(state): State<AppState>,
    Path(id): Path<i32>,
    UrlQuery(query): UrlQuery<ViewsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut options = UnitOptions::new();
    if let (Some(queue), Some(after)) = (&state.views, query.after) {
        let ticket: Ticket = after
            .parse()
            .map_err(|_| ApiError::BadRequest("`after` is a ticket (a uuid)".into()))?;
        if let Some(token) = queue.wait(&ticket, Duration::from_secs(2)).await? {
            options = options.after(&token);
        }
    }
    let unit = state.db.begin_unit::<ReadOnly>(options);
    let select = Query::select()
        .column(Alias::new("views"))
        .from(Alias::new("banner_views"))
        .and_where(Expr::col(Alias::new("banner_id")).eq(id))
        .to_owned();
    let row = unit.query_one(&select).await?;
    let views = match row {
        Some(row) => row.try_get_by_index::<i64>(0)?,
        None => 0,
    };
    Ok(Json(serde_json::json!({ "banner_id": id, "views": views })))
}

/// The service: routes, state, and the request-scoped routing layer (causal tokens in a cookie).
pub fn app(db: ReplicatedDatabase) -> Router {
    app_with(db, CausalLayer::new())
}

/// The service with a routing layer of your choosing (e.g. `CausalLayer::new().sticky(..)`).
pub fn app_with(db: ReplicatedDatabase, layer: CausalLayer) -> Router {
    app_with_state(AppState { db, views: None }, layer)
}

/// The service with the view counter's queue (a worker applies it: [`Queue::worker`]). The
/// layer carries a client's view tickets in a cookie, so its next GET waits for them.
pub fn app_with_views(db: ReplicatedDatabase, views: Queue) -> Router {
    let layer = CausalLayer::new().queue(views.clone(), Duration::from_secs(2));
    app_with_state(
        AppState {
            db,
            views: Some(views),
        },
        layer,
    )
}

fn app_with_state(state: AppState, layer: CausalLayer) -> Router {
    Router::new()
        .route("/banners", post(create).get(list))
        .route("/banners/{id}", get(show))
        .route("/banners/{id}/views", post(add_view).get(views))
        .with_state(state)
        .layer(layer)
}

/// The operator's routes, outside the routing layer: the status page at `/_db/status` (JSON at
/// `/_db/status/status.json`) and, given a Prometheus handle, the metrics at `/_db/metrics`.
/// Merge them into the service: `app(db).merge(ops(StatusPage::new(&db), Some(handle)))`.
pub fn ops(page: StatusPage, metrics: Option<PrometheusHandle>) -> Router {
    let router = Router::new().nest("/_db/status", page.router());
    match metrics {
        Some(handle) => router.nest("/_db/metrics", metrics_router(handle)),
        None => router,
    }
}

/// Banners sharded by author: each author's banners live on one shard.
struct ShardedBanners;
impl ShardedRepository for ShardedBanners {
    type Entity = banner::Entity;
    fn shard_key() -> banner::Column {
        banner::Column::AuthorId
    }
}

/// `POST /authors/{author}/banners` → 201 `{"id": …}`, on the primary of the author's shard.
async fn sharded_create(
    State(shards): State<ShardedDatabase>,
    Path(author): Path<i32>,
    Json(body): Json<NewBanner>,
) -> Result<impl IntoResponse, ApiError> {
    // the author's row lives on the same shard (the banner's foreign key): one unit there
    let db = shards.shard(author).await?;
    let unit = db.begin_read_write();
    let known = author::Entity::insert(author::ActiveModel {
        id: Set(author),
        name: Set(format!("author {author}")),
    })
    .on_conflict(
        OnConflict::column(author::Column::Id)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(&unit)
    .await;
    if let Err(err) = known {
        if !matches!(err, DbErr::RecordNotInserted) {
            return Err(err.into());
        }
    }
    let saved = banner::ActiveModel {
        name: Set(body.name),
        author_id: Set(Some(author)),
        ..Default::default()
    }
    .insert(&unit)
    .await?;
    unit.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "id": saved.id })),
    ))
}

/// `GET /authors/{author}/banners/{id}` → 200 or 404, on a replica of the author's shard that
/// has the client's writes there. (Ids are per shard here: an `i32` sequence on each.)
async fn sharded_show(
    State(shards): State<ShardedDatabase>,
    Path((author, id)): Path<(i32, i32)>,
) -> Result<Json<BannerOut>, ApiError> {
    let found = ShardedBanners::find_by_id(&shards, author, id).await?;
    found.map(|b| Json(b.into())).ok_or(ApiError::NotFound)
}

/// `GET /authors/{author}/banners` → the author's banners (one shard).
async fn sharded_by_author(
    State(shards): State<ShardedDatabase>,
    Path(author): Path<i32>,
) -> Result<Json<Vec<BannerOut>>, ApiError> {
    let found = ShardedBanners::find_by_key(&shards, author).await?;
    Ok(Json(found.into_iter().map(Into::into).collect()))
}

/// `GET /banners` → the newest 50 banners of every shard, merged (a fan-out read).
async fn sharded_list(
    State(shards): State<ShardedDatabase>,
) -> Result<Json<Vec<BannerOut>>, ApiError> {
    let newest = shards
        .fan_out(banner::Entity::find().filter(banner::Column::AuthorId.is_not_null()))
        .order_by_desc(banner::Column::AuthorId)
        .order_by_desc(banner::Column::Id)
        .limit(50)
        .all()
        .await?;
    Ok(Json(newest.into_iter().map(Into::into).collect()))
}

/// The sharded mode: banners by author over several shards. Each `/authors/{author}/…`
/// request is locked to the author's shard (`ShardLayer`); the causal cookie carries one
/// position per shard.
pub fn sharded_app(shards: ShardedDatabase) -> Router {
    let shard_of_author = ShardLayer::new(shards.clone(), |head: &axum::http::request::Parts| {
        let mut segments = head.uri.path().split('/').skip(1);
        match (segments.next(), segments.next()) {
            (Some("authors"), Some(author)) => Some(author.parse::<i32>().map_or_else(
                |_| ShardChoice::Name(String::new()),
                |a| ShardChoice::Key(a.into()),
            )),
            _ => None,
        }
    })
    .lock();
    Router::new()
        .route("/banners", get(sharded_list))
        .route(
            "/authors/{author}/banners",
            post(sharded_create).get(sharded_by_author),
        )
        .route("/authors/{author}/banners/{id}", get(sharded_show))
        .with_state(shards)
        .layer(shard_of_author)
        .layer(CausalLayer::new())
}
