//! Reading across shards: one SeaORM `Select` on every shard at once (read-only, each on a
//! replica per the usual routing), merged.
//!
//! Ordering, limits and offsets are given to the [`FanOut`], not to the `Select`: each shard
//! is asked for its first `offset + limit` rows in that order, and the sorted shard results
//! are merged ([`merge::kway_merge`](super::merge::kway_merge)) before the offset and limit are
//! applied again. Sort keys compare as the servers sort them for numbers, dates, times and
//! uuids; strings compare byte-wise, which is the server's order under a binary (`C`)
//! collation only: sort across shards by columns with such a collation (or by non-string
//! columns).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use futures_util::stream::{self, StreamExt};
use sea_orm::sea_query::{Alias, Expr, Func};
use sea_orm::{
    ColumnTrait, EntityTrait, IdenStatic, ModelTrait, Order, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Select, Value,
};

use super::handle::{shard_error, ShardedDatabase};
use super::merge::{compare_values, kway_merge};
use crate::backend::Dialect;
use crate::repository::Page;
use crate::unit::access::ReadOnly;
use crate::unit::UnitOfWork;
use crate::{ReplicaError, ReplicatedDatabase};

/// A shard a partial fan-out read could not read, and why.
#[derive(Debug)]
pub struct MissingShard {
    /// The shard's name.
    pub shard: String,
    /// What failed there.
    pub error: ReplicaError,
}

/// A fan-out result that may lack some shards: what the others answered, and which shards are
/// missing.
#[derive(Debug)]
pub struct Partial<T> {
    /// The merged answer of the shards that answered.
    pub value: T,
    /// The shards that did not, by name, with their errors. Empty: the answer is complete.
    pub missing: Vec<MissingShard>,
}

impl<T> Partial<T> {
    /// True when every shard answered.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Whether a shard that fails fails the whole read ([`Strict`]) or is reported missing
/// ([`AllowPartial`]).
pub trait Completeness: sealed::Sealed + Send + Sync + 'static {
    /// What a read returns.
    type Out<T>;
    #[doc(hidden)]
    const PARTIAL: bool;
    #[doc(hidden)]
    fn wrap<T>(value: T, missing: Vec<MissingShard>) -> Self::Out<T>;
}

/// A shard that fails fails the whole read, with an error naming it (the default).
#[derive(Debug, Clone, Copy)]
pub struct Strict;

/// A shard that fails is left out and listed in [`Partial::missing`].
#[derive(Debug, Clone, Copy)]
pub struct AllowPartial;

impl sealed::Sealed for Strict {}
impl sealed::Sealed for AllowPartial {}

impl Completeness for Strict {
    type Out<T> = T;
    const PARTIAL: bool = false;
    fn wrap<T>(value: T, _missing: Vec<MissingShard>) -> T {
        value
    }
}

impl Completeness for AllowPartial {
    type Out<T> = Partial<T>;
    const PARTIAL: bool = true;
    fn wrap<T>(value: T, missing: Vec<MissingShard>) -> Partial<T> {
        Partial { value, missing }
    }
}

/// One read-only `Select` on every shard, merged. Made by [`ShardedDatabase::fan_out`].
///
/// ```no_run
/// # use sea_orm_replica::shard::ShardedDatabase;
/// # use entity::banner;
/// use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
/// # async fn demo(shards: &ShardedDatabase) -> Result<(), sea_orm_replica::ReplicaError> {
/// let newest = shards
///     .fan_out(banner::Entity::find().filter(banner::Column::Name.starts_with("spring")))
///     .order_by_desc(banner::Column::Id)
///     .limit(20)
///     .all()
///     .await?;
/// let total = shards.fan_out(banner::Entity::find()).count().await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct FanOut<'a, E: EntityTrait, M: Completeness = Strict> {
    shards: &'a ShardedDatabase,
    select: Select<E>,
    order: Vec<(E::Column, Order)>,
    limit: Option<u64>,
    offset: u64,
    concurrency: usize,
    mode: PhantomData<M>,
}

