//! The transaction a plain SeaORM `begin` on the handle returns.
//!
//! [`ReplicatedDatabase`](crate::ReplicatedDatabase) implements [`TransactionTrait`], so code
//! written for a `DatabaseConnection` (`db.begin()`, `db.transaction(|txn| …)`) keeps working.
//! What it gets back is a [`ReplicatedTransaction`]: a unit of work underneath, so it has every
//! promise of one (lazy connection, cancel safety, session reset, causal tokens in a scope):
//!
//! * outside a read-only scope, a read-write unit on the primary (or, asked for
//!   [`AccessMode::ReadOnly`], a read-only unit on the primary's read-only sessions);
//! * inside a [`read_only_scope`](crate::read_only_scope), a read-only unit in one transaction
//!   on the node the scope reads from, refusing writes like any read-only unit.

use std::future::Future;
use std::pin::Pin;

use sea_orm::{
    AccessMode, ConnectionTrait, DbBackend, DbErr, ExecResult, IsolationLevel, QueryResult,
    Statement, StreamTrait, TransactionError, TransactionOptions, TransactionSession,
    TransactionTrait,
};
use tracing::Span;

use super::access::{ReadOnly, ReadWrite, Writable};
use super::{run_in, UnitOfWork, UnitStream};

/// A transaction begun on the handle with SeaORM's [`TransactionTrait`]: a read-write unit, or a
/// read-only one inside a read-only scope. Commit it, roll it back, or drop it to roll back.
///
/// ```no_run
/// # use sea_orm_replica::ReplicatedDatabase;
/// # use sea_orm::{ConnectionTrait, TransactionTrait};
/// # async fn demo(db: &ReplicatedDatabase) -> Result<(), sea_orm::DbErr> {
/// let txn = db.begin().await?;   // no connection taken yet
/// txn.execute_unprepared("UPDATE banner SET shown = shown + 1").await?;
/// txn.commit().await
/// # }
/// ```
#[must_use = "a transaction does nothing until a statement runs in it, and rolls back when dropped"]
#[derive(Debug)]
pub struct ReplicatedTransaction(Kind);

#[derive(Debug)]
enum Kind {
    ReadWrite(UnitOfWork<ReadWrite>),
    ReadOnly(UnitOfWork<ReadOnly>),
}

/// `$body` with `$unit` bound to the unit underneath, whichever kind it is.
macro_rules! each {
    ($kind:expr, |$unit:ident| $body:expr) => {
        match $kind {
            Kind::ReadWrite($unit) => $body,
            Kind::ReadOnly($unit) => $body,
        }
    };
}

/// `$body` (a future of a unit of the same kind), wrapped back into a transaction.
macro_rules! same_kind {
    ($kind:expr, |$unit:ident| $body:expr) => {
        Ok(ReplicatedTransaction(match $kind {
            Kind::ReadWrite($unit) => Kind::ReadWrite($body.await?),
            Kind::ReadOnly($unit) => Kind::ReadOnly($body.await?),
        }))
    };
}

impl From<UnitOfWork<ReadWrite>> for ReplicatedTransaction {
    fn from(unit: UnitOfWork<ReadWrite>) -> Self {
        ReplicatedTransaction(Kind::ReadWrite(unit))
    }
}

impl From<UnitOfWork<ReadOnly>> for ReplicatedTransaction {
    fn from(unit: UnitOfWork<ReadOnly>) -> Self {
        ReplicatedTransaction(Kind::ReadOnly(unit))
    }
}

impl ReplicatedTransaction {
    /// True when this is a read-only unit (begun in a read-only scope, or asked for
    /// [`AccessMode::ReadOnly`]): writes are refused.
    pub fn is_read_only(&self) -> bool {
        matches!(self.0, Kind::ReadOnly(_))
    }

    /// The name of the node it runs on; `None` until its first statement.
    pub fn node_name(&self) -> Option<&str> {
        each!(&self.0, |unit| unit.node_name())
    }

    /// The tracing span of the unit underneath.
    pub fn span(&self) -> &Span {
        each!(&self.0, |unit| unit.span())
    }

    /// Commits (see [`UnitOfWork::commit`]).
    pub async fn commit(self) -> Result<(), DbErr> {
        each!(self.0, |unit| unit.commit().await)
    }

    /// Rolls back, bounded like a statement.
    pub async fn rollback(self) -> Result<(), DbErr> {
        each!(self.0, |unit| unit.rollback().await)
    }
}

/// Writes compile on it, as on the handle; a read-only one refuses them at run time.
impl Writable for ReplicatedTransaction {}

#[async_trait::async_trait]
impl ConnectionTrait for ReplicatedTransaction {
    fn get_database_backend(&self) -> DbBackend {
        each!(&self.0, |unit| ConnectionTrait::get_database_backend(unit))
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        each!(&self.0, |unit| unit.execute_raw(stmt).await)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        each!(&self.0, |unit| unit.execute_unprepared(sql).await)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        each!(&self.0, |unit| unit.query_one_raw(stmt).await)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        each!(&self.0, |unit| unit.query_all_raw(stmt).await)
    }
}

impl StreamTrait for ReplicatedTransaction {
    type Stream<'a> = UnitStream<'a>;

    fn get_database_backend(&self) -> DbBackend {
        each!(&self.0, |unit| StreamTrait::get_database_backend(unit))
    }

    fn stream_raw<'a>(
        &'a self,
        stmt: Statement,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Stream<'a>, DbErr>> + 'a + Send>> {
        each!(&self.0, |unit| unit.stream_raw(stmt))
    }
}

#[async_trait::async_trait]
impl TransactionSession for ReplicatedTransaction {
    async fn commit(self) -> Result<(), DbErr> {
        ReplicatedTransaction::commit(self).await
    }

    async fn rollback(self) -> Result<(), DbErr> {
        ReplicatedTransaction::rollback(self).await
    }
}

/// Nested: a savepoint in the same transaction.
#[async_trait::async_trait]
impl TransactionTrait for ReplicatedTransaction {
    type Transaction = ReplicatedTransaction;

    async fn begin(&self) -> Result<Self, DbErr> {
        same_kind!(&self.0, |unit| unit.begin())
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<Self, DbErr> {
        same_kind!(&self.0, |unit| unit
            .begin_with_config(isolation_level, access_mode))
    }

    async fn begin_with_options(&self, options: TransactionOptions) -> Result<Self, DbErr> {
        self.begin_with_config(options.isolation_level, options.access_mode)
            .await
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c Self) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let txn = self.begin().await.map_err(TransactionError::Connection)?;
        run_in(txn, callback).await
    }

    async fn transaction_with_config<F, T, E>(
        &self,
        callback: F,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c Self) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let txn = self
            .begin_with_config(isolation_level, access_mode)
            .await
            .map_err(TransactionError::Connection)?;
        run_in(txn, callback).await
    }
}
