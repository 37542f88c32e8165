//! Attack suite for the first promise of issue 8: **a read-only unit never writes**, on every
//! backend, on every read-only path, for any SQL string.
//!
//! Every hostile SQL string below runs through every read-only path (a statement-level unit on
//! a replica, a snapshot unit, the primary fallback, `Consistency::Primary`, the `read_only`
//! closure, a nested `begin`, the handle and `TransactionTrait::begin` inside
//! `read_only_scope`, streams, a pool of one connection reused by a later unit, SQLite with and
//! without its reader pool and in memory, a MariaDB replica reached with a privileged user),
//! through the SeaORM methods (`execute_unprepared`, `execute_raw`, `query_one_raw`,
//! `query_all_raw`, `stream_raw`). The statement may fail or even return rows; what is checked
//! is that a fingerprint of **every node** (data, schema, sequences, large objects, settings,
//! replication, locks, files) taken through separate admin connections is the same before and
//! after (`tests/common/fingerprint.rs`).
//!
//! A case that changed something is recorded with its path, method, SQL, what the library
//! answered and the fingerprint diff; the harness then repairs the cluster (restores the data,
//! drops what was created, resets settings, restarts replication) so that every case starts
//! from the same state. All failures of a backend are reported together at the end.
//!
//! Tiers: *normal* and *server* cases run on the cluster `scripts/cluster.sh` started (the
//! `SOR_*` variables), in a database of their own (`sor_attack`). Server cases (terminating
//! walsenders, `ALTER SYSTEM`, `STOP SLAVE`, …) are repaired afterwards. *Fatal* cases (replica
//! promotion, `SHUTDOWN`, `RESET MASTER`, terminating every session) cannot be undone, so they
//! run on a private cluster the test starts itself (`scripts/cluster.sh` in a temporary
//! directory, own ports), which is restarted when a case breaks it.
//!
//! It runs with the rest of the suite (`scripts/test.sh`; about 3 minutes, the three backends at
//! once); `SOR_ATTACK_TESTS=0` skips it. Without a cluster (no `SOR_*` variables) only the
//! SQLite part runs.
//!
//! `SOR_ATTACK_FULL=1` runs every method on every path (the default runs all methods on the
//! main paths and `execute_unprepared` + `query_all_raw` on the others).
//! `SOR_ATTACK_FILTER=text` runs only the cases whose class or label contains `text`.
//! `SOR_ATTACK_NO_FATAL=1` skips the private clusters.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, StreamTrait, TransactionTrait};
use sea_orm_replica::{
    read_only_scope, Consistency, NodeConfig, ReadOnly, ReplicatedDatabase, UnitOptions,
};

use common::fingerprint::{Admin, Fingerprint, Fingerprinter, NodeRole, NodeSpec};

/// The database every attack runs in (PostgreSQL and MariaDB).
const DB: &str = "sor_attack";
/// Where the fixture's original rows are kept: a schema (PostgreSQL), a database (MariaDB), a
/// table prefix (SQLite).
const PG_BACKUP: &str = "sor_atk_backup";
const MY_BACKUP: &str = "sor_attack_bak";
const LITE_BACKUP: &str = "sor_bak_";
/// The fixture's tables: restored from the backup after a case changed them.
const FIXTURE_TABLES: &[&str] = &[
    "seaql_migrations",
    "author",
    "banner",
    "atk_t",
    "atk_log",
    "atk_victim",
];
/// MariaDB named locks the cases take.
const MY_LOCKS: &[&str] = &["sor_atk_lock", "sor_atk_lock2"];
/// MariaDB users of the harness: full rights (admin), and the privileged user a replica is
/// reached with (SUPER / READ_ONLY ADMIN: `read_only=1` does not stop it).
const MY_ADMIN_USER: &str = "sor_attack_admin";
const MY_PRIV_USER: &str = "sor_attack_priv";
/// A statement that runs longer than this is abandoned (its connection is then ended).
const STATEMENT_BOUND: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------------------------------
// Cases
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    /// Changes data, schema or session state: repaired by the harness.
    Normal,
    /// Acts on the server (settings, replication, backends): repaired by the harness.
    Server,
    /// Cannot be undone (promotion, shutdown, binlog reset): private cluster only.
    Fatal,
}

/// A hostile case: one or more SQL strings run in order in the same unit. Placeholders:
/// `{n}` a number unique to the run (object names, lock keys), `{dir}` a directory the case
/// may try to write files into (part of the fingerprint), `{pport}` the primary's port,
/// `{db}` the test database, `{file}` the SQLite database.
#[derive(Clone, Debug)]
struct Case {
    class: &'static str,
    label: &'static str,
    steps: Vec<&'static str>,
    tier: Tier,
}

#[derive(Default)]
struct Cases {
    class: &'static str,
    list: Vec<Case>,
}

impl Cases {
    fn class(&mut self, class: &'static str) -> &mut Self {
        self.class = class;
        self
    }
    fn push(&mut self, tier: Tier, label: &'static str, steps: &[&'static str]) -> &mut Self {
        assert!(
            !self
                .list
                .iter()
                .any(|c| c.class == self.class && c.label == label),
            "duplicate case label {label}"
        );
        self.list.push(Case {
            class: self.class,
            label,
            steps: steps.to_vec(),
            tier,
        });
        self
    }
    fn n(&mut self, label: &'static str, steps: &[&'static str]) -> &mut Self {
        self.push(Tier::Normal, label, steps)
    }
    fn server(&mut self, label: &'static str, steps: &[&'static str]) -> &mut Self {
        self.push(Tier::Server, label, steps)
    }
    fn fatal(&mut self, label: &'static str, steps: &[&'static str]) -> &mut Self {
        self.push(Tier::Fatal, label, steps)
    }
}

