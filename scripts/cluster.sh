#!/usr/bin/env bash
# scripts/cluster.sh — throw-away replicated database clusters (and a Redis
# broker) for the sea-orm-replica integration tests.
#
# Everything runs on 127.0.0.1 only, with its own ports and temporary data
# directories under $CLUSTER_DIR. System-wide servers (PostgreSQL on 5432,
# MariaDB on 3306, Redis on 6379) are never touched.
#
#   scripts/cluster.sh start  [pg|mariadb|redis|db|all]  (re)create and start them
#   scripts/cluster.sh stop   [pg|mariadb|redis|db|all]  stop them, delete data dirs
#   scripts/cluster.sh status                    show nodes, ports and roles
#   scripts/cluster.sh env                       print the env file
#   (db = pg and mariadb; all = pg, mariadb and redis; default all)
#
# Fault injection (NODE: primary | replica1 | replica2 | my-primary | my-replica
#                  | redis)
#   scripts/cluster.sh kill      NODE   kill -9 the server and all its processes
#   scripts/cluster.sh pause     NODE   SIGSTOP them all (connections hang)
#   scripts/cluster.sh resume    NODE   SIGCONT them all
#   scripts/cluster.sh restart   NODE   start a killed/stopped node again
#   scripts/cluster.sh stop-node NODE   clean shutdown of one node
#   scripts/cluster.sh promote   NODE   promote a PostgreSQL replica
#   scripts/cluster.sh pids      NODE   print the node's pids (server first)
#   (restart of redis reloads its data from its append-only file)
#
# Topology
#   PostgreSQL : primary      $SOR_PG_PORT_BASE     (default 55432)
#                replica1     $SOR_PG_PORT_BASE+1   streaming, hot standby
#                replica2     $SOR_PG_PORT_BASE+2   streaming, delayed by
#                                                   $PG_LAG_DELAY (default 500ms)
#                (standbys retry a lost primary every 1s: wal_retrieve_retry_interval)
#   MariaDB    : primary      $SOR_MYSQL_PORT_BASE   (default 53306), binlog+GTID
#                replica      $SOR_MYSQL_PORT_BASE+1 GTID replica, read_only=1
#                (root@127.0.0.1 on the replica lacks SUPER/READ_ONLY ADMIN, so
#                 writes there fail with ERROR 1290 as on a real read replica)
#   Redis      : redis        $SOR_REDIS_PORT        (default 56379), one
#                standalone server, no password, AOF only (appendonly yes,
#                appendfsync always, save ""): every acknowledged write
#                survives kill -9; data in $CLUSTER_DIR/redis
#
# Environment
#   CLUSTER_DIR            data/log root        (default /tmp/sea-orm-replica-cluster)
#   SOR_PG_PORT_BASE       first PostgreSQL port (default 55432)
#   SOR_MYSQL_PORT_BASE    first MariaDB port    (default 53306)
#   SOR_REDIS_PORT         Redis port            (default 56379)
#   PG_LAG_DELAY           recovery_min_apply_delay of replica2 (default 500ms)
#   PG_BINDIR              PostgreSQL bin dir override (default: newest
#                          /usr/lib/postgresql/*/bin)
#   SOR_WAIT_TIMEOUT       seconds for every bounded wait (default 60)
#   SOR_MYSQL_REPLICA_WRITABLE=1  keep SUPER for root on the MariaDB replica
#   SOR_SHARD_B=1          `start` also starts a second, independent set of
#                          clusters, shard b, for the sharding tests: the same
#                          topology in $CLUSTER_DIR/shard-b on PostgreSQL ports
#                          base+3.. and MariaDB ports base+2..; `stop` stops it.
#                          Its URLs: SOR_PG_SHARD_B_PRIMARY_URL, *_REPLICA_URL,
#                          SOR_MYSQL_SHARD_B_PRIMARY_URL, *_REPLICA_URL. Fault
#                          subcommands reach it with CLUSTER_DIR=<dir>/shard-b
#                          and the shifted port bases. Shard b has no Redis.
#
# Fault injection details (every wait is bounded by SOR_WAIT_TIMEOUT)
#   A node's processes are the live (non-zombie) postgres / mariadbd /
#   redis-server processes whose working directory is the node's data
#   directory, plus every descendant of the pid in its pid file (postmaster.pid
#   / mariadbd.pid / redis.pid) when that pid is such a process. A stale pid
#   file (after kill -9, pid reused by something else) is never trusted, so no
#   unrelated process is signalled.
#   kill      SIGSTOP the server (no more forks), then SIGKILL it and all its
#             processes; returns once none is left and the port refuses
#             connections. No-op if the node is already down.
#   pause     SIGSTOP the server first, then all its processes; returns once
#             all are stopped. Open connections hang; new ones complete the TCP
#             handshake (kernel backlog) and then hang in the startup
#             handshake. Fails if the node is down.
#   resume    SIGCONT all the node's processes (no-op if none).
#   restart   If the node is up (even paused): resume it and stop it cleanly.
#             Then start it with the same data dir and configuration (stale
#             pid/socket lock files left by kill -9 are cleared when their pid
#             is not the node's) and wait until it accepts connections. A
#             PostgreSQL replica still in recovery must also be streaming
#             again if the primary is reachable (error otherwise); after
#             restarting the primary, the script waits (warning only) until
#             every running standby streams again. A MariaDB replica restarts
#             its replication threads itself; the script waits for them when
#             the MariaDB primary is up. Redis reloads its append-only file
#             and the script waits until it answers PING with PONG.
#   stop-node Resume the node, then pg_ctl stop -m fast (PostgreSQL) /
#             SIGTERM (MariaDB, Redis), waiting until its processes are gone
#             and its port is closed; fails on timeout. No-op if already down.
#   promote   pg_ctl promote (PostgreSQL only), then wait until
#             pg_is_in_recovery() is false. No-op if already out of recovery;
#             fails if the node is down or paused.
#   pids      One pid per line, the postmaster / mariadbd / redis-server
#             first; no output (exit status 0) when the node is down.
#   Every fault subcommand fails if the node's data directory does not exist
#   (cluster not started). Messages go to stderr; only `pids` prints to stdout.
#   `stop` works in any of these states: it resumes paused processes, stops
#   running nodes (fast, then immediate, then SIGKILL), kills orphaned
#   processes, frees SysV shared memory left by a killed postmaster and then
#   deletes the data directories.
#
# After `start`, `source $CLUSTER_DIR/env` exports SOR_PG_PRIMARY_URL,
# SOR_PG_REPLICA_URL, SOR_PG_LAGGING_URL, SOR_MYSQL_PRIMARY_URL,
# SOR_MYSQL_REPLICA_URL, SOR_REDIS_URL (redis://127.0.0.1:PORT/) and
# SOR_CLUSTER_DIR (each URL only for what is started).
#
# Root handling: PostgreSQL refuses to run as root, so when invoked as root
# the PostgreSQL directories are owned by `postgres` and all server-side
# PostgreSQL tools run via `runuser -u postgres --`. MariaDB runs as the
# invoking user (with --user=root when that is root). Redis runs as the
# invoking user.

set -euo pipefail

# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

CLUSTER_DIR="${CLUSTER_DIR:-/tmp/sea-orm-replica-cluster}"
PG_PORT_BASE="${SOR_PG_PORT_BASE:-55432}"
MY_PORT_BASE="${SOR_MYSQL_PORT_BASE:-53306}"
REDIS_PORT="${SOR_REDIS_PORT:-56379}"
PG_LAG_DELAY="${PG_LAG_DELAY:-500ms}"
WAIT_TIMEOUT="${SOR_WAIT_TIMEOUT:-60}"

PG_NODES=(primary replica1 replica2)

IS_ROOT=0
[[ "$(id -u)" -eq 0 ]] && IS_ROOT=1

# ---------------------------------------------------------------------------
# Generic helpers
# ---------------------------------------------------------------------------

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    # The header up to (not including) the Topology section.
    sed -n '2,/^# Topology/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

