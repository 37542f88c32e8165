//! Configuration: which nodes, their pools, and what to do when no replica is eligible.
//!
//! Build it in code with [`ReplicatedDatabase::builder`](crate::ReplicatedDatabase::builder),
//! deserialize it with serde, or read it from the environment with [`ReplicaConfig::from_env`]:
//!
//! | variable | meaning |
//! |---|---|
//! | `DATABASE_URL` | the primary (required); several comma-separated URLs are primary candidates, for failover |
//! | `DATABASE_REPLICA_URLS` | the replicas, comma-separated (optional; none → everything runs on the primary) |
//!
//! ```
//! use sea_orm_replica::ReplicaConfig;
//! let config: ReplicaConfig = serde_json::from_str(r#"{
//!     "primary": { "url": "postgres://app@10.0.0.1/app", "pool": { "max_connections": 20 } },
//!     "replicas": [ { "url": "postgres://app@10.0.0.2/app", "name": "east" } ],
//!     "fallback": "error"
//! }"#).unwrap();
//! assert_eq!(config.replicas[0].name.as_deref(), Some("east"));
//! ```

use std::time::Duration;

use sea_orm::DbBackend;
use serde::{Deserialize, Serialize};

use crate::node::pools::{PoolSettings, Target};
use crate::node::Role;
use crate::routing::Balancing;
pub use crate::routing::Fallback;
use crate::ReplicaError;

/// The whole configuration of a [`ReplicatedDatabase`](crate::ReplicatedDatabase).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// The node that takes writes (and migrations).
    pub primary: NodeConfig,
    /// More nodes that may take over as the primary (failover): the monitor asks every node
    /// its role, and read-write units go to the one that reports being the primary.
    #[serde(default)]
    pub primary_candidates: Vec<NodeConfig>,
    /// Read replicas. Empty: every unit runs on the primary.
    #[serde(default)]
    pub replicas: Vec<NodeConfig>,
    /// What a read-only unit does when no replica is eligible.
    #[serde(default)]
    pub fallback: Fallback,
    /// For an SQLite file primary with no replicas configured: open a second, read-only pool on
    /// the same file (WAL mode) and use it as the replica. Default: true.
    #[serde(default = "default_true")]
    pub sqlite_reader_pool: bool,
    /// How long a read-only unit with a causal token waits for a replica to replay it, in
    /// milliseconds. Default: 100.
    #[serde(default)]
    pub causal_wait_ms: Option<u64>,
    /// Bounded staleness for the whole handle: replicas measured further behind than this many
    /// milliseconds are not used. Default: no bound.
    #[serde(default)]
    pub max_lag_ms: Option<u64>,
    /// How often the background monitor checks the nodes, in milliseconds. Default: 500.
    #[serde(default)]
    pub monitor_interval_ms: Option<u64>,
    /// How long one health check may take before the node counts as down, in milliseconds.
    /// Default: 1000.
    #[serde(default)]
    pub check_timeout_ms: Option<u64>,
    /// After a failure, when a down node is first checked again, in milliseconds; doubles on
    /// every failed check. Default: 500.
    #[serde(default)]
    pub backoff_initial_ms: Option<u64>,
    /// The longest back-off between checks of a down node, in milliseconds. Default: 10000.
    #[serde(default)]
    pub backoff_max_ms: Option<u64>,
    /// How many nodes a read-only unit tries when nodes fail at the connection level.
    /// Default: 3.
    #[serde(default)]
    pub read_attempts: Option<u32>,
    /// How long a read-only unit keeps retrying on other nodes, in milliseconds. Default: 5000.
    #[serde(default)]
    pub read_retry_budget_ms: Option<u64>,
    /// How read-only units choose among replicas. Default: `round_robin`.
    #[serde(default)]
    pub balancer: Balancing,
}

fn default_true() -> bool {
    true
}

/// One database node and its pool. `Debug` and serde output show the URL redacted (see
/// [`redact`]) and never the read-only password.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Connection URL: `postgres://`, `mysql://` / `mariadb://`, or `sqlite:`.
    #[serde(serialize_with = "serialize_redacted")]
    pub url: String,
    /// A name for logs, spans, stats and errors. Default: `primary`, `replica-1`, `replica-2`, …
    #[serde(default)]
    pub name: Option<String>,
    /// Pool options for this node.
    #[serde(default)]
    pub pool: PoolConfig,
    /// Share of reads for the [`Weighted`](crate::routing::Weighted) balancer. Default: 1.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Log read-only sessions in as this user instead of the URL's (recommended: a role with
    /// no write grants and no superuser; see the README).
    #[serde(default)]
    pub read_only_user: Option<String>,
    /// The password of [`read_only_user`](Self::read_only_user).
    #[serde(default, serialize_with = "serialize_secret")]
    pub read_only_password: Option<String>,
}

