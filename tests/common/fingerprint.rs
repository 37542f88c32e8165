//! Fingerprints of a whole cluster (primary and every replica), taken through admin connections
//! of their own — plain sqlx pools, never the library under test — so that a test can show that
//! *nothing* changed on any node: data, schema, sequences, large objects, server settings,
//! replication, and session-level leftovers such as advisory locks.
//!
//! Each node gets its own admin pool, tagged so it can be told apart from the library's
//! connections (PostgreSQL `application_name` `sor_attack_*`; MariaDB a user of its own), and a
//! *sentinel*: one idle connection whose survival shows that nobody terminated other sessions.
//!
//! [`Fingerprinter::take`] first reads the primary, then waits (polling, with a deadline) until
//! every data replica has replayed the primary's position, then reads the replicas, so a
//! fingerprint is one consistent picture of the cluster. A replica marked
//! [`NodeRole::Lagging`] (one that replays late on purpose and that no test routes to) is
//! checked for its server state and replication only: its data is the primary's, replayed later.
//!
//! [`Fingerprint::diff`] prints exactly what changed, one line per entry.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sea_orm::sqlx::{self, AssertSqlSafe, Column, Row};
use sea_orm::DbBackend;

/// `application_name` of the PostgreSQL admin pools.
pub const ADMIN_APP: &str = "sor_attack_admin";
/// `application_name` of the PostgreSQL sentinel connections.
pub const SENTINEL_APP: &str = "sor_attack_sentinel";
/// `application_name` of the PostgreSQL `LISTEN` connection.
pub const LISTENER_APP: &str = "sor_attack_listener";
/// The channel the fingerprint listens on (PostgreSQL), and the one it syncs on.
pub const NOTIFY_CHANNEL: &str = "sor_atk";
const SYNC_CHANNEL: &str = "sor_atk_sync";

/// MariaDB global variables that move on their own (replication positions): checked
/// separately (`@@gtid_binlog_pos` on the primary, replication status on replicas).
const MY_VOLATILE_GLOBALS: &[&str] = &[
    "GTID_BINLOG_POS",
    "GTID_BINLOG_STATE",
    "GTID_CURRENT_POS",
    "GTID_SLAVE_POS",
    "GTID_IO_POS",
];

/// `mysql.*` tables that the server changes by itself (statistics, logs, replication state).
const MY_VOLATILE_TABLES: &[&str] = &[
    "gtid_slave_pos",
    "innodb_index_stats",
    "innodb_table_stats",
    "general_log",
    "slow_log",
    "transaction_registry",
];

/// One picture of the cluster: `"<node>: <category>/<item>"` → value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint {
    pub entries: BTreeMap<String, String>,
}

impl Fingerprint {
    /// What changed from `self` to `after`, one line per entry: `changed`, `added`, `removed`.
    pub fn diff(&self, after: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in &self.entries {
            match after.entries.get(k) {
                None => out.push(format!("removed  {k} (was {})", short(v))),
                Some(w) if w != v => {
                    out.push(format!("changed  {k}: {} -> {}", short(v), short(w)))
                }
                _ => {}
            }
        }
        for (k, w) in &after.entries {
            if !self.entries.contains_key(k) {
                out.push(format!("added    {k} = {}", short(w)));
            }
        }
        out
    }

    /// The keys that differ between `self` and `after` (either side).
    pub fn changed_keys<'a>(&'a self, after: &'a Fingerprint) -> Vec<&'a str> {
        let mut keys: Vec<&str> = self
            .entries
            .iter()
            .filter(|(k, v)| after.entries.get(*k) != Some(v))
            .map(|(k, _)| k.as_str())
            .collect();
        keys.extend(
            after
                .entries
                .keys()
                .filter(|k| !self.entries.contains_key(*k))
                .map(String::as_str),
        );
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// Entries of `node` whose item starts with `prefix` (`"data/"`, `"schema/rel/"`, …), as
    /// `(item, value)` with the node part removed.
    pub fn items<'a>(
        &'a self,
        node: &'a str,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let head = format!("{node}: {prefix}");
        let skip = node.len() + 2;
        self.entries
            .range(head.clone()..)
            .take_while(move |(k, _)| k.starts_with(&head))
            .map(move |(k, v)| (&k[skip..], v.as_str()))
    }
}

fn short(v: &str) -> String {
    let v = v.replace('\n', "⏎");
    if v.chars().count() > 160 {
        format!("{}…", v.chars().take(160).collect::<String>())
    } else {
        v
    }
}

/// What a node is to the fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRole {
    Primary,
    /// A replica that keeps up: waited for, then read in full.
    Replica,
    /// A replica that replays late on purpose: server state and replication only.
    Lagging,
}

/// A node to fingerprint: its name in the report, its role, and the admin URL (a user with
/// full rights; on a MariaDB replica one that may also write, for repairs).
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub role: NodeRole,
    pub url: String,
}

/// An admin pool of one backend; every query runs over the text protocol (`raw_sql`) and every
/// value comes back as text.
#[derive(Clone, Debug)]
pub enum Admin {
    Pg(PgPool),
    My(MySqlPool),
    Lite(SqlitePool),
}

pub type Rows = Vec<Vec<Option<String>>>;

/// Errors that mean "the connection died" (terminated, killed, reset): worth one more try on
/// a fresh connection.
fn is_connection_error(err: &sqlx::Error) -> bool {
    match err {
        // (not `PoolTimedOut`: no connection could be made, a retry would wait as long again)
        sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            code.starts_with("08")
                || code == "40001" // a standby cancelled the read: conflict with recovery
                || code == "57P04"
                || db.message().contains("conflict with recovery")
                || code == "57P01"
                || code == "57P02"
                || code == "57P03"
                || code == "70100" // MariaDB: query interrupted / connection killed
                || db.message().contains("Connection was killed")
                || db.message().contains("server has gone away")
        }
        _ => false,
    }
}

impl Admin {
    /// Every row of `sql` (one or more statements), each value as text.
    pub async fn rows(&self, sql: &str) -> Result<Rows, String> {
        Ok(self
            .named_rows(sql)
            .await?
            .into_iter()
            .map(|r| r.into_iter().map(|(_, v)| v).collect())
            .collect())
    }

