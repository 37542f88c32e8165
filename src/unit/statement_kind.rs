//! Is a statement a read or a write, and may it run in read-only work?
//!
//! Two questions, one tokenizer:
//!
//! * [`classify`] is backend-agnostic bookkeeping: it looks at the leading keyword and at the
//!   keywords that hide a write inside a read (`WITH … INSERT`, `EXPLAIN ANALYZE DELETE`,
//!   `SELECT … FOR UPDATE`) and says whether a statement was a write.
//! * [`check_read_only`] is the gate of read-only units. It tokenizes the statement the way the
//!   given server would (comments, nested comments, quotes, escapes, dollar quotes, MySQL
//!   executable comments), accepts one statement led by an allow-listed keyword, and refuses what
//!   a read-only session does not stop: functions that act on the server (`pg_promote()`,
//!   advisory locks, large objects, `set_config()`, server files…), locking reads,
//!   `SELECT … INTO`, sequence use and user-variable assignment.
//!
//! The server remains the real guarantee (read-only sessions or transactions, one statement per
//! call through the prepared protocol); this is the early, friendly error and the refusal of the
//! few things the server lets through. Its input is hostile, so whenever the text could be read
//! two ways (a backslash that ends a string only when backslash escapes are on, a MySQL
//! versioned comment that is code on one server and a comment on another) it refuses.
//!
//! Nothing is allocated unless a statement is refused.

use std::fmt;

use crate::backend::sqlite_read_only::{function_allowed, pragma_allowed};

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// What a statement does, as far as routing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// Reads only: may run on a replica.
    Read,
    /// Writes, locks rows or changes schema; carries the keyword that made it one.
    Write(&'static str),
}

/// The SQL dialect a statement is tokenized in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL: nested `/* */` comments, `E''` strings, dollar quotes, `"identifiers"`.
    Postgres,
    /// MySQL and MariaDB: `#` and `-- ` comments, executable `/*! */` comments, backslash
    /// escapes in `'…'` and `"…"`, `` `identifiers` ``.
    MySql,
    /// SQLite: `"…"`, `` `…` `` and `[…]` identifiers, `$name`/`:name`/`@name` parameters.
    Sqlite,
}

/// Why a statement may not run in read-only work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was refused: a keyword (`"INSERT"`, `"SET"`), a function (`"pg_promote()"`), a
    /// clause (`"FOR UPDATE"`, `"SELECT … INTO"`) or a lexical problem (`"unterminated string"`,
    /// `"multiple statements"`).
    pub what: String,
    /// One sentence: what to do instead.
    pub hint: &'static str,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is refused in read-only work: {}",
            self.what, self.hint
        )
    }
}

impl std::error::Error for Refusal {}

/// Classifies one SQL statement, for any backend.
///
/// Conservative bookkeeping: a leading keyword other than a read's, or `INSERT`, `UPDATE`,
/// `DELETE`, `MERGE`, `UPSERT` or a row lock anywhere outside quotes and comments, makes it a
/// write. Use [`check_read_only`] to decide whether a statement may run in read-only work.
///
/// ```
/// use sea_orm_replica::unit::statement_kind::{classify, StatementKind};
/// assert_eq!(classify("SELECT * FROM banner WHERE id = $1"), StatementKind::Read);
/// assert_eq!(classify("INSERT INTO banner (name) VALUES ('x')"), StatementKind::Write("INSERT"));
/// assert_eq!(classify("WITH d AS (DELETE FROM banner RETURNING *) SELECT * FROM d"), StatementKind::Write("DELETE"));
/// assert_eq!(classify("SELECT * FROM banner FOR UPDATE"), StatementKind::Write("UPDATE"));
/// ```
pub fn classify(sql: &str) -> StatementKind {
    if u32::try_from(sql.len()).is_err() {
        return StatementKind::Write("UNKNOWN");
    }
    let mut lexer = Lexer::new(sql, Lex::Any);
    let mut words = std::iter::from_fn(move || loop {
        match lexer.next_token() {
            Ok(t) if t.kind == Kind::Word => return Some(t),
            Ok(t) if t.kind != Kind::End => {}
            _ => return None,
        }
    });
    let bytes = sql.as_bytes();
    let Some(first) = words.next() else {
        return StatementKind::Read;
    };
    let read = matches!(
        first.kw,
        Kw::Select
            | Kw::With
            | Kw::Show
            | Kw::Explain
            | Kw::Values
            | Kw::Table
            | Kw::Describe
            | Kw::Desc
    );
    if !read {
        let first = first.text(bytes);
        let keyword = KNOWN_WRITES
            .iter()
            .find(|k| first.eq_ignore_ascii_case(k.as_bytes()))
            .copied()
            .unwrap_or("UNKNOWN");
        return StatementKind::Write(keyword);
    }
    let hidden = |kw: Kw| match kw {
        Kw::Insert => Some("INSERT"),
        Kw::Update => Some("UPDATE"),
        Kw::Delete => Some("DELETE"),
        Kw::Merge => Some("MERGE"),
        Kw::Upsert => Some("UPSERT"),
        // `FOR SHARE`, `FOR KEY SHARE`, `LOCK IN SHARE MODE`: row locks are writes.
        Kw::Share => Some("LOCK"),
        _ => None,
    };
    for word in words {
        let found = if word.kw == Kw::Mixed {
            segments(word.text(bytes)).find_map(|seg| hidden(kw_of(seg)))
        } else {
            hidden(word.kw)
        };
        if let Some(k) = found {
            return StatementKind::Write(k);
        }
    }
    StatementKind::Read
}

/// The operations [`summary`] names; anything else is `OTHER`.
const OPERATIONS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "WITH",
    "VALUES",
    "TABLE",
    "SHOW",
    "EXPLAIN",
    "DESCRIBE",
    "DESC",
    "MERGE",
    "REPLACE",
    "UPSERT",
    "CREATE",
    "DROP",
    "ALTER",
    "TRUNCATE",
    "GRANT",
    "REVOKE",
    "COPY",
    "LOCK",
    "CALL",
    "DO",
    "VACUUM",
    "ANALYZE",
    "PRAGMA",
    "SET",
    "RESET",
    "BEGIN",
    "START",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "PREPARE",
    "EXECUTE",
    "XA",
    "USE",
];

/// The longest table name [`summary`] keeps.
const SUMMARY_TARGET_MAX: usize = 64;

/// A statement's operation and the first table it names, for spans: OpenTelemetry's
/// `db.operation.name` (`SELECT`, `INSERT`, …, `OTHER`) and the table of `db.query.summary`
/// (`SELECT banner`). Only the leading keyword and an identifier after `FROM`, `INTO`,
/// `UPDATE`, `TABLE` or `JOIN` are looked at, so no literal, parameter or comment can reach
/// a span; the identifier keeps letters, digits, `_`, `$` and `.` (up to 64 bytes).
///
/// ```
/// use sea_orm_replica::unit::statement_kind::summary;
/// assert_eq!(summary(r#"SELECT "banner"."id" FROM "banner" WHERE "id" = $1"#), ("SELECT", Some("banner".into())));
/// assert_eq!(summary("insert into app.orders (id) values ('x')"), ("INSERT", Some("app.orders".into())));
/// assert_eq!(summary("SELECT 'secret' AS s"), ("SELECT", None));
/// assert_eq!(summary("-- hi\nFROBNICATE"), ("OTHER", None));
/// ```
pub fn summary(sql: &str) -> (&'static str, Option<String>) {
    if u32::try_from(sql.len()).is_err() {
        return ("OTHER", None);
    }
    let bytes = sql.as_bytes();
    let mut lexer = Lexer::new(sql, Lex::Any);
    let mut next = move || match lexer.next_token() {
        Ok(t) if t.kind != Kind::End => Some(t),
        _ => None,
    };
    let Some(first) = next() else {
        return ("OTHER", None);
    };
    let operation = match first.kind {
        Kind::Word => OPERATIONS
            .iter()
            .find(|op| first.text(bytes).eq_ignore_ascii_case(op.as_bytes()))
            .copied()
            .unwrap_or("OTHER"),
        _ => "OTHER",
    };
    let leads = |t: &Token| {
        t.kind == Kind::Word
            && ["FROM", "INTO", "UPDATE", "TABLE", "JOIN"]
                .iter()
                .any(|k| t.text(bytes).eq_ignore_ascii_case(k.as_bytes()))
    };
    let ident = |t: &Token| matches!(t.kind, Kind::Word | Kind::QuotedIdent);
    let mut previous = first;
    while let Some(token) = next() {
        if leads(&previous) && ident(&token) {
            let mut name = String::new();
            let mut part = token;
            loop {
                let text = part.text(bytes);
                name.extend(
                    text.iter()
                        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$'))
                        .map(|&b| b as char),
                );
                match (next(), next()) {
                    (Some(dot), Some(after)) if dot.kind == Kind::Dot && ident(&after) => {
                        name.push('.');
                        part = after;
                    }
                    _ => break,
                }
            }
            name.truncate(SUMMARY_TARGET_MAX);
            return (operation, (!name.is_empty()).then_some(name));
        }
        previous = token;
    }
    (operation, None)
}

