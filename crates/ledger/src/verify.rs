//! Signature checks of a whole batch, before execution: batch verification on every core.
//!
//! Batch verification draws random coefficients; here they come from a ChaCha20 stream seeded
//! with the hash of every transaction in the chunk (deterministic, no OS randomness, and
//! unpredictable when the signatures are chosen). The equation is ed25519-zebra's (ZIP-215,
//! cofactored), so a batch accepts exactly what one-by-one verification accepts; when a batch
//! fails, each transaction of it is checked alone to find the culprits.
//!
//! Decompressing a public key costs a field exponentiation, as much as a quarter of a batch
//! check: the keys of recent senders are kept decompressed (a pure function of the key bytes, so
//! the cache changes speed only).

use std::collections::HashMap;
use std::iter::once;
use std::sync::Mutex;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha512};

use crate::error::LedgerResult;
use crate::transaction::SignedTransaction;

/// Below this many signatures per thread, batching and threads cost more than they save.
const CHUNK_MIN: usize = 64;

/// Decompressed public keys kept, at most (about 200 bytes each).
const KEYS_MAX: usize = 1 << 17;

/// Public keys seen lately, decompressed.
static KEYS: Mutex<Option<HashMap<[u8; 32], EdwardsPoint>>> = Mutex::new(None);

/// The decompressed keys, in the order given; `None` for an encoding that is not a point.
fn decompressed_keys(keys: &[[u8; 32]]) -> Vec<Option<EdwardsPoint>> {
    let mut out: Vec<Option<EdwardsPoint>> = {
        let cache = KEYS.lock().unwrap_or_else(|e| e.into_inner());
        match cache.as_ref() {
            Some(cache) => keys.iter().map(|k| cache.get(k).copied()).collect(),
            None => vec![None; keys.len()],
        }
    };
    let mut fresh = Vec::new();
    for (k, a) in keys.iter().zip(out.iter_mut()) {
        if a.is_none() {
            *a = CompressedEdwardsY(*k).decompress();
            if let Some(point) = a {
                fresh.push((*k, *point));
            }
        }
    }
    if !fresh.is_empty() {
        let mut cache = KEYS.lock().unwrap_or_else(|e| e.into_inner());
        let cache = cache.get_or_insert_with(HashMap::new);
        if cache.len() + fresh.len() > KEYS_MAX {
            cache.clear();
        }
        cache.extend(fresh);
    }
    out
}

/// One batch equation over the queued signatures: `[8](Σ zᵢ·Rᵢ + Σ (Σ zᵢ·kᵢ)·A − (Σ zᵢ·sᵢ)·B) = 0`,
/// the `zᵢ` 128-bit coefficients from `rng`. `false` if any encoding is invalid.
#[allow(non_snake_case)]
fn batch_holds(queued: &[&SignedTransaction], mut rng: ChaCha20Rng) -> bool {
    // One coefficient per distinct key, in the order of first appearance.
    let mut key_index: HashMap<[u8; 32], usize> = HashMap::with_capacity(queued.len());
    let mut keys: Vec<[u8; 32]> = Vec::with_capacity(queued.len());
    let mut of_key = Vec::with_capacity(queued.len());
    for t in queued {
        let pk = t.transaction.public_key;
        let i = *key_index.entry(pk).or_insert_with(|| {
            keys.push(pk);
            keys.len() - 1
        });
        of_key.push(i);
    }
    let mut As = Vec::with_capacity(keys.len());
    for a in decompressed_keys(&keys) {
        match a {
            Some(a) => As.push(a),
            None => return false,
        }
    }
    let mut A_coeffs = vec![Scalar::ZERO; keys.len()];
    let mut Rs = Vec::with_capacity(queued.len());
    let mut R_coeffs = Vec::with_capacity(queued.len());
    let mut B_coeff = Scalar::ZERO;
    for (t, &i) in queued.iter().zip(&of_key) {
        let r_bytes: [u8; 32] = t.signature[..32].try_into().expect("32 bytes");
        let s_bytes: [u8; 32] = t.signature[32..].try_into().expect("32 bytes");
        let Some(R) = CompressedEdwardsY(r_bytes).decompress() else {
            return false;
        };
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
            return false;
        };
        let k = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(r_bytes)
                .chain_update(keys[i])
                .chain_update(t.hash())
                .finalize()
                .into(),
        );
        let mut z = [0u8; 16];
        rng.fill_bytes(&mut z);
        let z = Scalar::from(u128::from_le_bytes(z));
        B_coeff -= z * s;
        Rs.push(R);
        R_coeffs.push(z);
        A_coeffs[i] += z * k;
    }
    let check = EdwardsPoint::vartime_multiscalar_mul(
        once(&B_coeff).chain(A_coeffs.iter()).chain(R_coeffs.iter()),
        once(&ED25519_BASEPOINT_POINT)
            .chain(As.iter())
            .chain(Rs.iter()),
    );
    check.mul_by_cofactor().is_identity()
}