    /// Every row of `sql`, each value with its column name.
    pub async fn named_rows(
        &self,
        sql: &str,
    ) -> Result<Vec<Vec<(String, Option<String>)>>, String> {
        let mut last = String::new();
        for attempt in 0..4 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            let result = match self {
                Admin::Pg(p) => sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                    .fetch_all(p)
                    .await
                    .map(|rows| rows.iter().map(text_row).collect::<Vec<_>>()),
                Admin::My(p) => sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                    .fetch_all(p)
                    .await
                    .map(|rows| rows.iter().map(text_row).collect::<Vec<_>>()),
                Admin::Lite(p) => sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                    .fetch_all(p)
                    .await
                    .map(|rows| rows.iter().map(text_row).collect::<Vec<_>>()),
            };
            match result {
                Ok(rows) => return Ok(rows),
                Err(err) if is_connection_error(&err) => last = err.to_string(),
                Err(err) => return Err(err.to_string()),
            }
        }
        Err(last)
    }

    /// Runs `sql` (one or more statements), discarding rows.
    pub async fn exec(&self, sql: &str) -> Result<(), String> {
        self.rows(sql).await.map(|_| ())
    }

    /// The first column of the first row.
    pub async fn value(&self, sql: &str) -> Result<Option<String>, String> {
        Ok(self
            .rows(sql)
            .await?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .flatten())
    }

    pub async fn close(&self) {
        match self {
            Admin::Pg(p) => p.close().await,
            Admin::My(p) => p.close().await,
            Admin::Lite(p) => p.close().await,
        }
    }

    /// A PostgreSQL admin pool.
    pub async fn pg(url: &str, app: &str, max: u32) -> Result<Admin, String> {
        let opts: PgConnectOptions = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let opts = opts
            .application_name(app)
            .options([("statement_timeout", "20s"), ("lock_timeout", "2s")]);
        PgPoolOptions::new()
            .max_connections(max)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .map(Admin::Pg)
            .map_err(|e| format!("admin connection to {url}: {e}"))
    }

    /// A MariaDB admin pool; its sessions give up on a lock after 2 s.
    pub async fn my(url: &str, max: u32) -> Result<Admin, String> {
        let opts: MySqlConnectOptions = url.parse().map_err(|e| format!("{url}: {e}"))?;
        MySqlPoolOptions::new()
            .max_connections(max)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql(
                        "SET SESSION lock_wait_timeout = 2, innodb_lock_wait_timeout = 2, \
                         max_statement_time = 20, group_concat_max_len = 16777216",
                    )
                    .execute(conn)
                    .await
                    .map(|_| ())
                })
            })
            .connect_with(opts)
            .await
            .map(Admin::My)
            .map_err(|e| format!("admin connection to {url}: {e}"))
    }

    /// An SQLite admin connection (one, so that `PRAGMA data_version` is its own).
    pub async fn lite(url: &str) -> Result<Admin, String> {
        let opts: SqliteConnectOptions = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let opts = opts.busy_timeout(Duration::from_secs(5));
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await
            .map(Admin::Lite)
            .map_err(|e| format!("admin connection to {url}: {e}"))
    }
}

fn text_row<R: Row>(row: &R) -> Vec<(String, Option<String>)>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
{
    (0..row.len())
        .map(|i| {
            let name = row.columns()[i].name().to_owned();
            let value = row
                .try_get_unchecked::<Option<String>, _>(i)
                .unwrap_or_else(|e| Some(format!("<undecodable: {e}>")));
            (name, value)
        })
        .collect()
}

/// A node with its admin pool and sentinel.
pub struct AdminNode {
    pub name: String,
    pub role: NodeRole,
    pub url: String,
    pub admin: Admin,
    sentinel: Option<Admin>,
    /// MariaDB: the sentinel's connection id.
    sentinel_id: Mutex<Option<String>>,
    /// MariaDB: last hash of the global variables, and the variables then.
    globals: Mutex<Option<(String, BTreeMap<String, String>)>>,
}

impl AdminNode {
    /// `Some(why)` when nothing listens on the node's port (a server that was shut down): a
    /// connection attempt through the pool would wait its whole acquire timeout instead.
    pub async fn down(&self) -> Option<String> {
        let url = url::Url::parse(&self.url).ok()?;
        let (host, port) = (url.host_str()?.to_owned(), url.port()?);
        let connect = tokio::net::TcpStream::connect((host.as_str(), port));
        match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("down: {host}:{port}: {e}")),
            Err(_) => Some(format!("down: {host}:{port} does not accept connections")),
        }
    }

    /// (Re)opens the sentinel connection: one idle session that an attack terminating other
    /// sessions would kill.
    pub async fn revive_sentinel(&self) -> Result<(), String> {
        if let Some(s) = &self.sentinel {
            match s {
                Admin::My(_) => {
                    let id = s.value("SELECT CONNECTION_ID()").await?;
                    *self.sentinel_id.lock().unwrap() = id;
                }
                _ => {
                    s.exec("SELECT 1").await?;
                }
            }
        }
        Ok(())
    }
}

/// Counts notifications on [`NOTIFY_CHANNEL`] (PostgreSQL primary).
struct Notifications {
    count: Arc<AtomicU64>,
    synced: Arc<AtomicU64>,
    next: AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Takes fingerprints of one cluster.
pub struct Fingerprinter {
    pub backend: DbBackend,
    pub nodes: Vec<AdminNode>,
    /// Directories whose files are part of the fingerprint (where attacks would write files).
    pub dirs: Vec<PathBuf>,
    /// MariaDB named locks (`GET_LOCK`) to check.
    pub lock_names: Vec<String>,
    /// How long a replica may take to replay the primary's position.
    pub catch_up: Duration,
    notifications: Option<Notifications>,
}

impl Fingerprinter {
    /// Opens an admin pool and a sentinel per node (PostgreSQL: and a `LISTEN` connection on
    /// the primary).
    pub async fn connect(
        backend: DbBackend,
        specs: Vec<NodeSpec>,
        dirs: Vec<PathBuf>,
        lock_names: Vec<String>,
    ) -> Result<Fingerprinter, String> {
        let mut nodes = Vec::new();
        for spec in specs {
            let (admin, sentinel) = match backend {
                DbBackend::Postgres => (
                    Admin::pg(&spec.url, ADMIN_APP, 3).await?,
                    Some(Admin::pg(&spec.url, SENTINEL_APP, 1).await?),
                ),
                DbBackend::MySql => (
                    Admin::my(&spec.url, 3).await?,
                    Some(Admin::my(&spec.url, 1).await?),
                ),
                _ => (Admin::lite(&spec.url).await?, None),
            };
            let node = AdminNode {
                name: spec.name,
                role: spec.role,
                url: spec.url,
                admin,
                sentinel,
                sentinel_id: Mutex::new(None),
                globals: Mutex::new(None),
            };
            node.revive_sentinel().await?;
            nodes.push(node);
        }
        let notifications = match backend {
            DbBackend::Postgres => {
                let primary = nodes
                    .iter()
                    .find(|n| n.role == NodeRole::Primary)
                    .ok_or("no primary")?;
                Some(listen(&primary.url).await?)
            }
            _ => None,
        };
        Ok(Fingerprinter {
            backend,
            nodes,
            dirs,
            lock_names,
            catch_up: Duration::from_secs(10),
            notifications,
        })
    }