/// Checks that `sql` is one statement that only reads, in the given dialect.
///
/// Accepts one statement (trailing `;`, whitespace and comments allowed; empty input too) led
/// by `SELECT`, `WITH`, `VALUES`, `TABLE` (PostgreSQL), `SHOW` (PostgreSQL, MySQL), `EXPLAIN`
/// of such a statement, `DESCRIBE`/`DESC` (MySQL) or a reading `PRAGMA` (SQLite), and refuses:
///
/// * anything else as leading keyword (`SET`, `BEGIN`, `CALL`, `DO`, `INSERT`…);
/// * data or schema changes anywhere (`INSERT`, `UPDATE`, `DELETE`, `MERGE`, `UPSERT`,
///   `TRUNCATE`, `DROP`, `ALTER`, `CREATE`, `GRANT`, `REVOKE`), `INTO`, locking reads (`FOR
///   UPDATE`, `FOR SHARE`, `LOCK IN SHARE MODE`), `NEXT VALUE FOR`, MySQL `:=`;
/// * calls of functions that act on the server or the session (`pg_promote()`,
///   `pg_advisory_lock()`, `lo_import()`, `set_config()`, `nextval()`, `GET_LOCK()`,
///   `load_extension()`…), quoted or schema-qualified;
/// * text that cannot be read safely: unterminated quotes or comments, NUL bytes, PostgreSQL
///   `U&` escapes, string literals whose end depends on whether backslash escapes are on, MySQL
///   executable comments whose end depends on the server version.
///
/// Allocates nothing unless it refuses.
///
/// ```
/// use sea_orm_replica::unit::statement_kind::{check_read_only, Dialect};
/// assert!(check_read_only(r#"SELECT "banner"."id" FROM "banner" WHERE "banner"."id" = $1"#, Dialect::Postgres).is_ok());
/// assert_eq!(check_read_only("SELECT pg_catalog.pg_promote()", Dialect::Postgres).unwrap_err().what, "pg_promote()");
/// assert_eq!(check_read_only("SELECT 1 --GET_LOCK('a', 1)", Dialect::MySql).unwrap_err().what, "get_lock()");
/// ```
pub fn check_read_only(sql: &str, dialect: Dialect) -> Result<(), Refusal> {
    read_check(sql, dialect).map(|_| ())
}

/// What [`check_read_only`] learned about a statement it let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadCheck {
    /// The statement calls a routine that is not a known built-in (see
    /// [`calls_unknown_function`]).
    pub calls_unknown_function: bool,
}

/// [`check_read_only`] and [`calls_unknown_function`] in one pass over the text: what every
/// read-only statement asks.
pub(crate) fn read_check(sql: &str, dialect: Dialect) -> Result<ReadCheck, Refusal> {
    let bytes = sql.as_bytes();
    if u32::try_from(bytes.len()).is_err() {
        return Err(refuse("statement longer than 4 GiB", HINT_LEXER));
    }
    // NUL ends the statement for SQLite and is refused by the others: refuse it here.
    if bytes
        .chunks(32)
        .any(|c| c.iter().fold(false, |nul, &b| nul | (b == 0)))
    {
        return Err(refuse("NUL byte", HINT_LEXER));
    }
    let lex = match dialect {
        Dialect::Postgres => Lex::Pg,
        Dialect::MySql => Lex::My,
        Dialect::Sqlite => Lex::Lite,
    };
    let mut lexer = Lexer::new(sql, lex);
    let mut checker = Checker::new(bytes, dialect);
    let mut calls = false;
    let mut previous: Option<Token> = None;
    loop {
        match lexer.next_token() {
            Ok(token) if token.kind == Kind::End => {
                checker.finish()?;
                return Ok(ReadCheck {
                    calls_unknown_function: calls,
                });
            }
            Ok(token) => {
                calls = calls || unknown_call(previous, token, bytes);
                previous = Some(token);
                checker.feed(token)?;
            }
            Err(e) => return Err(e.refusal()),
        }
    }
}

impl From<sea_orm::DbBackend> for Dialect {
    fn from(backend: sea_orm::DbBackend) -> Self {
        match backend {
            sea_orm::DbBackend::MySql => Dialect::MySql,
            sea_orm::DbBackend::Sqlite => Dialect::Sqlite,
            _ => Dialect::Postgres,
        }
    }
}

