//! Session hygiene (issue 8): with pools of one connection, no session state set by one unit
//! is visible to the next unit, of either kind, on PostgreSQL and MariaDB.
//!
//! Every case sets one kind of session state (a setting, a role, a lock, a prepared statement,
//! a temporary table, a cursor, a listener, a user variable, a frozen snapshot…) in a unit,
//! ends that unit one of four ways — `commit`, `rollback`, dropped with nothing in flight,
//! dropped in the middle of a statement ("cut") — and then looks for the state in the next
//! units on the same handle, whose pools hold one connection each, so the next unit gets the
//! very same session unless the library closed it:
//!
//! * set in a read-write unit: looked for in the next read-write unit, and in the next
//!   read-only units on the same node (a handle without replicas: read-only units fall back to
//!   the primary's read-only pool);
//! * set in a read-only unit (where the library lets it through; a refusal is fine): looked
//!   for in the next read-only units on the same node (the replica's read-only pool, or the
//!   primary's) and in the next read-write unit.
//!
//! A read-only unit's `search_path` change must never redirect a later read-write unit's
//! `INSERT` into another schema: schema `sor_evil_*` has a table of the same name, and the
//! admin connection checks where the row landed.
//!
//! Each test prints one line per case and ending (whether the next unit ran on the same
//! session, what it saw) and fails with the whole list of cases where state crossed.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use sea_orm_replica::{
    Access, NodeConfig, PoolConfig, ReadOnly, ReplicatedDatabase, UnitOfWork, UnitOptions,
};

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// How the next unit looks for the state.
#[derive(Clone, Copy, Debug)]
enum Probe {
    /// `SELECT … AS v` (text): the next unit sees what a fresh unit of its kind saw before.
    Same(&'static str),
    /// A statement that failed on a fresh unit must still fail (read-write units only: a
    /// read-only unit may refuse it for its own reasons).
    StillFails(&'static str),
    /// An admin query returning a count that must reach 0 on every node (polled).
    AdminZero(&'static str),
    /// An admin statement that must succeed (polled): nothing holds what it needs.
    AdminRuns(&'static str),
    /// The admin inserts a fresh row into `sor_ss_snap_{s}`: the next unit must see it.
    SeesNewRow,
    /// `SELECT … AS v` must differ from what the admin's query gives (a seeded `random()`).
    Differs(&'static str, &'static str),
    /// The next read-write unit's unqualified `INSERT INTO sor_ss_target_{s}` lands in the
    /// public schema (`search_path` cases).
    InsertLandsInPublic,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    /// Statements that set the state; `{s}` is the test's suffix, `{k}`/`{k1}` its advisory
    /// lock keys.
    set: &'static [&'static str],
    /// Sent with `execute_unprepared` (several statements in one string, text protocol).
    raw: bool,
    probes: &'static [Probe],
}

const fn case(name: &'static str, set: &'static [&'static str], probes: &'static [Probe]) -> Case {
    Case {
        name,
        set,
        raw: false,
        probes,
    }
}

const PG_SEARCH_PATH: &str = "SELECT current_setting('search_path') AS v";
const PG_SNAP_COUNT: &str = "SELECT count(*)::text AS v FROM sor_ss_snap_{s} WHERE v = '{marker}'";
const MY_SNAP_COUNT: &str =
    "SELECT CAST(COUNT(*) AS CHAR) AS v FROM sor_ss_snap_{s} WHERE v = '{marker}'";

const PG_CASES: &[Case] = &[
    case(
        "SET search_path",
        &["SET search_path = sor_evil_{s}, public"],
        &[Probe::Same(PG_SEARCH_PATH), Probe::InsertLandsInPublic],
    ),
    case(
        "set_config('search_path')",
        &["SELECT set_config('search_path', 'sor_evil_{s}, public', false)"],
        &[Probe::Same(PG_SEARCH_PATH), Probe::InsertLandsInPublic],
    ),
    case(
        "search_path set inside a function",
        &["SELECT sor_ss_evil_path_{s}()"],
        &[Probe::Same(PG_SEARCH_PATH), Probe::InsertLandsInPublic],
    ),
    case(
        "set_config('application_name')",
        &["SELECT set_config('application_name', 'sor_ss_changed', false)"],
        &[Probe::Same("SELECT current_setting('application_name') AS v")],
    ),
    case(
        "SET ROLE",
        &["SET ROLE sor_ss_role"],
        &[Probe::Same("SELECT current_user::text AS v")],
    ),
    case(
        "SET SESSION AUTHORIZATION",
        &["SET SESSION AUTHORIZATION sor_ss_role"],
        &[Probe::Same("SELECT session_user::text || '/' || current_user::text AS v")],
    ),
    case(
        "SET statement_timeout",
        &["SET statement_timeout = '4321ms'"],
        &[Probe::Same("SELECT current_setting('statement_timeout') AS v")],
    ),
    case(
        "SET session_replication_role",
        &["SET session_replication_role = replica"],
        &[Probe::Same("SELECT current_setting('session_replication_role') AS v")],
    ),
    case(
        "SET SESSION CHARACTERISTICS read only / read write",
        &["SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"],
        &[Probe::Same("SELECT current_setting('default_transaction_read_only') AS v")],
    ),
    case(
        "pg_advisory_lock",
        &["SELECT pg_advisory_lock({k})"],
        &[Probe::AdminZero(
            "SELECT count(*)::int8 AS n FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 AND objid = {k} AND objsubid = 1",
        )],
    ),
    case(
        "pg_advisory_lock inside a function",
        &["SELECT sor_ss_lock_{s}()"],
        &[Probe::AdminZero(
            "SELECT count(*)::int8 AS n FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 AND objid = {k1} AND objsubid = 1",
        )],
    ),
    case(
        "PREPARE",
        &["PREPARE sor_ss_prep AS SELECT 1"],
        &[
            Probe::Same("SELECT count(*)::text AS v FROM pg_prepared_statements WHERE name = 'sor_ss_prep'"),
            Probe::StillFails("EXECUTE sor_ss_prep"),
        ],
    ),
    Case {
        name: "PREPARE after another statement in one string",
        set: &["SELECT 1; PREPARE sor_ss_prep2 AS SELECT 1"],
        raw: true,
        probes: &[
            Probe::Same("SELECT count(*)::text AS v FROM pg_prepared_statements WHERE name = 'sor_ss_prep2'"),
            Probe::StillFails("EXECUTE sor_ss_prep2"),
        ],
    },
    case(
        "CREATE TEMP TABLE",
        &["CREATE TEMP TABLE sor_ss_tmp (x int)"],
        &[Probe::Same("SELECT coalesce(to_regclass('pg_temp.sor_ss_tmp')::text, '-') AS v")],
    ),
    case(
        "DECLARE … CURSOR WITH HOLD",
        &["DECLARE sor_ss_cur CURSOR WITH HOLD FOR SELECT 1"],
        &[Probe::Same("SELECT count(*)::text AS v FROM pg_cursors WHERE name = 'sor_ss_cur'")],
    ),
    case(
        "LISTEN",
        &["LISTEN sor_ss_ch"],
        &[Probe::Same(
            "SELECT count(*)::text AS v FROM pg_listening_channels() c WHERE c = 'sor_ss_ch'",
        )],
    ),
    case(
        "frozen snapshot (SET TRANSACTION ISOLATION LEVEL REPEATABLE READ + a read)",
        &[
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "SELECT count(*) FROM sor_ss_snap_{s}",
        ],
        &[
            Probe::SeesNewRow,
            Probe::Same("SELECT current_setting('transaction_isolation') AS v"),
        ],
    ),
    case(
        "nextval (currval afterwards)",
        &["SELECT nextval('sor_ss_seq_{s}')"],
        &[Probe::StillFails("SELECT currval('sor_ss_seq_{s}')")],
    ),
    case(
        "setseed",
        &["SELECT setseed(0.25)"],
        &[Probe::Differs(
            "SELECT random()::text AS v",
            "WITH s AS MATERIALIZED (SELECT setseed(0.25)) SELECT random()::text AS v FROM s",
        )],
    ),
];

const MY_CASES: &[Case] = &[
    case(
        "SET @user_variable",
        &["SET @sor_v = 1"],
        &[Probe::Same(
            "SELECT CAST(COALESCE(@sor_v, 'none') AS CHAR) AS v",
        )],
    ),
    Case {
        name: "SET @user_variable after another statement in one string",
        set: &["SELECT 1; SET @sor_h = 1"],
        raw: true,
        probes: &[Probe::Same(
            "SELECT CAST(COALESCE(@sor_h, 'none') AS CHAR) AS v",
        )],
    },
    case(
        "user variable set inside a function",
        &["SELECT sor_ss_setvar_{s}()"],
        &[Probe::Same(
            "SELECT CAST(COALESCE(@sor_f, 'none') AS CHAR) AS v",
        )],
    ),
    case(
        "SELECT … INTO @user_variable",
        &["SELECT 1 INTO @sor_i"],
        &[Probe::Same(
            "SELECT CAST(COALESCE(@sor_i, 'none') AS CHAR) AS v",
        )],
    ),
    case(
        "SET SESSION sql_mode",
        &["SET SESSION sql_mode = 'ANSI_QUOTES'"],
        &[Probe::Same("SELECT CAST(@@SESSION.sql_mode AS CHAR) AS v")],
    ),
    case(
        "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        &["SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE"],
        &[Probe::Same(
            "SELECT CAST(@@SESSION.tx_isolation AS CHAR) AS v",
        )],
    ),
    case(
        "SET autocommit = 0",
        &["SET autocommit = 0"],
        &[Probe::Same(
            "SELECT CAST(@@SESSION.autocommit AS CHAR) AS v",
        )],
    ),
    case(
        "GET_LOCK",
        &["SELECT GET_LOCK('sor_ss_l_{s}', 0)"],
        &[Probe::AdminZero(
            "SELECT COUNT(IS_USED_LOCK('sor_ss_l_{s}')) AS n",
        )],
    ),
    case(
        "GET_LOCK inside a function",
        &["SELECT sor_ss_getlock_{s}()"],
        &[Probe::AdminZero(
            "SELECT COUNT(IS_USED_LOCK('sor_ss_fl_{s}')) AS n",
        )],
    ),
    // MariaDB refuses PREPARE through the prepared-statement protocol: sent as text
    Case {
        name: "PREPARE",
        set: &["PREPARE sor_ss_s FROM 'SELECT 1'"],
        raw: true,
        probes: &[Probe::StillFails("EXECUTE sor_ss_s")],
    },
    case(
        "CREATE TEMPORARY TABLE",
        &["CREATE TEMPORARY TABLE sor_ss_tmp (x INT)"],
        &[Probe::StillFails("SELECT COUNT(*) FROM sor_ss_tmp")],
    ),
    case(
        "LOCK TABLES",
        &["LOCK TABLES sor_ss_lk_{s} WRITE"],
        &[
            Probe::Same("SELECT CAST(COUNT(*) AS CHAR) AS v FROM sor_ss_other_{s}"),
            Probe::AdminRuns(
                "SET STATEMENT lock_wait_timeout = 1 FOR INSERT INTO sor_ss_lk_{s} VALUES (1)",
            ),
        ],
    ),
    case(
        "LAST_INSERT_ID(n)",
        &["SELECT LAST_INSERT_ID(4242)"],
        &[Probe::Same("SELECT CAST(LAST_INSERT_ID() AS CHAR) AS v")],
    ),
    case(
        "NEXTVAL (LASTVAL afterwards)",
        &["SELECT NEXTVAL(sor_ss_seq_{s})"],
        &[Probe::Same(
            "SELECT CAST(COALESCE(LASTVAL(sor_ss_seq_{s}), 'none') AS CHAR) AS v",
        )],
    ),
    case(
        "frozen snapshot (a REPEATABLE READ read)",
        &["SELECT COUNT(*) FROM sor_ss_snap_{s}"],
        &[Probe::SeesNewRow],
    ),
];

// ---------------------------------------------------------------------------------------------
// Units and endings
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    /// A read-write unit.
    Rw,
    /// A statement-level read-only unit.
    Ro,
    /// A snapshot read-only unit (one `READ ONLY` transaction).
    Snap,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Rw => "read-write",
            Kind::Ro => "read-only",
            Kind::Snap => "snapshot",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Commit,
    Rollback,
    /// Dropped with nothing in flight.
    Drop,
    /// Dropped in the middle of a statement.
    Cut,
}

const ENDINGS: [Ending; 4] = [Ending::Commit, Ending::Rollback, Ending::Drop, Ending::Cut];

/// Where the setting unit runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setter {
    /// A read-write unit on a handle without replicas.
    RwSolo,
    /// A read-only unit on a handle without replicas (the primary's read-only pool).
    RoSolo,
    /// A statement-level read-only unit on the replica.
    RoPair,
    /// A snapshot read-only unit on the replica.
    SnapPair,
}

impl Setter {
    fn kind(self) -> Kind {
        match self {
            Setter::RwSolo => Kind::Rw,
            Setter::RoSolo | Setter::RoPair => Kind::Ro,
            Setter::SnapPair => Kind::Snap,
        }
    }

    fn pair(self) -> bool {
        matches!(self, Setter::RoPair | Setter::SnapPair)
    }

    fn label(self) -> &'static str {
        match self {
            Setter::RwSolo => "read-write unit",
            Setter::RoSolo => "read-only unit on the primary (no replica)",
            Setter::RoPair => "read-only unit on the replica",
            Setter::SnapPair => "snapshot unit on the replica",
        }
    }

    /// The units that look for the state afterwards: those that reach the same node.
    fn probes(self) -> &'static [Kind] {
        match self {
            Setter::RwSolo => &[Kind::Rw, Kind::Ro, Kind::Snap],
            Setter::RoSolo => &[Kind::Ro, Kind::Snap, Kind::Rw],
            Setter::RoPair | Setter::SnapPair => &[Kind::Ro, Kind::Snap, Kind::Rw],
        }
    }
}

