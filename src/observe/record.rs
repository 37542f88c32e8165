//! Recording metrics through the `metrics` facade at no cost when nobody listens.
//!
//! Every key a node's events use is built once, when the node is (a unit's route reason: the
//! first time it is seen on that node). An event is then `metrics::with_recorder` on a
//! prebuilt key: with no recorder installed, a thread-local and an atomic load and a call
//! into the no-op recorder; no label is built, nothing allocates. Events go to the recorder
//! in force where they happen (the global one, or a thread's local one), so a recorder
//! installed after the handle was built still gets them.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Key, Label, Level, Metadata};

use super::names;

const META: Metadata<'static> = Metadata::new(
    "sea_orm_replica",
    Level::INFO,
    Some("sea_orm_replica::observe"),
);

/// Adds `n` to the counter at `key`.
#[inline]
pub(crate) fn count(key: &Key, n: u64) {
    metrics::with_recorder(|r| r.register_counter(key, &META).increment(n));
}

/// Sets the gauge at `key`.
#[inline]
pub(crate) fn set(key: &Key, value: f64) {
    metrics::with_recorder(|r| r.register_gauge(key, &META).set(value));
}

/// Records `value` in the histogram at `key`.
#[inline]
pub(crate) fn record(key: &Key, value: f64) {
    metrics::with_recorder(|r| r.register_histogram(key, &META).record(value));
}

/// How many route reasons there are (`RouteReason::index` is below it).
pub(crate) const REASONS: usize = 10;

/// The role a node played: an index into the per-role keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Played {
    Primary = 0,
    Replica = 1,
}

impl Played {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Played::Primary => "primary",
            Played::Replica => "replica",
        }
    }
}

/// How a statement ended, for the duration histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok = 0,
    /// The node failed (refused, lost, no answer in time).
    Connection = 1,
    /// The server answered with an error.
    Database = 2,
}

/// Where a node is, in OpenTelemetry's words: read off its (redacted) URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Address {
    /// `postgresql`, `mysql` or `sqlite`.
    pub system: &'static str,
    pub namespace: String,
    pub host: Option<String>,
    pub port: Option<u16>,
}

impl Address {
    /// From a node's URL (the redacted one: no password reaches a label). The system comes
    /// from the scheme, as the driver reads it.
    pub(crate) fn of(url: &str) -> Self {
        let scheme = url.split(':').next().unwrap_or_default();
        let system = match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => "postgresql",
            "mysql" | "mariadb" => "mysql",
            "sqlite" => "sqlite",
            _ => "other_sql",
        };
        let Ok(parsed) = url::Url::parse(url) else {
            return Address {
                system,
                ..Address::default()
            };
        };
        let last = parsed
            .path()
            .rsplit('/')
            .find(|s| !s.is_empty())
            .unwrap_or_default();
        if system == "sqlite" {
            // sqlite://data.db, sqlite:///var/app/data.db, sqlite::memory:
            let file = match parsed.host_str() {
                Some(host) if last.is_empty() => host,
                _ => last,
            };
            return Address {
                system,
                namespace: file
                    .trim_start_matches(':')
                    .trim_end_matches(':')
                    .to_owned(),
                host: None,
                port: None,
            };
        }
        Address {
            system,
            namespace: last.to_owned(),
            host: parsed.host_str().map(str::to_owned),
            port: parsed.port_or_known_default().or(match system {
                "postgresql" => Some(5432),
                "mysql" => Some(3306),
                _ => None,
            }),
        }
    }
}

/// The prebuilt keys of one node.
#[derive(Debug)]
pub(crate) struct NodeMetrics {
    /// Where the node is (span fields).
    pub address: Address,
    /// The labels every per-node series carries: system, namespace, address, port, node.
    labels: Vec<Label>,
    /// `[role][outcome]`
    duration: [[Key; 3]; 2],
    /// `[role][reason]`, built the first time a reason is seen
    units: [[OnceLock<Key>; REASONS]; 2],
    fallbacks: Key,
    read_retries: Key,
    failovers: Key,
    lag: Key,
    breaker_open: Key,
    in_flight: Key,
    /// `[read-write, read-only][used, idle, max]`
    pools: [[Key; 3]; 2],
}

