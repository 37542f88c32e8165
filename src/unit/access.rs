//! Read-only and read-write as types.
//!
//! A unit of work carries its access mode in its type: [`UnitOfWork<ReadOnly>`] or
//! [`UnitOfWork<ReadWrite>`]. Code that writes asks for a [`Writable`] connection, which a
//! read-only unit is not, so handing one to a write is a compile error:
//!
//! ```compile_fail
//! # use sea_orm_replica::{ReplicatedDatabase, Writable};
//! fn needs_writes<C: Writable>(_: &C) {}
//! async fn demo(db: &ReplicatedDatabase) {
//!     let unit = db.begin_read_only();
//!     needs_writes(&unit); // error: a read-only unit of work cannot run writes
//! }
//! ```
//!
//! The same through a [`Repository`](crate::Repository): reads compile on both kinds, writes
//! only on a read-write unit.
//!
//! ```no_run
//! # use sea_orm_replica::{ReplicatedDatabase, Repository};
//! # struct Banners; impl Repository for Banners { type Entity = entity::banner::Entity; }
//! async fn demo(db: &ReplicatedDatabase) -> Result<(), sea_orm::DbErr> {
//!     let unit = db.begin_read_write();
//!     Banners::delete_by_id(&unit, 1).await?;
//!     unit.commit().await
//! }
//! ```
//!
//! ```compile_fail
//! # use sea_orm_replica::{ReplicatedDatabase, Repository};
//! # struct Banners; impl Repository for Banners { type Entity = entity::banner::Entity; }
//! async fn demo(db: &ReplicatedDatabase) -> Result<(), sea_orm::DbErr> {
//!     let unit = db.begin_read_only();
//!     Banners::delete_by_id(&unit, 1).await?; // error: `UnitOfWork<ReadOnly>` cannot run writes
//!     unit.commit().await
//! }
//! ```
//!
//! Every SeaORM API still works on both, because both implement
//! [`sea_orm::ConnectionTrait`]; the runtime check in the read-only unit refuses
//! writes that reach it that way ([`ReplicaError::WriteInReadOnly`](crate::ReplicaError)).
//!
//! [`UnitOfWork<ReadOnly>`]: crate::UnitOfWork
//! [`UnitOfWork<ReadWrite>`]: crate::UnitOfWork

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction};

use crate::UnitOfWork;

mod sealed {
    pub trait Sealed {}
}

/// The access mode of a unit of work: [`ReadOnly`] or [`ReadWrite`]. Sealed.
pub trait Access: sealed::Sealed + Send + Sync + 'static {
    /// True for [`ReadOnly`].
    const READ_ONLY: bool;
    /// `"read-only"` or `"read-write"`, as spans and stats name it.
    const NAME: &'static str;
}

/// Marker: the unit only reads; it runs on a replica when one is eligible.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOnly;

/// Marker: the unit may write; it runs on the primary.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadWrite;

impl sealed::Sealed for ReadOnly {}
impl sealed::Sealed for ReadWrite {}

impl Access for ReadOnly {
    const READ_ONLY: bool = true;
    const NAME: &'static str = "read-only";
}

impl Access for ReadWrite {
    const READ_ONLY: bool = false;
    const NAME: &'static str = "read-write";
}

/// A connection that may run writes: a read-write unit, the handle itself (its primary), or a
/// plain SeaORM connection or transaction. Repository write methods require it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot run writes",
    label = "a read-only unit of work cannot run writes",
    note = "open the unit with `begin_read_write()` / `read_write(..)` to write"
)]
pub trait Writable: ConnectionTrait {}

impl Writable for UnitOfWork<ReadWrite> {}
impl Writable for DatabaseConnection {}
impl Writable for DatabaseTransaction {}
