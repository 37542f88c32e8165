//! Is a statement a read or a write?
//!
//! Read-only units and read-only scopes refuse writes *before* anything reaches a server. This
//! is not an SQL parser: it skips comments, string literals and quoted identifiers, looks at the
//! leading keyword and, for statements that may hide a write (`WITH … INSERT`, `EXPLAIN ANALYZE
//! DELETE`, `SELECT … FOR UPDATE`), at the keywords in the rest. It is deliberately cautious: the
//! server-side read-only session (a replica, or `READ ONLY` on the primary) remains the final guard
//! for writes no lexer can see, such as a function with side effects.

/// What a statement does, as far as routing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// Reads only: may run on a replica.
    Read,
    /// Writes, locks rows or changes schema; carries the keyword that made it one.
    Write(&'static str),
}

const READ_LEADERS: &[&str] = &[
    "SELECT", "WITH", "SHOW", "EXPLAIN", "VALUES", "TABLE", "DESCRIBE", "DESC",
];
const HIDDEN_WRITES: &[&str] = &["INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT"];
const KNOWN_WRITES: &[&str] = &[
    "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE", "UPSERT", "CREATE", "DROP", "ALTER",
    "TRUNCATE", "GRANT", "REVOKE", "COPY", "LOCK", "CALL", "DO", "VACUUM", "ANALYZE", "REINDEX",
    "CLUSTER", "COMMENT", "REFRESH", "PRAGMA", "LOAD", "RENAME", "ATTACH", "DETACH",
];

/// Classifies one SQL statement.
///
/// ```
/// use sea_orm_replica::unit::statement_kind::{classify, StatementKind};
/// assert_eq!(classify("SELECT * FROM banner WHERE id = $1"), StatementKind::Read);
/// assert_eq!(classify("INSERT INTO banner (name) VALUES ('x')"), StatementKind::Write("INSERT"));
/// assert_eq!(classify("WITH d AS (DELETE FROM banner RETURNING *) SELECT * FROM d"), StatementKind::Write("DELETE"));
/// assert_eq!(classify("SELECT * FROM banner FOR UPDATE"), StatementKind::Write("UPDATE"));
/// ```
pub fn classify(sql: &str) -> StatementKind {
    let mut words = Words::new(sql);
    let Some(first) = words.next() else {
        return StatementKind::Read;
    };
    let Some(leader) = READ_LEADERS.iter().find(|k| first.eq_ignore_ascii_case(k)) else {
        let keyword = KNOWN_WRITES
            .iter()
            .find(|k| first.eq_ignore_ascii_case(k))
            .copied()
            .unwrap_or("UNKNOWN");
        return StatementKind::Write(keyword);
    };
    let _ = leader;
    for word in words {
        if let Some(k) = HIDDEN_WRITES.iter().find(|k| word.eq_ignore_ascii_case(k)) {
            return StatementKind::Write(k);
        }
        if word.eq_ignore_ascii_case("SHARE") {
            // `FOR SHARE`, `FOR KEY SHARE`, `LOCK IN SHARE MODE`: row locks are writes to a replica.
            return StatementKind::Write("LOCK");
        }
    }
    StatementKind::Read
}

/// True when `sql`, run in a read-write unit, may leave session state that the
/// transaction's closing message does not undo (see
/// [`Dialect::session_reset_sql`](crate::backend::Dialect::session_reset_sql)): the unit's
/// connection is then closed instead of pooled. Errs towards closing.
pub(crate) fn may_leave_session_state(sql: &str, backend: sea_orm::DbBackend) -> bool {
    let mut words = Words::new(sql);
    let Some(first) = words.next() else {
        return false;
    };
    let is = |k: &str| first.eq_ignore_ascii_case(k);
    // statements whose effect outlives the transaction and that no reset undoes
    if is("PREPARE") || is("DEALLOCATE") || is("DISCARD") || is("LOAD") || is("DO") || is("CALL") {
        return true;
    }
    match backend {
        sea_orm::DbBackend::MySql => {
            is("SET")
                || is("EXECUTE")
                || is("LOCK")
                || is("UNLOCK")
                || is("USE")
                || is("HANDLER")
                || (is("CREATE")
                    && words
                        .next()
                        .is_some_and(|w| w.eq_ignore_ascii_case("TEMPORARY")))
                || sql.contains(":=")
                || sql.contains('@') && Words::new(sql).any(|w| w.eq_ignore_ascii_case("INTO"))
        }
        _ => false,
    }
}

/// Iterates over the bare words of a statement, skipping literals, quoted identifiers and comments.
struct Words<'a> {
    sql: &'a str,
    pos: usize,
}

impl<'a> Words<'a> {
    fn new(sql: &'a str) -> Self {
        Words { sql, pos: 0 }
    }

    fn skip_until(&mut self, end: &str) {
        match self.sql[self.pos..].find(end) {
            Some(i) => self.pos += i + end.len(),
            None => self.pos = self.sql.len(),
        }
    }

    fn skip_quoted(&mut self, quote: u8) {
        let bytes = self.sql.as_bytes();
        self.pos += 1;
        while self.pos < bytes.len() {
            let b = bytes[self.pos];
            self.pos += 1;
            if b == b'\\' && quote == b'\'' {
                self.pos += 1;
            } else if b == quote {
                if bytes.get(self.pos) == Some(&quote) {
                    self.pos += 1; // doubled quote inside the literal
                } else {
                    return;
                }
            }
        }
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.sql.as_bytes();
        while self.pos < bytes.len() {
            let b = bytes[self.pos];
            match b {
                b'-' if bytes.get(self.pos + 1) == Some(&b'-') => self.skip_until("\n"),
                b'#' => self.skip_until("\n"),
                b'/' if bytes.get(self.pos + 1) == Some(&b'*') => self.skip_until("*/"),
                b'\'' | b'"' | b'`' => self.skip_quoted(b),
                b'$' if bytes
                    .get(self.pos + 1)
                    .is_some_and(|c| *c == b'$' || c.is_ascii_alphabetic()) =>
                {
                    // PostgreSQL dollar quoting: $$…$$ or $tag$…$tag$; `$1` is a parameter.
                    let rest = &self.sql[self.pos + 1..];
                    match rest.find('$') {
                        Some(end)
                            if rest[..end]
                                .bytes()
                                .all(|c| c.is_ascii_alphanumeric() || c == b'_') =>
                        {
                            let tag = &self.sql[self.pos..self.pos + end + 2];
                            self.pos += tag.len();
                            self.skip_until(tag);
                        }
                        _ => self.pos += 1,
                    }
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let start = self.pos;
                    while self.pos < bytes.len()
                        && (bytes[self.pos].is_ascii_alphanumeric() || bytes[self.pos] == b'_')
                    {
                        self.pos += 1;
                    }
                    return Some(&self.sql[start..self.pos]);
                }
                _ => self.pos += 1,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads() {
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
    fn non_ascii_text_never_splits_a_character() {
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
    fn writes() {
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
}
