//! Repository traits: one impl block gives an entity typed CRUD.
//!
//! ```no_run
//! use sea_orm_replica::{Repository, ReplicatedDatabase};
//! # mod banner { pub use entity::banner::*; }
//! use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
//!
//! struct Banners;
//! impl Repository for Banners {
//!     type Entity = banner::Entity;
//! }
//!
//! impl Banners {
//!     // custom queries sit beside the generated ones
//!     async fn named<C: ConnectionTrait>(db: &C, name: &str) -> Result<Vec<banner::Model>, DbErr> {
//!         banner::Entity::find().filter(banner::Column::Name.eq(name)).all(db).await
//!     }
//! }
//!
//! # async fn demo(db: &ReplicatedDatabase) -> Result<(), DbErr> {
//! let unit = db.begin_read_only();
//! let first = Banners::find_by_id(&unit, 1).await?;
//! let page = Banners::page(&unit, 0, 20).await?;
//! // Banners::delete_by_id(&unit, 1) does not compile: a read-only unit is not `Writable`.
//! # Ok(()) }
//! ```
//!
//! Reads take any SeaORM connection (a unit of either kind, the handle, a plain connection);
//! writes take a [`Writable`] one, so a write on a read-only unit is a compile error.

use std::future::Future;

use sea_orm::{
    sea_query::IntoCondition, ActiveModelBehavior, ActiveModelTrait, ConnectionTrait, DbErr,
    EntityTrait, IntoActiveModel, ModelTrait, PaginatorTrait, PrimaryKeyTrait, QueryFilter,
    QuerySelect, Select,
};
use serde::Serialize;

use crate::unit::access::Writable;

/// The model of a repository's entity.
pub type ModelOf<R> = <<R as Repository>::Entity as EntityTrait>::Model;
/// The active model of a repository's entity.
pub type ActiveModelOf<R> = <<R as Repository>::Entity as EntityTrait>::ActiveModel;
/// The primary key value of a repository's entity.
pub type IdOf<R> =
    <<<R as Repository>::Entity as EntityTrait>::PrimaryKey as PrimaryKeyTrait>::ValueType;

/// One page of results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<M> {
    /// The rows of this page.
    pub items: Vec<M>,
    /// Zero-based page number.
    pub page: u64,
    /// Rows per page.
    pub per_page: u64,
    /// Rows in all pages.
    pub total_items: u64,
    /// Number of pages.
    pub total_pages: u64,
}

/// Typed CRUD for one entity. Implement it with `type Entity = …;` and nothing else.
pub trait Repository: Send + Sync {
    /// The SeaORM entity this repository serves.
    type Entity: EntityTrait<Model: Send + Sync + 'static>;

    /// A query over the entity: the starting point of every read. Override to add a default
    /// filter (e.g. hide soft-deleted rows).
    fn query() -> Select<Self::Entity> {
        Self::Entity::find()
    }

    /// Finds one row by primary key.
    fn find_by_id<C: ConnectionTrait>(
        db: &C,
        id: IdOf<Self>,
    ) -> impl Future<Output = Result<Option<ModelOf<Self>>, DbErr>> + Send
    where
        IdOf<Self>: Send,
    {
        async move { Self::Entity::find_by_id(id).one(db).await }
    }

    /// All rows.
    fn find_all<C: ConnectionTrait>(
        db: &C,
    ) -> impl Future<Output = Result<Vec<ModelOf<Self>>, DbErr>> + Send {
        async move { Self::query().all(db).await }
    }

    /// Rows matching a condition, e.g. `banner::Column::Name.eq("x")`.
    fn find_by<C: ConnectionTrait, F: IntoCondition + Send>(
        db: &C,
        filter: F,
    ) -> impl Future<Output = Result<Vec<ModelOf<Self>>, DbErr>> + Send {
        async move { Self::query().filter(filter).all(db).await }
    }

    /// The first row matching a condition.
    fn find_one_by<C: ConnectionTrait, F: IntoCondition + Send>(
        db: &C,
        filter: F,
    ) -> impl Future<Output = Result<Option<ModelOf<Self>>, DbErr>> + Send {
        async move { Self::query().filter(filter).one(db).await }
    }