fn pg_cases() -> Vec<Case> {
    let mut c = Cases::default();
    c.class("multi-statement")
        .n("select; commit; truncate", &["SELECT 1; COMMIT; TRUNCATE atk_t"])
        .n("select; commit; insert", &["SELECT 1; COMMIT; INSERT INTO atk_t VALUES ({n}, 'multi')"])
        .n("rollback; insert", &["ROLLBACK; INSERT INTO atk_t VALUES ({n}, 'multi')"])
        .n("select; end; delete", &["SELECT 1; END; DELETE FROM atk_t"])
        .n("abort; update", &["ABORT; UPDATE atk_t SET v = 'abort'"])
        .n("set default_transaction_read_only off; insert", &["SELECT 1; SET default_transaction_read_only = off; INSERT INTO atk_t VALUES ({n}, 'multi')"])
        .n("commit; begin read write; insert; commit", &["COMMIT; BEGIN READ WRITE; INSERT INTO atk_t VALUES ({n}, 'multi'); COMMIT"])
        .n("set transaction read write first; insert", &["SET TRANSACTION READ WRITE; INSERT INTO atk_t VALUES ({n}, 'multi')"])
        .n("session characteristics rw; commit; insert", &["SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; COMMIT; INSERT INTO atk_t VALUES ({n}, 'multi')"])
        .n("select; commit; create table", &["SELECT 1; COMMIT; CREATE TABLE atk_new_{n} (id int)"])
        .n("select; commit; drop table", &["SELECT 1; COMMIT; DROP TABLE atk_victim"])
        .n("commit; write function", &["COMMIT; SELECT atk_write_fn()"])
        .n("commit; alter table", &["COMMIT; ALTER TABLE atk_t ADD COLUMN c_{n} int"])
        .n("start transaction read write; insert; commit", &["START TRANSACTION READ WRITE; INSERT INTO atk_t VALUES ({n}, 'multi'); COMMIT"])
        .n("rollback and chain; set rw; insert; commit", &["ROLLBACK AND CHAIN; SET TRANSACTION READ WRITE; INSERT INTO atk_t VALUES ({n}, 'chain'); COMMIT"])
        .n("commit and chain; insert", &["COMMIT AND CHAIN; INSERT INTO atk_t VALUES ({n}, 'chain')"])
        .n("savepoint; release; commit; delete", &["SAVEPOINT s; RELEASE SAVEPOINT s; COMMIT; DELETE FROM atk_t"])
        .n("set_config rw; commit; insert", &["SELECT set_config('default_transaction_read_only', 'off', false); COMMIT; INSERT INTO atk_t VALUES ({n}, 'multi')"])
        .n("select banner; commit; delete banner", &["SELECT * FROM banner; COMMIT; DELETE FROM banner"])
        .n("reset all; commit; insert", &["RESET ALL; COMMIT; INSERT INTO atk_t VALUES ({n}, 'reset')"])
        .n("commit; discard all; insert", &["COMMIT; DISCARD ALL; INSERT INTO atk_t VALUES ({n}, 'discard')"]);
    c.class("transaction control")
        .n(
            "commit, then insert",
            &["COMMIT", "INSERT INTO atk_t VALUES ({n}, 'tc')"],
        )
        .n(
            "rollback, then insert",
            &["ROLLBACK", "INSERT INTO atk_t VALUES ({n}, 'tc')"],
        )
        .n("end, then delete", &["END", "DELETE FROM atk_t"])
        .n(
            "abort, then update",
            &["ABORT", "UPDATE atk_t SET v = 'tc'"],
        )
        .n(
            "begin, insert, commit",
            &["BEGIN", "INSERT INTO atk_t VALUES ({n}, 'tc')", "COMMIT"],
        )
        .n(
            "begin read write, insert, commit",
            &[
                "BEGIN READ WRITE",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
                "COMMIT",
            ],
        )
        .n(
            "start transaction read write, insert, commit",
            &[
                "START TRANSACTION READ WRITE",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
                "COMMIT",
            ],
        )
        .n(
            "start serializable read write, delete, commit",
            &[
                "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
                "DELETE FROM atk_t",
                "COMMIT",
            ],
        )
        .n(
            "set transaction read write, then insert",
            &[
                "SET TRANSACTION READ WRITE",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
            ],
        )
        .n(
            "session characteristics rw, then insert",
            &[
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
            ],
        )
        .n(
            "session characteristics rw, commit, begin, insert",
            &[
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
                "COMMIT",
                "BEGIN",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
                "COMMIT",
            ],
        )
        .n(
            "commit and chain, set rw, insert",
            &[
                "COMMIT AND CHAIN",
                "SET TRANSACTION READ WRITE",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
            ],
        )
        .n(
            "set local transaction_read_only off, insert",
            &[
                "SET LOCAL transaction_read_only = off",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
            ],
        )
        .n(
            "set transaction_read_only off, insert",
            &[
                "SET transaction_read_only = off",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
            ],
        )
        .n(
            "reset default_transaction_read_only, commit, insert",
            &[
                "RESET default_transaction_read_only",
                "COMMIT",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
            ],
        )
        .n(
            "reset all, commit, insert",
            &[
                "RESET ALL",
                "COMMIT",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
            ],
        )
        .n(
            "session authorization default, commit, insert",
            &[
                "SET SESSION AUTHORIZATION DEFAULT",
                "COMMIT",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
            ],
        )
        .n(
            "prepare transaction, then insert",
            &[
                "PREPARE TRANSACTION 'atk_{n}'",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
            ],
        )
        .n(
            "rollback, begin read committed, truncate, commit",
            &[
                "ROLLBACK",
                "BEGIN ISOLATION LEVEL READ COMMITTED",
                "TRUNCATE atk_t",
                "COMMIT",
            ],
        )
        .n(
            "discard all, then insert",
            &["DISCARD ALL", "INSERT INTO atk_t VALUES ({n}, 'tc')"],
        );
    c.class("session change, then write")
        .n("set_config default rw, insert", &["SELECT set_config('default_transaction_read_only', 'off', false)", "INSERT INTO atk_t VALUES ({n}, 'sess')"])
        .n("set_config transaction rw local, insert", &["SELECT set_config('transaction_read_only', 'off', true)", "INSERT INTO atk_t VALUES ({n}, 'sess')"])
        .n("set_config transaction rw, insert", &["SELECT set_config('transaction_read_only', 'off', false)", "INSERT INTO atk_t VALUES ({n}, 'sess')"])
        .n("set default rw, commit, insert", &["SET default_transaction_read_only = off", "COMMIT", "INSERT INTO atk_t VALUES ({n}, 'sess')"])
        .n("set_config default rw, commit, begin, insert", &["SELECT set_config('default_transaction_read_only', 'off', false)", "COMMIT", "BEGIN", "INSERT INTO atk_t VALUES ({n}, 'sess')", "COMMIT"])
        .n("session_replication_role replica, insert", &["SET session_replication_role = replica", "INSERT INTO atk_t VALUES ({n}, 'sess')"])
        .n("default rw to default, commit, insert", &["SET default_transaction_read_only TO DEFAULT", "COMMIT", "INSERT INTO atk_t VALUES ({n}, 'sess')"])
        .n("set role none, insert", &["SET ROLE NONE", "INSERT INTO atk_t VALUES ({n}, 'sess')"])
        .n("search_path, then write function", &["SELECT set_config('search_path', 'atk_evil_{n}, public', false)", "SELECT atk_write_fn()"])
        .n("statement_timeout, default rw, insert", &["SET statement_timeout = 0", "SET default_transaction_read_only = off", "INSERT INTO atk_t VALUES ({n}, 'sess')"])
        .n("set_config from a table read, commit, insert", &["SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false) FROM atk_t LIMIT 1", "COMMIT", "INSERT INTO atk_t VALUES ({n}, 'sess')"]);
    c.class("ddl")
        .n("create table", &["CREATE TABLE atk_new_{n} (id int)"])
        .n("create temp table", &["CREATE TEMP TABLE atk_tmp_{n} (id int)"])
        .n("create unlogged table", &["CREATE UNLOGGED TABLE atk_unlogged_{n} (id int)"])
        .n("create index", &["CREATE INDEX atk_idx_{n} ON atk_t (v)"])
        .n("create index concurrently", &["CREATE INDEX CONCURRENTLY atk_cidx_{n} ON atk_t (v)"])
        .n("drop table", &["DROP TABLE atk_victim"])
        .n("drop table if exists cascade", &["DROP TABLE IF EXISTS atk_victim CASCADE"])
        .n("alter table add column", &["ALTER TABLE atk_t ADD COLUMN c_{n} int"])
        .n("alter table rename", &["ALTER TABLE atk_victim RENAME TO atk_renamed_{n}"])
        .n("truncate", &["TRUNCATE atk_t"])
        .n("truncate banner cascade", &["TRUNCATE banner CASCADE"])
        .n("create schema", &["CREATE SCHEMA atk_schema_{n}"])
        .n("create view", &["CREATE VIEW atk_view_{n} AS SELECT 1 AS x"])
        .n("create materialized view", &["CREATE MATERIALIZED VIEW atk_mview_{n} AS SELECT 1 AS x"])
        .n("refresh materialized view", &["REFRESH MATERIALIZED VIEW atk_mv"])
        .n("create function", &["CREATE FUNCTION atk_fn_{n}() RETURNS int LANGUAGE sql AS 'SELECT 1'"])
        .n("create sequence", &["CREATE SEQUENCE atk_seq_{n}"])
        .n("create type", &["CREATE TYPE atk_type_{n} AS ENUM ('a')"])
        .n("create role", &["CREATE ROLE atk_role_{n}"])
        .n("create superuser role", &["CREATE ROLE atk_super_{n} SUPERUSER LOGIN"])
        .n("create database", &["CREATE DATABASE atk_db_{n}"])
        .n("comment on table", &["COMMENT ON TABLE atk_t IS 'atk {n}'"])
        .n("grant to public", &["GRANT ALL ON atk_t TO PUBLIC"])
        .n("create extension", &["CREATE EXTENSION IF NOT EXISTS pgcrypto"])
        .n("create rule", &["CREATE RULE atk_rule_{n} AS ON INSERT TO atk_t DO INSTEAD NOTHING"])
        .n("create publication", &["CREATE PUBLICATION atk_pub_{n} FOR TABLE atk_t"])
        .n("alter sequence restart", &["ALTER SEQUENCE atk_seq RESTART WITH 1000"])
        .n("cluster", &["CLUSTER atk_t USING atk_t_pkey"])
        .n("vacuum full", &["VACUUM FULL atk_t"])
        .n("reindex", &["REINDEX TABLE atk_t"])
        .n("alter default privileges", &["ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC"])
        .n("create trigger", &["CREATE TRIGGER atk_trg_{n} BEFORE INSERT ON atk_t FOR EACH ROW EXECUTE FUNCTION atk_trigger_fn()"]);
    c.class("hidden write")
        .n("select into", &["SELECT * INTO atk_into_{n} FROM atk_t"])
        .n("create table as", &["CREATE TABLE atk_ctas_{n} AS SELECT 1 AS x"])
        .n("explain analyze create table as", &["EXPLAIN ANALYZE CREATE TABLE atk_ea_{n} AS SELECT 1"])
        .n("explain analyze insert", &["EXPLAIN ANALYZE INSERT INTO atk_t VALUES ({n}, 'explain')"])
        .n("explain (analyze, buffers) delete", &["EXPLAIN (ANALYZE, BUFFERS) DELETE FROM atk_t"])
        .n("explain analyze select into", &["EXPLAIN ANALYZE SELECT * INTO atk_eainto_{n} FROM atk_t"])
        .n("explain analyze create materialized view", &["EXPLAIN ANALYZE CREATE MATERIALIZED VIEW atk_eamv_{n} AS SELECT 1"])
        .n("explain analyze update", &["EXPLAIN ANALYZE UPDATE atk_t SET v = 'explain'"])
        .n("cte delete", &["WITH d AS (DELETE FROM atk_t RETURNING *) SELECT count(*) FROM d"])
        .n("cte insert", &["WITH i AS (INSERT INTO atk_t VALUES ({n}, 'cte') RETURNING id) SELECT * FROM i"])
        .n("cte update", &["WITH u AS (UPDATE atk_t SET v = 'cte' RETURNING id) SELECT count(*) FROM u"])
        .n("with recursive insert", &["WITH RECURSIVE r AS (SELECT 1) INSERT INTO atk_t SELECT {n}, 'rec' FROM r"])
        .n("merge", &["MERGE INTO atk_t t USING (SELECT {n} AS id) s ON t.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id, 'merge')"])
        .n("insert into updatable view", &["INSERT INTO atk_v VALUES ({n}, 'view')"])
        .n("for update", &["SELECT * FROM atk_t FOR UPDATE"])
        .n("for no key update nowait", &["SELECT * FROM atk_t FOR NO KEY UPDATE NOWAIT"])
        .n("for share", &["SELECT * FROM atk_t FOR SHARE"])
        .n("for key share skip locked", &["SELECT * FROM atk_t FOR KEY SHARE SKIP LOCKED"])
        .n("query_to_xml insert", &["SELECT query_to_xml('INSERT INTO atk_t VALUES ({n}, ''xml'') RETURNING 1', false, false, '')"])
        .n("query_to_xml delete", &["SELECT query_to_xml('DELETE FROM atk_t RETURNING 1', true, true, '')"])
        .n("query_to_xml write function", &["SELECT query_to_xml('SELECT atk_write_fn()', false, false, '')"])
        .n("table; insert", &["TABLE atk_t; INSERT INTO atk_t VALUES ({n}, 'table')"]);
    c.class("sequence")
        .n("nextval", &["SELECT nextval('atk_seq')"])
        .n("setval", &["SELECT setval('atk_seq', 1000)"])
        .n("setval not called", &["SELECT setval('atk_seq', 5, false)"])
        .n("nextval of a serial", &["SELECT nextval('banner_id_seq')"])
        .n(
            "nextval of pg_get_serial_sequence",
            &["SELECT nextval(pg_get_serial_sequence('banner', 'id'))"],
        )
        .n(
            "nextval over a series",
            &["SELECT nextval('atk_seq') FROM generate_series(1, 3)"],
        )
        .n(
            "nextval by oid",
            &["SELECT nextval(c.oid) FROM pg_class c WHERE c.relname = 'atk_seq'"],
        )
        .n(
            "setval of a serial",
            &["SELECT setval(pg_get_serial_sequence('banner', 'id'), 1)"],
        )
        .n(
            "currval, lastval",
            &["SELECT currval('atk_seq')", "SELECT lastval()"],
        );
    c.class("lock")
        .n("advisory lock", &["SELECT pg_advisory_lock({n})"])
        .n(
            "advisory lock shared",
            &["SELECT pg_advisory_lock_shared({n})"],
        )
        .n("try advisory lock", &["SELECT pg_try_advisory_lock({n})"])
        .n(
            "advisory lock, two keys",
            &["SELECT pg_advisory_lock({n}, 7)"],
        )
        .n("advisory xact lock", &["SELECT pg_advisory_xact_lock({n})"])
        .n(
            "try advisory lock shared by hash",
            &["SELECT pg_try_advisory_lock_shared(hashtext('atk {n}'))"],
        )
        .n(
            "lock table access exclusive",
            &["LOCK TABLE atk_t IN ACCESS EXCLUSIVE MODE"],
        )
        .n(
            "lock table access share",
            &["LOCK TABLE atk_t IN ACCESS SHARE MODE"],
        )
        .n(
            "lock table row exclusive",
            &["LOCK TABLE atk_t IN ROW EXCLUSIVE MODE"],
        )
        .n(
            "begin, lock table share",
            &["BEGIN", "LOCK TABLE atk_t IN SHARE MODE"],
        );
    c.class("large object")
        .n("lo_create", &["SELECT lo_create({n})"])
        .n("lo_create(0)", &["SELECT lo_create(0)"])
        .n("lo_from_bytea", &["SELECT lo_from_bytea(0, 'atk')"])
        .n("lo_import", &["SELECT lo_import('/etc/hostname')"])
        .n("lo_unlink", &["SELECT lo_unlink(424242)"])
        .n("lo_put", &["SELECT lo_put(424242, 0, 'x')"])
        .n("lowrite", &["SELECT lowrite(lo_open(424242, 131072), 'x')"])
        .n(
            "lo_truncate",
            &["SELECT lo_truncate(lo_open(424242, 131072), 0)"],
        )
        .n("lo_export", &["SELECT lo_export(424242, '{dir}/lo-{n}')"])
        .n(
            "lo_open, then lowrite",
            &["SELECT lo_open(424242, 131072)", "SELECT lowrite(0, 'x')"],
        );
    c.class("server function")
        .server("terminate walsenders", &["SELECT pg_terminate_backend(pid) FROM pg_stat_replication"])
        .server("terminate wal receiver", &["SELECT pg_terminate_backend(pid) FROM pg_stat_wal_receiver"])
        .server("terminate other sessions of the database", &["SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"])
        .server("terminate the sentinel", &["SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sor_attack_sentinel'"])
        .server("cancel other sessions", &["SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"])
        .server("reload configuration", &["SELECT pg_reload_conf()"])
        .server("pause wal replay", &["SELECT pg_wal_replay_pause()"])
        .server("switch wal", &["SELECT pg_switch_wal()"])
        .server("create restore point", &["SELECT pg_create_restore_point('atk_{n}')"])
        .server("create replication slot", &["SELECT pg_create_physical_replication_slot('atk_slot_{n}')"])
        .server("terminate walsender, drop its slot", &["SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'replica2'", "SELECT pg_drop_replication_slot('replica2')"])
        .server("read a server file", &["SELECT pg_read_file('/etc/hostname')"])
        .server("read postgresql.conf", &["SELECT pg_read_binary_file('postgresql.conf')"])
        .server("list the data directory", &["SELECT * FROM pg_ls_dir('.')"])
        .server("rotate log file", &["SELECT pg_rotate_logfile()"])
        .server("checkpoint", &["CHECKPOINT"])
        .fatal("promote", &["SELECT pg_promote()"])
        .fatal("promote without waiting", &["SELECT pg_promote(false)"])
        .fatal("promote after a select", &["SELECT 1; SELECT pg_promote()"])
        .fatal("promote in a do block", &["DO $$ BEGIN PERFORM pg_promote(); END $$"])
        .fatal("promote through dblink to itself", &["SELECT * FROM dblink('host=127.0.0.1 port=' || inet_server_port() || ' dbname={db} user=postgres', 'SELECT pg_promote()') AS t(ok bool)"])
        .fatal("terminate every other session", &["SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"]);
    c.class("maintenance")
        .n("vacuum", &["VACUUM atk_t"])
        .n("vacuum freeze analyze", &["VACUUM (FREEZE, ANALYZE) atk_t"])
        .n("analyze", &["ANALYZE atk_t"]);
    c.class("setting")
        .server("alter system set", &["ALTER SYSTEM SET work_mem = '7MB'"])
        .server(
            "alter system default rw",
            &["ALTER SYSTEM SET default_transaction_read_only = off"],
        )
        .server("alter system reset all", &["ALTER SYSTEM RESET ALL"])
        .server(
            "alter system, reload",
            &[
                "ALTER SYSTEM SET log_min_duration_statement = 12345",
                "SELECT pg_reload_conf()",
            ],
        )
        .n(
            "alter database set",
            &["ALTER DATABASE {db} SET work_mem = '9MB'"],
        )
        .n(
            "alter role set",
            &["ALTER ROLE CURRENT_USER SET work_mem = '9MB'"],
        )
        .n(
            "alter role default rw",
            &["ALTER ROLE CURRENT_USER SET default_transaction_read_only = off"],
        )
        .n(
            "session set_config",
            &["SELECT set_config('work_mem', '8MB', false)"],
        );
    c.class("function or procedure that writes")
        .n("do insert", &["DO $$ BEGIN INSERT INTO atk_t VALUES ({n}, 'do'); END $$"])
        .n("do execute delete", &["DO $$ BEGIN EXECUTE 'DELETE FROM atk_t'; END $$"])
        .n("do commit, insert", &["DO $$ BEGIN COMMIT; INSERT INTO atk_t VALUES ({n}, 'do-commit'); END $$"])
        .n("do set_config rw, insert", &["DO $$ BEGIN PERFORM set_config('transaction_read_only', 'off', true); INSERT INTO atk_t VALUES ({n}, 'do'); END $$"])
        .n("do set local rw, delete", &["DO $$ BEGIN SET LOCAL transaction_read_only = off; DELETE FROM atk_t; END $$"])
        .n("call writing procedure", &["CALL atk_write_proc()"])
        .n("call committing procedure", &["CALL atk_commit_proc()"])
        .n("select volatile sql function", &["SELECT atk_write_fn()"])
        .n("select * from volatile function", &["SELECT * FROM atk_write_fn()"])
        .n("select plpgsql function", &["SELECT atk_write_plpgsql()"])
        .n("values(function)", &["VALUES (atk_write_fn())"])
        .n("function in where", &["SELECT 1 WHERE atk_write_fn() = 1"])
        .n("security definer function", &["SELECT atk_secdef_fn()"])
        .n("function with SET default rw", &["SELECT atk_rw_fn()"])
        .n("function running dynamic sql", &["SELECT atk_dyn_fn('DELETE FROM atk_t')"])
        .n("sor_write_probe", &["SELECT sor_write_probe()"])
        .n("function over a series", &["SELECT atk_write_fn() FROM generate_series(1, 2)"])
        .n("plpgsql function in where of a count", &["SELECT count(*) FROM atk_t WHERE atk_write_plpgsql() > 0"])
        .n("function in a scalar subquery", &["SELECT (SELECT atk_write_fn())"]);
    c.class("copy and files")
        .n(
            "copy from program",
            &["COPY atk_t FROM PROGRAM 'echo {n},copy' WITH (FORMAT csv)"],
        )
        .n(
            "copy to program",
            &["COPY (SELECT 1) TO PROGRAM 'touch {dir}/copy-program-{n}'"],
        )
        .n("copy to file", &["COPY atk_t TO '{dir}/copy-to-{n}.csv'"])
        .n(
            "copy from file",
            &["COPY atk_t FROM '{dir}/seed.csv' WITH (FORMAT csv)"],
        )
        .n(
            "adminpack pg_file_write",
            &["SELECT pg_file_write('{dir}/adminpack-{n}', 'x', false)"],
        );
    c.class("listen/notify")
        .n("notify", &["NOTIFY sor_atk, 'x'"])
        .n("pg_notify", &["SELECT pg_notify('sor_atk', 'x')"])
        .n("listen, then notify", &["LISTEN sor_atk", "NOTIFY sor_atk"])
        .n("listen", &["LISTEN sor_atk"]);
    c.class("prepare/execute")
        .n(
            "prepare insert, execute",
            &[
                "PREPARE atk_p{n}(int) AS INSERT INTO atk_t VALUES ($1, 'prep')",
                "EXECUTE atk_p{n}({n})",
            ],
        )
        .n(
            "prepare delete; execute",
            &["PREPARE atk_q{n} AS DELETE FROM atk_t; EXECUTE atk_q{n}"],
        )
        .n(
            "prepare delete, explain analyze execute",
            &[
                "PREPARE atk_d{n} AS DELETE FROM atk_t",
                "EXPLAIN ANALYZE EXECUTE atk_d{n}",
            ],
        )
        .n(
            "prepare write function, execute",
            &[
                "PREPARE atk_s{n} AS SELECT atk_write_fn()",
                "EXECUTE atk_s{n}",
            ],
        )
        .n("deallocate all", &["DEALLOCATE ALL"]);
    c.class("lexer trick")
        .n(
            "comment before insert",
            &["/* SELECT */ INSERT INTO atk_t VALUES ({n}, 'comment')"],
        )
        .n(
            "line comment before delete",
            &["-- SELECT\nDELETE FROM atk_t"],
        )
        .n(
            "nested comment",
            &["/* /* nested */ SELECT */ DELETE FROM atk_t"],
        )
        .n(
            "semicolon in a comment",
            &["SELECT 1 /* ; */; DELETE FROM atk_t"],
        )
        .n("semicolon in a string", &["SELECT ';'; DELETE FROM atk_t"])
        .n("dollar quote", &["SELECT $$;$$; DELETE FROM atk_t"])
        .n(
            "tagged dollar quote",
            &["SELECT $tag$ ' ; $tag$; DELETE FROM atk_t"],
        )
        .n("escape string", &["SELECT E'\\';'; DELETE FROM atk_t"])
        .n(
            "doubled quote",
            &["SELECT 'it''s; fine'; DELETE FROM atk_t"],
        )
        .n(
            "unicode escape string",
            &["SELECT U&'\\0041;'; DELETE FROM atk_t"],
        )
        .n(
            "quoted identifier",
            &["SELECT \"select\" FROM (SELECT 1 AS \"select\") s; DELETE FROM atk_t"],
        )
        .n("leading whitespace", &["  \n\t DELETE FROM atk_t"])
        .n(
            "with, then delete",
            &["WITH x AS (SELECT 1) DELETE FROM atk_t"],
        )
        .n("comments for spaces", &["select/**/1;delete/**/from atk_t"])
        .n("mixed case", &["DeLeTe FROM atk_t"])
        .n("values; delete", &["VALUES (1); DELETE FROM atk_t"])
        .n("show; delete", &["SHOW work_mem; DELETE FROM atk_t"])
        .n("explain; delete", &["EXPLAIN SELECT 1; DELETE FROM atk_t"])
        .n(
            "line comment hides nothing",
            &["SELECT 1 -- ;\n; DELETE FROM atk_t"],
        )
        .n(
            "dollar quote inside dollar quote",
            &["SELECT $a$ $b$ $a$; DELETE FROM atk_t"],
        )
        .n(
            "parenthesised select; delete",
            &["(SELECT 1); DELETE FROM atk_t"],
        )
        .n(
            "quote in a line comment",
            &["SELECT 'a' -- '\n; DELETE FROM atk_t"],
        )
        .n("escaped backslash", &["SELECT E'\\\\'; DELETE FROM atk_t"])
        .n(
            "backslash in a standard string",
            &["SELECT '\\'; DELETE FROM atk_t; -- '"],
        )
        .n("non-breaking space", &["SELECT 1;\u{a0}DELETE FROM atk_t"])
        .n("unicode literal", &["SELECT 'ü'; DELETE FROM atk_t"])
        .n("empty comment before delete", &["/**/DELETE FROM atk_t"])
        .n(
            "semicolon in a quoted identifier",
            &["SELECT 1 AS \"a;b\"; DELETE FROM atk_t"],
        );
    c.class("role")
        .n(
            "set session authorization, insert",
            &[
                "SET SESSION AUTHORIZATION postgres",
                "INSERT INTO atk_t VALUES ({n}, 'role')",
            ],
        )
        .n("reset role, delete", &["RESET ROLE", "DELETE FROM atk_t"]);
    c.class("dblink and fdw")
        .n("dblink_exec insert on the primary", &["SELECT dblink_exec('host=127.0.0.1 port={pport} dbname={db} user=postgres', 'INSERT INTO atk_t VALUES ({n}, ''dblink'')')"])
        .n("dblink delete returning", &["SELECT * FROM dblink('host=127.0.0.1 port={pport} dbname={db} user=postgres', 'DELETE FROM atk_t RETURNING id') AS t(id int)"])
        .n("dblink_connect, dblink_exec", &["SELECT dblink_connect('atk{n}', 'host=127.0.0.1 port={pport} dbname={db} user=postgres')", "SELECT dblink_exec('atk{n}', 'TRUNCATE atk_t')"])
        .n("dblink write function", &["SELECT * FROM dblink('host=127.0.0.1 port={pport} dbname={db} user=postgres', 'SELECT atk_write_fn()') AS t(n int)"])
        .n("insert into foreign table", &["INSERT INTO atk_remote VALUES ({n}, 'fdw')"])
        .n("delete from foreign table", &["DELETE FROM atk_remote"]);
    c.list
}