impl ShardedDatabase {
    /// A read across every shard of `select` (read-only; see [`FanOut`]).
    pub fn fan_out<E: EntityTrait>(&self, select: Select<E>) -> FanOut<'_, E, Strict> {
        FanOut {
            shards: self,
            select,
            order: Vec::new(),
            limit: None,
            offset: 0,
            concurrency: self.fan_out_limit(),
            mode: PhantomData,
        }
    }
}

impl<'a, E, M> FanOut<'a, E, M>
where
    E: EntityTrait,
    E::Model: Send + Sync,
    M: Completeness,
{
    /// Sorts by `column` (then by the next `order_by`). Rows equal on every sort column come
    /// in shard order.
    pub fn order_by(mut self, column: E::Column, order: Order) -> Self {
        self.order.push((column, order));
        self
    }

    /// Sorts ascending by `column`.
    pub fn order_by_asc(self, column: E::Column) -> Self {
        self.order_by(column, Order::Asc)
    }

    /// Sorts descending by `column`.
    pub fn order_by_desc(self, column: E::Column) -> Self {
        self.order_by(column, Order::Desc)
    }

    /// At most `n` rows in all.
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// Skips the first `n` rows of the merged order. Each shard is asked for `offset + limit`
    /// rows: deep offsets cost every shard that many; prefer keyset paging (a filter on the
    /// sort key) for deep pages.
    pub fn offset(mut self, n: u64) -> Self {
        self.offset = n;
        self
    }

    /// How many shards are asked at once (default: the handle's, 16).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Shards that fail are listed as missing instead of failing the read.
    pub fn allow_partial(self) -> FanOut<'a, E, AllowPartial> {
        FanOut {
            shards: self.shards,
            select: self.select,
            order: self.order,
            limit: self.limit,
            offset: self.offset,
            concurrency: self.concurrency,
            mode: PhantomData,
        }
    }

    /// Runs `read` on every shard in a read-only unit (retried on another node when one fails,
    /// as [`ReplicatedDatabase::read_only`] does), at most `concurrency` at once. Results come
    /// back in shard order; failures fail the read (strict) or are listed.
    async fn each<T, F>(&self, read: F) -> Result<(Vec<T>, Vec<MissingShard>), ReplicaError>
    where
        T: Send,
        F: for<'u> Fn(
                &'u UnitOfWork<ReadOnly>,
            ) -> std::pin::Pin<
                Box<dyn Future<Output = Result<T, sea_orm::DbErr>> + Send + 'u>,
            > + Send
            + Sync,
    {
        let read = &read;
        // boxed in a loop, not built by a closure: the future stays `Send` for callers that
        // need it (axum handlers), which a closure over borrowed tuples defeats
        type Run<'r, T> =
            Pin<Box<dyn Future<Output = (usize, &'r str, Result<T, ReplicaError>)> + Send + 'r>>;
        let mut runs: Vec<Run<'_, T>> = Vec::with_capacity(self.shards.names().len());
        for (i, (name, db)) in self.shards.shards().enumerate() {
            runs.push(Box::pin(async move { (i, name, run_on(db, read).await) }));
        }
        let mut done: Vec<_> = stream::iter(runs)
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        done.sort_by_key(|(i, _, _)| *i);
        let mut values = Vec::with_capacity(done.len());
        let mut missing = Vec::new();
        for (_, name, result) in done {
            match result {
                Ok(v) => values.push(v),
                Err(e) if M::PARTIAL => missing.push(MissingShard {
                    shard: name.to_owned(),
                    error: e,
                }),
                Err(e) => return Err(shard_error(name, e)),
            }
        }
        if !missing.is_empty() {
            tracing::warn!(missing = ?missing.iter().map(|m| &m.shard).collect::<Vec<_>>(), "fan-out read without some shards");
        }
        Ok((values, missing))
    }

    /// Every row, merged in the fan-out's order (shard order when none), after `offset`, at
    /// most `limit`.
    pub async fn all(self) -> Result<M::Out<Vec<E::Model>>, ReplicaError> {
        let mut select = self.select.clone();
        for (column, order) in &self.order {
            select = select.order_by(*column, order.clone());
        }
        if let Some(limit) = self.limit {
            select = select.limit(limit.saturating_add(self.offset));
        }
        let (lists, missing) = self
            .each(|unit| {
                let select = select.clone();
                Box::pin(async move { select.all(unit).await })
            })
            .await?;
        let nulls_high = Dialect(self.shards.backend()).nulls_sort_high();
        let order = &self.order;
        let skip = usize::try_from(self.offset).unwrap_or(usize::MAX);
        let take = self.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
        let rows = kway_merge(lists, skip, take, |a, b| {
            for (column, dir) in order {
                let ord = compare_values(&a.get(*column), &b.get(*column), nulls_high);
                let ord = if matches!(dir, Order::Desc) {
                    ord.reverse()
                } else {
                    ord
                };
                if ord.is_ne() {
                    return ord;
                }
            }
            std::cmp::Ordering::Equal
        });
        Ok(M::wrap(rows, missing))
    }

    /// Number of rows on all shards (ignores order, limit and offset).
    pub async fn count(self) -> Result<M::Out<u64>, ReplicaError> {
        let select = self.select.clone();
        let (counts, missing) = self
            .each(|unit| {
                let select = select.clone();
                Box::pin(async move { select.count(unit).await })
            })
            .await?;
        Ok(M::wrap(counts.into_iter().sum(), missing))
    }

    /// Per shard: `SUM(column)` cast to a float (`exact`: to a 64-bit integer), and
    /// `COUNT(column)`.
    async fn sums(
        &self,
        column: E::Column,
        exact: bool,
    ) -> Result<(Vec<(Option<f64>, Option<i64>, i64)>, Vec<MissingShard>), ReplicaError> {
        let dialect = Dialect(self.shards.backend());
        let col = Expr::col((E::default(), column.as_str().to_owned()));
        let cast = if exact {
            dialect.integer_type()
        } else {
            dialect.float_type()
        };
        let sum = Func::cast_as(Func::sum(col.clone()), Alias::new(cast));
        let select = self
            .select
            .clone()
            .select_only()
            .column_as(Expr::expr(sum), "sor_sum")
            .column_as(Expr::expr(Func::count(col)), "sor_count");
        self.each(|unit| {
            let select = select.clone();
            Box::pin(async move {
                let (float, int, count) = if exact {
                    let row = select.into_tuple::<(Option<i64>, i64)>().one(unit).await?;
                    row.map_or((None, None, 0), |(s, c)| (None, s, c))
                } else {
                    let row = select.into_tuple::<(Option<f64>, i64)>().one(unit).await?;
                    row.map_or((None, None, 0), |(s, c)| (s, None, c))
                };
                Ok((float, int, count))
            })
        })
        .await
    }

    /// `SUM(column)` over all shards as a float (`None` when no shard has a non-NULL value).
    pub async fn sum(self, column: E::Column) -> Result<M::Out<Option<f64>>, ReplicaError> {
        let (sums, missing) = self.sums(column, false).await?;
        let total = sums
            .iter()
            .filter_map(|s| s.0)
            .fold(None, |acc: Option<f64>, v| Some(acc.unwrap_or(0.0) + v));
        Ok(M::wrap(total, missing))
    }

    /// `SUM(column)` over all shards, exact, for integer columns (each shard's sum must fit an
    /// `i64`; the total is checked: overflow is an error).
    pub async fn sum_i64(self, column: E::Column) -> Result<M::Out<Option<i64>>, ReplicaError> {
        let (sums, missing) = self.sums(column, true).await?;
        let mut total: Option<i64> = None;
        for v in sums.iter().filter_map(|s| s.1) {
            total = Some(total.unwrap_or(0).checked_add(v).ok_or_else(|| {
                ReplicaError::Config(format!(
                    "the sum of `{}` over all shards overflows an i64",
                    column.as_str()
                ))
            })?);
        }
        Ok(M::wrap(total, missing))
    }

    /// `AVG(column)` over all shards: the sum of the shards' sums over the sum of their
    /// counts of non-NULL values (not an average of averages).
    pub async fn avg(self, column: E::Column) -> Result<M::Out<Option<f64>>, ReplicaError> {
        let (sums, missing) = self.sums(column, false).await?;
        let count: i64 = sums.iter().map(|s| s.2).sum();
        let sum: f64 = sums.iter().filter_map(|s| s.0).sum();
        Ok(M::wrap((count > 0).then(|| sum / count as f64), missing))
    }

    /// The smallest non-NULL value of `column` over all shards.
    pub async fn min(self, column: E::Column) -> Result<M::Out<Option<Value>>, ReplicaError> {
        self.extreme(column, Order::Asc).await
    }

    /// The largest non-NULL value of `column` over all shards.
    pub async fn max(self, column: E::Column) -> Result<M::Out<Option<Value>>, ReplicaError> {
        self.extreme(column, Order::Desc).await
    }

    async fn extreme(
        self,
        column: E::Column,
        order: Order,
    ) -> Result<M::Out<Option<Value>>, ReplicaError> {
        let select = self
            .select
            .clone()
            .filter(column.is_not_null())
            .order_by(column, order.clone())
            .limit(1);
        let (firsts, missing) = self
            .each(|unit| {
                let select = select.clone();
                Box::pin(async move { select.one(unit).await })
            })
            .await?;
        let nulls_high = Dialect(self.shards.backend()).nulls_sort_high();
        let best = firsts
            .into_iter()
            .flatten()
            .map(|m| m.get(column))
            .reduce(|a, b| {
                let ord = compare_values(&a, &b, nulls_high);
                let keep_a = if matches!(order, Order::Desc) {
                    ord.is_ge()
                } else {
                    ord.is_le()
                };
                if keep_a {
                    a
                } else {
                    b
                }
            });
        Ok(M::wrap(best, missing))
    }
}

