//! Typed CRUD for a sharded entity: name the shard-key column once, and inserts and key lookups
//! route by themselves. Every method takes the key (or a model holding it): a query with no key
//! does not compile; reads across shards go through [`fan_out`](ShardedRepository::fan_out).

use std::future::Future;

use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel,
    PrimaryKeyTrait, QueryFilter, Select, TransactionError, Value,
};

use super::fan_out::FanOut;
use super::handle::{shard_error, ShardedDatabase};
use super::key::ShardKey;
use crate::ReplicaError;

/// The model of a sharded repository's entity.
pub type ShardedModelOf<R> = <<R as ShardedRepository>::Entity as EntityTrait>::Model;
/// Its active model.
pub type ShardedActiveModelOf<R> = <<R as ShardedRepository>::Entity as EntityTrait>::ActiveModel;
/// Its primary key.
pub type ShardedIdOf<R> =
    <<<R as ShardedRepository>::Entity as EntityTrait>::PrimaryKey as PrimaryKeyTrait>::ValueType;

/// Typed CRUD for one sharded entity: `type Entity` and the shard-key column.
///
/// ```no_run
/// use sea_orm_replica::shard::{ShardedDatabase, ShardedRepository};
/// # use entity::banner;
/// struct Banners;
/// impl ShardedRepository for Banners {
///     type Entity = banner::Entity;
///     fn shard_key() -> banner::Column { banner::Column::AuthorId }
/// }
/// # async fn demo(shards: &ShardedDatabase) -> Result<(), sea_orm_replica::ReplicaError> {
/// let saved = Banners::insert(shards, banner::ActiveModel {
///     author_id: sea_orm::Set(Some(7)), name: sea_orm::Set("x".into()), ..Default::default()
/// }).await?;                                            // on the shard of author 7
/// let mine = Banners::find_by_key(shards, 7).await?;    // a replica of that shard
/// # Ok(()) }
/// ```
pub trait ShardedRepository: Send + Sync {
    /// The SeaORM entity.
    type Entity: EntityTrait<Model: Send + Sync + 'static>;

    /// The column whose value says which shard a row lives on.
    fn shard_key() -> <Self::Entity as EntityTrait>::Column;

    /// The starting point of every read (override to add a default filter).
    fn query() -> Select<Self::Entity> {
        Self::Entity::find()
    }

    /// Inserts a row on the shard of its shard-key value, in a read-write unit there, and
    /// returns it as stored. No value in the shard-key column: [`ReplicaError::ShardKeyMissing`].
    fn insert(
        shards: &ShardedDatabase,
        model: ShardedActiveModelOf<Self>,
    ) -> impl Future<Output = Result<ShardedModelOf<Self>, ReplicaError>> + Send
    where
        ShardedModelOf<Self>: IntoActiveModel<ShardedActiveModelOf<Self>>,
        ShardedActiveModelOf<Self>: ActiveModelBehavior + Send,
    {
        async move {
            let key = key_of::<Self>(&model)?;
            let db = shards.shard(key).await?;
            db.read_write(|unit| Box::pin(model.insert(unit)))
                .await
                .map_err(|e| on_shard(db, e))
        }
    }

    /// Updates the changed columns of a row on the shard of its shard-key value. Moving a row
    /// to another shard is not an update: insert it there and delete it here.
    fn update(
        shards: &ShardedDatabase,
        model: ShardedActiveModelOf<Self>,
    ) -> impl Future<Output = Result<ShardedModelOf<Self>, ReplicaError>> + Send
    where
        ShardedModelOf<Self>: IntoActiveModel<ShardedActiveModelOf<Self>>,
        ShardedActiveModelOf<Self>: ActiveModelBehavior + Send,
    {
        async move {
            let key = key_of::<Self>(&model)?;
            let db = shards.shard(key).await?;
            db.read_write(|unit| Box::pin(model.update(unit)))
                .await
                .map_err(|e| on_shard(db, e))
        }
    }