/// Substitutes the test's names into `sql`.
fn fill(sql: &str, fx: &Fixture, marker: &str) -> String {
    sql.replace("{s}", &fx.sfx)
        .replace("{k1}", &(fx.key + 1).to_string())
        .replace("{k}", &fx.key.to_string())
        .replace("{marker}", marker)
}

fn session_id_sql(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "SELECT pg_backend_pid()::int8 AS n",
        _ => "SELECT CAST(CONNECTION_ID() AS SIGNED) AS n",
    }
}

fn sleep_sql(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "SELECT pg_sleep(0.3)",
        _ => "SELECT SLEEP(0.3)",
    }
}

async fn query_text<C: ConnectionTrait>(c: &C, sql: &str) -> Result<String, String> {
    let row = c
        .query_one_raw(Statement::from_string(c.get_database_backend(), sql))
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no row".to_owned())?;
    row.try_get_by_index::<Option<String>>(0)
        .map(|v| v.unwrap_or_else(|| "NULL".into()))
        .map_err(|e| e.to_string())
}

async fn query_i64<C: ConnectionTrait>(c: &C, sql: &str) -> Result<i64, String> {
    let row = c
        .query_one_raw(Statement::from_string(c.get_database_backend(), sql))
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no row".to_owned())?;
    row.try_get_by_index::<i64>(0).map_err(|e| e.to_string())
}

