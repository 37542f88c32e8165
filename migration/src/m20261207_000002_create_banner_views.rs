use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Views per banner, counted write-behind (the banner service's queue).
#[derive(DeriveIden)]
enum BannerViews {
    Table,
    BannerId,
    Views,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(BannerViews::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(BannerViews::BannerId)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(BannerViews::Views).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(BannerViews::Table).to_owned())
            .await
    }
}
