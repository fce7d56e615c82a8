//! The stake-weighted committee of an epoch and the quorum arithmetic over it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::crypto::{PublicKey, VerifyingKey};
use crate::error::{DagError, DagResult};
use crate::types::{AuthorityIndex, Digest, Epoch, Stake};

/// The largest committee the core accepts; bounds every per-authority table.
pub const COMMITTEE_SIZE_MAX: usize = 256;

/// One member of the committee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authority {
    pub public_key: PublicKey,
    pub stake: Stake,
}

/// The digest that names a network in its headers: BLAKE3 of the chain id, domain-separated.
pub fn chain_digest(chain_id: &str) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(b"trainmesh/chain/v1");
    h.update(chain_id.as_bytes());
    Digest(*h.finalize().as_bytes())
}

/// The authorities of one epoch, indexed by position.
#[derive(Clone, Debug)]
pub struct Committee {
    epoch: Epoch,
    /// The network this committee runs (see [`chain_digest`]): every header carries it, so no
    /// header, and no proof of equivocation, is valid on another network.
    chain: Digest,
    authorities: Vec<Authority>,
    verifying_keys: Vec<VerifyingKey>,
    total_stake: Stake,
}

impl Committee {
    /// Builds a committee; rejects an empty or oversized one, zero stake, duplicate or invalid
    /// keys, and a total stake that overflows.
    pub fn new(epoch: Epoch, authorities: Vec<Authority>) -> DagResult<Committee> {
        let invalid = |reason: String| DagError::InvalidCommittee { reason };
        if authorities.is_empty() {
            return Err(invalid("no authorities".into()));
        }
        if authorities.len() > COMMITTEE_SIZE_MAX {
            return Err(invalid(format!(
                "{} authorities, the limit is {COMMITTEE_SIZE_MAX}",
                authorities.len()
            )));
        }
        let mut seen = BTreeSet::new();
        let mut total: Stake = 0;
        let mut verifying_keys = Vec::with_capacity(authorities.len());
        for (i, a) in authorities.iter().enumerate() {
            if a.stake == 0 {
                return Err(invalid(format!("authority {i} has zero stake")));
            }
            if !seen.insert(a.public_key) {
                return Err(invalid(format!("authority {i} repeats a public key")));
            }
            total = total
                .checked_add(a.stake)
                .ok_or_else(|| invalid("total stake overflows".into()))?;
            verifying_keys.push(
                VerifyingKey::from_public_key(&a.public_key)
                    .ok_or_else(|| invalid(format!("authority {i} has an invalid public key")))?,
            );
        }
        Ok(Committee {
            epoch,
            chain: Digest([0; 32]),
            authorities,
            verifying_keys,
            total_stake: total,
        })
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// This committee on the network `chain` (by default, the all-zero digest).
    pub fn with_chain(mut self, chain: Digest) -> Committee {
        self.chain = chain;
        self
    }

    pub fn chain(&self) -> Digest {
        self.chain
    }

    pub fn size(&self) -> usize {
        self.authorities.len()
    }

    pub fn authorities(&self) -> impl Iterator<Item = (AuthorityIndex, &Authority)> {
        self.authorities
            .iter()
            .enumerate()
            .map(|(i, a)| (AuthorityIndex(i as u32), a))
    }

    pub fn indices(&self) -> impl Iterator<Item = AuthorityIndex> {
        (0..self.authorities.len() as u32).map(AuthorityIndex)
    }

    pub fn authority(&self, index: AuthorityIndex) -> Option<&Authority> {
        self.authorities.get(index.as_usize())
    }

    pub fn verifying_key(&self, index: AuthorityIndex) -> Option<&VerifyingKey> {
        self.verifying_keys.get(index.as_usize())
    }

    pub fn index_of(&self, public_key: &PublicKey) -> Option<AuthorityIndex> {
        self.authorities
            .iter()
            .position(|a| &a.public_key == public_key)
            .map(|i| AuthorityIndex(i as u32))
    }

    pub fn contains(&self, index: AuthorityIndex) -> bool {
        index.as_usize() < self.authorities.len()
    }

    /// Stake of an authority; 0 for one outside the committee.
    pub fn stake(&self, index: AuthorityIndex) -> Stake {
        self.authority(index).map_or(0, |a| a.stake)
    }

    pub fn total_stake(&self) -> Stake {
        self.total_stake
    }

    /// ⌊2·total/3⌋ + 1: any two quorums share an honest authority when faulty stake ≤ f.
    pub fn quorum_threshold(&self) -> Stake {
        quorum_threshold(self.total_stake)
    }

    /// ⌊(total+2)/3⌋ = f + 1: any set with this much stake holds an honest authority.
    pub fn validity_threshold(&self) -> Stake {
        validity_threshold(self.total_stake)
    }
}

/// The share threshold of a randomness beacon with one share per authority: one more than the
/// most authorities whose stakes together stay below the validity threshold (so that no coalition
/// a quorum tolerates holds enough shares), provided every set holding the rest of the stake (the
/// honest authorities at the least) still holds that many. `None` when stakes are too uneven for
/// one share per authority to satisfy both.
pub fn beacon_threshold(stakes: &[Stake]) -> Option<u16> {
    let total: u128 = stakes.iter().map(|&s| s as u128).sum();
    if stakes.is_empty() || total == 0 {
        return None;
    }
    let faulty = validity_threshold(total as Stake) as u128 - 1;
    let mut ascending: Vec<u128> = stakes.iter().map(|&s| s as u128).collect();
    ascending.sort_unstable();
    // The most authorities a faulty coalition may be: the smallest stakes first.
    let mut sum = 0u128;
    let mut most_faulty = 0usize;
    for s in &ascending {
        sum += s;
        if sum > faulty {
            break;
        }
        most_faulty += 1;
    }
    let threshold = most_faulty + 1;
    // The fewest authorities holding all but `faulty` stake: the largest stakes first.
    let mut sum = 0u128;
    let mut fewest_honest = 0usize;
    for s in ascending.iter().rev() {
        sum += s;
        fewest_honest += 1;
        if sum >= total - faulty {
            break;
        }
    }
    (threshold <= fewest_honest).then(|| u16::try_from(threshold).ok())?
}

/// ⌊2·total/3⌋ + 1.
pub fn quorum_threshold(total: Stake) -> Stake {
    ((2 * total as u128) / 3 + 1) as Stake
}

/// ⌊(total+2)/3⌋.
pub fn validity_threshold(total: Stake) -> Stake {
    // ⌊(total+2)/3⌋ = ⌈total/3⌉.
    (total as u128).div_ceil(3) as Stake
}

/// Sums stake over distinct authorities: a second message from the same authority adds nothing.
#[derive(Clone, Debug, Default)]
pub struct StakeAggregator {
    authorities: BTreeSet<AuthorityIndex>,
    stake: Stake,
}

impl StakeAggregator {
    pub fn new() -> StakeAggregator {
        StakeAggregator::default()
    }