# wait_until <description> <command...>
# Polls <command> every 0.1 s until it succeeds or $WAIT_TIMEOUT elapses.
wait_until() {
    local what="$1"; shift
    local deadline=$(( $(date +%s) + WAIT_TIMEOUT ))
    until "$@" >/dev/null 2>&1; do
        if (( $(date +%s) >= deadline )); then
            log "timed out after ${WAIT_TIMEOUT}s waiting for: $what"
            return 1
        fi
        sleep 0.1
    done
}

# port_in_use <port> — true if something accepts TCP connections on 127.0.0.1:<port>.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# require_free_port <port> <what>
require_free_port() {
    if port_in_use "$1"; then
        die "port $1 (for $2) on 127.0.0.1 is already in use by another process." \
            "Stop it or choose another port (SOR_PG_PORT_BASE / SOR_MYSQL_PORT_BASE / SOR_REDIS_PORT)."
    fi
}

# pid_alive <pid>
pid_alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

# as_root <command...> — run with root privileges (sudo when needed).
as_root() {
    if (( IS_ROOT )); then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root privileges to run '$*' but not root and sudo is not installed." \
            "Install the packages manually: postgresql mariadb-server redis-server"
    fi
}

# Refuse to operate on obviously dangerous cluster directories (we rm -rf below it).
check_cluster_dir() {
    [[ -n "$CLUSTER_DIR" ]] || die "CLUSTER_DIR is empty"
    CLUSTER_DIR="$(realpath -m -- "$CLUSTER_DIR")"
    case "$CLUSTER_DIR" in
        /|/bin|/boot|/dev|/etc|/home|/lib|/lib64|/opt|/proc|/root|/run|/sbin|/srv|/sys|/tmp|/usr|/var|/var/lib|/var/lib/*sql*)
            die "refusing to use CLUSTER_DIR=$CLUSTER_DIR" ;;
    esac
    [[ "$CLUSTER_DIR" != "${HOME:-/nonexistent}" ]] || die "refusing to use CLUSTER_DIR=\$HOME"
    PG_DIR="$CLUSTER_DIR/pg"
    MY_DIR="$CLUSTER_DIR/mariadb"
    REDIS_DIR="$CLUSTER_DIR/redis"
    LOG_DIR="$CLUSTER_DIR/logs"
    ENV_FILE="$CLUSTER_DIR/env"
    SHARD_B_DIR="$CLUSTER_DIR/shard-b"
}

# Create the cluster root and log dir, traversable by the postgres user.
prepare_cluster_dir() {
    mkdir -p "$CLUSTER_DIR" "$LOG_DIR" 2>/dev/null \
        || die "cannot create $CLUSTER_DIR (owned by another user?). Set CLUSTER_DIR to a writable path."
    [[ -w "$CLUSTER_DIR" ]] || die "$CLUSTER_DIR is not writable by $(id -un). Set CLUSTER_DIR to another path."
    chmod 755 "$CLUSTER_DIR" "$LOG_DIR"
}

# ---------------------------------------------------------------------------
# Binary discovery and package installation
# ---------------------------------------------------------------------------

# Sets PG_BIN to the directory holding initdb/pg_ctl/psql (newest version wins).
find_pg_bindir() {
    PG_BIN=""
    if [[ -n "${PG_BINDIR:-}" ]]; then
        [[ -x "$PG_BINDIR/initdb" ]] || die "PG_BINDIR=$PG_BINDIR has no initdb"
        PG_BIN="$PG_BINDIR"
        return 0
    fi
    local initdb
    initdb="$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)"
    if [[ -x "$initdb" ]]; then
        PG_BIN="$(dirname "$initdb")"
    elif command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        PG_BIN="$(dirname "$(command -v initdb)")"      # non-Debian layout
    else
        return 1
    fi
}

# first_cmd <name...> — prints the path of the first available command.
first_cmd() {
    local c
    for c in "$@"; do
        if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return 0; fi
        # mariadbd/mysqld usually live in /usr/sbin, which a normal user may lack in PATH.
        if [[ -x "/usr/sbin/$c" ]]; then echo "/usr/sbin/$c"; return 0; fi
    done
    return 1
}

# Sets MY_SERVER, MY_INSTALL_DB, MY_CLIENT, MY_ADMIN.
find_mariadb_bins() {
    MY_SERVER="$(first_cmd mariadbd mysqld)" || return 1
    MY_INSTALL_DB="$(first_cmd mariadb-install-db mysql_install_db)" || return 1
    MY_CLIENT="$(first_cmd mariadb mysql)" || return 1
    MY_ADMIN="$(first_cmd mariadb-admin mysqladmin)" || return 1
}

# Sets REDIS_SERVER, REDIS_CLI.
find_redis_bins() {
    REDIS_SERVER="$(first_cmd redis-server)" || return 1
    REDIS_CLI="$(first_cmd redis-cli)" || return 1
}

# ensure_packages <pg|mariadb|redis|db|all> — apt-get install whatever server is missing.
ensure_packages() {
    local want="$1" pkgs=()
    if wants pg "$want" && ! find_pg_bindir; then
        pkgs+=(postgresql)
    fi
    if wants mariadb "$want" && ! find_mariadb_bins; then
        pkgs+=(mariadb-server)
    fi
    if wants redis "$want" && ! find_redis_bins; then
        pkgs+=(redis-server)    # redis-cli comes with it (redis-tools)
    fi
    (( ${#pkgs[@]} )) || return 0

    command -v apt-get >/dev/null 2>&1 \
        || die "missing packages (${pkgs[*]}) and apt-get is not available; install them manually."
    log "installing missing packages: ${pkgs[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}"

    if [[ " ${pkgs[*]} " == *" postgresql "* ]]; then
        find_pg_bindir || die "postgresql installed but initdb not found under /usr/lib/postgresql/*/bin"
    fi
    if [[ " ${pkgs[*]} " == *" mariadb-server "* ]]; then
        find_mariadb_bins || die "mariadb-server installed but mariadbd/mariadb-install-db not found"
    fi
    if [[ " ${pkgs[*]} " == *" redis-server "* ]]; then
        find_redis_bins || die "redis-server installed but redis-server/redis-cli not found"
    fi
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

pg_port() {   # pg_port <node> (reads the port base recorded at start, if any)
    local base="$PG_PORT_BASE"
    [[ -f "$PG_DIR/port_base" ]] && base="$(<"$PG_DIR/port_base")"
    case "$1" in
        primary)  echo "$base" ;;
        replica1) echo $(( base + 1 )) ;;
        replica2) echo $(( base + 2 )) ;;
    esac
}

