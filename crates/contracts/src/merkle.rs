//! The Merkle tree that commits to a list of hashes (dataset shards, checkpoint chains): the one
//! implementation the engine builds roots with and the contracts check proofs with.
//!
//! Leaves and inner nodes are hashed under different domain tags, so an inner node can never be
//! passed off as a leaf (second-preimage by tree re-shaping). An odd node at the end of a level is
//! promoted unchanged; the root of an empty list is the hash of the empty-list tag.

use serde::{Deserialize, Serialize};

use crate::types::Hash32;

fn hash(bytes: &[u8]) -> Hash32 {
    Hash32(*blake3::hash(bytes).as_bytes())
}

const LEAF_TAG: &[u8] = b"trainmesh.merkle.leaf.v1";
const NODE_TAG: &[u8] = b"trainmesh.merkle.node.v1";
const EMPTY_TAG: &[u8] = b"trainmesh.merkle.empty.v1";

fn leaf(h: &Hash32) -> Hash32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(LEAF_TAG);
    hasher.update(&h.0);
    Hash32(*hasher.finalize().as_bytes())
}

fn node(l: &Hash32, r: &Hash32) -> Hash32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(NODE_TAG);
    hasher.update(&l.0);
    hasher.update(&r.0);
    Hash32(*hasher.finalize().as_bytes())
}

/// The level above `level`: pairs hashed into nodes, an odd last node promoted unchanged.
fn parents(level: &[Hash32]) -> Vec<Hash32> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [l, r] => node(l, r),
            [single] => *single,
            _ => unreachable!("chunks(2) yields one or two"),
        })
        .collect()
}

/// The Merkle root over `leaves`, in order.
pub fn merkle_root(leaves: &[Hash32]) -> Hash32 {
    if leaves.is_empty() {
        return hash(EMPTY_TAG);
    }
    let mut level: Vec<Hash32> = leaves.iter().map(leaf).collect();
    while level.len() > 1 {
        level = parents(&level);
    }
    level[0]
}

/// A proof that a leaf sits at `index` under a root: the sibling hashes from the bottom up
/// (`None` where the node was promoted without a sibling).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleProof {
    pub index: u64,
    pub leaf_count: u64,
    pub siblings: Vec<Option<Hash32>>,
}

/// The proof for `leaves[index]`. Panics if `index` is out of range (a caller bug).
pub fn merkle_proof(leaves: &[Hash32], index: usize) -> MerkleProof {
    assert!(index < leaves.len(), "proof index out of range");
    let mut level: Vec<Hash32> = leaves.iter().map(leaf).collect();
    let mut i = index;
    let mut siblings = Vec::new();
    while level.len() > 1 {
        let sibling = i ^ 1;
        siblings.push(level.get(sibling).copied());
        level = parents(&level);
        i /= 2;
    }
    MerkleProof {
        index: index as u64,
        leaf_count: leaves.len() as u64,
        siblings,
    }
}

/// Whether `proof` shows `value` at its index under `root`.
pub fn merkle_verify(root: &Hash32, value: &Hash32, proof: &MerkleProof) -> bool {
    if proof.index >= proof.leaf_count {
        return false;
    }
    let mut acc = leaf(value);
    let mut i = proof.index;
    let mut width = proof.leaf_count;
    for sibling in &proof.siblings {
        if width <= 1 {
            return false;
        }
        let has_sibling = (i ^ 1) < width;
        match (sibling, has_sibling) {
            (Some(s), true) => {
                acc = if i.is_multiple_of(2) {
                    node(&acc, s)
                } else {
                    node(s, &acc)
                };
            }
            (None, false) => {}
            _ => return false,
        }
        i /= 2;
        width = width.div_ceil(2);
    }
    width == 1 && acc == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash32> {
        (0..n as u32).map(|i| hash(&i.to_le_bytes())).collect()
    }

    #[test]
    fn every_proof_verifies_and_a_wrong_value_does_not() {
        for n in 1..=17 {
            let ls = leaves(n);
            let root = merkle_root(&ls);
            for (i, l) in ls.iter().enumerate() {
                let p = merkle_proof(&ls, i);
                assert!(merkle_verify(&root, l, &p), "n={n} i={i}");
                assert!(!merkle_verify(&root, &hash(b"x"), &p), "n={n} i={i}");
            }
        }
    }

    #[test]
    fn root_depends_on_order_and_content() {
        let mut ls = leaves(5);
        let r = merkle_root(&ls);
        ls.swap(1, 2);
        assert_ne!(r, merkle_root(&ls));
        assert_ne!(merkle_root(&[]), merkle_root(&leaves(1)));
        // A single leaf's root is not the leaf itself (domain separation).
        assert_ne!(merkle_root(&leaves(1)), leaves(1)[0]);
    }
}