fn verify_chunk(txs: &[SignedTransaction], chain_id: &str) -> Vec<LedgerResult<()>> {
    let mut results: Vec<LedgerResult<()>> = txs.iter().map(|t| t.check_chain(chain_id)).collect();
    let mut seed = blake3::Hasher::new();
    seed.update(b"trainmesh/batch-verify/v1");
    let mut queued = Vec::with_capacity(txs.len());
    for (t, r) in txs.iter().zip(&results) {
        if r.is_ok() {
            seed.update(&t.hash());
            seed.update(&t.signature);
            queued.push(t);
        }
    }
    if queued.is_empty() {
        return results;
    }
    let rng = ChaCha20Rng::from_seed(*seed.finalize().as_bytes());
    if !batch_holds(&queued, rng) {
        for (t, r) in txs.iter().zip(results.iter_mut()) {
            if r.is_ok() {
                *r = t.verify(chain_id);
            }
        }
    }
    results
}

/// Checks chain id and signature of every transaction, in parallel; one result per transaction.
pub fn verify_all(txs: &[SignedTransaction], chain_id: &str) -> Vec<LedgerResult<()>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = txs.len().div_ceil(threads).max(CHUNK_MIN);
    if txs.len() <= chunk {
        return verify_chunk(txs, chain_id);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = txs
            .chunks(chunk)
            .map(|c| s.spawn(move || verify_chunk(c, chain_id)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("verification threads do not panic"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AccountKey;
    use trainmesh_contracts::{Amount, Call};

    const CHAIN: &str = "trainmesh-verify-test";

    fn signed(seed: u64, nonce: u64) -> SignedTransaction {
        AccountKey::from_seed(seed).sign(
            CHAIN,
            nonce,
            Amount(10),
            Call::Transfer {
                to: AccountKey::from_seed(seed + 1).address(),
                amount: Amount(1),
            },
        )
    }

    /// Re-encoded after tampering, so the hash follows the fields.
    fn roundtrip(t: SignedTransaction) -> SignedTransaction {
        SignedTransaction::decode(&t.encode()).unwrap()
    }

    #[test]
    fn a_batch_accepts_exactly_what_single_checks_accept() {
        // Repeated keys share one coefficient; each run finds them cached or not.
        let good: Vec<SignedTransaction> = (0..300).map(|i| signed(i % 120, i / 120)).collect();
        for _ in 0..2 {
            assert!(verify_all(&good, CHAIN).iter().all(|r| r.is_ok()));
        }
        let mut bad = good.clone();
        // A signature over other bytes.
        bad[7].signature[5] ^= 1;
        // A signer key that is not a curve point (y = 2 has no x).
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        bad[150].transaction.public_key = not_a_point;
        bad[150] = roundtrip(bad[150].clone());
        // A non-canonical s (s + l).
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for (i, b) in l.iter().enumerate() {
            let sum = bad[222].signature[32 + i] as u16 + *b as u16 + carry;
            bad[222].signature[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        // Another chain.
        let mut other = bad[299].transaction.clone();
        other.chain_id = "elsewhere".into();
        bad[299] = other.sign(&AccountKey::from_seed(299 % 120).secret());
        let results = verify_all(&bad, CHAIN);
        for (i, (t, r)) in bad.iter().zip(&results).enumerate() {
            assert_eq!(
                r.as_ref().err().map(|e| e.code()),
                t.verify(CHAIN).err().map(|e| e.code()),
                "transaction {i}"
            );
            assert_eq!(
                r.is_err(),
                [7, 150, 222, 299].contains(&i),
                "transaction {i}"
            );
        }
    }
}