# as_pg <command...> — run a server-side PostgreSQL tool as a non-root user.
as_pg() {
    if (( IS_ROOT )); then
        getent passwd postgres >/dev/null || die "running as root but there is no 'postgres' OS user"
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# pg_own <path...> — hand paths to the postgres user when we are root.
pg_own() { (( IS_ROOT )) && chown -R postgres: "$@"; return 0; }

# psql_at <port> <sql> — run SQL as superuser postgres over TCP, unaligned tuples.
psql_at() {
    PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$1" -U postgres -d "${3:-postgres}" -c "$2"
}

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$1" -U postgres -d postgres; }

# pg_running <node> — true if pg_ctl reports the node's postmaster alive.
pg_running() {
    [[ -f "$PG_DIR/$1/PG_VERSION" ]] || return 1
    as_pg "$PG_BIN/pg_ctl" status -D "$PG_DIR/$1" >/dev/null 2>&1
}

# Settings shared by every node (appended last to postgresql.conf, so they win).
pg_common_conf() {
    cat <<EOF

# --- sea-orm-replica test cluster ---
port = $1
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_DIR'
max_connections = 200
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = 256MB
hot_standby = on
fsync = off
logging_collector = off
# two-phase commit across shards (standbys need at least the primary's value)
max_prepared_transactions = 20
EOF
}

pg_write_hba() {
    cat >"$1/pg_hba.conf" <<'EOF'
# sea-orm-replica test cluster: loopback only, trust.
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  trust
host    replication  all   127.0.0.1/32  trust
EOF
}

# pg_start_node <node> [append] — pg_ctl start and wait (bounded) until it accepts
# connections. The log is truncated unless the second argument is "append".
pg_start_node() {
    local node="$1" port; port="$(pg_port "$node")"
    local logf="$LOG_DIR/pg-$node.log"
    if [[ "${2:-}" == append ]]; then
        [[ -f "$logf" ]] && printf '\n--- restarted by cluster.sh at %s ---\n' "$(date '+%F %T')" >>"$logf"
        touch "$logf"
    else
        : >"$logf"
    fi
    pg_own "$logf"
    as_pg "$PG_BIN/pg_ctl" start -w -t "$WAIT_TIMEOUT" -D "$PG_DIR/$node" -l "$logf" >/dev/null \
        || { tail -n 20 "$logf" >&2; die "PostgreSQL $node failed to start (log: $logf)"; }
    wait_until "PostgreSQL $node on port $port" pg_ready "$port" \
        || { tail -n 20 "$logf" >&2; die "PostgreSQL $node not ready (log: $logf)"; }
}

pg_init_primary() {
    local dir="$PG_DIR/primary" port; port="$(pg_port primary)"
    log "PostgreSQL primary: initdb ($("$PG_BIN/postgres" --version))"
    as_pg "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
        >"$LOG_DIR/pg-initdb.log" 2>&1 \
        || as_pg "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --locale=C \
            >"$LOG_DIR/pg-initdb.log" 2>&1 \
        || { cat "$LOG_DIR/pg-initdb.log" >&2; die "initdb failed"; }
    pg_common_conf "$port" >>"$dir/postgresql.conf"
    pg_write_hba "$dir"
    pg_own "$dir"
    pg_start_node primary
    psql_at "$port" "CREATE DATABASE app"
    log "PostgreSQL primary up on 127.0.0.1:$port"
}

# pg_init_replica <node> [apply_delay] — base backup from the primary, then start as standby.
pg_init_replica() {
    local node="$1" delay="${2:-}" dir="$PG_DIR/$1"
    local port pport; port="$(pg_port "$node")"; pport="$(pg_port primary)"
    log "PostgreSQL $node: pg_basebackup from primary${delay:+ (apply delay $delay)}"
    as_pg "$PG_BIN/pg_basebackup" -D "$dir" -R -X stream -c fast -C -S "$node" \
        -d "host=127.0.0.1 port=$pport user=postgres application_name=$node" \
        >"$LOG_DIR/pg-basebackup-$node.log" 2>&1 \
        || { cat "$LOG_DIR/pg-basebackup-$node.log" >&2; die "pg_basebackup for $node failed"; }
    {
        pg_common_conf "$port"
        echo "hot_standby_feedback = on"
        # Reconnect quickly after the primary was killed/restarted (default 5s).
        echo "wal_retrieve_retry_interval = 1s"
        echo "primary_conninfo = 'host=127.0.0.1 port=$pport user=postgres application_name=$node'"
        echo "primary_slot_name = '$node'"
        [[ -n "$delay" ]] && echo "recovery_min_apply_delay = '$delay'"
    } >>"$dir/postgresql.conf"
    pg_own "$dir"
    pg_start_node "$node"
    [[ "$(psql_at "$port" 'SELECT pg_is_in_recovery()')" == t ]] \
        || die "PostgreSQL $node on port $port is not in recovery"
    log "PostgreSQL $node up on 127.0.0.1:$port (standby)"
}

# The primary must report both standbys as streaming.
pg_streaming_count_is() {
    [[ "$(psql_at "$(pg_port primary)" \
        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" == "$1" ]]
}

pg_start() {
    [[ "$PG_LAG_DELAY" =~ ^[0-9]+(us|ms|s|min|h|d)?$ ]] \
        || die "PG_LAG_DELAY='$PG_LAG_DELAY' is not a PostgreSQL time value (e.g. 500ms)"
    find_pg_bindir || die "PostgreSQL binaries not found"
    local node
    for node in "${PG_NODES[@]}"; do require_free_port "$(PG_DIR=/nonexistent pg_port "$node")" "pg $node"; done

    mkdir -p "$PG_DIR"
    chmod 755 "$PG_DIR"
    echo "$PG_PORT_BASE" >"$PG_DIR/port_base"
    pg_own "$PG_DIR"

    pg_init_primary
    pg_init_replica replica1
    pg_init_replica replica2 "$PG_LAG_DELAY"
    wait_until "both PostgreSQL standbys streaming" pg_streaming_count_is 2 \
        || die "PostgreSQL standbys are not streaming (see $LOG_DIR/pg-*.log)"
    log "PostgreSQL cluster ready"
}

# pg_stop_node <node> — for `stop`: works in any state (running, paused, killed,
# promoted). Resume, fast shutdown, escalating to immediate and SIGKILL of
# every process of the node (orphaned backends of a killed postmaster too).
pg_stop_node() {
    local node="$1" dir="$PG_DIR/$1"
    [[ -d "$dir" ]] || return 0
    node_signal pg "$node" CONT    # a stopped postmaster would never act on pg_ctl's signal
    if [[ -n "$(node_main_pid pg "$node")" && -n "${PG_BIN:-}" ]]; then
        log "stopping PostgreSQL $node"
        as_pg "$PG_BIN/pg_ctl" stop -D "$dir" -m fast -w -t 30 >/dev/null 2>&1 \
            || as_pg "$PG_BIN/pg_ctl" stop -D "$dir" -m immediate -w -t 30 >/dev/null 2>&1 \
            || true
    fi
    if [[ -n "$(node_pids pg "$node")" ]]; then
        log "killing the remaining PostgreSQL $node processes: $(node_pids pg "$node" | xargs)"
        wait_until "PostgreSQL $node processes to die" node_kill_remaining pg "$node" \
            || die "could not stop PostgreSQL $node (pids $(node_pids pg "$node" | xargs))"
    fi
    pg_release_stale_shmem "$node"
}

# pg_release_stale_shmem <node> — a postmaster killed with SIGKILL leaves its
# (tiny) SysV shared memory segment behind; its key and id are on line 7 of
# the stale postmaster.pid. Remove it once nothing is attached. (`restart`
# does not need this: the new postmaster recycles the segment itself.)
pg_release_stale_shmem() {
    local pidfile="$PG_DIR/$1/postmaster.pid" key shmid
    [[ -f "$pidfile" && -r /proc/sysvipc/shm ]] || return 0
    [[ -z "$(node_pids pg "$1")" ]] || return 0
    read -r key shmid < <(sed -n 7p "$pidfile") || true
    [[ "$key" =~ ^[0-9]+$ && "$shmid" =~ ^[0-9]+$ ]] || return 0
    if awk -v k="$key" -v id="$shmid" '$1 == k && $2 == id && $7 == 0 { found = 1 } END { exit !found }' \
            /proc/sysvipc/shm; then
        ipcrm -m "$shmid" 2>/dev/null || true
    fi
}

pg_stop() {
    if [[ -d "$PG_DIR" ]]; then
        # Without binaries pg_stop_node still SIGKILLs every process of a node.
        find_pg_bindir || log "WARNING: PostgreSQL binaries not found; killing servers in $PG_DIR"
        # Standbys first so they do not spam their logs reconnecting.
        pg_stop_node replica2
        pg_stop_node replica1
        pg_stop_node primary
        rm -rf "$PG_DIR"
    fi
}

pg_status() {
    [[ -d "$PG_DIR" ]] || { echo "postgres: not started (no $PG_DIR)"; return 0; }
    find_pg_bindir || { echo "postgres: binaries not found"; return 0; }
    local node port out
    for node in "${PG_NODES[@]}"; do
        port="$(pg_port "$node")"
        if [[ "$(node_state pg "$node")" == paused ]]; then
            printf 'postgres %-8s 127.0.0.1:%-5s paused (SIGSTOP; scripts/cluster.sh resume %s)\n' \
                "$node" "$port" "$node"
        elif out="$(psql_at "$port" "SELECT CASE WHEN pg_is_in_recovery() THEN 'standby' ELSE 'primary' END
                 || ' in_recovery=' || pg_is_in_recovery()
                 || coalesce(' apply_delay=' || nullif(current_setting('recovery_min_apply_delay'), '0'), '')
                 || ' version=' || current_setting('server_version')" 2>/dev/null)"; then
            printf 'postgres %-8s 127.0.0.1:%-5s up    %s\n' "$node" "$port" "$out"
        else
            printf 'postgres %-8s 127.0.0.1:%-5s down\n' "$node" "$port"
        fi
    done
}

# ---------------------------------------------------------------------------
# MariaDB
# ---------------------------------------------------------------------------

my_port() {   # my_port <primary|replica>
    local base="$MY_PORT_BASE"
    [[ -f "$MY_DIR/port_base" ]] && base="$(<"$MY_DIR/port_base")"
    case "$1" in
        primary) echo "$base" ;;
        replica) echo $(( base + 1 )) ;;
    esac
}

