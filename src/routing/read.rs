//! Read routing under a consistency choice: eventual, bounded staleness, the primary, or read
//! your writes (a causal token: a replica that has replayed it, or one that catches up in time,
//! else the primary).

use std::time::{Duration, Instant};

use super::{Route, RouteReason, Router};
use crate::consistency::{Consistency, Position};
use crate::node::Node;
use crate::ReplicaError;

/// Routes a read-only unit under `consistency`, waiting at most `max_wait` for a replica to
/// replay a token.
pub(crate) async fn route_read(
    router: &Router,
    consistency: &Consistency,
    max_wait: Duration,
) -> Result<Route, ReplicaError> {
    match route_read_now(router, consistency) {
        Some(route) => route,
        // boxed: the causal path is a large future that the common paths should not carry
        None => {
            let started = Instant::now();
            let route = Box::pin(route_causal(router, consistency, max_wait)).await;
            if let Ok(route) = &route {
                crate::observe::record::handle::causal_wait(
                    route.reason.index(),
                    route.reason.label(),
                    started.elapsed(),
                );
            }
            route
        }
    }
}

/// The routing decisions that need no I/O: everything but a read-your-writes token.
fn route_read_now(
    router: &Router,
    consistency: &Consistency,
) -> Option<Result<Route, ReplicaError>> {
    Some(match consistency {
        Consistency::Eventual => router.route(true),
        Consistency::BoundedStaleness(bound) => router.route_within(true, Some(*bound)),
        Consistency::Primary => Ok(Route {
            node: router.primary(),
            reason: RouteReason::PrimaryRequested,
        }),
        Consistency::ReadYourWrites(token) if *router.position_in(token) == Position::None => {
            router.route(true)
        }
        Consistency::ReadYourWrites(_) => return None,
    })
}

/// The shortest time between two on-demand reads of the primary's position: a flood of
/// tokens beyond the known position costs the primary at most one such read per gap.
const WRITTEN_REFRESH_GAP: Duration = Duration::from_millis(10);

/// The longest an on-demand read of the primary's position may take; past it, the token is
/// refused.
const WRITTEN_REFRESH_TIMEOUT: Duration = Duration::from_secs(1);

/// True when the current primary has written `wanted`, so a token at `wanted` can be real.
///
/// What the primary is known to have written (its position at the monitor's last check, and
/// every commit position read from it in this process) answers at once. A token beyond that
/// came from another process, or from a write since the last check, or is forged: the
/// primary is asked its position, at most once per [`WRITTEN_REFRESH_GAP`], and one reading
/// serves every token that arrived before it began. A token beyond the answer is refused.
async fn primary_has_written(router: &Router, wanted: &Position) -> bool {
    let primary = router.primary();
    if primary.has_written(wanted) {
        return true;
    }
    let arrived = Instant::now();
    let mut last = primary.written_refresh().lock().await;
    if primary.has_written(wanted) {
        return true;
    }
    if last.is_some_and(|began| began >= arrived) {
        // a reading that began after this token arrived did not reach it
        return false;
    }
    if let Some(began) = *last {
        tokio::time::sleep_until((began + WRITTEN_REFRESH_GAP).into()).await;
    }
    *last = Some(Instant::now());
    let sessions = primary.sessions(true);
    let read = primary.bounded(primary.dialect().current_position(&sessions));
    match tokio::time::timeout(WRITTEN_REFRESH_TIMEOUT, read).await {
        Ok(Ok(position)) => {
            primary.observe_written(&position);
            position.has_reached(wanted)
        }
        Ok(Err(_)) | Err(_) => false,
    }
}

/// True when replica `node` can be expected to replay a fresh write within `max_wait`: its
/// measured lag is within it, or unknown (then it is asked, as before anything was known).
fn can_catch_up(node: &Node, max_wait: Duration) -> bool {
    node.lag().is_none_or(|lag| lag <= max_wait)
}

/// A read with a causal token: a replica known to have it, else one that answers that it has
/// it, else one that catches up in time, else the primary. A token beyond what the primary
/// has written is refused (routed as if there were none): it cannot be real, and honouring it
/// would send the read to the primary. Replicas measured further behind than `max_wait` are
/// neither asked nor waited on; when no replica is left, the read goes to the primary at once.
async fn route_causal(
    router: &Router,
    consistency: &Consistency,
    max_wait: Duration,
) -> Result<Route, ReplicaError> {
    let Consistency::ReadYourWrites(token) = consistency else {
        return router.route(true);
    };
    let wanted = router.position_in(token);
    let replicas = &router.replicas;
    let caught_up = |reason| {
        move |i: usize| Route {
            node: replicas[i].clone(),
            reason,
        }
    };
    // 1. a replica already known to be there: no I/O at all
    let known = router.balancer.pick(replicas, &|i| {
        router.replica_usable(i) && replicas[i].known_to_have(wanted)
    });
    if let Some(i) = known {
        return Ok(caught_up(RouteReason::CaughtUp)(i));
    }
    // 2. a token the primary has not written is not honoured
    if !primary_has_written(router, wanted).await {
        tracing::debug!(
            token = %token,
            primary = %router.primary().written_position().to_server_text(),
            "causal token beyond the primary's position: refused, routed as if absent"
        );
        return router.route(true);
    }
    // 3. ask each replica that can catch up in time once: the one known to be furthest along
    //    first, then the others in the balancer's order
    let hopeful = |i: usize| router.replica_usable(i) && can_catch_up(&replicas[i], max_wait);
    let Some(start) = router.balancer.pick(replicas, &hopeful) else {
        // every usable replica lags more than the unit may wait (or none is usable)
        let reason = if (0..replicas.len()).any(|i| router.replica_usable(i)) {
            RouteReason::TooFarBehind
        } else {
            RouteReason::NotReplayed
        };
        return Ok(Route {
            node: router.primary(),
            reason,
        });
    };
    let in_turn = (0..replicas.len()).map(|k| (start + k) % replicas.len());
    let furthest = in_turn.clone().filter(|&i| hopeful(i)).reduce(|a, b| {
        let (pa, pb) = (replicas[a].known_position(), replicas[b].known_position());
        if pb.has_reached(&pa) && !pa.has_reached(&pb) {
            b
        } else {
            a
        }
    });
    let order = furthest
        .into_iter()
        .chain(in_turn.filter(move |&i| Some(i) != furthest));
    let mut best: Option<usize> = None;
    for i in order {
        let node = &replicas[i];
        if !hopeful(i) {
            continue;
        }
        match node.dialect().replay_position(&node.sessions(true)).await {
            Ok(seen) => {
                node.observe_position(&seen);
                if seen.has_reached(wanted) {
                    return Ok(caught_up(RouteReason::CaughtUp)(i));
                }
                if best.is_none_or(|b| seen.has_reached(&replicas[b].known_position())) {
                    best = Some(i);
                }
            }
            Err(err) => node.observe_error(&err),
        }
    }
    // 4. wait on the replica that is furthest along
    if let Some(i) = best.filter(|_| !max_wait.is_zero()) {
        let node = &replicas[i];
        match node
            .dialect()
            .wait_replayed(&node.sessions(true), wanted, max_wait)
            .await
        {
            Ok(true) => {
                node.observe_position(wanted);
                return Ok(caught_up(RouteReason::WaitedForReplay)(i));
            }
            Ok(false) => {}
            Err(err) => node.observe_error(&err),
        }
    }
    // 5. nobody has it in time: the primary has everything
    Ok(Route {
        node: router.primary(),
        reason: RouteReason::NotReplayed,
    })
}
