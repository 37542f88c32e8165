//! The names the library's spans and metrics use: OpenTelemetry's stable database client
//! conventions where one exists, `sea_orm_replica.*` for the rest. Dashboards and alerts can
//! refer to these constants. A Prometheus exporter writes the dots as underscores (and a
//! counter with `_total`): `db.client.operation.duration` → `db_client_operation_duration`.

// ---- attributes (span fields and metric labels) --------------------------------------------

/// The database system: `postgresql`, `mysql` (MariaDB and MySQL) or `sqlite`.
pub const DB_SYSTEM_NAME: &str = "db.system.name";
/// The database name (PostgreSQL, MySQL) or the SQLite file's name.
pub const DB_NAMESPACE: &str = "db.namespace";
/// A statement's operation: `SELECT`, `INSERT`, `UPDATE`, `DELETE`, … (spans only).
pub const DB_OPERATION_NAME: &str = "db.operation.name";
/// A statement's low-cardinality summary, the operation and its first table:
/// `SELECT banner` (spans only; never literals or parameters).
pub const DB_QUERY_SUMMARY: &str = "db.query.summary";
/// The statement's text, parameters never included; only when the handle was built with
/// `record_query_text(true)`.
pub const DB_QUERY_TEXT: &str = "db.query.text";
/// The host of the node that was actually chosen.
pub const SERVER_ADDRESS: &str = "server.address";
/// The port of the node that was actually chosen.
pub const SERVER_PORT: &str = "server.port";
/// The class of a failure: `connection` (the node failed: refused, lost, no answer in time)
/// or `database` (the server answered with an error).
pub const ERROR_TYPE: &str = "error.type";
/// The node's name as configured (sharded: `shard/node`).
pub const NODE: &str = "db.replica.node";
/// The role the node played: `primary` or `replica`, as the server reported it at the last
/// check (the configured role until then).
pub const ROLE: &str = "db.replica.role";
/// Why the unit went where it went ([`RouteReason::label`](crate::RouteReason::label)):
/// `write`, `balanced`, `fallback`, `caught_up`, …
pub const ROUTE_REASON: &str = "db.replica.route_reason";
/// The time from a unit's open to its connection, in microseconds (spans only).
pub const WAIT_US: &str = "db.replica.wait_us";
/// The shard a unit ran on, when the handle is sharded (spans only).
pub const SHARD: &str = "db.replica.shard";
/// The pool a connection gauge counts: `<node>` (read-write sessions) or
/// `<node>/read_only`.
pub const POOL_NAME: &str = "db.client.connection.pool.name";
/// `used` or `idle`.
pub const CONNECTION_STATE: &str = "db.client.connection.state";
/// The queue's name.
pub const QUEUE: &str = "db.replica.queue";

// ---- metrics -------------------------------------------------------------------------------

/// Histogram, seconds: every statement a unit ran, per node and role (OpenTelemetry's stable
/// database client metric). Failed ones carry [`ERROR_TYPE`].
pub const OPERATION_DURATION: &str = "db.client.operation.duration";
/// Gauge: connections in a pool, by [`CONNECTION_STATE`] (`used`, `idle`).
pub const CONNECTION_COUNT: &str = "db.client.connection.count";
/// Gauge: the most connections a pool opens.
pub const CONNECTION_MAX: &str = "db.client.connection.max";
/// Counter: units of work routed, per node, role and route reason.
pub const UNITS: &str = "sea_orm_replica.units";
/// Counter: read-only units that ran on the primary because no replica was eligible
/// (unavailable, behind the token, or too far behind), per node.
pub const FALLBACKS: &str = "sea_orm_replica.fallbacks";
/// Counter: read-only units run again elsewhere after their node failed, per failed node.
pub const READ_RETRIES: &str = "sea_orm_replica.read_retries";
/// Counter: the primary changed (failover), per new primary.
pub const FAILOVERS: &str = "sea_orm_replica.failovers";
/// Counter: monitor rounds that found the current primary unusable and looked for another.
pub const ELECTIONS: &str = "sea_orm_replica.elections";
/// Counter: reads with a causal token that needed more than what was known (asked a
/// replica, waited, or went to the primary), per outcome ([`ROUTE_REASON`]).
pub const CAUSAL_WAITS: &str = "sea_orm_replica.causal_waits";
/// Histogram, seconds: how long those reads took to be routed.
pub const CAUSAL_WAIT_DURATION: &str = "sea_orm_replica.causal_wait.duration";
/// Gauge, seconds: a replica's replication lag as last measured; −1 while unknown (down,
/// or not measured yet).
pub const LAG: &str = "sea_orm_replica.lag";
/// Gauge: 1 while a node's circuit breaker is open (the node is out of routing), else 0.
pub const BREAKER_OPEN: &str = "sea_orm_replica.breaker.open";
/// Gauge: units running on a node now.
pub const IN_FLIGHT: &str = "sea_orm_replica.in_flight";
/// Gauge: commands enqueued and not yet applied (or dead-lettered), per queue.
pub const QUEUE_DEPTH: &str = "sea_orm_replica.queue.depth";
/// Gauge, seconds: the age of the oldest pending command, per queue.
pub const QUEUE_OLDEST_AGE: &str = "sea_orm_replica.queue.oldest_age";
/// Gauge: commands in the dead-letter stream, per queue.
pub const QUEUE_DEAD_LETTERS: &str = "sea_orm_replica.queue.dead_letters";
/// Counter: commands a worker applied, per queue.
pub const QUEUE_APPLIED: &str = "sea_orm_replica.queue.applied";
/// Counter: redeliveries skipped because their identity had committed, per queue.
pub const QUEUE_SKIPPED: &str = "sea_orm_replica.queue.skipped";
/// Counter: failed applications that will be tried again, per queue.
pub const QUEUE_RETRIES: &str = "sea_orm_replica.queue.retries";
/// Counter: commands moved to the dead-letter stream, per queue.
pub const QUEUE_DEAD_LETTERED: &str = "sea_orm_replica.queue.dead_lettered";
