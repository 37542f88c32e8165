//! What an SQLite read-only session may do, enforced by the engine.
//!
//! A read-only file connection (`SQLITE_OPEN_READONLY` + `query_only`) cannot change its
//! database, but an in-memory one, `ATTACH` of another file and many `PRAGMA`s are not covered
//! by those flags. Every read-only SQLite connection therefore gets an **authorizer**
//! ([`install`]): SQLite asks it about every action of a statement while preparing it, and it
//! allows only reading (`SELECT`, reading columns, transactions and savepoints, functions that
//! are not on [`DENIED_FUNCTIONS`], and the pragmas of [`PRAGMA_READS`] and, without an
//! argument, [`PRAGMA_SETTINGS`]). Everything else fails to prepare with "not authorized",
//! whatever the SQL text looks like. The lexer shares these lists for its early error.

use std::ffi::{c_char, c_int, c_void, CStr};

use libsqlite3_sys as ffi;

/// Pragmas that only read, with or without an argument.
pub(crate) const PRAGMA_READS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "database_list",
    "collation_list",
    "function_list",
    "module_list",
    "pragma_list",
    "compile_options",
    "integrity_check",
    "quick_check",
    "page_count",
    "freelist_count",
    "data_version",
];

/// Setting pragmas: reading them (no argument, no `=`) is fine, setting them is not.
pub(crate) const PRAGMA_SETTINGS: &[&str] = &[
    "user_version",
    "schema_version",
    "application_id",
    "journal_mode",
    "journal_size_limit",
    "page_size",
    "cache_size",
    "cache_spill",
    "encoding",
    "query_only",
    "busy_timeout",
    "foreign_keys",
    "synchronous",
    "auto_vacuum",
    "temp_store",
    "mmap_size",
    "locking_mode",
    "recursive_triggers",
    "secure_delete",
    "wal_autocheckpoint",
    "max_page_count",
    "analysis_limit",
    "cell_size_check",
    "checkpoint_fullfsync",
    "fullfsync",
    "defer_foreign_keys",
    "ignore_check_constraints",
    "legacy_alter_table",
    "reverse_unordered_selects",
    "trusted_schema",
    "automatic_index",
    "case_sensitive_like",
    "soft_heap_limit",
    "hard_heap_limit",
    "threads",
];

/// Functions that reach outside the database (files, extensions, tokenizer pointers).
pub(crate) const DENIED_FUNCTIONS: &[&str] = &[
    "load_extension",
    "writefile",
    "readfile",
    "edit",
    "fts3_tokenizer",
    "fsdir",
];

/// Whether `name` is on `list`, ignoring ASCII case.
fn listed(list: &[&str], name: &[u8]) -> bool {
    list.iter().any(|p| p.as_bytes().eq_ignore_ascii_case(name))
}

/// May a read-only session run this pragma (`argument`: its value or argument, if any)?
pub(crate) fn pragma_allowed(name: &[u8], has_argument: bool) -> bool {
    listed(PRAGMA_READS, name) || (!has_argument && listed(PRAGMA_SETTINGS, name))
}

/// May a read-only session call this function?
pub(crate) fn function_allowed(name: &[u8]) -> bool {
    !listed(DENIED_FUNCTIONS, name)
}

/// The decision for one action (`arg1`/`arg2` as SQLite passes them).
fn decide(action: c_int, arg1: Option<&[u8]>, arg2: Option<&[u8]>) -> c_int {
    let allowed = match action {
        ffi::SQLITE_SELECT
        | ffi::SQLITE_READ
        | ffi::SQLITE_TRANSACTION
        | ffi::SQLITE_SAVEPOINT
        | ffi::SQLITE_RECURSIVE => true,
        ffi::SQLITE_FUNCTION => arg2.is_some_and(function_allowed),
        ffi::SQLITE_PRAGMA => arg1.is_some_and(|name| pragma_allowed(name, arg2.is_some())),
        // writes, schema changes (temporary ones too), ATTACH/DETACH, ANALYZE, REINDEX,
        // virtual tables, and any action a later SQLite adds
        _ => false,
    };
    if allowed {
        ffi::SQLITE_OK
    } else {
        ffi::SQLITE_DENY
    }
}

/// The authorizer callback.
extern "C" fn authorize(
    _data: *mut c_void,
    action: c_int,
    arg1: *const c_char,
    arg2: *const c_char,
    _database: *const c_char,
    _trigger: *const c_char,
) -> c_int {
    // SAFETY: SQLite passes either null or a NUL-terminated string that lives for the call.
    let text = |p: *const c_char| (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes());
    decide(action, text(arg1), text(arg2))
}

/// Installs the read-only authorizer on an open connection. Every statement prepared on it
/// afterwards is checked (statements already prepared are re-prepared by SQLite when the
/// authorizer changes).
///
/// # Safety
/// `db` must be a live connection handle, used by no other thread during the call.
pub(crate) unsafe fn install(db: *mut ffi::sqlite3) -> Result<(), String> {
    // SAFETY: the caller guarantees `db`; `authorize` needs no user data and never unwinds.
    let rc = unsafe { ffi::sqlite3_set_authorizer(db, Some(authorize), std::ptr::null_mut()) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("sqlite3_set_authorizer returned {rc}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pass_and_everything_else_is_denied() {
        let ok = ffi::SQLITE_OK;
        let deny = ffi::SQLITE_DENY;
        assert_eq!(decide(ffi::SQLITE_SELECT, None, None), ok);
        assert_eq!(decide(ffi::SQLITE_READ, Some(b"t"), Some(b"id")), ok);
        assert_eq!(decide(ffi::SQLITE_FUNCTION, None, Some(b"count")), ok);
        assert_eq!(decide(ffi::SQLITE_FUNCTION, None, Some(b"WriteFile")), deny);
        assert_eq!(
            decide(ffi::SQLITE_PRAGMA, Some(b"table_info"), Some(b"t")),
            ok
        );
        assert_eq!(decide(ffi::SQLITE_PRAGMA, Some(b"journal_mode"), None), ok);
        assert_eq!(
            decide(ffi::SQLITE_PRAGMA, Some(b"journal_mode"), Some(b"off")),
            deny
        );
        assert_eq!(
            decide(ffi::SQLITE_PRAGMA, Some(b"query_only"), Some(b"0")),
            deny
        );
        assert_eq!(decide(ffi::SQLITE_PRAGMA, Some(b"optimize"), None), deny);
        for action in [
            ffi::SQLITE_INSERT,
            ffi::SQLITE_UPDATE,
            ffi::SQLITE_DELETE,
            ffi::SQLITE_ATTACH,
            ffi::SQLITE_DETACH,
            ffi::SQLITE_CREATE_TEMP_TABLE,
            ffi::SQLITE_DROP_TABLE,
            ffi::SQLITE_ANALYZE,
            ffi::SQLITE_CREATE_VTABLE,
        ] {
            assert_eq!(decide(action, Some(b"t"), None), deny, "action {action}");
        }
    }
}
