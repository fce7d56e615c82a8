//! The canonical, versioned wire and storage encoding.
//!
//! Layout: one version byte, then the value in BCS (a canonical serde format: one byte string
//! per value, no trailing bytes, lengths bounded). Size is checked before any decoding, and
//! every decoding failure is a typed [`DecodeError`]; nothing here panics on peer input.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::DecodeError;

/// The encoding version written in the first byte.
pub const ENCODING_VERSION: u8 = 1;

/// The largest message any peer may send (a header with a full payload, or a sync response).
pub const MESSAGE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Nesting depth BCS accepts while decoding.
const CONTAINER_DEPTH_MAX: usize = 16;

/// Encodes a value: version byte + BCS.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_after(&[], value)
}

/// The length of [`encode`]'s output, without encoding.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    1 + bcs::serialized_size(value).expect("types of this crate always serialize to BCS")
}

/// `prefix` followed by [`encode`]'s output, in one buffer of the exact size (a header with its
/// payload is encoded once, with no reallocation and no copy).
pub fn encode_after<T: Serialize>(prefix: &[u8], value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + encoded_len(value));
    out.extend_from_slice(prefix);
    out.push(ENCODING_VERSION);
    bcs::serialize_into(&mut out, value).expect("types of this crate always serialize to BCS");
    out
}

/// Writes [`encode`]'s output into `out`, which must be [`encoded_len`] long.
pub fn encode_into<T: Serialize>(value: &T, out: &mut [u8]) {
    let (version, mut body) = out.split_first_mut().expect("room for the version byte");
    *version = ENCODING_VERSION;
    bcs::serialize_into(&mut body, value).expect("types of this crate always serialize to BCS");
    assert!(body.is_empty(), "encode_into: buffer longer than the value");
}

/// Decodes a value written by [`encode`], rejecting anything over `max_bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max_bytes: usize) -> Result<T, DecodeError> {
    if bytes.len() > max_bytes {
        return Err(DecodeError::Oversized {
            len_bytes: bytes.len(),
            max_bytes,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != ENCODING_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: version,
            expected: ENCODING_VERSION,
        });
    }
    bcs::from_bytes_with_limit(body, CONTAINER_DEPTH_MAX).map_err(|e| DecodeError::Malformed {
        reason: e.to_string(),
    })
}

/// A hasher that BCS can write into, so digests need no intermediate buffer.
pub(crate) struct HashWriter(pub blake3::Hasher);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// BLAKE3 over `domain || BCS(value)`. BCS writes field by field, often a few bytes at a time;
/// a buffer in front of the hasher lets BLAKE3 take large chunks (its SIMD path), which is
/// several times faster for headers with payload. The digest does not depend on the chunking.
pub(crate) fn digest_of<T: Serialize>(domain: &[u8], value: &T) -> crate::types::Digest {
    use std::io::Write;
    let mut hasher = HashWriter(blake3::Hasher::new());
    hasher.0.update(domain);
    let mut w = std::io::BufWriter::with_capacity(HASH_BUFFER_BYTES, hasher);
    bcs::serialize_into(&mut w, value).expect("types of this crate always serialize to BCS");
    w.flush().expect("hashing never fails");
    let hasher = w
        .into_inner()
        .unwrap_or_else(|_| unreachable!("flushed above"));
    crate::types::Digest(*hasher.0.finalize().as_bytes())
}

const HASH_BUFFER_BYTES: usize = 64 * 1024;
