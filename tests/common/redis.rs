//! A private Redis broker for tests (the durable write-behind queue on Redis Streams): never the
//! machine's own Redis on 6379.
//!
//! Every [`PrivateRedis`] is started by `scripts/cluster.sh start redis` in its own
//! `CLUSTER_DIR` under [`std::env::temp_dir()`] on its own port (63100..64000, apart from
//! [`super::fault_cluster::FaultCluster`]'s 58000..63000), so several can run at once (test
//! threads and test processes). It listens on 127.0.0.1 only, without a password, and keeps its
//! data in an append-only file fsynced on every write (`appendfsync always`, no RDB snapshots):
//! whatever it acknowledged survives [`PrivateRedis::kill`] and is reloaded by
//! [`PrivateRedis::restart`]. It is stopped and its directory deleted when dropped.
//!
//! The methods block (they run the script); from async tests that is fine on the
//! multi-threaded runtime, or wrap them in `tokio::task::spawn_blocking`. Starting takes well
//! under a second, as do the faults.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::fault_cluster::{env_var, tail};

/// `scripts/cluster.sh` of this crate.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh");

/// Ports are taken from `PORT_FIRST..PORT_LAST`.
const PORT_FIRST: u16 = 63100;
const PORT_LAST: u16 = 64000;

/// How many ports `start` tries when the script reports a port already in use (another
/// process took it between our check and the server's bind).
const START_ATTEMPTS: u32 = 4;

/// Makes ports and directories unique within this process.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A throw-away Redis server of its own on 127.0.0.1. Dropping it stops the server (whatever
/// state the faults left it in) and deletes its directory.
#[derive(Debug)]
pub struct PrivateRedis {
    dir: PathBuf,
    port: u16,
    url: String,
    /// Paused by [`PrivateRedis::pause`] and not resumed since (resumed on drop).
    paused: AtomicBool,
}

impl PrivateRedis {
    /// Starts a fresh, empty Redis in its own `CLUSTER_DIR` under [`std::env::temp_dir()`] on
    /// a free port, and waits until it answers `PING`.
    ///
    /// Returns `Err` with the tail of the script's output if it fails (for instance when
    /// `redis-server` is missing and cannot be installed).
    pub fn start() -> Result<PrivateRedis, String> {
        let mut last_err = String::new();
        for _ in 0..START_ATTEMPTS {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = free_port(n)?;
            let dir = std::env::temp_dir().join(format!(
                "sor-redis-{}-{}-{}",
                std::process::id(),
                n,
                port
            ));
            let out = script(&dir, port, &["start", "redis"])
                .map_err(|e| format!("cannot run {SCRIPT}: {e}"))?;
            if out.status.success() {
                let url = std::fs::read_to_string(dir.join("env"))
                    .map_err(|e| format!("cannot read {}/env: {e}", dir.display()))
                    .and_then(|env| env_var(&env, "SOR_REDIS_URL"));
                return match url {
                    Ok(url) => Ok(PrivateRedis {
                        dir,
                        port,
                        url,
                        paused: AtomicBool::new(false),
                    }),
                    Err(e) => {
                        cleanup(&dir, port, false);
                        Err(e)
                    }
                };
            }
            last_err = format!(
                "scripts/cluster.sh start redis (CLUSTER_DIR={}, SOR_REDIS_PORT={port}) failed \
                 with {}:\n{}",
                dir.display(),
                out.status,
                tail(&out, 30)
            );
            cleanup(&dir, port, false);
            // A port taken by someone else in the meantime: try another one.
            if !String::from_utf8_lossy(&out.stderr).contains("in use") {
                break;
            }
        }
        Err(last_err)
    }

    /// `redis://127.0.0.1:<port>/` (database 0, no password).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// This server's `CLUSTER_DIR` (data in `redis/`, its log in `logs/redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `kill -9` the server; returns once its port refuses connections. Open connections
    /// break; every write it acknowledged is in its append-only file. No-op if it is down.
    pub fn kill(&self) {
        self.fault("kill");
        self.paused.store(false, Ordering::Relaxed);
    }

