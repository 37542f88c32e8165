//! Node health: the background monitor. It checks the nodes and records what they report; the
//! election that follows each round belongs to [`routing`](crate::routing).
//!
//! One task per handle, started by the builder for PostgreSQL and MariaDB (SQLite's reader
//! shares the writer's file and never lags). Every `interval` it checks every node at once,
//! each check bounded by `check_timeout`, so a node that hangs cannot hold up the others.
//! Checks run on each node's own check connection (one read-only session no unit ever uses),
//! so a full application pool never makes a healthy node look dead. A round finds:
//!
//! - reachable or not: a failed or timed-out check takes the node down (its circuit opens);
//!   a down node is checked again after its back-off, and re-admitted when it answers;
//! - its role and term, as the server reports them (`pg_is_in_recovery()` and the WAL
//!   timeline; `@@read_only`), from which the router elects the primary
//!   (see [`routing`](crate::routing)): after a promotion, read-write units follow without a restart;
//! - its replay position and lag (bounded staleness, causal reads).
//!
//! ## Lag
//!
//! MariaDB: `Seconds_Behind_Master` as the replica reports it (whole seconds; 0 while the SQL
//! thread has caught up with what it received).
//!
//! PostgreSQL: the replica's own `now() - pg_last_xact_replay_timestamp()` is the age of the
//! last transaction it replayed, which after an idle period is the length of the idle period,
//! however fresh the WAL being replayed. So when the primary answered the same round, a
//! replica's lag is:
//!
//! - **zero** when it has replayed the position the primary reported this round;
//! - otherwise the **smallest** of: the primary's `pg_stat_replication.replay_lag` for its
//!   stream (measured on the primary's clock from when it flushed the WAL; the row is found by
//!   the replica's replication slot, else its unique `application_name`, and is not used if
//!   it claims a replay position beyond what the replica itself reports); the time since the
//!   last check that found the primary at or below the replica's replay position (every
//!   commit before that check the replica has; exact to one monitor interval, and needs no
//!   privilege); and the age of its last replayed transaction. The last two are upper bounds.
//!
//! Without an answer from the primary, it is the replica's own view: 0 while everything it
//! received is replayed, else the age of its last replayed transaction.
//!
//! The task holds only a weak reference to the handle and stops once the handle is dropped.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sea_orm::DbBackend;

use super::{Node, Probe, ServerRole};
use crate::backend::Downstream;

/// How often the monitor checks the nodes unless told otherwise.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_millis(500);

/// How long one check may take before the node counts as down, unless told otherwise.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// One check that answered: what the node said, and when.
#[derive(Debug)]
pub(crate) struct Checked {
    pub node: Arc<Node>,
    pub probe: Probe,
    /// When the check was sent: everything the node had done by then, it reported.
    pub sent: Instant,
    /// When its answer came back.
    pub answered: Instant,
}

/// Checks one node on its own check connection. A failed or timed-out check takes the node
/// down at once; an answer is returned, for the round to record.
async fn check(node: &Arc<Node>, timeout: Duration) -> Option<Checked> {
    let conn = node.check_connection();
    let sent = Instant::now();
    match tokio::time::timeout(timeout, node.dialect().probe(&conn)).await {
        Ok(Ok(probe)) => Some(Checked {
            node: Arc::clone(node),
            probe,
            sent,
            answered: Instant::now(),
        }),
        Ok(Err(err)) => {
            node.mark_down(&format!("health check failed: {err}"));
            None
        }
        Err(_) => {
            // the check connection is mid-statement: drop it rather than wait for it
            node.reset_check_connection();
            node.mark_down(&format!("health check timed out after {timeout:?}"));
            None
        }
    }
}

/// Checks every node of `nodes` that is due, all at once; returns the answers.
pub(crate) async fn check_due<'a>(
    nodes: impl Iterator<Item = &'a Arc<Node>>,
    timeout: Duration,
) -> Vec<Checked> {
    join_all(
        nodes
            .filter(|n| n.due_for_check())
            .map(|n| check(n, timeout)),
    )
    .await
    .into_iter()
    .flatten()
    .collect()
}

/// Records what every answered check found (role, term, position) and re-admits the nodes.
pub(crate) fn record(round: &[Checked]) {
    for c in round {
        c.node.record_probe(&c.probe, c.answered);
    }
}

