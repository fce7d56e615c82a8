//! Text datasets for language models: token-id shards, the built-in byte tokenizer, and the
//! windows a transformer trains on.
//!
//! Token shard format, version 1 (integers little-endian):
//!
//! ```text
//! magic   8 bytes  "TMTOKEN1"
//! tokens  u32      number of ids
//! vocab   u32      every id is below it
//! width   u32      bytes per id: 2 (vocab ≤ 65,536) or 4
//! ids     tokens × width bytes
//! ```
//!
//! Like a sample shard, a token shard is decoded only after its hash matched the committed one.
//! A dataset's manifest names its tokenizer (`bytes`, or `bpe:<BLAKE3 of the tokenizer file>`),
//! so a researcher knows how to turn text into the ids the model was trained on.
//!
//! Training windows: a split of `n` tokens holds `(n − 1) / context` windows; window `i` is the
//! `context + 1` ids from `i·context` (inputs are the first `context`, targets the last), so
//! windows do not overlap and every target is the id that follows its input.

use crate::dataset::{DatasetManifest, ShardStore};
use crate::error::GpuError;
use crate::hash::Hash32;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const TOKEN_MAGIC: &[u8; 8] = b"TMTOKEN1";
const TOKEN_HEADER_BYTES: usize = 8 + 4 * 3;

/// The byte tokenizer's name in a manifest (vocabulary 256: id = byte).
pub const BYTES_TOKENIZER: &str = "bytes";

/// A stream of token ids, every one below `vocab`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub vocab: usize,
    pub ids: Vec<u32>,
}

fn malformed(reason: String) -> GpuError {
    GpuError::ShardMalformed { reason }
}

