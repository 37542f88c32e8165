//! An author writes banners.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// An author.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "author")]
pub struct Model {
    /// Primary key.
    #[sea_orm(primary_key)]
    pub id: i32,
    /// Display name.
    pub name: String,
}

/// Relations of an author.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The banners this author wrote.
    #[sea_orm(has_many = "super::banner::Entity")]
    Banner,
}

impl Related<super::banner::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Banner.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