/// Sets the lag of every node that answered the round, reading PostgreSQL replicas against
/// `primary` (the node read-write units go to) when it answered too; see the module notes.
pub(crate) fn measure_lags(round: &[Checked], primary: &Arc<Node>) {
    let primary = round
        .iter()
        .find(|c| Arc::ptr_eq(&c.node, primary) && c.probe.role == ServerRole::Primary);
    if let Some(p) = primary {
        p.node.note_written_at(&p.probe.position, p.sent);
    }
    let replicas: Vec<&Checked> = round
        .iter()
        .filter(|c| c.probe.role == ServerRole::Replica)
        .collect();
    let rows = primary.map(|p| match_streams(&replicas, &p.probe.downstream));
    for c in round {
        let lag = match (c.probe.role, primary, c.node.dialect().0) {
            (ServerRole::Replica, Some(p), DbBackend::Postgres) => {
                let row = rows.as_ref().and_then(|rows| {
                    replicas
                        .iter()
                        .position(|r| std::ptr::eq(*r, c))
                        .and_then(|i| rows[i])
                });
                pg_replica_lag(c, p, row)
            }
            _ => c.probe.lag,
        };
        c.node.set_lag(lag);
    }
}

/// A PostgreSQL replica's lag, read against the primary's check in the same round.
fn pg_replica_lag(
    replica: &Checked,
    primary: &Checked,
    row: Option<&Downstream>,
) -> Option<Duration> {
    let replayed = &replica.probe.position;
    if replayed.has_reached(&primary.probe.position) {
        return Some(Duration::ZERO);
    }
    let since_primary_was_here = primary
        .node
        .last_written_at_or_below(replayed)
        .map(|sent| replica.answered.saturating_duration_since(sent));
    [
        row.and_then(|r| r.replay_lag),
        since_primary_was_here,
        replica.probe.replay_age,
    ]
    .into_iter()
    .flatten()
    .min()
}

/// For each replica (in order), the primary's row for its stream: the one row with its
/// replication slot, else the one row with its `application_name`; a row whose replay
/// position is beyond what the replica itself reports is not its row, and a row two
/// replicas would claim belongs to neither.
fn match_streams<'a>(replicas: &[&Checked], rows: &'a [Downstream]) -> Vec<Option<&'a Downstream>> {
    let only = |mut it: std::vec::IntoIter<&'a Downstream>| match (it.next(), it.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    };
    let found: Vec<Option<&Downstream>> = replicas
        .iter()
        .map(|r| {
            let name = r.probe.upstream.as_ref()?;
            let by = |pick: &dyn Fn(&Downstream) -> bool| {
                only(
                    rows.iter()
                        .filter(|d| pick(d))
                        .collect::<Vec<_>>()
                        .into_iter(),
                )
            };
            let row = name
                .slot
                .as_ref()
                .and_then(|slot| by(&|d| d.name.slot.as_ref() == Some(slot)))
                .or_else(|| {
                    name.application_name
                        .as_ref()
                        .and_then(|app| by(&|d| d.name.application_name.as_ref() == Some(app)))
                })?;
            r.probe.position.has_reached(&row.replayed).then_some(row)
        })
        .collect();
    found
        .iter()
        .map(|row| {
            row.filter(|row| {
                found
                    .iter()
                    .filter(|other| other.is_some_and(|o| std::ptr::eq(o, *row)))
                    .count()
                    == 1
            })
        })
        .collect()
}

