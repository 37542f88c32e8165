//! Per-backend SQL: the one place where PostgreSQL, MySQL/MariaDB and SQLite differ.
//!
//! Everything that asks a server about itself (its role, its identity, its replication
//! position) goes through [`Dialect`]; no other module matches on the backend. What a server
//! says about itself ([`ServerRole`], [`Probe`]) is defined here too. Uses only the plain values
//! of [`consistency`](crate::consistency).

pub(crate) mod sqlite_read_only;

use std::time::{Duration, Instant};

use crate::consistency::Position;
use sea_orm::{
    AccessMode, ConnectionTrait, DbBackend, DbErr, IsolationLevel, SqliteTransactionMode,
    Statement, TransactionOptions, Value,
};
use serde::Serialize;

/// What a node's server says it is, as the monitor last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerRole {
    /// Not asked yet, or not reachable since it was configured (SQLite is never asked).
    Unknown,
    /// Takes writes: PostgreSQL not in recovery, MariaDB `read_only = 0`.
    Primary,
    /// A replica: PostgreSQL in recovery, MariaDB `read_only = 1`.
    Replica,
}

impl ServerRole {
    /// `"unknown"`, `"primary"` or `"replica"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerRole::Unknown => "unknown",
            ServerRole::Primary => "primary",
            ServerRole::Replica => "replica",
        }
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            1 => ServerRole::Primary,
            2 => ServerRole::Replica,
            _ => ServerRole::Unknown,
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            ServerRole::Unknown => 0,
            ServerRole::Primary => 1,
            ServerRole::Replica => 2,
        }
    }
}

impl std::fmt::Display for ServerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one health check of a node found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// What the server says it is.
    pub role: ServerRole,
    /// The primary's term: the WAL timeline on PostgreSQL (a promotion starts a new one); 0
    /// where there is none. A primary with a lower term than one already seen is stale.
    pub term: u64,
    /// How far the node has replayed (a replica) or written (a primary).
    pub position: Position,
    /// Replication lag as the replica sees it; `None` when unknown (or not a replica).
    /// MariaDB: `Seconds_Behind_Master`. PostgreSQL: 0 while everything received is replayed,
    /// else `now() - pg_last_xact_replay_timestamp()` — which reads as long as the primary was
    /// idle while the first new WAL is replayed, so the monitor prefers the primary's view
    /// ([`downstream`](Self::downstream)) whenever the primary answered the same round.
    pub lag: Option<Duration>,
    /// A replica: how its primary names its stream (PostgreSQL: the replication slot and the
    /// `application_name` of its WAL receiver), to find it in the primary's
    /// [`downstream`](Self::downstream). `None` on a primary, or when the server does not say.
    pub upstream: Option<StreamName>,
    /// A replica: how long ago the last transaction it replayed committed on the primary
    /// (PostgreSQL `now() - pg_last_xact_replay_timestamp()`). Every commit after that one is
    /// newer, so the lag is at most this much; `None` when unknown.
    pub replay_age: Option<Duration>,
    /// A primary: the replicas streaming from it, as it sees them (PostgreSQL
    /// `pg_stat_replication`); empty on a replica, and on MariaDB.
    pub downstream: Vec<Downstream>,
}

/// How a primary names a replica's replication stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamName {
    /// The physical replication slot the stream uses (PostgreSQL `primary_slot_name`).
    pub slot: Option<String>,
    /// The WAL receiver's `application_name` (from `primary_conninfo`, else `cluster_name`,
    /// else `walreceiver`).
    pub application_name: Option<String>,
}

/// One replica as its primary sees it (a row of PostgreSQL's `pg_stat_replication`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downstream {
    /// The stream's slot and `application_name`.
    pub name: StreamName,
    /// The replay position the replica last reported.
    pub replayed: Position,
    /// `replay_lag`: the time between the primary flushing recent WAL and the replica
    /// reporting it applied, measured on the primary's clock. `None` when the replica has
    /// replayed everything and there is no new WAL (or the role may not read it: it needs
    /// `pg_read_all_stats`).
    pub replay_lag: Option<Duration>,
}

