//! Datasets as data providers attach them: content-addressed shards (BLAKE3 over the shard's
//! bytes), a Merkle root over the shard hashes, a train split and a held-out split.
//!
//! Shard format, version 1 (all integers little-endian):
//!
//! ```text
//! magic        8 bytes  "TMSHARD1"
//! samples      u32
//! features     u32
//! classes      u32
//! x            samples × features f32, row-major, each in [0, 1]
//! y            samples u8, each < classes
//! ```
//!
//! A shard is only ever decoded after its hash matched the one committed in the manifest, so a
//! corrupted or truncated shard is rejected before a byte of it is parsed.

use crate::error::GpuError;
use crate::hash::{merkle_root, Hash32};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const SHARD_MAGIC: &[u8; 8] = b"TMSHARD1";
const SHARD_HEADER_BYTES: usize = 8 + 4 * 3;
/// The largest shard accepted, so a hostile header cannot make us allocate without bound.
pub const SHARD_BYTES_MAX: usize = 256 << 20;
/// The widest sample accepted (a 1024×1024 image).
pub const FEATURES_MAX: usize = 1 << 20;
/// The most classes a label may take (labels are one byte).
pub const CLASSES_MAX: usize = 256;

/// Labelled samples in memory: `x` is `len × features`, row-major, values in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    pub features: usize,
    pub classes: usize,
    pub x: Vec<f32>,
    pub y: Vec<u8>,
}

impl Samples {
    /// Checks the shape invariants; every constructor outside this module goes through it.
    pub fn new(features: usize, classes: usize, x: Vec<f32>, y: Vec<u8>) -> Result<Self, GpuError> {
        let bad = |reason: String| Err(GpuError::ShardMalformed { reason });
        if features == 0 || features > FEATURES_MAX {
            return bad(format!(
                "features = {features}, must be in 1..={FEATURES_MAX}"
            ));
        }
        if !(2..=CLASSES_MAX).contains(&classes) {
            return bad(format!("classes = {classes}, must be in 2..={CLASSES_MAX}"));
        }
        if x.len() != y.len() * features {
            return bad(format!(
                "{} feature values for {} samples of {features}",
                x.len(),
                y.len()
            ));
        }
        if let Some(v) = x.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return bad(format!("feature value {v} outside [0, 1]"));
        }
        if let Some(l) = y.iter().find(|l| usize::from(**l) >= classes) {
            return bad(format!("label {l} not below classes = {classes}"));
        }
        Ok(Samples {
            features,
            classes,
            x,
            y,
        })
    }

    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// The features of sample `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.features..(i + 1) * self.features]
    }

    /// The samples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Samples {
        let mut x = Vec::with_capacity(indices.len() * self.features);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            x.extend_from_slice(self.row(i));
            y.push(self.y[i]);
        }
        Samples {
            features: self.features,
            classes: self.classes,
            x,
            y,
        }
    }

    /// Concatenates `parts`, which must share features and classes.
    pub fn concat(parts: &[Samples]) -> Result<Samples, GpuError> {
        let first = parts.first().ok_or_else(|| GpuError::ShapeMismatch {
            reason: "no shards to concatenate".into(),
        })?;
        let mut x = Vec::new();
        let mut y = Vec::new();
        for p in parts {
            if p.features != first.features || p.classes != first.classes {
                return Err(GpuError::ShapeMismatch {
                    reason: format!(
                        "shard of {}×{} beside one of {}×{}",
                        p.features, p.classes, first.features, first.classes
                    ),
                });
            }
            x.extend_from_slice(&p.x);
            y.extend_from_slice(&p.y);
        }
        Ok(Samples {
            features: first.features,
            classes: first.classes,
            x,
            y,
        })
    }

    /// Encodes these samples as one shard.
    pub fn encode_shard(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SHARD_HEADER_BYTES + self.x.len() * 4 + self.y.len());
        out.extend_from_slice(SHARD_MAGIC);
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.features as u32).to_le_bytes());
        out.extend_from_slice(&(self.classes as u32).to_le_bytes());
        for v in &self.x {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.y);
        out
    }
}

/// Checks `bytes` against the committed `expected` hash, then decodes them.
pub fn decode_shard(bytes: &[u8], expected: &Hash32) -> Result<Samples, GpuError> {
    let actual = Hash32::of(bytes);
    if actual != *expected {
        return Err(GpuError::ShardHashMismatch {
            expected: *expected,
            actual,
        });
    }
    decode_shard_unverified(bytes)
}

