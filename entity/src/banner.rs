//! A banner: saved, then read back at once (seeds/002).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A banner (SeaORM 2.0 dense format).
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "banner")]
pub struct Model {
    /// Primary key.
    #[sea_orm(primary_key)]
    pub id: i32,
    /// What the banner says.
    pub name: String,
    /// Who wrote it, if known.
    pub author_id: Option<i32>,
    /// The banner's author.
    #[sea_orm(belongs_to, from = "author_id", to = "id")]
    pub author: HasOne<super::author::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