    /// Starts a killed or stopped server again from the same directory and waits until it
    /// answers `PING`, i.e. has reloaded its append-only file. A running (or paused) server is
    /// shut down cleanly first.
    pub fn restart(&self) {
        self.fault("restart");
        self.paused.store(false, Ordering::Relaxed);
    }

    /// SIGSTOP the server: open connections hang, new ones complete the TCP handshake (kernel
    /// backlog) and then hang too (set client timeouts). Panics if it is down.
    pub fn pause(&self) {
        self.fault("pause");
        self.paused.store(true, Ordering::Relaxed);
    }

    /// SIGCONT the server (after [`PrivateRedis::pause`]); no-op if it is down.
    pub fn resume(&self) {
        self.fault("resume");
        self.paused.store(false, Ordering::Relaxed);
    }

    /// Clean shutdown (SIGTERM) of the server, waiting until it is gone. No-op if it is down.
    pub fn stop_node(&self) {
        self.fault("stop-node");
        self.paused.store(false, Ordering::Relaxed);
    }

    /// Runs `redis-cli -e -h 127.0.0.1 -p <port> <args>` (bounded by `timeout 10`; `-e` needs
    /// redis-cli 7): `Ok(stdout)` trimmed (raw replies, one element per line), `Err(description)`
    /// if it cannot connect or the reply is an error.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("timeout")
            .arg("10")
            .arg("redis-cli")
            .args(["-e", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "redis-cli -p {} {} failed with {}:\n{}",
                self.port,
                args.join(" "),
                out.status,
                tail(&out, 10)
            ))
        }
    }

    /// Runs `scripts/cluster.sh <args>` for this server; `Ok(stdout)` on success,
    /// `Err(description with the output's tail)` otherwise.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let out =
            script(&self.dir, self.port, args).map_err(|e| format!("cannot run {SCRIPT}: {e}"))?;
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

    /// `scripts/cluster.sh <cmd> redis`, panicking with the script's output on failure.
    fn fault(&self, cmd: &str) -> String {
        self.run(&[cmd, "redis"]).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for PrivateRedis {
    /// Resumes the server if this fixture paused it, then `scripts/cluster.sh stop redis`
    /// (which also resumes a paused server and kills it if it does not stop) and deletes the
    /// directory, ignoring errors. While panicking the log is kept for diagnosis.
    fn drop(&mut self) {
        if *self.paused.get_mut() {
            let _ = script(&self.dir, self.port, &["resume", "redis"]);
        }
        cleanup(&self.dir, self.port, std::thread::panicking());
    }
}

/// Runs the script with this server's `CLUSTER_DIR` and port.
fn script(dir: &Path, port: u16, args: &[&str]) -> std::io::Result<Output> {
    Command::new("bash")
        .arg(SCRIPT)
        .args(args)
        .env("CLUSTER_DIR", dir)
        .env("SOR_REDIS_PORT", port.to_string())
        .stdin(std::process::Stdio::null())
        .output()
}

/// `stop redis`, then removes the directory (unless `keep_logs`, when only the data is gone).
fn cleanup(dir: &Path, port: u16, keep_logs: bool) {
    if !dir.exists() {
        return;
    }
    let _ = script(dir, port, &["stop", "redis"]);
    if keep_logs {
        eprintln!("private redis log kept in {}/logs", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A port free on 127.0.0.1, derived from the pid and `n` so that concurrent processes and
/// threads start from different places.
fn free_port(n: u32) -> Result<u16, String> {
    let slots = u32::from(PORT_LAST - PORT_FIRST);
    let start = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(n.wrapping_mul(13))
        % slots;
    (0..slots)
        .map(|i| PORT_FIRST + ((start + i) % slots) as u16)
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .ok_or_else(|| format!("no free port in {PORT_FIRST}..{PORT_LAST}"))
}
