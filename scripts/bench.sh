#!/usr/bin/env bash
# Runs a benchmark against fresh loopback clusters, then stops them.
#   scripts/bench.sh              # benches/overhead.rs: what the library costs over raw SeaORM (PostgreSQL)
#   scripts/bench.sh policies     # benches/policies.rs: read-after-write policies (PostgreSQL and MariaDB)
#   scripts/bench.sh balancing    # benches/balancing.rs: balancers with one replica freezing (PostgreSQL)
#   scripts/bench.sh read_heavy   # benches/read_heavy.rs: 90 % reads / 10 % writes, library vs hand-routed raw SeaORM (PostgreSQL)
#   scripts/bench.sh sharding     # benches/sharding.rs: sharded handle, shard decision, fan-out, two-phase commit (PostgreSQL)
#   scripts/bench.sh queue        # benches/queue.rs: the write-behind queue vs direct writes (PostgreSQL and Redis)
#   scripts/bench.sh metrics      # benches/metrics.rs: a Prometheus recorder vs none on the point-SELECT unit (PostgreSQL, SQLite)
set -euo pipefail
cd "$(dirname "$0")/.."
bench="${1:-overhead}"
shift || true
case "$bench" in
    overhead) clusters=pg ;;
    policies) clusters=all ;;
    balancing) clusters=pg ;;
    read_heavy) clusters=pg ;;
    sharding) clusters=pg ;;
    queue) clusters="pg redis"; set -- --features queue-redis "$@" ;;
    metrics) clusters=pg; set -- --features prometheus "$@" ;;
    *) echo "unknown bench '$bench' (overhead | policies | balancing | read_heavy | sharding | queue | metrics)" >&2; exit 2 ;;
esac
for c in $clusters; do scripts/cluster.sh start "$c"; done
trap 'for c in $clusters; do scripts/cluster.sh stop "$c" || true; done' EXIT
# shellcheck disable=SC1091
source "${CLUSTER_DIR:-/tmp/sea-orm-replica-cluster}/env"
cargo bench --bench "$bench" "$@"
