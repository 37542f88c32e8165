#!/usr/bin/env bash
# The whole test suite, from a fresh clone: starts real replicated clusters on loopback
# (installing PostgreSQL / MariaDB when missing), then runs fmt, clippy -D warnings, unit,
# doc and integration tests, and the tour on SQLite and on the PostgreSQL cluster.
# Stops the clusters it started, pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "formatting"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "starting the test clusters"
scripts/cluster.sh start all
trap 'step "stopping the test clusters"; scripts/cluster.sh stop all || true' EXIT
# shellcheck disable=SC1091
source "${CLUSTER_DIR:-/tmp/sea-orm-replica-cluster}/env"
# every integration test must find its cluster: none may skip
export SOR_REQUIRE_CLUSTER=1

step "tests (unit, doc, integration on SQLite, PostgreSQL and MariaDB)"
cargo test --workspace --all-features

step "the tour on SQLite"
env -u DATABASE_URL -u DATABASE_REPLICA_URLS cargo run -q --example tour >/dev/null

step "the tour on the PostgreSQL cluster"
DATABASE_URL="$SOR_PG_PRIMARY_URL" DATABASE_REPLICA_URLS="$SOR_PG_REPLICA_URL,$SOR_PG_LAGGING_URL" \
  cargo run -q --example tour >/dev/null

step "all passed"