/// The hint for a refusal named `what` (a [`Refusal::what`]): what to do instead. Errors
/// that travel through SeaORM's `DbErr` keep only `what`; this finds the hint again.
pub fn hint_for(what: &str) -> &'static str {
    if what == "multiple statements" {
        return HINT_MULTI;
    }
    if what == ":=" {
        return HINT_USER_VAR;
    }
    if what.starts_with("PRAGMA") {
        return HINT_PRAGMA;
    }
    if let Some(name) = what.strip_suffix("()") {
        return [Dialect::Postgres, Dialect::MySql, Dialect::Sqlite]
            .into_iter()
            .find_map(|d| denied_function(name.as_bytes(), d))
            .unwrap_or(HINT_SERVER);
    }
    if what.bytes().any(|b| b.is_ascii_lowercase()) {
        // "unterminated string", "NUL byte", "backslash before a quote"…
        return HINT_LEXER;
    }
    leader_hint(what.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Hints
// ---------------------------------------------------------------------------------------------

const HINT_WRITE: &str = "run it in a read-write unit (begin_read_write / read_write)";
const HINT_SESSION: &str =
    "session settings would outlive the unit: set them per role or per connection URL, not in a unit";
const HINT_TX: &str =
    "units manage their own transactions: use UnitOptions (isolation, snapshot) and commit/rollback";
const HINT_SERVER: &str = "functions that act on the server are refused in read-only work, even where the session is read-only: run them on a direct admin connection";
const HINT_ADMIN: &str =
    "administrative commands are refused in read-only work: run them on a direct admin connection";
const HINT_MULTI: &str = "send one statement per call";
const HINT_CURSOR: &str = "prepared statements and cursors are session state that would outlive the unit: send the query itself (the driver prepares it)";
const HINT_USER_VAR: &str = "user-variable assignment is session state that would outlive the unit: compute the value in the query or in the application";
const HINT_LEXER: &str =
    "the statement could not be read safely: fix its quoting, or pass values as bind parameters";
const HINT_PRAGMA: &str = "only reading PRAGMAs (no `=`, an argument only for introspection pragmas) run in read-only work: run it in a read-write unit (begin_read_write / read_write)";
const HINT_EXPLAIN: &str = "EXPLAIN a SELECT, WITH, VALUES or TABLE statement, or DESCRIBE a table";

fn refuse(what: impl Into<String>, hint: &'static str) -> Refusal {
    Refusal {
        what: what.into(),
        hint,
    }
}

// ---------------------------------------------------------------------------------------------
// Keyword and function lists
// ---------------------------------------------------------------------------------------------

// `classify`'s names for leading keywords, unchanged from the previous version.
const KNOWN_WRITES: &[&str] = &[
    "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE", "UPSERT", "CREATE", "DROP", "ALTER",
    "TRUNCATE", "GRANT", "REVOKE", "COPY", "LOCK", "CALL", "DO", "VACUUM", "ANALYZE", "REINDEX",
    "CLUSTER", "COMMENT", "REFRESH", "PRAGMA", "LOAD", "RENAME", "ATTACH", "DETACH",
];

const SESSION_LEADERS: &[&str] = &["SET", "RESET", "DISCARD", "USE", "ATTACH", "DETACH"];
const TX_LEADERS: &[&str] = &[
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ABORT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "XA",
];
const CURSOR_LEADERS: &[&str] = &[
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "DECLARE",
    "FETCH",
    "MOVE",
    "CLOSE",
    "HANDLER",
    "OPEN",
];
const ADMIN_LEADERS: &[&str] = &[
    "CHECKPOINT",
    "KILL",
    "SHUTDOWN",
    "FLUSH",
    "INSTALL",
    "UNINSTALL",
    "PURGE",
    "CHANGE",
    "STOP",
    "RESTART",
    "LISTEN",
    "NOTIFY",
    "UNLISTEN",
    "CLONE",
    "BINLOG",
    "CACHE",
    "HELP",
];

const PG_DENIED: &[&str] = &[
    "setseed",
    "pg_promote",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_signal_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_rotate_logfile_old",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_log_backend_memory_contexts",
    "pg_log_standby_snapshot",
    "pg_stat_statements_reset",
    "set_config",
    "loread",
    "lowrite",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_logdir_ls",
    "pg_notify",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_sync_replication_slots",
    "pg_logical_emit_message",
    "pg_export_snapshot",
    "pg_import_system_collations",
    "pg_truncate_visibility_map",
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "query_to_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
];
const PG_DENIED_PREFIXES: &[&str] = &[
    "pg_switch_",
    "pg_wal_replay_",
    "pg_xlog_replay_",
    "pg_stat_reset",
    "pg_advisory_",
    "pg_try_advisory_",
    "lo_",
    "pg_ls_",
    "pg_file_",
    "dblink",
    "pg_create_",
    "pg_copy_",
    "pg_replication_origin_",
    "pg_logical_slot_",
    "binary_upgrade_",
];
/// Denied functions that write (sequences, transaction ids): the write hint fits them better.
const PG_WRITING: &[&str] = &["nextval", "setval", "txid_current", "pg_current_xact_id"];
const MY_DENIED: &[&str] = &[
    "get_lock",
    "release_lock",
    "release_all_locks",
    "load_file",
    "sys_exec",
    "sys_eval",
    "sys_set",
];
const MY_WRITING: &[&str] = &["nextval", "setval"];

fn is(word: &[u8], keyword: &str) -> bool {
    word.eq_ignore_ascii_case(keyword.as_bytes())
}

fn starts_with_ci(word: &[u8], prefix: &str) -> bool {
    word.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// The ASCII runs of a word: a non-ASCII character never ends a keyword for the server (it is an
/// identifier character everywhere), but refusing `\u{a0}DELETE` costs nothing and closes the
/// door on any server or proxy that treats Unicode spaces as spaces.
fn segments(word: &[u8]) -> impl Iterator<Item = &[u8]> {
    word.split(|b| *b >= 0x80).filter(|s| !s.is_empty())
}

/// The keywords the rules look at; `None` for any other ASCII word, `Mixed` for a word with
/// non-ASCII characters (whose ASCII runs are then looked at one by one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kw {
    None,
    Mixed,
    Select,
    With,
    Values,
    Table,
    Show,
    Explain,
    Describe,
    Desc,
    Pragma,
    Insert,
    Update,
    Delete,
    Merge,
    Upsert,
    Truncate,
    Drop,
    Alter,
    Create,
    Grant,
    Revoke,
    Into,
    Share,
    Value,
    Next,
    For,
    Key,
    In,
    Replace,
    Nextval,
    Analyze,
    Analyse,
    Verbose,
    Extended,
    Partitions,
    Format,
    Query,
    Plan,
}

/// Up to 8 bytes of a word, ASCII-uppercased, as one integer.
const fn pack(word: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < word.len() && i < 8 {
        v |= (word[i].to_ascii_uppercase() as u64) << (8 * i);
        i += 1;
    }
    v
}

macro_rules! keywords {
    ($($kw:ident = $text:literal,)*) => {
        /// The packed texts of the keywords of at most 8 bytes.
        #[allow(non_upper_case_globals)]
        mod packed {
            $(pub(super) const $kw: u64 = super::pack($text);)*
        }

        /// The keyword an ASCII word is, case-insensitively.
        #[inline(always)]
fn kw_of(word: &[u8]) -> Kw {
            let len = word.len();
            if !(2..=8).contains(&len) {
                return if word.eq_ignore_ascii_case(b"PARTITIONS") {
                    Kw::Partitions
                } else {
                    Kw::None
                };
            }
            let mut v = 0u64;
            for (i, &c) in word.iter().enumerate() {
                v |= u64::from(c) << (8 * i);
            }
            // Clearing bit 5 upper-cases ASCII letters; it never turns another identifier
            // character (digit, `_`, `$`) into a letter, so no false match.
            match v & 0xDFDF_DFDF_DFDF_DFDF {
                $(packed::$kw => Kw::$kw,)*
                _ => Kw::None,
            }
        }
    };
}

keywords! {
    Select = b"SELECT",
    With = b"WITH",
    Values = b"VALUES",
    Table = b"TABLE",
    Show = b"SHOW",
    Explain = b"EXPLAIN",
    Describe = b"DESCRIBE",
    Desc = b"DESC",
    Pragma = b"PRAGMA",
    Insert = b"INSERT",
    Update = b"UPDATE",
    Delete = b"DELETE",
    Merge = b"MERGE",
    Upsert = b"UPSERT",
    Truncate = b"TRUNCATE",
    Drop = b"DROP",
    Alter = b"ALTER",
    Create = b"CREATE",
    Grant = b"GRANT",
    Revoke = b"REVOKE",
    Into = b"INTO",
    Share = b"SHARE",
    Value = b"VALUE",
    Next = b"NEXT",
    For = b"FOR",
    Key = b"KEY",
    In = b"IN",
    Replace = b"REPLACE",
    Nextval = b"NEXTVAL",
    Analyze = b"ANALYZE",
    Analyse = b"ANALYSE",
    Verbose = b"VERBOSE",
    Extended = b"EXTENDED",
    Format = b"FORMAT",
    Query = b"QUERY",
    Plan = b"PLAN",
}

impl Kw {
    /// The name of a data- or schema-changing keyword refused anywhere.
    fn write_name(self) -> Option<&'static str> {
        Some(match self {
            Kw::Insert => "INSERT",
            Kw::Update => "UPDATE",
            Kw::Delete => "DELETE",
            Kw::Merge => "MERGE",
            Kw::Upsert => "UPSERT",
            Kw::Truncate => "TRUNCATE",
            Kw::Drop => "DROP",
            Kw::Alter => "ALTER",
            Kw::Create => "CREATE",
            Kw::Grant => "GRANT",
            Kw::Revoke => "REVOKE",
            _ => return None,
        })
    }
}

/// The hint for a denied function, if `name` is one in `dialect`.
fn denied_function(name: &[u8], dialect: Dialect) -> Option<&'static str> {
    let listed = |list: &[&str]| list.iter().any(|f| is(name, f));
    let (writing, server) = match dialect {
        Dialect::Postgres => (
            listed(PG_WRITING),
            listed(PG_DENIED) || PG_DENIED_PREFIXES.iter().any(|p| starts_with_ci(name, p)),
        ),
        Dialect::MySql => (listed(MY_WRITING), listed(MY_DENIED)),
        Dialect::Sqlite => (false, !function_allowed(name)),
    };
    if writing {
        Some(HINT_WRITE)
    } else if server {
        Some(HINT_SERVER)
    } else {
        None
    }
}

fn leader_hint(word: &[u8]) -> &'static str {
    let any = |list: &[&str]| list.iter().any(|k| is(word, k));
    if any(SESSION_LEADERS) {
        HINT_SESSION
    } else if any(TX_LEADERS) {
        HINT_TX
    } else if any(CURSOR_LEADERS) {
        HINT_CURSOR
    } else if any(ADMIN_LEADERS) {
        HINT_ADMIN
    } else {
        HINT_WRITE
    }
}

