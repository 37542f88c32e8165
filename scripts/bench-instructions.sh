#!/usr/bin/env bash
# Client instructions per operation, raw SeaORM vs sea-orm-replica, counted by callgrind:
# repeatable whatever else the machine does. Each operation runs N1 and N2 times; the
# difference divided by N2-N1 cancels connecting, migrating and start-up.
# Needs SOR_PG_PRIMARY_URL / SOR_PG_REPLICA_URL (scripts/cluster.sh start pg) and valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
N1=${N1:-50}; N2=${N2:-250}
cargo bench --bench overhead --no-run 2>/dev/null
bin=$(ls -t target/release/deps/overhead-* | grep -v '\.d$' | head -1)
count() { # count OP N → instructions
  SOR_BENCH_OP=$1 SOR_BENCH_N=$2 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
per_op() { echo $(( ($(count "$1" "$N2") - $(count "$1" "$N1")) / (N2 - N1) )); }
printf '%-8s %14s %14s %10s\n' op raw unit added
for op in select insert; do
  raw=$(per_op "raw-$op"); unit=$(per_op "unit-$op")
  printf '%-8s %14d %14d %+9.1f%%\n' "$op" "$raw" "$unit" "$(echo "($unit - $raw) * 100 / $raw" | bc -l)"
done
