//! An author writes banners.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// An author (SeaORM 2.0 dense format, so the nested `ActiveModel::builder()` works).
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "author")]
pub struct Model {
    /// Primary key.
    #[sea_orm(primary_key)]
    pub id: i32,
    /// Display name.
    pub name: String,
    /// The banners this author wrote.
    #[sea_orm(has_many)]
    pub banners: HasMany<super::banner::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
