//! Migrations of the example schema: authors, banners and their view counts, and the
//! library's `sor_applied`.

pub use sea_orm_migration::prelude::*;

mod m20261121_000001_create_author_and_banner;
mod m20261207_000002_create_banner_views;

/// The example schema's migrator.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_create_author_and_banner::Migration),
            // where replayed units and queued commands record that they were applied
            Box::new(sea_orm_replica::replay::AppliedTableMigration),
            Box::new(m20261207_000002_create_banner_views::Migration),
        ]
    }
}
