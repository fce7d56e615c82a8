//! Who leads each even round: a deterministic, stake-weighted draw.

use crate::committee::Committee;
use crate::types::{AuthorityIndex, Round, Stake};

/// Picks the leader of a round with probability proportional to stake, from a hash of
/// (epoch, round): every node computes the same schedule, and nobody can bias it.
#[derive(Clone, Debug)]
pub struct LeaderSchedule {
    epoch: u64,
    /// `cumulative[i]` = stake of authorities `0..=i`.
    cumulative: Vec<Stake>,
}

impl LeaderSchedule {
    pub fn new(committee: &Committee) -> LeaderSchedule {
        let mut sum = 0;
        let cumulative = committee
            .authorities()
            .map(|(_, a)| {
                sum += a.stake;
                sum
            })
            .collect();
        LeaderSchedule {
            epoch: committee.epoch().0,
            cumulative,
        }
    }

    /// The leader of `round`. Only even rounds ≥ 2 have leaders in Bullshark.
    pub fn leader(&self, round: Round) -> AuthorityIndex {
        let mut input = [0u8; 16];
        input[..8].copy_from_slice(&self.epoch.to_le_bytes());
        input[8..].copy_from_slice(&round.0.to_le_bytes());
        let hash = blake3::keyed_hash(&LEADER_KEY, &input);
        let draw = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
        let total = *self.cumulative.last().expect("committee is never empty");
        // Multiply-shift maps the draw onto [0, total) without modulo bias worth speaking of.
        let point = ((draw as u128 * total as u128) >> 64) as Stake;
        let index = self.cumulative.partition_point(|&c| c <= point);
        AuthorityIndex(index as u32)
    }
}

const LEADER_KEY: [u8; 32] = *b"trainmesh/dag/leader-schedule/v1";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committee::Authority;
    use crate::crypto::KeyPair;
    use crate::types::Epoch;

    fn committee(stakes: &[Stake]) -> Committee {
        Committee::new(
            Epoch(0),
            stakes
                .iter()
                .enumerate()
                .map(|(i, &stake)| Authority {
                    public_key: KeyPair::from_seed(i as u64).public(),
                    stake,
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn leaders_follow_stake() {
        let c = committee(&[1, 1, 2, 4]);
        let s = LeaderSchedule::new(&c);
        let mut counts = [0u32; 4];
        for r in 0..40_000u64 {
            counts[s.leader(Round(2 * r)).as_usize()] += 1;
        }
        // Expected shares 1/8, 1/8, 2/8, 4/8 of 40,000.
        for (i, expected) in [5_000.0, 5_000.0, 10_000.0, 20_000.0].iter().enumerate() {
            let got = counts[i] as f64;
            assert!((got - expected).abs() / expected < 0.05, "{counts:?}");
        }
    }

    #[test]
    fn schedule_is_deterministic() {
        let c = committee(&[3, 3, 3, 3]);
        let a = LeaderSchedule::new(&c);
        let b = LeaderSchedule::new(&c);
        for r in 0..100 {
            assert_eq!(a.leader(Round(r)), b.leader(Round(r)));
        }
    }
}