impl NodeMetrics {
    pub(crate) fn new(node: &str, address: &Address) -> Self {
        let mut labels = vec![
            Label::new(names::DB_SYSTEM_NAME, address.system),
            Label::new(names::NODE, node.to_owned()),
        ];
        if !address.namespace.is_empty() {
            labels.push(Label::new(names::DB_NAMESPACE, address.namespace.clone()));
        }
        if let Some(host) = &address.host {
            labels.push(Label::new(names::SERVER_ADDRESS, host.clone()));
        }
        if let Some(port) = address.port {
            labels.push(Label::new(names::SERVER_PORT, port.to_string()));
        }
        let node_only = || vec![Label::new(names::NODE, node.to_owned())];
        let with = |name: &'static str, extra: &[(&'static str, &'static str)]| {
            let mut l = labels.clone();
            l.extend(extra.iter().map(|(k, v)| Label::from_static_parts(k, v)));
            Key::from_parts(name, l)
        };
        let duration = |role: Played| {
            let r = (names::ROLE, role.as_str());
            [
                with(names::OPERATION_DURATION, &[r]),
                with(
                    names::OPERATION_DURATION,
                    &[r, (names::ERROR_TYPE, "connection")],
                ),
                with(
                    names::OPERATION_DURATION,
                    &[r, (names::ERROR_TYPE, "database")],
                ),
            ]
        };
        let pool = |name: String| {
            let pool = Label::new(names::POOL_NAME, name);
            let state = |s: &'static str| {
                Key::from_parts(
                    names::CONNECTION_COUNT,
                    vec![
                        pool.clone(),
                        Label::from_static_parts(names::CONNECTION_STATE, s),
                    ],
                )
            };
            [
                state("used"),
                state("idle"),
                Key::from_parts(names::CONNECTION_MAX, vec![pool.clone()]),
            ]
        };
        NodeMetrics {
            duration: [duration(Played::Primary), duration(Played::Replica)],
            units: Default::default(),
            fallbacks: Key::from_parts(names::FALLBACKS, node_only()),
            read_retries: Key::from_parts(names::READ_RETRIES, node_only()),
            failovers: Key::from_parts(names::FAILOVERS, node_only()),
            lag: Key::from_parts(names::LAG, node_only()),
            breaker_open: Key::from_parts(names::BREAKER_OPEN, node_only()),
            in_flight: Key::from_parts(names::IN_FLIGHT, node_only()),
            pools: [pool(node.to_owned()), pool(format!("{node}/read_only"))],
            labels,
            address: address.clone(),
        }
    }

    /// A statement ended after `took`.
    #[inline]
    pub(crate) fn statement(&self, role: Played, outcome: Outcome, took: Duration) {
        record(
            &self.duration[role as usize][outcome as usize],
            took.as_secs_f64(),
        );
    }

    /// A unit was routed here for `reason` (`index`, `label`: see `RouteReason`).
    #[inline]
    pub(crate) fn unit(&self, role: Played, index: usize, label: &'static str) {
        let Some(cell) = self.units[role as usize].get(index) else {
            return;
        };
        let key = cell.get_or_init(|| {
            let mut l = self.labels.clone();
            l.push(Label::from_static_parts(names::ROLE, role.as_str()));
            l.push(Label::from_static_parts(names::ROUTE_REASON, label));
            Key::from_parts(names::UNITS, l)
        });
        count(key, 1);
    }

    /// A read-only unit ran here for want of an eligible replica.
    pub(crate) fn fallback(&self) {
        count(&self.fallbacks, 1);
    }

    /// A read-only unit failed here and runs again elsewhere.
    pub(crate) fn read_retry(&self) {
        count(&self.read_retries, 1);
    }

    /// This node became the primary.
    pub(crate) fn failover(&self) {
        count(&self.failovers, 1);
    }

    /// The lag as measured; `None`: unknown.
    pub(crate) fn lag(&self, lag: Option<Duration>) {
        set(&self.lag, lag.map_or(-1.0, |d| d.as_secs_f64()));
    }

    /// The breaker opened (`true`) or closed.
    pub(crate) fn breaker(&self, open: bool) {
        set(&self.breaker_open, if open { 1.0 } else { 0.0 });
    }

    /// Units in flight now.
    pub(crate) fn in_flight(&self, n: usize) {
        set(&self.in_flight, n as f64);
    }

    /// A pool's connections: `read_only` picks the read-only sessions' pool.
    pub(crate) fn pool(&self, read_only: bool, pool: PoolUse) {
        let keys = &self.pools[usize::from(read_only)];
        set(&keys[0], pool.used as f64);
        set(&keys[1], pool.idle as f64);
        set(&keys[2], pool.max as f64);
    }
}