    pub fn primary(&self) -> &AdminNode {
        self.nodes
            .iter()
            .find(|n| n.role == NodeRole::Primary)
            .expect("a primary")
    }

    pub fn node(&self, name: &str) -> Option<&AdminNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub async fn close(&self) {
        for n in &self.nodes {
            n.admin.close().await;
            if let Some(s) = &n.sentinel {
                s.close().await;
            }
        }
    }

    /// The whole cluster's fingerprint, replicas caught up with the primary first.
    pub async fn take(&self) -> Fingerprint {
        let mut fp = Fingerprint::default();
        // a node that is down or hangs must not hold the whole run up
        let bound = self.catch_up + Duration::from_secs(20);
        let taken = match self.backend {
            DbBackend::Postgres => tokio::time::timeout(bound, self.take_pg(&mut fp)).await,
            DbBackend::MySql => tokio::time::timeout(bound, self.take_my(&mut fp)).await,
            _ => Ok(()),
        };
        if taken.is_err() {
            fp.entries.insert(
                "cluster: error".into(),
                format!("no fingerprint within {bound:?}"),
            );
        }
        match self.backend {
            DbBackend::Postgres | DbBackend::MySql => {}
            _ => {
                for node in &self.nodes {
                    let entries = lite_entries(&node.admin).await;
                    put(&mut fp, &node.name, entries);
                }
            }
        }
        for dir in &self.dirs {
            let mut names = Vec::new();
            if let Ok(read) = std::fs::read_dir(dir) {
                for e in read.flatten() {
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    names.push((e.file_name().to_string_lossy().into_owned(), len));
                }
            }
            for (name, len) in names {
                fp.entries.insert(
                    format!("files: {}/{name}", dir.display()),
                    format!("{len} bytes"),
                );
            }
        }
        fp
    }

    /// Ends every session the library under test holds on `database` (idle ones only, so a
    /// statement of the library's monitor in flight is not cut): the next case starts from
    /// fresh sessions. Admin, sentinel and listener sessions and replication are left alone.
    pub async fn reset_sessions(&self, database: &str) {
        for node in &self.nodes {
            let sql = match self.backend {
                DbBackend::Postgres => format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
                     AND state IS DISTINCT FROM 'active' \
                     AND application_name NOT LIKE 'sor_attack_%' \
                     AND datname = '{database}'"
                ),
                DbBackend::MySql => {
                    let ids = node
                        .admin
                        .rows(&format!(
                            "SELECT id FROM information_schema.processlist \
                             WHERE id <> CONNECTION_ID() AND command = 'Sleep' \
                             AND user NOT IN ('system user', 'sor_attack_admin', 'event_scheduler') \
                             AND (db = '{database}' OR user = 'sor_attack_priv')"
                        ))
                        .await
                        .unwrap_or_default();
                    let kills: Vec<String> = ids
                        .into_iter()
                        .filter_map(|r| r.into_iter().next().flatten())
                        .map(|id| format!("KILL CONNECTION {id}"))
                        .collect();
                    for k in kills {
                        let _ = node.admin.exec(&k).await;
                    }
                    continue;
                }
                _ => continue,
            };
            let _ = node.admin.exec(&sql).await;
        }
    }

    /// Every node at once; a data replica that had not yet replayed the primary's position
    /// when it was read is waited for and read again.
    /// Only what sessions hold (locks, open transactions, temporary relations), every node
    /// at once: cheap enough to run after every case.
    /// `replicas`: the replicas too (those that keep up; a lagging replica is never used).
    pub async fn sessions(&self, replicas: bool) -> Fingerprint {
        let nodes = self.nodes.iter().filter(|n| match n.role {
            NodeRole::Primary => true,
            NodeRole::Replica => replicas,
            NodeRole::Lagging => false,
        });
        let reads = nodes.map(|node| async move {
            if let Some(down) = node.down().await {
                return (
                    node.name.clone(),
                    BTreeMap::from([("error".to_owned(), down)]),
                );
            }
            let rows = match self.backend {
                DbBackend::Postgres => node.admin.named_rows(PG_SESSION_PARTS).await,
                DbBackend::MySql => node.admin.named_rows(&my_session_sql(self, node)).await,
                _ => Ok(Vec::new()),
            };
            let mut out = BTreeMap::new();
            match rows {
                Ok(rows) => my_session_rows(rows, &mut out),
                Err(e) => {
                    out.insert("error".to_owned(), e);
                }
            }
            (node.name.clone(), out)
        });
        let mut fp = Fingerprint::default();
        for (name, entries) in futures_util::future::join_all(reads).await {
            put(&mut fp, &name, entries);
        }
        fp
    }

