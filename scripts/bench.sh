#!/usr/bin/env bash
# Runs the overhead benchmark against a fresh loopback PostgreSQL cluster, then stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/cluster.sh start pg
trap 'scripts/cluster.sh stop pg || true' EXIT
# shellcheck disable=SC1091
source "${CLUSTER_DIR:-/tmp/sea-orm-replica-cluster}/env"
cargo bench --bench overhead "$@"
