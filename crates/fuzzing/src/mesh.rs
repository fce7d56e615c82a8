//! A frame from a peer as the router handles it: split into channel and body; a consensus body
//! goes to the coordinator (decoded and validated there), a mesh body is decoded with its bounds,
//! and what it carries is checked by the functions the router calls on it.

use trainmesh_actors::blobs::verify_blob;
use trainmesh_actors::wire::{self, MeshMessage, CHANNEL_CONSENSUS};
use trainmesh_dag::encoding::{decode, MESSAGE_BYTES_MAX};
use trainmesh_dag::ConsensusMessage;
use trainmesh_ledger::transaction::SignedTransaction;

use crate::dag::validator;
use crate::CHAIN_ID;

pub fn mesh_frame(data: &[u8]) {
    let Ok((channel, body)) = wire::split(data) else {
        return;
    };
    if channel == CHANNEL_CONSENSUS {
        if let Ok(message) = decode::<ConsensusMessage>(body, MESSAGE_BYTES_MAX) {
            let _refused_or_accepted = validator().verify_message(message);
        }
        return;
    }
    let Ok(message) = MeshMessage::decode(body) else {
        return;
    };
    assert_eq!(
        &message.encode()[1..],
        body,
        "a decoded mesh message does not encode to the bytes it came from"
    );
    match message {
        // The router decodes and checks each transaction before a mempool sees it.
        MeshMessage::Transactions(transactions) => {
            for t in &transactions {
                let _refused_or_accepted =
                    SignedTransaction::decode(t).and_then(|s| s.verify(CHAIN_ID));
            }
        }
        // A follower compares batches between validators by digest.
        MeshMessage::SyncResponse { batches } => {
            for b in &batches {
                let _digest = b.digest();
            }
        }
        // A fetched blob is checked against the hash it was asked for.
        MeshMessage::BlobResponse {
            kind,
            hash,
            bytes: Some(bytes),
        } => {
            let _matches = verify_blob(kind, &hash, &bytes);
        }
        MeshMessage::SyncRequest { .. }
        | MeshMessage::BlobRequest { .. }
        | MeshMessage::BlobResponse { bytes: None, .. } => {}
    }
}