my_sock()  { echo "$MY_DIR/$1/mysql.sock"; }

# my_sql_sock <node> <sql> — run SQL as root over the unix socket (setup phase).
my_sql_sock() {
    "$MY_CLIENT" --no-defaults --socket="$(my_sock "$1")" -uroot -N -B -e "$2"
}

# my_sql <port> <sql> — run SQL as root over TCP (what the tests use).
my_sql() {
    "$MY_CLIENT" --no-defaults --protocol=tcp -h127.0.0.1 -P"$1" -uroot \
        --connect-timeout=5 -N -B -e "$2"
}

my_ping_sock() { "$MY_ADMIN" --no-defaults --socket="$(my_sock "$1")" -uroot --connect-timeout=2 ping; }

# my_start_node <node> <server_id> [extra mariadbd args...]
my_start_node() {
    local node="$1" sid="$2"; shift 2
    local dir="$MY_DIR/$node" port; port="$(my_port "$node")"
    local user_args=()
    (( IS_ROOT )) && user_args=(--user=root)

    mkdir -p "$dir/data" "$dir/tmp"
    log "MariaDB $node: install-db"
    "$MY_INSTALL_DB" --no-defaults --datadir="$dir/data" "${user_args[@]}" \
        --auth-root-authentication-method=normal --skip-test-db \
        >"$LOG_DIR/mariadb-install-db-$node.log" 2>&1 \
        || { tail -n 30 "$LOG_DIR/mariadb-install-db-$node.log" >&2; die "mariadb-install-db failed for $node"; }

    # Remembered for `restart`: the same server id and extra arguments.
    printf '%s\n' "$sid" "$@" >"$dir/server_args"
    my_launch_node "$node" truncate "$sid" "$@"

    # Make sure root can log in over TCP from 127.0.0.1 with an empty password.
    # sql_log_bin=0 keeps this node-local setup out of the binlog.
    my_sql_sock "$node" "SET sql_log_bin = 0;
        CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
        DROP USER IF EXISTS ''@'localhost';
        FLUSH PRIVILEGES;"
    [[ "$(my_sql "$port" 'SELECT @@server_id')" == "$sid" ]] \
        || die "MariaDB $node: root cannot connect over TCP on 127.0.0.1:$port"
    log "MariaDB $node up on 127.0.0.1:$port (server_id=$sid)"
}

# my_launch_node <node> <truncate|append> <server_id> [extra mariadbd args...]
# Starts mariadbd on an installed data dir; waits until it answers on its socket.
my_launch_node() {
    local node="$1" logmode="$2" sid="$3"; shift 3
    local dir="$MY_DIR/$node" port; port="$(my_port "$node")"
    local logf="$LOG_DIR/mariadb-$node.log"
    local user_args=()
    (( IS_ROOT )) && user_args=(--user=root)

    if [[ "$logmode" == append ]]; then
        printf '\n--- restarted by cluster.sh at %s ---\n' "$(date '+%F %T')" >>"$logf"
    else
        : >"$logf"
    fi
    # setsid+nohup detaches the server from this shell; all output goes to the log.
    setsid nohup "$MY_SERVER" --no-defaults "${user_args[@]}" \
        --datadir="$dir/data" --tmpdir="$dir/tmp" \
        --port="$port" --bind-address=127.0.0.1 --skip-name-resolve \
        --socket="$(my_sock "$node")" --pid-file="$dir/mariadbd.pid" --log-error="$logf" \
        --server-id="$sid" --log-bin="$dir/data/binlog" --relay-log="$dir/data/relay" \
        --binlog-format=ROW --gtid-strict-mode=1 --log-slave-updates=1 \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
        --innodb-buffer-pool-size=64M --max-connections=200 \
        "$@" </dev/null >>"$logf" 2>&1 &
    wait_until "MariaDB $node on socket" my_ping_sock "$node" \
        || { tail -n 20 "$logf" >&2; die "MariaDB $node failed to start (log: $logf)"; }
}

# Both replication threads of the replica report Yes.
my_replica_running() {
    local st; st="$("$MY_CLIENT" --no-defaults --protocol=tcp -h127.0.0.1 -P"$(my_port replica)" \
        -uroot -e 'SHOW SLAVE STATUS\G')"
    grep -q 'Slave_IO_Running: Yes' <<<"$st" && grep -q 'Slave_SQL_Running: Yes' <<<"$st"
}

my_replica_has_app() {
    [[ "$(my_sql "$(my_port replica)" "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = 'app'")" == 1 ]]
}

my_start() {
    find_mariadb_bins || die "MariaDB binaries not found"
    "$MY_SERVER" --version | grep -qi mariadb \
        || die "$MY_SERVER is not MariaDB (GTID settings here are MariaDB-specific)"
    require_free_port "$(MY_DIR=/nonexistent my_port primary)" "mariadb primary"
    require_free_port "$(MY_DIR=/nonexistent my_port replica)" "mariadb replica"

    mkdir -p "$MY_DIR"
    echo "$MY_PORT_BASE" >"$MY_DIR/port_base"

    my_start_node primary 1
    my_start_node replica 2 --read-only=1

    local pport; pport="$(my_port primary)"
    my_sql "$(my_port replica)" "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$pport,
        MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos,
        MASTER_CONNECT_RETRY=1; START SLAVE;"
    wait_until "MariaDB replica IO/SQL threads running" my_replica_running \
        || { my_sql "$(my_port replica)" 'SHOW SLAVE STATUS\G' >&2 || true; die "MariaDB replication did not start"; }

    # Created after replication runs, so it travels through the binlog.
    my_sql "$pport" "CREATE DATABASE IF NOT EXISTS app"
    wait_until "database app to replicate to MariaDB replica" my_replica_has_app \
        || die "database 'app' did not replicate to the MariaDB replica"
    my_enforce_replica_read_only
    log "MariaDB cluster ready"
}

# With SUPER (MariaDB < 11.0) / READ_ONLY ADMIN, root ignores read_only=1, so a
# write mistakenly routed to the replica would succeed and break GTID strict
# mode. Drop those privileges from the TCP root account on the replica so it
# rejects writes (ERROR 1290) like a real read replica. The replication SQL
# thread is unaffected. Opt out with SOR_MYSQL_REPLICA_WRITABLE=1.
my_enforce_replica_read_only() {
    [[ "${SOR_MYSQL_REPLICA_WRITABLE:-0}" == 1 ]] && return 0
    my_sql_sock replica "SET sql_log_bin = 0;
        REVOKE SUPER, READ_ONLY ADMIN ON *.* FROM 'root'@'127.0.0.1'" 2>/dev/null \
        || my_sql_sock replica "SET sql_log_bin = 0;
        REVOKE SUPER ON *.* FROM 'root'@'127.0.0.1'"   # MariaDB < 10.5.2
    if my_sql "$(my_port replica)" "CREATE TABLE app.__sor_ro_probe (id INT)" 2>/dev/null; then
        my_sql_sock replica "SET sql_log_bin = 0; DROP TABLE app.__sor_ro_probe" || true
        die "MariaDB replica still accepts writes from root@127.0.0.1"
    fi
}