/// Pool options of one node. Unset fields keep SeaORM's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Largest number of connections.
    pub max_connections: Option<u32>,
    /// Connections kept open when idle.
    pub min_connections: Option<u32>,
    /// Time allowed to open one connection, in milliseconds.
    pub connect_timeout_ms: Option<u64>,
    /// Time allowed to wait for a pooled connection, in milliseconds.
    pub acquire_timeout_ms: Option<u64>,
    /// Idle connections are closed after this many milliseconds.
    pub idle_timeout_ms: Option<u64>,
    /// Connections are recycled after this many milliseconds.
    pub max_lifetime_ms: Option<u64>,
    /// Server-side statement timeout in milliseconds (PostgreSQL).
    pub statement_timeout_ms: Option<u64>,
    /// Log every statement through sqlx's logger. Default: false.
    pub sqlx_logging: Option<bool>,
    /// Largest number of read-only sessions: on a primary, the small pool that read-only
    /// units falling back to it use (default 4, at most `max_connections`); on a replica, its
    /// main pool (default `max_connections`).
    pub read_only_max_connections: Option<u32>,
}

/// Read-only sessions a primary keeps for fallback reads unless told otherwise.
pub const DEFAULT_PRIMARY_READ_ONLY_POOL: u32 = 4;

impl NodeConfig {
    /// A node with SeaORM's default pool options.
    pub fn new(url: impl Into<String>) -> Self {
        NodeConfig {
            url: url.into(),
            ..NodeConfig::default()
        }
    }

    /// Names the node.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the pool options.
    pub fn pool(mut self, pool: PoolConfig) -> Self {
        self.pool = pool;
        self
    }

    /// Sets the largest number of pooled connections.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.pool.max_connections = Some(n);
        self
    }

    /// Read-only sessions log in with these credentials instead of the URL's: give them a
    /// role without write grants and without superuser, so the server refuses writes even
    /// where a read-only session would not stop them.
    pub fn read_only_credentials(
        mut self,
        user: impl Into<String>,
        password: Option<String>,
    ) -> Self {
        self.read_only_user = Some(user.into());
        self.read_only_password = password;
        self
    }

    /// Sets the node's weight for the [`Weighted`](crate::routing::Weighted) balancer.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Bounds every statement: server-side where the backend has it (PostgreSQL
    /// `statement_timeout`), and in the client (this plus 250 ms), so a node that stops
    /// answering fails the statement instead of holding the caller.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.pool.statement_timeout_ms = Some(duration_ms(timeout));
        self
    }

    /// Sets how long a unit may wait for a pooled connection.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.pool.acquire_timeout_ms = Some(duration_ms(timeout));
        self
    }

    /// Sets how long opening one connection may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.pool.connect_timeout_ms = Some(duration_ms(timeout));
        self
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ReplicaConfig {
    /// A configuration with only a primary.
    pub fn new(primary: impl Into<String>) -> Self {
        ReplicaConfig {
            primary: NodeConfig::new(primary),
            primary_candidates: Vec::new(),
            replicas: Vec::new(),
            fallback: Fallback::Primary,
            sqlite_reader_pool: true,
            causal_wait_ms: None,
            max_lag_ms: None,
            monitor_interval_ms: None,
            check_timeout_ms: None,
            backoff_initial_ms: None,
            backoff_max_ms: None,
            read_attempts: None,
            read_retry_budget_ms: None,
            balancer: Balancing::default(),
        }
    }

    /// Reads `DATABASE_URL` and `DATABASE_REPLICA_URLS` (comma-separated, may be absent).
    pub fn from_env() -> Result<Self, ReplicaError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), with the variables looked up by `get`.
    ///
    /// ```
    /// use sea_orm_replica::ReplicaConfig;
    /// let config = ReplicaConfig::from_vars(|name| match name {
    ///     "DATABASE_URL" => Some("postgres://db1/app".into()),
    ///     "DATABASE_REPLICA_URLS" => Some("postgres://db2/app, postgres://db3/app".into()),
    ///     _ => None,
    /// }).unwrap();
    /// assert_eq!(config.replicas.len(), 2);
    /// ```
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ReplicaError> {
        let list = |value: String| -> Vec<NodeConfig> {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(NodeConfig::new)
                .collect()
        };
        let mut primaries = get("DATABASE_URL")
            .map(list)
            .unwrap_or_default()
            .into_iter();
        let primary = primaries
            .next()
            .ok_or(ReplicaError::MissingEnv("DATABASE_URL"))?;
        let mut config = ReplicaConfig::new(primary.url);
        config.primary_candidates = primaries.collect();
        config.replicas = get("DATABASE_REPLICA_URLS").map(list).unwrap_or_default();
        Ok(config)
    }
}