fn my_cases() -> Vec<Case> {
    let mut c = Cases::default();
    c.class("multi-statement")
        .n("select; commit; truncate", &["SELECT 1; COMMIT; TRUNCATE atk_t"])
        .n("select; commit; insert", &["SELECT 1; COMMIT; INSERT INTO atk_t VALUES ({n}, 'multi')"])
        .n("select; session rw; insert", &["SELECT 1; SET SESSION TRANSACTION READ WRITE; INSERT INTO atk_t VALUES ({n}, 'multi')"])
        .n("rollback; insert", &["ROLLBACK; INSERT INTO atk_t VALUES ({n}, 'multi')"])
        .n("select; create table (implicit commit)", &["SELECT 1; CREATE TABLE atk_new_{n} (id INT)"])
        .n("select; delete banner", &["SELECT 1; DELETE FROM banner"])
        .n("commit; start transaction read write; insert", &["COMMIT; START TRANSACTION READ WRITE; INSERT INTO atk_t VALUES ({n}, 'multi'); COMMIT"])
        .n("select; sql_log_bin 0; insert", &["SELECT 1; SET sql_log_bin = 0; INSERT INTO atk_t VALUES ({n}, 'nolog')"])
        .n("select; drop table", &["SELECT 1; DROP TABLE atk_victim"])
        .n("select; autocommit; delete", &["SELECT 1; SET autocommit = 1; DELETE FROM atk_t"])
        .n("select; tx_read_only 0; commit; update", &["SELECT 1; SET SESSION tx_read_only = 0; COMMIT; UPDATE atk_t SET v = 'multi'"])
        .server("select; global read_only off", &["SELECT 1; SET GLOBAL read_only = 0"]);
    c.class("transaction control")
        .n(
            "commit, then insert",
            &["COMMIT", "INSERT INTO atk_t VALUES ({n}, 'tc')"],
        )
        .n(
            "rollback, then insert",
            &["ROLLBACK", "INSERT INTO atk_t VALUES ({n}, 'tc')"],
        )
        .n(
            "start transaction read write, insert, commit",
            &[
                "START TRANSACTION READ WRITE",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
                "COMMIT",
            ],
        )
        .n(
            "begin, delete, commit",
            &["BEGIN", "DELETE FROM atk_t", "COMMIT"],
        )
        .n(
            "set transaction read write, insert",
            &[
                "SET TRANSACTION READ WRITE",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
            ],
        )
        .n(
            "set session transaction read write, insert",
            &[
                "SET SESSION TRANSACTION READ WRITE",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
            ],
        )
        .n(
            "session rw, commit, start transaction, insert",
            &[
                "SET SESSION TRANSACTION READ WRITE",
                "COMMIT",
                "START TRANSACTION",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
                "COMMIT",
            ],
        )
        .n(
            "transaction_read_only 0, insert",
            &[
                "SET @@session.transaction_read_only = 0",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
            ],
        )
        .n(
            "tx_read_only 0, insert",
            &[
                "SET SESSION tx_read_only = 0",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
            ],
        )
        .n(
            "autocommit on, insert",
            &["SET autocommit = 1", "INSERT INTO atk_t VALUES ({n}, 'tc')"],
        )
        .n(
            "xa prepare a write",
            &[
                "XA START 'atk{n}'",
                "INSERT INTO atk_t VALUES ({n}, 'xa')",
                "XA END 'atk{n}'",
                "XA PREPARE 'atk{n}'",
            ],
        )
        .n(
            "commit and chain, insert",
            &["COMMIT AND CHAIN", "INSERT INTO atk_t VALUES ({n}, 'tc')"],
        )
        .n(
            "savepoint, rollback to, insert",
            &[
                "SAVEPOINT a",
                "ROLLBACK TO SAVEPOINT a",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
            ],
        )
        .n(
            "lock tables write, insert, unlock",
            &[
                "LOCK TABLES atk_t WRITE",
                "INSERT INTO atk_t VALUES ({n}, 'locked')",
                "UNLOCK TABLES",
            ],
        )
        .n(
            "set statement sql_log_bin for insert",
            &["SET STATEMENT sql_log_bin = 0 FOR INSERT INTO atk_t VALUES ({n}, 'stmt')"],
        )
        .n(
            "set statement tx_read_only for insert",
            &["SET STATEMENT tx_read_only = 0 FOR INSERT INTO atk_t VALUES ({n}, 'stmt')"],
        )
        .n(
            "consistent snapshot, insert",
            &[
                "START TRANSACTION WITH CONSISTENT SNAPSHOT",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
            ],
        );
    c.class("session change, then write")
        .n(
            "sql_log_bin 0, insert",
            &[
                "SET sql_log_bin = 0",
                "INSERT INTO atk_t VALUES ({n}, 'sess')",
            ],
        )
        .n(
            "session sql_log_bin 0, delete",
            &["SET SESSION sql_log_bin = 0", "DELETE FROM atk_t"],
        )
        .n(
            "sql_mode, insert",
            &[
                "SET SESSION sql_mode = ''",
                "INSERT INTO atk_t VALUES ({n}, 'sess')",
            ],
        )
        .n(
            "set names, insert",
            &["SET NAMES latin1", "INSERT INTO atk_t VALUES ({n}, 'sess')"],
        )
        .n(
            "gtid_domain_id, insert",
            &[
                "SET SESSION gtid_domain_id = 9",
                "INSERT INTO atk_t VALUES ({n}, 'sess')",
            ],
        )
        .n(
            "server_id of the primary, insert",
            &[
                "SET SESSION server_id = 1",
                "INSERT INTO atk_t VALUES ({n}, 'sess')",
            ],
        )
        .n(
            "skip_replication, insert",
            &[
                "SET SESSION skip_replication = 1",
                "INSERT INTO atk_t VALUES ({n}, 'sess')",
            ],
        )
        .n(
            "gtid_seq_no, insert",
            &[
                "SET SESSION gtid_seq_no = 1000000",
                "INSERT INTO atk_t VALUES ({n}, 'sess')",
            ],
        )
        .n(
            "pseudo_slave_mode, insert",
            &[
                "SET @@session.pseudo_slave_mode = 1",
                "INSERT INTO atk_t VALUES ({n}, 'sess')",
            ],
        )
        .n(
            "foreign_key_checks 0, delete",
            &["SET SESSION foreign_key_checks = 0", "DELETE FROM author"],
        )
        .n(
            "sql_safe_updates 0, update",
            &[
                "SET SESSION sql_safe_updates = 0",
                "UPDATE atk_t SET v = 'sess'",
            ],
        );
    c.class("ddl")
        .n("select, then create table", &["SELECT 1", "CREATE TABLE atk_new_{n} (id INT)"])
        .n("create table", &["CREATE TABLE atk_new_{n} (id INT)"])
        .n("create temporary table", &["CREATE TEMPORARY TABLE atk_tmp_{n} (id INT)"])
        .n("temporary table, insert", &["CREATE TEMPORARY TABLE atk_tmp_{n} (id INT)", "INSERT INTO atk_tmp_{n} VALUES (1)"])
        .n("drop table", &["DROP TABLE atk_victim"])
        .n("truncate", &["TRUNCATE TABLE atk_t"])
        .n("alter table add column", &["ALTER TABLE atk_t ADD COLUMN c{n} INT"])
        .n("rename table", &["RENAME TABLE atk_victim TO atk_renamed_{n}"])
        .n("create index", &["CREATE INDEX atk_i{n} ON atk_t (v)"])
        .n("create view", &["CREATE VIEW atk_view_{n} AS SELECT 1 AS x"])
        .n("create database", &["CREATE DATABASE atk_db_{n}"])
        .n("create user", &["CREATE USER 'atk_u{n}'@'127.0.0.1'"])
        .n("grant creating a user", &["GRANT SELECT ON {db}.* TO 'atk_g{n}'@'127.0.0.1' IDENTIFIED BY 'x'"])
        .n("create procedure", &["CREATE PROCEDURE atk_p{n}() SELECT 1"])
        .n("create function", &["CREATE FUNCTION atk_f{n}() RETURNS INT DETERMINISTIC RETURN 1"])
        .n("create trigger", &["CREATE TRIGGER atk_tr{n} BEFORE INSERT ON atk_t FOR EACH ROW SET NEW.v = 'trigger'"])
        .n("create event", &["CREATE EVENT atk_ev{n} ON SCHEDULE AT CURRENT_TIMESTAMP + INTERVAL 1 DAY DO DELETE FROM atk_t"])
        .n("create sequence", &["CREATE SEQUENCE atk_s{n}"])
        .n("alter sequence restart", &["ALTER SEQUENCE atk_seq RESTART WITH 500"])
        .n("optimize table", &["OPTIMIZE TABLE atk_t"])
        .n("analyze table persistent", &["ANALYZE TABLE atk_t PERSISTENT FOR ALL"])
        .n("repair table", &["REPAIR TABLE atk_t"])
        .n("flush tables", &["FLUSH TABLES"])
        .n("flush privileges", &["FLUSH PRIVILEGES"])
        .n("create or replace table", &["CREATE OR REPLACE TABLE atk_victim (id INT)"])
        .n("create table as select", &["CREATE TABLE atk_sel_{n} AS SELECT * FROM atk_t"])
        .n("create server", &["CREATE SERVER atk_srv{n} FOREIGN DATA WRAPPER mysql OPTIONS (HOST '127.0.0.1')"]);
    c.class("hidden write")
        .n("select writing function", &["SELECT atk_write_fn()"])
        .n("call writing procedure", &["CALL atk_write_proc()"])
        .n("sor_write_probe", &["SELECT sor_write_probe()"])
        .n("do writing function", &["DO atk_write_fn()"])
        .n("for update", &["SELECT * FROM atk_t FOR UPDATE"])
        .n(
            "lock in share mode",
            &["SELECT * FROM atk_t LOCK IN SHARE MODE"],
        )
        .n(
            "select into variable",
            &["SELECT v FROM atk_t LIMIT 1 INTO @v"],
        )
        .n("assign variable", &["SELECT @a := 1"])
        .n(
            "assign variable from writing function",
            &["SELECT @a := atk_write_fn()"],
        )
        .n(
            "into outfile",
            &["SELECT v FROM atk_t LIMIT 1 INTO OUTFILE '{dir}/outfile-{n}'"],
        )
        .n(
            "into dumpfile",
            &["SELECT v FROM atk_t LIMIT 1 INTO DUMPFILE '{dir}/dumpfile-{n}'"],
        )
        .n(
            "load data infile",
            &["LOAD DATA INFILE '{dir}/load.csv' INTO TABLE atk_t FIELDS TERMINATED BY ','"],
        )
        .n(
            "load data local infile",
            &["LOAD DATA LOCAL INFILE '{dir}/load.csv' INTO TABLE atk_t FIELDS TERMINATED BY ','"],
        )
        .n(
            "handler open, read, close",
            &[
                "HANDLER atk_t OPEN",
                "HANDLER atk_t READ FIRST",
                "HANDLER atk_t CLOSE",
            ],
        )
        .n("replace", &["REPLACE INTO atk_t VALUES (1, 'replace')"])
        .n(
            "insert ignore",
            &["INSERT IGNORE INTO atk_t VALUES (1, 'ignore'), ({n}, 'ignore')"],
        )
        .n(
            "on duplicate key update",
            &["INSERT INTO atk_t VALUES (1, 'dup') ON DUPLICATE KEY UPDATE v = 'odku'"],
        )
        .n(
            "multi-table delete",
            &["DELETE atk_t FROM atk_t JOIN atk_victim ON atk_t.id = atk_victim.id"],
        )
        .n(
            "insert select",
            &["INSERT INTO atk_t SELECT id + 1000, v FROM atk_t"],
        )
        .n("analyze delete (executes)", &["ANALYZE DELETE FROM atk_t"])
        .n(
            "analyze format=json update",
            &["ANALYZE FORMAT=JSON UPDATE atk_t SET v = 'analyze'"],
        )
        .n("explain delete", &["EXPLAIN DELETE FROM atk_t"])
        .n(
            "benchmark a writing function",
            &["SELECT BENCHMARK(1, atk_write_fn())"],
        )
        .n(
            "writing function in a derived table",
            &["SELECT * FROM (SELECT atk_write_fn() AS x) t"],
        )
        .n(
            "writing function in a union",
            &["(SELECT 1) UNION (SELECT atk_write_fn())"],
        )
        .n(
            "writing function in where",
            &["SELECT 1 FROM DUAL WHERE atk_write_fn() = 1"],
        )
        .n("update through a view", &["UPDATE atk_v SET v = 'view'"])
        .n("delete returning", &["DELETE FROM atk_t RETURNING id"])
        .n(
            "insert returning",
            &["INSERT INTO atk_t VALUES ({n}, 'ret') RETURNING id"],
        );
    c.class("sequence")
        .n("next value for", &["SELECT NEXT VALUE FOR atk_seq"])
        .n("nextval", &["SELECT NEXTVAL(atk_seq)"])
        .n("setval", &["SELECT SETVAL(atk_seq, 1000)"])
        .n("do nextval", &["DO NEXTVAL(atk_seq)"])
        .n(
            "nextval over seq_1_to_3",
            &["SELECT NEXTVAL(atk_seq) FROM seq_1_to_3"],
        )
        .n(
            "lastval, previous value",
            &[
                "SELECT LASTVAL(atk_seq)",
                "SELECT PREVIOUS VALUE FOR atk_seq",
            ],
        )
        .n("setval not used", &["SELECT SETVAL(atk_seq, 100, 0)"]);
    c.class("lock")
        .n("get_lock", &["SELECT GET_LOCK('sor_atk_lock', 0)"])
        .n("do get_lock", &["DO GET_LOCK('sor_atk_lock', 0)"])
        .n(
            "two named locks",
            &["SELECT GET_LOCK('sor_atk_lock2', 0), GET_LOCK('sor_atk_lock', 0)"],
        )
        .n("lock tables read", &["LOCK TABLES atk_t READ"])
        .n("lock tables write", &["LOCK TABLES atk_t WRITE"])
        .n(
            "flush tables with read lock",
            &["FLUSH TABLES WITH READ LOCK"],
        )
        .n(
            "for update nowait",
            &["SELECT * FROM atk_t FOR UPDATE NOWAIT"],
        );
    c.class("prepare/execute")
        .n(
            "prepare insert, execute",
            &[
                "PREPARE atk_s FROM 'INSERT INTO atk_t VALUES ({n}, ''prep'')'",
                "EXECUTE atk_s",
            ],
        )
        .n(
            "prepare delete; execute",
            &["PREPARE atk_s FROM 'DELETE FROM atk_t'; EXECUTE atk_s"],
        )
        .n(
            "variable, prepare, execute",
            &[
                "SET @q = 'DELETE FROM atk_t'",
                "PREPARE atk_s FROM @q",
                "EXECUTE atk_s",
            ],
        )
        .n(
            "execute immediate",
            &["EXECUTE IMMEDIATE 'DELETE FROM atk_t'"],
        )
        .n(
            "execute immediate concat",
            &["EXECUTE IMMEDIATE CONCAT('DEL', 'ETE FROM atk_t')"],
        )
        .n(
            "anonymous compound statement",
            &["BEGIN NOT ATOMIC INSERT INTO atk_t VALUES ({n}, 'compound'); END"],
        )
        .n(
            "procedure running dynamic sql",
            &["CALL atk_dyn_proc('DELETE FROM atk_t')"],
        )
        .n(
            "variable, execute immediate",
            &[
                "SET @q = CONCAT('INSERT INTO atk_t VALUES (', {n}, ', ''var'')')",
                "EXECUTE IMMEDIATE @q",
            ],
        );
    c.class("lexer trick")
        .n(
            "executable comment 40101",
            &["/*!40101 DELETE FROM atk_t */"],
        )
        .n("executable comment", &["/*!DELETE FROM atk_t*/"])
        .n(
            "mariadb executable comment",
            &["/*M!100000 DELETE FROM atk_t */"],
        )
        .n(
            "executable comment after select",
            &["SELECT 1 /*! ; DELETE FROM atk_t */"],
        )
        .n(
            "double dash without space (get_lock)",
            &["SELECT 1 --GET_LOCK('sor_atk_lock', 0)"],
        )
        .n(
            "double dash without space (function)",
            &["SELECT 1 --atk_write_fn()"],
        )
        .n("hash comment", &["# comment\nDELETE FROM atk_t"])
        .n(
            "semicolon in a hash comment",
            &["SELECT 1 # ;\n; DELETE FROM atk_t"],
        )
        .n(
            "backslash-escaped quote",
            &["SELECT '\\''; DELETE FROM atk_t"],
        )
        .n(
            "backslash quote hides from a standard lexer",
            &["SELECT 'a\\''; DELETE FROM atk_t; -- '"],
        )
        .n(
            "doubled double quote",
            &["SELECT \"a\"\"b\"; DELETE FROM atk_t"],
        )
        .n(
            "backtick identifier",
            &["SELECT `x` FROM (SELECT 1 AS `x`) t; DELETE FROM atk_t"],
        )
        .n("no space after semicolon", &["SELECT 1;DELETE FROM atk_t"])
        .n("comment for a space", &["DELETE/**/FROM atk_t"])
        .n("leading whitespace", &["  \n DELETE FROM atk_t"])
        .n(
            "unterminated comment",
            &["SELECT 1 /* unterminated ; DELETE FROM atk_t"],
        )
        .n(
            "versioned comment with a trailing select",
            &["/*!50000 DELETE FROM atk_t*/ -- SELECT"],
        )
        .n(
            "line comment, newline, delete",
            &["SELECT 1 -- x\n; DELETE FROM atk_t"],
        )
        .n("mixed case", &["DeLeTe FROM atk_t"])
        .n(
            "charset introducer",
            &["SELECT _utf8mb4'x;'; DELETE FROM atk_t"],
        )
        .n("national string", &["SELECT N'ü'; DELETE FROM atk_t"])
        .n(
            "semicolon in a backtick identifier",
            &["SELECT 1 AS `a;b`; DELETE FROM atk_t"],
        );
    c.class("server statement")
        .server("stop slave", &["STOP SLAVE"])
        .server("stop slave sql_thread", &["STOP SLAVE SQL_THREAD"])
        .server("stop all slaves", &["STOP ALL SLAVES"])
        .server("global read_only off", &["SET GLOBAL read_only = 0"])
        .server("global max_connections", &["SET GLOBAL max_connections = 199"])
        .server("global general_log", &["SET GLOBAL general_log = 1"])
        .server("flush logs", &["FLUSH LOGS"])
        .server("flush binary logs", &["FLUSH BINARY LOGS"])
        .server("kill a replication thread", &["SET @k = (SELECT MIN(id) FROM information_schema.processlist WHERE user = 'system user' AND command LIKE 'Slave%')", "EXECUTE IMMEDIATE CONCAT('KILL ', @k)"])
        .server("kill another session of the database", &["SET @k = (SELECT MIN(id) FROM information_schema.processlist WHERE db = '{db}' AND id <> CONNECTION_ID())", "EXECUTE IMMEDIATE CONCAT('KILL ', @k)"])
        .server("reset gtid_slave_pos", &["SET GLOBAL gtid_slave_pos = ''"])
        .server("change master", &["CHANGE MASTER TO MASTER_CONNECT_RETRY = 2"])
        .server("install plugin", &["INSTALL SONAME 'ha_blackhole'"])
        .server("event scheduler on", &["SET GLOBAL event_scheduler = ON"])
        .fatal("purge binary logs", &["PURGE BINARY LOGS BEFORE NOW()"])
        .fatal("shutdown", &["SHUTDOWN"])
        .fatal("select; shutdown", &["SELECT 1; SHUTDOWN"])
        .fatal("reset master", &["RESET MASTER"])
        .fatal("stop slave, reset slave all", &["STOP SLAVE", "RESET SLAVE ALL"]);
    c.list
}

