//! Balancers: how a read-only unit chooses among the eligible replicas. [`Balancing`] names the
//! built-in ones for configuration files.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::node::Node;

/// Chooses one replica among the eligible ones. Implement it for your own strategy.
pub trait Balancer: Send + Sync + std::fmt::Debug + 'static {
    /// Picks an index into `nodes` for which `eligible` holds, or `None` when there is none.
    /// Nodes expose what a strategy may weigh: [`Node::in_flight`], [`Node::lag`],
    /// [`Node::weight`].
    fn pick(&self, nodes: &[Arc<Node>], eligible: &dyn Fn(usize) -> bool) -> Option<usize>;

    /// The name spans report as part of the route's reason.
    fn name(&self) -> &'static str;
}

/// Takes the eligible replicas in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// The eligible indexes, starting at the next turn.
    fn in_turn<'a>(
        &self,
        n: usize,
        eligible: &'a dyn Fn(usize) -> bool,
    ) -> impl Iterator<Item = usize> + 'a {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(move |k| (start + k) % n)
            .filter(move |&i| eligible(i))
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, nodes: &[Arc<Node>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.in_turn(nodes.len(), eligible).next()
    }

    fn name(&self) -> &'static str {
        "round-robin"
    }
}

/// Picks an eligible replica uniformly at random.
#[derive(Debug, Default)]
pub struct Random;

impl Balancer for Random {
    fn pick(&self, nodes: &[Arc<Node>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let count = (0..nodes.len()).filter(|&i| eligible(i)).count();
        if count == 0 {
            return None;
        }
        let ticket = fastrand::usize(..count);
        (0..nodes.len()).filter(|&i| eligible(i)).nth(ticket)
    }

    fn name(&self) -> &'static str {
        "random"
    }
}

/// Picks an eligible replica at random in proportion to its weight
/// ([`NodeConfig::weight`](crate::NodeConfig::weight), default 1).
#[derive(Debug, Default)]
pub struct Weighted;

impl Balancer for Weighted {
    fn pick(&self, nodes: &[Arc<Node>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let total: u64 = (0..nodes.len())
            .filter(|&i| eligible(i))
            .map(|i| u64::from(nodes[i].weight()))
            .sum();
        if total == 0 {
            return None;
        }
        let mut ticket = fastrand::u64(..total);
        for i in (0..nodes.len()).filter(|&i| eligible(i)) {
            let w = u64::from(nodes[i].weight());
            if ticket < w {
                return Some(i);
            }
            ticket -= w;
        }
        None
    }

    fn name(&self) -> &'static str {
        "weighted"
    }
}

/// Picks the eligible replica with the fewest units in flight (ties in turn).
#[derive(Debug, Default)]
pub struct LeastInFlight {
    turn: RoundRobin,
}

impl Balancer for LeastInFlight {
    fn pick(&self, nodes: &[Arc<Node>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.turn
            .in_turn(nodes.len(), eligible)
            .min_by_key(|&i| nodes[i].in_flight())
    }

    fn name(&self) -> &'static str {
        "least in-flight"
    }
}

/// Picks the eligible replica with the lowest measured lag (unknown lag last; ties in turn).
#[derive(Debug, Default)]
pub struct LowestLag {
    turn: RoundRobin,
}

impl Balancer for LowestLag {
    fn pick(&self, nodes: &[Arc<Node>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.turn
            .in_turn(nodes.len(), eligible)
            .min_by_key(|&i| nodes[i].lag().unwrap_or(Duration::MAX))
    }

    fn name(&self) -> &'static str {
        "lowest lag"
    }
}

/// The built-in balancers by name, for configuration files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balancing {
    /// [`RoundRobin`] (the default).
    #[default]
    RoundRobin,
    /// [`Random`].
    Random,
    /// [`Weighted`].
    Weighted,
    /// [`LeastInFlight`].
    LeastInFlight,
    /// [`LowestLag`].
    LowestLag,
}

impl Balancing {
    /// The balancer this names.
    pub fn balancer(self) -> Box<dyn Balancer> {
        match self {
            Balancing::RoundRobin => Box::new(RoundRobin::default()),
            Balancing::Random => Box::new(Random),
            Balancing::Weighted => Box::new(Weighted),
            Balancing::LeastInFlight => Box::new(LeastInFlight::default()),
            Balancing::LowestLag => Box::new(LowestLag::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::node::tests::nodes;

    #[test]
    fn round_robin_cycles_and_skips_unavailable() {
        let (three, none) = (nodes(&[1, 1, 1]), nodes(&[]));
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..6).map(|_| rr.pick(&three, &|_| true)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2].map(Some));
        let picks: Vec<_> = (0..4).map(|_| rr.pick(&three, &|i| i != 1)).collect();
        assert!(picks.iter().all(|&i| i.is_some() && i != Some(1)));
        assert_eq!(rr.pick(&three, &|_| false), None);
        assert_eq!(rr.pick(&none, &|_| true), None);
    }

    #[test]
    fn strategies_pick_what_they_promise() {
        let three = nodes(&[1, 1, 8]);
        // weighted: about 8 in 10 on the heavy node
        let heavy = (0..10_000)
            .filter(|_| Weighted.pick(&three, &|_| true) == Some(2))
            .count();
        assert!((7_000..9_000).contains(&heavy), "{heavy}");
        assert_eq!(Weighted.pick(&three, &|i| i == 0), Some(0));
        // random: every eligible node, never an ineligible one
        let mut seen = [0; 3];
        for _ in 0..3_000 {
            if let Some(i) = Random.pick(&three, &|i| i != 1) {
                seen[i] += 1;
            }
        }
        assert!(
            seen[0] > 1_000 && seen[1] == 0 && seen[2] > 1_000,
            "{seen:?}"
        );
        // least in flight
        let _busy = [three[0].enter(), three[0].enter(), three[2].enter()];
        assert_eq!(LeastInFlight::default().pick(&three, &|_| true), Some(1));
        assert_eq!(LeastInFlight::default().pick(&three, &|i| i != 1), Some(2));
        // lowest lag: unknown lag last
        three[0].set_lag(Some(Duration::from_millis(30)));
        three[1].set_lag(Some(Duration::from_millis(5)));
        assert_eq!(LowestLag::default().pick(&three, &|_| true), Some(1));
        assert_eq!(LowestLag::default().pick(&three, &|i| i != 1), Some(0));
    }
}