/// A node's configuration after validation: its name, backend and the redacted URL.
#[derive(Debug, Clone)]
pub(crate) struct ValidNode {
    pub name: String,
    pub backend: DbBackend,
    pub redacted_url: String,
    pub config: NodeConfig,
}

impl ValidNode {
    pub(crate) fn validate(config: &NodeConfig, default_name: &str) -> Result<Self, ReplicaError> {
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| default_name.to_owned());
        let redacted_url = redact(&config.url);
        let invalid = |reason: &str| ReplicaError::InvalidUrl {
            node: name.clone(),
            url: redacted_url.clone(),
            reason: reason.to_owned(),
        };
        let scheme = config
            .url
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .ok_or_else(|| invalid("no scheme; expected postgres://, mysql:// or sqlite:"))?;
        let backend = match scheme.as_str() {
            "postgres" | "postgresql" => DbBackend::Postgres,
            "mysql" | "mariadb" => DbBackend::MySql,
            "sqlite" => DbBackend::Sqlite,
            _ => {
                return Err(invalid(
                    "unsupported scheme; expected postgres://, mysql:// or sqlite:",
                ))
            }
        };
        if backend != DbBackend::Sqlite {
            let url = url::Url::parse(&config.url).map_err(|e| invalid(&e.to_string()))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(invalid("no host"));
            }
        }
        config.pool.check(&name)?;
        if config.weight == Some(0) {
            return Err(ReplicaError::Config(format!(
                "node `{name}`: weight is 0; leave the node out instead"
            )));
        }
        let mut config = config.clone();
        if scheme == "mariadb" {
            config.url = format!("mysql{}", &config.url["mariadb".len()..]);
        }
        Ok(ValidNode {
            name,
            backend,
            redacted_url,
            config,
        })
    }

    /// The driver's options for this node's URL (with the read-only credentials for
    /// read-only sessions applied by [`pools`](crate::node::pools)).
    pub(crate) fn target(&self) -> Result<Target, ReplicaError> {
        Target::parse(&self.config.url, self.backend).map_err(|reason| ReplicaError::InvalidUrl {
            node: self.name.clone(),
            url: self.redacted_url.clone(),
            reason,
        })
    }

    /// Pool settings of this node's read-write (`read_only == false`) or read-only pool. A
    /// primary keeps a small read-only pool for fallback reads; a replica's read-only pool is
    /// its main one.
    pub(crate) fn pool_settings(&self, role: Role, read_only: bool) -> PoolSettings {
        let pool = &self.config.pool;
        let ms = |v: Option<u64>| v.map(Duration::from_millis);
        let max_connections = match (read_only, role) {
            (true, Role::Primary) => Some(
                pool.read_only_max_connections
                    .unwrap_or(DEFAULT_PRIMARY_READ_ONLY_POOL)
                    .min(pool.max_connections.unwrap_or(u32::MAX)),
            ),
            (true, Role::Replica) => pool.read_only_max_connections.or(pool.max_connections),
            (false, _) => pool.max_connections,
        };
        PoolSettings {
            max_connections,
            min_connections: pool.min_connections,
            acquire_timeout: ms(pool.acquire_timeout_ms.or(pool.connect_timeout_ms)),
            idle_timeout: ms(pool.idle_timeout_ms),
            max_lifetime: ms(pool.max_lifetime_ms),
            statement_timeout: ms(pool.statement_timeout_ms),
            logging: pool.sqlx_logging.unwrap_or(false),
            credentials: read_only
                .then(|| self.config.read_only_user.clone())
                .flatten()
                .map(|user| (user, self.config.read_only_password.clone())),
        }
    }
}

/// Query parameters whose value is a secret (compared case-insensitively, also as a part of
/// a longer name such as `sslpassword`).
const SECRET_PARAMS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
];