/// PostgreSQL's session reset without its one `SELECT`.
const PG_RESET_REST: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; UNLISTEN *; \
     DISCARD TEMP; DISCARD SEQUENCES";
/// The `SELECT` of PostgreSQL's session reset: releases advisory locks.
const PG_UNLOCK: &str = "SELECT pg_advisory_unlock_all() AS sor_reset";
/// PostgreSQL's whole session reset.
const PG_RESET_FULL: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; \
     UNLISTEN *; SELECT pg_advisory_unlock_all() AS sor_reset; DISCARD TEMP; DISCARD SEQUENCES";

/// The name of the column that [`Dialect::position_sql`] reads the position into.
pub const POSITION_COLUMN: &str = "sor_position";

/// How a node answers questions about itself, by backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect(pub DbBackend);

/// The table where a unit with an identity records it, in the transaction that commits it:
/// `sor_applied(id, attempt, applied_at_ms)`, keyed by the identity, so the server refuses a
/// second application. Created by [`replay::AppliedTableMigration`](crate::replay::AppliedTableMigration).
pub const APPLIED_TABLE: &str = "sor_applied";

/// `sor_applied`'s definition, the same on every backend.
pub fn applied_table() -> sea_orm::sea_query::TableCreateStatement {
    use sea_orm::sea_query::{Alias, ColumnDef, Table};
    Table::create()
        .table(Alias::new(APPLIED_TABLE))
        .if_not_exists()
        .col(
            ColumnDef::new(Alias::new("id"))
                .string_len(36)
                .not_null()
                .primary_key(),
        )
        .col(ColumnDef::new(Alias::new("attempt")).integer().not_null())
        .col(
            ColumnDef::new(Alias::new("applied_at_ms"))
                .big_integer()
                .not_null(),
        )
        .to_owned()
}

/// The statement that records identity `id` and any `more` (run `attempt`) in the committing
/// transaction. Plain text (uuids' hyphenated hex and integers), so it rides in the `COMMIT`
/// message.
pub fn record_applied_sql(id: &uuid::Uuid, more: &[uuid::Uuid], attempt: u32) -> String {
    use std::fmt::Write;
    let now = crate::consistency::unix_ms();
    let mut sql = format!("INSERT INTO {APPLIED_TABLE} (id, attempt, applied_at_ms) VALUES ");
    for (i, id) in std::iter::once(id).chain(more).enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(sql, "{sep}('{}', {attempt}, {now})", id.hyphenated());
    }
    sql
}

/// The run of identity `id` that committed, if any (one column, `attempt`).
pub fn applied_lookup_sql(id: &uuid::Uuid) -> String {
    format!(
        "SELECT attempt FROM {APPLIED_TABLE} WHERE id = '{}'",
        id.hyphenated()
    )
}

/// Who answered a query, as the server itself reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerIdentity {
    /// PostgreSQL: `inet_server_port()`; MySQL: `@@port`; SQLite: 0.
    pub port: i64,
    /// MySQL: `@@server_id`; otherwise 0.
    pub server_id: i64,
    /// PostgreSQL: `pg_is_in_recovery()`; MySQL: `@@read_only`; SQLite: `PRAGMA query_only`.
    pub read_only: bool,
}

impl std::fmt::Display for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = if self.read_only {
            "read-only"
        } else {
            "read-write"
        };
        match (self.port, self.server_id) {
            (0, 0) => write!(f, "embedded, {role}"),
            (port, 0) => write!(f, "port {port}, {role}"),
            (port, id) => write!(f, "port {port}, server_id {id}, {role}"),
        }
    }
}