# my_stop_node <node> — for `stop`: works in any state (running, paused,
# killed). Resume, SIGTERM, wait (bounded), then SIGKILL whatever is left.
my_stop_node() {
    local node="$1" pid
    [[ -d "$MY_DIR/$node" ]] || return 0
    node_signal my "$node" CONT    # a stopped mariadbd would never act on SIGTERM
    pid="$(node_main_pid my "$node")"
    if [[ -n "$pid" ]]; then
        log "stopping MariaDB $node (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        wait_until "MariaDB $node (pid $pid) to exit" node_down my "$node" || true
    fi
    if [[ -n "$(node_pids my "$node")" ]]; then
        log "killing the remaining MariaDB $node processes: $(node_pids my "$node" | xargs)"
        wait_until "MariaDB $node processes to die" node_kill_remaining my "$node" \
            || die "could not stop MariaDB $node (pids $(node_pids my "$node" | xargs))"
    fi
}

my_stop() {
    if [[ -d "$MY_DIR" ]]; then
        my_stop_node replica
        my_stop_node primary
        rm -rf "$MY_DIR"
    fi
}

my_status() {
    [[ -d "$MY_DIR" ]] || { echo "mariadb: not started (no $MY_DIR)"; return 0; }
    find_mariadb_bins || { echo "mariadb: binaries not found"; return 0; }
    local node port out
    for node in primary replica; do
        port="$(my_port "$node")"
        if [[ "$(node_state my "$node")" == paused ]]; then
            printf 'mariadb  %-8s 127.0.0.1:%-5s paused (SIGSTOP; scripts/cluster.sh resume my-%s)\n' \
                "$node" "$port" "$node"
        elif out="$(my_sql "$port" "SELECT CONCAT(IF(@@read_only, 'replica', 'primary'),
                    ' server_id=', @@server_id, ' read_only=', @@read_only,
                    ' gtid_current_pos=', @@gtid_current_pos,
                    ' gtid_slave_pos=', @@gtid_slave_pos)" 2>/dev/null)"; then
            if [[ "$node" == replica ]]; then
                if my_replica_running 2>/dev/null; then out+=" replication=running"
                else out+=" replication=NOT-RUNNING"; fi
            fi
            printf 'mariadb  %-8s 127.0.0.1:%-5s up    %s\n' "$node" "$port" "$out"
        else
            printf 'mariadb  %-8s 127.0.0.1:%-5s down\n' "$node" "$port"
        fi
    done
}

# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------

redis_port() {   # the port recorded at start, if any
    if [[ -f "$REDIS_DIR/port" ]]; then cat "$REDIS_DIR/port"; else echo "$REDIS_PORT"; fi
}

# redis_cli <port> <command...> — bounded, so a paused server cannot hang us.
redis_cli() {
    local port="$1"; shift
    timeout 5 "$REDIS_CLI" -h 127.0.0.1 -p "$port" "$@"
}

# redis_pong <port> — the server answers PING (not yet while it loads the AOF).
redis_pong() { [[ "$(redis_cli "$1" ping 2>/dev/null)" == PONG ]]; }

# redis_pong_or_gone <port> — for wait_until at startup: ready, or no Redis
# process is left (it failed, e.g. the port was taken; no need to wait on).
redis_pong_or_gone() { redis_pong "$1" || node_down redis redis; }

# redis_conf_str <string> — the string double-quoted for redis.conf.
redis_conf_str() {
    local v="${1//\\/\\\\}"
    v="${v//\"/\\\"}"
    printf '"%s"' "$v"
}

# redis_write_conf <port>
redis_write_conf() {
    cat >"$REDIS_DIR/redis.conf" <<EOF
# sea-orm-replica test broker: loopback only, no password, AOF only.
bind 127.0.0.1
port $1
protected-mode yes
daemonize yes
supervised no
pidfile $(redis_conf_str "$REDIS_DIR/redis.pid")
logfile $(redis_conf_str "$LOG_DIR/redis.log")
dir $(redis_conf_str "$REDIS_DIR")
save ""
appendonly yes
appendfsync always
always-show-logo no
EOF
}

# redis_launch <truncate|append> — start redis-server on its config (it
# daemonizes itself) and wait until it answers PONG, i.e. has loaded the AOF.
redis_launch() {
    local port logf="$LOG_DIR/redis.log"; port="$(redis_port)"
    if [[ "$1" == append ]]; then
        printf '\n--- restarted by cluster.sh at %s ---\n' "$(date '+%F %T')" >>"$logf"
    else
        : >"$logf"
    fi
    # Config errors go to stderr (into the log) before it daemonizes.
    "$REDIS_SERVER" "$REDIS_DIR/redis.conf" </dev/null >>"$logf" 2>&1 \
        || { tail -n 20 "$logf" >&2; die "Redis failed to start (log: $logf)"; }
    if ! wait_until "Redis on port $port to answer PONG" redis_pong_or_gone "$port" \
            || ! redis_pong "$port"; then
        tail -n 20 "$logf" >&2
        die "Redis not ready on 127.0.0.1:$port (log: $logf)"
    fi
}

redis_start() {
    find_redis_bins || die "Redis binaries (redis-server, redis-cli) not found"
    [[ "$REDIS_PORT" =~ ^[0-9]+$ ]] && (( REDIS_PORT > 0 && REDIS_PORT < 65536 )) \
        || die "SOR_REDIS_PORT='$REDIS_PORT' is not a TCP port"
    require_free_port "$REDIS_PORT" "redis"
    mkdir -p "$REDIS_DIR"
    chmod 755 "$REDIS_DIR"
    echo "$REDIS_PORT" >"$REDIS_DIR/port"
    redis_write_conf "$REDIS_PORT"
    log "Redis: starting ($("$REDIS_SERVER" --version | sed 's/ sha=.*//'))"
    redis_launch truncate
    log "Redis up on 127.0.0.1:$REDIS_PORT (AOF in $REDIS_DIR)"
}

# redis_stop — for `stop`: works in any state (running, paused, killed).
# Resume, SIGTERM (clean shutdown, AOF fsynced), wait (bounded), then SIGKILL
# whatever is left; then delete the data directory.
redis_stop() {
    [[ -d "$REDIS_DIR" ]] || return 0
    local pid
    node_signal redis redis CONT    # a stopped redis-server would never act on SIGTERM
    pid="$(node_main_pid redis redis)"
    if [[ -n "$pid" ]]; then
        log "stopping Redis (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        wait_until "Redis (pid $pid) to exit" node_down redis redis || true
    fi
    if [[ -n "$(node_pids redis redis)" ]]; then
        log "killing the remaining Redis processes: $(node_pids redis redis | xargs)"
        wait_until "Redis processes to die" node_kill_remaining redis redis \
            || die "could not stop Redis (pids $(node_pids redis redis | xargs))"
    fi
    rm -rf "$REDIS_DIR"
}

# redis_info <port> — "redis_version=… aof_enabled=… loading=… dbsize=…"
redis_info() {
    local info dbsize
    info="$(redis_cli "$1" info 2>/dev/null | tr -d '\r')" || return 1
    dbsize="$(redis_cli "$1" dbsize 2>/dev/null | tr -dc '0-9')" || return 1
    awk -F: '/^(redis_version|aof_enabled|loading):/ { printf "%s=%s ", $1, $2 }' <<<"$info"
    echo "dbsize=$dbsize"
}

redis_status() {
    [[ -d "$REDIS_DIR" ]] || { echo "redis: not started (no $REDIS_DIR)"; return 0; }
    find_redis_bins || { echo "redis: binaries not found"; return 0; }
    local port out; port="$(redis_port)"
    if [[ "$(node_state redis redis)" == paused ]]; then
        printf 'redis    %-8s 127.0.0.1:%-5s paused (SIGSTOP; scripts/cluster.sh resume redis)\n' \
            redis "$port"
    elif redis_pong "$port" && out="$(redis_info "$port")"; then
        printf 'redis    %-8s 127.0.0.1:%-5s up    %s\n' redis "$port" "$out"
    else
        printf 'redis    %-8s 127.0.0.1:%-5s down\n' redis "$port"
    fi
}

# ---------------------------------------------------------------------------
# Fault injection: processes of one node
# ---------------------------------------------------------------------------