    async fn take_pg(&self, fp: &mut Fingerprint) {
        let primary = self.primary();
        let others: Vec<&AdminNode> = self
            .nodes
            .iter()
            .filter(|n| n.role != NodeRole::Primary)
            .collect();
        let read_primary = async {
            let entries = pg_entries(primary, true, true).await;
            let notified = match &self.notifications {
                Some(n) => Some(n.sync(&primary.admin).await),
                None => None,
            };
            (entries, notified)
        };
        let read_others = futures_util::future::join_all(
            others
                .iter()
                .map(|n| pg_entries(n, n.role == NodeRole::Replica, false)),
        );
        let ((primary_read, notified), other_reads) =
            futures_util::future::join(read_primary, read_others).await;
        let lsn = match primary_read {
            Ok((entries, lsn)) => {
                put(fp, &primary.name, entries);
                lsn
            }
            Err(e) => {
                fp.entries.insert(format!("{}: error", primary.name), e);
                None
            }
        };
        if let Some(entry) = notified {
            fp.entries.insert(
                format!("{}: server/notifications/{NOTIFY_CHANNEL}", primary.name),
                entry,
            );
        }
        let rereads = others.iter().zip(other_reads).map(|(node, read)| {
            let lsn = lsn.clone();
            async move {
                let data = node.role == NodeRole::Replica;
                let behind = match (&read, &lsn) {
                    (Ok((_, Some(replay))), Some(lsn)) => lsn_value(replay) < lsn_value(lsn),
                    _ => false,
                };
                let mut read = read;
                let mut note = None;
                if data && behind {
                    if let Some(lsn) = &lsn {
                        note = pg_wait_replayed(&node.admin, lsn, self.catch_up).await;
                    }
                    read = pg_entries(node, data, false).await;
                }
                let mut entries = match read {
                    Ok((e, _)) => e,
                    Err(e) => BTreeMap::from([("error".to_owned(), e)]),
                };
                if let Some(note) = note {
                    entries.insert("replication/catch-up".into(), note);
                }
                (node.name.clone(), entries)
            }
        });
        for (name, entries) in futures_util::future::join_all(rereads).await {
            put(fp, &name, entries);
        }
    }

    /// Every node at once; a replica whose applied position was behind the primary's is
    /// waited for and read again.
    async fn take_my(&self, fp: &mut Fingerprint) {
        // a transaction the library is still ending (a dropped unit's rollback runs in the
        // background) would show as a change of the next run: wait, briefly, until none is
        // open; one that stays open shows
        let settle = self.nodes.iter().map(my_settle);
        futures_util::future::join_all(settle).await;
        let reads = self.nodes.iter().map(|node| my_entries(self, node));
        let mut all: Vec<BTreeMap<String, String>> = futures_util::future::join_all(reads).await;
        let primary_at = self.nodes.iter().position(|n| n.role == NodeRole::Primary);
        let gtid = primary_at.and_then(|i| all[i].get("server/gtid_binlog_pos").cloned());
        for (i, node) in self.nodes.iter().enumerate() {
            if node.role == NodeRole::Primary {
                continue;
            }
            let Some(gtid) = &gtid else { continue };
            if all[i].contains_key("error") {
                continue;
            }
            let applied = all[i]
                .get("replication/gtid_slave_pos")
                .cloned()
                .unwrap_or_default();
            if gtid_covers(&applied, gtid) {
                continue;
            }
            let note = my_wait_replayed(&node.admin, gtid, self.catch_up).await;
            all[i] = my_entries(self, node).await;
            if let Some(note) = note {
                all[i].insert("replication/catch-up".into(), note);
            }
        }
        for (node, entries) in self.nodes.iter().zip(all) {
            put(fp, &node.name, entries);
        }
    }
}

fn put(fp: &mut Fingerprint, node: &str, entries: BTreeMap<String, String>) {
    for (k, v) in entries {
        fp.entries.insert(format!("{node}: {k}"), v);
    }
}

fn pairs(rows: Rows) -> BTreeMap<String, String> {
    rows.into_iter()
        .filter_map(|r| {
            let mut it = r.into_iter();
            let k = it.next().flatten()?;
            let v = it.next().flatten().unwrap_or_else(|| "NULL".into());
            Some((k, v))
        })
        .collect()
}

// ----------------------------------------------------------------------------------------
// PostgreSQL
// ----------------------------------------------------------------------------------------

/// Objects of the current database, outside the system schemas.
const PG_RELS: &str = "rels AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind, c.relfilenode, c.relowner, c.relacl,
           c.relispopulated
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast')";

/// Data, schema and database-wide catalogs of the current database, plus cluster-wide catalogs
/// (replicated, so read on data nodes only).
const PG_DATA_PARTS: &str = "
SELECT 'schema/rel/' || nspname || '.' || relname AS k,
       relkind::text || ' owner=' || pg_get_userbyid(relowner) || ' acl=' || coalesce(relacl::text, '-')
       || ' cols=' || coalesce((
           SELECT md5(string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod) || ':'
                  || a.attnotnull || ':' || coalesce(pg_get_expr(d.adbin, d.adrelid), ''), ',' ORDER BY a.attnum))
           FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
           WHERE a.attrelid = rels.oid AND a.attnum > 0 AND NOT a.attisdropped), '-') AS v
FROM rels
UNION ALL
SELECT 'relfile/' || nspname || '.' || relname, relfilenode::text FROM rels WHERE relkind IN ('r', 'm', 'i', 'S', 't')
UNION ALL
SELECT 'data/' || nspname || '.' || relname,
       (xpath('/row/c/text()', x))[1]::text || ' rows, md5 ' || coalesce((xpath('/row/h/text()', x))[1]::text, '')
FROM rels, LATERAL query_to_xml(format(
    'SELECT count(*) AS c, md5(coalesce(string_agg(t::text, %L ORDER BY t::text), %L)) AS h FROM %I.%I t',
    ',', '', nspname, relname), false, true, '') x