/// A pool's connections at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolUse {
    /// Connections handed out (including those the library holds between a unit's
    /// statements).
    pub used: u32,
    /// Open and idle.
    pub idle: u32,
    /// The most it opens.
    pub max: u32,
}

/// Handle-wide events.
pub(crate) mod handle {
    use super::*;

    static ELECTIONS: Key = Key::from_static_name(names::ELECTIONS);

    /// A monitor round found the primary unusable and looked for another.
    pub(crate) fn election() {
        count(&ELECTIONS, 1);
    }

    /// The causal-wait counter and histogram keys per route reason, built on first sight.
    static CAUSAL: [OnceLock<(Key, Key)>; REASONS] = [const { OnceLock::new() }; REASONS];

    /// A read with a causal token was routed for reason `label` (`index`: see
    /// `RouteReason::index`) after `took`. Every read with a token not known to be
    /// replayed comes here: its keys are built once, never per read.
    pub(crate) fn causal_wait(index: usize, label: &'static str, took: Duration) {
        let Some(cell) = CAUSAL.get(index) else {
            return;
        };
        let (waits, duration) = cell.get_or_init(|| {
            let labels = vec![Label::from_static_parts(names::ROUTE_REASON, label)];
            (
                Key::from_parts(names::CAUSAL_WAITS, labels.clone()),
                Key::from_parts(names::CAUSAL_WAIT_DURATION, labels),
            )
        });
        count(waits, 1);
        record(duration, took.as_secs_f64());
    }
}

/// The keys of one queue.
#[derive(Debug)]
pub(crate) struct QueueMetrics {
    depth: Key,
    oldest_age: Key,
    dead_letters: Key,
    applied: Key,
    skipped: Key,
    retries: Key,
    dead_lettered: Key,
}

impl QueueMetrics {
    pub(crate) fn new(queue: &str) -> Self {
        let key = |name: &'static str| {
            Key::from_parts(name, vec![Label::new(names::QUEUE, queue.to_owned())])
        };
        QueueMetrics {
            depth: key(names::QUEUE_DEPTH),
            oldest_age: key(names::QUEUE_OLDEST_AGE),
            dead_letters: key(names::QUEUE_DEAD_LETTERS),
            applied: key(names::QUEUE_APPLIED),
            skipped: key(names::QUEUE_SKIPPED),
            retries: key(names::QUEUE_RETRIES),
            dead_lettered: key(names::QUEUE_DEAD_LETTERED),
        }
    }

    /// The queue's depth, oldest pending age and dead letters, as a status read found them.
    pub(crate) fn status(&self, depth: u64, oldest: Option<Duration>, dead: u64) {
        set(&self.depth, depth as f64);
        set(&self.oldest_age, oldest.map_or(0.0, |d| d.as_secs_f64()));
        set(&self.dead_letters, dead as f64);
    }

    pub(crate) fn applied(&self, n: u64) {
        count(&self.applied, n);
    }

    pub(crate) fn skipped(&self, n: u64) {
        count(&self.skipped, n);
    }

    pub(crate) fn retried(&self) {
        count(&self.retries, 1);
    }

    pub(crate) fn dead_lettered(&self) {
        count(&self.dead_lettered, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_the_url_and_never_carry_credentials() {
        let pg = Address::of("postgres://app:***@10.0.0.5:6432/shop");
        assert_eq!(pg.system, "postgresql");
        assert_eq!(pg.host.as_deref(), Some("10.0.0.5"));
        assert_eq!(pg.port, Some(6432));
        assert_eq!(pg.namespace, "shop");
        let my = Address::of("mysql://root@db.internal/app");
        assert_eq!(
            (my.host.as_deref(), my.port),
            (Some("db.internal"), Some(3306))
        );
        let lite = Address::of("sqlite:///var/lib/app/data.db?mode=rwc");
        assert_eq!((lite.namespace.as_str(), lite.host), ("data.db", None));
        let rel = Address::of("sqlite://data.db?mode=rwc");
        assert_eq!(rel.namespace, "data.db");
        let bad = Address::of("not a url");
        assert_eq!((bad.host, bad.port), (None, None));
    }
}