impl<'a, E> FanOut<'a, E, Strict>
where
    E: EntityTrait,
    E::Model: Send + Sync,
{
    /// Page `page` (zero-based) of `per_page` rows in the fan-out's order, with the totals.
    pub async fn page(self, page: u64, per_page: u64) -> Result<Page<E::Model>, ReplicaError> {
        let per_page = per_page.max(1);
        let counted = FanOut {
            shards: self.shards,
            select: self.select.clone(),
            order: Vec::new(),
            limit: None,
            offset: 0,
            concurrency: self.concurrency,
            mode: PhantomData::<Strict>,
        };
        let total_items = counted.count().await?;
        let items = self
            .offset(page.saturating_mul(per_page))
            .limit(per_page)
            .all()
            .await?;
        Ok(Page {
            items,
            page,
            per_page,
            total_items,
            total_pages: total_items.div_ceil(per_page),
        })
    }
}

/// Runs `read` in a read-only unit of `db`, retried like [`ReplicatedDatabase::read_only`].
async fn run_on<T, F>(db: &ReplicatedDatabase, read: &F) -> Result<T, ReplicaError>
where
    T: Send,
    F: for<'u> Fn(
            &'u UnitOfWork<ReadOnly>,
        )
            -> std::pin::Pin<Box<dyn Future<Output = Result<T, sea_orm::DbErr>> + Send + 'u>>
        + Send
        + Sync,
{
    Ok(db.read_only(|unit| read(unit)).await?)
}