    /// Adds an authority's stake once; returns whether it was new.
    pub fn add(&mut self, authority: AuthorityIndex, committee: &Committee) -> bool {
        if self.authorities.insert(authority) {
            self.stake += committee.stake(authority);
            true
        } else {
            false
        }
    }

    pub fn stake(&self) -> Stake {
        self.stake
    }

    pub fn reached(&self, threshold: Stake) -> bool {
        self.stake >= threshold
    }

    pub fn authorities(&self) -> &BTreeSet<AuthorityIndex> {
        &self.authorities
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyPair;
    use proptest::prelude::*;

    fn committee(stakes: &[Stake]) -> Committee {
        let authorities = stakes
            .iter()
            .enumerate()
            .map(|(i, &stake)| Authority {
                public_key: KeyPair::from_seed(i as u64).public(),
                stake,
            })
            .collect();
        Committee::new(Epoch(0), authorities).unwrap()
    }

    #[test]
    fn equal_stake_thresholds() {
        // n = 3f + 1
        for (n, q, v) in [(1, 1, 1), (4, 3, 2), (7, 5, 3), (10, 7, 4), (31, 21, 11)] {
            let c = committee(&vec![1; n]);
            assert_eq!(
                (c.quorum_threshold(), c.validity_threshold()),
                (q, v),
                "n={n}"
            );
        }
    }

    #[test]
    fn rejects_bad_committees() {
        assert!(Committee::new(Epoch(0), vec![]).is_err());
        let k = KeyPair::from_seed(1).public();
        let dup = vec![
            Authority {
                public_key: k,
                stake: 1,
            },
            Authority {
                public_key: k,
                stake: 1,
            },
        ];
        assert!(Committee::new(Epoch(0), dup).is_err());
        let zero = vec![Authority {
            public_key: k,
            stake: 0,
        }];
        assert!(Committee::new(Epoch(0), zero).is_err());
        let overflow = vec![
            Authority {
                public_key: k,
                stake: u64::MAX,
            },
            Authority {
                public_key: KeyPair::from_seed(2).public(),
                stake: 1,
            },
        ];
        assert!(Committee::new(Epoch(0), overflow).is_err());
    }

    #[test]
    fn aggregator_counts_each_authority_once() {
        let c = committee(&[5, 1, 1, 1]);
        let mut agg = StakeAggregator::new();
        assert!(agg.add(AuthorityIndex(1), &c));
        assert!(!agg.add(AuthorityIndex(1), &c));
        assert_eq!(agg.stake(), 1);
        agg.add(AuthorityIndex(0), &c);
        assert_eq!(agg.stake(), 6);
        assert!(agg.reached(c.quorum_threshold()));
    }

    #[test]
    fn beacon_threshold_is_f_plus_one_for_equal_stakes_and_refuses_lopsided_ones() {
        for (n, t) in [(1, 1), (4, 2), (7, 3), (10, 4), (31, 11)] {
            assert_eq!(beacon_threshold(&vec![100; n]), Some(t), "n={n}");
        }
        // Three small authorities can stay under f while the honest rest may be only two.
        assert_eq!(beacon_threshold(&[5, 1, 1, 1]), None);
        assert_eq!(beacon_threshold(&[]), None);
    }

    proptest! {
        /// Two quorums always intersect in more than the faulty stake f = total - quorum... i.e.
        /// q + q > total + f where f = the largest stake the protocol tolerates (total - q).
        #[test]
        fn quorums_intersect_and_validity_holds_an_honest(total in 1u64..1_000_000_000_000) {
            let q = quorum_threshold(total);
            let v = validity_threshold(total);
            // f: the largest faulty stake with 3f < total.
            let f = (total - 1) / 3;
            prop_assert!(q <= total);
            prop_assert!(q > 2 * total / 3);
            // Two quorums overlap by 2q - total > f: some honest authority is in both.
            prop_assert!(2 * q - total > f);
            // A validity set holds more than f: at least one honest authority.
            prop_assert!(v > f);
            // Liveness: the honest stake (total - f) reaches a quorum.
            prop_assert!(total - f >= q);
        }

        /// Every coalition under the validity threshold holds fewer shares than the threshold,
        /// and every coalition holding the rest of the stake holds at least that many (checked
        /// over all subsets).
        #[test]
        fn beacon_threshold_separates_faulty_from_honest(
            stakes in proptest::collection::vec(1u64..20, 1..9),
        ) {
            let total: u64 = stakes.iter().sum();
            let faulty = validity_threshold(total) - 1;
            if let Some(t) = beacon_threshold(&stakes) {
                for mask in 0u32..(1 << stakes.len()) {
                    let members = mask.count_ones() as u16;
                    let stake: u64 = (0..stakes.len())
                        .filter(|i| mask & (1 << i) != 0)
                        .map(|i| stakes[i])
                        .sum();
                    if stake <= faulty {
                        prop_assert!(members < t);
                    }
                    if stake >= total - faulty {
                        prop_assert!(members >= t);
                    }
                }
            }
        }

        #[test]
        fn aggregator_sums_distinct_stake(
            stakes in proptest::collection::vec(1u64..1000, 1..20),
            picks in proptest::collection::vec(0usize..20, 0..60),
        ) {
            let c = committee(&stakes);
            let mut agg = StakeAggregator::new();
            let mut distinct = BTreeSet::new();
            for p in picks {
                let i = p % stakes.len();
                agg.add(AuthorityIndex(i as u32), &c);
                distinct.insert(i);
            }
            let expected: u64 = distinct.iter().map(|&i| stakes[i]).sum();
            prop_assert_eq!(agg.stake(), expected);
        }
    }
}
