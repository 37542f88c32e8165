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

step "docs (every public item documented, no broken links)"
RUSTDOCFLAGS="-D warnings" cargo doc -q --no-deps --workspace --all-features

step "starting the test clusters (two of each: shard b is for the sharding tests)"
SOR_SHARD_B=1 scripts/cluster.sh start all
trap 'step "stopping the test clusters"; scripts/cluster.sh stop all || true' EXIT
# shellcheck disable=SC1091
source "${CLUSTER_DIR:-/tmp/sea-orm-replica-cluster}/env"
# every integration test must find its cluster: none may skip
export SOR_REQUIRE_CLUSTER=1
# the fault-injection tests (tests/faults.rs) start clusters of their own and run a load
# for SOR_FAULT_SECS (default 10) around each fault
export SOR_FAULT_TESTS=1

step "a headless Chromium for the status page test (Debian's chromium, chromium-driver)"
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
fi

step "tests (unit, doc, integration on SQLite, PostgreSQL and MariaDB, fault injection)"
cargo test --workspace --all-features

step "the tour on SQLite"
env -u DATABASE_URL -u DATABASE_REPLICA_URLS cargo run -q --example tour >/dev/null

step "the tour on the PostgreSQL cluster, with the write-behind queue on the cluster's Redis"
DATABASE_URL="$SOR_PG_PRIMARY_URL" DATABASE_REPLICA_URLS="$SOR_PG_REPLICA_URL,$SOR_PG_LAGGING_URL" \
  REDIS_URL="$SOR_REDIS_URL" cargo run -q --features queue-redis --example tour >/dev/null

step "the banner service (SQLite), driven over HTTP with a cookie jar"
command -v curl >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq curl >/dev/null; }
cargo build -q --features axum,prometheus,queue-redis --example banner_service
jar=$(mktemp) && svc_log=$(mktemp) && svc_dir=$(mktemp -d)
# its own database file, so no earlier run's file is shared
env -u DATABASE_REPLICA_URLS DATABASE_URL="sqlite://$svc_dir/banners.sqlite?mode=rwc" \
  BIND_ADDR=127.0.0.1:38080 "${CARGO_TARGET_DIR:-target}/debug/examples/banner_service" >"$svc_log" 2>&1 &
svc=$!
svc_fail() { echo "$1"; kill "$svc" 2>/dev/null || true; cat "$svc_log"; exit 1; }
for _ in $(seq 1 300); do curl -s -o /dev/null http://127.0.0.1:38080/banners && break; sleep 0.1; done
id=$(curl -sf -c "$jar" -b "$jar" -H 'content-type: application/json' -d '{"name":"smoke"}' \
  http://127.0.0.1:38080/banners | sed -n 's/.*"id":\([0-9]*\).*/\1/p') || svc_fail "POST /banners failed"
code=$(curl -s -o /dev/null -w '%{http_code}' -c "$jar" -b "$jar" "http://127.0.0.1:38080/banners/$id") \
  || svc_fail "GET /banners/$id failed"
# the operator's routes: the status view names the node, the metrics count the units
curl -sf http://127.0.0.1:38080/_db/status/status.json | grep -q '"name":"primary"' \
  || svc_fail "GET /_db/status/status.json failed"
curl -sf http://127.0.0.1:38080/_db/metrics | grep -q '^sea_orm_replica_units' \
  || svc_fail "GET /_db/metrics has no sea_orm_replica_units"
kill "$svc" 2>/dev/null || true
grep -q sor_causal "$jar" || { echo "no causal cookie was set"; cat "$svc_log"; exit 1; }
[ "$code" = 200 ] || { echo "GET /banners/$id answered $code"; cat "$svc_log"; exit 1; }
rm -rf "$svc_dir"
rm -f "$jar" "$svc_log"

step "all passed"
