//! An isolated PostgreSQL cluster for destructive fault-injection tests: killing, pausing,
//! restarting and promoting nodes.
//!
//! Every [`FaultCluster`] is started by `scripts/cluster.sh` in its own `CLUSTER_DIR` under
//! [`std::env::temp_dir()`] with its own port base (58000..63000, three ports each), so several
//! can run at once (test threads and test processes) and none touches the default cluster that
//! the other integration tests share. It is stopped and deleted when dropped.
//!
//! The methods block (they run the script); from async tests that is fine on the
//! multi-threaded runtime, or wrap them in `tokio::task::spawn_blocking`. Starting a cluster
//! takes ~10 s, a `restart` of a node ~1 s, the other faults well under a second.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use sea_orm_replica::{NodeConfig, ReplicatedDatabase, ReplicatedDatabaseBuilder};

/// `scripts/cluster.sh` of this crate.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh");

/// Port bases are taken from `PORT_FIRST..PORT_LAST` in steps of `PORT_STEP`.
const PORT_FIRST: u16 = 58000;
const PORT_LAST: u16 = 63000;
const PORT_STEP: u16 = 10;

/// How many port bases `start_pg` tries when the script reports a port already in use
/// (another process took it between our check and the server's bind).
const START_ATTEMPTS: u32 = 4;

/// Makes port bases and directories unique within this process.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// The PostgreSQL node names `scripts/cluster.sh` knows.
const PG_NODES: [&str; 3] = ["primary", "replica1", "replica2"];

/// A throw-away PostgreSQL cluster of its own: `primary`, `replica1` (streaming) and
/// `replica2` (streaming, replay delayed), on 127.0.0.1. Dropping it stops every node
/// (whatever state the faults left it in) and deletes its directory.
#[derive(Debug)]
pub struct FaultCluster {
    dir: PathBuf,
    port_base: u16,
    primary_url: String,
    replica1_url: String,
    replica2_url: String,
    /// Nodes paused by [`FaultCluster::pause`] and not resumed since (resumed on drop).
    paused: Mutex<Vec<String>>,
}

impl FaultCluster {
    /// Starts a fresh PostgreSQL cluster (primary, replica1, replica2 with the given replay
    /// delay, a PostgreSQL time value such as `"500ms"`, or `"0"` for no delay) in its own
    /// `CLUSTER_DIR` under [`std::env::temp_dir()`] with a unique port base, so several can run
    /// at once and none touches the default cluster.
    ///
    /// Returns `Err` with the tail of the script's output if it fails.
    pub fn start_pg(lag_delay: &str) -> Result<FaultCluster, String> {
        let mut last_err = String::new();
        for _ in 0..START_ATTEMPTS {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port_base = free_port_base(n)?;
            let dir = std::env::temp_dir().join(format!(
                "sor-fault-{}-{}-{}",
                std::process::id(),
                n,
                port_base
            ));
            let out = script(
                &dir,
                port_base,
                &["start", "pg"],
                &[("PG_LAG_DELAY", lag_delay)],
            )
            .map_err(|e| format!("cannot run {SCRIPT}: {e}"))?;
            if out.status.success() {
                let env = std::fs::read_to_string(dir.join("env"))
                    .map_err(|e| format!("cannot read {}/env: {e}", dir.display()));
                let urls = env.and_then(|env| {
                    Ok((
                        env_var(&env, "SOR_PG_PRIMARY_URL")?,
                        env_var(&env, "SOR_PG_REPLICA_URL")?,
                        env_var(&env, "SOR_PG_LAGGING_URL")?,
                    ))
                });
                match urls {
                    Ok((primary_url, replica1_url, replica2_url)) => {
                        return Ok(FaultCluster {
                            dir,
                            port_base,
                            primary_url,
                            replica1_url,
                            replica2_url,
                            paused: Mutex::new(Vec::new()),
                        })
                    }
                    Err(e) => {
                        cleanup(&dir, port_base, false);
                        return Err(e);
                    }
                }
            }
            last_err = format!(
                "scripts/cluster.sh start pg (CLUSTER_DIR={}, SOR_PG_PORT_BASE={port_base}) failed \
                 with {}:\n{}",
                dir.display(),
                out.status,
                tail(&out, 30)
            );
            cleanup(&dir, port_base, false);
            // A port taken by someone else in the meantime: try another base.
            if !String::from_utf8_lossy(&out.stderr).contains("in use") {
                break;
            }
        }
        Err(last_err)
    }

    /// URL of the primary's `app` database (`postgres://postgres@127.0.0.1:<port>/app`).
    pub fn primary_url(&self) -> &str {
        &self.primary_url
    }

    /// URL of replica1's `app` database (a streaming standby that keeps up).
    pub fn replica1_url(&self) -> &str {
        &self.replica1_url
    }

    /// URL of replica2's `app` database (a streaming standby with the replay delay).
    pub fn replica2_url(&self) -> &str {
        &self.replica2_url
    }

    /// The TCP port of `node` (`"primary"`, `"replica1"` or `"replica2"`) on 127.0.0.1.
    ///
    /// Panics on another node name.
    pub fn port(&self, node: &str) -> u16 {
        match node {
            "primary" => self.port_base,
            "replica1" => self.port_base + 1,
            "replica2" => self.port_base + 2,
            other => panic!("unknown PostgreSQL node {other:?} (primary, replica1 or replica2)"),
        }
    }

    /// This cluster's `CLUSTER_DIR` (logs in `logs/pg-<node>.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `kill -9` the node's postmaster and all its processes; returns once its port refuses
    /// connections. Open connections to it break. No-op if the node is down.
    pub fn kill(&self, node: &str) {
        self.fault("kill", node);
        self.forget_paused(node);
    }