    /// Every row with shard key `key` (a read-only unit on that shard: a replica).
    fn find_by_key(
        shards: &ShardedDatabase,
        key: impl Into<ShardKey> + Send,
    ) -> impl Future<Output = Result<Vec<ShardedModelOf<Self>>, ReplicaError>> + Send {
        async move {
            let key = key.into();
            let select = Self::query().filter(Self::shard_key().eq(key_value(&key)));
            let db = shards.shard(key).await?;
            db.read_only(|unit| {
                let select = select.clone();
                Box::pin(async move { select.all(unit).await })
            })
            .await
            .map_err(|e| on_shard(db, e))
        }
    }

    /// Rows with shard key `key` matching `filter` (a read-only unit on that shard).
    fn find_by<F: sea_orm::sea_query::IntoCondition + Send + Clone + Sync>(
        shards: &ShardedDatabase,
        key: impl Into<ShardKey> + Send,
        filter: F,
    ) -> impl Future<Output = Result<Vec<ShardedModelOf<Self>>, ReplicaError>> + Send {
        async move {
            let key = key.into();
            let select = Self::query()
                .filter(Self::shard_key().eq(key_value(&key)))
                .filter(filter);
            let db = shards.shard(key).await?;
            db.read_only(|unit| {
                let select = select.clone();
                Box::pin(async move { select.all(unit).await })
            })
            .await
            .map_err(|e| on_shard(db, e))
        }
    }

    /// The row with primary key `id` on the shard of `key` (a read-only unit there).
    fn find_by_id(
        shards: &ShardedDatabase,
        key: impl Into<ShardKey> + Send,
        id: ShardedIdOf<Self>,
    ) -> impl Future<Output = Result<Option<ShardedModelOf<Self>>, ReplicaError>> + Send
    where
        ShardedIdOf<Self>: Send + Clone + Sync,
    {
        async move {
            let key = key.into();
            let select = Self::Entity::find_by_id(id).filter(Self::shard_key().eq(key_value(&key)));
            let db = shards.shard(key).await?;
            db.read_only(|unit| {
                let select = select.clone();
                Box::pin(async move { select.one(unit).await })
            })
            .await
            .map_err(|e| on_shard(db, e))
        }
    }

    /// Deletes the row with primary key `id` on the shard of `key`; returns the number of rows
    /// deleted (0 or 1).
    fn delete_by_id(
        shards: &ShardedDatabase,
        key: impl Into<ShardKey> + Send,
        id: ShardedIdOf<Self>,
    ) -> impl Future<Output = Result<u64, ReplicaError>> + Send
    where
        ShardedIdOf<Self>: Send,
    {
        async move {
            let key = key.into();
            let delete =
                Self::Entity::delete_by_id(id).filter(Self::shard_key().eq(key_value(&key)));
            let db = shards.shard(key).await?;
            db.read_write(|unit| {
                Box::pin(async move { Ok(delete.exec(unit).await?.rows_affected) })
            })
            .await
            .map_err(|e| on_shard(db, e))
        }
    }

    /// A read across every shard (see [`FanOut`]).
    fn fan_out(shards: &ShardedDatabase) -> FanOut<'_, Self::Entity> {
        shards.fan_out(Self::query())
    }
}

/// The shard key a model holds in `R`'s shard-key column.
pub fn key_of<R: ShardedRepository + ?Sized>(
    model: &ShardedActiveModelOf<R>,
) -> Result<ShardKey, ReplicaError> {
    let column = R::shard_key();
    model
        .get(column)
        .into_value()
        .as_ref()
        .and_then(ShardKey::from_value)
        .ok_or_else(|| ReplicaError::ShardKeyMissing {
            column: sea_orm::IdenStatic::as_str(&column).to_owned(),
        })
}

/// The key as a value to compare the shard-key column with.
fn key_value(key: &ShardKey) -> Value {
    match key {
        ShardKey::Int(i) => Value::BigInt(Some(*i)),
        ShardKey::Str(s) => Value::String(Some(s.clone())),
        ShardKey::Uuid(u) => Value::Uuid(Some(*u)),
    }
}

/// A unit's error on shard `db`, naming the shard.
fn on_shard(db: &crate::ReplicatedDatabase, e: TransactionError<sea_orm::DbErr>) -> ReplicaError {
    shard_error(db.shard_name().unwrap_or("?"), e.into())
}