impl Dialect {
    /// OpenTelemetry's `db.system.name`: `postgresql`, `mysql` (MariaDB too) or `sqlite`.
    pub fn system_name(self) -> &'static str {
        match self.0 {
            DbBackend::Postgres => "postgresql",
            DbBackend::MySql => "mysql",
            DbBackend::Sqlite => "sqlite",
            _ => "other_sql",
        }
    }

    /// Where `ORDER BY … ASC` puts NULLs: last on PostgreSQL (NULL sorts as the largest
    /// value), first on MySQL/MariaDB and SQLite (the smallest). A fan-out merge sorts as the
    /// shards did.
    pub fn nulls_sort_high(self) -> bool {
        matches!(self.0, DbBackend::Postgres)
    }

    /// The type a fan-out `sum`/`avg` casts to so every backend answers a float:
    /// PostgreSQL `DOUBLE PRECISION`, MariaDB `DOUBLE`, SQLite `REAL`.
    pub fn float_type(self) -> &'static str {
        match self.0 {
            DbBackend::Postgres => "DOUBLE PRECISION",
            DbBackend::MySql => "DOUBLE",
            _ => "REAL",
        }
    }

    /// The type an exact integer `sum` casts to: `BIGINT`, `SIGNED`, `INTEGER`.
    pub fn integer_type(self) -> &'static str {
        match self.0 {
            DbBackend::Postgres => "BIGINT",
            DbBackend::MySql => "SIGNED",
            _ => "INTEGER",
        }
    }

    /// True where a transaction can be prepared for two-phase commit (PostgreSQL
    /// `PREPARE TRANSACTION`, MariaDB `XA`); not SQLite.
    pub fn supports_two_phase(self) -> bool {
        matches!(self.0, DbBackend::Postgres | DbBackend::MySql)
    }

    /// How a two-phase transaction with global id `gid` begins, where that differs from a
    /// plain `BEGIN`: MariaDB `XA START 'gid'` (after the isolation level, if any).
    /// `gid` is the library's own (`sor2pc_` and hex digits).
    pub fn begin_two_phase_sql(
        self,
        gid: &str,
        isolation: Option<IsolationLevel>,
    ) -> Option<String> {
        match (self.0, isolation) {
            (DbBackend::MySql, Some(level)) => Some(format!(
                "SET TRANSACTION ISOLATION LEVEL {level}; XA START '{gid}'"
            )),
            (DbBackend::MySql, None) => Some(format!("XA START '{gid}'")),
            _ => None,
        }
    }

    /// Phase one: prepares the open transaction as `gid`. On PostgreSQL, `PREPARE TRANSACTION`
    /// in a transaction a failed statement aborted answers as a silent `ROLLBACK`, so a
    /// statement that fails in an aborted transaction goes first (as for `COMMIT`, see
    /// [`end_transaction_sql`](Self::end_transaction_sql)).
    pub fn prepare_sql(self, gid: &str) -> String {
        match self.0 {
            DbBackend::MySql => format!("XA END '{gid}'; XA PREPARE '{gid}'"),
            _ => format!("{PG_UNLOCK}; PREPARE TRANSACTION '{gid}'"),
        }
    }

    /// Phase two: commits (or rolls back) the prepared transaction `gid`; any session may.
    pub fn finish_prepared_sql(self, gid: &str, commit: bool) -> String {
        match (self.0, commit) {
            (DbBackend::MySql, true) => format!("XA COMMIT '{gid}'"),
            (DbBackend::MySql, false) => format!("XA ROLLBACK '{gid}'"),
            (_, true) => format!("COMMIT PREPARED '{gid}'"),
            (_, false) => format!("ROLLBACK PREPARED '{gid}'"),
        }
    }

    /// The query listing prepared transactions (for recovery): PostgreSQL's of this database,
    /// with the id in the column `gid`; MariaDB `XA RECOVER` (the id in column `data`).
    pub fn prepared_list_sql(self) -> &'static str {
        match self.0 {
            DbBackend::MySql => "XA RECOVER",
            _ => "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()",
        }
    }

    /// The column of [`prepared_list_sql`](Self::prepared_list_sql) that holds the id.
    pub fn prepared_list_column(self) -> &'static str {
        match self.0 {
            DbBackend::MySql => "data",
            _ => "gid",
        }
    }

    fn stmt(self, sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(self.0, sql, values)
    }

    /// How a unit's transaction begins. SQLite has no `READ ONLY` transactions (its reader pool
    /// is opened read-only instead) and takes the write lock up front for read-write units, so
    /// that two writers never deadlock upgrading their locks.
    pub fn transaction_options(
        self,
        read_only: bool,
        isolation: Option<IsolationLevel>,
    ) -> TransactionOptions {
        match self.0 {
            DbBackend::Sqlite => TransactionOptions {
                sqlite_transaction_mode: Some(if read_only {
                    SqliteTransactionMode::Deferred
                } else {
                    SqliteTransactionMode::Immediate
                }),
                ..TransactionOptions::default()
            },
            _ => TransactionOptions {
                isolation_level: isolation,
                access_mode: read_only.then_some(AccessMode::ReadOnly),
                sqlite_transaction_mode: None,
            },
        }
    }

    /// Asks the server which node it is and whether it is read-only.
    pub async fn server_identity<C: ConnectionTrait>(
        self,
        conn: &C,
    ) -> Result<ServerIdentity, DbErr> {
        let sql = match self.0 {
            DbBackend::Postgres => {
                "SELECT COALESCE(inet_server_port(), 0)::int8 AS port, 0::int8 AS server_id, pg_is_in_recovery() AS ro"
            }
            DbBackend::MySql => {
                "SELECT CAST(@@port AS SIGNED) AS port, CAST(@@server_id AS SIGNED) AS server_id, @@read_only = 1 AS ro"
            }
            _ => "SELECT 0 AS port, 0 AS server_id, query_only AS ro FROM pragma_query_only",
        };
        let row = conn
            .query_one_raw(self.stmt(sql, vec![]))
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("server identity".into()))?;
        let read_only = match self.0 {
            DbBackend::Postgres => row.try_get::<bool>("", "ro")?,
            _ => row.try_get::<i64>("", "ro")? != 0,
        };
        Ok(ServerIdentity {
            port: row.try_get("", "port")?,
            server_id: row.try_get("", "server_id")?,
            read_only,
        })
    }

    /// True when the server reports that it is a replica (in recovery, or `read_only`).
    /// SQLite has no server-side role and always answers false.
    pub async fn is_replica<C: ConnectionTrait>(self, conn: &C) -> Result<bool, DbErr> {
        match self.0 {
            DbBackend::Postgres | DbBackend::MySql => {
                Ok(self.server_identity(conn).await?.read_only)
            }
            _ => Ok(false),
        }
    }

    /// The primary's current replication position: the WAL LSN on PostgreSQL, the GTID binlog
    /// position on MariaDB, [`Position::None`] where positions do not apply (SQLite).
    pub async fn current_position<C: ConnectionTrait>(self, conn: &C) -> Result<Position, DbErr> {
        let sql = match self.0 {
            // the insert position: past our commit record even before it is flushed
            DbBackend::Postgres => "SELECT pg_current_wal_insert_lsn()::text AS pos",
            DbBackend::MySql => "SELECT CAST(@@gtid_binlog_pos AS CHAR) AS pos",
            _ => return Ok(Position::None),
        };
        self.read_position(conn, sql).await
    }

    /// The query that reads the primary's position, its one column named
    /// [`POSITION_COLUMN`]; `None` where there are no positions.
    pub fn position_sql(self) -> Option<&'static str> {
        match self.0 {
            DbBackend::Postgres => Some("SELECT pg_current_wal_insert_lsn()::text AS sor_position"),
            DbBackend::MySql => Some("SELECT CAST(@@gtid_binlog_pos AS CHAR) AS sor_position"),
            _ => None,
        }
    }

    /// How a held transaction begins (PostgreSQL, MariaDB).
    pub fn begin_sql(self, read_only: bool, isolation: Option<IsolationLevel>) -> String {
        let mode = if read_only { "READ ONLY" } else { "READ WRITE" };
        match (self.0, isolation) {
            (DbBackend::MySql, Some(level)) => {
                format!("SET TRANSACTION ISOLATION LEVEL {level}; START TRANSACTION {mode}")
            }
            (DbBackend::MySql, None) => format!("START TRANSACTION {mode}"),
            (_, Some(level)) => format!("BEGIN ISOLATION LEVEL {level}, {mode}"),
            (_, None) => format!("BEGIN {mode}"),
        }
    }

    /// What undoes a unit's changes to its session, sent in the same message right after the
    /// transaction ends, so that nothing one unit set reaches the next unit on the same
    /// connection. PostgreSQL: role and session authorization, every setting (`RESET ALL`
    /// restores what the connection was opened with, e.g. `default_transaction_read_only`),
    /// cursors, listeners, advisory locks, temporary tables, sequence caches. MariaDB: named
    /// locks (what else a session may hold there — user variables, prepared statements,
    /// session variables — makes the unit close the connection instead).
    pub fn session_reset_sql(self) -> Option<&'static str> {
        match self.0 {
            DbBackend::Postgres => Some(PG_RESET_FULL),
            DbBackend::MySql => Some("SELECT RELEASE_ALL_LOCKS() AS sor_reset"),
            _ => None,
        }
    }

    /// The one message that ends a held transaction: `end` (`COMMIT` or `ROLLBACK`), the
    /// session reset, then `position` if asked. If `end` fails the server skips the rest and
    /// the caller sees the error: nothing was committed. (A failure after a successful
    /// `COMMIT` — the connection lost mid-message — reports an error for a commit that
    /// happened: never the other way round, so no acknowledged write is lost.)
    ///
    /// PostgreSQL answers `COMMIT` of a transaction that a failed statement aborted with a
    /// silent `ROLLBACK`: a commit the caller would take as acknowledged though nothing was
    /// written. So a read-write commit starts with a statement that fails in an aborted
    /// transaction — the reset's own `SELECT pg_advisory_unlock_all()`, moved before the
    /// `COMMIT` — so the server stops there, the caller gets the error, and nothing is
    /// acknowledged. Same message, no extra round trip or statement. (A read-only transaction
    /// has nothing to lose: `wrote` is false and its commit ends it quietly.)
    pub fn end_transaction_sql(self, end: &str, wrote: bool, position: Option<&str>) -> String {
        let mut sql = String::with_capacity(256);
        let guarded = self.0 == DbBackend::Postgres && end == "COMMIT" && wrote;
        if guarded {
            sql.push_str(PG_UNLOCK);
            sql.push_str("; ");
        }
        sql.push_str(end);
        let reset = match self.0 {
            DbBackend::Postgres if guarded => Some(PG_RESET_REST),
            other => Dialect(other).session_reset_sql(),
        };
        if let Some(reset) = reset {
            sql.push_str("; ");
            sql.push_str(reset);
        }
        if let Some(position) = position {
            sql.push_str("; ");
            sql.push_str(position);
        }
        sql
    }

    /// What makes a transaction's commit wait until synchronous replicas have applied it, sent
    /// with `BEGIN`. `Ok(None)`: every reader sees a commit at once anyway (SQLite). `Err`: the
    /// backend cannot promise it (MariaDB's semi-sync acknowledges receipt, not apply).
    pub fn synchronous_visibility_sql(self) -> Result<Option<&'static str>, &'static str> {
        match self.0 {
            DbBackend::Postgres => Ok(Some("SET LOCAL synchronous_commit = remote_apply")),
            DbBackend::MySql => Err("synchronous visibility needs PostgreSQL (synchronous_commit = remote_apply); MariaDB semi-sync does not wait for apply"),
            _ => Ok(None),
        }
    }

    /// Reads a position as the server prints it.
    pub fn parse_position(self, text: &str) -> Result<Position, DbErr> {
        let parsed = match self.0 {
            DbBackend::Postgres => Position::parse_pg_lsn(text),
            DbBackend::MySql => Position::parse_gtid_list(text),
            _ => return Ok(Position::None),
        };
        parsed.map_err(|e| DbErr::Type(e.to_string()))
    }

    /// How far a replica has replayed: `pg_last_wal_replay_lsn()`, `@@gtid_slave_pos`.
    pub async fn replay_position<C: ConnectionTrait>(self, conn: &C) -> Result<Position, DbErr> {
        let sql = match self.0 {
            DbBackend::Postgres => {
                "SELECT COALESCE(pg_last_wal_replay_lsn(), pg_current_wal_lsn())::text AS pos"
            }
            DbBackend::MySql => "SELECT CAST(@@gtid_slave_pos AS CHAR) AS pos",
            _ => return Ok(Position::None),
        };
        self.read_position(conn, sql).await
    }

    async fn read_position<C: ConnectionTrait>(
        self,
        conn: &C,
        sql: &str,
    ) -> Result<Position, DbErr> {
        let text: String = conn
            .query_one_raw(self.stmt(sql, vec![]))
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("replication position".into()))?
            .try_get("", "pos")?;
        self.parse_position(&text)
    }

    /// How far behind the primary a replica is, in time: PostgreSQL `now() -
    /// pg_last_xact_replay_timestamp()` while WAL is waiting to be replayed (0 when all received
    /// WAL is replayed); MariaDB `Seconds_Behind_Master`. `None`: unknown (replication stopped,
    /// or SQLite, which has no lag).
    pub async fn replica_lag<C: ConnectionTrait>(
        self,
        conn: &C,
    ) -> Result<Option<Duration>, DbErr> {
        match self.0 {
            DbBackend::Postgres => {
                let sql = "SELECT CASE WHEN pg_last_wal_receive_lsn() IS NULL THEN NULL \
                           WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
                           ELSE GREATEST(0, (EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000)::int8) \
                           END AS lag_ms";
                let row = conn.query_one_raw(self.stmt(sql, vec![])).await?;
                let ms = row
                    .map(|r| r.try_get::<Option<i64>>("", "lag_ms"))
                    .transpose()?
                    .flatten();
                Ok(ms.map(|ms| Duration::from_millis(ms.max(0) as u64)))
            }
            DbBackend::MySql => {
                let row = conn
                    .query_one_raw(self.stmt("SHOW SLAVE STATUS", vec![]))
                    .await?;
                let secs = row
                    .map(|r| r.try_get::<Option<u64>>("", "Seconds_Behind_Master"))
                    .transpose()?
                    .flatten();
                Ok(secs.map(Duration::from_secs))
            }
            _ => Ok(Some(Duration::ZERO)),
        }
    }

    /// True for a SQLSTATE that says the server or the connection is going away, not that the
    /// statement failed: class `08` (connection exception; MySQL/MariaDB `08S01` for a lost
    /// connection or a server shutting down), and PostgreSQL's `57P01` admin shutdown, `57P02`
    /// crash shutdown (e.g. "terminating connection due to unexpected postmaster exit") and
    /// `57P03` cannot connect now (starting up, in recovery mode).
    pub fn is_node_failure_state(sqlstate: &str) -> bool {
        sqlstate.starts_with("08") || matches!(sqlstate, "57P01" | "57P02" | "57P03")
    }

    /// One health check: the server's role, its term, its position and (for a replica) its
    /// lag. PostgreSQL answers in one statement; MariaDB in two (the second, `SHOW SLAVE
    /// STATUS`, only on a replica); SQLite is not asked.
    pub async fn probe<C: ConnectionTrait>(self, conn: &C) -> Result<Probe, DbErr> {
        match self.0 {
            DbBackend::Postgres => {
                // the timeline is the first 8 hex digits of the current WAL file's name; a
                // replica says how its primary names its stream, a primary lists its replicas
                let sql = "SELECT pg_is_in_recovery() AS replica, \
                           CASE WHEN pg_is_in_recovery() THEN 0 \
                           ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8 END AS term, \
                           COALESCE(pg_last_wal_replay_lsn(), pg_current_wal_lsn())::text AS pos, \
                           CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() IS NULL THEN NULL \
                           WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
                           ELSE GREATEST(0, (EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000)::int8) \
                           END AS lag_ms, \
                           CASE WHEN pg_is_in_recovery() THEN \
                           GREATEST(0, (EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000)::int8) \
                           END AS replay_age_ms, \
                           w.slot_name AS up_slot, w.conninfo AS up_conninfo, \
                           CASE WHEN NOT pg_is_in_recovery() THEN ( \
                           SELECT json_agg(json_build_object('slot', s.slot_name, 'app', r.application_name, \
                           'replay', r.replay_lsn::text, \
                           'lag_ms', (EXTRACT(EPOCH FROM r.replay_lag) * 1000)::int8)) \
                           FROM pg_stat_replication r LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid \
                           ) END AS downstream \
                           FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver w ON true";
                let row = conn
                    .query_one_raw(self.stmt(sql, vec![]))
                    .await?
                    .ok_or_else(|| DbErr::RecordNotFound("health check".into()))?;
                let replica: bool = row.try_get("", "replica")?;
                let ms = |v: Option<i64>| v.map(|ms| Duration::from_millis(ms.max(0) as u64));
                let upstream = StreamName {
                    slot: row
                        .try_get::<Option<String>>("", "up_slot")?
                        .filter(|s| !s.is_empty()),
                    application_name: row
                        .try_get::<Option<String>>("", "up_conninfo")?
                        .and_then(|c| receiver_application_name(&c)),
                };
                let downstream = row
                    .try_get::<Option<sea_orm::prelude::Json>>("", "downstream")?
                    .map(|rows| self.downstream_rows(&rows))
                    .unwrap_or_default();
                Ok(Probe {
                    role: if replica {
                        ServerRole::Replica
                    } else {
                        ServerRole::Primary
                    },
                    term: u64::try_from(row.try_get::<i64>("", "term")?).unwrap_or(0),
                    position: self.parse_position(&row.try_get::<String>("", "pos")?)?,
                    lag: ms(row.try_get("", "lag_ms")?),
                    upstream: (replica && upstream != StreamName::default()).then_some(upstream),
                    replay_age: ms(row.try_get("", "replay_age_ms")?),
                    downstream,
                })
            }
            DbBackend::MySql => {
                let sql = "SELECT @@read_only = 1 AS replica, \
                           CAST(IF(@@read_only = 1, @@gtid_slave_pos, @@gtid_binlog_pos) AS CHAR) AS pos";
                let row = conn
                    .query_one_raw(self.stmt(sql, vec![]))
                    .await?
                    .ok_or_else(|| DbErr::RecordNotFound("health check".into()))?;
                let replica = row.try_get::<i64>("", "replica")? != 0;
                let lag = if replica {
                    self.replica_lag(conn).await?
                } else {
                    None
                };
                Ok(Probe {
                    role: if replica {
                        ServerRole::Replica
                    } else {
                        ServerRole::Primary
                    },
                    term: 0,
                    position: self.parse_position(&row.try_get::<String>("", "pos")?)?,
                    lag,
                    upstream: None,
                    replay_age: None,
                    downstream: Vec::new(),
                })
            }
            _ => Ok(Probe {
                role: ServerRole::Unknown,
                term: 0,
                position: Position::None,
                lag: Some(Duration::ZERO),
                upstream: None,
                replay_age: None,
                downstream: Vec::new(),
            }),
        }
    }

    /// The rows of the primary's `pg_stat_replication` as the probe aggregates them (a JSON
    /// array of `{slot, app, replay, lag_ms}`); a row that cannot be read is left out.
    fn downstream_rows(self, rows: &sea_orm::prelude::Json) -> Vec<Downstream> {
        let text = |row: &sea_orm::prelude::Json, key: &str| {
            row.get(key)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        rows.as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|row| Downstream {
                name: StreamName {
                    slot: text(row, "slot"),
                    application_name: text(row, "app"),
                },
                replayed: text(row, "replay")
                    .and_then(|p| self.parse_position(&p).ok())
                    .unwrap_or_default(),
                replay_lag: row
                    .get("lag_ms")
                    .and_then(|v| v.as_i64())
                    .map(|ms| Duration::from_millis(ms.max(0) as u64)),
            })
            .collect()
    }

    /// Waits until a replica has replayed `position` or `timeout` passes. Returns whether it did.
    /// PostgreSQL polls `pg_last_wal_replay_lsn()` (`WAIT FOR LSN` is PostgreSQL 19+);
    /// MariaDB uses `MASTER_GTID_WAIT`.
    pub async fn wait_replayed<C: ConnectionTrait>(
        self,
        conn: &C,
        wanted: &Position,
        timeout: Duration,
    ) -> Result<bool, DbErr> {
        if *wanted == Position::None {
            return Ok(true);
        }
        let position = wanted.to_server_text();
        match self.0 {
            DbBackend::Postgres => {
                let deadline = Instant::now() + timeout;
                let mut pause = Duration::from_millis(2);
                loop {
                    let row = conn
                        .query_one_raw(self.stmt(
                            "SELECT COALESCE(pg_last_wal_replay_lsn() >= $1::pg_lsn, true) AS done",
                            vec![position.clone().into()],
                        ))
                        .await?;
                    if row.map(|r| r.try_get::<bool>("", "done")).transpose()? == Some(true) {
                        return Ok(true);
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(false);
                    }
                    tokio::time::sleep(pause.min(deadline - now)).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
            DbBackend::MySql => {
                let row = conn
                    .query_one_raw(self.stmt(
                        "SELECT CAST(MASTER_GTID_WAIT(?, ?) AS SIGNED) AS rc",
                        vec![position.clone().into(), timeout.as_secs_f64().into()],
                    ))
                    .await?;
                Ok(row.map(|r| r.try_get::<i64>("", "rc")).transpose()? == Some(0))
            }
            _ => Ok(true),
        }
    }
}

/// The `application_name` a PostgreSQL WAL receiver gives its primary, read from its
/// connection string as `pg_stat_wal_receiver.conninfo` shows it: `application_name`, else
/// `fallback_application_name` (the server's `cluster_name`, or `walreceiver`). Values may be
/// single-quoted with backslash escapes. Nothing else of the string (which may hold a masked
/// password) is kept.
fn receiver_application_name(conninfo: &str) -> Option<String> {
    let mut chars = conninfo.chars().peekable();
    let (mut name, mut fallback) = (None, None);
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        if key.is_empty() {
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next_if_eq(&'=').is_none() {
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        match key.as_str() {
            "application_name" => name = Some(value),
            "fallback_application_name" => fallback = Some(value),
            _ => {}
        }
    }
    name.filter(|n| !n.is_empty())
        .or(fallback.filter(|n| !n.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receivers_application_name_is_read_from_its_conninfo() {
        let shown = "user=postgres passfile=/var/lib/postgresql/.pgpass channel_binding=prefer \
                     dbname=replication host=127.0.0.1 port=55432 application_name=replica1 \
                     fallback_application_name=walreceiver sslmode=prefer";
        assert_eq!(
            receiver_application_name(shown).as_deref(),
            Some("replica1")
        );
        let fallback = "host=h password=******** fallback_application_name=main sslmode=prefer";
        assert_eq!(receiver_application_name(fallback).as_deref(), Some("main"));
        let quoted = r"host=h application_name='east \'b\' 2' port=1";
        assert_eq!(
            receiver_application_name(quoted).as_deref(),
            Some("east 'b' 2")
        );
        assert_eq!(receiver_application_name("host=h port=1"), None);
        assert_eq!(receiver_application_name(""), None);
        assert_eq!(receiver_application_name("application_name="), None);
    }
}
