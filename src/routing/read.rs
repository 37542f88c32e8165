//! Read routing under a consistency choice: eventual, bounded staleness, the primary, or read
//! your writes (a causal token: a replica that has replayed it, or one that catches up in time,
//! else the primary).

use std::time::Duration;

use super::{Route, RouteReason, Router};
use crate::consistency::{Consistency, Position};
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
        None => Box::pin(route_causal(router, consistency, max_wait)).await,
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
        Consistency::ReadYourWrites(token) if *token.position() == Position::None => {
            router.route(true)
        }
        Consistency::ReadYourWrites(_) => return None,
    })
}

/// A read with a causal token: a replica known to have it, else one that answers that it has
/// it, else one that catches up in time, else the primary.
async fn route_causal(
    router: &Router,
    consistency: &Consistency,
    max_wait: Duration,
) -> Result<Route, ReplicaError> {
    let Consistency::ReadYourWrites(token) = consistency else {
        return router.route(true);
    };
    let wanted = token.position();
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
    // 2. ask each available replica once: the one known to be furthest along first (a replica
    //    the monitor saw lagging is asked last), then the others in the balancer's order
    let start = router
        .balancer
        .pick(replicas, &|i| router.replica_usable(i))
        .unwrap_or(0);
    let in_turn = (0..replicas.len()).map(|k| (start + k) % replicas.len());
    let furthest = in_turn
        .clone()
        .filter(|&i| router.replica_usable(i))
        .reduce(|a, b| {
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
        if !router.replica_usable(i) {
            continue;
        }
        match node.dialect().replay_position(node.connection()).await {
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
    // 3. wait on the replica that is furthest along
    if let Some(i) = best.filter(|_| !max_wait.is_zero()) {
        let node = &replicas[i];
        match node
            .dialect()
            .wait_replayed(node.connection(), wanted, max_wait)
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
    // 4. nobody has it in time: the primary has everything
    Ok(Route {
        node: router.primary(),
        reason: RouteReason::NotReplayed,
    })
}
