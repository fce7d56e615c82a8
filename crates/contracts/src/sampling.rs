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

/// The chain segments an evaluator re-executes (tier ≥ 1), sorted: always the first (it starts
/// from the unit's agreed start) and the last (it ends at the checkpoint the unit certifies), and
/// `k − 2` more drawn uniformly without replacement from the others. The seed mixes the unit's
/// audit seed (fixed only after the result was committed), the committed chain root and the
/// evaluator's address: no trainer can shape the draw, and two evaluators check different
/// middles. The contract recomputes it for every attestation; evaluators run exactly this.
pub fn audit_sample(
    audit_seed: &[u8; 32],
    chain_root: &[u8; 32],
    evaluator: &Address,
    segments: u32,
    k: u32,
) -> Vec<u32> {
    if segments <= k.max(2) {
        return (0..segments).collect();
    }
    let mut domain = Vec::with_capacity(96);
    domain.extend_from_slice(b"trainmesh/audit/v2");
    domain.extend_from_slice(chain_root);
    domain.extend_from_slice(&evaluator.0);
    let mut sampler = Sampler::new(audit_seed, &domain);
    // A partial Fisher–Yates shuffle of the middle segments 1..segments−1.
    let mut middle: Vec<u32> = (1..segments - 1).collect();
    let picks = (k.saturating_sub(2) as usize).min(middle.len());
    for i in 0..picks {
        let j = i + sampler.below((middle.len() - i) as u128) as usize;
        middle.swap(i, j);
    }
    let mut chosen: Vec<u32> = middle[..picks].to_vec();
    chosen.push(0);
    chosen.push(segments - 1);
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_sample_always_holds_the_ends_and_differs_by_evaluator() {
        let seed = [7u8; 32];
        let root = [9u8; 32];
        let (e1, e2) = (Address([1; 32]), Address([2; 32]));
        for segments in [1u32, 2, 3, 44, 45, 128, 4096] {
            let s = audit_sample(&seed, &root, &e1, segments, 44);
            assert_eq!(s.len(), segments.min(44) as usize, "{segments}");
            assert!(s.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(s[0], 0);
            assert_eq!(*s.last().unwrap(), segments - 1);
            assert_eq!(s, audit_sample(&seed, &root, &e1, segments, 44));
        }
        assert_ne!(
            audit_sample(&seed, &root, &e1, 128, 44),
            audit_sample(&seed, &root, &e2, 128, 44)
        );
        assert_ne!(
            audit_sample(&seed, &root, &e1, 128, 44),
            audit_sample(&[8u8; 32], &root, &e1, 128, 44)
        );
        // Every middle segment is drawn about equally often.
        let mut counts = vec![0u32; 128];
        for i in 0..2_000u32 {
            let mut s = [0u8; 32];
            s[..4].copy_from_slice(&i.to_le_bytes());
            for j in audit_sample(&s, &root, &e1, 128, 44) {
                counts[j as usize] += 1;
            }
        }
        assert_eq!((counts[0], counts[127]), (2_000, 2_000));
        let expected = 2_000.0 * 42.0 / 126.0;
        for c in &counts[1..127] {
            assert!(
                (f64::from(*c) - expected).abs() < 0.25 * expected,
                "{counts:?}"
            );
        }
    }

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