# parse_node <NODE> — sets NODE_KIND (pg|my|redis), NODE (primary|replica1|
# replica2 for pg, primary|replica for my, redis for redis) and NODE_LABEL
# (for messages).
parse_node() {
    local nodes="primary, replica1, replica2, my-primary, my-replica or redis"
    case "${1:-}" in
        primary|replica1|replica2) NODE_KIND=pg; NODE="$1"; NODE_LABEL="PostgreSQL $1" ;;
        my-primary|my-replica)     NODE_KIND=my; NODE="${1#my-}"; NODE_LABEL="MariaDB ${1#my-}" ;;
        redis)                     NODE_KIND=redis; NODE=redis; NODE_LABEL="Redis" ;;
        "") die "missing NODE ($nodes)" ;;
        *)  die "unknown node '$1' (expected $nodes)" ;;
    esac
}

# require_node — the node's data directory must exist.
require_node() {
    case "$NODE_KIND" in
        pg)    [[ -f "$PG_DIR/$NODE/PG_VERSION" ]] \
                   || die "no PostgreSQL $NODE in $PG_DIR (run: $0 start pg)" ;;
        my)    [[ -d "$MY_DIR/$NODE/data" ]] \
                   || die "no MariaDB $NODE in $MY_DIR (run: $0 start mariadb)" ;;
        redis) [[ -f "$REDIS_DIR/redis.conf" ]] \
                   || die "no Redis in $REDIS_DIR (run: $0 start redis)" ;;
    esac
}

# node_datadir <pg|my|redis> <node> — the server's working directory.
node_datadir() {
    case "$1" in
        pg)    echo "$PG_DIR/$2" ;;
        my)    echo "$MY_DIR/$2/data" ;;
        redis) echo "$REDIS_DIR" ;;
    esac
}

node_pidfile() {
    case "$1" in
        pg)    echo "$PG_DIR/$2/postmaster.pid" ;;
        my)    echo "$MY_DIR/$2/mariadbd.pid" ;;
        redis) echo "$REDIS_DIR/redis.pid" ;;
    esac
}

node_port() {
    case "$1" in
        pg)    pg_port "$2" ;;
        my)    my_port "$2" ;;
        redis) redis_port ;;
    esac
}

# proc_state <pid> — the one-letter state from /proc/<pid>/stat (empty if gone).
proc_state() {
    local st=""
    [[ "$1" =~ ^[0-9]+$ ]] || return 0
    { read -r st <"/proc/$1/stat"; } 2>/dev/null || return 0
    st="${st##*) }"
    echo "${st%% *}"
}

# is_server_comm <pg|my|redis> <comm> (comm is cut to 15 characters; a Redis
# fork for an AOF rewrite or RDB save may rename itself redis-aof-rewrite /
# redis-rdb-bgsave)
is_server_comm() {
    case "$1:$2" in
        pg:postgres|my:mariadbd|my:mysqld) return 0 ;;
        redis:redis-server|redis:redis-aof-*|redis:redis-rdb-*) return 0 ;;
        *) return 1 ;;
    esac
}

# is_node_proc <pg|my|redis> <node> <pid> — a live (non-zombie) server process whose
# working directory is the node's data directory.
is_node_proc() {
    local pid="$3" st comm
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    { read -r st <"/proc/$pid/stat"; } 2>/dev/null || return 1
    comm="${st#*(}"; comm="${comm%)*}"
    st="${st##*) }"
    [[ "${st%% *}" != [ZX] ]] || return 1
    is_server_comm "$1" "$comm" || return 1
    [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$(node_datadir "$1" "$2")" ]]
}

# node_main_pid <pg|my|redis> <node> — the pid in the node's pid file, only if that is
# really the node's server (a stale file after kill -9 may name a reused pid).
node_main_pid() {
    local f pid=""; f="$(node_pidfile "$1" "$2")"
    if [[ -f "$f" ]]; then { read -r pid <"$f"; } 2>/dev/null || true; fi
    if [[ -n "$pid" ]] && is_node_proc "$1" "$2" "$pid"; then echo "$pid"; fi
    return 0
}

# node_pids <pg|my|redis> <node> — every live process of the node, one per line, the
# server (postmaster / mariadbd / redis-server) first: the validated pid-file pid and all its
# descendants, plus any server process working in the node's data directory
# (orphaned backends of a killed postmaster, a server without pid file yet).
node_pids() {
    local kind="$1" node="$2" dir main p st comm rest ppid changed
    dir="$(node_datadir "$kind" "$node")"
    main="$(node_main_pid "$kind" "$node")"
    local -A parent=() member=()
    for p in /proc/[0-9]*; do
        p="${p#/proc/}"
        { read -r st <"/proc/$p/stat"; } 2>/dev/null || continue
        rest="${st##*) }"                              # "<state> <ppid> ..."
        [[ "${rest%% *}" != [ZX] ]] || continue
        rest="${rest#* }"; ppid="${rest%% *}"
        parent[$p]="$ppid"
        comm="${st#*(}"; comm="${comm%)*}"
        if is_server_comm "$kind" "$comm" \
                && [[ "$(readlink "/proc/$p/cwd" 2>/dev/null)" == "$dir" ]]; then
            member[$p]=1
        fi
    done
    if [[ -n "$main" ]]; then
        member[$main]=1
        changed=1
        while (( changed )); do                        # add descendants of main
            changed=0
            for p in "${!parent[@]}"; do
                if [[ -z "${member[$p]:-}" && -n "${member[${parent[$p]}]:-}" ]] \
                        && [[ "$p" != "$$" && "$p" != "$BASHPID" ]]; then
                    member[$p]=1; changed=1
                fi
            done
        done
    else
        # No trustworthy pid file: the server is the member whose parent is none.
        for p in "${!member[@]}"; do
            [[ -n "${member[${parent[$p]:-0}]:-}" ]] || { main="$p"; break; }
        done
    fi
    [[ -n "$main" ]] || return 0
    echo "$main"
    for p in "${!member[@]}"; do [[ "$p" == "$main" ]] || echo "$p"; done | sort -n
}

# node_state <pg|my|redis> <node> — down | paused | running
node_state() {
    local main st
    main="$(node_server_pid "$1" "$2")"
    if [[ -z "$main" ]]; then echo down; return 0; fi
    st="$(proc_state "$main")"
    if [[ "$st" == [Tt] ]]; then echo paused; else echo running; fi
}

node_down() { [[ -z "$(node_pids "$1" "$2")" ]]; }

# node_server_pid <pg|my|redis> <node> — the first line of node_pids (empty if down).
node_server_pid() {
    local pids; pids="$(node_pids "$1" "$2")"
    echo "${pids%%$'\n'*}"
}

# node_signal <pg|my|redis> <node> <SIG> — signal every process of the node.
node_signal() {
    local p
    for p in $(node_pids "$1" "$2"); do kill -"$3" "$p" 2>/dev/null || true; done
}

# node_kill_remaining <pg|my|redis> <node> — SIGKILL what is left; true once nothing is.
# (For wait_until: it also catches anything forked meanwhile.)
node_kill_remaining() {
    local pids; pids="$(node_pids "$1" "$2")"
    [[ -n "$pids" ]] || return 0
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    return 1
}

# node_all_stopped <pg|my|redis> <node> — every process of the node is in state T.
node_all_stopped() {
    local p st
    for p in $(node_pids "$1" "$2"); do
        st="$(proc_state "$p")"
        [[ -z "$st" || "$st" == [Tt] ]] || return 1
    done
}

port_closed() { ! port_in_use "$1"; }

# wait_port_closed <port> <what>
wait_port_closed() {
    wait_until "$2 port $1 to refuse connections" port_closed "$1" \
        || die "$2: port $1 still accepts connections"
}

# clear_stale_locks — before restarting a node that is down: lock files whose
# pid is alive but not the node's (pid reused since kill -9) would make the
# server refuse to start. Files naming a dead pid are left to the server
# (PostgreSQL then also recycles the shared memory segment named there).
clear_stale_locks() {
    local f pid files=()
    case "$NODE_KIND" in
        pg)    files=("$PG_DIR/$NODE/postmaster.pid" "$PG_DIR/.s.PGSQL.$(pg_port "$NODE").lock") ;;
        my)    files=("$MY_DIR/$NODE/mariadbd.pid" "$(my_sock "$NODE").lock") ;;
        redis) return 0 ;;    # redis.pid is no lock: redis-server overwrites it
    esac
    for f in "${files[@]}"; do
        [[ -f "$f" ]] || continue
        pid=""; { read -r pid <"$f"; } 2>/dev/null || true
        pid="${pid//[^0-9]/}"
        if [[ -n "$pid" ]] && pid_alive "$pid"; then
            log "removing stale $f (pid $pid is no longer $NODE_LABEL)"
            rm -f "$f"
        fi
    done
}

