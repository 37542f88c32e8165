//! Observability: the names of spans and metrics ([`names`]), recording metrics through the
//! [`metrics`] facade, and (feature `prometheus`) a ready Prometheus recorder.
//!
//! Metrics go to whichever recorder the application installs (`metrics-exporter-prometheus`,
//! an OpenTelemetry bridge, StatsD, …). With none installed, an event costs a branch and a
//! call into the facade's no-op recorder: keys are built once per node, never per event.
//! The status view the status page shows is [`Status`](crate::Status); the page and the
//! metrics endpoint are routers in `web` (feature `axum`).
//!
//! Sits at the bottom of the crate with [`consistency`](crate::consistency): it imports
//! nothing from it.

pub mod names;
#[cfg(feature = "prometheus")]
pub mod prometheus;
pub(crate) mod record;

pub use record::PoolUse;

/// Describes every metric (unit and help text) to the recorder in force. Recorders keep
/// descriptions given before a metric's first event; [`prometheus::install`] calls this, and
/// so does building a handle. Calling it again is harmless.
pub fn describe() {
    use metrics::Unit;
    use names::*;
    let s = |name: &'static str, unit: Unit, help: &'static str| {
        metrics::with_recorder(|r| r.describe_histogram(name.into(), Some(unit), help.into()));
    };
    let c = |name: &'static str, help: &'static str| {
        metrics::with_recorder(|r| r.describe_counter(name.into(), Some(Unit::Count), help.into()));
    };
    let g = |name: &'static str, unit: Unit, help: &'static str| {
        metrics::with_recorder(|r| r.describe_gauge(name.into(), Some(unit), help.into()));
    };
    s(
        OPERATION_DURATION,
        Unit::Seconds,
        "Duration of database client operations (statements), per node and role.",
    );
    g(
        CONNECTION_COUNT,
        Unit::Count,
        "Connections in a pool, by state (used, idle).",
    );
    g(
        CONNECTION_MAX,
        Unit::Count,
        "The most connections a pool opens.",
    );
    c(
        UNITS,
        "Units of work routed, per node, role and route reason.",
    );
    c(
        FALLBACKS,
        "Read-only units run on the primary for want of an eligible replica.",
    );
    c(
        READ_RETRIES,
        "Read-only units run again elsewhere after their node failed.",
    );
    c(FAILOVERS, "Times the primary changed, per new primary.");
    c(
        ELECTIONS,
        "Monitor rounds that found the primary unusable and looked for another.",
    );
    c(
        CAUSAL_WAITS,
        "Reads with a causal token that asked a replica, waited, or went to the primary.",
    );
    s(
        CAUSAL_WAIT_DURATION,
        Unit::Seconds,
        "Time to route a read with a causal token that was not known to be replayed.",
    );
    g(
        LAG,
        Unit::Seconds,
        "Replication lag as last measured; -1 while unknown.",
    );
    g(
        BREAKER_OPEN,
        Unit::Count,
        "1 while the node's circuit breaker is open (out of routing).",
    );
    g(IN_FLIGHT, Unit::Count, "Units running on the node now.");
    g(
        QUEUE_DEPTH,
        Unit::Count,
        "Commands enqueued and not yet applied.",
    );
    g(
        QUEUE_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest pending command.",
    );
    g(
        QUEUE_DEAD_LETTERS,
        Unit::Count,
        "Commands in the dead-letter stream.",
    );
    c(QUEUE_APPLIED, "Commands applied by workers.");
    c(
        QUEUE_SKIPPED,
        "Redeliveries skipped: their identity had committed.",
    );
    c(QUEUE_RETRIES, "Failed applications to be tried again.");
    c(
        QUEUE_DEAD_LETTERED,
        "Commands moved to the dead-letter stream.",
    );
}
