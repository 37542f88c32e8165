use super::*;

const ALL: [Dialect; 3] = [Dialect::Postgres, Dialect::MySql, Dialect::Sqlite];

fn expect_refused(dialect: Dialect, cases: &[(&str, &str)]) -> usize {
    let mut failures = Vec::new();
    for (sql, what) in cases {
        match check_read_only(sql, dialect) {
            Err(r) if r.what == *what => {}
            other => failures.push(format!("{dialect:?} {sql:?}: want {what:?}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    cases.len()
}

fn expect_read(dialect: Dialect, cases: &[&str]) -> usize {
    let mut failures = Vec::new();
    let backend = match dialect {
        Dialect::Postgres => sea_orm::DbBackend::Postgres,
        Dialect::MySql => sea_orm::DbBackend::MySql,
        Dialect::Sqlite => sea_orm::DbBackend::Sqlite,
    };
    for sql in cases {
        match read_check(sql, dialect) {
            Err(r) => failures.push(format!("{dialect:?} {sql:?}: refused {r:?}")),
            // the one-pass answer is the separate pass's
            Ok(check) if check.calls_unknown_function != calls_unknown_function(sql, backend) => {
                failures.push(format!("{dialect:?} {sql:?}: calls differ: {check:?}"))
            }
            Ok(_) => {}
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    cases.len()
}

// ---------------------------------------------------------------------------------------------
// classify: today's behaviour on the existing test strings
// ---------------------------------------------------------------------------------------------

#[test]
fn classify_reads() {
    for sql in [
        "select 1",
        "  -- hi\n SELECT \"update\", 'delete' FROM t",
        "/* INSERT */ SELECT * FROM `insert` WHERE a = 'it''s UPDATE'",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "SHOW transaction_read_only",
        "EXPLAIN SELECT 1",
        "SELECT $1, $$ DELETE $$, $tag$ UPDATE $tag$",
        "SELECT replace(name, 'a', 'b') FROM t",
        "",
    ] {
        assert_eq!(classify(sql), StatementKind::Read, "{sql}");
    }
}

#[test]
fn classify_non_ascii_text_never_splits_a_character() {
    for sql in [
        "SELECT 배너 FROM t WHERE 이름 = '배너\\'' -- 한국어\n",
        "SELECT \"이름\" FROM t /* 주석 */",
        "SELECT $태그$ x $태그$, 'é' FROM t",
        "SELECT 'unterminated é",
        "-- 끝",
    ] {
        assert_eq!(classify(sql), StatementKind::Read, "{sql}");
    }
    assert_eq!(
        classify("/* 주석 */ DELETE FROM 배너"),
        StatementKind::Write("DELETE")
    );
}

#[test]
fn classify_writes() {
    for (sql, kw) in [
        ("INSERT INTO t VALUES (1)", "INSERT"),
        ("update t set a = 1", "UPDATE"),
        ("DELETE FROM t", "DELETE"),
        ("CREATE TABLE t (a int)", "CREATE"),
        (
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "DELETE",
        ),
        ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", "INSERT"),
        ("SELECT * FROM t FOR UPDATE", "UPDATE"),
        ("SELECT * FROM t FOR KEY SHARE", "LOCK"),
        ("SELECT * FROM t LOCK IN SHARE MODE", "LOCK"),
        ("REPLACE INTO t VALUES (1)", "REPLACE"),
        ("PRAGMA journal_mode = WAL", "PRAGMA"),
        ("SET search_path = x", "UNKNOWN"),
    ] {
        assert_eq!(classify(sql), StatementKind::Write(kw), "{sql}");
    }
}

#[test]
fn classify_doc_examples() {
    assert_eq!(
        classify("SELECT * FROM banner WHERE id = $1"),
        StatementKind::Read
    );
    assert_eq!(
        classify("INSERT INTO banner (name) VALUES ('x')"),
        StatementKind::Write("INSERT")
    );
    assert_eq!(
        classify("WITH d AS (DELETE FROM banner RETURNING *) SELECT * FROM d"),
        StatementKind::Write("DELETE")
    );
    assert_eq!(
        classify("SELECT * FROM banner FOR UPDATE"),
        StatementKind::Write("UPDATE")
    );
}

// ---------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------

/// Refused the same way in every dialect.
const COMMON_REFUSED: &[(&str, &str)] = &[
    ("INSERT INTO t VALUES (1)", "INSERT"),
    ("insert into t values (1)", "INSERT"),
    ("InSeRt INTO t VALUES (1)", "INSERT"),
    ("UPDATE t SET a = 1", "UPDATE"),
    ("DELETE FROM t", "DELETE"),
    ("  \n\t DELETE FROM t", "DELETE"),
    ("/* hi */ DELETE FROM t", "DELETE"),
    ("-- hi\nDELETE FROM t", "DELETE"),
    ("CREATE TABLE t (a int)", "CREATE"),
    ("DROP TABLE t", "DROP"),
    ("ALTER TABLE t ADD COLUMN b int", "ALTER"),
    ("TRUNCATE t", "TRUNCATE"),
    ("GRANT SELECT ON t TO u", "GRANT"),
    ("REVOKE SELECT ON t FROM u", "REVOKE"),
    (
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
        "MERGE",
    ),
    ("REPLACE INTO t VALUES (1)", "REPLACE"),
    ("UPSERT INTO t VALUES (1)", "UPSERT"),
    ("SET x = 1", "SET"),
    ("set x = 1", "SET"),
    ("RESET ALL", "RESET"),
    ("BEGIN", "BEGIN"),
    ("START TRANSACTION", "START"),
    ("COMMIT", "COMMIT"),
    ("ROLLBACK", "ROLLBACK"),
    ("SAVEPOINT a", "SAVEPOINT"),
    ("RELEASE SAVEPOINT a", "RELEASE"),
    ("END", "END"),
    ("CALL p()", "CALL"),
    ("DO 1", "DO"),
    ("VACUUM", "VACUUM"),
    ("ANALYZE t", "ANALYZE"),
    ("REINDEX t", "REINDEX"),
    ("ATTACH DATABASE 'x' AS y", "ATTACH"),
    ("LOCK TABLE t", "LOCK"),
    ("PREPARE s AS SELECT 1", "PREPARE"),
    ("EXECUTE s", "EXECUTE"),
    ("FOO BAR", "FOO"),
    ("select 1; delete from t", "multiple statements"),
    ("SELECT 1;DROP TABLE t", "multiple statements"),
    ("SELECT 1; SELECT 2", "multiple statements"),
    ("SELECT 1;;; SELECT 2", "multiple statements"),
    ("SELECT 1; /* c */ SELECT 2", "multiple statements"),
    ("; DROP TABLE t", "multiple statements"),
    ("SELECT 1;\u{a0}", "multiple statements"),
    ("SELECT 'a'; DROP TABLE t; --'", "multiple statements"),
    ("SELECT 'it''s'; DROP TABLE t", "multiple statements"),
    (
        "select 1 /* ; */ ; update t set a = 1",
        "multiple statements",
    ),
    (
        "SELECT * FROM t WHERE a = 1 OR 1=1; UPDATE t SET a=2",
        "multiple statements",
    ),
    (
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "DELETE",
    ),
    (
        "WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT 1",
        "UPDATE",
    ),
    (
        "with i as (insert into t values (1) returning *) select * from i",
        "INSERT",
    ),
    (
        "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
        "INSERT",
    ),
    ("SELECT * FROM t FOR UPDATE", "FOR UPDATE"),
    ("select * from t for update nowait", "FOR UPDATE"),
    ("SELECT * FROM t FOR /* x */ UPDATE", "FOR UPDATE"),
    (
        "SELECT * FROM t FOR\n-- x\nUPDATE SKIP LOCKED",
        "FOR UPDATE",
    ),
    ("SELECT * FROM t FOR NO KEY UPDATE", "FOR UPDATE"),
    ("SELECT * FROM t FOR SHARE", "FOR SHARE"),
    ("SELECT * FROM t FOR KEY SHARE", "FOR SHARE"),
    ("SELECT * FROM t LOCK IN SHARE MODE", "LOCK IN SHARE MODE"),
    (
        "SELECT 1 FROM t WHERE a IN (SELECT b FROM u FOR UPDATE)",
        "FOR UPDATE",
    ),
    (
        "SELECT * FROM t UNION SELECT * FROM u FOR UPDATE",
        "FOR UPDATE",
    ),
    ("SELECT * INTO t2 FROM t", "SELECT … INTO"),
    ("SELECT a FROM t INTO @x", "SELECT … INTO"),
    ("SELECT 1 INTO OUTFILE '/tmp/x'", "SELECT … INTO"),
    ("SELECT NEXT VALUE FOR s", "NEXT VALUE FOR"),
    ("(((DELETE FROM t)))", "DELETE"),
    ("(((SET x = 1)))", "SET"),
    ("(SHOW x)", "SHOW"),
    ("(EXPLAIN SELECT 1)", "EXPLAIN"),
    ("EXPLAIN DELETE FROM t", "DELETE"),
    ("EXPLAIN INSERT INTO t VALUES (1)", "INSERT"),
    ("EXPLAIN UPDATE t SET a = 1", "UPDATE"),
    ("EXPLAIN", "EXPLAIN"),
    ("EXPLAIN;", "EXPLAIN"),
    ("EXPLAIN SELECT 1; DELETE FROM t", "multiple statements"),
    ("'DROP TABLE t'", "'DROP TABLE t'"),
    ("1; DROP TABLE t", "1"),
    ("SELECT 1 /* unterminated", "unterminated comment"),
    ("SELECT 'unterminated", "unterminated string"),
    ("SELECT 1\0; DROP TABLE t", "NUL byte"),
    ("SELECT\u{a0}1", "SELECT\u{a0}1"),
    ("SELECT 1 FROM t WHERE\u{a0}DELETE", "DELETE"),
    ("\u{feff}DELETE FROM t", "DELETE"),
    ("SELECT 1.UPDATE", "UPDATE"),
    ("SELECT * FROM t WHERE x = 1.FOR UPDATE", "FOR UPDATE"),
    ("SELECT 1DELETE", "DELETE"),
    ("SELECT 1 FROM t WHERE a = 1INTO", "SELECT … INTO"),
    ("배너", "배너"),
    (
        "SELECT * FROM t WHERE id IN (SELECT id FROM u) FOR UPDATE OF t",
        "FOR UPDATE",
    ),
    (
        "WITH a AS (SELECT 1), b AS (DELETE FROM t) SELECT 1",
        "DELETE",
    ),
    ("SELECT 1 UNION ALL SELECT 2 INTO t", "SELECT … INTO"),
    ("  ;  ; INSERT INTO t VALUES (1)", "multiple statements"),
    ("SELECT (SELECT 1 FROM t FOR UPDATE)", "FOR UPDATE"),
    ("select * from t for share of t", "FOR SHARE"),
];

#[test]
fn refused_in_every_dialect() {
    let mut n = 0;
    for d in ALL {
        n += expect_refused(d, COMMON_REFUSED);
    }
    assert!(n >= 3 * 90, "{n}");
    println!("cases: {n}");
}

#[test]
fn refused_postgres() {
    let n = expect_refused(
        Dialect::Postgres,
        &[
            // Server functions, every spelling.
            ("SELECT pg_promote()", "pg_promote()"),
            ("select PG_PROMOTE(true, 60)", "pg_promote()"),
            ("SELECT pg_catalog.pg_promote()", "pg_promote()"),
            ("SELECT PG_CATALOG.Pg_Promote()", "pg_promote()"),
            (r#"SELECT "pg_promote"()"#, "pg_promote()"),
            (r#"SELECT "pg_catalog"."pg_promote" ()"#, "pg_promote()"),
            ("SELECT pg_catalog . pg_promote /* c */ ( )", "pg_promote()"),
            ("SELECT pg_promote\n-- c\n()", "pg_promote()"),
            ("SELECT pg_promote/* /* nested */ */()", "pg_promote()"),
            ("SELECT pg_terminate_backend(123)", "pg_terminate_backend()"),
            ("SELECT pg_cancel_backend(1)", "pg_cancel_backend()"),
            ("SELECT pg_signal_backend(1, 9)", "pg_signal_backend()"),
            ("SELECT pg_reload_conf()", "pg_reload_conf()"),
            ("SELECT pg_rotate_logfile()", "pg_rotate_logfile()"),
            ("SELECT pg_switch_wal()", "pg_switch_wal()"),
            ("SELECT pg_switch_xlog()", "pg_switch_xlog()"),
            (
                "SELECT pg_create_restore_point('x')",
                "pg_create_restore_point()",
            ),
            ("SELECT pg_backup_start('x')", "pg_backup_start()"),
            ("SELECT pg_backup_stop()", "pg_backup_stop()"),
            ("SELECT pg_start_backup('x')", "pg_start_backup()"),
            ("SELECT pg_stop_backup()", "pg_stop_backup()"),
            ("SELECT pg_wal_replay_pause()", "pg_wal_replay_pause()"),
            ("SELECT pg_wal_replay_resume()", "pg_wal_replay_resume()"),
            (
                "SELECT pg_log_backend_memory_contexts(1)",
                "pg_log_backend_memory_contexts()",
            ),
            ("SELECT pg_stat_reset()", "pg_stat_reset()"),
            (
                "SELECT pg_stat_reset_shared('bgwriter')",
                "pg_stat_reset_shared()",
            ),
            (
                "SELECT pg_stat_reset_single_table_counters(1)",
                "pg_stat_reset_single_table_counters()",
            ),
            (
                "SELECT set_config('search_path', 'x', false)",
                "set_config()",
            ),
            (
                "SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false)",
                "set_config()",
            ),
            ("SELECT pg_advisory_lock(1)", "pg_advisory_lock()"),
            ("SELECT pg_advisory_xact_lock(1)", "pg_advisory_xact_lock()"),
            (
                "SELECT pg_advisory_lock_shared(1)",
                "pg_advisory_lock_shared()",
            ),
            ("SELECT pg_try_advisory_lock(1)", "pg_try_advisory_lock()"),
            (
                "SELECT pg_advisory_unlock_all()",
                "pg_advisory_unlock_all()",
            ),
            ("SELECT lo_create(0)", "lo_create()"),
            ("SELECT lo_creat(-1)", "lo_creat()"),
            ("SELECT lo_import('/etc/passwd')", "lo_import()"),
            ("SELECT lo_export(1, '/tmp/x')", "lo_export()"),
            ("SELECT lo_unlink(1)", "lo_unlink()"),
            ("SELECT lo_open(1, 131072)", "lo_open()"),
            ("SELECT lo_from_bytea(0, 'x')", "lo_from_bytea()"),
            ("SELECT lo_put(1, 0, 'x')", "lo_put()"),
            ("SELECT lo_get(1)", "lo_get()"),
            ("SELECT lo_truncate(0, 1)", "lo_truncate()"),
            ("SELECT loread(0, 1)", "loread()"),
            ("SELECT lowrite(0, 'x')", "lowrite()"),
            ("SELECT pg_read_file('/etc/passwd')", "pg_read_file()"),
            ("SELECT pg_read_binary_file('x')", "pg_read_binary_file()"),
            ("SELECT pg_ls_dir('.')", "pg_ls_dir()"),
            ("SELECT * FROM pg_ls_waldir()", "pg_ls_waldir()"),
            ("SELECT pg_stat_file('x')", "pg_stat_file()"),
            ("SELECT pg_file_write('x', 'y', false)", "pg_file_write()"),
            (
                "SELECT * FROM dblink('host=x', 'DELETE FROM t') AS r(a int)",
                "dblink()",
            ),
            ("SELECT dblink_exec('DELETE FROM t')", "dblink_exec()"),
            ("SELECT nextval('s')", "nextval()"),
            ("SELECT setval('s', 1)", "setval()"),
            ("VALUES (nextval('s'))", "nextval()"),
            ("SELECT pg_notify('c', 'x')", "pg_notify()"),
            (
                "SELECT pg_create_logical_replication_slot('s', 'p')",
                "pg_create_logical_replication_slot()",
            ),
            (
                "SELECT pg_create_physical_replication_slot('s')",
                "pg_create_physical_replication_slot()",
            ),
            (
                "SELECT pg_drop_replication_slot('s')",
                "pg_drop_replication_slot()",
            ),
            (
                "SELECT pg_copy_physical_replication_slot('a', 'b')",
                "pg_copy_physical_replication_slot()",
            ),
            (
                "SELECT pg_replication_origin_create('x')",
                "pg_replication_origin_create()",
            ),
            (
                "SELECT pg_replication_slot_advance('s', '0/0')",
                "pg_replication_slot_advance()",
            ),
            (
                "SELECT pg_logical_emit_message(true, 'p', 'x')",
                "pg_logical_emit_message()",
            ),
            (
                "SELECT * FROM pg_logical_slot_get_changes('s', NULL, NULL)",
                "pg_logical_slot_get_changes()",
            ),
            (
                "SELECT * FROM pg_logical_slot_peek_binary_changes('s', NULL, NULL)",
                "pg_logical_slot_peek_binary_changes()",
            ),
            ("SELECT txid_current()", "txid_current()"),
            ("SELECT pg_current_xact_id()", "pg_current_xact_id()"),
            ("SELECT pg_export_snapshot()", "pg_export_snapshot()"),
            (
                "SELECT query_to_xml('DELETE FROM t RETURNING *', true, false, '')",
                "query_to_xml()",
            ),
            (
                "SELECT query_to_xml_and_xmlschema('SELECT 1', true, false, '')",
                "query_to_xml_and_xmlschema()",
            ),
            (
                "SELECT query_to_xmlschema('SELECT 1', true, false, '')",
                "query_to_xmlschema()",
            ),
            (
                "SELECT cursor_to_xml('c', 1, true, false, '')",
                "cursor_to_xml()",
            ),
            (
                "SELECT * FROM t WHERE id = 1 AND pg_promote()",
                "pg_promote()",
            ),
            ("SELECT (SELECT pg_promote())", "pg_promote()"),
            ("SELECT ARRAY[pg_promote()]", "pg_promote()"),
            ("VALUES (pg_promote())", "pg_promote()"),
            ("SELECT 1 FROM pg_promote()", "pg_promote()"),
            ("SHOW x; SELECT 1", "multiple statements"),
            ("TABLE t; SELECT pg_promote()", "multiple statements"),
            // E'' strings: a backslash escape that ends the string early for a naive lexer.
            ("SELECT E'\\''; DROP TABLE t; --'", "multiple statements"),
            ("SELECT e'\\'', pg_promote() --'", "pg_promote()"),
            ("SELECT E'\\\\', pg_promote() --'", "pg_promote()"),
            ("SELECT E'x'\n'\\'' , pg_promote() -- '", "pg_promote()"),
            (
                "SELECT E'x' -- c\n'\\'' , pg_promote() -- '",
                "pg_promote()",
            ),
            ("SELECT E'unterminated\\'", "unterminated string"),
            // Plain strings whose end depends on standard_conforming_strings.
            (
                "SELECT 'a\\'' , pg_promote() -- '",
                "backslash before a quote",
            ),
            ("SELECT 'a\\', pg_promote() --'", "backslash before a quote"),
            (
                "SELECT '\\''; DROP TABLE t; --'",
                "backslash before a quote",
            ),
            ("SELECT 'C:\\'", "backslash before a quote"),
            // U&
            ("SELECT U&'\\0044ROP'", "unicode-escaped text"),
            ("SELECT U&\"d\\0061ta\" FROM t", "unicode-escaped text"),
            ("SELECT u&'x'", "unicode-escaped text"),
            // Nested comments.
            ("SELECT 1 /* /* */ */ ; DROP TABLE t", "multiple statements"),
            ("SELECT 1 /* /* */ DROP TABLE t", "unterminated comment"),
            ("/* /* */ */ DELETE FROM t", "DELETE"),
            (
                "SELECT 1 /* outer /* inner */ still comment */, pg_promote()",
                "pg_promote()",
            ),
            ("SELECT 1 /*/ DROP TABLE t", "unterminated comment"),
            // Dollar quotes.
            (
                "SELECT $a$ x $b$; DROP TABLE t; $b$",
                "unterminated dollar-quoted string",
            ),
            (
                "SELECT $tag$ x $tag; DROP TABLE t",
                "unterminated dollar-quoted string",
            ),
            (
                "SELECT $tag$ x $TAG$; DROP TABLE t",
                "unterminated dollar-quoted string",
            ),
            ("SELECT $$ x $$; DROP TABLE t", "multiple statements"),
            ("SELECT $1; DROP TABLE t", "multiple statements"),
            ("SELECT $1, pg_promote()", "pg_promote()"),
            ("SELECT x$$, pg_promote() --$$", "pg_promote()"),
            ("SELECT $_$ a $_$, pg_promote()", "pg_promote()"),
            ("SELECT $é$ a $é$, pg_promote()", "pg_promote()"),
            ("SELECT $$pg_promote$$()", "pg_promote()"),
            (
                "SELECT $aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa$ x $aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa$",
                "dollar-quote tag longer than 63 bytes",
            ),
            // Quoted identifiers.
            (r#"SELECT "a""b", pg_promote()"#, "pg_promote()"),
            (
                r#"SELECT "update" FROM t; UPDATE t SET a = 1"#,
                "multiple statements",
            ),
            (r#"SELECT "unterminated"#, "unterminated quoted identifier"),
            // Comments end at CR; `#` is an operator.
            ("SELECT 1 -- x\r, pg_promote()", "pg_promote()"),
            ("SELECT 1 # DROP TABLE t", "DROP"),
            ("SELECT 1 --\n; DROP TABLE t", "multiple statements"),
            // EXPLAIN chains.
            ("EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1", "CREATE"),
            ("EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t", "DELETE"),
            ("EXPLAIN ANALYZE VERBOSE INSERT INTO t VALUES (1)", "INSERT"),
            ("EXPLAIN (ANALYZE) EXECUTE s", "EXECUTE"),
            ("EXPLAIN ANALYZE DECLARE c CURSOR FOR SELECT 1", "DECLARE"),
            ("EXPLAIN ANALYZE SELECT pg_promote()", "pg_promote()"),
            ("EXPLAIN ANALYZE SELECT 1 INTO t2", "SELECT … INTO"),
            ("EXPLAIN SHOW x", "SHOW"),
            ("EXPLAIN EXPLAIN SELECT 1", "EXPLAIN"),
            ("EXPLAIN ANALYZE", "EXPLAIN"),
            ("EXPLAIN (ANALYZE", "EXPLAIN"),
            ("EXPLAIN (ANALYZE) 'x'", "EXPLAIN"),
            (
                "EXPLAIN ANALYZE CREATE MATERIALIZED VIEW v AS SELECT 1",
                "CREATE",
            ),
            // Statements a read-only transaction does not all stop.
            ("LISTEN c", "LISTEN"),
            ("NOTIFY c", "NOTIFY"),
            ("UNLISTEN *", "UNLISTEN"),
            ("DISCARD ALL", "DISCARD"),
            ("CHECKPOINT", "CHECKPOINT"),
            ("COPY t TO STDOUT", "COPY"),
            ("COPY (SELECT 1) TO '/tmp/x'", "COPY"),
            ("CLUSTER t", "CLUSTER"),
            ("LOAD 'x'", "LOAD"),
            ("DECLARE c CURSOR FOR SELECT 1", "DECLARE"),
            ("FETCH c", "FETCH"),
            ("MOVE c", "MOVE"),
            ("CLOSE c", "CLOSE"),
            ("DEALLOCATE s", "DEALLOCATE"),
            ("ABORT", "ABORT"),
            ("REFRESH MATERIALIZED VIEW v", "REFRESH"),
            ("COMMENT ON TABLE t IS 'x'", "COMMENT"),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
                "SET",
            ),
            ("SET TRANSACTION READ WRITE", "SET"),
            ("SET ROLE admin", "SET"),
            ("RESET ROLE", "RESET"),
            ("COMMIT PREPARED 'x'", "COMMIT"),
            ("PREPARE TRANSACTION 'x'", "PREPARE"),
            ("DO $$ BEGIN PERFORM pg_promote(); END $$", "DO"),
            ("CALL pg_promote()", "CALL"),
            ("(TABLE t) ; DELETE FROM t", "multiple statements"),
            ("DESCRIBE t", "DESCRIBE"),
            ("PRAGMA table_info(t)", "PRAGMA"),
        ],
    );
    assert!(n >= 150, "{n}");
    println!("cases: {n}");
}

#[test]
fn refused_mysql() {
    let n = expect_refused(
        Dialect::MySql,
        &[
            ("SELECT GET_LOCK('a', 1)", "get_lock()"),
            ("select get_lock('a',1)", "get_lock()"),
            ("SELECT `get_lock`('a', 1)", "get_lock()"),
            ("SELECT \"get_lock\"('a', 1)", "get_lock()"),
            ("SELECT GET_LOCK /* c */ ('a', 1)", "get_lock()"),
            ("SELECT GET_LOCK\n# c\n('a', 1)", "get_lock()"),
            ("SELECT RELEASE_LOCK('a')", "release_lock()"),
            ("SELECT RELEASE_ALL_LOCKS()", "release_all_locks()"),
            ("SELECT LOAD_FILE('/etc/passwd')", "load_file()"),
            ("SELECT sys_exec('id')", "sys_exec()"),
            ("SELECT sys_eval('id')", "sys_eval()"),
            ("SELECT NEXTVAL(s)", "nextval()"),
            ("SELECT SETVAL(s, 10)", "setval()"),
            ("SELECT NEXT VALUE FOR s", "NEXT VALUE FOR"),
            ("SELECT next /* x */ value for s", "NEXT VALUE FOR"),
            ("SELECT s.nextval", "NEXTVAL"),
            ("SELECT s.nextval FROM dual", "NEXTVAL"),
            // `--` is a comment only before whitespace or a control character.
            ("SELECT 1 --GET_LOCK('a',1)", "get_lock()"),
            ("SELECT 1--GET_LOCK('a',1)", "get_lock()"),
            ("SELECT 1 --\u{a0}GET_LOCK('a',1)", "get_lock()"),
            ("SELECT 1 --\tx\n; DROP TABLE t", "multiple statements"),
            (
                "SELECT 1 -- ; DROP TABLE t\n; DELETE FROM t",
                "multiple statements",
            ),
            ("SELECT 1 # x\n; DELETE FROM t", "multiple statements"),
            // Executable comments are code.
            ("SELECT 1 /*! ; DROP TABLE t */", "multiple statements"),
            ("SELECT 1 /*!50000 , GET_LOCK('a', 1) */", "get_lock()"),
            ("SELECT 1 /*!99999 , GET_LOCK('a', 1) */", "get_lock()"),
            ("SELECT 1 /*M! , GET_LOCK('a', 1) */", "get_lock()"),
            ("SELECT 1 /*M!100000 , GET_LOCK('a', 1) */", "get_lock()"),
            ("SELECT 1 /*!50000GET_LOCK*/('a', 1)", "get_lock()"),
            ("/*!DELETE*/ FROM t", "DELETE"),
            ("/*!40101 SET NAMES utf8 */", "SET"),
            ("/*!40101 SET NAMES utf8 */; SELECT 1", "SET"),
            ("SELECT * FROM t FOR /*! UPDATE */", "FOR UPDATE"),
            ("SELECT 1 /*!INTO @x*/", "SELECT … INTO"),
            // … and must end where a plain comment would.
            (
                "SELECT 1 /*!99999 ' */ , GET_LOCK('a',1) -- ' */",
                "ambiguous executable comment",
            ),
            (
                "SELECT 1 /*! # */ , GET_LOCK('a', 1)\n*/",
                "ambiguous executable comment",
            ),
            (
                "SELECT 1 /*!-- */ , GET_LOCK('a', 1)\n*/",
                "ambiguous executable comment",
            ),
            (
                "SELECT 1 /*! /* */ , GET_LOCK('a',1) */",
                "comment inside an executable comment",
            ),
            ("SELECT 1 /*! unterminated", "unterminated comment"),
            // Plain comments do not nest.
            (
                "SELECT 1 /* /* */ , GET_LOCK('a', 1) /* */ */",
                "get_lock()",
            ),
            // Backslashes: the end of the string must not depend on NO_BACKSLASH_ESCAPES.
            (
                "SELECT 'a\\' , GET_LOCK('x', 1) -- '",
                "backslash before a quote",
            ),
            (
                "SELECT 'a\\'' , GET_LOCK('x', 1) -- '",
                "backslash before a quote",
            ),
            (
                "SELECT \"a\\\" , GET_LOCK('x', 1) -- \"",
                "backslash before a quote",
            ),
            (
                "SELECT 'a\\'; DROP TABLE t; -- '",
                "backslash before a quote",
            ),
            (
                "SELECT E'\\''; DROP TABLE t; --'",
                "backslash before a quote",
            ),
            (
                "SELECT X'\\' , GET_LOCK('a',1) -- '",
                "backslash before a quote",
            ),
            ("SELECT 'it\\'s'", "backslash before a quote"),
            ("SELECT \"unterminated", "unterminated string"),
            ("SELECT `unterminated", "unterminated quoted identifier"),
            ("SELECT `a``b`, GET_LOCK('a', 1)", "get_lock()"),
            // `$` quotes nothing.
            ("SELECT $$ ; DROP TABLE t; $$", "multiple statements"),
            ("SELECT $1; DROP TABLE t", "multiple statements"),
            // User variables.
            ("SELECT @a := 1", ":="),
            ("SELECT @a:=1", ":="),
            ("SELECT 1 FROM t WHERE (@x := @x + 1) > 0", ":="),
            ("SELECT @`a` := 1", ":="),
            // INTO and locking reads.
            ("SELECT * FROM t INTO OUTFILE '/tmp/x'", "SELECT … INTO"),
            ("SELECT 1 INTO @x", "SELECT … INTO"),
            ("SELECT 1 INTO DUMPFILE '/tmp/x'", "SELECT … INTO"),
            ("SELECT * FROM t FOR SHARE SKIP LOCKED", "FOR SHARE"),
            (
                "SELECT * FROM t LOCK /* x */ IN SHARE MODE",
                "LOCK IN SHARE MODE",
            ),
            // Statements.
            ("SET @a = 1", "SET"),
            ("SET SESSION transaction_read_only = 0", "SET"),
            ("SET NAMES utf8mb4", "SET"),
            ("USE db", "USE"),
            ("HANDLER t OPEN", "HANDLER"),
            ("FLUSH TABLES", "FLUSH"),
            ("KILL 1", "KILL"),
            ("SHUTDOWN", "SHUTDOWN"),
            ("INSTALL PLUGIN x SONAME 'y'", "INSTALL"),
            ("UNINSTALL PLUGIN x", "UNINSTALL"),
            ("CHANGE MASTER TO MASTER_HOST='x'", "CHANGE"),
            ("STOP SLAVE", "STOP"),
            ("PURGE BINARY LOGS TO 'x'", "PURGE"),
            ("XA START 'x'", "XA"),
            ("LOAD DATA INFILE 'x' INTO TABLE t", "LOAD"),
            ("OPTIMIZE TABLE t", "OPTIMIZE"),
            ("REPAIR TABLE t", "REPAIR"),
            ("RENAME TABLE a TO b", "RENAME"),
            ("UNLOCK TABLES", "UNLOCK"),
            ("DO GET_LOCK('a', 1)", "DO"),
            ("DO SLEEP(1)", "DO"),
            ("HELP 'x'", "HELP"),
            ("RESET MASTER", "RESET"),
            ("REPLACE t SELECT 1", "REPLACE"),
            ("TABLE t", "TABLE"),
            ("PRAGMA table_info(t)", "PRAGMA"),
            // EXPLAIN and DESCRIBE.
            ("EXPLAIN FORMAT=JSON DELETE FROM t", "DELETE"),
            ("EXPLAIN ANALYZE UPDATE t SET a = 1", "UPDATE"),
            ("DESCRIBE DELETE FROM t", "DELETE"),
            ("DESC t; DROP TABLE t", "multiple statements"),
            ("EXPLAIN FORMAT=JSON", "EXPLAIN"),
            ("DESCRIBE t c extra", "DESCRIBE"),
            ("DESCRIBE t.c.d", "DESCRIBE"),
            ("EXPLAIN FORMAT JSON SELECT 1", "EXPLAIN"),
            ("DESCRIBE SELECT GET_LOCK('a', 1)", "get_lock()"),
            ("EXPLAIN INTO @v SELECT 1", "SELECT … INTO"),
            ("EXPLAIN REPLACE t SELECT 1", "REPLACE"),
            ("DESCRIBE", "DESCRIBE"),
            ("EXPLAIN (DELETE FROM t)", "DELETE"),
        ],
    );
    assert!(n >= 100, "{n}");
    println!("cases: {n}");
}

#[test]
fn refused_sqlite() {
    let n = expect_refused(
        Dialect::Sqlite,
        &[
            ("SELECT load_extension('x')", "load_extension()"),
            ("SELECT writefile('/tmp/x', 'y')", "writefile()"),
            ("SELECT readfile('/etc/passwd')", "readfile()"),
            ("SELECT edit('x')", "edit()"),
            ("SELECT fts3_tokenizer('x')", "fts3_tokenizer()"),
            ("SELECT name FROM fsdir('/etc')", "fsdir()"),
            ("SELECT [load_extension]('x')", "load_extension()"),
            ("SELECT `load_extension`('x')", "load_extension()"),
            ("SELECT \"load_extension\"('x')", "load_extension()"),
            ("SELECT LOAD_EXTENSION ('x')", "load_extension()"),
            ("SELECT main.load_extension('x')", "load_extension()"),
            // PRAGMAs that write or change the connection.
            ("PRAGMA query_only = 0", "PRAGMA query_only"),
            ("PRAGMA query_only(0)", "PRAGMA query_only"),
            ("PRAGMA query_only=OFF", "PRAGMA query_only"),
            ("PRAGMA \"query_only\" = 0", "PRAGMA query_only"),
            ("PRAGMA user_version = 5", "PRAGMA user_version"),
            ("PRAGMA main.user_version = 5", "PRAGMA user_version"),
            ("PRAGMA wal_checkpoint", "PRAGMA wal_checkpoint"),
            ("PRAGMA wal_checkpoint(FULL)", "PRAGMA wal_checkpoint"),
            ("PRAGMA wal_checkpoint(TRUNCATE)", "TRUNCATE"),
            ("PRAGMA optimize", "PRAGMA optimize"),
            ("PRAGMA incremental_vacuum", "PRAGMA incremental_vacuum"),
            ("PRAGMA incremental_vacuum(10)", "PRAGMA incremental_vacuum"),
            ("PRAGMA shrink_memory", "PRAGMA shrink_memory"),
            ("PRAGMA writable_schema = 1", "PRAGMA writable_schema"),
            ("PRAGMA writable_schema", "PRAGMA writable_schema"),
            ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode"),
            ("PRAGMA journal_mode=WAL", "PRAGMA journal_mode"),
            ("PRAGMA foreign_keys = ON", "PRAGMA foreign_keys"),
            ("PRAGMA cache_size = -2000", "PRAGMA cache_size"),
            ("PRAGMA schema_version = 1", "PRAGMA schema_version"),
            (
                "PRAGMA temp_store_directory = '/tmp'",
                "PRAGMA temp_store_directory",
            ),
            ("PRAGMA table_info(a, b)", "PRAGMA table_info"),
            ("PRAGMA table_info(t) = 1", "PRAGMA"),
            ("PRAGMA", "PRAGMA"),
            ("PRAGMA main.", "PRAGMA"),
            ("PRAGMA 'x'", "PRAGMA"),
            ("PRAGMA table_info(t); DROP TABLE t", "multiple statements"),
            ("EXPLAIN PRAGMA table_info(t)", "PRAGMA"),
            ("EXPLAIN QUERY PLAN PRAGMA optimize", "PRAGMA"),
            ("(PRAGMA user_version)", "PRAGMA"),
            // Variables with SQLite's own lexing.
            ("SELECT $a(') , load_extension('x') --'", "load_extension()"),
            ("SELECT :a::b(x) , load_extension('x')", "load_extension()"),
            ("SELECT @a, load_extension('x')", "load_extension()"),
            // Quoting.
            ("SELECT \"unterminated", "unterminated quoted identifier"),
            ("SELECT [unterminated", "unterminated quoted identifier"),
            ("SELECT `unterminated", "unterminated quoted identifier"),
            ("SELECT 'a\\'; DROP TABLE t; --'", "multiple statements"),
            ("SELECT 1 # x\n; DELETE FROM t", "multiple statements"),
            (
                "SELECT 1 /* /* */ , load_extension('x') */",
                "load_extension()",
            ),
            ("SELECT $$ ; DROP TABLE t; $$", "multiple statements"),
            // Statements.
            ("ATTACH 'file.db' AS x", "ATTACH"),
            ("DETACH x", "DETACH"),
            ("VACUUM INTO '/tmp/x'", "VACUUM"),
            ("INSERT OR REPLACE INTO t VALUES (1)", "INSERT"),
            (
                "INSERT INTO t VALUES (1) ON CONFLICT DO UPDATE SET a = 1",
                "INSERT",
            ),
            ("EXPLAIN QUERY PLAN DELETE FROM t", "DELETE"),
            ("SELECT * FROM t; PRAGMA optimize", "multiple statements"),
            ("SHOW TABLES", "SHOW"),
            ("TABLE t", "TABLE"),
            ("DESCRIBE t", "DESCRIBE"),
            ("BEGIN IMMEDIATE", "BEGIN"),
        ],
    );
    assert!(n >= 60, "{n}");
    println!("cases: {n}");
}

#[test]
fn hostile_count() {
    // Documentation of the suite's size (see the individual tests).
    let per_dialect = COMMON_REFUSED.len();
    assert!(per_dialect >= 90);
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

const COMMON_READS: &[&str] = &[
    "SELECT 1",
    "select 1",
    "SELECT 1;",
    "SELECT 1 ;  ",
    "SELECT 1;;",
    "SELECT 1; -- done",
    "SELECT 1; /* done */",
    "",
    "   \n\t ",
    "-- only a comment",
    "/* only a comment */",
    ";",
    "SELECT * FROM t WHERE a = 'it''s; DROP TABLE t'",
    "SELECT 'INSERT UPDATE DELETE MERGE DROP ALTER CREATE INTO FOR UPDATE ; pg_promote() get_lock()' FROM t",
    "SELECT a FROM t -- DELETE FROM t; pg_promote()\n WHERE b = 1",
    "/* DELETE */ SELECT 1",
    "SELECT replace(name, 'a', 'b') FROM t",
    "SELECT REPLACE (name, 'a', 'b') FROM t",
    "SELECT t.update, t.delete, t.insert, t.into FROM t",
    "SELECT COUNT(*) FROM t",
    "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT n FROM r",
    "(SELECT 1) UNION (SELECT 2)",
    "(((SELECT 1)))",
    "VALUES (1, 'a'), (2, 'b')",
    "SELECT * FROM t ORDER BY a DESC LIMIT 10 OFFSET 5",
    "SELECT a, b FROM t WHERE a IN (1, 2, 3) AND b IS NOT NULL GROUP BY a, b HAVING COUNT(*) > 1",
    "SELECT CASE WHEN a > 1 THEN 'x' ELSE 'y' END FROM t",
    "SELECT * FROM t1 JOIN t2 ON t1.id = t2.t1_id LEFT JOIN t3 ON t3.id = t2.id",
    "SELECT 배너, 이름 FROM 테이블 WHERE 이름 = '한국어' -- 주석",
    "SELECT 'é', 'ü', '中文', '🎉' FROM t /* emoji 🎉 */",
    "SELECT a FROM t WHERE b LIKE '%update%'",
    "SELECT sum(a) OVER (PARTITION BY b ORDER BY c) FROM t",
    "SELECT EXISTS (SELECT 1 FROM t WHERE a = 1)",
    "SELECT a FROM t WHERE a BETWEEN 1 AND 10",
    "SELECT coalesce(a, 0), nullif(b, 0), lower(c), upper(d) FROM t",
    "SELECT * FROM t WHERE updated_at > created_at",
    "SELECT insert_id, update_count, deleted, into_x, creates FROM t",
    "SELECT 1 -- trailing comment",
    "SELECT 1 /* trailing */",
    "SELECT lo, share, next, value, key FROM t",
    "SELECT lo_id, pg_ls_x, dblink_id FROM t",
    "SELECT * FROM t WHERE a IN (SELECT b FROM u)",
    "SELECT 1 FROM t WHERE a = 1 -- FOR UPDATE",
    "SELECT 'a;b;c'",
    "SELECT '--', '/*', '*/', '#'",
    "SELECT 1 AS x /* ; DROP TABLE t; */",
    "SELECT a FROM t WHERE b = 'Ünïcödé' AND c = 'ñ'",
];

#[test]
fn reads_in_every_dialect() {
    let mut n = 0;
    for d in ALL {
        n += expect_read(d, COMMON_READS);
    }
    assert!(n >= 3 * 45, "{n}");
    println!("cases: {n}");
}

#[test]
fn reads_postgres() {
    let n = expect_read(
        Dialect::Postgres,
        &[
            r#"SELECT "banner"."id", "banner"."name" FROM "banner" WHERE "banner"."id" = $1 LIMIT $2"#,
            r#"SELECT "cake"."id", "cake"."name" FROM "cake" WHERE "cake"."name" LIKE $1 ORDER BY "cake"."id" ASC"#,
            r#"SELECT COUNT(*) AS num_items FROM (SELECT "fruit"."id" FROM "fruit") AS "sub_query""#,
            r#"SELECT "update", "delete", "insert", "into" FROM "for""#,
            r#"SELECT "t"."update" FROM "t""#,
            r#"SELECT "pg_promote" FROM "t""#,
            r#"SELECT "banner"."id" FROM "banner" WHERE "banner"."name" IN ($1, $2, $3) AND "banner"."deleted_at" IS NULL"#,
            "SELECT pg_sleep(0)",
            "SELECT now()",
            "SELECT pg_is_in_recovery()",
            "SELECT current_setting('transaction_read_only')",
            "SELECT pg_last_wal_replay_lsn()",
            "SELECT pg_current_wal_lsn()",
            "SELECT pg_backend_pid()",
            "SELECT version()",
            "SELECT pg_catalog.now()",
            r#"SELECT "pg_catalog"."now"()"#,
            "SHOW transaction_read_only",
            "SHOW ALL",
            "TABLE t",
            r#"TABLE "banner""#,
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT * FROM t",
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM t",
            "EXPLAIN (COSTS OFF) WITH x AS (SELECT 1) SELECT * FROM x",
            "EXPLAIN VERBOSE VALUES (1)",
            "EXPLAIN (ANALYZE) (SELECT 1)",
            "EXPLAIN ANALYZE TABLE t",
            "SELECT $1::int, $2::text",
            "SELECT $$ DELETE FROM t; $$",
            "SELECT $tag$ it's \"quoted\" ; DROP $tag$",
            "SELECT $a$ x $A$ ; DROP $a$",
            "SELECT $태그$ x $태그$",
            "SELECT $a$ $b$ ; DROP $a$",
            "SELECT E'it\\'s', E'\\\\'",
            "SELECT E'a''b'",
            "SELECT e'\\n'",
            "SELECT 'a'\n'b'",
            "SELECT E'a'\n'\\'b'",
            "SELECT 1 /* /* */ DROP */",
            "SELECT 1 /*/ DROP TABLE t */",
            "SELECT 1 /* outer /* inner */ DROP TABLE t; */ + 1",
            "SELECT 1 /*! ; DROP TABLE t */",
            "SELECT 1 # 2",
            "SELECT a->>'k' FROM t",
            "SELECT a #> '{a,b}' FROM t",
            "SELECT '{1,2}'::int[] @> ARRAY[1]",
            "SELECT x FROM t WHERE tags ? 'a'",
            "SELECT B'101', X'1F'",
            "SELECT N'abc'",
            "SELECT * FROM generate_series(1, 10)",
            "SELECT * FROM t WHERE id = ANY($1)",
            "SELECT 'a' || 'b'",
            "SELECT 1 -- comment\r\n",
            "SELECT CAST('1' AS int)",
            r#"SELECT "x$y", a$b FROM t"#,
            "SELECT 'C:\\\\path'",
            "SELECT 'a\\b'",
            r#"WITH "banner" AS (SELECT 1) SELECT * FROM "banner""#,
            "SELECT * FROM t WHERE a = $1 AND b = $2 AND c = $10",
            r#"SELECT 1 AS "SELECT … INTO""#,
            "SELECT lower('DROP')",
            "SELECT * FROM t OFFSET 0 ROWS FETCH NEXT 5 ROWS ONLY",
            "SELECT a FROM t WINDOW w AS (PARTITION BY b)",
            "SELECT 1 --GET_LOCK('a', 1)",
            "SELECT txid_current_snapshot()",
            "SELECT pg_sleep_for('1 second')",
            "SELECT to_char(now(), 'YYYY')",
            "SELECT 1 -- x\n",
            "SELECT 'x' -- ';\n",
            "WITH t AS MATERIALIZED (SELECT 1) SELECT * FROM t",
            "SELECT * FROM ONLY t",
            "SELECT 1 FROM t WHERE a = 'update'::text",
            "SELECT\n  \"banner\".\"id\"\nFROM\n  \"banner\"\n",
        ],
    );
    assert!(n >= 70, "{n}");
    println!("cases: {n}");
}

#[test]
fn reads_mysql() {
    let n = expect_read(
        Dialect::MySql,
        &[
            "SELECT `banner`.`id`, `banner`.`name` FROM `banner` WHERE `banner`.`id` = ? LIMIT ?",
            "SELECT `cake`.`id` FROM `cake` WHERE `cake`.`name` LIKE ? ORDER BY `cake`.`id` ASC",
            "SELECT COUNT(*) AS num_items FROM (SELECT `fruit`.`id` FROM `fruit`) AS `sub_query`",
            "SELECT `update`, `delete` FROM `insert`",
            "SELECT `t`.`update` FROM `t`",
            "SELECT CAST(@@port AS SIGNED)",
            "SELECT @@server_id",
            "SELECT @@global.read_only, @@session.transaction_read_only",
            "SELECT @x",
            "SELECT 1--1",
            "SELECT 1 -1",
            "SELECT 1 # comment",
            "SELECT 1 -- comment",
            "SELECT 1 --",
            "SELECT 1 --\tx",
            "SELECT 1 -- x\r, GET_LOCK('a',1)",
            "SHOW VARIABLES LIKE 'read_only'",
            "SHOW SLAVE STATUS",
            "SHOW REPLICA STATUS",
            "SHOW TABLES",
            "SHOW CREATE TABLE t",
            "SHOW GRANTS",
            "EXPLAIN SELECT * FROM t",
            "EXPLAIN FORMAT=JSON SELECT 1",
            "EXPLAIN FORMAT = TREE SELECT 1",
            "EXPLAIN ANALYZE SELECT 1",
            "EXPLAIN EXTENDED SELECT 1",
            "EXPLAIN PARTITIONS SELECT 1",
            "EXPLAIN t",
            "EXPLAIN `t`",
            "DESCRIBE t",
            "DESC t",
            "describe db.t",
            "DESCRIBE t col",
            "DESCRIBE t 'c%'",
            "DESCRIBE `db`.`t` `c`;",
            "EXPLAIN FOR CONNECTION 5",
            "DESCRIBE SELECT 1",
            "EXPLAIN (SELECT 1)",
            "SELECT 'a\\\\b'",
            "SELECT 'a\\nb'",
            "SELECT 'a''b'",
            "SELECT \"a\"\"b\"",
            "SELECT \"it's\"",
            "SELECT 1 /* /* */",
            "SELECT /*+ MAX_EXECUTION_TIME(1000) */ * FROM t",
            "SELECT /*!40001 SQL_NO_CACHE */ * FROM t",
            "SELECT 1 /*!50000 + 1 */",
            "SELECT 1 /*M!100000 + 1 */",
            "SELECT $1",
            "SELECT a FROM t WHERE b = _utf8mb4'x' COLLATE utf8mb4_bin",
            "SELECT CONVERT(a USING utf8mb4) FROM t",
            "SELECT CAST(a AS CHAR CHARACTER SET utf8mb4) FROM t",
            "SELECT SLEEP(0)",
            "SELECT MASTER_POS_WAIT('f', 4)",
            "SELECT IS_FREE_LOCK('a'), IS_USED_LOCK('a')",
            "SELECT LAST_INSERT_ID()",
            "SELECT DATABASE(), VERSION(), NOW(6)",
            "SELECT x'41', b'01', 0x41",
            "SELECT JSON_EXTRACT(doc, '$.a') FROM t",
            "SELECT `a``b` FROM t",
            "SELECT * FROM t WHERE name = 'x' AND id = ?;",
            "SELECT a FROM t1 STRAIGHT_JOIN t2",
            "SELECT 1 FROM DUAL",
            "SELECT PREVIOUS VALUE FOR s",
            "SELECT pg_promote()",
            "SELECT \"update\" FROM t",
            "SELECT 1 /*!*/",
            "SELECT `é` FROM t",
            "SELECT 1 # x\r; DELETE FROM t",
        ],
    );
    assert!(n >= 60, "{n}");
    println!("cases: {n}");
}

#[test]
fn reads_sqlite() {
    let n = expect_read(
        Dialect::Sqlite,
        &[
            r#"SELECT "banner"."id", "banner"."name" FROM "banner" WHERE "banner"."id" = ? LIMIT ?"#,
            r#"SELECT "banner"."id" FROM "banner" WHERE "banner"."id" = $1"#,
            "SELECT [update], `delete` FROM [insert]",
            "SELECT ?1, ?2, :name, @name, $name",
            "SELECT $a::b(c)",
            "PRAGMA table_info(t)",
            "PRAGMA table_info('t')",
            "PRAGMA table_info(\"t\")",
            "PRAGMA main.table_info(t)",
            "PRAGMA \"main\".table_info(t)",
            "PRAGMA index_list(t)",
            "PRAGMA index_info(i)",
            "PRAGMA foreign_key_list(t)",
            "PRAGMA foreign_key_check",
            "PRAGMA integrity_check",
            "PRAGMA integrity_check(10)",
            "PRAGMA quick_check",
            "PRAGMA user_version",
            "PRAGMA main.user_version",
            "PRAGMA journal_mode",
            "PRAGMA query_only",
            "PRAGMA foreign_keys",
            "PRAGMA compile_options",
            "PRAGMA database_list",
            "PRAGMA data_version;",
            "PRAGMA TABLE_INFO(T)",
            "PRAGMA page_count",
            "PRAGMA table_list",
            "PRAGMA busy_timeout",
            "SELECT * FROM pragma_table_info('t')",
            "EXPLAIN QUERY PLAN SELECT * FROM t",
            "EXPLAIN SELECT 1",
            "SELECT 1 -- x\r, load_extension('x')",
            "SELECT 'C:\\'",
            "SELECT x'0102'",
            "\u{feff}SELECT 1",
            "SELECT 1;\u{feff}",
            "SELECT a FROM t WHERE b GLOB '*x*'",
            "SELECT json_extract(doc, '$.a') FROM t",
            "SELECT a ->> '$.b' FROM t",
            "SELECT strftime('%s', 'now')",
            "SELECT sqlite_version(), changes(), typeof(1)",
            "SELECT * FROM t INDEXED BY i",
            "SELECT * FROM t NOT INDEXED",
            "SELECT 1 /*! ; DROP TABLE t */",
            "SELECT \"it's\"",
            "SELECT 'a''b'",
            "SELECT E'\\''; DROP TABLE t; --'",
        ],
    );
    assert!(n >= 45, "{n}");
    println!("cases: {n}");
}

// ---------------------------------------------------------------------------------------------
// Hints, messages, robustness
// ---------------------------------------------------------------------------------------------

#[test]
fn hints() {
    let hint = |sql: &str, d: Dialect| check_read_only(sql, d).map_err(|r| r.hint);
    assert_eq!(
        hint("INSERT INTO t VALUES (1)", Dialect::Postgres),
        Err(HINT_WRITE)
    );
    assert_eq!(
        hint("SELECT * FROM t FOR UPDATE", Dialect::MySql),
        Err(HINT_WRITE)
    );
    assert_eq!(hint("SET x = 1", Dialect::Postgres), Err(HINT_SESSION));
    assert_eq!(hint("reset all", Dialect::Postgres), Err(HINT_SESSION));
    assert_eq!(hint("USE db", Dialect::MySql), Err(HINT_SESSION));
    for tx in [
        "BEGIN",
        "START TRANSACTION",
        "COMMIT",
        "END",
        "ABORT",
        "ROLLBACK",
        "SAVEPOINT a",
    ] {
        assert_eq!(hint(tx, Dialect::Postgres), Err(HINT_TX), "{tx}");
    }
    assert_eq!(
        hint("SELECT pg_promote()", Dialect::Postgres),
        Err(HINT_SERVER)
    );
    assert_eq!(
        hint("SELECT GET_LOCK('a', 1)", Dialect::MySql),
        Err(HINT_SERVER)
    );
    assert_eq!(
        hint("SELECT load_extension('x')", Dialect::Sqlite),
        Err(HINT_SERVER)
    );
    assert_eq!(
        hint("SELECT nextval('s')", Dialect::Postgres),
        Err(HINT_WRITE)
    );
    assert_eq!(hint("SELECT 1; SELECT 2", Dialect::Sqlite), Err(HINT_MULTI));
    assert_eq!(hint("SELECT @a := 1", Dialect::MySql), Err(HINT_USER_VAR));
    assert_eq!(hint("SELECT 'x", Dialect::MySql), Err(HINT_LEXER));
    assert_eq!(hint("PRAGMA optimize", Dialect::Sqlite), Err(HINT_PRAGMA));
    assert_eq!(
        hint("DECLARE c CURSOR FOR SELECT 1", Dialect::Postgres),
        Err(HINT_CURSOR)
    );
    assert_eq!(hint("CHECKPOINT", Dialect::Postgres), Err(HINT_ADMIN));
    assert_eq!(hint("EXPLAIN", Dialect::Postgres), Err(HINT_EXPLAIN));
}

#[test]
fn refusal_displays_what_and_hint() {
    let r = check_read_only("SELECT pg_promote()", Dialect::Postgres).unwrap_err();
    assert_eq!(
        r.to_string(),
        format!("pg_promote() is refused in read-only work: {HINT_SERVER}")
    );
    let e: &dyn std::error::Error = &r;
    assert!(e.source().is_none());
}

#[test]
fn non_ascii_refusals_cut_at_character_boundaries() {
    let long = "가".repeat(40);
    let r = check_read_only(&long, Dialect::Postgres).unwrap_err();
    assert!(r.what.len() <= 64 + '…'.len_utf8(), "{}", r.what);
    assert!(r.what.ends_with('…'));
    assert!(r.what.starts_with("가가"));

    let r = check_read_only("SELECT é\u{a0}pg_promote()", Dialect::Postgres).unwrap_err();
    assert_eq!(r.what, "pg_promote()");
    let r = check_read_only("SELECT \"é\"()", Dialect::Postgres);
    assert!(r.is_ok());
    let r = check_read_only("é; DROP", Dialect::MySql).unwrap_err();
    assert_eq!(r.what, "é");
}

/// Every prefix of every test string, in every dialect: no panic, and never a slice inside a
/// character (the checks would panic).
#[test]
fn prefixes_never_panic() {
    let mut all: Vec<&str> = Vec::new();
    all.extend(COMMON_REFUSED.iter().map(|(s, _)| *s));
    all.extend(COMMON_READS.iter().copied());
    all.extend([
        "SELECT E'x'\n'\\'' , pg_promote() -- '",
        "SELECT 1 /*!99999 ' */ , GET_LOCK('a',1) -- ' */",
        "SELECT $a(') , load_extension('x') --'",
        "SELECT $태그$ x $태그$",
        "PRAGMA \"main\".table_info(t)",
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM t",
        "DESCRIBE `db`.`t` `c`;",
        "SELECT U&'\\0044ROP'",
        "\u{feff}SELECT 1",
    ]);
    for sql in all {
        for (i, _) in sql.char_indices().chain([(sql.len(), ' ')]) {
            let prefix = &sql[..i];
            for d in ALL {
                let _ = check_read_only(prefix, d);
            }
            let _ = classify(prefix);
        }
    }
}

/// Random concatenations of lexer-significant fragments: no panic, no infinite loop.
#[test]
fn random_fragments_never_panic() {
    const FRAGMENTS: &[&str] = &[
        "SELECT",
        " ",
        "'",
        "\"",
        "`",
        "[",
        "]",
        "$",
        "$$",
        "$a$",
        "$1",
        "E",
        "e'",
        "U&",
        "/*",
        "*/",
        "/*!",
        "/*M!",
        "50000",
        "--",
        "-- ",
        "#",
        "\n",
        "\r",
        "\\",
        ";",
        "(",
        ")",
        ".",
        ":=",
        ":",
        "@",
        "?",
        "pg_promote",
        "get_lock",
        "DELETE",
        "FOR",
        "UPDATE",
        "INTO",
        "PRAGMA",
        "EXPLAIN",
        "ANALYZE",
        "é",
        "배너",
        "\u{a0}",
        "\u{feff}",
        "1",
        "x",
        "=",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut sql = String::new();
    for _ in 0..20_000 {
        sql.clear();
        let n = (next() % 24) as usize;
        for _ in 0..n {
            sql.push_str(FRAGMENTS[(next() % FRAGMENTS.len() as u64) as usize]);
        }
        for d in ALL {
            let _ = check_read_only(&sql, d);
        }
        let _ = classify(&sql);
    }
}

#[test]
fn classify_and_check_agree_on_plain_writes() {
    for sql in [
        "INSERT INTO t VALUES (1)",
        "DELETE FROM t",
        "UPDATE t SET a = 1",
    ] {
        assert!(matches!(classify(sql), StatementKind::Write(_)));
        for d in ALL {
            assert!(check_read_only(sql, d).is_err());
        }
    }
}

#[test]
#[ignore = "timing loop: cargo test --release -- --ignored --nocapture"]
fn timing() {
    let sql = r#"SELECT "banner"."id", "banner"."name", "banner"."created_at" FROM "banner" WHERE "banner"."id" = $1 AND "banner"."name" LIKE $2 AND "banner"."deleted_at" IS NULL ORDER BY "banner"."id" LIMIT $3"#;
    assert!(sql.len() >= 190, "{}", sql.len());
    for (d, sql) in [
        (Dialect::Postgres, sql.to_string()),
        (Dialect::MySql, sql.replace('"', "`").replace(['$'], "?")),
        (Dialect::Sqlite, sql.to_string()),
    ] {
        let n = 200_000u32;
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert!(check_read_only(std::hint::black_box(&sql), d).is_ok());
        }
        let per = start.elapsed().as_nanos() / u128::from(n);
        println!("check_read_only {d:?}, {} bytes: {per} ns/call", sql.len());
    }
    let n = 200_000u32;
    let start = std::time::Instant::now();
    for _ in 0..n {
        assert_eq!(classify(std::hint::black_box(sql)), StatementKind::Read);
    }
    let per = start.elapsed().as_nanos() / u128::from(n);
    println!("classify, {} bytes: {per} ns/call", sql.len());
}

#[test]
#[ignore = "timing loop: cargo test --release --lib -- --ignored --nocapture"]
fn timing_lexer_only() {
    let sql = r#"SELECT "banner"."id", "banner"."name", "banner"."created_at" FROM "banner" WHERE "banner"."id" = $1 AND "banner"."name" LIKE $2 AND "banner"."deleted_at" IS NULL ORDER BY "banner"."id" LIMIT $3"#;
    let n = 200_000u32;
    let start = std::time::Instant::now();
    let mut count = 0usize;
    for _ in 0..n {
        let mut lexer = Lexer::new(std::hint::black_box(sql), Lex::Pg);
        while let Ok(t) = lexer.next_token() {
            if t.kind == Kind::End {
                break;
            }
            count += t.end();
        }
    }
    let per = start.elapsed().as_nanos() / u128::from(n);
    println!("lexer only: {per} ns/call ({count})");
    let start = std::time::Instant::now();
    for _ in 0..n {
        count += usize::from(kw_of(std::hint::black_box(b"banner")) == Kw::None);
    }
    let per = start.elapsed().as_nanos() / u128::from(n);
    println!("kw_of: {per} ns/call ({count})");
}