    /// SIGSTOP the node's postmaster and all its processes: open connections hang, new ones
    /// hang in the startup handshake (set a connect timeout). Panics if the node is down.
    pub fn pause(&self, node: &str) {
        self.fault("pause", node);
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        if !paused.iter().any(|n| n == node) {
            paused.push(node.to_owned());
        }
    }

    /// SIGCONT every process of the node (after [`FaultCluster::pause`]).
    pub fn resume(&self, node: &str) {
        self.fault("resume", node);
        self.forget_paused(node);
    }

    /// Starts a killed or stopped node again with the same data and configuration and waits
    /// until it accepts connections; a replica still in recovery also streams again when the
    /// primary is up. A running (or paused) node is stopped cleanly first.
    pub fn restart(&self, node: &str) {
        self.fault("restart", node);
        self.forget_paused(node);
    }

    /// Clean shutdown (`pg_ctl stop -m fast`) of the node, waiting until it is gone.
    /// No-op if it is down.
    pub fn stop_node(&self, node: &str) {
        self.fault("stop-node", node);
        self.forget_paused(node);
    }

    /// Promotes a replica (`pg_ctl promote`) and waits until `pg_is_in_recovery()` is false
    /// on it. No-op on a node that is not in recovery; panics if the node is down or paused.
    pub fn promote(&self, node: &str) {
        self.fault("promote", node);
    }

    /// The pids of the node's processes, the postmaster first (empty if it is down).
    pub fn pids(&self, node: &str) -> Vec<u32> {
        self.fault("pids", node)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Runs `scripts/cluster.sh <args>` for this cluster; `Ok(stdout)` on success,
    /// `Err(description with the output's tail)` otherwise.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = script(&self.dir, self.port_base, args, &[])
            .map_err(|e| format!("cannot run {SCRIPT}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "scripts/cluster.sh {} (CLUSTER_DIR={}) failed with {}:\n{}",
                args.join(" "),
                self.dir.display(),
                out.status,
                tail(&out, 30)
            ))
        }
    }

    /// `scripts/cluster.sh <cmd> <node>`, panicking with the script's output on failure.
    fn fault(&self, cmd: &str, node: &str) -> String {
        assert!(
            PG_NODES.contains(&node),
            "unknown PostgreSQL node {node:?} (primary, replica1 or replica2)"
        );
        self.run(&[cmd, node]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn forget_paused(&self, node: &str) {
        self.paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|n| n != node);
    }
}

impl Drop for FaultCluster {
    /// Resumes the nodes this fixture paused, then `scripts/cluster.sh stop pg` (which also
    /// resumes paused processes and kills whatever does not stop) and deletes the directory,
    /// ignoring errors. While panicking the directory's logs are kept for diagnosis.
    fn drop(&mut self) {
        let paused = std::mem::take(self.paused.get_mut().unwrap_or_else(|e| e.into_inner()));
        for node in paused {
            let _ = script(&self.dir, self.port_base, &["resume", &node], &[]);
        }
        cleanup(&self.dir, self.port_base, std::thread::panicking());
    }
}

/// Runs the script with this cluster's `CLUSTER_DIR` and port base.
fn script(
    dir: &Path,
    port_base: u16,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::io::Result<Output> {
    let mut cmd = Command::new("bash");
    cmd.arg(SCRIPT)
        .args(args)
        .env("CLUSTER_DIR", dir)
        .env("SOR_PG_PORT_BASE", port_base.to_string())
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
}

/// `stop pg`, then removes the directory (unless `keep_logs`, when only the data is gone).
fn cleanup(dir: &Path, port_base: u16, keep_logs: bool) {
    if !dir.exists() {
        return;
    }
    let _ = script(dir, port_base, &["stop", "pg"], &[]);
    if keep_logs {
        eprintln!("fault cluster logs kept in {}/logs", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The last `lines` lines of the script's stderr and stdout.
pub fn tail(out: &Output, lines: usize) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `NAME`'s value from lines `export NAME=value` of the env file.
pub fn env_var(env: &str, name: &str) -> Result<String, String> {
    env.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
        .ok_or_else(|| format!("{name} missing from the env file"))
}

/// A port base whose three ports are free on 127.0.0.1, derived from the pid and `n` so
/// that concurrent processes and threads start from different places.
fn free_port_base(n: u32) -> Result<u16, String> {
    let slots = u32::from((PORT_LAST - PORT_FIRST) / PORT_STEP);
    let start = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(n.wrapping_mul(13))
        % slots;
    (0..slots)
        .map(|i| PORT_FIRST + ((start + i) % slots) as u16 * PORT_STEP)
        .find(|&base| (base..base + 3).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()))
        .ok_or_else(|| format!("no free port base in {PORT_FIRST}..{PORT_LAST}"))
}

/// The statement bound of [`FaultCluster::builder`]'s nodes (the client adds 250 ms).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_millis(500);
/// Their acquire and connect timeout.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

fn node(url: &str, name: &str) -> NodeConfig {
    NodeConfig::new(url)
        .name(name)
        .max_connections(16)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_timeout(ACQUIRE_TIMEOUT)
        .statement_timeout(STATEMENT_TIMEOUT)
}

impl FaultCluster {
    /// A handle over the three nodes, with bounds a fault test can rely on and a fast monitor.
    pub fn builder(&self) -> ReplicatedDatabaseBuilder {
        ReplicatedDatabase::builder()
            .primary_node(node(self.primary_url(), "primary"))
            .replica_node(node(self.replica1_url(), "replica1"))
            .replica_node(node(self.replica2_url(), "replica2"))
            .monitor_interval(Duration::from_millis(100))
            .check_timeout(Duration::from_millis(500))
            .backoff(Duration::from_millis(200), Duration::from_secs(2))
    }
}
