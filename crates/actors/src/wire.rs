//! What nodes say to each other. Every direct message starts with one channel byte:
//! [`CHANNEL_CONSENSUS`] carries the DAG's own encoding (validators only), [`CHANNEL_MESH`] a
//! [`MeshMessage`] in BCS: transactions for the mempool, ledger sync, and content-addressed blobs
//! (checkpoints, checkpoint chains, dataset shards and manifests).
//!
//! Every blob is checked against the hash it was asked for before anyone uses it, so a peer can
//! withhold data but never substitute it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use trainmesh_dag::ConsensusMessage;

use crate::network::MESSAGE_BYTES_MAX;

pub const CHANNEL_CONSENSUS: u8 = 0;
pub const CHANNEL_MESH: u8 = 1;

/// Transactions in one `Transactions` message.
pub const TRANSACTIONS_PER_MESSAGE_MAX: usize = 4_096;
/// Batches in one sync response.
pub const SYNC_BATCHES_MAX: u32 = 64;
/// Bytes of batches in one sync response (leaves room for the envelope).
pub const SYNC_BYTES_MAX: usize = MESSAGE_BYTES_MAX / 2;

/// What a blob is, which decides how its hash is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BlobKind {
    /// A checkpoint (safetensors): BLAKE3 of the bytes.
    Checkpoint,
    /// A unit's checkpoint chain (JSON of `trainmesh_gpu::train::WorkResult`): its Merkle root.
    Chain,
    /// A dataset shard: BLAKE3 of the bytes.
    Shard,
    /// A dataset manifest (JSON of `trainmesh_gpu::dataset::DatasetManifest`): the Merkle root of
    /// its training shards, as attached on the ledger.
    Manifest,
}

/// One executed consensus commit as a follower replays it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedBatch {
    pub index: u64,
    pub timestamp_ms: u64,
    pub transactions: Vec<Vec<u8>>,
    /// The beacon shares the commit's certificates carried: (author's committee position,
    /// encoded share), the first per author and signed commit. They seed earlier commits.
    pub beacon_shares: Vec<(u32, Vec<u8>)>,
}

impl SyncedBatch {
    /// What followers compare between validators.
    pub fn digest(&self) -> [u8; 32] {
        let bytes = bcs::to_bytes(self).expect("batches always serialize");
        *blake3::hash(&bytes).as_bytes()
    }

    pub fn encoded_len(&self) -> usize {
        self.transactions.iter().map(|t| t.len() + 4).sum::<usize>()
            + self
                .beacon_shares
                .iter()
                .map(|(_, s)| s.len() + 8)
                .sum::<usize>()
            + 64
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeshMessage {
    /// Signed ledger transactions for a validator's mempool.
    Transactions(Vec<Vec<u8>>),
    /// Asks a validator for committed batches from consensus index `from`.
    SyncRequest {
        from: u64,
        max: u32,
    },
    SyncResponse {
        batches: Vec<SyncedBatch>,
    },
    BlobRequest {
        kind: BlobKind,
        hash: [u8; 32],
    },
    /// `bytes` is `None` when the peer does not have the blob or may not give it out.
    BlobResponse {
        kind: BlobKind,
        hash: [u8; 32],
        bytes: Option<Vec<u8>>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("empty message")]
    Empty,
    #[error("unknown channel {0}")]
    UnknownChannel(u8),
    #[error("malformed mesh message: {0}")]
    Malformed(String),
    #[error("{what}: {count} exceeds {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
}

impl MeshMessage {
    pub fn encode(&self) -> Bytes {
        let mut out = vec![CHANNEL_MESH];
        out.extend(bcs::to_bytes(self).expect("mesh messages always serialize"));
        Bytes::from(out)
    }

    /// Decodes the body of a [`CHANNEL_MESH`] message and checks its bounds.
    pub fn decode(body: &[u8]) -> Result<MeshMessage, WireError> {
        let m: MeshMessage =
            bcs::from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
        match &m {
            MeshMessage::Transactions(t) if t.len() > TRANSACTIONS_PER_MESSAGE_MAX => {
                Err(WireError::TooMany {
                    what: "transactions",
                    count: t.len(),
                    max: TRANSACTIONS_PER_MESSAGE_MAX,
                })
            }
            MeshMessage::SyncResponse { batches } if batches.len() > SYNC_BATCHES_MAX as usize => {
                Err(WireError::TooMany {
                    what: "batches",
                    count: batches.len(),
                    max: SYNC_BATCHES_MAX as usize,
                })
            }
            _ => Ok(m),
        }
    }
}

/// Splits a direct message into its channel and body.
pub fn split(bytes: &[u8]) -> Result<(u8, &[u8]), WireError> {
    let (&channel, body) = bytes.split_first().ok_or(WireError::Empty)?;
    match channel {
        CHANNEL_CONSENSUS | CHANNEL_MESH => Ok((channel, body)),
        c => Err(WireError::UnknownChannel(c)),
    }
}

/// A consensus message encoded behind its channel byte, in one buffer.
pub fn consensus_frame(message: &ConsensusMessage) -> Bytes {
    Bytes::from(trainmesh_dag::encoding::encode_after(
        &[CHANNEL_CONSENSUS],
        message,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let m = MeshMessage::BlobRequest {
            kind: BlobKind::Shard,
            hash: [7; 32],
        };
        let bytes = m.encode();
        let (c, body) = split(&bytes).unwrap();
        assert_eq!(c, CHANNEL_MESH);
        assert_eq!(MeshMessage::decode(body).unwrap(), m);
        assert_eq!(split(&[]), Err(WireError::Empty));
        assert_eq!(split(&[9, 1]), Err(WireError::UnknownChannel(9)));
        assert!(matches!(
            MeshMessage::decode(&body[..body.len() - 1]),
            Err(WireError::Malformed(_))
        ));
        let mut trailing = body.to_vec();
        trailing.push(0);
        assert!(matches!(
            MeshMessage::decode(&trailing),
            Err(WireError::Malformed(_))
        ));
        let many = MeshMessage::Transactions(vec![vec![]; TRANSACTIONS_PER_MESSAGE_MAX + 1]);
        assert!(matches!(
            MeshMessage::decode(&many.encode()[1..]),
            Err(WireError::TooMany { .. })
        ));
    }
}