/// Text for a refusal: at most 64 bytes, cut at a character boundary.
fn shown(bytes: &[u8], upper: bool) -> String {
    let mut s = String::from_utf8_lossy(bytes).into_owned();
    if upper {
        s.make_ascii_uppercase();
    }
    if s.len() > 64 {
        let mut cut = 64;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

/// Tokenizer flavour. `Any` is the lenient, backend-agnostic one of [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Pg,
    My,
    Lite,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Unquoted identifier or keyword.
    Word,
    /// Quoted identifier: `"x"` (PostgreSQL, SQLite), `` `x` ``, `[x]`.
    QuotedIdent,
    /// String literal, including dollar-quoted and MySQL `"…"` (an identifier under ANSI_QUOTES).
    Str,
    Number,
    Param,
    LParen,
    RParen,
    Dot,
    Semicolon,
    Equals,
    Minus,
    Plus,
    /// Any other character outside quotes: one byte.
    Other,
    /// MySQL `:=`.
    ColonEq,
    /// End of input.
    End,
}

/// The kind of a one-byte token.
const fn punct(b: u8) -> Kind {
    match b {
        b'(' => Kind::LParen,
        b')' => Kind::RParen,
        b'.' => Kind::Dot,
        b';' => Kind::Semicolon,
        b'=' => Kind::Equals,
        b'-' => Kind::Minus,
        b'+' => Kind::Plus,
        _ => Kind::Other,
    }
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    /// For a word, the keyword it is.
    kw: Kw,
    // Byte offsets; inputs longer than `u32::MAX` are refused before tokenizing.
    start: u32,
    end: u32,
    /// The word, the content of a quoted token, or the whole token.
    text_start: u32,
    text_end: u32,
}

impl Token {
    fn new(kind: Kind, start: usize, end: usize) -> Self {
        Self::quoted(kind, start, end, start, end)
    }

    fn quoted(kind: Kind, start: usize, end: usize, text_start: usize, text_end: usize) -> Self {
        Token {
            kind,
            kw: Kw::None,
            start: start as u32,
            end: end as u32,
            text_start: text_start as u32,
            text_end: text_end as u32,
        }
    }

    fn end(&self) -> usize {
        self.end as usize
    }

    fn text_range(&self) -> (usize, usize) {
        (self.text_start as usize, self.text_end as usize)
    }

    fn text<'s>(&self, s: &'s [u8]) -> &'s [u8] {
        s.get(self.text_start as usize..self.text_end as usize)
            .unwrap_or(&[])
    }

    fn whole<'s>(&self, s: &'s [u8]) -> &'s [u8] {
        s.get(self.start as usize..self.end as usize).unwrap_or(&[])
    }

    fn is_punct(&self, c: u8) -> bool {
        self.kind == punct(c)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LexError {
    UnterminatedString,
    UnterminatedIdent,
    UnterminatedComment,
    UnterminatedDollar,
    LongDollarTag,
    UnicodeEscape,
    AmbiguousBackslash,
    AmbiguousExecComment,
    CommentInExecComment,
}

impl LexError {
    fn refusal(self) -> Refusal {
        let what = match self {
            LexError::UnterminatedString => "unterminated string",
            LexError::UnterminatedIdent => "unterminated quoted identifier",
            LexError::UnterminatedComment => "unterminated comment",
            LexError::UnterminatedDollar => "unterminated dollar-quoted string",
            LexError::LongDollarTag => "dollar-quote tag longer than 63 bytes",
            LexError::UnicodeEscape => "unicode-escaped text",
            LexError::AmbiguousBackslash => "backslash before a quote",
            LexError::AmbiguousExecComment => "ambiguous executable comment",
            LexError::CommentInExecComment => "comment inside an executable comment",
        };
        refuse(what, HINT_LEXER)
    }
}

const IDENT_START: u8 = 1;
const IDENT_CONT: u8 = 2;
const TAG_CONT: u8 = 4;
const SPACE: u8 = 8;

/// Character classes, by byte.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let letter = b.is_ascii_alphabetic() || b == b'_' || b >= 0x80;
        let digit = b.is_ascii_digit();
        if letter {
            t[i] |= IDENT_START | IDENT_CONT | TAG_CONT;
        }
        if digit {
            t[i] |= IDENT_CONT | TAG_CONT;
        }
        if b == b'$' {
            t[i] |= IDENT_CONT;
        }
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            t[i] |= SPACE;
        }
        i += 1;
    }
    t
};

fn class(b: u8) -> u8 {
    CLASS[usize::from(b)]
}

fn is_ident_start(b: u8) -> bool {
    class(b) & IDENT_START != 0
}

fn is_ident_cont(b: u8) -> bool {
    class(b) & IDENT_CONT != 0
}

/// Characters of a PostgreSQL dollar-quote tag after the first (no `$`).
fn is_tag_cont(b: u8) -> bool {
    class(b) & TAG_CONT != 0
}