fn lite_cases() -> Vec<Case> {
    let mut c = Cases::default();
    c.class("multi-statement")
        .n("select; delete", &["SELECT 1; DELETE FROM atk_t"])
        .n(
            "select; commit; delete",
            &["SELECT 1; COMMIT; DELETE FROM atk_t"],
        )
        .n("select; drop table", &["SELECT 1; DROP TABLE atk_victim"])
        .n(
            "commit; insert",
            &["COMMIT; INSERT INTO atk_t VALUES ({n}, 'multi')"],
        )
        .n(
            "end; insert",
            &["END; INSERT INTO atk_t VALUES ({n}, 'multi')"],
        )
        .n(
            "rollback; insert",
            &["ROLLBACK; INSERT INTO atk_t VALUES ({n}, 'multi')"],
        )
        .n(
            "query_only off; insert",
            &["PRAGMA query_only = 0; INSERT INTO atk_t VALUES ({n}, 'multi')"],
        )
        .n(
            "query_only off; commit; delete",
            &["PRAGMA query_only = OFF; COMMIT; DELETE FROM atk_t"],
        )
        .n(
            "select *; delete",
            &["SELECT * FROM atk_t; DELETE FROM atk_t"],
        );
    c.class("transaction control")
        .n(
            "commit, then insert",
            &["COMMIT", "INSERT INTO atk_t VALUES ({n}, 'tc')"],
        )
        .n(
            "begin immediate, insert, commit",
            &[
                "BEGIN IMMEDIATE",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
                "COMMIT",
            ],
        )
        .n(
            "begin exclusive, delete, commit",
            &["BEGIN EXCLUSIVE", "DELETE FROM atk_t", "COMMIT"],
        )
        .n(
            "savepoint, insert, release",
            &[
                "SAVEPOINT a",
                "INSERT INTO atk_t VALUES ({n}, 'tc')",
                "RELEASE a",
            ],
        )
        .n(
            "end transaction, insert",
            &["END TRANSACTION", "INSERT INTO atk_t VALUES ({n}, 'tc')"],
        )
        .n(
            "rollback, begin, delete, commit",
            &["ROLLBACK", "BEGIN", "DELETE FROM atk_t", "COMMIT"],
        );
    c.class("pragma")
        .n(
            "query_only 0, insert",
            &[
                "PRAGMA query_only = 0",
                "INSERT INTO atk_t VALUES ({n}, 'pragma')",
            ],
        )
        .n(
            "query_only false, delete",
            &["PRAGMA query_only = false", "DELETE FROM atk_t"],
        )
        .n(
            "writable_schema, edit sqlite_master",
            &[
                "PRAGMA writable_schema = ON",
                "UPDATE sqlite_master SET sql = sql || ' ' WHERE name = 'atk_victim'",
            ],
        )
        .n("user_version", &["PRAGMA user_version = {n}"])
        .n("application_id", &["PRAGMA application_id = {n}"])
        .n("journal_mode delete", &["PRAGMA journal_mode = DELETE"])
        .n("journal_mode off", &["PRAGMA journal_mode = OFF"])
        .n(
            "auto_vacuum full, vacuum",
            &["PRAGMA auto_vacuum = FULL", "VACUUM"],
        )
        .n("page_size, vacuum", &["PRAGMA page_size = 1024", "VACUUM"])
        .n("optimize", &["PRAGMA optimize"])
        .n(
            "foreign_keys off, delete author",
            &["PRAGMA foreign_keys = OFF", "DELETE FROM author"],
        )
        .n(
            "wal_checkpoint truncate",
            &["PRAGMA wal_checkpoint(TRUNCATE)"],
        )
        .n("incremental_vacuum", &["PRAGMA incremental_vacuum"])
        .n(
            "locking_mode exclusive, insert",
            &[
                "PRAGMA locking_mode = EXCLUSIVE",
                "INSERT INTO atk_t VALUES ({n}, 'pragma')",
            ],
        )
        .n("main.user_version", &["PRAGMA main.user_version = 7"]);
    c.class("attach and files")
        .n(
            "attach a new file, create there",
            &[
                "ATTACH DATABASE '{dir}/attached-{n}.db' AS x",
                "CREATE TABLE x.t (id)",
            ],
        )
        .n(
            "attach; create",
            &["ATTACH DATABASE '{dir}/attached2-{n}.db' AS y; CREATE TABLE y.t (id)"],
        )
        .n(
            "attach uri rwc, create",
            &[
                "ATTACH DATABASE 'file:{dir}/attached3-{n}.db?mode=rwc' AS z",
                "CREATE TABLE z.t (id)",
            ],
        )
        .n(
            "attach memory, write there",
            &[
                "ATTACH DATABASE ':memory:' AS m",
                "CREATE TABLE m.t (x)",
                "INSERT INTO m.t VALUES (1)",
            ],
        )
        .n(
            "attach the database itself, delete",
            &[
                "ATTACH DATABASE '{file}' AS again",
                "DELETE FROM again.atk_t",
            ],
        )
        .n("vacuum", &["VACUUM"])
        .n("vacuum into", &["VACUUM INTO '{dir}/vacuum-{n}.db'"])
        .n("vacuum main", &["VACUUM main"])
        .n(
            "load_extension",
            &["SELECT load_extension('/nonexistent/atk_ext')"],
        )
        .n("reindex", &["REINDEX"])
        .n("analyze", &["ANALYZE"])
        .n("analyze a table", &["ANALYZE atk_t"]);
    c.class("ddl")
        .n("create table", &["CREATE TABLE atk_new_{n} (id INTEGER)"])
        .n("create temp table", &["CREATE TEMP TABLE atk_tmp_{n} (id INTEGER)"])
        .n("create index", &["CREATE INDEX atk_idx_{n} ON atk_t (v)"])
        .n("create view", &["CREATE VIEW atk_view_{n} AS SELECT 1"])
        .n("create trigger", &["CREATE TRIGGER atk_trg_{n} AFTER INSERT ON atk_t BEGIN DELETE FROM atk_victim; END"])
        .n("create temp trigger on main", &["CREATE TEMP TRIGGER atk_ttrg_{n} AFTER UPDATE ON main.atk_t BEGIN DELETE FROM main.atk_victim; END"])
        .n("drop table", &["DROP TABLE atk_victim"])
        .n("alter table add column", &["ALTER TABLE atk_t ADD COLUMN c{n} INTEGER"])
        .n("alter table rename", &["ALTER TABLE atk_victim RENAME TO atk_renamed_{n}"])
        .n("create virtual table", &["CREATE VIRTUAL TABLE atk_fts_{n} USING fts5(x)"])
        .n("drop view", &["DROP VIEW atk_v"]);
    c.class("hidden write")
        .n("with, delete", &["WITH x AS (SELECT 1) DELETE FROM atk_t"])
        .n(
            "with, insert",
            &["WITH x AS (SELECT 1) INSERT INTO atk_t SELECT {n}, 'cte' FROM x"],
        )
        .n(
            "insert returning",
            &["INSERT INTO atk_t VALUES ({n}, 'ret') RETURNING id"],
        )
        .n("delete returning", &["DELETE FROM atk_t RETURNING *"])
        .n(
            "update returning",
            &["UPDATE atk_t SET v = 'ret' RETURNING id"],
        )
        .n("replace", &["REPLACE INTO atk_t VALUES (1, 'replace')"])
        .n(
            "insert or replace",
            &["INSERT OR REPLACE INTO atk_t VALUES (1, 'or-replace')"],
        )
        .n(
            "upsert",
            &["INSERT INTO atk_t VALUES (1, 'up') ON CONFLICT(id) DO UPDATE SET v = 'upsert'"],
        )
        .n(
            "insert into a view",
            &["INSERT INTO atk_v VALUES ({n}, 'view')"],
        );
    c.class("lexer trick")
        .n("comment before delete", &["/* SELECT */ DELETE FROM atk_t"])
        .n(
            "line comment before delete",
            &["-- SELECT\nDELETE FROM atk_t"],
        )
        .n("semicolon in a string", &["SELECT ';'; DELETE FROM atk_t"])
        .n("doubled quote", &["SELECT 'it''s'; DELETE FROM atk_t"])
        .n(
            "bracket identifier",
            &["SELECT [x] FROM (SELECT 1 AS [x]); DELETE FROM atk_t"],
        )
        .n(
            "backtick identifier",
            &["SELECT `x` FROM (SELECT 1 AS `x`); DELETE FROM atk_t"],
        )
        .n("leading whitespace", &["  \n\t DELETE FROM atk_t"])
        .n("mixed case", &["DeLeTe FROM atk_t"])
        .n(
            "semicolon in a comment",
            &["SELECT 1 /* ; */; DELETE FROM atk_t"],
        )
        .n(
            "explain query plan; delete",
            &["EXPLAIN QUERY PLAN SELECT 1; DELETE FROM atk_t"],
        )
        .n("explain delete", &["EXPLAIN DELETE FROM atk_t"])
        .n("values; delete", &["VALUES (1); DELETE FROM atk_t"])
        .n("blob literal; delete", &["SELECT x'3b'; DELETE FROM atk_t"])
        .n(
            "backslash in a string",
            &["SELECT '\\'; DELETE FROM atk_t; -- '"],
        )
        .n(
            "line comment hides nothing",
            &["SELECT 1 -- ;\n; DELETE FROM atk_t"],
        );
    c.list
}

// ------------------------------------------------------------------------------------------
// Paths and methods
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Unprepared,
    ExecuteRaw,
    QueryOne,
    QueryAll,
    Stream,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Unprepared => "execute_unprepared",
            Method::ExecuteRaw => "execute_raw",
            Method::QueryOne => "query_one_raw",
            Method::QueryAll => "query_all_raw",
            Method::Stream => "stream_raw",
        }
    }
}

const FOUR: &[Method] = &[
    Method::Unprepared,
    Method::ExecuteRaw,
    Method::QueryOne,
    Method::QueryAll,
];
const FIVE: &[Method] = &[
    Method::Unprepared,
    Method::ExecuteRaw,
    Method::QueryOne,
    Method::QueryAll,
    Method::Stream,
];
const TWO: &[Method] = &[Method::Unprepared, Method::QueryAll];
const THREE: &[Method] = &[Method::Unprepared, Method::QueryAll, Method::Stream];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `begin_read_only()`.
    Unit,
    /// `begin_unit::<ReadOnly>(UnitOptions::new().snapshot())`.
    Snapshot,
    /// `begin_unit::<ReadOnly>(UnitOptions::new().consistency(Consistency::Primary))`.
    PrimaryConsistency,
    /// `read_only(|u| ..)`.
    Closure,
    /// `unit.begin()` inside a read-only unit.
    Nested,
    /// The handle as `ConnectionTrait` / `StreamTrait` inside `read_only_scope`.
    ScopeHandle,
    /// `TransactionTrait::begin()` on the handle inside `read_only_scope`.
    ScopeBegin,
    /// Pool of one: each statement in a unit of its own, then all of them again in a later
    /// unit on the same connection.
    LaterUnits,
}

/// How to build a handle.
#[derive(Clone, Debug)]
struct HandleSpec {
    primary: String,
    replicas: Vec<String>,
    reader_pool: bool,
    pool_of_one: bool,
}

impl HandleSpec {
    async fn build(&self) -> Result<ReplicatedDatabase, String> {
        let mut primary = NodeConfig::new(&self.primary).name("primary");
        if self.pool_of_one {
            primary = primary.max_connections(1);
        }
        let mut builder = ReplicatedDatabase::builder()
            .primary_node(primary)
            .sqlite_reader_pool(self.reader_pool);
        for (i, url) in self.replicas.iter().enumerate() {
            let mut node = NodeConfig::new(url).name(format!("replica-{}", i + 1));
            if self.pool_of_one {
                node = node.max_connections(1);
            }
            builder = builder.replica_node(node);
        }
        builder
            .connect()
            .await
            .map_err(|e| format!("connect a handle: {e}"))
    }
}

struct PathDef {
    label: &'static str,
    kind: Kind,
    handle: usize,
    methods: &'static [Method],
}

/// The methods a path runs: every one on the main unit paths (`main`), the simple protocol,
/// the extended protocol and a stream on the handle paths (`scope`), the simple and the
/// extended protocol elsewhere; every method everywhere with `SOR_ATTACK_FULL=1`.
/// (`execute_raw`, `query_one_raw` and `query_all_raw` all send one prepared statement.)
fn methods(level: Level, stream: bool) -> &'static [Method] {
    let full = std::env::var("SOR_ATTACK_FULL").is_ok_and(|v| v == "1");
    match (if full { Level::Main } else { level }, stream) {
        (Level::Main, true) => FIVE,
        (Level::Main, false) => FOUR,
        (Level::Scope, true) => THREE,
        _ => TWO,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Main,
    Scope,
    Other,
}

/// The read-only paths of a server backend over these handles: 0 with replicas, 1 without,
/// 2 and 3 the same with pools of one connection, and optionally 4/5 a replica reached with a
/// privileged user (MariaDB).
fn server_paths(privileged: bool) -> Vec<PathDef> {
    let mut p = vec![
        PathDef {
            label: "replica unit (statement-level)",
            kind: Kind::Unit,
            handle: 0,
            methods: methods(Level::Main, true),
        },
        PathDef {
            label: "replica snapshot unit",
            kind: Kind::Snapshot,
            handle: 0,
            methods: methods(Level::Other, true),
        },
        PathDef {
            label: "Consistency::Primary unit (replicas configured)",
            kind: Kind::PrimaryConsistency,
            handle: 0,
            methods: methods(Level::Other, true),
        },
        PathDef {
            label: "read_only closure (replicas)",
            kind: Kind::Closure,
            handle: 0,
            methods: methods(Level::Other, false),
        },
        PathDef {
            label: "nested begin in a replica unit",
            kind: Kind::Nested,
            handle: 0,
            methods: methods(Level::Other, true),
        },
        PathDef {
            label: "handle in read_only_scope (replicas)",
            kind: Kind::ScopeHandle,
            handle: 0,
            methods: methods(Level::Scope, true),
        },
        PathDef {
            label: "begin() on the handle in read_only_scope (replicas)",
            kind: Kind::ScopeBegin,
            handle: 0,
            methods: methods(Level::Other, true),
        },
        PathDef {
            label: "primary fallback unit (no replicas)",
            kind: Kind::Unit,
            handle: 1,
            methods: methods(Level::Main, true),
        },
        PathDef {
            label: "primary fallback snapshot unit",
            kind: Kind::Snapshot,
            handle: 1,
            methods: methods(Level::Other, true),
        },
        PathDef {
            label: "read_only closure (no replicas)",
            kind: Kind::Closure,
            handle: 1,
            methods: methods(Level::Other, false),
        },
        PathDef {
            label: "nested begin in a primary fallback unit",
            kind: Kind::Nested,
            handle: 1,
            methods: methods(Level::Other, true),
        },
        PathDef {
            label: "handle in read_only_scope (no replicas: primary)",
            kind: Kind::ScopeHandle,
            handle: 1,
            methods: methods(Level::Scope, true),
        },
        PathDef {
            label: "begin() on the handle in read_only_scope (no replicas)",
            kind: Kind::ScopeBegin,
            handle: 1,
            methods: methods(Level::Other, true),
        },
        PathDef {
            label: "later unit on a pool of one (replicas)",
            kind: Kind::LaterUnits,
            handle: 2,
            methods: methods(Level::Other, false),
        },
        PathDef {
            label: "later unit on a pool of one (no replicas)",
            kind: Kind::LaterUnits,
            handle: 3,
            methods: methods(Level::Other, false),
        },
    ];
    if privileged {
        p.extend([
            PathDef {
                label: "privileged replica unit",
                kind: Kind::Unit,
                handle: 4,
                methods: methods(Level::Main, true),
            },
            PathDef {
                label: "privileged replica snapshot unit",
                kind: Kind::Snapshot,
                handle: 4,
                methods: methods(Level::Other, true),
            },
            PathDef {
                label: "privileged replica: handle in read_only_scope",
                kind: Kind::ScopeHandle,
                handle: 4,
                methods: methods(Level::Scope, true),
            },
            PathDef {
                label: "privileged replica: begin() in read_only_scope",
                kind: Kind::ScopeBegin,
                handle: 4,
                methods: methods(Level::Other, true),
            },
            PathDef {
                label: "privileged replica: later unit on a pool of one",
                kind: Kind::LaterUnits,
                handle: 5,
                methods: methods(Level::Other, false),
            },
        ]);
    }
    p
}

/// SQLite paths: handle 0 the file with its reader pool, 1 the file without it, 2 an
/// in-memory database, 3/4/5 the same with pools of one connection.
fn lite_paths() -> Vec<PathDef> {
    vec![
        PathDef {
            label: "reader pool unit",
            kind: Kind::Unit,
            handle: 0,
            methods: methods(Level::Main, true),
        },
        PathDef {
            label: "reader pool snapshot unit",
            kind: Kind::Snapshot,
            handle: 0,
            methods: methods(Level::Other, true),
        },
        PathDef {
            label: "reader pool: Consistency::Primary unit",
            kind: Kind::PrimaryConsistency,
            handle: 0,
            methods: methods(Level::Other, true),
        },
        PathDef {
            label: "reader pool: read_only closure",
            kind: Kind::Closure,
            handle: 0,
            methods: methods(Level::Other, false),
        },
        PathDef {
            label: "reader pool: nested begin",
            kind: Kind::Nested,
            handle: 0,
            methods: methods(Level::Other, true),
        },
        PathDef {
            label: "reader pool: handle in read_only_scope",
            kind: Kind::ScopeHandle,
            handle: 0,
            methods: methods(Level::Scope, true),
        },
        PathDef {
            label: "reader pool: begin() in read_only_scope",
            kind: Kind::ScopeBegin,
            handle: 0,
            methods: methods(Level::Other, true),
        },
        PathDef {
            label: "no reader pool: unit",
            kind: Kind::Unit,
            handle: 1,
            methods: methods(Level::Main, true),
        },
        PathDef {
            label: "no reader pool: snapshot unit",
            kind: Kind::Snapshot,
            handle: 1,
            methods: methods(Level::Other, true),
        },
        PathDef {
            label: "no reader pool: read_only closure",
            kind: Kind::Closure,
            handle: 1,
            methods: methods(Level::Other, false),
        },
        PathDef {
            label: "no reader pool: nested begin",
            kind: Kind::Nested,
            handle: 1,
            methods: methods(Level::Other, true),
        },
        PathDef {
            label: "no reader pool: handle in read_only_scope",
            kind: Kind::ScopeHandle,
            handle: 1,
            methods: methods(Level::Scope, true),
        },
        PathDef {
            label: "no reader pool: begin() in read_only_scope",
            kind: Kind::ScopeBegin,
            handle: 1,
            methods: methods(Level::Other, true),
        },
        PathDef {
            label: "memory: unit",
            kind: Kind::Unit,
            handle: 2,
            methods: methods(Level::Main, true),
        },
        PathDef {
            label: "memory: handle in read_only_scope",
            kind: Kind::ScopeHandle,
            handle: 2,
            methods: methods(Level::Scope, true),
        },
        PathDef {
            label: "memory: begin() in read_only_scope",
            kind: Kind::ScopeBegin,
            handle: 2,
            methods: methods(Level::Other, true),
        },
        PathDef {
            label: "memory: nested begin",
            kind: Kind::Nested,
            handle: 2,
            methods: methods(Level::Other, true),
        },
        PathDef {
            label: "reader pool: later unit on a pool of one",
            kind: Kind::LaterUnits,
            handle: 3,
            methods: methods(Level::Other, false),
        },
        PathDef {
            label: "no reader pool: later unit on a pool of one",
            kind: Kind::LaterUnits,
            handle: 4,
            methods: methods(Level::Other, false),
        },
        PathDef {
            label: "memory: later unit on a pool of one",
            kind: Kind::LaterUnits,
            handle: 5,
            methods: methods(Level::Other, false),
        },
    ]
}

/// Runs `sql` with method `m` on `c`; what the library answered, as text.
async fn exec<C>(c: &C, m: Method, sql: &str) -> String
where
    C: ConnectionTrait + StreamTrait + Sync,
{
    let backend = ConnectionTrait::get_database_backend(c);
    let stmt = || Statement::from_string(backend, sql.to_owned());
    let run = async {
        match m {
            Method::Unprepared => c
                .execute_unprepared(sql)
                .await
                .map(|r| format!("ok ({} rows affected)", r.rows_affected())),
            Method::ExecuteRaw => c
                .execute_raw(stmt())
                .await
                .map(|r| format!("ok ({} rows affected)", r.rows_affected())),
            Method::QueryOne => c.query_one_raw(stmt()).await.map(|r| {
                if r.is_some() {
                    "ok (a row)".to_owned()
                } else {
                    "ok (no row)".to_owned()
                }
            }),
            Method::QueryAll => c
                .query_all_raw(stmt())
                .await
                .map(|r| format!("ok ({} rows)", r.len())),
            Method::Stream => match StreamTrait::stream_raw(c, stmt()).await {
                Ok(stream) => {
                    let rows: Vec<Result<_, DbErr>> = stream.collect().await;
                    match rows.iter().find_map(|r| r.as_ref().err()) {
                        Some(e) => Err(DbErr::Custom(format!(
                            "stream item failed after {} rows: {e}",
                            rows.iter().filter(|r| r.is_ok()).count()
                        ))),
                        None => Ok(format!("ok ({} rows streamed)", rows.len())),
                    }
                }
                Err(e) => Err(e),
            },
        }
    };
    match tokio::time::timeout(STATEMENT_BOUND, run).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => format!("error: {}", one_line(&e.to_string())),
        Err(_) => format!("no answer within {STATEMENT_BOUND:?}"),
    }
}

fn one_line(s: &str) -> String {
    let s = s.replace('\n', " ");
    if s.chars().count() > 220 {
        format!("{}…", s.chars().take(220).collect::<String>())
    } else {
        s
    }
}

async fn run_steps<C>(c: &C, m: Method, steps: &[String]) -> Vec<String>
where
    C: ConnectionTrait + StreamTrait + Sync,
{
    let mut out = Vec::with_capacity(steps.len());
    for s in steps {
        out.push(exec(c, m, s).await);
    }
    out
}

fn ended(what: &str, r: Result<(), DbErr>) -> String {
    match r {
        Ok(()) => format!("{what}: ok"),
        Err(e) => format!("{what}: error: {}", one_line(&e.to_string())),
    }
}