fn decode_shard_unverified(bytes: &[u8]) -> Result<Samples, GpuError> {
    if bytes.len() > SHARD_BYTES_MAX {
        return Err(GpuError::ShardMalformed {
            reason: format!("{} bytes, at most {SHARD_BYTES_MAX}", bytes.len()),
        });
    }
    if bytes.len() < SHARD_HEADER_BYTES {
        return Err(GpuError::ShardTruncated {
            expected_bytes: SHARD_HEADER_BYTES,
            actual_bytes: bytes.len(),
        });
    }
    if &bytes[..8] != SHARD_MAGIC {
        return Err(GpuError::ShardMalformed {
            reason: "bad magic (not a trainmesh shard, version 1)".into(),
        });
    }
    let u32_at =
        |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes")) as usize;
    let (n, features, classes) = (u32_at(8), u32_at(12), u32_at(16));
    let expected_bytes = n
        .checked_mul(features)
        .and_then(|v| v.checked_mul(4))
        .and_then(|v| v.checked_add(n + SHARD_HEADER_BYTES))
        .ok_or_else(|| GpuError::ShardMalformed {
            reason: "header sizes overflow".into(),
        })?;
    if bytes.len() < expected_bytes {
        return Err(GpuError::ShardTruncated {
            expected_bytes,
            actual_bytes: bytes.len(),
        });
    }
    if bytes.len() > expected_bytes {
        return Err(GpuError::ShardMalformed {
            reason: format!("{} trailing bytes", bytes.len() - expected_bytes),
        });
    }
    let x_end = SHARD_HEADER_BYTES + n * features * 4;
    let x = bytes[SHARD_HEADER_BYTES..x_end]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    let y = bytes[x_end..].to_vec();
    Samples::new(features, classes, x, y)
}

/// What a data provider commits to: the shard hashes of each split and their Merkle root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetManifest {
    pub name: String,
    pub features: u32,
    pub classes: u32,
    pub train: Vec<Hash32>,
    pub heldout: Vec<Hash32>,
    /// For a text dataset (token shards, `features` 0, `classes` the vocabulary): the tokenizer
    /// that made the ids (`bytes`, or `bpe:<BLAKE3 of the tokenizer file>`). Absent for samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
}

impl DatasetManifest {
    /// Whether this is a text dataset of token shards.
    pub fn is_text(&self) -> bool {
        self.tokenizer.is_some()
    }

    /// The dataset's identity: Merkle root over [root of train shards, root of held-out shards].
    pub fn root(&self) -> Hash32 {
        merkle_root(&[merkle_root(&self.train), merkle_root(&self.heldout)])
    }
}

/// Shards by hash; the in-memory twin of a shard server. `get` verifies before decoding.
#[derive(Debug, Clone, Default)]
pub struct ShardStore {
    blobs: BTreeMap<Hash32, Vec<u8>>,
}

impl ShardStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `bytes` under their hash, which it returns.
    pub fn put(&mut self, bytes: Vec<u8>) -> Hash32 {
        let h = Hash32::of(&bytes);
        self.blobs.insert(h, bytes);
        h
    }

    /// The bytes stored under `h`.
    pub fn bytes(&self, h: &Hash32) -> Option<&[u8]> {
        self.blobs.get(h).map(Vec::as_slice)
    }

    /// The raw bytes stored under `h`, as a (possibly hostile) server would hand them out.
    pub fn raw_mut(&mut self, h: &Hash32) -> Option<&mut Vec<u8>> {
        self.blobs.get_mut(h)
    }

    /// Fetches and verifies one shard.
    pub fn get(&self, h: &Hash32) -> Result<Samples, GpuError> {
        let bytes = self.blobs.get(h).ok_or_else(|| GpuError::ShardMalformed {
            reason: format!("shard {h} not found"),
        })?;
        decode_shard(bytes, h)
    }

    /// Fetches and verifies one token shard.
    pub fn get_tokens(&self, h: &Hash32) -> Result<crate::tokens::Tokens, GpuError> {
        let bytes = self.blobs.get(h).ok_or_else(|| GpuError::ShardMalformed {
            reason: format!("shard {h} not found"),
        })?;
        crate::tokens::decode_token_shard(bytes, h)
    }

    /// Fetches, verifies and concatenates the token shards `hashes`, in order.
    pub fn load_tokens(&self, hashes: &[Hash32]) -> Result<crate::tokens::Tokens, GpuError> {
        let parts = hashes
            .iter()
            .map(|h| self.get_tokens(h))
            .collect::<Result<Vec<_>, _>>()?;
        crate::tokens::Tokens::concat(&parts)
    }

    /// Fetches, verifies and concatenates the shards `hashes`, in order.
    pub fn load(&self, hashes: &[Hash32]) -> Result<Samples, GpuError> {
        let parts = hashes
            .iter()
            .map(|h| self.get(h))
            .collect::<Result<Vec<_>, _>>()?;
        Samples::concat(&parts)
    }

    /// Writes every shard into `dir` as `<hex hash>.shard`.
    pub fn write_dir(&self, dir: &std::path::Path) -> Result<(), GpuError> {
        std::fs::create_dir_all(dir).map_err(|e| GpuError::io(dir, e))?;
        for (h, bytes) in &self.blobs {
            let path = dir.join(format!("{h}.shard"));
            std::fs::write(&path, bytes).map_err(|e| GpuError::io(&path, e))?;
        }
        Ok(())
    }

    /// Reads the shards `hashes` from `dir`, verifying each.
    pub fn read_dir(dir: &std::path::Path, hashes: &[Hash32]) -> Result<Self, GpuError> {
        let mut store = ShardStore::new();
        for h in hashes {
            let path = dir.join(format!("{h}.shard"));
            let bytes = std::fs::read(&path).map_err(|e| GpuError::io(&path, e))?;
            if crate::tokens::is_token_shard(&bytes) {
                crate::tokens::decode_token_shard(&bytes, h)?;
            } else {
                decode_shard(&bytes, h)?;
            }
            store.blobs.insert(*h, bytes);
        }
        Ok(store)
    }
}