/// Spawns the monitor for `owner`: every `interval`, one `round` (checks, then the election);
/// it ends when `owner` is dropped.
pub(crate) fn spawn_monitor<T, F, R>(owner: Weak<T>, interval: Duration, round: F)
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>) -> R + Send + 'static,
    R: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(owner): Option<Arc<T>> = owner.upgrade() else {
                tracing::debug!("handle dropped: monitor stops");
                return;
            };
            round(owner).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::StreamName;
    use crate::consistency::Position;
    use crate::node::tests::nodes;

    fn probe(role: ServerRole, lsn: u64) -> Probe {
        Probe {
            role,
            term: u64::from(role == ServerRole::Primary),
            position: Position::Lsn(lsn),
            lag: None,
            upstream: None,
            replay_age: None,
            downstream: Vec::new(),
        }
    }

    fn checked(node: &Arc<Node>, probe: Probe, at: Instant) -> Checked {
        Checked {
            node: Arc::clone(node),
            probe,
            sent: at,
            answered: at + Duration::from_millis(2),
        }
    }

    fn stream(slot: Option<&str>, app: Option<&str>) -> StreamName {
        StreamName {
            slot: slot.map(Into::into),
            application_name: app.map(Into::into),
        }
    }

    fn row(name: StreamName, replayed: u64, lag_ms: Option<u64>) -> Downstream {
        Downstream {
            name,
            replayed: Position::Lsn(replayed),
            replay_lag: lag_ms.map(Duration::from_millis),
        }
    }

    /// After 20 s of idle, the first new commit is being replayed: the replica's own view
    /// says 20 s; the lag read against the primary is what the delay really is.
    #[test]
    fn a_replica_behind_after_idle_reads_its_true_lag_not_the_idle_time() {
        let n = nodes(&[1, 1]);
        let (primary, replica) = (&n[0], &n[1]);
        let t0 = Instant::now();
        // idle at 100 for 20 s, checked every 100 ms
        for i in 0..200 {
            primary.note_written_at(&Position::Lsn(100), t0 + Duration::from_millis(i * 100));
        }
        // writes start just after the last idle check; 500 ms later the replica still replays
        // the first of them
        let now = t0 + Duration::from_millis(19_900 + 500);
        let p = checked(primary, probe(ServerRole::Primary, 900), now);
        primary.note_written_at(&p.probe.position, p.sent);
        let mut r = probe(ServerRole::Replica, 100);
        r.lag = Some(Duration::from_secs(20));
        r.replay_age = Some(Duration::from_secs(20));
        let r = checked(replica, r, now);
        let lag = pg_replica_lag(&r, &p, None).unwrap();
        assert!(lag <= Duration::from_millis(520), "{lag:?}");
        // the primary's replay_lag, when it has one, is used when it is smaller (it is
        // not held to a monitor interval); the bounds cap it when it is stale
        let measured = row(stream(Some("r1"), None), 100, Some(480));
        assert_eq!(
            pg_replica_lag(&r, &p, Some(&measured)),
            Some(Duration::from_millis(480))
        );
        let stale = row(stream(Some("r1"), None), 100, Some(9_000));
        assert_eq!(pg_replica_lag(&r, &p, Some(&stale)), Some(lag));
        // caught up with what the primary reported this round: zero
        let caught_up = checked(replica, probe(ServerRole::Replica, 900), now);
        assert_eq!(
            pg_replica_lag(&caught_up, &p, Some(&measured)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn rows_match_replicas_by_slot_then_unique_application_name() {
        let n = nodes(&[1, 1, 1]);
        let now = Instant::now();
        let with = |node: &Arc<Node>, name: StreamName, lsn: u64| {
            let mut p = probe(ServerRole::Replica, lsn);
            p.upstream = Some(name);
            checked(node, p, now)
        };
        let rows = vec![
            row(stream(Some("s1"), Some("walreceiver")), 50, Some(1)),
            row(stream(Some("s2"), Some("walreceiver")), 50, Some(2)),
            row(stream(None, Some("east")), 50, Some(3)),
        ];
        let a = with(&n[0], stream(Some("s2"), Some("walreceiver")), 60);
        let b = with(&n[1], stream(None, Some("east")), 60);
        let c = with(&n[2], stream(None, Some("walreceiver")), 60); // two rows: ambiguous
        let found = match_streams(&[&a, &b, &c], &rows);
        let lags: Vec<_> = found.iter().map(|r| r.and_then(|r| r.replay_lag)).collect();
        assert_eq!(
            lags,
            [
                Some(Duration::from_millis(2)),
                Some(Duration::from_millis(3)),
                None
            ]
        );
        // a row ahead of what the replica itself reports is not its row
        let behind = with(&n[0], stream(Some("s1"), None), 40);
        assert!(match_streams(&[&behind], &rows)[0].is_none());
        // two replicas claiming one row: neither gets it
        let twin = with(&n[1], stream(None, Some("east")), 60);
        let found = match_streams(&[&b, &twin], &rows);
        assert!(found.iter().all(Option::is_none));
    }

    #[test]
    fn the_primary_history_keeps_the_last_check_at_each_position() {
        let n = nodes(&[1]);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        n[0].note_written_at(&Position::Lsn(10), at(0));
        n[0].note_written_at(&Position::Lsn(10), at(100));
        n[0].note_written_at(&Position::Lsn(20), at(200));
        assert_eq!(
            n[0].last_written_at_or_below(&Position::Lsn(15)),
            Some(at(100))
        );
        assert_eq!(
            n[0].last_written_at_or_below(&Position::Lsn(20)),
            Some(at(200))
        );
        assert_eq!(n[0].last_written_at_or_below(&Position::Lsn(5)), None);
    }
}
