//! Content-addressed blobs: what a node serves ([`BlobStore`]) and how it fetches from others
//! ([`Fetcher`]). A fetched blob is checked against its hash (by [`verify_blob`]) before any
//! waiter sees it; a peer that answers with the wrong bytes is penalized.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};
use trainmesh_gpu::dataset::DatasetManifest;
use trainmesh_gpu::hash::{merkle_root, Hash32};
use trainmesh_gpu::train::WorkResult as ChainResult;

use crate::network::NetworkCommand;
use crate::wire::{BlobKind, MeshMessage};

/// Blobs one node holds.
pub const BLOBS_MAX: usize = 100_000;
/// Requests one node may have outstanding.
pub const FETCHES_IN_FLIGHT_MAX: usize = 1_024;
/// How long one peer gets to answer before the next is asked.
pub const PEER_ANSWER_TIMEOUT: Duration = Duration::from_millis(1_500);

/// Who may fetch a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    Anyone,
    /// Only registered evaluators (the held-out split).
    Evaluators,
}

type Blobs = BTreeMap<(BlobKind, [u8; 32]), (Arc<Vec<u8>>, Audience)>;

#[derive(Clone, Debug, Default)]
pub struct BlobStore {
    inner: Arc<Mutex<Blobs>>,
}

impl BlobStore {
    pub fn put(&self, kind: BlobKind, hash: [u8; 32], bytes: Vec<u8>, audience: Audience) {
        let mut m = self.inner.lock().expect("blob store lock");
        if m.len() >= BLOBS_MAX {
            // Checkpoints and chains are re-derivable and also held by other trainers: drop one
            // (the smallest key; oldest-first is unknown here). A dataset's shards and manifest
            // are what this node promised to serve: never dropped (their owner bounds them).
            let evictable = m
                .keys()
                .find(|(kind, _)| matches!(kind, BlobKind::Checkpoint | BlobKind::Chain))
                .copied();
            if let Some(k) = evictable {
                m.remove(&k);
            }
        }
        m.insert((kind, hash), (Arc::new(bytes), audience));
    }

    /// Stops serving a blob (an upload that expired unused).
    pub fn remove(&self, kind: BlobKind, hash: &[u8; 32]) {
        self.inner
            .lock()
            .expect("blob store lock")
            .remove(&(kind, *hash));
    }

    pub fn get(&self, kind: BlobKind, hash: &[u8; 32]) -> Option<(Arc<Vec<u8>>, Audience)> {
        self.inner
            .lock()
            .expect("blob store lock")
            .get(&(kind, *hash))
            .cloned()
    }