/// Runs the case's statements on one path; what the library answered at each step.
async fn run_path(kind: Kind, db: &ReplicatedDatabase, m: Method, steps: &[String]) -> Vec<String> {
    match kind {
        Kind::Unit | Kind::Snapshot | Kind::PrimaryConsistency => {
            let unit = match kind {
                Kind::Unit => db.begin_read_only(),
                Kind::Snapshot => db.begin_unit::<ReadOnly>(UnitOptions::new().snapshot()),
                _ => {
                    db.begin_unit::<ReadOnly>(UnitOptions::new().consistency(Consistency::Primary))
                }
            };
            let mut out = run_steps(&unit, m, steps).await;
            out.push(format!("ran on: {}", unit.node_name().unwrap_or("-")));
            out.push(ended("commit", unit.commit().await));
            out
        }
        Kind::Closure => {
            let steps = Arc::new(steps.to_vec());
            let result = db
                .read_only(move |u| {
                    let steps = steps.clone();
                    Box::pin(async move {
                        let mut out = run_steps(u, m, &steps).await;
                        out.push(format!("ran on: {}", u.node_name().unwrap_or("-")));
                        Ok::<_, DbErr>(out)
                    })
                })
                .await;
            match result {
                Ok(mut out) => {
                    out.push("closure committed".into());
                    out
                }
                Err(e) => vec![format!("closure: {}", one_line(&e.to_string()))],
            }
        }
        Kind::Nested => {
            let unit = db.begin_read_only();
            let mut out = Vec::new();
            match TransactionTrait::begin(&unit).await {
                Ok(inner) => {
                    out.extend(run_steps(&inner, m, steps).await);
                    out.push(format!("ran on: {}", inner.node_name().unwrap_or("-")));
                    out.push(ended("nested commit", inner.commit().await));
                }
                Err(e) => out.push(format!("nested begin: {}", one_line(&e.to_string()))),
            }
            out.push(ended("commit", unit.commit().await));
            out
        }
        Kind::ScopeHandle => read_only_scope(run_steps(db, m, steps)).await,
        Kind::ScopeBegin => {
            read_only_scope(async {
                match TransactionTrait::begin(db).await {
                    Ok(txn) => {
                        let mut out = run_steps(&txn, m, steps).await;
                        out.push(ended("commit", txn.commit().await));
                        out
                    }
                    Err(e) => vec![format!("begin: {}", one_line(&e.to_string()))],
                }
            })
            .await
        }
        Kind::LaterUnits => {
            let mut out = Vec::new();
            for (i, s) in steps.iter().enumerate() {
                let unit = db.begin_read_only();
                out.push(format!("unit {}: {}", i + 1, exec(&unit, m, s).await));
                out.push(ended("commit", unit.commit().await));
            }
            let unit = db.begin_read_only();
            for r in run_steps(&unit, m, steps).await {
                out.push(format!("later unit: {r}"));
            }
            out.push(ended("later unit commit", unit.commit().await));
            out
        }
    }
}

// ------------------------------------------------------------------------------------------
// Placeholders
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Vars {
    dir: String,
    pport: u16,
    file: String,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn subst(sql: &str, n: u64, v: &Vars) -> String {
    sql.replace("{n}", &n.to_string())
        .replace("{dir}", &v.dir)
        .replace("{pport}", &v.pport.to_string())
        .replace("{db}", DB)
        .replace("{file}", &v.file)
}

/// A number no other run uses (object names, lock keys, file names).
fn next_n() -> u64 {
    let base = u64::from(std::process::id() % 1000) * 1_000_000;
    900_000_000 + base + NEXT.fetch_add(1, Ordering::Relaxed)
}

// ------------------------------------------------------------------------------------------
// Report
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Failure {
    target: String,
    path: String,
    method: &'static str,
    class: &'static str,
    label: &'static str,
    sql: Vec<String>,
    outcome: Vec<String>,
    diff: Vec<String>,
    not_run: Option<String>,
}

impl Failure {
    fn render(&self) -> String {
        let mut s = format!(
            "[{}] {} | {} | {} | {}: {}\n",
            self.target, self.class, self.path, self.method, self.class, self.label
        );
        for (i, q) in self.sql.iter().enumerate() {
            s.push_str(&format!("    sql {}: {}\n", i + 1, q.replace('\n', "⏎")));
        }
        if let Some(why) = &self.not_run {
            s.push_str(&format!("    NOT RUN: {why}\n"));
            return s;
        }
        for o in &self.outcome {
            s.push_str(&format!("    library: {o}\n"));
        }
        for d in self.diff.iter().take(40) {
            s.push_str(&format!("    changed: {d}\n"));
        }
        if self.diff.len() > 40 {
            s.push_str(&format!("    … {} more changes\n", self.diff.len() - 40));
        }
        s
    }

    /// The kinds of change: `node: category` (`primary: data`, `replica-1: server`, …).
    fn categories(&self) -> BTreeSet<String> {
        self.diff
            .iter()
            .filter_map(|d| {
                let rest = d.split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
                let (node, item) = rest.split_once(": ")?;
                if node == "files" {
                    return Some("files".to_owned());
                }
                let cat = item.split(['/', ':', ' ']).next().unwrap_or(item);
                Some(format!("{node}: {cat}"))
            })
            .collect()
    }
}

#[derive(Default)]
struct Report {
    failures: Vec<Failure>,
    runs: usize,
    passed: usize,
    /// (target, path, method) → runs, failures, seconds
    per_path: Vec<(String, String, &'static str, usize, usize, f64)>,
    notes: Vec<String>,
    /// Time spent: building handles, running cases, fingerprints, session checks, repairs.
    time: [Duration; 5],
}

impl Report {
    fn absorb(&mut self, other: Report) {
        self.runs += other.runs;
        self.passed += other.passed;
        self.failures.extend(other.failures);
        self.per_path.extend(other.per_path);
        self.notes.extend(other.notes);
        for i in 0..5 {
            self.time[i] += other.time[i];
        }
    }

    fn summary(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "{} runs, {} passed, {} failed ({} not run)\n",
            self.runs,
            self.passed,
            self.failures.iter().filter(|f| f.not_run.is_none()).count(),
            self.failures.iter().filter(|f| f.not_run.is_some()).count()
        ));
        let t = self.time.map(|d| d.as_secs_f64());
        s.push_str(&format!(
            "time: handles {:.1}s, cases {:.1}s, fingerprints {:.1}s, session checks {:.1}s, repairs {:.1}s\n",
            t[0], t[1], t[2], t[3], t[4]
        ));
        for n in &self.notes {
            s.push_str(&format!("note: {n}\n"));
        }
        let mut by_class: BTreeMap<&str, Vec<&Failure>> = BTreeMap::new();
        for f in &self.failures {
            by_class.entry(f.class).or_default().push(f);
        }
        s.push_str("\n=== failures by class ===\n");
        for (class, fs) in &by_class {
            let cats: BTreeSet<String> = fs.iter().flat_map(|f| f.categories()).collect();
            s.push_str(&format!(
                "\n## {class}: {} failures; changed: {}\n",
                fs.len(),
                cats.into_iter().collect::<Vec<_>>().join(", ")
            ));
            for f in fs {
                s.push_str(&format!(
                    "  - [{}] {} | {} | {}{}\n",
                    f.target,
                    f.path,
                    f.method,
                    f.label,
                    if f.not_run.is_some() {
                        " (NOT RUN)"
                    } else {
                        ""
                    }
                ));
            }
        }
        s.push_str("\n=== details ===\n");
        for f in &self.failures {
            s.push_str(&f.render());
        }
        s
    }
}

// ------------------------------------------------------------------------------------------
// Fixture: setup, restore, repair
// ------------------------------------------------------------------------------------------

fn with_path(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("a URL");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

fn with_user(url: &str, user: &str) -> String {
    let mut u = url::Url::parse(url).expect("a URL");
    u.set_username(user).expect("user");
    u.to_string()
}

fn port_of(url: &str) -> u16 {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.port())
        .unwrap_or(0)
}

