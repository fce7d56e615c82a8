//! Deterministic randomness from a commit's seed: every node draws the same workers.

use crate::types::Address;

/// An endless stream of bits from (seed, domain): BLAKE3 keyed by the seed, in XOF mode.
pub struct Sampler {
    reader: blake3::OutputReader,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sampler")
    }
}

impl Sampler {
    pub fn new(seed: &[u8; 32], domain: &[u8]) -> Sampler {
        let mut h = blake3::Hasher::new_keyed(seed);
        h.update(domain);
        Sampler {
            reader: h.finalize_xof(),
        }
    }

    pub fn next_u128(&mut self) -> u128 {
        let mut b = [0u8; 16];
        self.reader.fill(&mut b);
        u128::from_le_bytes(b)
    }

    /// Uniform in `[0, bound)` (bound > 0), by rejection so there is no modulo bias.
    pub fn below(&mut self, bound: u128) -> u128 {
        assert!(bound > 0);
        let zone = u128::MAX - (u128::MAX % bound);
        loop {
            let x = self.next_u128();
            if x < zone {
                return x % bound;
            }
        }
    }
}

/// Draws up to `k` distinct candidates with probability proportional to weight (weights of 0
/// are never drawn). The order of `candidates` must itself be deterministic.
pub fn weighted_sample(
    mut candidates: Vec<(Address, u128)>,
    k: usize,
    sampler: &mut Sampler,
) -> Vec<Address> {
    candidates.retain(|(_, w)| *w > 0);
    let mut chosen = Vec::with_capacity(k);
    while chosen.len() < k && !candidates.is_empty() {
        let total: u128 = candidates
            .iter()
            .fold(0u128, |t, (_, w)| t.saturating_add(*w));
        let mut point = sampler.below(total);
        let mut pick = candidates.len() - 1;
        for (i, (_, w)) in candidates.iter().enumerate() {
            if point < *w {
                pick = i;
                break;
            }
            point -= w;
        }
        chosen.push(candidates.remove(pick).0);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_follows_weights_and_never_repeats() {
        let a = |i: u8| Address([i; 32]);
        let mut counts = [0u32; 3];
        for s in 0..6_000u32 {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&s.to_le_bytes());
            let mut sampler = Sampler::new(&seed, b"test");
            let picked = weighted_sample(vec![(a(0), 1), (a(1), 2), (a(2), 0)], 1, &mut sampler);
            counts[picked[0].0[0] as usize] += 1;
            let both = weighted_sample(
                vec![(a(0), 1), (a(1), 2)],
                2,
                &mut Sampler::new(&seed, b"x"),
            );
            assert_eq!(both.len(), 2);
            assert_ne!(both[0], both[1]);
        }
        assert_eq!(counts[2], 0);
        let ratio = counts[1] as f64 / counts[0] as f64;
        assert!((ratio - 2.0).abs() < 0.2, "{counts:?}");
    }
}