/// What the setting unit did.
#[derive(Debug, Default)]
struct SetOut {
    session: Option<i64>,
    node: Option<String>,
    /// The first statement refused or failed, with the error.
    refused: Option<String>,
    /// How the unit ended (`commit`/`rollback` result, or where it was dropped).
    ended: String,
}

async fn set_in<A: Access>(
    unit: UnitOfWork<A>,
    case: &Case,
    fx: &Fixture,
    ending: Ending,
) -> SetOut {
    let b = fx.backend;
    let mut out = SetOut::default();
    // the setting statements come first (`SET TRANSACTION` must precede any query); the
    // session is asked for afterwards
    for sql in case.set {
        let sql = fill(sql, fx, "");
        let result = if case.raw {
            unit.execute_unprepared(&sql).await.map(|_| ())
        } else {
            unit.execute_raw(Statement::from_string(b, sql.clone()))
                .await
                .map(|_| ())
        };
        if let Err(e) = result {
            out.refused = Some(e.to_string());
            break;
        }
    }
    out.session = query_i64(&unit, session_id_sql(b)).await.ok();
    out.node = unit.node_name().map(str::to_owned);
    out.ended = match ending {
        Ending::Commit => format!(
            "commit {:?}",
            unit.commit().await.map_err(|e| e.to_string())
        ),
        Ending::Rollback => format!(
            "rollback {:?}",
            unit.rollback().await.map_err(|e| e.to_string())
        ),
        Ending::Drop => {
            drop(unit);
            "dropped".into()
        }
        Ending::Cut => {
            let sleep = unit.query_one_raw(Statement::from_string(b, sleep_sql(b)));
            let cut = tokio::time::timeout(Duration::from_millis(30), sleep).await;
            drop(unit);
            match cut {
                Err(_) => "dropped in a statement".into(),
                Ok(r) => format!(
                    "dropped after the statement ended: {:?}",
                    r.map(|_| ()).map_err(|e| e.to_string())
                ),
            }
        }
    };
    out
}