fn is_space(b: u8) -> bool {
    class(b) & SPACE != 0
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        if hay.get(i) == Some(&first) && hay.get(i..i + needle.len()) == Some(needle) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The index of the quote closing the literal opened at `open`, with `qq` doubling and, if
/// `backslash`, backslash escapes.
fn closing_quote(s: &[u8], open: usize, q: u8, backslash: bool) -> Option<usize> {
    let mut i = open + 1;
    loop {
        let rest = s.get(i..)?;
        let j = i + rest
            .iter()
            .position(|&c| c == q || (backslash && c == b'\\'))?;
        if s.get(j + 1) == Some(&q) || (backslash && s.get(j) == Some(&b'\\')) {
            i = j + 2;
        } else {
            return Some(j);
        }
    }
}

/// Like [`closing_quote`] for a literal whose escapes depend on a server setting
/// (`NO_BACKSLASH_ESCAPES`, `ANSI_QUOTES`, `standard_conforming_strings`): it must end at the
/// same place either way.
fn closing_quote_either_way(s: &[u8], open: usize, q: u8) -> Result<usize, LexError> {
    let plain = closing_quote(s, open, q, false);
    let body = s.get(open + 1..plain.unwrap_or(s.len())).unwrap_or(&[]);
    if !body.contains(&b'\\') {
        return plain.ok_or(LexError::UnterminatedString);
    }
    match (plain, closing_quote(s, open, q, true)) {
        (Some(a), Some(b)) if a == b => Ok(a),
        (None, None) => Err(LexError::UnterminatedString),
        _ => Err(LexError::AmbiguousBackslash),
    }
}

/// PostgreSQL string continuation: after a closing quote at `from - 1`, whitespace holding a
/// newline (and possibly `--` comments) followed by a quote continues the same literal, in the
/// same escape mode. Returns the index of that quote.
fn pg_continuation(s: &[u8], from: usize) -> Option<usize> {
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let skip_comment = |mut i: usize| {
        while i < s.len() && !matches!(at(i), b'\n' | b'\r') {
            i += 1;
        }
        i
    };
    let mut i = from;
    loop {
        match at(i) {
            b' ' | b'\t' | 0x0c => i += 1,
            b'-' if at(i + 1) == b'-' => i = skip_comment(i + 2),
            _ => break,
        }
    }
    if !matches!(at(i), b'\n' | b'\r') {
        return None;
    }
    i += 1;
    loop {
        match at(i) {
            b if is_space(b) => i += 1,
            b'-' if at(i + 1) == b'-' => {
                i = skip_comment(i + 2);
                if !matches!(at(i), b'\n' | b'\r') {
                    return None;
                }
            }
            _ => break,
        }
    }
    (at(i) == b'\'').then_some(i)
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    lex: Lex,
    /// Inside a MySQL executable comment: the index of the `*/` that closes it.
    exec_end: Option<usize>,
}

impl<'a> Lexer<'a> {
    fn new(sql: &'a str, lex: Lex) -> Self {
        Lexer {
            s: sql.as_bytes(),
            pos: 0,
            lex,
            exec_end: None,
        }
    }

    fn at(&self, i: usize) -> u8 {
        self.s.get(i).copied().unwrap_or(0)
    }

    fn lenient(&self) -> bool {
        self.lex == Lex::Any
    }

    #[inline(always)]
    fn next_token(&mut self) -> Result<Token, LexError> {
        loop {
            if let Some(end) = self.exec_end {
                if self.pos == end {
                    self.pos += 2;
                    self.exec_end = None;
                    continue;
                }
                if self.pos > end {
                    return Err(LexError::AmbiguousExecComment);
                }
            }
            let Some(&b) = self.s.get(self.pos) else {
                return Ok(Token::new(Kind::End, self.pos, self.pos));
            };
            let start = self.pos;
            let next = self.at(start + 1);
            match b {
                b if is_space(b) => {
                    self.pos += 1;
                    while is_space(self.at(self.pos)) {
                        self.pos += 1;
                    }
                }
                // SQLite skips a byte-order mark where a token starts.
                0xEF if self.lex == Lex::Lite && next == 0xBB && self.at(start + 2) == 0xBF => {
                    self.pos += 3
                }
                b'-' if next == b'-' && self.dash_comment(start) => self.line_comment(start + 2)?,
                b'#' if matches!(self.lex, Lex::My | Lex::Any) => self.line_comment(start + 1)?,
                b'/' if next == b'*' => self.block_comment(start)?,
                _ => {
                    let token = self.token(start, b)?;
                    if let Some(end) = self.exec_end {
                        if token.end() > end {
                            // A literal spanning the `*/`: a comment on one server, code on another.
                            return Err(LexError::AmbiguousExecComment);
                        }
                    }
                    self.pos = token.end();
                    return Ok(token);
                }
            }
        }
    }

    /// Whether `--` at `start` opens a comment (MySQL wants whitespace or a control character
    /// after it: `1--1` is one minus minus one).
    fn dash_comment(&self, start: usize) -> bool {
        if self.lex != Lex::My {
            return true;
        }
        match self.s.get(start + 2) {
            None => true,
            Some(&c) => c <= b' ' || c == 0x7f,
        }
    }

    fn line_comment(&mut self, from: usize) -> Result<(), LexError> {
        let mut i = from;
        while let Some(&c) = self.s.get(i) {
            if c == b'\n' || (c == b'\r' && self.lex == Lex::Pg) {
                break;
            }
            i += 1;
        }
        if let Some(end) = self.exec_end {
            if i > end {
                return Err(LexError::AmbiguousExecComment);
            }
        }
        self.pos = i;
        Ok(())
    }

    fn block_comment(&mut self, start: usize) -> Result<(), LexError> {
        match self.lex {
            Lex::Pg => {
                // Nested: `/* /* */ still a comment */`.
                let mut depth = 1u32;
                let mut i = start + 2;
                while i < self.s.len() {
                    match (self.at(i), self.at(i + 1)) {
                        (b'/', b'*') => {
                            depth += 1;
                            i += 2;
                        }
                        (b'*', b'/') => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                self.pos = i;
                                return Ok(());
                            }
                        }
                        _ => i += 1,
                    }
                }
                Err(LexError::UnterminatedComment)
            }
            Lex::My => {
                if self.exec_end.is_some() {
                    return Err(LexError::CommentInExecComment);
                }
                let close = find(self.s, b"*/", start + 2).ok_or(LexError::UnterminatedComment)?;
                let c2 = self.at(start + 2);
                let body = if c2 == b'!' {
                    Some(start + 3)
                } else if (c2 == b'M' || c2 == b'm') && self.at(start + 3) == b'!' {
                    Some(start + 4)
                } else {
                    None
                };
                match body {
                    Some(mut i) => {
                        // `/*!50700 …*/`, `/*M!100100 …*/`: the version, then code.
                        let mut digits = 0;
                        while digits < 6 && self.at(i).is_ascii_digit() {
                            i += 1;
                            digits += 1;
                        }
                        self.exec_end = Some(close);
                        self.pos = i;
                    }
                    None => self.pos = close + 2,
                }
                Ok(())
            }
            Lex::Lite => {
                let close = find(self.s, b"*/", start + 2).ok_or(LexError::UnterminatedComment)?;
                self.pos = close + 2;
                Ok(())
            }
            Lex::Any => {
                self.pos = find(self.s, b"*/", start + 2).map_or(self.s.len(), |c| c + 2);
                Ok(())
            }
        }
    }

    #[inline(always)]
    fn token(&self, start: usize, b: u8) -> Result<Token, LexError> {
        let next = self.at(start + 1);
        match b {
            b if is_ident_start(b) => self.word(start, b),
            b'\'' => match self.lex {
                Lex::Pg | Lex::My => self.string_either_way(start, start, b'\''),
                Lex::Lite => self.simple_quoted(start, start, b'\'', false, Kind::Str),
                Lex::Any => self.simple_quoted(start, start, b'\'', true, Kind::Str),
            },
            b'"' => match self.lex {
                Lex::My => self.string_either_way(start, start, b'"'),
                _ => self.simple_quoted(start, start, b'"', false, Kind::QuotedIdent),
            },
            b'`' if self.lex != Lex::Pg => {
                self.simple_quoted(start, start, b'`', false, Kind::QuotedIdent)
            }
            b'[' if self.lex == Lex::Lite => match find(self.s, b"]", start + 1) {
                Some(c) => Ok(Token::quoted(Kind::QuotedIdent, start, c + 1, start + 1, c)),
                None => Err(LexError::UnterminatedIdent),
            },
            b'$' => match self.lex {
                Lex::Pg | Lex::Any => self.dollar(start),
                Lex::Lite => Ok(self.sqlite_variable(start)),
                Lex::My => Ok(Token::new(Kind::Other, start, start + 1)),
            },
            b'?' => {
                let mut i = start + 1;
                while self.at(i).is_ascii_digit() {
                    i += 1;
                }
                Ok(Token::new(Kind::Param, start, i))
            }
            b':' | b'@' | b'#' if self.lex == Lex::Lite => Ok(self.sqlite_variable(start)),
            b':' if self.lex == Lex::My && next == b'=' => {
                Ok(Token::new(Kind::ColonEq, start, start + 2))
            }
            b'0'..=b'9' => {
                // Digits only: whatever follows (`1e5`, `0x1f`, `1DELETE`) is lexed on its own,
                // which shows at worst one word too many.
                let mut i = start + 1;
                while self.at(i).is_ascii_digit() {
                    i += 1;
                }
                Ok(Token::new(Kind::Number, start, i))
            }
            _ => Ok(Token::new(punct(b), start, start + 1)),
        }
    }

    #[inline(always)]
    fn word(&self, start: usize, b: u8) -> Result<Token, LexError> {
        let mut i = start + 1;
        let mut ascii = b < 0x80;
        loop {
            let c = self.at(i);
            if !is_ident_cont(c) {
                break;
            }
            ascii &= c < 0x80;
            i += 1;
        }
        if self.lex == Lex::Pg && i == start + 1 {
            match (b.to_ascii_lowercase(), self.at(i)) {
                (b'e', b'\'') => return self.e_string(start, i),
                (b'b' | b'x', b'\'') => {
                    return self.simple_quoted(start, i, b'\'', false, Kind::Str);
                }
                (b'u', b'&') if matches!(self.at(i + 1), b'\'' | b'"') => {
                    return Err(LexError::UnicodeEscape);
                }
                _ => {}
            }
        }
        let mut token = Token::new(Kind::Word, start, i);
        token.kw = if ascii {
            kw_of(self.s.get(start..i).unwrap_or(&[]))
        } else {
            Kw::Mixed
        };
        Ok(token)
    }

    /// A literal with doubled-quote escapes (and backslash escapes if `backslash`).
    #[inline(always)]
    fn simple_quoted(
        &self,
        start: usize,
        open: usize,
        q: u8,
        backslash: bool,
        kind: Kind,
    ) -> Result<Token, LexError> {
        match closing_quote(self.s, open, q, backslash) {
            Some(c) => Ok(Token::quoted(kind, start, c + 1, open + 1, c)),
            None if self.lenient() => Ok(Token::quoted(
                kind,
                start,
                self.s.len(),
                open + 1,
                self.s.len(),
            )),
            None if kind == Kind::QuotedIdent => Err(LexError::UnterminatedIdent),
            None => Err(LexError::UnterminatedString),
        }
    }

    fn string_either_way(&self, start: usize, open: usize, q: u8) -> Result<Token, LexError> {
        let c = closing_quote_either_way(self.s, open, q)?;
        Ok(Token::quoted(Kind::Str, start, c + 1, open + 1, c))
    }

    /// PostgreSQL `E'…'`: backslash escapes always, continuation segments too.
    fn e_string(&self, start: usize, open: usize) -> Result<Token, LexError> {
        let mut i = open + 1;
        loop {
            match self.s.get(i) {
                None => return Err(LexError::UnterminatedString),
                Some(b'\\') => i += 2,
                Some(b'\'') if self.at(i + 1) == b'\'' => i += 2,
                Some(b'\'') => match pg_continuation(self.s, i + 1) {
                    Some(q) => i = q + 1,
                    None => return Ok(Token::quoted(Kind::Str, start, i + 1, open + 1, i)),
                },
                Some(_) => i += 1,
            }
        }
    }

    /// `$1` (parameter), `$$…$$` and `$tag$…$tag$` (dollar quotes), or a lone `$`.
    fn dollar(&self, start: usize) -> Result<Token, LexError> {
        let next = self.at(start + 1);
        if next.is_ascii_digit() {
            let mut i = start + 2;
            while self.at(i).is_ascii_digit() {
                i += 1;
            }
            return Ok(Token::new(Kind::Param, start, i));
        }
        let mut i = start + 1;
        if is_ident_start(next) {
            i += 1;
            while is_tag_cont(self.at(i)) {
                i += 1;
            }
        }
        if self.at(i) != b'$' {
            return Ok(Token::new(Kind::Other, start, start + 1));
        }
        if i - start > 64 && !self.lenient() {
            // Keeps the search for the closing tag linear in practice.
            return Err(LexError::LongDollarTag);
        }
        let delimiter = self.s.get(start..=i).unwrap_or(&[]);
        match find(self.s, delimiter, i + 1) {
            Some(c) => Ok(Token::quoted(
                Kind::Str,
                start,
                c + delimiter.len(),
                i + 1,
                c,
            )),
            None if self.lenient() => Ok(Token::new(Kind::Other, start, start + 1)),
            None => Err(LexError::UnterminatedDollar),
        }
    }

    /// SQLite `$name`, `:name`, `@name`, `#name`, with TCL-style `::` and a `(…)` suffix.
    fn sqlite_variable(&self, start: usize) -> Token {
        let mut i = start + 1;
        let mut n = 0;
        loop {
            let c = self.at(i);
            if is_ident_cont(c) {
                n += 1;
                i += 1;
            } else if c == b'(' && n > 0 {
                i += 1;
                while i < self.s.len() && !is_space(self.at(i)) && self.at(i) != b')' {
                    i += 1;
                }
                if self.at(i) == b')' {
                    i += 1;
                }
                break;
            } else if c == b':' && self.at(i + 1) == b':' {
                i += 2;
            } else {
                break;
            }
        }
        if n == 0 {
            Token::new(Kind::Other, start, start + 1)
        } else {
            Token::new(Kind::Param, start, i)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checker
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the leading keyword; `true` once a `(` was seen.
    Start(bool),
    Body,
    Explain(&'static str, Explain),
    /// MySQL `DESCRIBE table …`: what came after the table name.
    Describe(Describe),
    Pragma(Pragma),
    /// After a `;`.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Explain {
    /// Options may follow; `true` right after the keyword (where PostgreSQL takes `(…)`).
    Options(bool),
    /// Inside PostgreSQL's `( … )` options, at this depth.
    List(u32),
    FormatEq,
    FormatValue,
    /// The explained statement's first token; `true` once a `(` was seen.
    Target(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Describe {
    Table,
    Dot,
    QualifiedTable,
    Column,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pragma {
    Name,
    /// `PRAGMA name` or `PRAGMA schema.name`; the flag says whether a `.` may still come.
    AfterName(usize, usize, bool),
    Schema,
    Arg(usize, usize),
    Sign(usize, usize),
    ArgEnd(usize, usize),
    End,
}

struct Checker<'a> {
    s: &'a [u8],
    dialect: Dialect,
    phase: Phase,
    prev: Option<Token>,
    prev2: Option<Token>,
    /// Whether `prev` was a word qualified by a `.` (`t.update`).
    prev_qualified: bool,
}

impl<'a> Checker<'a> {
    fn new(s: &'a [u8], dialect: Dialect) -> Self {
        Checker {
            s,
            dialect,
            phase: Phase::Start(false),
            prev: None,
            prev2: None,
            prev_qualified: false,
        }
    }

    fn text(&self, t: &Token) -> &'a [u8] {
        t.text(self.s)
    }

    /// The keyword the previous token is, if a word.
    fn prev_kw(&self) -> Kw {
        self.prev.map_or(Kw::None, |p| p.kw)
    }

    #[inline(always)]
    fn feed(&mut self, t: Token) -> Result<(), Refusal> {
        if matches!(self.phase, Phase::Done) {
            if t.is_punct(b';') {
                return Ok(());
            }
            return Err(refuse("multiple statements", HINT_MULTI));
        }
        self.pending(Some(&t))?;
        let qualified = self.general(&t)?;
        if t.is_punct(b';') {
            self.finalize()?;
            self.phase = Phase::Done;
        } else {
            self.step(&t)?;
        }
        self.prev2 = self.prev;
        self.prev = Some(t);
        self.prev_qualified = qualified;
        Ok(())
    }

    fn finish(self) -> Result<(), Refusal> {
        self.pending(None)?;
        if !matches!(self.phase, Phase::Done) {
            self.finalize()?;
        }
        Ok(())
    }

    /// Rules about the previous token that need the next one: calls, `REPLACE`, `NEXTVAL`.
    #[inline(always)]
    fn pending(&self, next: Option<&Token>) -> Result<(), Refusal> {
        let Some(p) = self.prev else {
            return Ok(());
        };
        let call = next.is_some_and(|t| t.is_punct(b'('));
        let name = self.text(&p);
        match p.kind {
            Kind::Word if call => {
                if p.kw == Kw::Mixed {
                    for seg in segments(name) {
                        self.function(seg)?;
                    }
                    Ok(())
                } else {
                    self.function(name)
                }
            }
            Kind::Word if p.kw == Kw::Mixed => {
                for seg in segments(name) {
                    self.not_called(kw_of(seg))?;
                }
                Ok(())
            }
            Kind::Word => self.not_called(p.kw),
            Kind::QuotedIdent | Kind::Str if call => self.function(name),
            _ => Ok(()),
        }
    }

    fn function(&self, name: &[u8]) -> Result<(), Refusal> {
        match denied_function(name, self.dialect) {
            Some(hint) => Err(refuse(
                format!("{}()", shown(name, false).to_ascii_lowercase()),
                hint,
            )),
            None => Ok(()),
        }
    }

    /// A word that is not followed by `(`.
    fn not_called(&self, kw: Kw) -> Result<(), Refusal> {
        match kw {
            // `REPLACE INTO`, `REPLACE t SELECT`; `replace(…)` is a function.
            Kw::Replace if !self.prev_qualified => Err(refuse("REPLACE", HINT_WRITE)),
            // MariaDB `seq.nextval` (Oracle mode).
            Kw::Nextval if self.dialect == Dialect::MySql => Err(refuse("NEXTVAL", HINT_WRITE)),
            _ => Ok(()),
        }
    }

    /// Rules that hold anywhere in the statement. Returns whether `t` is a qualified word.
    #[inline(always)]
    fn general(&self, t: &Token) -> Result<bool, Refusal> {
        match t.kind {
            Kind::ColonEq => Err(refuse(":=", HINT_USER_VAR)),
            Kind::Word => {
                let qualified = self.prev.is_some_and(|p| p.is_punct(b'.'))
                    && self
                        .prev2
                        .is_some_and(|p| matches!(p.kind, Kind::Word | Kind::QuotedIdent));
                if qualified {
                    return Ok(true);
                }
                if t.kw == Kw::Mixed {
                    for seg in segments(self.text(t)) {
                        self.keyword(kw_of(seg))?;
                    }
                } else {
                    self.keyword(t.kw)?;
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// An unqualified keyword anywhere in the statement.
    fn keyword(&self, kw: Kw) -> Result<(), Refusal> {
        let prev = self.prev_kw();
        let what = match kw {
            Kw::Update if matches!(prev, Kw::For | Kw::Key) => "FOR UPDATE",
            // MySQL `SHOW CREATE TABLE t` reads.
            Kw::Create
                if self.dialect == Dialect::MySql && prev == Kw::Show && self.prev2.is_none() =>
            {
                return Ok(());
            }
            Kw::Into => "SELECT … INTO",
            Kw::Share if matches!(prev, Kw::For | Kw::Key) => "FOR SHARE",
            Kw::Share if prev == Kw::In => "LOCK IN SHARE MODE",
            Kw::Value if prev == Kw::Next => "NEXT VALUE FOR",
            _ => match kw.write_name() {
                Some(name) => name,
                None => return Ok(()),
            },
        };
        Err(refuse(what, HINT_WRITE))
    }

    fn refuse_leader(&self, t: &Token) -> Refusal {
        match t.kind {
            Kind::Word => refuse(shown(self.text(t), true), leader_hint(self.text(t))),
            _ => refuse(shown(t.whole(self.s), false), HINT_WRITE),
        }
    }

    fn is_query_leader(&self, kw: Kw) -> bool {
        match kw {
            Kw::Select | Kw::With | Kw::Values => true,
            Kw::Table => self.dialect == Dialect::Postgres,
            _ => false,
        }
    }

    /// The statement-shape rules.
    #[inline(always)]
    fn step(&mut self, t: &Token) -> Result<(), Refusal> {
        let dialect = self.dialect;
        match self.phase {
            Phase::Start(parens) => {
                if t.is_punct(b'(') {
                    self.phase = Phase::Start(true);
                    return Ok(());
                }
                if t.kind != Kind::Word {
                    return Err(self.refuse_leader(t));
                }
                self.phase = match t.kw {
                    kw if self.is_query_leader(kw) => Phase::Body,
                    _ if parens => return Err(self.refuse_leader(t)),
                    Kw::Show if dialect != Dialect::Sqlite => Phase::Body,
                    Kw::Explain => Phase::Explain("EXPLAIN", Explain::Options(true)),
                    Kw::Describe if dialect == Dialect::MySql => {
                        Phase::Explain("DESCRIBE", Explain::Options(true))
                    }
                    Kw::Desc if dialect == Dialect::MySql => {
                        Phase::Explain("DESC", Explain::Options(true))
                    }
                    Kw::Pragma if dialect == Dialect::Sqlite => Phase::Pragma(Pragma::Name),
                    _ => return Err(self.refuse_leader(t)),
                };
                Ok(())
            }
            Phase::Body | Phase::Done => Ok(()),
            Phase::Explain(lead, stage) => self.explain(lead, stage, t),
            Phase::Describe(stage) => {
                let name = matches!(t.kind, Kind::Word | Kind::QuotedIdent);
                let column = name || t.kind == Kind::Str;
                self.phase = Phase::Describe(match stage {
                    Describe::Table if t.is_punct(b'.') => Describe::Dot,
                    Describe::Dot if name => Describe::QualifiedTable,
                    Describe::Table | Describe::QualifiedTable if column => Describe::Column,
                    _ => return Err(refuse("DESCRIBE", HINT_EXPLAIN)),
                });
                Ok(())
            }
            Phase::Pragma(stage) => self.pragma(stage, t),
        }
    }

    fn explain(&mut self, lead: &'static str, stage: Explain, t: &Token) -> Result<(), Refusal> {
        let dialect = self.dialect;
        let word = t.kind == Kind::Word;
        let next = match stage {
            Explain::Options(first) => {
                let flag = word
                    && match dialect {
                        Dialect::Postgres => {
                            matches!(t.kw, Kw::Analyze | Kw::Analyse | Kw::Verbose)
                        }
                        Dialect::MySql => {
                            matches!(t.kw, Kw::Analyze | Kw::Extended | Kw::Partitions)
                        }
                        Dialect::Sqlite => matches!(t.kw, Kw::Query | Kw::Plan),
                    };
                if first && dialect == Dialect::Postgres && t.is_punct(b'(') {
                    Explain::List(1)
                } else if flag {
                    Explain::Options(false)
                } else if dialect == Dialect::MySql && t.kw == Kw::Format {
                    Explain::FormatEq
                } else if dialect == Dialect::MySql && t.kw == Kw::For {
                    // `EXPLAIN FOR CONNECTION n`
                    self.phase = Phase::Body;
                    return Ok(());
                } else {
                    return self.explain(lead, Explain::Target(false), t);
                }
            }
            Explain::List(depth) => {
                if t.is_punct(b'(') {
                    Explain::List(depth + 1)
                } else if t.is_punct(b')') {
                    if depth <= 1 {
                        Explain::Options(false)
                    } else {
                        Explain::List(depth - 1)
                    }
                } else {
                    Explain::List(depth)
                }
            }
            Explain::FormatEq if t.is_punct(b'=') => Explain::FormatValue,
            Explain::FormatValue
                if matches!(t.kind, Kind::Word | Kind::Str | Kind::QuotedIdent) =>
            {
                Explain::Options(false)
            }
            Explain::FormatEq | Explain::FormatValue => {
                return Err(refuse(lead, HINT_EXPLAIN));
            }
            Explain::Target(parens) => {
                if t.is_punct(b'(') {
                    Explain::Target(true)
                } else if word && self.is_query_leader(t.kw) {
                    self.phase = Phase::Body;
                    return Ok(());
                } else if dialect == Dialect::MySql
                    && !parens
                    && matches!(t.kind, Kind::Word | Kind::QuotedIdent | Kind::Str)
                {
                    // `DESCRIBE tbl [col]`
                    self.phase = Phase::Describe(Describe::Table);
                    return Ok(());
                } else {
                    return Err(match t.kind {
                        Kind::Word => self.refuse_leader(t),
                        _ => refuse(lead, HINT_EXPLAIN),
                    });
                }
            }
        };
        self.phase = Phase::Explain(lead, next);
        Ok(())
    }

    fn pragma(&mut self, stage: Pragma, t: &Token) -> Result<(), Refusal> {
        let name = matches!(t.kind, Kind::Word | Kind::QuotedIdent);
        let next = match stage {
            Pragma::Name if name => {
                let (a, b) = t.text_range();
                Pragma::AfterName(a, b, true)
            }
            Pragma::Name => return Err(refuse("PRAGMA", HINT_PRAGMA)),
            Pragma::AfterName(_, _, true) if t.is_punct(b'.') => Pragma::Schema,
            Pragma::Schema if name => {
                let (a, b) = t.text_range();
                Pragma::AfterName(a, b, false)
            }
            Pragma::Schema => return Err(refuse("PRAGMA", HINT_PRAGMA)),
            Pragma::AfterName(a, b, _) if t.is_punct(b'(') => Pragma::Arg(a, b),
            Pragma::Arg(a, b) if t.is_punct(b'-') || t.is_punct(b'+') => Pragma::Sign(a, b),
            Pragma::Arg(a, b)
                if matches!(
                    t.kind,
                    Kind::Word | Kind::QuotedIdent | Kind::Str | Kind::Number
                ) =>
            {
                Pragma::ArgEnd(a, b)
            }
            Pragma::Sign(a, b) if t.kind == Kind::Number => Pragma::ArgEnd(a, b),
            Pragma::ArgEnd(a, b) if t.is_punct(b')') => {
                if !pragma_allowed(self.pragma_name(a, b), true) {
                    return Err(self.refuse_pragma(a, b));
                }
                Pragma::End
            }
            Pragma::AfterName(a, b, _)
            | Pragma::Arg(a, b)
            | Pragma::Sign(a, b)
            | Pragma::ArgEnd(a, b) => return Err(self.refuse_pragma(a, b)),
            Pragma::End => return Err(refuse("PRAGMA", HINT_PRAGMA)),
        };
        self.phase = Phase::Pragma(next);
        Ok(())
    }

    fn pragma_name(&self, a: usize, b: usize) -> &'a [u8] {
        self.s.get(a..b).unwrap_or(&[])
    }

    fn refuse_pragma(&self, a: usize, b: usize) -> Refusal {
        let name = shown(self.pragma_name(a, b), false).to_ascii_lowercase();
        refuse(format!("PRAGMA {name}"), HINT_PRAGMA)
    }

    /// End of the statement (`;` or end of input): is its shape complete?
    fn finalize(&self) -> Result<(), Refusal> {
        match self.phase {
            Phase::Start(_) | Phase::Body | Phase::Done | Phase::Describe(_) => Ok(()),
            Phase::Explain(lead, _) => Err(refuse(lead, HINT_EXPLAIN)),
            Phase::Pragma(Pragma::AfterName(a, b, _)) => {
                if pragma_allowed(self.pragma_name(a, b), false) {
                    Ok(())
                } else {
                    Err(self.refuse_pragma(a, b))
                }
            }
            Phase::Pragma(Pragma::End) => Ok(()),
            Phase::Pragma(Pragma::Name | Pragma::Schema) => Err(refuse("PRAGMA", HINT_PRAGMA)),
            Phase::Pragma(Pragma::Arg(a, b) | Pragma::Sign(a, b) | Pragma::ArgEnd(a, b)) => {
                Err(self.refuse_pragma(a, b))
            }
        }
    }
}

/// True when `sql`, run in a read-write unit, may leave session state that the
/// transaction's closing message does not undo (see
/// [`Dialect::session_reset_sql`](crate::backend::Dialect::session_reset_sql)): the unit's
/// connection is then closed instead of pooled. Every statement of a multi-statement string
/// counts. A hint from the text (a function the statement calls may do more: state set inside
/// a stored routine is not seen), erring towards closing; text it cannot read counts too.
pub(crate) fn may_leave_session_state(sql: &str, backend: sea_orm::DbBackend) -> bool {
    let mysql = backend == sea_orm::DbBackend::MySql;
    let lex = match backend {
        sea_orm::DbBackend::Postgres => Lex::Pg,
        sea_orm::DbBackend::MySql => Lex::My,
        _ => Lex::Lite,
    };
    if mysql && (user_variable(sql) || calls_unknown_function(sql, backend)) {
        return true;
    }
    let bytes = sql.as_bytes();
    let mut lexer = Lexer::new(sql, lex);
    let mut leading = true;
    let mut previous: Option<&[u8]> = None;
    loop {
        let token = match lexer.next_token() {
            Ok(t) if t.kind == Kind::End => return false,
            Ok(t) => t,
            Err(_) => return true,
        };
        match token.kind {
            Kind::Semicolon => {
                leading = true;
                previous = None;
                continue;
            }
            Kind::ColonEq => return true,
            Kind::Word => {}
            _ => {
                leading = false;
                previous = None;
                continue;
            }
        }
        let word = token.text(bytes);
        let any = |list: &[&str]| list.iter().any(|k| is(word, k));
        if leading {
            // effects that outlive the transaction and that no reset undoes (or hide more)
            if any(&["PREPARE", "DEALLOCATE", "DISCARD", "LOAD", "DO", "CALL"])
                || (mysql && any(&["SET", "EXECUTE", "LOCK", "UNLOCK", "USE", "HANDLER"]))
            {
                return true;
            }
        }
        if previous.is_some_and(|p| is(p, "CREATE")) && mysql && any(&["TEMPORARY"]) {
            return true;
        }
        // functions whose effect is session state: the random seed; MariaDB's
        // LAST_INSERT_ID(expr) and sequence functions (LASTVAL afterwards)
        if any(&["setseed"])
            || (mysql && any(&["last_insert_id", "nextval", "lastval", "setval", "NEXT"]))
        {
            return true;
        }
        leading = false;
        previous = Some(word);
    }
}

/// Words that are followed by `(` as SQL syntax, not as a function call.
const SYNTAX_BEFORE_PAREN: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "between",
    "by",
    "case",
    "cast",
    "convert",
    "cube",
    "distinct",
    "else",
    "end",
    "except",
    "exists",
    "filter",
    "from",
    "grouping",
    "having",
    "in",
    "intersect",
    "interval",
    "is",
    "join",
    "lateral",
    "like",
    "limit",
    "not",
    "offset",
    "on",
    "or",
    "over",
    "partition",
    "recursive",
    "rollup",
    "row",
    "select",
    "sets",
    "some",
    "then",
    "union",
    "using",
    "values",
    "when",
    "where",
    "window",
    "with",
    "within",
    "materialized",
    "table",
    "returning",
    "explain",
    "analyze",
    "verbose",
    "format",
    "key",
    "share",
    "update",
    "for",
    "overlay",
    "position",
    "substring",
    "trim",
    "extract",
    "rows",
    "range",
    "groups",
];

/// Built-in functions that read and compute only: calling them leaves no session state.
const PURE_FUNCTIONS: &[&str] = &[
    "abs",
    "age",
    "array_agg",
    "array_length",
    "avg",
    "bit_length",
    "bool_and",
    "bool_or",
    "btrim",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "coalesce",
    "concat",
    "concat_ws",
    "count",
    "cume_dist",
    "curdate",
    "current_date",
    "current_setting",
    "current_time",
    "current_timestamp",
    "curtime",
    "date",
    "date_add",
    "date_format",
    "date_part",
    "date_sub",
    "date_trunc",
    "datediff",
    "datetime",
    "day",
    "dense_rank",
    "exp",
    "extract",
    "first_value",
    "floor",
    "format",
    "from_unixtime",
    "generate_series",
    "greatest",
    "group_concat",
    "hex",
    "hour",
    "if",
    "ifnull",
    "iif",
    "inet_server_port",
    "initcap",
    "instr",
    "isnull",
    "json_agg",
    "json_array",
    "json_build_array",
    "json_build_object",
    "json_extract",
    "json_object",
    "json_unquote",
    "jsonb_agg",
    "jsonb_build_array",
    "jsonb_build_object",
    "julianday",
    "lag",
    "last_value",
    "lead",
    "least",
    "left",
    "length",
    "ln",
    "localtime",
    "localtimestamp",
    "log",
    "lower",
    "lpad",
    "ltrim",
    "make_date",
    "master_gtid_wait",
    "master_pos_wait",
    "max",
    "md5",
    "min",
    "minute",
    "mod",
    "month",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "octet_length",
    "percent_rank",
    "pg_backend_pid",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_lsn",
    "pg_is_in_recovery",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_sleep",
    "pg_walfile_name",
    "position",
    "power",
    "printf",
    "quote",
    "random",
    "rank",
    "regexp_replace",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_number",
    "rpad",
    "rtrim",
    "second",
    "sign",
    "sleep",
    "split_part",
    "sqrt",
    "str_to_date",
    "strftime",
    "string_agg",
    "strpos",
    "substr",
    "substring",
    "sum",
    "timestamp",
    "to_char",
    "to_date",
    "to_number",
    "to_timestamp",
    "total",
    "trim",
    "trunc",
    "typeof",
    "unix_timestamp",
    "unnest",
    "upper",
    "uuid",
    "version",
    "year",
];

/// True when `sql` calls a function that is not a known pure built-in: a user-defined
/// function or routine, which may set session state the text cannot show (a `search_path`,
/// a lock, a MariaDB user variable). Quoted names count; text it cannot read counts too.
pub(crate) fn calls_unknown_function(sql: &str, backend: sea_orm::DbBackend) -> bool {
    let lex = match backend {
        sea_orm::DbBackend::Postgres => Lex::Pg,
        sea_orm::DbBackend::MySql => Lex::My,
        _ => Lex::Lite,
    };
    let bytes = sql.as_bytes();
    let mut lexer = Lexer::new(sql, lex);
    let mut previous: Option<Token> = None;
    loop {
        let token = match lexer.next_token() {
            Ok(t) if t.kind == Kind::End => return false,
            Ok(t) => t,
            Err(_) => return true,
        };
        if unknown_call(previous, token, bytes) {
            return true;
        }
        previous = Some(token);
    }
}

/// True when `token` is the `(` of a call to a routine that is not a known built-in.
fn unknown_call(previous: Option<Token>, token: Token, bytes: &[u8]) -> bool {
    if token.kind != Kind::LParen {
        return false;
    }
    match previous {
        Some(name) if name.kind == Kind::QuotedIdent => true,
        Some(name) if name.kind == Kind::Word => {
            let word = name.text(bytes);
            let known = |list: &[&str]| list.iter().any(|k| is(word, k));
            !known(SYNTAX_BEFORE_PAREN) && !known(PURE_FUNCTIONS)
        }
        _ => false,
    }
}

/// True when MySQL text names a user variable (`@v`, `@'v'`, ``@`v` ``), not a system one
/// (`@@v`): reading one is harmless, but setting one (in `SET`, `SELECT … INTO`, `:=`, or a
/// routine) is session state. Erring towards true: an `@` inside a literal counts too.
fn user_variable(sql: &str) -> bool {
    let b = sql.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        c == b'@'
            && (i == 0 || b[i - 1] != b'@')
            && b.get(i + 1).is_some_and(|n| {
                *n != b'@'
                    && (n.is_ascii_alphanumeric() || matches!(n, b'_' | b'$' | b'`' | b'\'' | b'"'))
            })
    })
}

#[cfg(test)]
mod tests;