/// Shuffles `samples` with `seed`, holds out `heldout_fraction` of them, cuts both splits into
/// shards of at most `samples_per_shard`, and stores them.
pub fn shard_dataset(
    name: &str,
    samples: &Samples,
    samples_per_shard: usize,
    heldout_fraction: f64,
    seed: u64,
    store: &mut ShardStore,
) -> Result<DatasetManifest, GpuError> {
    if samples_per_shard == 0 || !(0.0..1.0).contains(&heldout_fraction) || samples.len() < 2 {
        return Err(GpuError::ShardMalformed {
            reason: format!(
                "cannot shard {} samples by {samples_per_shard} holding out {heldout_fraction}",
                samples.len()
            ),
        });
    }
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.shuffle(&mut ChaCha20Rng::seed_from_u64(seed));
    let heldout_len = ((samples.len() as f64) * heldout_fraction).round() as usize;
    let (heldout_idx, train_idx) = order.split_at(heldout_len);
    let mut put_split = |idx: &[usize]| {
        idx.chunks(samples_per_shard)
            .map(|chunk| store.put(samples.select(chunk).encode_shard()))
            .collect::<Vec<_>>()
    };
    let train = put_split(train_idx);
    let heldout = put_split(heldout_idx);
    Ok(DatasetManifest {
        name: name.to_string(),
        features: samples.features as u32,
        classes: samples.classes as u32,
        train,
        heldout,
        tokenizer: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Samples {
        Samples::new(3, 2, vec![0.0, 0.5, 1.0, 0.25, 0.75, 0.125], vec![0, 1]).unwrap()
    }

    #[test]
    fn shard_round_trips() {
        let s = tiny();
        let bytes = s.encode_shard();
        assert_eq!(decode_shard(&bytes, &Hash32::of(&bytes)).unwrap(), s);
    }

    #[test]
    fn corrupted_and_truncated_shards_are_rejected_by_hash() {
        let bytes = tiny().encode_shard();
        let h = Hash32::of(&bytes);
        let mut flipped = bytes.clone();
        flipped[25] ^= 1;
        assert!(matches!(
            decode_shard(&flipped, &h),
            Err(GpuError::ShardHashMismatch { .. })
        ));
        let cut = &bytes[..bytes.len() - 1];
        assert!(matches!(
            decode_shard(cut, &h),
            Err(GpuError::ShardHashMismatch { .. })
        ));
        // Even a shard whose hash was (wrongly) committed truncated fails to decode cleanly.
        assert!(matches!(
            decode_shard(cut, &Hash32::of(cut)),
            Err(GpuError::ShardTruncated { .. })
        ));
    }

    #[test]
    fn hostile_headers_are_rejected_without_allocating() {
        let mut bytes = tiny().encode_shard();
        bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = decode_shard(&bytes, &Hash32::of(&bytes)).unwrap_err();
        assert!(
            matches!(
                err,
                GpuError::ShardTruncated { .. } | GpuError::ShardMalformed { .. }
            ),
            "{err}"
        );
        let mut bad_label = tiny().encode_shard();
        *bad_label.last_mut().unwrap() = 7;
        assert!(matches!(
            decode_shard(&bad_label, &Hash32::of(&bad_label)),
            Err(GpuError::ShardMalformed { .. })
        ));
    }
}
