//! The sessions of one kind on a node, as the library runs statements on them: connections
//! it holds between uses ([`Held`], PostgreSQL and MariaDB) or the SeaORM pool (SQLite).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, ExecResult, QueryResult, Statement,
    StreamTrait,
};

use super::held::{Held, RowStream};

/// Read-only or read-write sessions of a node; see [`Node::sessions`](super::Node::sessions).
#[derive(Clone, Copy)]
pub(crate) enum Sessions<'a> {
    /// Held between uses.
    Held(&'a Arc<Held>),
    /// A SeaORM pool.
    Pool(&'a DatabaseConnection),
}

impl Sessions<'_> {
    /// The backend.
    pub(crate) fn backend(&self) -> DbBackend {
        match self {
            Sessions::Held(held) => held.backend(),
            Sessions::Pool(pool) => ConnectionTrait::get_database_backend(*pool),
        }
    }

    /// The held connections, where this backend has them.
    pub(crate) fn held(&self) -> Option<&Arc<Held>> {
        match self {
            Sessions::Held(held) => Some(held),
            Sessions::Pool(_) => None,
        }
    }
}

/// `$body` with `$c` bound to whichever kind of sessions this is.
macro_rules! each {
    ($s:expr, |$c:ident| $body:expr) => {
        match $s {
            Sessions::Held($c) => $body,
            Sessions::Pool($c) => $body,
        }
    };
}

#[async_trait::async_trait]
impl ConnectionTrait for Sessions<'_> {
    fn get_database_backend(&self) -> DbBackend {
        self.backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        each!(self, |c| c.execute_raw(stmt).await)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        each!(self, |c| c.execute_unprepared(sql).await)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        each!(self, |c| c.query_one_raw(stmt).await)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        each!(self, |c| c.query_all_raw(stmt).await)
    }
}

/// The rows never borrow the sessions: a held stream owns its connection, a SeaORM one its
/// pool connection.
impl StreamTrait for Sessions<'_> {
    type Stream<'a>
        = RowStream<'static>
    where
        Self: 'a;

    fn get_database_backend(&self) -> DbBackend {
        self.backend()
    }

    fn stream_raw<'a>(
        &'a self,
        stmt: Statement,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Stream<'a>, DbErr>> + 'a + Send>> {
        Box::pin(async move {
            Ok(match self {
                Sessions::Held(held) => held.stream_raw(stmt).await?,
                Sessions::Pool(pool) => {
                    Box::pin(pool.stream_raw(stmt).await?) as RowStream<'static>
                }
            })
        })
    }
}