WHERE relkind IN ('r', 'p', 'm') AND nspname !~ '^pg_temp' AND nspname !~ '_backup$' AND relispopulated
UNION ALL
SELECT 'seq/' || schemaname || '.' || sequencename, coalesce(last_value::text, 'never called')
FROM pg_sequences WHERE schemaname !~ '^pg_temp'
UNION ALL
SELECT 'schema/namespace/' || nspname, pg_get_userbyid(nspowner) || ' acl=' || coalesce(nspacl::text, '-')
FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname !~ '^pg_(toast|temp)'
UNION ALL
SELECT 'schema/function/' || n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       md5(p.prosrc || p.provolatile::text || p.prosecdef::text || coalesce(p.proconfig::text, '') || coalesce(p.proacl::text, ''))
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT 'schema/type/' || n.nspname || '.' || t.typname, t.typtype::text
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')
UNION ALL
SELECT 'schema/trigger/' || tgrelid::regclass::text || '.' || tgname, tgenabled::text FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'schema/rule/' || ev_class::regclass::text || '.' || rulename, md5(pg_get_ruledef(oid))
FROM pg_rewrite WHERE rulename <> '_RETURN' AND ev_class IN (SELECT oid FROM rels)
UNION ALL
SELECT 'schema/policy/' || polrelid::regclass::text || '.' || polname, polcmd::text FROM pg_policy
UNION ALL
SELECT 'schema/extension/' || extname, extversion FROM pg_extension
UNION ALL
SELECT 'schema/publication/' || pubname, puballtables::text FROM pg_publication
UNION ALL
SELECT 'schema/event-trigger/' || evtname, evtevent FROM pg_event_trigger
UNION ALL
SELECT 'schema/default-acl/' || defaclrole::regrole::text || '/' || defaclobjtype::text, defaclacl::text FROM pg_default_acl
UNION ALL
SELECT 'schema/comment/' || classoid::regclass::text || '/' || objoid || '/' || objsubid, md5(description)
FROM pg_description WHERE objoid >= 16384
UNION ALL
SELECT 'schema/foreign-server/' || srvname, coalesce(srvoptions::text, '') FROM pg_foreign_server
UNION ALL
SELECT 'data/large-object/' || m.oid,
       coalesce((SELECT md5(string_agg(encode(p.data, 'hex'), '' ORDER BY p.pageno)) FROM pg_largeobject p WHERE p.loid = m.oid), 'empty')
FROM pg_largeobject_metadata m
UNION ALL
SELECT 'cluster/database/' || datname, datallowconn::text || ' conn-limit=' || datconnlimit FROM pg_database
UNION ALL
SELECT 'cluster/role/' || rolname,
       concat_ws(',', 'super=' || rolsuper, 'createrole=' || rolcreaterole, 'createdb=' || rolcreatedb,
                 'login=' || rolcanlogin, 'replication=' || rolreplication, 'bypassrls=' || rolbypassrls,
                 'limit=' || rolconnlimit)
FROM pg_roles
UNION ALL
SELECT 'cluster/role-setting/' || setdatabase || '/' || setrole, setconfig::text FROM pg_db_role_setting
UNION ALL
SELECT 'server/prepared-xact/' || gid, database FROM pg_prepared_xacts
UNION ALL
SELECT 'cluster/tablespace/' || spcname, '' FROM pg_tablespace";

/// Server state every node reports: recovery, settings written by `ALTER SYSTEM`, slots,
/// session leftovers of the test database, the sentinel.
const PG_SERVER_PARTS: &str = "
SELECT 'server/in-recovery' AS k, pg_is_in_recovery()::text AS v
UNION ALL
SELECT 'server/auto.conf/' || name, coalesce(setting, '') FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'
UNION ALL
SELECT 'server/replication-slot/' || slot_name, slot_type || coalesce(' db=' || database, '') FROM pg_replication_slots";

/// What sessions of the test database hold: advisory locks, open transactions, temporary
/// relations; and whether the sentinel is still there.
const PG_SESSION_PARTS: &str = "
SELECT 'session/advisory-lock/' || classid || ':' || objid || ':' || objsubid || ' ' || mode AS k, count(*)::text AS v
FROM pg_locks WHERE locktype = 'advisory'
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
GROUP BY classid, objid, objsubid, mode
UNION ALL
SELECT k, v FROM (
  SELECT count(*) FILTER (WHERE state LIKE 'idle in transaction%' AND backend_type = 'client backend'
                            AND application_name NOT LIKE 'sor_attack_%')::text AS idle,
         count(*) FILTER (WHERE application_name = 'sor_attack_sentinel')::text || ' alive' AS sentinel
  FROM pg_stat_activity WHERE datname = current_database()) a,
  LATERAL (VALUES ('session/idle-in-transaction', a.idle), ('session/sentinel', a.sentinel)) x(k, v)
UNION ALL
SELECT 'session/temp-relations', count(*)::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname ~ '^pg_temp' AND c.relkind IN ('r', 'v', 'S', 'm', 'p')";

const PG_PRIMARY_PARTS: &str = "
SELECT 'replication/walsender/' || application_name AS k, state || ' pid=' || pid AS v FROM pg_stat_replication
";

const PG_REPLICA_PARTS: &str = "
SELECT 'replication/wal-receiver' AS k, status || ' pid=' || pid AS v FROM pg_stat_wal_receiver
UNION ALL
SELECT 'replication/replay', CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE 'not in recovery' END
";

/// `X/Y` (a `pg_lsn`) as a number.
fn lsn_value(lsn: &str) -> u64 {
    let (hi, lo) = lsn.split_once('/').unwrap_or(("0", "0"));
    (u64::from_str_radix(hi, 16).unwrap_or(0) << 32) | u64::from_str_radix(lo, 16).unwrap_or(0)
}

/// One node's entries, and its WAL position: flushed on the primary, replayed on a replica.
async fn pg_entries(
    node: &AdminNode,
    data: bool,
    primary: bool,
) -> Result<(BTreeMap<String, String>, Option<String>), String> {
    if let Some(down) = node.down().await {
        return Err(down);
    }
    let mut sql = format!("WITH {PG_RELS}\n{PG_SERVER_PARTS}\nUNION ALL\n{PG_SESSION_PARTS}");
    if data {
        sql.push_str("\nUNION ALL\n");
        sql.push_str(PG_DATA_PARTS);
    }
    sql.push_str("\nUNION ALL\n");
    sql.push_str(if primary {
        PG_PRIMARY_PARTS
    } else {
        PG_REPLICA_PARTS
    });
    // Each statement reads its own snapshot: the primary's position is read *after* its
    // data (so it covers everything the data shows), a replica's *before* (so its data
    // shows everything up to that position).
    let sql = if primary {
        format!("{sql};\nSELECT '~lsn', pg_current_wal_flush_lsn()::text")
    } else {
        format!("SELECT '~lsn', pg_last_wal_replay_lsn()::text;\n{sql}")
    };
    let mut entries = pairs(node.admin.rows(&sql).await?);
    let lsn = entries.remove("~lsn");
    Ok((entries, lsn))
}