/// What a probing unit saw.
#[derive(Debug)]
struct ProbeOut {
    session: Option<i64>,
    node: Option<String>,
    value: Result<String, String>,
}

async fn probe_in<A: Access>(unit: UnitOfWork<A>, sql: &str, as_text: bool) -> ProbeOut {
    let b = unit.get_database_backend();
    let session = query_i64(&unit, session_id_sql(b)).await.ok();
    let node = unit.node_name().map(str::to_owned);
    let value = if as_text {
        query_text(&unit, sql).await
    } else {
        // as text (MariaDB refuses `EXECUTE` through the prepared-statement protocol)
        match unit.execute_unprepared(sql).await {
            Ok(_) => Ok("ran".into()),
            Err(e) => Err(e.to_string()),
        }
    };
    let _ = unit.rollback().await;
    ProbeOut {
        session,
        node,
        value,
    }
}

async fn probe(db: &ReplicatedDatabase, kind: Kind, sql: &str, as_text: bool) -> ProbeOut {
    match kind {
        Kind::Rw => probe_in(db.begin_read_write(), sql, as_text).await,
        Kind::Ro => probe_in(db.begin_read_only(), sql, as_text).await,
        Kind::Snap => {
            let unit: UnitOfWork<ReadOnly> = db.begin_unit(UnitOptions::new().snapshot());
            probe_in(unit, sql, as_text).await
        }
    }
}

