//! The banner service's routes: seeds/002's banner, saved and read back at once.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use entity::banner;
use sea_orm::{ActiveValue::Set, DbErr};
use sea_orm_replica::web::CausalLayer;
use sea_orm_replica::{ReplicatedDatabase, Repository};
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
