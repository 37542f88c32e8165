//! Example entities for sea-orm-replica: the banner of seeds/002 and its author.

pub mod author;
pub mod banner;

/// Everything, for `use entity::prelude::*`.
pub mod prelude {
    pub use super::author::Entity as Author;
    pub use super::banner::Entity as Banner;
}
