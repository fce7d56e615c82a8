//! A blob fetched from a peer, checked against the hash it was asked for ([`verify_blob`]), and
//! what trainers and evaluators then read from it.
//!
//! Input: one byte for the kind, 32 bytes of hash, then the blob.

use trainmesh_actors::blobs::verify_blob;
use trainmesh_actors::wire::BlobKind;
use trainmesh_gpu::dataset::DatasetManifest;
use trainmesh_gpu::hash::merkle_root;
use trainmesh_gpu::train::WorkResult;

const KINDS: [BlobKind; 4] = [
    BlobKind::Checkpoint,
    BlobKind::Chain,
    BlobKind::Shard,
    BlobKind::Manifest,
];

/// Encodes a blob input (for the seed corpus).
pub fn input(kind: BlobKind, hash: [u8; 32], bytes: &[u8]) -> Vec<u8> {
    let k = KINDS.iter().position(|k| *k == kind).expect("every kind") as u8;
    [&[k][..], &hash, bytes].concat()
}

pub fn blob(data: &[u8]) {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    if rest.len() < 32 {
        return;
    }
    let (hash, bytes) = rest.split_at(32);
    let hash: [u8; 32] = hash.try_into().expect("32 bytes");
    let kind = KINDS[usize::from(k) % KINDS.len()];
    let matches = verify_blob(kind, &hash, bytes);
    // The hash each kind is named by; a blob matches exactly that one.
    let own = match kind {
        BlobKind::Checkpoint | BlobKind::Shard => Some(*blake3::hash(bytes).as_bytes()),
        BlobKind::Chain => chain_root(bytes),
        BlobKind::Manifest => serde_json::from_slice::<DatasetManifest>(bytes)
            .ok()
            .map(|m| merkle_root(&m.train).0),
    };
    assert_eq!(
        matches,
        own == Some(hash),
        "{kind:?}: verify_blob disagrees with the blob's own hash"
    );
    if let Some(own) = own {
        assert!(
            verify_blob(kind, &own, bytes),
            "{kind:?} refused under its own hash"
        );
    }
}

/// The root of a chain that passes its shape checks, after reading it the way an evaluator does.
fn chain_root(bytes: &[u8]) -> Option<[u8; 32]> {
    let chain: WorkResult = serde_json::from_slice(bytes).ok()?;
    chain.validate().ok()?;
    let _final = chain.final_checkpoint();
    for i in 0..chain.chain.len() {
        let _start = chain.segment_start(i);
    }
    Some(chain.chain_root().0)
}
