//! Signature checks of a whole batch, before execution: batch verification on every core.
//!
//! Batch verification draws random coefficients; here they come from a ChaCha20 stream seeded
//! with the hash of every transaction in the chunk (deterministic, no OS randomness, and
//! unpredictable when the signatures are chosen). ed25519-consensus implements ZIP-215, so a batch
//! accepts exactly what one-by-one verification accepts; when a batch fails, each transaction of
//! it is checked alone to find the culprits.

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::error::LedgerResult;
use crate::transaction::SignedTransaction;

/// Below this many signatures per thread, batching and threads cost more than they save.
const CHUNK_MIN: usize = 64;

fn verify_chunk(txs: &[SignedTransaction], chain_id: &str) -> Vec<LedgerResult<()>> {
    let mut results: Vec<LedgerResult<()>> = txs.iter().map(|t| t.check_chain(chain_id)).collect();
    let mut batch = ed25519_zebra::batch::Verifier::new();
    let mut seed = blake3::Hasher::new();
    seed.update(b"trainmesh/batch-verify/v1");
    let mut queued = 0;
    for (t, r) in txs.iter().zip(&results) {
        if r.is_ok() {
            let vk = ed25519_zebra::VerificationKeyBytes::from(t.transaction.public_key);
            let sig = ed25519_zebra::Signature::from(t.signature);
            let hash = t.hash();
            batch.queue((vk, sig, &hash[..]));
            seed.update(&hash);
            seed.update(&t.signature);
            queued += 1;
        }
    }
    if queued == 0 {
        return results;
    }
    let rng = ChaCha20Rng::from_seed(*seed.finalize().as_bytes());
    if batch.verify(rng).is_err() {
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