impl Tokens {
    /// Checks the vocabulary bound and every id.
    pub fn new(vocab: usize, ids: Vec<u32>) -> Result<Self, GpuError> {
        if !(2..=crate::spec::VOCAB_MAX as usize).contains(&vocab) {
            return Err(malformed(format!(
                "vocab = {vocab}, must be in 2..={}",
                crate::spec::VOCAB_MAX
            )));
        }
        if let Some(t) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(malformed(format!("token id {t} not below vocab = {vocab}")));
        }
        Ok(Tokens { vocab, ids })
    }

    /// The byte tokenizer: each byte of `text` is one id.
    pub fn from_bytes(text: &[u8]) -> Self {
        Tokens {
            vocab: 256,
            ids: text.iter().map(|&b| u32::from(b)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// How many training windows of `context` tokens this stream holds.
    pub fn windows(&self, context: usize) -> usize {
        self.ids.len().saturating_sub(1) / context.max(1)
    }

    /// Window `i`: `context + 1` ids (inputs are the first `context`, targets the last).
    pub fn window(&self, i: usize, context: usize) -> &[u32] {
        &self.ids[i * context..i * context + context + 1]
    }

    /// Concatenates `parts`, which must share a vocabulary.
    pub fn concat(parts: &[Tokens]) -> Result<Tokens, GpuError> {
        let first = parts.first().ok_or_else(|| GpuError::ShapeMismatch {
            reason: "no shards to concatenate".into(),
        })?;
        let mut ids = Vec::with_capacity(parts.iter().map(Tokens::len).sum());
        for p in parts {
            if p.vocab != first.vocab {
                return Err(GpuError::ShapeMismatch {
                    reason: format!(
                        "token shard of vocab {} beside one of {}",
                        p.vocab, first.vocab
                    ),
                });
            }
            ids.extend_from_slice(&p.ids);
        }
        Ok(Tokens {
            vocab: first.vocab,
            ids,
        })
    }

    /// Encodes these ids as one token shard.
    pub fn encode_shard(&self) -> Vec<u8> {
        let width = if self.vocab <= 1 << 16 { 2 } else { 4 };
        let mut out = Vec::with_capacity(TOKEN_HEADER_BYTES + self.ids.len() * width);
        out.extend_from_slice(TOKEN_MAGIC);
        out.extend_from_slice(&(self.ids.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.vocab as u32).to_le_bytes());
        out.extend_from_slice(&(width as u32).to_le_bytes());
        for &t in &self.ids {
            if width == 2 {
                out.extend_from_slice(&(t as u16).to_le_bytes());
            } else {
                out.extend_from_slice(&t.to_le_bytes());
            }
        }
        out
    }
}

/// Whether `bytes` start like a token shard (rather than a sample shard).
pub fn is_token_shard(bytes: &[u8]) -> bool {
    bytes.starts_with(TOKEN_MAGIC)
}

/// Checks `bytes` against the committed `expected` hash, then decodes them as a token shard.
pub fn decode_token_shard(bytes: &[u8], expected: &Hash32) -> Result<Tokens, GpuError> {
    let actual = Hash32::of(bytes);
    if actual != *expected {
        return Err(GpuError::ShardHashMismatch {
            expected: *expected,
            actual,
        });
    }
    if bytes.len() > crate::dataset::SHARD_BYTES_MAX {
        return Err(malformed(format!(
            "{} bytes, at most {}",
            bytes.len(),
            crate::dataset::SHARD_BYTES_MAX
        )));
    }
    if bytes.len() < TOKEN_HEADER_BYTES {
        return Err(GpuError::ShardTruncated {
            expected_bytes: TOKEN_HEADER_BYTES,
            actual_bytes: bytes.len(),
        });
    }
    if &bytes[..8] != TOKEN_MAGIC {
        return Err(malformed(
            "bad magic (not a trainmesh token shard, version 1)".into(),
        ));
    }
    let u32_at =
        |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes")) as usize;
    let (n, vocab, width) = (u32_at(8), u32_at(12), u32_at(16));
    let want_width = if vocab <= 1 << 16 { 2 } else { 4 };
    if width != want_width {
        return Err(malformed(format!(
            "{width} bytes per id for vocab {vocab}, expected {want_width}"
        )));
    }
    let expected_bytes = n
        .checked_mul(width)
        .and_then(|v| v.checked_add(TOKEN_HEADER_BYTES))
        .ok_or_else(|| malformed("header sizes overflow".into()))?;
    if bytes.len() < expected_bytes {
        return Err(GpuError::ShardTruncated {
            expected_bytes,
            actual_bytes: bytes.len(),
        });
    }
    if bytes.len() > expected_bytes {
        return Err(malformed(format!(
            "{} trailing bytes",
            bytes.len() - expected_bytes
        )));
    }
    let body = &bytes[TOKEN_HEADER_BYTES..];
    let ids = if width == 2 {
        body.chunks_exact(2)
            .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
            .collect()
    } else {
        body.chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect()
    };
    Tokens::new(vocab, ids)
}

/// Cuts `tokens` into blocks of `shard_tokens`, holds out `heldout_fraction` of the blocks
/// (drawn with `seed`; at least one block each way), stores each block as a shard, and returns
/// the manifest (`features` 0, `classes` the vocabulary, `tokenizer` named). The held-out blocks
/// are committed in the manifest before any training, and trainers are never given them.
pub fn shard_tokens(
    name: &str,
    tokenizer: &str,
    tokens: &Tokens,
    shard_tokens: usize,
    heldout_fraction: f64,
    seed: u64,
    store: &mut ShardStore,
) -> Result<DatasetManifest, GpuError> {
    let blocks: Vec<&[u32]> = tokens.ids.chunks(shard_tokens.max(1)).collect();
    if shard_tokens < 2 || blocks.len() < 2 || !(0.0..1.0).contains(&heldout_fraction) {
        return Err(malformed(format!(
            "cannot cut {} tokens into blocks of {shard_tokens} holding out {heldout_fraction}",
            tokens.len()
        )));
    }
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    order.shuffle(&mut ChaCha20Rng::seed_from_u64(seed));
    let heldout_len =
        (((blocks.len() as f64) * heldout_fraction).round() as usize).clamp(1, blocks.len() - 1);
    let (heldout_idx, train_idx) = order.split_at(heldout_len);
    // Each split keeps the corpus order, so windows read text as it was written.
    let mut put = |idx: &[usize]| {
        let mut idx = idx.to_vec();
        idx.sort_unstable();
        idx.iter()
            .map(|&i| {
                store.put(
                    Tokens {
                        vocab: tokens.vocab,
                        ids: blocks[i].to_vec(),
                    }
                    .encode_shard(),
                )
            })
            .collect::<Vec<_>>()
    };
    let train = put(train_idx);
    let heldout = put(heldout_idx);
    Ok(DatasetManifest {
        name: name.to_string(),
        features: 0,
        classes: tokens.vocab as u32,
        train,
        heldout,
        tokenizer: Some(tokenizer.to_string()),
    })
}

/// Where Debian's `fortunes` package installs its collections of quotations.
pub const FORTUNES_DIR: &str = "/usr/share/games/fortunes";

/// The text of Debian's `fortunes` package, a real English corpus of about 2.5 MB: every
/// collection in `dir` (the files without an extension, by name), each quotation ending in a
/// blank line in place of the `%` line that separates them. `None` when the package is not
/// installed.
pub fn fortunes_corpus(dir: &std::path::Path) -> Result<Option<Vec<u8>>, GpuError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(GpuError::io(dir, e)),
    };
    let mut files: Vec<std::path::PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| p.extension().is_none())
        .collect();
    files.sort();
    if files.is_empty() {
        return Ok(None);
    }
    let mut text = Vec::new();
    for f in files {
        let raw = std::fs::read(&f).map_err(|e| GpuError::io(&f, e))?;
        for line in raw.split(|&b| b == b'\n') {
            if line == b"%" {
                text.push(b'\n');
            } else {
                text.extend_from_slice(line);
                text.push(b'\n');
            }
        }
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shards_round_trip_and_reject_what_is_wrong() {
        for vocab in [256usize, 70_000] {
            let t = Tokens::new(
                vocab,
                (0..1000u32).map(|i| (i * 37) % vocab as u32).collect(),
            )
            .unwrap();
            let bytes = t.encode_shard();
            assert_eq!(decode_token_shard(&bytes, &Hash32::of(&bytes)).unwrap(), t);
            let mut flipped = bytes.clone();
            flipped[30] ^= 1;
            assert!(matches!(
                decode_token_shard(&flipped, &Hash32::of(&bytes)),
                Err(GpuError::ShardHashMismatch { .. })
            ));
            let cut = &bytes[..bytes.len() - 1];
            assert!(matches!(
                decode_token_shard(cut, &Hash32::of(cut)),
                Err(GpuError::ShardTruncated { .. })
            ));
        }
        // An id at or above the vocabulary, a hostile count, a wrong width.
        let mut bad = Tokens::from_bytes(b"hello").encode_shard();
        bad[12..16].copy_from_slice(&100u32.to_le_bytes());
        assert!(decode_token_shard(&bad, &Hash32::of(&bad)).is_err());
        let mut huge = Tokens::from_bytes(b"hello").encode_shard();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_token_shard(&huge, &Hash32::of(&huge)).is_err());
        let mut wide = Tokens::from_bytes(b"hello").encode_shard();
        wide[16..20].copy_from_slice(&4u32.to_le_bytes());
        assert!(decode_token_shard(&wide, &Hash32::of(&wide)).is_err());
        assert!(Tokens::new(1, vec![]).is_err());
    }

    #[test]
    fn windows_cover_the_stream_without_overlap() {
        let t = Tokens::from_bytes(b"abcdefghij");
        assert_eq!(t.windows(3), 3);
        assert_eq!(t.window(0, 3), &[97, 98, 99, 100]);
        assert_eq!(t.window(2, 3), &[103, 104, 105, 106]);
    }

    #[test]
    fn sharding_holds_out_whole_blocks_and_keeps_order() {
        let text: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let t = Tokens::from_bytes(&text);
        let mut store = ShardStore::new();
        let m = shard_tokens("t", BYTES_TOKENIZER, &t, 1000, 0.2, 5, &mut store).unwrap();
        assert_eq!((m.train.len(), m.heldout.len()), (8, 2));
        assert_eq!(m.tokenizer.as_deref(), Some("bytes"));
        let train = store.load_tokens(&m.train).unwrap();
        let held = store.load_tokens(&m.heldout).unwrap();
        assert_eq!(train.len() + held.len(), 10_000);
        // Nothing held out is trained on: every block's first id is distinct here.
        let starts = |x: &Tokens| x.ids.chunks(1000).map(|c| c[0]).collect::<Vec<_>>();
        assert!(starts(&held).iter().all(|s| !starts(&train).contains(s)));
    }
}