    /// One page (zero-based) of rows in primary-key order.
    fn page<C: ConnectionTrait>(
        db: &C,
        page: u64,
        per_page: u64,
    ) -> impl Future<Output = Result<Page<ModelOf<Self>>, DbErr>> + Send {
        async move {
            let per_page = per_page.max(1);
            let paginator = Self::query().paginate(db, per_page);
            let totals = paginator.num_items_and_pages().await?;
            let items = paginator.fetch_page(page).await?;
            Ok(Page {
                items,
                page,
                per_page,
                total_items: totals.number_of_items,
                total_pages: totals.number_of_pages,
            })
        }
    }

    /// Number of rows.
    fn count<C: ConnectionTrait>(db: &C) -> impl Future<Output = Result<u64, DbErr>> + Send {
        async move { Self::query().count(db).await }
    }

    /// Number of rows matching a condition.
    fn count_by<C: ConnectionTrait, F: IntoCondition + Send>(
        db: &C,
        filter: F,
    ) -> impl Future<Output = Result<u64, DbErr>> + Send {
        async move { Self::query().filter(filter).count(db).await }
    }

    /// Whether a row with this primary key exists.
    fn exists<C: ConnectionTrait>(
        db: &C,
        id: IdOf<Self>,
    ) -> impl Future<Output = Result<bool, DbErr>> + Send
    where
        IdOf<Self>: Send,
    {
        async move {
            Ok(Self::Entity::find_by_id(id)
                .select_only()
                .expr(sea_orm::sea_query::Expr::val(1))
                .into_tuple::<i32>()
                .one(db)
                .await?
                .is_some())
        }
    }

    /// Inserts a row and returns it as stored.
    fn insert<C: Writable>(
        db: &C,
        model: ActiveModelOf<Self>,
    ) -> impl Future<Output = Result<ModelOf<Self>, DbErr>> + Send
    where
        ModelOf<Self>: IntoActiveModel<ActiveModelOf<Self>>,
        ActiveModelOf<Self>: Send,
    {
        async move { model.insert(db).await }
    }

    /// Inserts a row whose primary key is unset, updates it otherwise.
    fn save<C: Writable>(
        db: &C,
        model: ActiveModelOf<Self>,
    ) -> impl Future<Output = Result<ActiveModelOf<Self>, DbErr>> + Send
    where
        ModelOf<Self>: IntoActiveModel<ActiveModelOf<Self>>,
        ActiveModelOf<Self>: Send,
    {
        async move { ActiveModelTrait::save(model, db).await }
    }

    /// Updates the changed columns of a row and returns it.
    fn update<C: Writable>(
        db: &C,
        model: ActiveModelOf<Self>,
    ) -> impl Future<Output = Result<ModelOf<Self>, DbErr>> + Send
    where
        ModelOf<Self>: IntoActiveModel<ActiveModelOf<Self>>,
        ActiveModelOf<Self>: Send,
    {
        async move { ActiveModelTrait::update(model, db).await }
    }

    /// Deletes a row by primary key; returns the number of rows deleted (0 or 1).
    fn delete_by_id<C: Writable>(
        db: &C,
        id: IdOf<Self>,
    ) -> impl Future<Output = Result<u64, DbErr>> + Send
    where
        IdOf<Self>: Send,
    {
        async move { Ok(Self::Entity::delete_by_id(id).exec(db).await?.rows_affected) }
    }

    /// Deletes a row; returns the number of rows deleted (0 or 1).
    fn delete<C: Writable>(
        db: &C,
        model: ModelOf<Self>,
    ) -> impl Future<Output = Result<u64, DbErr>> + Send
    where
        ModelOf<Self>: IntoActiveModel<ActiveModelOf<Self>> + Send,
        ActiveModelOf<Self>: ActiveModelBehavior + Send,
    {
        async move { Ok(ModelTrait::delete(model, db).await?.rows_affected) }
    }
}
