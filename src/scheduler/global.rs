//! Vidur's global schedulers: which replica an arriving request goes to.
//!
//! Vidur dispatches every queued request as soon as it arrives (its global queue is sorted by
//! arrival and emptied at each arrival event), so a global scheduler is just a choice of
//! replica per request, made in arrival order.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Vidur's `--global_scheduler_config_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GlobalPolicy {
    /// Replica `k mod n` for the k-th request (Vidur's default).
    RoundRobin,
    /// Least outstanding requests: the replica with the fewest *waiting* requests
    /// (queued, not yet admitted, including preempted ones; Vidur's `num_pending_requests`),
    /// the lowest replica id on ties. Requests already holding KV blocks do not count.
    Lor,
    /// A uniformly random replica. Vidur draws from Python's global `random`; we draw from a
    /// seeded ChaCha8 stream, so the distribution matches but not the individual draws.
    Random,
}

/// Picks a replica for each arriving request.
#[derive(Debug, Clone)]
pub struct GlobalScheduler {
    policy: GlobalPolicy,
    num_replicas: usize,
    num_dispatched: u64,
    rng: ChaCha8Rng,
}

impl GlobalScheduler {
    /// A dispatcher over `num_replicas` replicas; `seed` drives `random` only.
    pub fn new(policy: GlobalPolicy, num_replicas: usize, seed: u64) -> Result<Self> {
        if num_replicas == 0 {
            return Err(Error::InvalidInput(
                "a global scheduler needs at least one replica".into(),
            ));
        }
        Ok(GlobalScheduler {
            policy,
            num_replicas,
            num_dispatched: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// The policy in use.
    pub fn policy(&self) -> GlobalPolicy {
        self.policy
    }

    /// Chooses the replica for the next arriving request.
    ///
    /// `num_waiting` holds each replica's [`num_waiting`](super::ReplicaScheduler::num_waiting),
    /// read *after* the previous pick was added to its replica: Vidur counts requests it
    /// dispatches in the same instant as waiting, which adding each request before the next
    /// pick reproduces. Only `lor` reads the values; all policies check the length.
    pub fn pick(&mut self, num_waiting: &[usize]) -> Result<usize> {
        if num_waiting.len() != self.num_replicas {
            return Err(Error::Mismatch(format!(
                "global scheduler has {} replicas but got {} waiting counts",
                self.num_replicas,
                num_waiting.len()
            )));
        }
        let replica = match self.policy {
            GlobalPolicy::RoundRobin => (self.num_dispatched % self.num_replicas as u64) as usize,
            GlobalPolicy::Lor => num_waiting
                .iter()
                .enumerate()
                // `min_by_key` keeps the first minimum, as Python's `min` does.
                .min_by_key(|&(_, &waiting)| waiting)
                .map_or(0, |(replica, _)| replica),
            GlobalPolicy::Random => self.rng.random_range(0..self.num_replicas),
        };
        self.num_dispatched += 1;
        Ok(replica)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles_from_zero() {
        let mut g = GlobalScheduler::new(GlobalPolicy::RoundRobin, 3, 0).unwrap();
        let picks: Vec<usize> = (0..7).map(|_| g.pick(&[9, 0, 5]).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn lor_picks_fewest_waiting_and_lowest_id_on_ties() {
        let mut g = GlobalScheduler::new(GlobalPolicy::Lor, 4, 0).unwrap();
        assert_eq!(g.pick(&[3, 1, 2, 1]).unwrap(), 1);
        assert_eq!(g.pick(&[0, 0, 0, 0]).unwrap(), 0);
        assert_eq!(g.pick(&[5, 4, 3, 2]).unwrap(), 3);
        // Vidur's in-call bookkeeping: after each pick the chosen replica has one more.
        let mut g = GlobalScheduler::new(GlobalPolicy::Lor, 3, 0).unwrap();
        let mut waiting = [1, 0, 0];
        let mut picks = Vec::new();
        for _ in 0..5 {
            let r = g.pick(&waiting).unwrap();
            waiting[r] += 1;
            picks.push(r);
        }
        assert_eq!(picks, [1, 2, 0, 1, 2]);
    }

    #[test]
    fn random_is_seeded_uniform_and_in_range() {
        let draw = |seed| {
            let mut g = GlobalScheduler::new(GlobalPolicy::Random, 4, seed).unwrap();
            (0..4000)
                .map(|_| g.pick(&[0; 4]).unwrap())
                .collect::<Vec<_>>()
        };
        let a = draw(42);
        assert_eq!(a, draw(42));
        assert_ne!(a, draw(43));
        let mut counts = [0usize; 4];
        for r in a {
            counts[r] += 1;
        }
        // 1000 expected per replica; ±150 is > 5 standard deviations (≈ 27).
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn rejects_zero_replicas_and_wrong_lengths() {
        assert!(GlobalScheduler::new(GlobalPolicy::Lor, 0, 0).is_err());
        let mut g = GlobalScheduler::new(GlobalPolicy::RoundRobin, 2, 0).unwrap();
        assert!(matches!(g.pick(&[0; 3]), Err(Error::Mismatch(_))));
    }

    #[test]
    fn policy_names_are_vidurs() {
        let p: GlobalPolicy = serde_json::from_str("\"round_robin\"").unwrap();
        assert_eq!(p, GlobalPolicy::RoundRobin);
        let p: GlobalPolicy = serde_json::from_str("\"lor\"").unwrap();
        assert_eq!(p, GlobalPolicy::Lor);
        assert!(serde_json::from_str::<GlobalPolicy>("\"least\"").is_err());
    }
}