/// Polls until the replica has replayed `lsn`; `Some(note)` when it did not within `deadline`
/// (or cannot: not in recovery, replay paused).
async fn pg_wait_replayed(admin: &Admin, lsn: &str, deadline: Duration) -> Option<String> {
    let until = Instant::now() + deadline;
    let sql = format!(
        "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 'not in recovery' \
         WHEN pg_get_wal_replay_pause_state() <> 'not paused' THEN 'replay ' || pg_get_wal_replay_pause_state() \
         WHEN pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn THEN 'ok' \
         ELSE 'replayed ' || coalesce(pg_last_wal_replay_lsn()::text, 'nothing') END"
    );
    loop {
        match admin.value(&sql).await {
            Ok(Some(s)) if s == "ok" => return None,
            Ok(Some(s)) if !s.starts_with("replayed") => return Some(s),
            Ok(state) => {
                if Instant::now() >= until {
                    return Some(format!(
                        "not caught up with the primary's {lsn} within {deadline:?}: {}",
                        state.unwrap_or_default()
                    ));
                }
            }
            Err(e) => {
                if Instant::now() >= until {
                    return Some(format!("position unknown: {e}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn listen(url: &str) -> Result<Notifications, String> {
    let opts: PgConnectOptions = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(opts.application_name(LISTENER_APP))
        .await
        .map_err(|e| format!("listener connection: {e}"))?;
    let mut listener = PgListener::connect_with(&pool)
        .await
        .map_err(|e| format!("listener: {e}"))?;
    listener
        .listen_all([NOTIFY_CHANNEL, SYNC_CHANNEL])
        .await
        .map_err(|e| format!("LISTEN: {e}"))?;
    let count = Arc::new(AtomicU64::new(0));
    let synced = Arc::new(AtomicU64::new(0));
    let (c, s) = (count.clone(), synced.clone());
    let task = tokio::spawn(async move {
        let _pool = pool;
        loop {
            match listener.recv().await {
                Ok(n) if n.channel() == SYNC_CHANNEL => {
                    if let Ok(seq) = n.payload().parse::<u64>() {
                        s.fetch_max(seq, Ordering::SeqCst);
                    }
                }
                Ok(_) => {
                    c.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    Ok(Notifications {
        count,
        synced,
        next: AtomicU64::new(1),
        task,
    })
}

impl Notifications {
    /// Sends a sync notification after anything an attack may have sent, waits for it (it
    /// arrives after every earlier one), and reports how many arrived on the watched channel.
    async fn sync(&self, admin: &Admin) -> String {
        let seq = self.next.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = admin
            .exec(&format!("SELECT pg_notify('{SYNC_CHANNEL}', '{seq}')"))
            .await
        {
            return format!("unknown (sync failed: {e})");
        }
        let until = Instant::now() + Duration::from_secs(3);
        while self.synced.load(Ordering::SeqCst) < seq {
            if Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        format!("{} received", self.count.load(Ordering::SeqCst))
    }
}

// ----------------------------------------------------------------------------------------
// MariaDB
// ----------------------------------------------------------------------------------------

/// One MariaDB node's entries.
async fn my_entries(fp: &Fingerprinter, node: &AdminNode) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(down) = node.down().await {
        out.insert("error".into(), down);
        return out;
    }
    if let Err(e) = my_entries_into(fp, node, &mut out).await {
        out.insert("error".into(), e);
    }
    out
}

async fn my_entries_into(
    fp: &Fingerprinter,
    node: &AdminNode,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let volatile_tables = MY_VOLATILE_TABLES
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(",");
    let volatile_globals = MY_VOLATILE_GLOBALS
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(",");
    let session_sql = my_session_sql(fp, node);
    // a replica's applied position first: the data read after it shows at least that much
    let replica_sql = if node.role == NodeRole::Primary {
        ""
    } else {
        "SELECT 'replication/gtid_slave_pos' AS k, @@global.gtid_slave_pos AS v; SHOW SLAVE STATUS;"
    };
    let sql = format!(
        "{replica_sql}
         {session_sql}
         SELECT CONCAT('schema/table/', table_schema, '.', table_name) AS k,
                CONCAT(table_type, ' ', IFNULL(engine, '-')) AS v
         FROM information_schema.tables
         WHERE table_schema NOT IN ('information_schema', 'performance_schema', 'sys')
           AND NOT (table_schema = 'mysql' AND table_name IN ({volatile_tables}));
         SELECT CONCAT('counter/', table_schema, '.', table_name), auto_increment
         FROM information_schema.tables
         WHERE auto_increment IS NOT NULL AND table_schema NOT IN ('information_schema', 'performance_schema', 'sys', 'mysql');
         SELECT CONCAT('schema/columns/', table_schema, '.', table_name),
                MD5(GROUP_CONCAT(CONCAT(column_name, ':', column_type, ':', is_nullable, ':', IFNULL(column_default, ''))
                    ORDER BY ordinal_position))
         FROM information_schema.columns
         WHERE table_schema NOT IN ('information_schema', 'performance_schema', 'sys', 'mysql')
         GROUP BY table_schema, table_name;
         SELECT CONCAT('schema/routine/', routine_schema, '.', routine_name, ' ', routine_type),
                MD5(CONCAT(IFNULL(routine_definition, ''), sql_data_access, security_type))
         FROM information_schema.routines;
         SELECT CONCAT('schema/trigger/', trigger_schema, '.', trigger_name), MD5(action_statement)
         FROM information_schema.triggers;
         SELECT CONCAT('schema/event/', event_schema, '.', event_name), status FROM information_schema.events;
         SELECT CONCAT('schema/view/', table_schema, '.', table_name), MD5(view_definition)
         FROM information_schema.views
         WHERE table_schema NOT IN ('mysql', 'sys', 'information_schema', 'performance_schema');
         SELECT CONCAT('cluster/database/', schema_name), default_character_set_name FROM information_schema.schemata;
         SELECT CONCAT('cluster/user/', user, '@', host), MD5(JSON_REMOVE(priv, '$.password_last_changed')) FROM mysql.global_priv;
         SELECT CONCAT('server/plugin/', plugin_name), plugin_status FROM information_schema.plugins;
         SELECT 'server/read_only', @@global.read_only;
         SELECT 'server/globals-hash', MD5(GROUP_CONCAT(CONCAT(variable_name, '=', IFNULL(variable_value, ''))
                ORDER BY variable_name SEPARATOR '\\n'))
         FROM information_schema.global_variables WHERE variable_name NOT IN ({volatile_globals});
         XA RECOVER;
         SHOW BINARY LOGS;"
    );
    let rows = node.admin.named_rows(&sql).await?;
    let mut tables = Vec::new();
    let mut globals_hash = None;
    for row in rows {
        let get = |name: &str| {
            row.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.clone())
        };
        if row.len() == 2 && row[0].0 == "k" {
            let k = row[0].1.clone().unwrap_or_default();
            let v = row[1].1.clone().unwrap_or_else(|| "NULL".into());
            if let Some(name) = k.strip_prefix("schema/table/") {
                let static_table =
                    name.starts_with("mysql.help_") || name.starts_with("mysql.time_zone");
                if (v.starts_with("BASE TABLE") || v.starts_with("SEQUENCE")) && !static_table {
                    tables.push(name.to_owned());
                }
            }
            if k == "server/globals-hash" {
                globals_hash = Some(v);
                continue;
            }
            out.insert(k, v);
        } else if let Some((k, v)) = table_in_use(&get) {
            out.insert(k, v);
        } else if let Some(io) = get("Slave_IO_Running") {
            let get = |name: &str| get(name).unwrap_or_default();
            out.insert(
                "replication/slave".into(),
                format!(
                    "io={io} sql={} master={}:{}",
                    get("Slave_SQL_Running"),
                    get("Master_Host"),
                    get("Master_Port")
                ),
            );
            out.insert("replication/last-error".into(), get("Last_Error"));
            out.insert("replication/last-io-error".into(), get("Last_IO_Error"));
        } else if let Some(data) = get("data") {
            out.insert(format!("server/xa-prepared/{data}"), "prepared".into());
        } else if let Some(log) = get("Log_name") {
            out.insert(format!("server/binlog/{log}"), "present".into());
        } else {
            // the unnamed two-column selects: first column is the key
            let k = row.first().and_then(|(_, v)| v.clone());
            let v = row.get(1).and_then(|(_, v)| v.clone());
            if let Some(k) = k {
                if k == "server/globals-hash" {
                    globals_hash = v;
                    continue;
                }
                out.insert(k, v.unwrap_or_else(|| "NULL".into()));
            }
        }
    }
    if !tables.is_empty() {
        let list = tables
            .iter()
            .map(|t| {
                let (s, n) = t.split_once('.').unwrap_or(("", t));
                format!("`{s}`.`{n}`")
            })
            .collect::<Vec<_>>()
            .join(", ");
        // the position is read after the data, so that it covers all the data shows
        for row in node
            .admin
            .named_rows(&format!(
                "CHECKSUM TABLE {list}; SELECT 'server/gtid_binlog_pos' AS k, @@global.gtid_binlog_pos AS v"
            ))
            .await?
        {
            if row.len() == 2 && row[0].0 == "k" {
                out.insert(
                    "server/gtid_binlog_pos".into(),
                    row[1].1.clone().unwrap_or_default(),
                );
                continue;
            }
            let table = row.first().and_then(|(_, v)| v.clone()).unwrap_or_default();
            let sum = row
                .get(1)
                .and_then(|(_, v)| v.clone())
                .unwrap_or_else(|| "NULL".into());
            out.insert(format!("data/{table}"), format!("checksum {sum}"));
        }
    }
    // global variables: the full list only when the hash moved
    if let Some(hash) = globals_hash {
        let mut cache = node.globals.lock().unwrap().clone();
        if cache.as_ref().map(|(h, _)| h) != Some(&hash) {
            let rows = node
                .admin
                .rows(
                    "SELECT variable_name, variable_value FROM information_schema.global_variables",
                )
                .await?;
            let vars: BTreeMap<String, String> = pairs(rows)
                .into_iter()
                .filter(|(k, _)| !MY_VOLATILE_GLOBALS.contains(&k.as_str()))
                .collect();
            cache = Some((hash, vars));
            *node.globals.lock().unwrap() = cache.clone();
        }
        if let Some((_, vars)) = cache {
            for (k, v) in vars {
                out.insert(format!("server/global/{k}"), v);
            }
        }
    }
    if node.role != NodeRole::Primary {
        out.entry("replication/slave".into())
            .or_insert_with(|| "not configured".into());
        // the replica's binlog position follows the primary's; keep only what the replica
        // wrote itself (GTIDs whose server id is not the primary's)
        if let Some(pos) = out.remove("server/gtid_binlog_pos") {
            let own: Vec<&str> = pos
                .split(',')
                .filter(|g| g.split('-').nth(1).is_some_and(|s| s != "1"))
                .collect();
            out.insert("replication/own-gtids".into(), own.join(","));
        }
    }
    Ok(())
}

/// Session rows: `(k, v)` pairs, and `SHOW OPEN TABLES` rows.
fn my_session_rows(rows: Vec<Vec<(String, Option<String>)>>, out: &mut BTreeMap<String, String>) {
    for row in rows {
        let get = |name: &str| {
            row.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.clone())
        };
        if let Some((k, v)) = table_in_use(&get) {
            out.insert(k, v);
        } else if let Some(Some(k)) = row.first().map(|(_, v)| v.clone()) {
            let v = row
                .get(1)
                .and_then(|(_, v)| v.clone())
                .unwrap_or_else(|| "NULL".into());
            out.insert(k, v);
        }
    }
}

/// What sessions hold on a MariaDB node: named locks, open transactions, locked tables; and
/// whether the sentinel is still there.
fn my_session_sql(fp: &Fingerprinter, node: &AdminNode) -> String {
    let sentinel = node
        .sentinel_id
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| "0".into());
    let locks: String = fp
        .lock_names
        .iter()
        .map(|n| {
            format!(
                "SELECT 'session/named-lock/{n}', IF(IS_USED_LOCK('{n}') IS NULL, 'free', 'held');\n"
            )
        })
        .collect();
    format!(
        "SELECT 'session/open-transactions', COUNT(*) FROM information_schema.innodb_trx t
         WHERE t.trx_mysql_thread_id NOT IN (SELECT id FROM information_schema.processlist
                                             WHERE user IN ('system user', 'sor_attack_admin'));
         SELECT 'session/sentinel', CONCAT(COUNT(*), ' alive') FROM information_schema.processlist WHERE id = {sentinel};
         {locks}
         SHOW OPEN TABLES WHERE In_use > 0;"
    )
}

/// The entry of a `SHOW OPEN TABLES` row (`get` reads a column by name), if it is one.
fn table_in_use(get: &impl Fn(&str) -> Option<String>) -> Option<(String, String)> {
    let (db, table) = (get("Database")?, get("Table")?);
    Some((
        format!("session/table-in-use/{db}.{table}"),
        format!(
            "in_use={} name_locked={}",
            get("In_use").unwrap_or_default(),
            get("Name_locked").unwrap_or_default()
        ),
    ))
}

/// Waits up to 2 s until no session but the harness's and the server's own has an open
/// InnoDB transaction on `node`.
async fn my_settle(node: &AdminNode) {
    let until = Instant::now() + Duration::from_secs(2);
    let sql = "SELECT COUNT(*) FROM information_schema.innodb_trx t
         WHERE t.trx_mysql_thread_id NOT IN (SELECT id FROM information_schema.processlist
                                             WHERE user IN ('system user', 'sor_attack_admin'))";
    while Instant::now() < until {
        match node.admin.value(sql).await {
            Ok(Some(n)) if n != "0" => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => return,
        }
    }
}

/// Whether GTID position `applied` is at or past `target` in every domain of `target`.
fn gtid_covers(applied: &str, target: &str) -> bool {
    let parse = |pos: &str| -> BTreeMap<String, u64> {
        pos.split(',')
            .filter_map(|g| {
                let mut it = g.trim().split('-');
                let (d, _, n) = (it.next()?, it.next()?, it.next()?);
                Some((d.to_owned(), n.parse().ok()?))
            })
            .collect()
    };
    let applied = parse(applied);
    parse(target)
        .iter()
        .all(|(d, n)| applied.get(d).is_some_and(|a| a >= n))
}

/// Waits until the replica has applied `gtid` (the primary's `@@gtid_binlog_pos`).
async fn my_wait_replayed(admin: &Admin, gtid: &str, deadline: Duration) -> Option<String> {
    if gtid.is_empty() {
        return None;
    }
    let running = admin
        .named_rows("SHOW SLAVE STATUS")
        .await
        .ok()
        .and_then(|rows| rows.into_iter().next())
        .map(|row| {
            row.iter()
                .any(|(n, v)| n == "Slave_SQL_Running" && v.as_deref() == Some("Yes"))
        })
        .unwrap_or(false);
    if !running {
        return Some("replication SQL thread not running".into());
    }
    let secs = deadline.as_secs_f64();
    match admin
        .value(&format!("SELECT MASTER_GTID_WAIT('{gtid}', {secs})"))
        .await
    {
        Ok(Some(v)) if v == "0" => None,
        Ok(v) => Some(format!(
            "not caught up with the primary's {gtid} within {deadline:?} ({})",
            v.unwrap_or_default()
        )),
        Err(e) => Some(format!("position unknown: {e}")),
    }
}

// ----------------------------------------------------------------------------------------
// SQLite
// ----------------------------------------------------------------------------------------

/// FNV-1a: a stable hash for table contents (SQLite has no md5).
pub fn fnv(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

async fn lite_entries(admin: &Admin) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Err(e) = lite_entries_into(admin, &mut out).await {
        out.insert("error".into(), e);
    }
    out
}

async fn lite_entries_into(
    admin: &Admin,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let rows = admin
        .rows(
            "SELECT 'schema/' || type || '/' || name AS k, coalesce(sql, '-') AS v FROM sqlite_master
             UNION ALL
             SELECT 'col/' || m.name, printf('%05d', p.cid) || ':' || p.name
             FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'table'
             UNION ALL SELECT 'server/user_version', user_version FROM pragma_user_version
             UNION ALL SELECT 'server/application_id', application_id FROM pragma_application_id
             UNION ALL SELECT 'server/journal_mode', journal_mode FROM pragma_journal_mode
             UNION ALL SELECT 'server/data_version', data_version FROM pragma_data_version",
        )
        .await?;
    let mut columns: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut tables = Vec::new();
    for row in rows {
        let k = row[0].clone().unwrap_or_default();
        let v = row[1].clone().unwrap_or_else(|| "-".into());
        if let Some(table) = k.strip_prefix("col/") {
            columns.entry(table.to_owned()).or_default().push(v);
        } else {
            if let Some(table) = k.strip_prefix("schema/table/") {
                tables.push(table.to_owned());
            }
            out.insert(k, v);
        }
    }
    let select = |table: &str| {
        let mut cols = columns.get(table).cloned().unwrap_or_default();
        cols.sort();
        let expr = cols
            .iter()
            .map(|c| c.split_once(':').map_or(c.as_str(), |(_, n)| n))
            .map(|c| format!("quote(\"{}\")", c.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" || ',' || ");
        let expr = if expr.is_empty() { "''".into() } else { expr };
        format!(
            "SELECT '{}' AS t, {expr} AS r FROM \"{}\"",
            table.replace('\'', "''"),
            table.replace('"', "\"\"")
        )
    };
    let mut content: BTreeMap<String, Vec<String>> =
        tables.iter().map(|t| (t.clone(), Vec::new())).collect();
    let all = tables
        .iter()
        .map(|t| select(t))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let rows = if all.is_empty() {
        Ok(Vec::new())
    } else {
        admin.rows(&all).await
    };
    match rows {
        Ok(rows) => {
            for row in rows {
                let t = row[0].clone().unwrap_or_default();
                content
                    .entry(t)
                    .or_default()
                    .push(row[1].clone().unwrap_or_default());
            }
        }
        Err(_) => {
            // one table cannot be read (say, a virtual table of a missing module): one by one
            for t in &tables {
                match admin.rows(&select(t)).await {
                    Ok(rows) => {
                        content.insert(
                            t.clone(),
                            rows.into_iter()
                                .map(|r| r[1].clone().unwrap_or_default())
                                .collect(),
                        );
                    }
                    Err(e) => {
                        content.remove(t);
                        out.insert(format!("data/{t}"), format!("unreadable: {e}"));
                    }
                }
            }
        }
    }
    for (t, mut lines) in content {
        lines.sort();
        out.insert(
            format!("data/{t}"),
            format!("{} rows, hash {}", lines.len(), fnv(&lines.join("\n"))),
        );
    }
    Ok(())
}