    /// What this node answers a peer asking for `kind`/`hash`: the blob when its audience
    /// includes the peer (`evaluator`: the peer is a registered evaluator), else nothing.
    pub fn serve(&self, kind: BlobKind, hash: &[u8; 32], evaluator: bool) -> Option<Vec<u8>> {
        match self.get(kind, hash) {
            Some((b, Audience::Anyone)) => Some(b.to_vec()),
            Some((b, Audience::Evaluators)) if evaluator => Some(b.to_vec()),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("blob store lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `bytes` are the blob `kind`/`hash` names.
pub fn verify_blob(kind: BlobKind, hash: &[u8; 32], bytes: &[u8]) -> bool {
    match kind {
        BlobKind::Checkpoint | BlobKind::Shard => blake3::hash(bytes).as_bytes() == hash,
        BlobKind::Chain => serde_json::from_slice::<ChainResult>(bytes)
            .ok()
            .filter(|r| r.validate().is_ok())
            .is_some_and(|r| r.chain_root().0 == *hash),
        BlobKind::Manifest => serde_json::from_slice::<DatasetManifest>(bytes)
            .ok()
            .is_some_and(|m| merkle_root(&m.train) == Hash32(*hash)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no peer to fetch {kind:?} {hash} from")]
    NoPeers { kind: BlobKind, hash: String },
    #[error("{kind:?} {hash} not obtained within {secs} s")]
    Timeout {
        kind: BlobKind,
        hash: String,
        secs: u64,
    },
    #[error("too many fetches in flight")]
    Busy,
}

type Waiters = BTreeMap<(BlobKind, [u8; 32]), Vec<oneshot::Sender<Arc<Vec<u8>>>>>;

/// Fetches blobs by hash from peers, one peer after another until one answers correctly.
#[derive(Clone, Debug)]
pub struct Fetcher {
    net: mpsc::Sender<NetworkCommand>,
    waiters: Arc<Mutex<Waiters>>,
    local: BlobStore,
}

impl Fetcher {
    pub fn new(net: mpsc::Sender<NetworkCommand>, local: BlobStore) -> Fetcher {
        Fetcher {
            net,
            waiters: Arc::default(),
            local,
        }
    }

    /// The blob, from the local store or from `peers`, verified; it is kept locally afterwards
    /// and served on to `audience` only — the audience the blob had where it came from (a
    /// held-out shard an evaluator fetched stays for evaluators: [`Audience::Evaluators`]).
    pub async fn fetch(
        &self,
        kind: BlobKind,
        hash: [u8; 32],
        peers: &[PeerId],
        timeout: Duration,
        audience: Audience,
    ) -> Result<Arc<Vec<u8>>, FetchError> {
        if let Some((b, _)) = self.local.get(kind, &hash) {
            return Ok(b);
        }
        if peers.is_empty() {
            return Err(FetchError::NoPeers {
                kind,
                hash: hex::encode(hash),
            });
        }
        let (tx, mut rx) = oneshot::channel();
        {
            let mut w = self.waiters.lock().expect("waiters lock");
            if w.values().map(Vec::len).sum::<usize>() >= FETCHES_IN_FLIGHT_MAX {
                return Err(FetchError::Busy);
            }
            w.entry((kind, hash)).or_default().push(tx);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let request = MeshMessage::BlobRequest { kind, hash }.encode();
        let mut attempt = 0usize;
        loop {
            let peer = peers[attempt % peers.len()];
            attempt += 1;
            let _ = self
                .net
                .send(NetworkCommand::SendTo {
                    peer,
                    bytes: request.clone(),
                })
                .await;
            let wait = tokio::time::Instant::now() + PEER_ANSWER_TIMEOUT;
            match tokio::time::timeout_at(wait.min(deadline), &mut rx).await {
                Ok(Ok(bytes)) => {
                    self.local.put(kind, hash, bytes.to_vec(), audience);
                    return Ok(bytes);
                }
                Ok(Err(_)) | Err(_) => {
                    if tokio::time::Instant::now() >= deadline {
                        self.cancel(kind, &hash);
                        return Err(FetchError::Timeout {
                            kind,
                            hash: hex::encode(hash),
                            secs: timeout.as_secs(),
                        });
                    }
                    if let Ok(Err(_)) = tokio::time::timeout(Duration::ZERO, &mut rx).await {
                        // The sender was dropped (cancelled elsewhere): register again.
                        let (tx, new_rx) = oneshot::channel();
                        rx = new_rx;
                        self.waiters
                            .lock()
                            .expect("waiters lock")
                            .entry((kind, hash))
                            .or_default()
                            .push(tx);
                    }
                }
            }
        }
    }

    fn cancel(&self, kind: BlobKind, hash: &[u8; 32]) {
        let mut w = self.waiters.lock().expect("waiters lock");
        if let Some(v) = w.get_mut(&(kind, *hash)) {
            v.retain(|s| !s.is_closed());
            if v.is_empty() {
                w.remove(&(kind, *hash));
            }
        }
    }

    /// A peer answered. Returns false when the bytes do not match the hash (the caller
    /// penalizes the peer); unsolicited answers are ignored.
    pub fn deliver(&self, kind: BlobKind, hash: [u8; 32], bytes: Vec<u8>) -> bool {
        if !self
            .waiters
            .lock()
            .expect("waiters lock")
            .contains_key(&(kind, hash))
        {
            return true;
        }
        if !verify_blob(kind, &hash, &bytes) {
            return false;
        }
        let bytes = Arc::new(bytes);
        if let Some(v) = self
            .waiters
            .lock()
            .expect("waiters lock")
            .remove(&(kind, hash))
        {
            for s in v {
                let _ = s.send(bytes.clone());
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An evaluator that fetched a held-out shard keeps the shard's audience: it serves it on
    /// to evaluators only, never to a trainer (or anyone else) asking for it.
    #[tokio::test]
    async fn a_fetched_heldout_shard_is_not_served_to_a_trainer() {
        let (net, mut requests) = mpsc::channel(8);
        let local = BlobStore::default();
        let fetcher = Fetcher::new(net, local.clone());
        let shard = b"held-out shard bytes".to_vec();
        let hash = *blake3::hash(&shard).as_bytes();
        let provider = PeerId::random();
        let f = fetcher.clone();
        let fetch = tokio::spawn(async move {
            f.fetch(
                BlobKind::Shard,
                hash,
                &[provider],
                Duration::from_secs(30),
                Audience::Evaluators,
            )
            .await
        });
        // The provider is asked, and answers.
        let Some(NetworkCommand::SendTo { peer, .. }) = requests.recv().await else {
            panic!("no request went out");
        };
        assert_eq!(peer, provider);
        assert!(fetcher.deliver(BlobKind::Shard, hash, shard.clone()));
        assert_eq!(*fetch.await.unwrap().unwrap(), shard);
        assert_eq!(
            local.get(BlobKind::Shard, &hash).map(|(_, a)| a),
            Some(Audience::Evaluators)
        );
        assert_eq!(local.serve(BlobKind::Shard, &hash, false), None);
        assert_eq!(local.serve(BlobKind::Shard, &hash, true), Some(shard));
    }

    #[test]
    fn blobs_are_checked_against_their_hash() {
        let bytes = b"checkpoint bytes".to_vec();
        let h = *blake3::hash(&bytes).as_bytes();
        assert!(verify_blob(BlobKind::Checkpoint, &h, &bytes));
        assert!(!verify_blob(BlobKind::Checkpoint, &h, b"other bytes"));
        assert!(!verify_blob(BlobKind::Chain, &h, &bytes));
        assert!(!verify_blob(BlobKind::Manifest, &h, &[]));
        let m = DatasetManifest {
            name: "d".into(),
            features: 2,
            classes: 2,
            train: vec![Hash32([1; 32]), Hash32([2; 32])],
            heldout: vec![Hash32([3; 32])],
            tokenizer: None,
        };
        let root = merkle_root(&m.train).0;
        assert!(verify_blob(
            BlobKind::Manifest,
            &root,
            &serde_json::to_vec(&m).unwrap()
        ));
    }
}