# ---------------------------------------------------------------------------
# Fault injection: subcommands
# ---------------------------------------------------------------------------

cmd_pids() {
    parse_node "${1:-}"; require_node
    node_pids "$NODE_KIND" "$NODE"
}

cmd_kill() {
    parse_node "${1:-}"; require_node
    local main port; port="$(node_port "$NODE_KIND" "$NODE")"
    main="$(node_server_pid "$NODE_KIND" "$NODE")"
    if [[ -z "$main" ]]; then
        log "$NODE_LABEL is not running"
    else
        # Freeze the server first so it cannot fork while its children are killed.
        kill -STOP "$main" 2>/dev/null || true
        wait_until "$NODE_LABEL processes to die" node_kill_remaining "$NODE_KIND" "$NODE" \
            || die "could not kill $NODE_LABEL (pids $(node_pids "$NODE_KIND" "$NODE" | xargs))"
    fi
    wait_port_closed "$port" "$NODE_LABEL"
    log "killed $NODE_LABEL (port $port closed)"
}

cmd_pause() {
    parse_node "${1:-}"; require_node
    local main; main="$(node_server_pid "$NODE_KIND" "$NODE")"
    [[ -n "$main" ]] || die "$NODE_LABEL is not running"
    kill -STOP "$main" 2>/dev/null || true             # server first: no more forks
    node_signal "$NODE_KIND" "$NODE" STOP
    wait_until "$NODE_LABEL processes to stop" node_all_stopped "$NODE_KIND" "$NODE" \
        || die "$NODE_LABEL did not stop on SIGSTOP"
    log "paused $NODE_LABEL (pids $(node_pids "$NODE_KIND" "$NODE" | xargs))"
}

cmd_resume() {
    parse_node "${1:-}"; require_node
    if node_down "$NODE_KIND" "$NODE"; then
        log "$NODE_LABEL is not running; nothing to resume"
        return 0
    fi
    node_signal "$NODE_KIND" "$NODE" CONT
    log "resumed $NODE_LABEL"
}

# node_clean_stop — resume, then a clean shutdown of the parsed node; fails on timeout.
node_clean_stop() {
    local port; port="$(node_port "$NODE_KIND" "$NODE")"
    if node_down "$NODE_KIND" "$NODE"; then
        log "$NODE_LABEL is already stopped"
        return 0
    fi
    node_signal "$NODE_KIND" "$NODE" CONT
    log "stopping $NODE_LABEL"
    if [[ "$NODE_KIND" == pg ]]; then
        find_pg_bindir || die "PostgreSQL binaries not found"
        as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DIR/$NODE" -m fast -w -t "$WAIT_TIMEOUT" >/dev/null \
            || die "pg_ctl stop -m fast of PostgreSQL $NODE failed (log: $LOG_DIR/pg-$NODE.log)"
    else
        kill -TERM "$(node_server_pid "$NODE_KIND" "$NODE")" 2>/dev/null || true
    fi
    wait_until "$NODE_LABEL to shut down" node_down "$NODE_KIND" "$NODE" \
        || die "$NODE_LABEL did not shut down (pids $(node_pids "$NODE_KIND" "$NODE" | xargs))"
    wait_port_closed "$port" "$NODE_LABEL"
}

cmd_stop_node() {
    parse_node "${1:-}"; require_node
    node_clean_stop
    log "stopped $NODE_LABEL"
}

# pg_in_recovery <port> — prints t or f.
pg_in_recovery() { psql_at "$1" 'SELECT pg_is_in_recovery()'; }
pg_out_of_recovery() { [[ "$(pg_in_recovery "$1")" == f ]]; }

# pg_receiver_streaming <port> — the standby's WAL receiver is streaming.
pg_receiver_streaming() {
    [[ "$(psql_at "$1" "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'")" == 1 ]]
}

# pg_streaming_at_least <n> — the primary has at least n streaming standbys.
pg_streaming_at_least() {
    local n; n="$(psql_at "$(pg_port primary)" \
        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" || return 1
    (( n >= $1 ))
}

# pg_primary_usable — the `primary` node answers and is not in recovery.
pg_primary_usable() {
    [[ "$(node_state pg primary)" == running ]] && pg_ready "$(pg_port primary)" \
        && pg_out_of_recovery "$(pg_port primary)" 2>/dev/null
}

pg_restart_node() {
    local port; port="$(pg_port "$NODE")"
    find_pg_bindir || die "PostgreSQL binaries not found"
    if ! node_down pg "$NODE"; then
        log "PostgreSQL $NODE is running; stopping it first"
        node_clean_stop
    fi
    clear_stale_locks
    require_free_port "$port" "pg $NODE"
    log "starting PostgreSQL $NODE"
    pg_start_node "$NODE" append

    if [[ "$NODE" != primary && "$(pg_in_recovery "$port")" == t ]]; then
        if pg_primary_usable; then
            wait_until "PostgreSQL $NODE to stream from the primary" pg_receiver_streaming "$port" \
                || die "PostgreSQL $NODE is up but not streaming (log: $LOG_DIR/pg-$NODE.log)"
            log "PostgreSQL $NODE up on 127.0.0.1:$port, streaming"
        else
            log "PostgreSQL $NODE up on 127.0.0.1:$port (standby; primary down, not streaming)"
        fi
    elif [[ "$NODE" == primary ]] && pg_primary_usable; then
        # Best effort: every running standby reconnects (wal_retrieve_retry_interval).
        local n=0 r
        for r in replica1 replica2; do
            if [[ "$(node_state pg "$r")" == running ]] \
                    && [[ "$(pg_in_recovery "$(pg_port "$r")" 2>/dev/null)" == t ]]; then
                n=$(( n + 1 ))
            fi
        done
        if wait_until "$n standby(s) streaming from the primary" pg_streaming_at_least "$n"; then
            log "PostgreSQL primary up on 127.0.0.1:$port ($n standby(s) streaming)"
        else
            log "WARNING: PostgreSQL primary up on 127.0.0.1:$port, but not all $n standby(s) stream"
        fi
    else
        log "PostgreSQL $NODE up on 127.0.0.1:$port"
    fi
}

my_restart_node() {
    local port args=(); port="$(my_port "$NODE")"
    find_mariadb_bins || die "MariaDB binaries not found"
    if ! node_down my "$NODE"; then
        log "MariaDB $NODE is running; stopping it first"
        node_clean_stop
    fi
    clear_stale_locks
    require_free_port "$port" "mariadb $NODE"
    [[ -f "$MY_DIR/$NODE/server_args" ]] || die "no $MY_DIR/$NODE/server_args (cluster from an older cluster.sh; run: $0 start mariadb)"
    mapfile -t args <"$MY_DIR/$NODE/server_args"
    log "starting MariaDB $NODE"
    my_launch_node "$NODE" append "${args[@]}"
    wait_until "MariaDB $NODE over TCP" my_sql "$port" 'SELECT 1' \
        || die "MariaDB $NODE does not answer on 127.0.0.1:$port"
    if [[ "$NODE" == replica ]] && [[ "$(node_state my primary)" == running ]]; then
        wait_until "MariaDB replica IO/SQL threads running" my_replica_running \
            || die "MariaDB replica is up but replication is not running (SHOW SLAVE STATUS)"
        log "MariaDB replica up on 127.0.0.1:$port, replicating"
    elif [[ "$NODE" == primary ]] && [[ "$(node_state my replica)" == running ]]; then
        # Best effort: the replica's IO thread reconnects (MASTER_CONNECT_RETRY=1).
        if wait_until "MariaDB replica IO/SQL threads running" my_replica_running; then
            log "MariaDB primary up on 127.0.0.1:$port (replica replicating)"
        else
            log "WARNING: MariaDB primary up on 127.0.0.1:$port, but the replica is not replicating"
        fi
    else
        log "MariaDB $NODE up on 127.0.0.1:$port"
    fi
}

redis_restart_node() {
    local port; port="$(redis_port)"
    find_redis_bins || die "Redis binaries (redis-server, redis-cli) not found"
    if ! node_down redis redis; then
        log "Redis is running; stopping it first"
        node_clean_stop
    fi
    require_free_port "$port" "redis"
    log "starting Redis (it reloads its AOF from $REDIS_DIR)"
    redis_launch append
    log "Redis up on 127.0.0.1:$port"
}

cmd_restart() {
    parse_node "${1:-}"; require_node
    case "$NODE_KIND" in
        pg)    pg_restart_node ;;
        my)    my_restart_node ;;
        redis) redis_restart_node ;;
    esac
}