/// Polls `cond` until it holds or `deadline` passes.
async fn poll<F, Fut>(deadline: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Fixture: admin connections, objects, handles
// ---------------------------------------------------------------------------------------------

struct Fixture {
    backend: DbBackend,
    sfx: String,
    /// Advisory lock keys `key` and `key + 1`.
    key: i64,
    primary_url: String,
    replica_url: String,
    admin: DatabaseConnection,
    replica_admin: DatabaseConnection,
}

async fn exec(c: &DatabaseConnection, sql: &str) {
    c.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

impl Fixture {
    async fn open(backend: DbBackend) -> Option<Fixture> {
        let c = common::cluster(backend)?;
        let admin = Database::connect(&c.primary)
            .await
            .expect("admin connection");
        let replica_admin = Database::connect(&c.replicas[0])
            .await
            .expect("admin connection to the replica");
        let fx = Fixture {
            backend,
            sfx: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            key: 1_000_000 + i64::from(fastrand::u32(0..1_000_000_000)),
            primary_url: c.primary.clone(),
            replica_url: c.replicas[0].clone(),
            admin,
            replica_admin,
        };
        fx.create_objects().await;
        Some(fx)
    }

    async fn create_objects(&self) {
        let s = &self.sfx;
        let statements: Vec<String> = match self.backend {
            DbBackend::Postgres => vec![
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sor_ss_role') THEN CREATE ROLE sor_ss_role; END IF; END $$".into(),
                format!("CREATE SCHEMA sor_evil_{s}"),
                format!("CREATE TABLE public.sor_ss_target_{s} (v text)"),
                format!("CREATE TABLE sor_evil_{s}.sor_ss_target_{s} (v text)"),
                format!("GRANT ALL ON SCHEMA sor_evil_{s} TO PUBLIC"),
                format!("CREATE TABLE sor_ss_snap_{s} (v text)"),
                format!("CREATE SEQUENCE sor_ss_seq_{s}"),
                format!("INSERT INTO sor_ss_snap_{s} VALUES ('seed')"),
                format!(
                    "CREATE FUNCTION sor_ss_evil_path_{s}() RETURNS text LANGUAGE plpgsql AS \
                     $f$ BEGIN RETURN set_config('search_path', 'sor_evil_{s}, public', false); END $f$"
                ),
                format!(
                    "CREATE FUNCTION sor_ss_lock_{s}() RETURNS int LANGUAGE plpgsql AS \
                     $f$ BEGIN PERFORM pg_advisory_lock({}); RETURN 1; END $f$",
                    self.key + 1
                ),
            ],
            _ => vec![
                format!("CREATE TABLE sor_ss_snap_{s} (v VARCHAR(80)) ENGINE=InnoDB"),
                format!("CREATE SEQUENCE sor_ss_seq_{s}"),
                format!("INSERT INTO sor_ss_snap_{s} VALUES ('seed')"),
                format!("CREATE TABLE sor_ss_lk_{s} (x INT) ENGINE=InnoDB"),
                format!("CREATE TABLE sor_ss_other_{s} (x INT) ENGINE=InnoDB"),
                format!(
                    "CREATE FUNCTION sor_ss_setvar_{s}() RETURNS INT DETERMINISTIC NO SQL \
                     BEGIN SET @sor_f = 1; RETURN 1; END"
                ),
                format!(
                    "CREATE FUNCTION sor_ss_getlock_{s}() RETURNS INT DETERMINISTIC NO SQL \
                     RETURN GET_LOCK('sor_ss_fl_{s}', 0)"
                ),
            ],
        };
        for sql in &statements {
            exec(&self.admin, sql).await;
        }
        // the replica has them all
        let last = match self.backend {
            DbBackend::Postgres => format!("SELECT sor_ss_lock_{s}"),
            _ => format!("sor_ss_getlock_{s}"),
        };
        let check = match self.backend {
            DbBackend::Postgres => format!(
                "SELECT count(*)::int8 FROM pg_proc WHERE proname = 'sor_ss_lock_{s}'"
            ),
            _ => format!(
                "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_NAME = 'sor_ss_getlock_{s}'"
            ),
        };
        let there = poll(Duration::from_secs(30), || async {
            query_i64(&self.replica_admin, &check).await == Ok(1)
        })
        .await;
        assert!(there, "{last}: not on the replica within 30 s");
    }

    async fn drop_objects(&self) {
        let s = &self.sfx;
        let statements: Vec<String> = match self.backend {
            DbBackend::Postgres => vec![
                format!("DROP SCHEMA IF EXISTS sor_evil_{s} CASCADE"),
                format!("DROP TABLE IF EXISTS public.sor_ss_target_{s}, sor_ss_snap_{s}"),
                format!("DROP SEQUENCE IF EXISTS sor_ss_seq_{s}"),
                format!("DROP FUNCTION IF EXISTS sor_ss_evil_path_{s}(), sor_ss_lock_{s}()"),
            ],
            _ => vec![
                format!("DROP TABLE IF EXISTS sor_ss_snap_{s}, sor_ss_lk_{s}, sor_ss_other_{s}"),
                format!("DROP SEQUENCE IF EXISTS sor_ss_seq_{s}"),
                format!("DROP FUNCTION IF EXISTS sor_ss_setvar_{s}"),
                format!("DROP FUNCTION IF EXISTS sor_ss_getlock_{s}"),
            ],
        };
        for sql in &statements {
            let _ = self.admin.execute_unprepared(sql).await;
        }
    }

    /// A pool of one connection (read-write and read-only alike).
    fn node(url: &str, name: &str) -> NodeConfig {
        NodeConfig::new(url).name(name).pool(PoolConfig {
            max_connections: Some(1),
            read_only_max_connections: Some(1),
            acquire_timeout_ms: Some(10_000),
            ..PoolConfig::default()
        })
    }

    /// A handle without replicas (`pair = false`: read-only units fall back to the primary's
    /// read-only pool) or with the replica; pools of one.
    async fn handle(&self, pair: bool) -> ReplicatedDatabase {
        let mut builder =
            ReplicatedDatabase::builder().primary_node(Self::node(&self.primary_url, "primary"));
        if pair {
            builder = builder
                .replica_node(Self::node(&self.replica_url, "replica"))
                .monitor_interval(Duration::from_millis(200));
        }
        let db = builder.connect().await.expect("connect");
        if pair {
            let on_replica = poll(Duration::from_secs(15), || async {
                let unit = db.begin_read_only();
                let served = common::served_by(&unit).await;
                let _ = unit.commit().await;
                matches!(served, Ok(common::Served { replica: true, .. }))
            })
            .await;
            assert!(on_replica, "read-only units never reached the replica");
        }
        db
    }

    /// Runs `sql` (an admin query giving a count) on every node; the sum.
    async fn admin_count(&self, sql: &str) -> Result<i64, String> {
        let a = query_i64(&self.admin, sql).await?;
        let b = query_i64(&self.replica_admin, sql).await?;
        Ok(a + b)
    }
}

// ---------------------------------------------------------------------------------------------
// One case
// ---------------------------------------------------------------------------------------------

/// Sets the state of `case` in a `setter` unit ended by `ending`, then looks for it. Returns
/// the report lines and the failures.
async fn run_case(
    fx: &Fixture,
    case: &Case,
    setter: Setter,
    ending: Ending,
) -> (Vec<String>, Vec<String>) {
    let db = fx.handle(setter.pair()).await;
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    let what = format!("{} — {} — {:?}", case.name, setter.label(), ending);

    // what fresh units of every probing kind see, before anything is set
    let mut baseline: HashMap<(Kind, String), Result<String, String>> = HashMap::new();
    for probe_kind in setter.probes() {
        for p in case.probes {
            let sql = match p {
                Probe::Same(sql) | Probe::Differs(sql, _) => fill(sql, fx, ""),
                Probe::StillFails(sql) if *probe_kind == Kind::Rw => fill(sql, fx, ""),
                _ => continue,
            };
            let as_text = !matches!(p, Probe::StillFails(_));
            let seen = probe(&db, *probe_kind, &sql, as_text).await.value;
            if matches!(p, Probe::StillFails(_)) && seen.is_ok() {
                lines.push(format!(
                    "    (baseline: `{sql}` runs on a fresh unit: probe meaningless)"
                ));
            }
            baseline.insert((*probe_kind, sql), seen);
        }
    }

    let set = match setter.kind() {
        Kind::Rw => set_in(db.begin_read_write(), case, fx, ending).await,
        Kind::Ro => set_in(db.begin_read_only(), case, fx, ending).await,
        Kind::Snap => {
            let unit: UnitOfWork<ReadOnly> = db.begin_unit(UnitOptions::new().snapshot());
            set_in(unit, case, fx, ending).await
        }
    };
    lines.push(format!(
        "  {what}: set on session {:?} ({}): {}; {}",
        set.session,
        set.node.as_deref().unwrap_or("?"),
        match &set.refused {
            None => "accepted".to_owned(),
            Some(e) => format!(
                "refused/failed: {}",
                e.chars().take(140).collect::<String>()
            ),
        },
        set.ended
    ));
    if setter.kind() == Kind::Rw {
        if let Some(e) = &set.refused {
            failures.push(format!(
                "{what}: the read-write unit could not set the state: {e}"
            ));
        }
        if ending == Ending::Commit && !set.ended.contains("Ok") {
            failures.push(format!("{what}: {}", set.ended));
        }
    }

    for p in case.probes {
        match p {
            Probe::Same(_) | Probe::Differs(..) | Probe::StillFails(_) => {
                for probe_kind in setter.probes() {
                    let (sql, as_text) = match p {
                        Probe::Same(sql) | Probe::Differs(sql, _) => (fill(sql, fx, ""), true),
                        Probe::StillFails(sql) if *probe_kind == Kind::Rw => {
                            (fill(sql, fx, ""), false)
                        }
                        _ => continue,
                    };
                    let seen = probe(&db, *probe_kind, &sql, as_text).await;
                    let before = baseline.get(&(*probe_kind, sql.clone())).cloned();
                    let same_session = seen.session.is_some() && seen.session == set.session;
                    let ok = match p {
                        Probe::Same(_) => Some(&seen.value) == before.as_ref(),
                        Probe::StillFails(_) => seen.value.is_err(),
                        Probe::Differs(_, admin_sql) => {
                            let seeded = query_text(&fx.admin, admin_sql).await;
                            seeded.is_err() || seeded != seen.value
                        }
                        _ => true,
                    };
                    lines.push(format!(
                        "    next {} unit ({}, {} session {:?}): `{}` → {:?} (fresh unit: {:?}) {}",
                        probe_kind.name(),
                        seen.node.as_deref().unwrap_or("?"),
                        if same_session { "same" } else { "new" },
                        seen.session,
                        sql,
                        short(&seen.value),
                        before.as_ref().map(short),
                        if ok { "ok" } else { "STATE CROSSED" }
                    ));
                    if !ok {
                        failures.push(format!(
                            "{what}: the next {} unit ({} session {:?} on {}) saw `{sql}` → {:?}, a fresh unit saw {:?}",
                            probe_kind.name(),
                            if same_session { "same" } else { "new" },
                            seen.session,
                            seen.node.as_deref().unwrap_or("?"),
                            short(&seen.value),
                            before.as_ref().map(short),
                        ));
                    }
                }
            }
            Probe::AdminZero(sql) => {
                let sql = fill(sql, fx, "");
                let started = Instant::now();
                let cleared = poll(Duration::from_secs(10), || async {
                    fx.admin_count(&sql).await == Ok(0)
                })
                .await;
                let last = if cleared {
                    Ok(0)
                } else {
                    fx.admin_count(&sql).await
                };
                lines.push(format!(
                    "    admin: `{sql}` → {} after {:?}",
                    if cleared {
                        "0".to_owned()
                    } else {
                        format!("{last:?}")
                    },
                    started.elapsed()
                ));
                if !cleared {
                    failures.push(format!(
                        "{what}: 10 s after the unit ended the lock is still held: `{sql}` → {last:?}"
                    ));
                }
            }
            Probe::AdminRuns(sql) => {
                let sql = fill(sql, fx, "");
                let started = Instant::now();
                let ran = poll(Duration::from_secs(10), || async {
                    fx.admin.execute_unprepared(&sql).await.is_ok()
                })
                .await;
                lines.push(format!(
                    "    admin: `{sql}` {} after {:?}",
                    if ran { "ran" } else { "STILL BLOCKED" },
                    started.elapsed()
                ));
                if !ran {
                    let e = fx.admin.execute_unprepared(&sql).await.err();
                    failures.push(format!("{what}: 10 s after the unit ended the admin still cannot run `{sql}`: {e:?}"));
                }
            }
            Probe::SeesNewRow => {
                let marker = format!("m-{}", uuid::Uuid::new_v4().simple());
                exec(
                    &fx.admin,
                    &format!("INSERT INTO sor_ss_snap_{} VALUES ('{marker}')", fx.sfx),
                )
                .await;
                let count_sql = match fx.backend {
                    DbBackend::Postgres => PG_SNAP_COUNT,
                    _ => MY_SNAP_COUNT,
                };
                let sql = fill(count_sql, fx, &marker);
                for probe_kind in setter.probes() {
                    let on_replica = setter.pair() && *probe_kind != Kind::Rw;
                    // a replica may need a moment to replay the row: poll; the primary must
                    // show it at once
                    let deadline = if on_replica {
                        Duration::from_secs(10)
                    } else {
                        Duration::ZERO
                    };
                    let until = Instant::now() + deadline;
                    let seen = loop {
                        let seen = probe(&db, *probe_kind, &sql, true).await;
                        if seen.value.as_deref() == Ok("1") || Instant::now() >= until {
                            break seen;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    };
                    let ok = seen.value.as_deref() == Ok("1");
                    lines.push(format!(
                        "    next {} unit ({}, session {:?}): a row the admin wrote after the unit → {:?} {}",
                        probe_kind.name(),
                        seen.node.as_deref().unwrap_or("?"),
                        seen.session,
                        short(&seen.value),
                        if ok { "ok" } else { "FROZEN SNAPSHOT" }
                    ));
                    if !ok {
                        failures.push(format!(
                            "{what}: the next {} unit (session {:?}, setter's {:?}) does not see a row committed after the unit: {:?}",
                            probe_kind.name(),
                            seen.session,
                            set.session,
                            seen.value
                        ));
                    }
                }
            }
            Probe::InsertLandsInPublic => {
                let marker = format!("m-{}", uuid::Uuid::new_v4().simple());
                let s = &fx.sfx;
                let insert = format!("INSERT INTO sor_ss_target_{s} (v) VALUES ('{marker}')");
                let written = db
                    .read_write(|u| {
                        let insert = insert.clone();
                        Box::pin(async move { u.execute_unprepared(&insert).await.map(|_| ()) })
                    })
                    .await;
                let public = query_i64(
                    &fx.admin,
                    &format!(
                        "SELECT count(*)::int8 FROM public.sor_ss_target_{s} WHERE v = '{marker}'"
                    ),
                )
                .await;
                let evil = query_i64(
                    &fx.admin,
                    &format!("SELECT count(*)::int8 FROM sor_evil_{s}.sor_ss_target_{s} WHERE v = '{marker}'"),
                )
                .await;
                let ok = written.is_ok() && public == Ok(1) && evil == Ok(0);
                lines.push(format!(
                    "    next read-write unit's INSERT: {:?}; public {:?}, sor_evil {:?} {}",
                    written.as_ref().map_err(|e| e.to_string()),
                    public,
                    evil,
                    if ok { "ok" } else { "REDIRECTED" }
                ));
                if !ok {
                    failures.push(format!(
                        "{what}: the next read-write unit's INSERT INTO sor_ss_target_{s}: {:?}; rows in public {public:?}, in sor_evil_{s} {evil:?}",
                        written.map_err(|e| e.to_string())
                    ));
                }
            }
        }
    }
    (lines, failures)
}

fn short(v: &Result<String, String>) -> Result<String, String> {
    match v {
        Ok(s) => Ok(s.chars().take(80).collect()),
        Err(e) => Err(e.chars().take(120).collect()),
    }
}

/// Every case of `cases` for every setter in `setters` and every ending; fails with the list
/// of crossings.
async fn run_all(backend: DbBackend, setters: &[Setter], cases: &[Case], title: &str) {
    let Some(fx) = Fixture::open(backend).await else {
        return;
    };
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut runs = 0;
    let mut refused = 0;
    for case in cases {
        for setter in setters {
            for ending in ENDINGS {
                let (lines, f) = run_case(&fx, case, *setter, ending).await;
                runs += 1;
                if lines.iter().any(|l| l.contains("refused/failed")) {
                    refused += 1;
                }
                eprintln!("{}", lines.join("\n"));
                failures.extend(f);
            }
        }
    }
    fx.drop_objects().await;
    eprintln!(
        "[{}] {title}: {runs} runs ({} cases × {} setters × 4 endings), setting refused in {refused}, {} crossings, in {:?}",
        backend.as_str(),
        cases.len(),
        setters.len(),
        failures.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "[{}] {title}: session state crossed units in {} of {runs} runs:\n  - {}",
        backend.as_str(),
        failures.len(),
        failures.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_read_write_units_leave_no_session_state() {
    run_all(
        DbBackend::Postgres,
        &[Setter::RwSolo],
        PG_CASES,
        "state set in read-write units",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_read_only_units_leave_no_session_state() {
    run_all(
        DbBackend::Postgres,
        &[Setter::RoSolo, Setter::RoPair, Setter::SnapPair],
        PG_CASES,
        "state set in read-only units",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_read_write_units_leave_no_session_state() {
    run_all(
        DbBackend::MySql,
        &[Setter::RwSolo],
        MY_CASES,
        "state set in read-write units",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_read_only_units_leave_no_session_state() {
    run_all(
        DbBackend::MySql,
        &[Setter::RoSolo, Setter::RoPair, Setter::SnapPair],
        MY_CASES,
        "state set in read-only units",
    )
    .await;
}

/// The reported bug, on its own: a read-only unit's `search_path` change (however it got
/// through) never redirects a later read-write unit's `INSERT` into another schema, on a
/// handle with or without a replica, whatever the ending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_search_path_never_redirects_an_insert() {
    run_all(
        DbBackend::Postgres,
        &[
            Setter::RoSolo,
            Setter::RoPair,
            Setter::SnapPair,
            Setter::RwSolo,
        ],
        &PG_CASES[..3],
        "search_path and a later INSERT",
    )
    .await;
}
