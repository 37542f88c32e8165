//! SQLite, the embedded default: one writer pool and a read-only reader pool on one WAL file.

#[macro_use]
mod common;

use common::sqlite;

every_backend_scenarios!(sqlite());