/// The URL with every secret replaced by `***`: the password in the user-info and the value of
/// any query parameter that names a password, key, token or secret (`?password=`,
/// `sslpassword=`, `sslkey=`…). Safe for logs, errors, `Debug`, serde output and the status
/// view. An URL that does not parse keeps only its scheme.
///
/// ```
/// use sea_orm_replica::config::redact;
/// assert_eq!(redact("postgres://app:hunter2@db/app"), "postgres://app:***@db/app");
/// assert_eq!(redact("mysql://app@db/app?password=hunter2&ssl-mode=required"),
///            "mysql://app@db/app?password=***&ssl-mode=required");
/// ```
pub fn redact(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        // Unparseable: keep only the scheme, the rest may hold a secret.
        return match url.split_once(':') {
            Some((scheme, _))
                if scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+') =>
            {
                format!("{scheme}:…")
            }
            _ => "…".to_owned(),
        };
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let lower = k.to_ascii_lowercase();
                let secret = SECRET_PARAMS.iter().any(|s| lower.contains(s));
                (
                    k.into_owned(),
                    if secret {
                        "***".to_owned()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        let mut query = String::new();
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                query.push('&');
            }
            query.push_str(&url::form_urlencoded::byte_serialize(k.as_bytes()).collect::<String>());
            query.push('=');
            if v == "***" {
                query.push_str("***");
            } else {
                query.push_str(
                    &url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>(),
                );
            }
        }
        parsed.set_query(Some(&query));
    }
    parsed.to_string()
}

/// Serializes a URL redacted (see [`redact`]).
fn serialize_redacted<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact(url))
}

/// Serializes a secret as `***` (or nothing when unset).
fn serialize_secret<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_some("***"),
        None => s.serialize_none(),
    }
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("url", &redact(&self.url))
            .field("name", &self.name)
            .field("pool", &self.pool)
            .field("weight", &self.weight)
            .field("read_only_user", &self.read_only_user)
            .field(
                "read_only_password",
                &self.read_only_password.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

/// The longest duration any setting takes: one day. Longer is surely a mistake (and some
/// would overflow the clock).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Checks one duration setting: above zero (unless `zero_ok`) and at most [`MAX_DURATION`].
pub(crate) fn check_duration(
    what: &str,
    value: Option<Duration>,
    zero_ok: bool,
) -> Result<(), ReplicaError> {
    match value {
        Some(d) if d.is_zero() && !zero_ok => Err(ReplicaError::Config(format!(
            "{what} is zero; leave it unset for the default"
        ))),
        Some(d) if d > MAX_DURATION => Err(ReplicaError::Config(format!(
            "{what} is {d:?}, more than the largest allowed ({MAX_DURATION:?})"
        ))),
        _ => Ok(()),
    }
}

impl PoolConfig {
    /// Checks every size and duration: a typed error naming the node and the setting.
    pub(crate) fn check(&self, node: &str) -> Result<(), ReplicaError> {
        let size = |what: &str, v: Option<u32>| match v {
            Some(0) => Err(ReplicaError::Config(format!(
                "node `{node}`: {what} is 0; a pool needs at least one connection"
            ))),
            _ => Ok(()),
        };
        size("max_connections", self.max_connections)?;
        size("read_only_max_connections", self.read_only_max_connections)?;
        if let (Some(min), Some(max)) = (self.min_connections, self.max_connections) {
            if min > max {
                return Err(ReplicaError::Config(format!(
                    "node `{node}`: min_connections ({min}) is above max_connections ({max})"
                )));
            }
        }
        for (what, ms) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("acquire_timeout_ms", self.acquire_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("max_lifetime_ms", self.max_lifetime_ms),
            ("statement_timeout_ms", self.statement_timeout_ms),
        ] {
            check_duration(
                &format!("node `{node}`: {what}"),
                ms.map(Duration::from_millis),
                false,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lists_replicas_and_trims() {
        let c = ReplicaConfig::from_vars(|n| match n {
            "DATABASE_URL" => Some(" mysql://root@h/app ".into()),
            "DATABASE_REPLICA_URLS" => Some("mysql://r1/app,, mysql://r2/app ,".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.primary.url, "mysql://root@h/app");
        let urls: Vec<_> = c.replicas.iter().map(|r| r.url.as_str()).collect();
        assert_eq!(urls, ["mysql://r1/app", "mysql://r2/app"]);
    }

    #[test]
    fn missing_primary_is_typed() {
        let err = ReplicaConfig::from_vars(|_| None).unwrap_err();
        assert!(matches!(err, ReplicaError::MissingEnv("DATABASE_URL")));
    }

    #[test]
    fn bad_urls_are_typed_and_redacted() {
        for url in ["redis://x", "nonsense", "postgres://user:hunter2@/db"] {
            let err = ValidNode::validate(&NodeConfig::new(url), "primary").unwrap_err();
            assert!(
                matches!(err, ReplicaError::InvalidUrl { .. }),
                "{url}: {err}"
            );
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let ok = ValidNode::validate(&NodeConfig::new("mariadb://u:pw@h:3306/app"), "r").unwrap();
        assert_eq!(ok.backend, DbBackend::MySql);
        assert_eq!(ok.redacted_url, "mariadb://u:***@h:3306/app");
        assert!(ok.config.url.starts_with("mysql://"));
    }
}