cmd_promote() {
    parse_node "${1:-}"; require_node
    [[ "$NODE_KIND" == pg ]] || die "promote is only for PostgreSQL replicas (replica1, replica2)"
    find_pg_bindir || die "PostgreSQL binaries not found"
    local port state; port="$(pg_port "$NODE")"
    state="$(node_state pg "$NODE")"
    [[ "$state" == running ]] || die "PostgreSQL $NODE is $state; cannot promote it"
    if [[ "$(pg_in_recovery "$port")" == f ]]; then
        log "PostgreSQL $NODE is not in recovery (already a primary)"
        return 0
    fi
    as_pg "$PG_BIN/pg_ctl" promote -D "$PG_DIR/$NODE" -w -t "$WAIT_TIMEOUT" >/dev/null \
        || die "pg_ctl promote of PostgreSQL $NODE failed (log: $LOG_DIR/pg-$NODE.log)"
    wait_until "PostgreSQL $NODE to leave recovery" pg_out_of_recovery "$port" \
        || die "PostgreSQL $NODE is still in recovery after pg_ctl promote"
    log "promoted PostgreSQL $NODE on 127.0.0.1:$port"
}

# ---------------------------------------------------------------------------
# Env file
# ---------------------------------------------------------------------------

# Regenerates $ENV_FILE from whichever clusters currently have data dirs.
write_env() {
    local tmp="$ENV_FILE.tmp"
    {
        echo "# generated by scripts/cluster.sh — source this file"
        echo "export SOR_CLUSTER_DIR=$CLUSTER_DIR"
        if [[ -f "$PG_DIR/port_base" ]]; then
            echo "export SOR_PG_PRIMARY_URL=postgres://postgres@127.0.0.1:$(pg_port primary)/app"
            echo "export SOR_PG_REPLICA_URL=postgres://postgres@127.0.0.1:$(pg_port replica1)/app"
            echo "export SOR_PG_LAGGING_URL=postgres://postgres@127.0.0.1:$(pg_port replica2)/app"
        fi
        if [[ -f "$MY_DIR/port_base" ]]; then
            echo "export SOR_MYSQL_PRIMARY_URL=mysql://root@127.0.0.1:$(my_port primary)/app"
            echo "export SOR_MYSQL_REPLICA_URL=mysql://root@127.0.0.1:$(my_port replica)/app"
        fi
        if [[ -f "$REDIS_DIR/port" ]]; then
            echo "export SOR_REDIS_URL=redis://127.0.0.1:$(redis_port)/"
        fi
        # shard b's URLs under their own names (see SOR_SHARD_B)
        if [[ -f "$SHARD_B_DIR/env" ]]; then
            sed -n 's/^export SOR_\(PG\|MYSQL\)_\(PRIMARY\|REPLICA\)_URL=/export SOR_\1_SHARD_B_\2_URL=/p' "$SHARD_B_DIR/env"
        fi
    } >"$tmp"
    mv -f "$tmp" "$ENV_FILE"
    chmod 644 "$ENV_FILE"
}

# ---------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------

parse_target() {
    case "${1:-all}" in
        pg|postgres|postgresql) echo pg ;;
        mariadb|mysql)          echo mariadb ;;
        redis)                  echo redis ;;
        db)                     echo db ;;
        all)                    echo all ;;
        *) die "unknown target '$1' (expected pg, mariadb, redis, db or all)" ;;
    esac
}

# wants <pg|mariadb|redis> <target> — the target includes that component.
wants() {
    case "$2" in
        "$1"|all) return 0 ;;
        db) [[ "$1" == pg || "$1" == mariadb ]] ;;
        *)  return 1 ;;
    esac
}

# shard_b_target <target> — what shard b gets: its databases only (prints
# nothing for redis).
shard_b_target() {
    case "$1" in
        all)   echo db ;;
        redis) ;;
        *)     echo "$1" ;;
    esac
}

# shard_b <subcommand> <target>: runs this script for shard b (its own dir and ports).
shard_b() {
    CLUSTER_DIR="$SHARD_B_DIR" SOR_PG_PORT_BASE=$((PG_PORT_BASE + 3)) \
        SOR_MYSQL_PORT_BASE=$((MY_PORT_BASE + 2)) SOR_SHARD_B=0 "$0" "$@"
}

cmd_stop() {
    local target; target="$(parse_target "${1:-all}")"
    [[ -d "$CLUSTER_DIR" ]] || { log "nothing to stop ($CLUSTER_DIR does not exist)"; return 0; }
    if [[ -d "$SHARD_B_DIR" && -n "$(shard_b_target "$target")" ]]; then
        shard_b stop "$(shard_b_target "$target")" || true
        [[ "$target" == all || "$target" == db ]] && rm -rf "$SHARD_B_DIR"
    fi
    wants pg      "$target" && pg_stop
    wants mariadb "$target" && my_stop
    wants redis   "$target" && redis_stop
    write_env
    log "stopped $target"
}

cmd_start() {
    local target; target="$(parse_target "${1:-all}")"
    local t0; t0="$(date +%s.%N)"
    ensure_packages "$target"
    prepare_cluster_dir
    # Recreate from scratch: stop whatever we started before, wipe, start again.
    wants pg      "$target" && pg_stop
    wants mariadb "$target" && my_stop
    wants redis   "$target" && redis_stop
    write_env

    if wants pg "$target"; then
        pg_start || { log "PostgreSQL start failed; logs in $LOG_DIR"; exit 1; }
    fi
    if wants mariadb "$target"; then
        my_start || { log "MariaDB start failed; logs in $LOG_DIR"; exit 1; }
    fi
    if wants redis "$target"; then
        redis_start || { log "Redis start failed; logs in $LOG_DIR"; exit 1; }
    fi
    if [[ "${SOR_SHARD_B:-0}" == 1 && -n "$(shard_b_target "$target")" ]]; then
        shard_b start "$(shard_b_target "$target")" >/dev/null || { log "shard b start failed"; exit 1; }
    fi
    write_env
    log "started $target in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s"
    echo
    cat "$ENV_FILE"
    echo
    echo "To use:  source $ENV_FILE"
}

cmd_status() {
    echo "cluster dir: $CLUSTER_DIR"
    pg_status
    my_status
    redis_status
}

cmd_env() {
    [[ -f "$ENV_FILE" ]] || die "no env file at $ENV_FILE (run: $0 start)"
    cat "$ENV_FILE"
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    check_cluster_dir
    case "$cmd" in
        start)  cmd_start "$@" ;;
        stop)   cmd_stop "$@" ;;
        status) cmd_status ;;
        env)    cmd_env ;;
        kill)      cmd_kill "$@" ;;
        pause)     cmd_pause "$@" ;;
        resume)    cmd_resume "$@" ;;
        restart)   cmd_restart "$@" ;;
        stop-node) cmd_stop_node "$@" ;;
        promote)   cmd_promote "$@" ;;
        pids)      cmd_pids "$@" ;;
        -h|--help|help) usage 0 ;;
        *) usage 1 ;;
    esac
}

main "$@"
