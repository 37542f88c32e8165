//! The banner service's routes: seeds/002's banner, saved and read back at once.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use entity::{author, banner};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, DbErr};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use sea_orm_replica::shard::{ShardedDatabase, ShardedRepository};
use sea_orm_replica::web::{CausalLayer, ShardChoice, ShardLayer};
use sea_orm_replica::{ReplicaError, ReplicatedDatabase, Repository};
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
    Db(DbErr),
}

impl From<DbErr> for ApiError {
    fn from(err: DbErr) -> Self {
        ApiError::Db(err)
    }
}

impl From<ReplicaError> for ApiError {
    fn from(err: ReplicaError) -> Self {
        ApiError::Db(err.into())
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

/// The service: routes, state, and the request-scoped routing layer (causal tokens in a cookie).
pub fn app(db: ReplicatedDatabase) -> Router {
    app_with(db, CausalLayer::new())
}

/// The service with a routing layer of your choosing (e.g. `CausalLayer::new().sticky(..)`).
pub fn app_with(db: ReplicatedDatabase, layer: CausalLayer) -> Router {
    Router::new()
        .route("/banners", post(create).get(list))
        .route("/banners/{id}", get(show))
        .with_state(db)
        .layer(layer)
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