const PG_FIXTURE: &str = r#"
CREATE TABLE atk_t (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO atk_t SELECT g, 'seed-' || g FROM generate_series(1, 5) g;
CREATE TABLE atk_log (id serial PRIMARY KEY, what text);
INSERT INTO atk_log (what) VALUES ('seed');
CREATE TABLE atk_victim (id int);
INSERT INTO atk_victim VALUES (1);
CREATE SEQUENCE atk_seq;
SELECT nextval('atk_seq');
CREATE VIEW atk_v AS SELECT id, v FROM atk_t;
CREATE MATERIALIZED VIEW atk_mv AS SELECT count(*) AS n FROM atk_t;
CREATE FUNCTION atk_write_fn() RETURNS int VOLATILE LANGUAGE sql AS
  $$ INSERT INTO atk_log (what) VALUES ('atk_write_fn') RETURNING 1 $$;
CREATE FUNCTION atk_write_plpgsql() RETURNS int VOLATILE LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO atk_log (what) VALUES ('atk_write_plpgsql'); RETURN 1; END $$;
CREATE FUNCTION atk_secdef_fn() RETURNS int VOLATILE SECURITY DEFINER LANGUAGE plpgsql AS
  $$ BEGIN DELETE FROM atk_t WHERE id = 1; RETURN 1; END $$;
CREATE FUNCTION atk_rw_fn() RETURNS int VOLATILE LANGUAGE plpgsql SET default_transaction_read_only = off AS
  $$ BEGIN INSERT INTO atk_log (what) VALUES ('atk_rw_fn'); RETURN 1; END $$;
CREATE FUNCTION atk_dyn_fn(q text) RETURNS int VOLATILE LANGUAGE plpgsql AS
  $$ BEGIN EXECUTE q; RETURN 1; END $$;
CREATE FUNCTION atk_trigger_fn() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO atk_log (what) VALUES ('trigger'); RETURN NEW; END $$;
CREATE PROCEDURE atk_write_proc() LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO atk_log (what) VALUES ('atk_write_proc'); END $$;
CREATE PROCEDURE atk_commit_proc() LANGUAGE plpgsql AS
  $$ BEGIN COMMIT; SET TRANSACTION READ WRITE; INSERT INTO atk_log (what) VALUES ('atk_commit_proc'); COMMIT; END $$;
CREATE OR REPLACE FUNCTION sor_write_probe() RETURNS int LANGUAGE sql AS
  $$ INSERT INTO banner (name) VALUES ('write probe') RETURNING 1 $$;
INSERT INTO author (name) VALUES ('atk author');
INSERT INTO banner (name, author_id) SELECT 'atk banner ' || g, (SELECT min(id) FROM author) FROM generate_series(1, 3) g;
SELECT lo_from_bytea(424242, 'sor attack large object');
"#;

const MY_FIXTURE: &str = r#"
CREATE TABLE atk_t (id INT PRIMARY KEY, v VARCHAR(100) NOT NULL);
INSERT INTO atk_t VALUES (1, 'seed-1'), (2, 'seed-2'), (3, 'seed-3'), (4, 'seed-4'), (5, 'seed-5');
CREATE TABLE atk_log (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(100));
INSERT INTO atk_log (what) VALUES ('seed');
CREATE TABLE atk_victim (id INT);
INSERT INTO atk_victim VALUES (1);
CREATE SEQUENCE atk_seq NOCACHE;
SELECT NEXTVAL(atk_seq);
CREATE VIEW atk_v AS SELECT id, v FROM atk_t;
CREATE FUNCTION atk_write_fn() RETURNS INT DETERMINISTIC MODIFIES SQL DATA
  BEGIN INSERT INTO atk_log (what) VALUES ('atk_write_fn'); RETURN 1; END;
CREATE PROCEDURE atk_write_proc() MODIFIES SQL DATA
  INSERT INTO atk_log (what) VALUES ('atk_write_proc');
CREATE PROCEDURE atk_dyn_proc(q TEXT) MODIFIES SQL DATA
  BEGIN EXECUTE IMMEDIATE q; END;
CREATE FUNCTION sor_write_probe() RETURNS INT DETERMINISTIC MODIFIES SQL DATA
  BEGIN INSERT INTO banner (name) VALUES ('write probe'); RETURN 1; END;
INSERT INTO author (name) VALUES ('atk author');
INSERT INTO banner (name, author_id) VALUES ('atk banner 1', 1), ('atk banner 2', 1), ('atk banner 3', 1);
"#;

const LITE_FIXTURE: &str = r#"
CREATE TABLE atk_t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
INSERT INTO atk_t VALUES (1, 'seed-1'), (2, 'seed-2'), (3, 'seed-3'), (4, 'seed-4'), (5, 'seed-5');
CREATE TABLE atk_log (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT);
INSERT INTO atk_log (what) VALUES ('seed');
CREATE TABLE atk_victim (id INTEGER);
INSERT INTO atk_victim VALUES (1);
CREATE VIEW atk_v AS SELECT id, v FROM atk_t;
INSERT INTO author (name) VALUES ('atk author');
INSERT INTO banner (name, author_id) VALUES ('atk banner 1', 1), ('atk banner 2', 1), ('atk banner 3', 1);
"#;

/// What a cluster (or SQLite database) under attack needs to be set up and repaired.
enum Fixture {
    Pg {
        /// The primary's `postgres` database (to drop and create the test database).
        server: String,
        /// The primary, test database, as the library connects.
        primary: String,
    },
    My {
        /// root on the primary, no database.
        server: String,
        /// root on the primary, test database.
        primary: String,
        /// root on each replica, no database (for resynchronising replication).
        replicas: Vec<String>,
    },
    Lite {
        url: String,
        memory: bool,
    },
}

async fn migrate(url: &str) -> Result<(), String> {
    let conn = sea_orm::Database::connect(url)
        .await
        .map_err(|e| format!("connect {url} for migrations: {e}"))?;
    Migrator::up(&conn, None)
        .await
        .map_err(|e| format!("migrate {url}: {e}"))?;
    let _ = conn.close().await;
    Ok(())
}

impl Fixture {
    /// Creates the test database from nothing: migration, fixture objects, backup copies.
    async fn rebuild(&self, fp: Option<&Fingerprinter>, vars: &Vars) -> Result<(), String> {
        match self {
            Fixture::Pg { server, primary } => {
                let admin = Admin::pg(server, common::fingerprint::ADMIN_APP, 1).await?;
                let r = admin
                    .exec(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
                    .await;
                let r = match r {
                    Ok(()) => admin.exec(&format!("CREATE DATABASE {DB}")).await,
                    Err(e) => Err(e),
                };
                admin.close().await;
                r?;
                migrate(primary).await?;
                let admin = Admin::pg(primary, common::fingerprint::ADMIN_APP, 1).await?;
                let mut sql = PG_FIXTURE.to_owned();
                for ext in ["dblink", "postgres_fdw", "adminpack"] {
                    sql.push_str(&format!("CREATE EXTENSION IF NOT EXISTS {ext};\n"));
                }
                sql.push_str(&format!(
                    "CREATE SERVER atk_primary FOREIGN DATA WRAPPER postgres_fdw \
                       OPTIONS (host '127.0.0.1', port '{}', dbname '{DB}');
                     CREATE USER MAPPING FOR CURRENT_USER SERVER atk_primary OPTIONS (user 'postgres');
                     CREATE FOREIGN TABLE atk_remote (id int, v text) SERVER atk_primary OPTIONS (table_name 'atk_t');
                     CREATE SCHEMA {PG_BACKUP};\n",
                    vars.pport
                ));
                for t in FIXTURE_TABLES {
                    sql.push_str(&format!(
                        "CREATE TABLE {PG_BACKUP}.{t} AS TABLE public.{t};\n"
                    ));
                }
                let r = admin.exec(&sql).await;
                admin.close().await;
                r.map_err(|e| format!("fixture: {e}"))?;
            }
            Fixture::My {
                server,
                primary,
                replicas,
            } => {
                let admin = Admin::my(server, 1).await?;
                let sql = format!(
                    "DROP DATABASE IF EXISTS {DB}; DROP DATABASE IF EXISTS {MY_BACKUP}; CREATE DATABASE {DB};
                     CREATE USER IF NOT EXISTS '{MY_ADMIN_USER}'@'127.0.0.1';
                     GRANT ALL PRIVILEGES ON *.* TO '{MY_ADMIN_USER}'@'127.0.0.1' WITH GRANT OPTION;
                     CREATE USER IF NOT EXISTS '{MY_PRIV_USER}'@'127.0.0.1';
                     GRANT ALL PRIVILEGES ON *.* TO '{MY_PRIV_USER}'@'127.0.0.1';"
                );
                let r = admin.exec(&sql).await;
                admin.close().await;
                r?;
                migrate(primary).await?;
                let admin = Admin::my(primary, 1).await?;
                let mut sql = MY_FIXTURE.to_owned();
                sql.push_str(&format!("CREATE DATABASE {MY_BACKUP};\n"));
                for t in FIXTURE_TABLES {
                    sql.push_str(&format!(
                        "CREATE TABLE {MY_BACKUP}.{t} LIKE {DB}.{t}; INSERT INTO {MY_BACKUP}.{t} SELECT * FROM {DB}.{t};\n"
                    ));
                }
                let r = admin.exec(&sql).await;
                admin.close().await;
                r.map_err(|e| format!("fixture: {e}"))?;
                // the users replicate: wait until every replica has them
                for url in replicas {
                    let admin_url = with_user(url, MY_ADMIN_USER);
                    let until = Instant::now() + Duration::from_secs(30);
                    loop {
                        match Admin::my(&admin_url, 1).await {
                            Ok(a) => {
                                a.close().await;
                                break;
                            }
                            Err(e) if Instant::now() > until => {
                                return Err(format!("the admin user did not reach {url}: {e}"))
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }
            }
            Fixture::Lite { url, .. } => {
                let own;
                let admin = match fp {
                    Some(fp) => &fp.nodes[0].admin,
                    None => {
                        own = Admin::lite(url).await?;
                        &own
                    }
                };
                lite_drop_all(admin).await?;
                migrate(url).await?;
                let mut sql = LITE_FIXTURE.to_owned();
                for t in FIXTURE_TABLES {
                    sql.push_str(&format!(
                        "CREATE TABLE {LITE_BACKUP}{t} AS SELECT * FROM \"{t}\";\n"
                    ));
                }
                admin
                    .exec(&sql)
                    .await
                    .map_err(|e| format!("fixture: {e}"))?;
            }
        }
        if let Some(fp) = fp {
            for n in &fp.nodes {
                let _ = n.revive_sentinel().await;
            }
        }
        Ok(())
    }

    /// Puts the fixture tables' rows back from the backup copies.
    async fn restore_data(&self, fp: &Fingerprinter) -> Result<(), String> {
        let admin = &fp.primary().admin;
        let sql = match self {
            Fixture::Pg { .. } => {
                let mut sql = format!("TRUNCATE {} CASCADE;\n", FIXTURE_TABLES.join(", "));
                for t in FIXTURE_TABLES {
                    sql.push_str(&format!(
                        "INSERT INTO public.{t} SELECT * FROM {PG_BACKUP}.{t};\n"
                    ));
                }
                sql.push_str("REFRESH MATERIALIZED VIEW atk_mv;\n");
                sql
            }
            Fixture::My { .. } => {
                let mut sql = "SET SESSION foreign_key_checks = 0;\n".to_owned();
                for t in FIXTURE_TABLES {
                    sql.push_str(&format!(
                        "DELETE FROM {DB}.{t}; INSERT INTO {DB}.{t} SELECT * FROM {MY_BACKUP}.{t};\n"
                    ));
                }
                sql.push_str("SET SESSION foreign_key_checks = 1;\n");
                sql
            }
            Fixture::Lite { .. } => unreachable!("SQLite is rebuilt"),
        };
        admin.exec(&sql).await
    }
}

/// Drops every object of an SQLite database and resets its header fields.
async fn lite_drop_all(admin: &Admin) -> Result<(), String> {
    let _ = admin.exec("PRAGMA writable_schema = OFF").await;
    for _ in 0..3 {
        let objects = admin
            .rows("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND type IN ('table', 'view', 'trigger')")
            .await?;
        if objects.is_empty() {
            break;
        }
        for o in objects {
            let ty = o[0].clone().unwrap_or_default().to_uppercase();
            let name = o[1].clone().unwrap_or_default().replace('"', "\"\"");
            let _ = admin.exec(&format!("DROP {ty} IF EXISTS \"{name}\"")).await;
        }
    }
    let _ = admin.exec("DELETE FROM sqlite_sequence").await;
    admin
        .exec("PRAGMA user_version = 0; PRAGMA application_id = 0")
        .await
}

/// Removes a scratch directory when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One cluster (or SQLite database) under attack.
struct Target {
    _scratch: Scratch,
    label: String,
    backend: DbBackend,
    fp: Fingerprinter,
    fixture: Fixture,
    vars: Vars,
    handles: Vec<HandleSpec>,
    broken: Option<String>,
}

impl Target {
    /// Waits until healthy: every replica in recovery and streaming (PostgreSQL), replication
    /// running (MariaDB). `Err` when it does not come back.
    async fn wait_healthy(&self) -> Result<(), String> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let problem = self.health_problem().await;
            match problem {
                None => return Ok(()),
                Some(p) if Instant::now() > until => return Err(p),
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn health_problem(&self) -> Option<String> {
        let replicas: Vec<_> = self
            .fp
            .nodes
            .iter()
            .filter(|n| n.role != NodeRole::Primary)
            .collect();
        match self.backend {
            DbBackend::Postgres => {
                let streaming = self
                    .fp
                    .primary()
                    .admin
                    .value("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
                    .await;
                if streaming.as_ref().ok().and_then(|o| o.as_deref())
                    != Some(replicas.len().to_string().as_str())
                {
                    return Some(format!(
                        "the primary streams to {streaming:?} replicas, not {}",
                        replicas.len()
                    ));
                }
                for r in replicas {
                    let state = r
                        .admin
                        .value(
                            "SELECT pg_is_in_recovery()::text || ' ' || coalesce((SELECT status FROM pg_stat_wal_receiver), 'no receiver') \
                             || ' ' || CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '-' END",
                        )
                        .await;
                    if state.as_ref().ok().and_then(|o| o.as_deref())
                        != Some("true streaming not paused")
                    {
                        return Some(format!("{}: {state:?}", r.name));
                    }
                }
                None
            }
            DbBackend::MySql => {
                for r in replicas {
                    let rows = r.admin.named_rows("SHOW SLAVE STATUS").await;
                    let ok = rows
                        .as_ref()
                        .ok()
                        .and_then(|rows| rows.first())
                        .is_some_and(|row| {
                            let get = |k: &str| {
                                row.iter()
                                    .find(|(n, _)| n == k)
                                    .and_then(|(_, v)| v.clone())
                            };
                            get("Slave_IO_Running").as_deref() == Some("Yes")
                                && get("Slave_SQL_Running").as_deref() == Some("Yes")
                        });
                    if !ok {
                        return Some(format!("{}: replication not running", r.name));
                    }
                    let ro = r.admin.value("SELECT @@global.read_only").await;
                    if ro.as_ref().ok().and_then(|o| o.as_deref()) != Some("1") {
                        return Some(format!("{}: read_only = {ro:?}", r.name));
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// Repairs what a case changed (`reference` → `now`, sessions already reset), then
    /// waits until healthy. `Err` when the cluster cannot be brought back.
    async fn repair(&self, reference: &Fingerprint) -> Result<Vec<String>, String> {
        // a node that does not answer (shut down by a case) cannot be repaired from here
        for node in &self.fp.nodes {
            if let Some(down) = node.down().await {
                return Err(format!("{}: {down}", node.name));
            }
            let mut answer = Err(String::new());
            for _ in 0..3 {
                answer =
                    match tokio::time::timeout(Duration::from_secs(5), node.admin.exec("SELECT 1"))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err("no answer within 5 s".into()),
                    };
                if answer.is_ok() {
                    break;
                }
            }
            if let Err(e) = answer {
                return Err(format!("{} does not answer: {e}", node.name));
            }
        }
        self.fp.reset_sessions(DB).await;
        let now = self.fp.take().await;
        let mut done = Vec::new();
        // files written by the case
        for dir in &self.fp.dirs {
            if let Ok(read) = std::fs::read_dir(dir) {
                for e in read.flatten() {
                    let key = format!(
                        "files: {}/{}",
                        dir.display(),
                        e.file_name().to_string_lossy()
                    );
                    if !reference.entries.contains_key(&key) {
                        let _ = std::fs::remove_file(e.path());
                        done.push(format!("removed {}", e.path().display()));
                    }
                }
            }
        }
        match &self.fixture {
            Fixture::Lite { memory, .. } => {
                let admin = &self.fp.nodes[0].admin;
                self.fixture.rebuild(Some(&self.fp), &self.vars).await?;
                let journal = if *memory { "memory" } else { "wal" };
                let _ = admin
                    .exec(&format!("PRAGMA journal_mode = {journal}"))
                    .await;
                done.push("rebuilt the SQLite database".into());
            }
            Fixture::Pg { .. } => self.repair_pg(reference, &now, &mut done).await?,
            Fixture::My { .. } => self.repair_my(reference, &now, &mut done).await?,
        }
        self.wait_healthy().await?;
        Ok(done)
    }

    async fn repair_pg(
        &self,
        reference: &Fingerprint,
        now: &Fingerprint,
        done: &mut Vec<String>,
    ) -> Result<(), String> {
        let primary = self.fp.primary();
        let mut rebuild = false;
        let mut restore = false;
        for node in &self.fp.nodes {
            let name = node.name.as_str();
            let was: BTreeMap<&str, &str> = reference.items(name, "").collect();
            let is: BTreeMap<&str, &str> = now.items(name, "").collect();
            let keys: BTreeSet<&str> = was.keys().chain(is.keys()).copied().collect();
            let mut reload = false;
            for k in keys {
                let (a, b) = (was.get(k).copied(), is.get(k).copied());
                if a == b {
                    continue;
                }
                let admin = &node.admin;
                let sql = if let Some(setting) = k.strip_prefix("server/auto.conf/") {
                    reload = true;
                    match a {
                        Some(v) => {
                            format!("ALTER SYSTEM SET {setting} = '{}'", v.replace('\'', "''"))
                        }
                        None => format!("ALTER SYSTEM RESET {setting}"),
                    }
                } else if k == "replication/replay" && b != Some("not paused") {
                    "SELECT pg_wal_replay_resume()".to_owned()
                } else if let Some(slot) = k.strip_prefix("server/replication-slot/") {
                    match (a, b) {
                        (Some(_), None) => {
                            format!("SELECT pg_create_physical_replication_slot('{slot}', true)")
                        }
                        (None, Some(_)) => format!("SELECT pg_drop_replication_slot('{slot}')"),
                        _ => continue,
                    }
                } else if let Some(gid) = k.strip_prefix("server/prepared-xact/") {
                    if a.is_none() {
                        format!("ROLLBACK PREPARED '{gid}'")
                    } else {
                        continue;
                    }
                } else if k == "session/sentinel" {
                    let _ = node.revive_sentinel().await;
                    continue;
                } else if node.role != NodeRole::Primary {
                    continue; // the rest replicates from the primary
                } else if let Some(role) = k.strip_prefix("cluster/role/") {
                    match a {
                        None => format!("DROP ROLE IF EXISTS \"{role}\""),
                        Some(_) => {
                            done.push(format!("cannot repair role {role}"));
                            continue;
                        }
                    }
                } else if let Some(db) = k.strip_prefix("cluster/database/") {
                    match a {
                        None => format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
                        Some(_) => continue,
                    }
                } else if let Some(rest) = k.strip_prefix("cluster/role-setting/") {
                    let (db, role) = rest.split_once('/').unwrap_or((rest, "*"));
                    match (db, role) {
                        ("*", r) => format!("ALTER ROLE \"{r}\" RESET ALL"),
                        (d, "*") => format!("ALTER DATABASE \"{d}\" RESET ALL"),
                        (d, r) => format!("ALTER ROLE \"{r}\" IN DATABASE \"{d}\" RESET ALL"),
                    }
                } else if let Some(oid) = k.strip_prefix("data/large-object/") {
                    if a.is_none() {
                        format!("SELECT lo_unlink({oid})")
                    } else {
                        rebuild = true;
                        continue;
                    }
                } else if k.starts_with("data/") {
                    restore = true;
                    continue;
                } else if let Some(what) = k.strip_prefix("schema/") {
                    match (a, pg_drop_extra(what, b)) {
                        (None, Some(sql)) => sql,
                        _ => {
                            rebuild = true;
                            continue;
                        }
                    }
                } else {
                    continue;
                };
                match admin.exec(&sql).await {
                    Ok(()) => done.push(format!("{name}: {sql}")),
                    Err(e) => done.push(format!("{name}: {sql} failed: {e}")),
                }
            }
            if reload {
                let _ = node.admin.exec("SELECT pg_reload_conf()").await;
                done.push(format!("{name}: reloaded the configuration"));
            }
        }
        if now.get(&format!("{}: server/in-recovery", primary.name)) != Some("false")
            || self
                .fp
                .nodes
                .iter()
                .filter(|n| n.role != NodeRole::Primary)
                .any(|n| now.get(&format!("{}: server/in-recovery", n.name)) == Some("false"))
        {
            return Err("a node changed role (a replica was promoted)".into());
        }
        if rebuild {
            self.fixture.rebuild(Some(&self.fp), &self.vars).await?;
            self.pg_wait_all_replayed().await?;
            done.push("rebuilt the test database".into());
        } else if restore {
            self.fixture.restore_data(&self.fp).await?;
            done.push("restored the fixture rows".into());
        }
        Ok(())
    }

    /// Waits until every replica, the lagging one too, has replayed the primary's position
    /// (after the test database was dropped and created again, every admin connection to it
    /// must reconnect).
    async fn pg_wait_all_replayed(&self) -> Result<(), String> {
        let lsn = self
            .fp
            .primary()
            .admin
            .value("SELECT pg_current_wal_flush_lsn()::text")
            .await?
            .unwrap_or_default();
        for node in self.fp.nodes.iter().filter(|n| n.role != NodeRole::Primary) {
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                let ok = node
                    .admin
                    .value(&format!(
                        "SELECT (pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn)::text"
                    ))
                    .await;
                if ok.as_ref().ok().and_then(|o| o.as_deref()) == Some("true") {
                    break;
                }
                if Instant::now() > until {
                    return Err(format!("{} did not replay {lsn}: {ok:?}", node.name));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = node.revive_sentinel().await;
        }
        Ok(())
    }

    async fn repair_my(
        &self,
        reference: &Fingerprint,
        now: &Fingerprint,
        done: &mut Vec<String>,
    ) -> Result<(), String> {
        let primary = self.fp.primary();
        let mut rebuild = false;
        let mut restore = false;
        let mut resync = false;
        // first the plan: statements per node, and whether a replica must be resynchronised
        let mut plan: Vec<(&common::fingerprint::AdminNode, Vec<String>)> = Vec::new();
        for node in &self.fp.nodes {
            let name = node.name.as_str();
            let is_primary = node.role == NodeRole::Primary;
            let was: BTreeMap<&str, &str> = reference.items(name, "").collect();
            let is: BTreeMap<&str, &str> = now.items(name, "").collect();
            let keys: BTreeSet<&str> = was.keys().chain(is.keys()).copied().collect();
            let mut todo = Vec::new();
            for k in keys {
                let (a, b) = (was.get(k).copied(), is.get(k).copied());
                if a == b {
                    continue;
                }
                // a replica whose data or schema moved away from the primary's (where they
                // were the same before) has diverged
                let on_primary = format!("{}: {k}", primary.name);
                if !is_primary
                    && (k.starts_with("data/")
                        || k.starts_with("schema/")
                        || k.starts_with("cluster/"))
                    && reference.get(&on_primary) == a
                    && now.get(&on_primary) != b
                {
                    resync = true;
                }
                let sql = if let Some(var) = k.strip_prefix("server/global/") {
                    match a {
                        Some(v) => my_set_global(var, v),
                        None => continue,
                    }
                } else if k == "server/read_only" {
                    format!("SET GLOBAL read_only = {}", a.unwrap_or("0"))
                } else if let Some(xid) = k.strip_prefix("server/xa-prepared/") {
                    if a.is_none() {
                        format!("XA ROLLBACK '{xid}'")
                    } else {
                        continue;
                    }
                } else if let Some(plugin) = k.strip_prefix("server/plugin/") {
                    if a.is_none() {
                        format!("UNINSTALL PLUGIN {plugin}")
                    } else {
                        continue;
                    }
                } else if k == "session/sentinel" {
                    let _ = node.revive_sentinel().await;
                    continue;
                } else if k.starts_with("replication/") {
                    // replication stopped, failed, or the replica wrote GTIDs of its own
                    // (the applied position moving along with the primary is normal)
                    if k != "replication/gtid_slave_pos"
                        && (k != "replication/catch-up" || b.is_some())
                    {
                        resync = true;
                    }
                    continue;
                } else if let Some(user) = k.strip_prefix("cluster/user/") {
                    match a {
                        None => {
                            let (u, h) = user.split_once('@').unwrap_or((user, "%"));
                            format!("DROP USER IF EXISTS '{u}'@'{h}'")
                        }
                        Some(_) => {
                            done.push(format!("{name}: cannot repair user {user}"));
                            continue;
                        }
                    }
                } else if let Some(db) = k.strip_prefix("cluster/database/") {
                    if a.is_none() {
                        format!("DROP DATABASE IF EXISTS `{db}`")
                    } else {
                        rebuild = true;
                        continue;
                    }
                } else if k.starts_with(&format!("data/{DB}.")) {
                    restore = true;
                    continue;
                } else if k.starts_with("data/mysql.") {
                    // users, servers, plugins: handled by their own entries where possible
                    if k.starts_with("data/mysql.servers") {
                        "DELETE FROM mysql.servers WHERE Server_name LIKE 'atk_srv%'; FLUSH PRIVILEGES".to_owned()
                    } else {
                        if !k.starts_with("data/mysql.global_priv")
                            && !k.starts_with("data/mysql.plugin")
                            && !k.starts_with("data/mysql.proc")
                        {
                            done.push(format!("{name}: cannot repair {k}"));
                        }
                        continue;
                    }
                } else if let Some(what) = k.strip_prefix("schema/") {
                    match (a, my_drop_extra(what, b)) {
                        (None, Some(sql)) => sql,
                        (_, _)
                            if what.contains(MY_BACKUP)
                                || what.contains(&format!("{DB}."))
                                || what.starts_with("columns/") =>
                        {
                            rebuild = true;
                            continue;
                        }
                        _ => {
                            done.push(format!("{name}: cannot repair schema/{what}"));
                            continue;
                        }
                    }
                } else {
                    continue;
                };
                todo.push(sql);
            }
            plan.push((node, todo));
        }
        let replicas: Vec<_> = self
            .fp
            .nodes
            .iter()
            .filter(|n| n.role != NodeRole::Primary)
            .collect();
        if resync {
            for node in &replicas {
                let _ = node.admin.exec("STOP ALL SLAVES").await;
            }
        }
        // the primary first (written to its binlog); a replica's own statements only when it
        // is resynchronised (else what the primary does reaches it by replication), and then
        // kept out of its binlog
        for (node, todo) in &plan {
            let is_primary = node.role == NodeRole::Primary;
            if !is_primary && !resync {
                // settings are a node's own: set them back on the replica too
                for sql in todo.iter().filter(|s| s.starts_with("SET GLOBAL")) {
                    match node.admin.exec(sql).await {
                        Ok(()) => done.push(format!("{}: {sql}", node.name)),
                        Err(e) => done.push(format!("{}: {sql} failed: {e}", node.name)),
                    }
                }
                continue;
            }
            for sql in todo {
                let run = if is_primary {
                    sql.clone()
                } else {
                    format!("SET SESSION sql_log_bin = 0; {sql}")
                };
                match node.admin.exec(&run).await {
                    Ok(()) => done.push(format!("{}: {sql}", node.name)),
                    Err(e) => done.push(format!("{}: {sql} failed: {e}", node.name)),
                }
            }
        }
        if resync {
            let pos = primary
                .admin
                .value("SELECT @@global.gtid_binlog_pos")
                .await?
                .unwrap_or_default();
            for node in &replicas {
                let sql = format!(
                    "STOP ALL SLAVES;
                     SET SESSION sql_log_bin = 0;
                     DROP DATABASE IF EXISTS {DB}; DROP DATABASE IF EXISTS {MY_BACKUP};
                     RESET MASTER;
                     SET GLOBAL gtid_slave_pos = '{pos}';
                     CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, MASTER_USER = 'root',
                       MASTER_PASSWORD = '', MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1;
                     START SLAVE;
                     SET GLOBAL read_only = 1;",
                    self.vars.pport
                );
                node.admin
                    .exec(&sql)
                    .await
                    .map_err(|e| format!("resynchronising {}: {e}", node.name))?;
                done.push(format!(
                    "{}: resynchronised replication from {pos}",
                    node.name
                ));
            }
            rebuild = true;
        }
        if rebuild {
            self.fixture.rebuild(Some(&self.fp), &self.vars).await?;
            done.push("rebuilt the test database".into());
        } else if restore {
            self.fixture.restore_data(&self.fp).await?;
            done.push("restored the fixture rows".into());
        }
        Ok(())
    }
}

/// `DROP` for an extra PostgreSQL object (key after `schema/`, value its entry).
fn pg_drop_extra(what: &str, value: Option<&str>) -> Option<String> {
    let (kind, name) = what.split_once('/')?;
    if name.starts_with("pg_temp") {
        return None;
    }
    let quoted = |n: &str| {
        n.split_once('.')
            .map(|(s, t)| format!("\"{s}\".\"{t}\""))
            .unwrap_or_else(|| format!("\"{n}\""))
    };
    Some(match kind {
        "rel" => {
            let relkind = value?.chars().next()?;
            let what = match relkind {
                'r' | 'p' | 'f' => "TABLE",
                'v' => "VIEW",
                'm' => "MATERIALIZED VIEW",
                'S' => "SEQUENCE",
                'i' | 'I' => "INDEX",
                'c' => "TYPE",
                _ => return None,
            };
            if relkind == 'f' {
                format!("DROP FOREIGN TABLE IF EXISTS {} CASCADE", quoted(name))
            } else {
                format!("DROP {what} IF EXISTS {} CASCADE", quoted(name))
            }
        }
        "function" => {
            let (head, args) = name.split_once('(')?;
            format!("DROP ROUTINE IF EXISTS {}({args} CASCADE", quoted(head))
        }
        "type" => format!("DROP TYPE IF EXISTS {} CASCADE", quoted(name)),
        "namespace" => format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"),
        "publication" => format!("DROP PUBLICATION IF EXISTS \"{name}\""),
        "extension" => format!("DROP EXTENSION IF EXISTS \"{name}\" CASCADE"),
        "rule" => {
            let (table, rule) = name.rsplit_once('.')?;
            format!("DROP RULE IF EXISTS \"{rule}\" ON {table}")
        }
        "trigger" => {
            let (table, trigger) = name.rsplit_once('.')?;
            format!("DROP TRIGGER IF EXISTS \"{trigger}\" ON {table}")
        }
        _ => return None,
    })
}

/// `DROP` for an extra MariaDB object.
fn my_drop_extra(what: &str, value: Option<&str>) -> Option<String> {
    let (kind, name) = what.split_once('/')?;
    let quoted = |n: &str| {
        n.split_once('.')
            .map(|(s, t)| format!("`{s}`.`{t}`"))
            .unwrap_or_else(|| format!("`{n}`"))
    };
    Some(match kind {
        "table" => {
            let v = value?;
            if v.starts_with("VIEW") {
                format!("DROP VIEW IF EXISTS {}", quoted(name))
            } else if v.starts_with("SEQUENCE") {
                format!("DROP SEQUENCE IF EXISTS {}", quoted(name))
            } else {
                format!("DROP TABLE IF EXISTS {}", quoted(name))
            }
        }
        "view" | "columns" => return Some("DO 0".into()),
        "routine" => {
            let (n, ty) = name.rsplit_once(' ')?;
            format!("DROP {ty} IF EXISTS {}", quoted(n))
        }
        "trigger" => format!("DROP TRIGGER IF EXISTS {}", quoted(name)),
        "event" => format!("DROP EVENT IF EXISTS {}", quoted(name)),
        _ => return None,
    })
}

fn my_set_global(var: &str, value: &str) -> String {
    let numeric =
        !value.is_empty() && (value.parse::<f64>().is_ok() || matches!(value, "ON" | "OFF"));
    if numeric {
        format!("SET GLOBAL {var} = {value}")
    } else {
        format!("SET GLOBAL {var} = '{}'", value.replace('\'', "''"))
    }
}

// ------------------------------------------------------------------------------------------
// The run
// ------------------------------------------------------------------------------------------

fn verbose() -> bool {
    std::env::var("SOR_ATTACK_VERBOSE").is_ok_and(|v| v == "1")
}

fn case_filter() -> Option<String> {
    std::env::var("SOR_ATTACK_FILTER")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.to_lowercase())
}

fn selected(cases: &[Case], tiers: &[Tier]) -> Vec<Case> {
    let filter = case_filter();
    cases
        .iter()
        .filter(|c| tiers.contains(&c.tier))
        .filter(|c| {
            filter.as_ref().is_none_or(|f| {
                c.class.to_lowercase().contains(f) || c.label.to_lowercase().contains(f)
            })
        })
        .cloned()
        .collect()
}

/// One run: a case through one path with one method.
#[derive(Clone, Copy)]
struct Run<'a> {
    path: &'a PathDef,
    method: Method,
    case: &'a Case,
}

/// How many handles are built ahead of the runs that use them.
const PREFETCH: usize = 3;

type Prefetch = std::collections::VecDeque<(
    usize,
    tokio::task::JoinHandle<Result<ReplicatedDatabase, String>>,
)>;

/// How many runs share one fingerprint (`SOR_ATTACK_BATCH`, default 16). A batch that changed
/// something is repaired and its runs are replayed one by one, each with its own
/// fingerprint, to say which one did it.
fn batch_size() -> usize {
    std::env::var("SOR_ATTACK_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(16)
}

/// The fingerprint difference, plus every node that could not be read (it hides whatever
/// changed there).
fn differences(before: &Fingerprint, after: &Fingerprint) -> Vec<String> {
    let mut diff = before.diff(after);
    diff.extend(
        after
            .entries
            .iter()
            .filter(|(k, _)| k.ends_with(": error"))
            .map(|(k, v)| format!("unreadable {k}: {v}")),
    );
    diff
}

/// Changes of what sessions hold (`session/` entries) from `before` to `now`.
fn session_changes(before: &Fingerprint, now: &Fingerprint) -> Vec<String> {
    let nodes: BTreeSet<&str> = now
        .entries
        .keys()
        .filter_map(|k| k.split(": ").next())
        .collect();
    let held = Fingerprint {
        entries: before
            .entries
            .iter()
            .filter(|(k, _)| k.contains(": session/"))
            .filter(|(k, _)| k.split(": ").next().is_some_and(|n| nodes.contains(n)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    differences(&held, now)
}

impl Target {
    /// A fresh handle for `spec` (prefetched when the queue holds one), and keeps the
    /// handles of the next runs (`upcoming`) being built in the background.
    async fn fresh_handle(
        &self,
        spec: usize,
        upcoming: &[usize],
        prefetch: &mut Prefetch,
    ) -> Result<ReplicatedDatabase, String> {
        let handle = match prefetch.pop_front() {
            Some((i, task)) if i == spec => task.await.unwrap_or_else(|e| Err(e.to_string())),
            _ => {
                prefetch.clear();
                self.handles[spec].build().await
            }
        };
        for &next in upcoming
            .iter()
            .skip(prefetch.len())
            .take(PREFETCH.saturating_sub(prefetch.len()))
        {
            let s = self.handles[next].clone();
            prefetch.push_back((next, tokio::spawn(async move { s.build().await })));
        }
        handle
    }

    /// Runs one case on a fresh handle; returns what the library answered and the handle,
    /// kept open until the fingerprint (so what its sessions still hold is seen).
    async fn run_once(
        &self,
        run: Run<'_>,
        upcoming: &[usize],
        prefetch: &mut Prefetch,
        report: &mut Report,
    ) -> (Vec<String>, Vec<String>, Option<ReplicatedDatabase>) {
        let n = next_n();
        let steps: Vec<String> = run
            .case
            .steps
            .iter()
            .map(|s| subst(s, n, &self.vars))
            .collect();
        let t0 = Instant::now();
        let handle = self.fresh_handle(run.path.handle, upcoming, prefetch).await;
        report.time[0] += t0.elapsed();
        let t1 = Instant::now();
        let outcome = match &handle {
            Ok(db) => run_path(run.path.kind, db, run.method, &steps).await,
            Err(e) => vec![format!("handle: {e}")],
        };
        report.time[1] += t1.elapsed();
        (steps, outcome, handle.ok())
    }

    async fn fingerprint(&self, report: &mut Report) -> Fingerprint {
        let t = Instant::now();
        let fp = self.fp.take().await;
        report.time[2] += t.elapsed();
        fp
    }

    /// Repairs after a change; marks the target broken when that fails. Returns the new
    /// reference fingerprint.
    async fn recover(
        &mut self,
        before: &Fingerprint,
        what: &str,
        report: &mut Report,
    ) -> Fingerprint {
        let t = Instant::now();
        match self.repair(before).await {
            Ok(done) => {
                if verbose() {
                    eprintln!("    repaired: {}", done.join("; "));
                }
            }
            Err(e) => {
                eprintln!("    REPAIR FAILED: {e}");
                self.broken = Some(format!(
                    "{} broke beyond repair after {what}: {e}",
                    self.label
                ));
            }
        }
        report.time[4] += t.elapsed();
        if self.broken.is_some() {
            return self.fingerprint(report).await;
        }
        // a reference with an unreadable node would hide the next case's changes there
        let mut tries = 0;
        loop {
            let fp = self.fingerprint(report).await;
            tries += 1;
            if tries >= 10 || !fp.entries.keys().any(|k| k.ends_with(": error")) {
                return fp;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn failure_of(target: &Target, run: Run<'_>, sql: Vec<String>) -> Failure {
    Failure {
        target: target.label.clone(),
        path: run.path.label.to_owned(),
        method: run.method.name(),
        class: run.case.class,
        label: run.case.label,
        sql,
        outcome: Vec::new(),
        diff: Vec::new(),
        not_run: None,
    }
}

/// Records a run that changed the cluster (its SQL, what the library answered, the
/// fingerprint difference), counts it for its path, and repairs; returns the new reference.
async fn failed_run(
    target: &mut Target,
    run: Run<'_>,
    (steps, outcome, diff): (Vec<String>, Vec<String>, Vec<String>),
    before: &Fingerprint,
    per_path: &mut BTreeMap<(String, &'static str), (usize, usize)>,
    report: &mut Report,
) -> Fingerprint {
    let mut f = failure_of(target, run, steps);
    f.outcome = outcome;
    f.diff = diff;
    eprintln!("ATTACK FAILED {}", f.render());
    report.failures.push(f);
    per_path
        .entry((run.path.label.to_owned(), run.method.name()))
        .or_default()
        .1 += 1;
    let what = format!(
        "`{}` ({} / {})",
        run.case.label,
        run.path.label,
        run.method.name()
    );
    target.recover(before, &what, report).await
}

/// Runs `cases` over `paths` on `target`, recording failures. When the target breaks beyond
/// repair, the remaining runs are recorded as not run.
async fn attack(target: &mut Target, paths: &[PathDef], cases: &[Case], report: &mut Report) {
    let runs: Vec<Run> = paths
        .iter()
        .flat_map(|path| {
            path.methods
                .iter()
                .flat_map(move |&method| cases.iter().map(move |case| Run { path, method, case }))
        })
        .collect();
    let specs: Vec<usize> = runs.iter().map(|r| r.path.handle).collect();
    let mut per_path: BTreeMap<(String, &'static str), (usize, usize)> = BTreeMap::new();
    let started = Instant::now();
    let mut before = target.fingerprint(report).await;
    let mut prefetch = Prefetch::new();
    // batches grow while nothing changes and shrink after a change (where one run changed
    // something, its neighbours on the same path often do too)
    let max_batch = batch_size();
    let mut batch = max_batch;
    let mut i = 0;
    while i < runs.len() {
        let chunk = &runs[i..(i + batch).min(runs.len())];
        i += chunk.len();
        if let Some(why) = &target.broken {
            for &run in chunk {
                let mut f = failure_of(
                    target,
                    run,
                    run.case.steps.iter().map(|s| s.to_string()).collect(),
                );
                f.not_run = Some(why.clone());
                report.failures.push(f);
            }
            continue;
        }
        // the batch: every run on a fresh handle; what its sessions still hold is read
        // before the handle goes (a lock it kept would otherwise block the next run), the
        // rest once for the whole batch
        let mut answers = Vec::new();
        let mut held_something = Vec::new();
        for (k, &run) in chunk.iter().enumerate() {
            let at = i - chunk.len() + k + 1;
            let upcoming = &specs[at.min(specs.len())..(at + PREFETCH).min(specs.len())];
            let (steps, outcome, handle) =
                target.run_once(run, upcoming, &mut prefetch, report).await;
            let t = Instant::now();
            let sessions = target
                .fp
                .sessions(!target.handles[run.path.handle].replicas.is_empty())
                .await;
            report.time[3] += t.elapsed();
            held_something.extend(session_changes(&before, &sessions));
            drop(handle);
            answers.push((steps, outcome));
        }
        let after = target.fingerprint(report).await;
        let mut diff = differences(&before, &after);
        diff.extend(held_something);
        if verbose() {
            for (run, (steps, outcome)) in chunk.iter().zip(&answers) {
                eprintln!(
                    "  run [{}] {} | {} | {}: {steps:?} -> {outcome:?}",
                    target.label,
                    run.path.label,
                    run.method.name(),
                    run.case.label
                );
            }
            eprintln!("  batch of {}: {} changes", chunk.len(), diff.len());
        }
        for run in chunk {
            per_path
                .entry((run.path.label.to_owned(), run.method.name()))
                .or_default()
                .0 += 1;
        }
        report.runs += chunk.len();
        if diff.is_empty() {
            report.passed += chunk.len();
            before = after;
            batch = (batch * 2).min(max_batch);
            continue;
        }
        batch = (batch / 2).max(1);
        prefetch.clear();
        if chunk.len() == 1 {
            let (steps, outcome) = answers.pop().unwrap();
            let failed = (steps, outcome, diff);
            before = failed_run(target, chunk[0], failed, &before, &mut per_path, report).await;
            continue;
        }
        // which run(s) of the batch: repair, then each alone
        before = target.recover(&before, "a batch", report).await;
        let mut attributed = 0;
        for &run in chunk {
            if target.broken.is_some() {
                break;
            }
            let (steps, outcome, handle) = target.run_once(run, &[], &mut prefetch, report).await;
            let after = target.fingerprint(report).await;
            let diff = differences(&before, &after);
            drop(handle);
            if diff.is_empty() {
                report.passed += 1;
                before = after;
                continue;
            }
            attributed += 1;
            let failed = (steps, outcome, diff);
            before = failed_run(target, run, failed, &before, &mut per_path, report).await;
        }
        if attributed == 0 && target.broken.is_none() {
            // the change came from the runs together, not from any one of them
            let run = chunk[0];
            let mut f = failure_of(
                target,
                run,
                answers.iter().flat_map(|(s, _)| s.clone()).collect(),
            );
            f.label = "(a batch: no run alone reproduced the change)";
            f.path = chunk
                .iter()
                .map(|r| format!("{} / {} / {}", r.path.label, r.method.name(), r.case.label))
                .collect::<Vec<_>>()
                .join("; ");
            f.outcome = answers.into_iter().flat_map(|(_, o)| o).collect();
            f.diff = diff;
            eprintln!("ATTACK FAILED {}", f.render());
            report.failures.push(f);
        }
    }
    for ((path, method), (n, failed)) in per_path {
        report
            .per_path
            .push((target.label.clone(), path, method, n, failed, 0.0));
    }
    if runs.len() > 1 || verbose() {
        eprintln!(
            "[{}] {} runs in {:.1}s",
            target.label,
            runs.len(),
            started.elapsed().as_secs_f64()
        );
    }
}

/// A scratch directory the cases may try to write files into, writable by the servers'
/// users (PostgreSQL runs as `postgres`).
fn scratch_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sor-attack-{label}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
    }
    std::fs::write(dir.join("seed.csv"), "777,from-file\n").expect("seed file");
    std::fs::write(dir.join("load.csv"), "778,loaded\n").expect("load file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["seed.csv", "load.csv"] {
            let _ = std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o666));
        }
    }
    dir
}

/// Sets up a PostgreSQL or MariaDB target over these URLs (the `SOR_*` ones, or a private
/// cluster's).
async fn server_target(
    label: &str,
    backend: DbBackend,
    primary_url: &str,
    replica_urls: &[String],
    lagging_url: Option<&str>,
) -> Result<Target, String> {
    let dir = scratch_dir(&label.replace(' ', "-").to_lowercase());
    let primary = with_path(primary_url, DB);
    let replicas: Vec<String> = replica_urls.iter().map(|u| with_path(u, DB)).collect();
    let vars = Vars {
        dir: dir.display().to_string(),
        pport: port_of(primary_url),
        file: String::new(),
    };
    let fixture = match backend {
        DbBackend::Postgres => Fixture::Pg {
            server: with_path(primary_url, "postgres"),
            primary: primary.clone(),
        },
        _ => Fixture::My {
            server: with_path(primary_url, ""),
            primary: primary.clone(),
            replicas: replica_urls.iter().map(|u| with_path(u, "")).collect(),
        },
    };
    fixture.rebuild(None, &vars).await?;
    let admin_url = |u: &str| match backend {
        DbBackend::MySql => with_user(u, MY_ADMIN_USER),
        _ => u.to_owned(),
    };
    let mut specs = vec![NodeSpec {
        name: "primary".into(),
        role: NodeRole::Primary,
        url: admin_url(&primary),
    }];
    for (i, r) in replicas.iter().enumerate() {
        specs.push(NodeSpec {
            name: format!("replica-{}", i + 1),
            role: NodeRole::Replica,
            url: admin_url(r),
        });
    }
    if let Some(l) = lagging_url {
        specs.push(NodeSpec {
            name: "lagging-replica".into(),
            role: NodeRole::Lagging,
            url: admin_url(&with_path(l, DB)),
        });
    }
    let locks = match backend {
        DbBackend::MySql => MY_LOCKS.iter().map(|s| s.to_string()).collect(),
        _ => Vec::new(),
    };
    if backend == DbBackend::Postgres {
        // the database travels by WAL: wait until every replica (the lagging one too) has
        // replayed its creation (before that, a delayed replica still has the old database, or
        // one marked invalid by the replayed drop)
        let server = Admin::pg(
            &with_path(primary_url, "postgres"),
            common::fingerprint::ADMIN_APP,
            1,
        )
        .await?;
        let lsn = server
            .value("SELECT pg_current_wal_flush_lsn()::text")
            .await?
            .unwrap_or_default();
        server.close().await;
        for spec in specs.iter().filter(|s| s.role != NodeRole::Primary) {
            let until = Instant::now() + Duration::from_secs(30);
            let other = Admin::pg(
                &with_path(&spec.url, "postgres"),
                common::fingerprint::ADMIN_APP,
                1,
            )
            .await?;
            loop {
                let sql = format!("SELECT (pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn)::text");
                if other.value(&sql).await?.as_deref() == Some("true") {
                    break;
                }
                if Instant::now() > until {
                    return Err(format!(
                        "{} did not replay the test database's creation",
                        spec.name
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other.close().await;
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                match Admin::pg(&spec.url, common::fingerprint::ADMIN_APP, 1).await {
                    Ok(a) => {
                        a.close().await;
                        break;
                    }
                    Err(e) if Instant::now() > until => {
                        return Err(format!("{} never got the test database: {e}", spec.name))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    }
    let fp = Fingerprinter::connect(backend, specs, vec![dir.clone()], locks).await?;
    let spec = |replicas: Vec<String>, pool_of_one: bool| HandleSpec {
        primary: primary.clone(),
        replicas,
        reader_pool: false,
        pool_of_one,
    };
    let mut handles = vec![
        spec(replicas.clone(), false),
        spec(vec![], false),
        spec(replicas.clone(), true),
        spec(vec![], true),
    ];
    if backend == DbBackend::MySql {
        let privileged: Vec<String> = replicas
            .iter()
            .map(|u| with_user(u, MY_PRIV_USER))
            .collect();
        handles.push(spec(privileged.clone(), false));
        handles.push(spec(privileged, true));
    }
    let target = Target {
        _scratch: Scratch(dir.clone()),
        label: label.to_owned(),
        backend,
        fp,
        fixture,
        vars,
        handles,
        broken: None,
    };
    target.wait_healthy().await?;
    Ok(target)
}

/// An SQLite target: a file (used with and without the reader pool) or a named in-memory
/// database (shared cache, so that the admin connection sees it).
async fn lite_target(label: &str, memory: bool) -> Result<Target, String> {
    let dir = scratch_dir(&label.replace(' ', "-").to_lowercase());
    let (url, file) = if memory {
        let name = format!("sor-attack-mem-{}", uuid::Uuid::new_v4());
        (
            format!("sqlite:file:{name}?mode=memory&cache=shared"),
            format!("file:{name}?mode=memory&cache=shared"),
        )
    } else {
        let path = dir.join("db").join("attack.sqlite");
        std::fs::create_dir_all(path.parent().unwrap()).expect("db dir");
        (
            format!("sqlite://{}?mode=rwc", path.display()),
            path.display().to_string(),
        )
    };
    let vars = Vars {
        dir: dir.display().to_string(),
        pport: 0,
        file,
    };
    let fixture = Fixture::Lite {
        url: url.clone(),
        memory,
    };
    let fp = Fingerprinter::connect(
        DbBackend::Sqlite,
        vec![NodeSpec {
            name: if memory {
                "memory".into()
            } else {
                "file".into()
            },
            role: NodeRole::Primary,
            url: url.clone(),
        }],
        vec![dir.clone()],
        vec![],
    )
    .await?;
    if !memory {
        fp.nodes[0].admin.exec("PRAGMA journal_mode = wal").await?;
    }
    fixture.rebuild(Some(&fp), &vars).await?;
    let spec = |reader_pool: bool, pool_of_one: bool| HandleSpec {
        primary: url.clone(),
        replicas: vec![],
        reader_pool,
        pool_of_one,
    };
    let handles = if memory {
        vec![spec(false, false), spec(false, true)]
    } else {
        vec![
            spec(true, false),
            spec(false, false),
            spec(true, true),
            spec(false, true),
        ]
    };
    Ok(Target {
        _scratch: Scratch(dir.clone()),
        label: label.to_owned(),
        backend: DbBackend::Sqlite,
        fp,
        fixture,
        vars,
        handles,
        broken: None,
    })
}

/// Canaries: writes through a plain SeaORM connection (not a read-only unit) that the
/// fingerprint must see, and that the repair must undo. Proves the harness before any case
/// is trusted to have changed nothing.
fn canaries(backend: DbBackend) -> Vec<(&'static str, &'static str)> {
    match backend {
        DbBackend::Postgres => vec![
            (
                "INSERT INTO atk_t VALUES (999999999, 'canary')",
                "replica-1: data/public.atk_t",
            ),
            (
                "CREATE TABLE atk_canary_{n} (id int)",
                "replica-1: schema/rel/public.atk_canary_",
            ),
            ("SELECT nextval('atk_seq')", "primary: seq/public.atk_seq"),
            (
                "SELECT pg_advisory_lock(4242)",
                "primary: session/advisory-lock/",
            ),
            ("SELECT lo_create(0)", "primary: data/large-object/"),
            (
                "ALTER SYSTEM SET work_mem = '5MB'",
                "primary: server/auto.conf/work_mem",
            ),
            ("COPY (SELECT 1) TO '{dir}/canary-{n}'", "files: "),
            ("NOTIFY sor_atk", "primary: server/notifications/"),
            (
                "CREATE ROLE atk_canary_{n}",
                "replica-1: cluster/role/atk_canary_",
            ),
            (
                "BEGIN; INSERT INTO atk_log (what) VALUES ('open')",
                "primary: session/idle-in-transaction",
            ),
        ],
        DbBackend::MySql => vec![
            (
                "INSERT INTO atk_t VALUES (999999999, 'canary')",
                "replica-1: data/sor_attack.atk_t",
            ),
            (
                "CREATE TABLE atk_canary_{n} (id INT)",
                "replica-1: schema/table/sor_attack.atk_canary_",
            ),
            (
                "SELECT NEXTVAL(atk_seq)",
                "replica-1: data/sor_attack.atk_seq",
            ),
            (
                "SELECT GET_LOCK('sor_atk_lock', 0)",
                "primary: session/named-lock/sor_atk_lock",
            ),
            ("SELECT 1 INTO OUTFILE '{dir}/canary-{n}'", "files: "),
            (
                "SET GLOBAL max_connections = 198",
                "primary: server/global/MAX_CONNECTIONS",
            ),
            (
                "CREATE USER 'atk_canary_{n}'@'127.0.0.1'",
                "replica-1: cluster/user/atk_canary_",
            ),
        ],
        _ => vec![
            (
                "INSERT INTO atk_t VALUES (999999999, 'canary')",
                "data/atk_t",
            ),
            (
                "CREATE TABLE atk_canary_{n} (id INTEGER)",
                "schema/table/atk_canary_",
            ),
            ("PRAGMA user_version = 5", "server/user_version"),
            (
                "ATTACH DATABASE 'file:{dir}/canary-{n}.db?mode=rwc' AS c; CREATE TABLE c.t (id)",
                "files: ",
            ),
        ],
    }
}

async fn self_check(target: &mut Target) {
    let start = target.fp.take().await;
    let errors: Vec<_> = start
        .entries
        .iter()
        .filter(|(k, _)| k.ends_with(": error"))
        .collect();
    assert!(
        errors.is_empty(),
        "[{}] harness self-check: the fingerprint cannot be taken: {errors:#?}",
        target.label
    );
    if verbose() {
        for (k, v) in &target.fp.take().await.entries {
            eprintln!("  fingerprint {k} = {v}");
        }
    }
    let url = match &target.fixture {
        Fixture::Pg { primary, .. } | Fixture::My { primary, .. } => primary.clone(),
        Fixture::Lite { url, .. } => url.clone(),
    };
    let mut canaries = canaries(target.backend);
    // a MariaDB replica reached with the privileged user: read_only=1 does not stop it (so
    // the privileged paths attack something real), and the repair resynchronises the replica
    let privileged = target
        .handles
        .get(4)
        .and_then(|h| h.replicas.first().cloned());
    if let Some(replica) = &privileged {
        canaries.push((
            "INSERT INTO atk_t VALUES (999999998, 'privileged')",
            "replica-1: data/sor_attack.atk_t",
        ));
        let _ = replica;
    }
    let count = canaries.len();
    for (i, (sql, expected)) in canaries.into_iter().enumerate() {
        let sql = subst(sql, next_n(), &target.vars);
        let before = target.fp.take().await;
        let url = match &privileged {
            Some(replica) if i == count - 1 => replica.clone(),
            _ => url.clone(),
        };
        let conn = sea_orm::Database::connect(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("[{}] canary connection: {e}", target.label));
        if let Err(e) = conn.execute_unprepared(&sql).await {
            panic!(
                "[{}] harness self-check: canary `{sql}` failed: {e}",
                target.label
            );
        }
        let after = target.fp.take().await;
        let diff = before.diff(&after);
        if verbose() {
            eprintln!(
                "canary {sql}: {:?} files {:?}",
                diff,
                std::fs::read_dir(&target.vars.dir)
                    .map(|r| r.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            );
        }
        drop(conn);
        target.fp.reset_sessions(DB).await;
        assert!(
            diff.iter().any(|d| d.contains(expected)),
            "[{}] harness self-check: the fingerprint did not see `{sql}` (expected a change of `{expected}`); diff: {diff:#?}",
            target.label
        );
        let done = target.repair(&before).await.unwrap_or_else(|e| {
            panic!(
                "[{}] harness self-check: repair after `{sql}` failed: {e}",
                target.label
            )
        });
        let repaired = target.fp.take().await;
        let left: Vec<String> = before
            .diff(&repaired)
            .into_iter()
            .filter(|d| {
                // what a repair may legitimately leave different: physical files of restored
                // tables, sequences advanced by restores, SQLite's change counter, binlogs
                !(d.contains(": relfile/")
                    || d.contains(": seq/")
                    || d.contains("/data_version")
                    || d.contains(": counter/")
                    || d.contains(": server/gtid_binlog_pos")
                    || d.contains(": replication/gtid_slave_pos")
                    || d.contains(": server/binlog/")
                    // a rebuild migrates again: new applied_at timestamps
                    || d.contains("seaql_migrations")
                    // routines created again by a rebuild carry new timestamps
                    || d.contains("data/mysql.proc")
                    // sequences are not put back (a sequence call always moves them)
                    || d.contains(".atk_seq:")
                    // a count of what arrived: it only grows
                    || d.contains("/notifications/"))
            })
            .collect();
        assert!(
            left.is_empty(),
            "[{}] harness self-check: repair after `{sql}` left differences: {left:#?}\nrepair: {done:#?}",
            target.label
        );
    }
    eprintln!("[{}] harness self-check passed", target.label);
}

// ------------------------------------------------------------------------------------------
// Private clusters for fatal cases
// ------------------------------------------------------------------------------------------

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh");

/// A cluster of its own, started by `scripts/cluster.sh` in a temporary directory with free
/// ports; stopped and deleted on drop.
struct PrivateCluster {
    dir: PathBuf,
    env: Vec<(String, String)>,
    target: &'static str,
    urls: BTreeMap<String, String>,
}

/// Serialises private cluster starts (so two never pick the same free ports).
static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A port base with `count` free ports, below the kernel's ephemeral range (so that no
/// outgoing connection takes one while the cluster starts): from 21000 (PostgreSQL) or 26000
/// (MariaDB) up.
fn free_base(target: &str, count: u16, attempt: u16) -> Option<u16> {
    let first: u16 = if target == "pg" { 21000 } else { 26000 };
    let start = ((std::process::id() % 200) as u16 * 10 + attempt * 170) % 5000;
    (0..500u16)
        .map(|i| first + (start + i * 10) % 5000)
        .find(|&b| (b..b + count).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()))
}

impl PrivateCluster {
    fn start(target: &'static str) -> Result<PrivateCluster, String> {
        let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = String::new();
        for attempt in 0..4 {
            let base = free_base(target, 3, attempt).ok_or("no free ports")?;
            let dir = std::env::temp_dir().join(format!(
                "sor-attack-cluster-{target}-{}-{base}",
                std::process::id()
            ));
            let env = vec![
                ("CLUSTER_DIR".to_owned(), dir.display().to_string()),
                ("SOR_PG_PORT_BASE".to_owned(), base.to_string()),
                ("SOR_MYSQL_PORT_BASE".to_owned(), base.to_string()),
            ];
            let mut cluster = PrivateCluster {
                dir,
                env,
                target,
                urls: BTreeMap::new(),
            };
            match cluster.script(&["start", target]) {
                Ok(out) => {
                    let text = std::fs::read_to_string(cluster.dir.join("env"))
                        .map_err(|e| format!("env file: {e}\n{out}"))?;
                    for line in text.lines() {
                        if let Some((k, v)) = line
                            .trim()
                            .strip_prefix("export ")
                            .and_then(|l| l.split_once('='))
                        {
                            cluster.urls.insert(k.to_owned(), v.to_owned());
                        }
                    }
                    return Ok(cluster);
                }
                // a port taken meanwhile: another base (dropping `cluster` stops what started)
                Err(e) if e.contains("in use") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn script(&self, args: &[&str]) -> Result<String, String> {
        let out = std::process::Command::new("bash")
            .arg(SCRIPT)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("run {SCRIPT}: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        if out.status.success() {
            Ok(text)
        } else {
            let tail: Vec<&str> = text.lines().collect();
            Err(format!(
                "scripts/cluster.sh {} failed: {}",
                args.join(" "),
                tail[tail.len().saturating_sub(15)..].join("\n")
            ))
        }
    }

    fn url(&self, name: &str) -> Option<String> {
        self.urls.get(name).cloned()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.script(&["stop", self.target]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the fatal cases on private clusters, starting a fresh one whenever a case broke the
/// current one (at most `SOR_ATTACK_FATAL_CLUSTERS`, default 12; after that the remaining
/// runs are recorded as not run). The next cluster is started in the background while the
/// current one is attacked.
async fn attack_fatal(backend: DbBackend, cases: Vec<Case>, privileged: bool) -> Report {
    let mut report = Report::default();
    if cases.is_empty() || std::env::var("SOR_ATTACK_NO_FATAL").is_ok_and(|v| v == "1") {
        return report;
    }
    let which = if backend == DbBackend::Postgres {
        "pg"
    } else {
        "mariadb"
    };
    let paths = server_paths(privileged);
    let most: usize = std::env::var("SOR_ATTACK_FATAL_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    // the remaining (path, method, case) runs, in order
    let mut pending: Vec<(usize, Method, usize)> = Vec::new();
    for (pi, p) in paths.iter().enumerate() {
        for &m in p.methods {
            for ci in 0..cases.len() {
                pending.push((pi, m, ci));
            }
        }
    }
    let start = move || tokio::task::spawn_blocking(move || PrivateCluster::start(which));
    let mut spare = Some(start());
    let mut attempt = 0;
    let mut last_error = String::new();
    while !pending.is_empty() && attempt < most {
        attempt += 1;
        let label = format!("{} private cluster #{attempt}", backend_name(backend));
        let started = Instant::now();
        let next = spare.take().unwrap_or_else(start);
        let cluster = match next.await.expect("start task") {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("could not start private {which} cluster #{attempt}: {e}");
                eprintln!("[{label}] {msg}");
                report.notes.push(msg.clone());
                last_error = msg;
                continue;
            }
        };
        if attempt < most {
            spare = Some(start());
        }
        let (p, r, l) = match backend {
            DbBackend::Postgres => (
                cluster.url("SOR_PG_PRIMARY_URL"),
                cluster.url("SOR_PG_REPLICA_URL"),
                cluster.url("SOR_PG_LAGGING_URL"),
            ),
            _ => (
                cluster.url("SOR_MYSQL_PRIMARY_URL"),
                cluster.url("SOR_MYSQL_REPLICA_URL"),
                None,
            ),
        };
        let (Some(p), Some(r)) = (p, r) else {
            report
                .notes
                .push(format!("{label}: no URLs in its env file"));
            break;
        };
        let replicas = [r];
        let setup = server_target(&label, backend, &p, &replicas, l.as_deref());
        let setup = tokio::time::timeout(Duration::from_secs(120), setup)
            .await
            .unwrap_or_else(|_| Err("setup did not finish within 120 s".into()));
        let mut target = match setup {
            Ok(t) => t,
            Err(e) => {
                report.notes.push(format!("{label}: setup failed: {e}"));
                break;
            }
        };
        eprintln!(
            "[{label}] ready after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        while let Some(&(pi, m, ci)) = pending.first() {
            let path = &paths[pi];
            let one = PathDef {
                label: path.label,
                kind: path.kind,
                handle: path.handle,
                methods: match m {
                    Method::Unprepared => &[Method::Unprepared],
                    Method::ExecuteRaw => &[Method::ExecuteRaw],
                    Method::QueryOne => &[Method::QueryOne],
                    Method::QueryAll => &[Method::QueryAll],
                    Method::Stream => &[Method::Stream],
                },
            };
            let mut sub = Report::default();
            let run = attack(
                &mut target,
                std::slice::from_ref(&one),
                &cases[ci..=ci],
                &mut sub,
            );
            if tokio::time::timeout(Duration::from_secs(180), run)
                .await
                .is_err()
            {
                target.broken = Some(format!(
                    "{label}: `{}` ({} / {}) did not finish within 180 s",
                    cases[ci].label,
                    path.label,
                    m.name()
                ));
                let mut f = failure_of(
                    &target,
                    Run {
                        path: &one,
                        method: m,
                        case: &cases[ci],
                    },
                    vec![],
                );
                f.not_run = target.broken.clone();
                sub.failures.push(f);
            }
            pending.remove(0);
            report.absorb(sub);
            if target.broken.is_some() {
                break;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), target.fp.close()).await;
        drop(target);
        tokio::task::spawn_blocking(move || drop(cluster))
            .await
            .expect("stop task");
    }
    if let Some(spare) = spare {
        if let Ok(Ok(c)) = spare.await {
            tokio::task::spawn_blocking(move || drop(c))
                .await
                .expect("stop task");
        }
    }
    for (pi, m, ci) in pending.drain(..) {
        let case = &cases[ci];
        report.failures.push(Failure {
            target: format!("{} private cluster", backend_name(backend)),
            path: paths[pi].label.to_owned(),
            method: m.name(),
            class: case.class,
            label: case.label,
            sql: case.steps.iter().map(|s| s.to_string()).collect(),
            outcome: vec![],
            diff: vec![],
            not_run: Some(if last_error.is_empty() {
                format!("all {attempt} private clusters were broken by earlier fatal cases")
            } else {
                format!("no private cluster to run on ({attempt} tried): {last_error}")
            }),
        });
    }
    report
}

fn backend_name(b: DbBackend) -> &'static str {
    match b {
        DbBackend::Postgres => "PostgreSQL",
        DbBackend::MySql => "MariaDB",
        _ => "SQLite",
    }
}

fn finish(report: Report, what: &str, started: Instant) {
    let summary = report.summary();
    let mut lines = summary.lines();
    eprintln!(
        "\n===== {what}: {} in {:.1}s =====\n{}\n",
        lines.next().unwrap_or_default(),
        started.elapsed().as_secs_f64(),
        lines.next().unwrap_or_default()
    );
    let failed = !report.failures.is_empty();
    let summary = report.summary();
    if failed {
        eprintln!("{summary}");
    }
    assert!(
        !failed,
        "{what}: read-only units changed the cluster (or could not be checked):\n{summary}"
    );
}

async fn attack_server_backend(backend: DbBackend) {
    let Some(c) = common::cluster(backend) else {
        return;
    };
    let started = Instant::now();
    let cases = match backend {
        DbBackend::Postgres => pg_cases(),
        _ => my_cases(),
    };
    let privileged = backend == DbBackend::MySql;
    let mut report = Report::default();
    let label = backend_name(backend);
    let mut target = server_target(
        label,
        backend,
        &c.primary,
        &c.replicas,
        c.lagging.as_deref(),
    )
    .await
    .unwrap_or_else(|e| panic!("{label}: setting up the attack fixture failed: {e}"));
    self_check(&mut target).await;
    // the fatal cases run on private clusters at the same time
    let fatal = tokio::spawn(attack_fatal(
        backend,
        selected(&cases, &[Tier::Fatal]),
        privileged,
    ));
    let normal = selected(&cases, &[Tier::Normal, Tier::Server]);
    let paths = server_paths(privileged);
    eprintln!(
        "[{label}] {} cases ({} normal/server, {} fatal) over {} paths",
        cases.len(),
        normal.len(),
        selected(&cases, &[Tier::Fatal]).len(),
        paths.len()
    );
    attack(&mut target, &paths, &normal, &mut report).await;
    target.fp.close().await;
    drop(target);
    report.absorb(fatal.await.expect("the fatal cases' task"));
    finish(report, label, started);
}

/// The attack suite is opt-in while it is being finished (issue 8): `SOR_ATTACK_TESTS=1`.
fn attack_tests_enabled() -> bool {
    let off = std::env::var("SOR_ATTACK_TESTS").is_ok_and(|v| v == "0");
    if off {
        eprintln!("attack suite skipped: SOR_ATTACK_TESTS=0");
    }
    !off
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_never_writes_postgres() {
    if !attack_tests_enabled() {
        return;
    }
    attack_server_backend(DbBackend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_never_writes_mariadb() {
    if !attack_tests_enabled() {
        return;
    }
    attack_server_backend(DbBackend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_never_writes_sqlite() {
    if !attack_tests_enabled() {
        return;
    }
    let started = Instant::now();
    let cases = selected(&lite_cases(), &[Tier::Normal, Tier::Server, Tier::Fatal]);
    let mut report = Report::default();
    let all = lite_paths();
    // the file: handles 0 (reader pool), 1 (none), 3, 4 (pools of one)
    let mut file = lite_target("SQLite file", false)
        .await
        .unwrap_or_else(|e| panic!("SQLite file fixture: {e}"));
    self_check(&mut file).await;
    let remap_file = |h: usize| match h {
        0 => Some(0),
        1 => Some(1),
        3 => Some(2),
        4 => Some(3),
        _ => None,
    };
    let file_paths: Vec<PathDef> = all
        .iter()
        .filter_map(|p| {
            remap_file(p.handle).map(|h| PathDef {
                label: p.label,
                kind: p.kind,
                handle: h,
                methods: p.methods,
            })
        })
        .collect();
    eprintln!("[SQLite] {} cases over {} paths", cases.len(), all.len());
    attack(&mut file, &file_paths, &cases, &mut report).await;
    file.fp.close().await;
    drop(file);
    let mut memory = lite_target("SQLite memory", true)
        .await
        .unwrap_or_else(|e| panic!("SQLite memory fixture: {e}"));
    self_check(&mut memory).await;
    let memory_paths: Vec<PathDef> = all
        .iter()
        .filter_map(|p| {
            let h = match p.handle {
                2 => 0,
                5 => 1,
                _ => return None,
            };
            Some(PathDef {
                label: p.label,
                kind: p.kind,
                handle: h,
                methods: p.methods,
            })
        })
        .collect();
    attack(&mut memory, &memory_paths, &cases, &mut report).await;
    memory.fp.close().await;
    finish(report, "SQLite", started);
}
