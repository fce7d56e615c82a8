//! BLAKE3 content hashes, and the Merkle root over a list of them (dataset shards, checkpoint
//! chains), whose tree lives in [`trainmesh_contracts::merkle`] so that the contracts check
//! proofs against the very roots the engine builds.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A 32-byte BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// BLAKE3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Hash32(*blake3::hash(bytes).as_bytes())
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Option<Self> {
        blake3::Hash::from_hex(s)
            .ok()
            .map(|h| Hash32(*h.as_bytes()))
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({})", &self.to_hex()[..16])
    }
}

/// The Merkle root over `leaves`, in order ([`trainmesh_contracts::merkle::merkle_root`], on
/// the engine's hash type).
pub fn merkle_root(leaves: &[Hash32]) -> Hash32 {
    let leaves: Vec<trainmesh_contracts::types::Hash32> = leaves
        .iter()
        .map(|h| trainmesh_contracts::types::Hash32(h.0))
        .collect();
    Hash32(trainmesh_contracts::merkle::merkle_root(&leaves).0)
}
