//! The Router actor: reads the node's network events and hands each message to the actor it is
//! for. Malformed input is refused here, with the peer penalized, before any actor sees it.

use actix::prelude::*;
use bytes::Bytes;
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trainmesh_contracts::{keys, Address};
use trainmesh_ledger::transaction::SignedTransaction;

use crate::blobs::{Audience, BlobStore, Fetcher};
use crate::consensus::PeerBook;
use crate::coordinator::{ConsensusInbound, ServeSync, SubmitTransactions};
use crate::ledger::{SharedLedger, SyncResponseFrom};
use crate::metrics::NodeMetrics;
use crate::network::{NetworkCommand, NetworkEvent};
use crate::wire::{self, MeshMessage, CHANNEL_CONSENSUS};

/// The validator side of a node, when it has one.
#[derive(Clone, Debug)]
pub struct ValidatorInbox {
    pub consensus: Recipient<ConsensusInbound>,
    pub mempool: Recipient<SubmitTransactions>,
    pub sync: Recipient<ServeSync>,
}

pub struct Router {
    pub peers: PeerBook,
    pub validator: Option<ValidatorInbox>,
    pub ledger_sync: Recipient<SyncResponseFrom>,
    pub ledger: SharedLedger,
    pub chain_id: String,
    pub blobs: BlobStore,
    pub fetcher: Fetcher,
    pub net: mpsc::Sender<NetworkCommand>,
    pub events: Option<mpsc::Receiver<NetworkEvent>>,
    pub metrics: NodeMetrics,
    connected: usize,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        peers: PeerBook,
        validator: Option<ValidatorInbox>,
        ledger_sync: Recipient<SyncResponseFrom>,
        ledger: SharedLedger,
        chain_id: String,
        blobs: BlobStore,
        fetcher: Fetcher,
        net: mpsc::Sender<NetworkCommand>,
        events: mpsc::Receiver<NetworkEvent>,
        metrics: NodeMetrics,
    ) -> Self {
        Router {
            peers,
            validator,
            ledger_sync,
            ledger,
            chain_id,
            blobs,
            fetcher,
            net,
            events: Some(events),
            metrics,
            connected: 0,
        }
    }

    fn penalize(&self, peer: PeerId, reason: String) {
        tracing::debug!(%peer, %reason, "refused a message");
        let _ = self.net.try_send(NetworkCommand::Penalize { peer, reason });
    }

    fn reply(&self, peer: PeerId, m: MeshMessage) {
        let bytes = m.encode();
        self.metrics.bytes_out.inc_by(bytes.len() as u64);
        if self
            .net
            .try_send(NetworkCommand::SendTo { peer, bytes })
            .is_err()
        {
            self.metrics.messages_dropped.inc();
        }
    }

    /// Whether `peer` is a registered evaluator (the held-out split is only for them).
    fn is_evaluator(&self, peer: &PeerId) -> bool {
        let ledger = self.ledger.read().expect("ledger lock");
        let Ok(Some(index)) = ledger.read::<Vec<Address>>(keys::WORKERS) else {
            return false;
        };
        let peer = peer.to_string();
        index.iter().any(|a| {
            matches!(
                ledger.read::<trainmesh_contracts::workers::Worker>(&keys::worker(a)),
                Ok(Some(w)) if w.role == trainmesh_contracts::workers::Role::Evaluator && w.peer_id == peer
            )
        })
    }

    fn on_mesh(&mut self, from: PeerId, m: MeshMessage, ctx: &mut Context<Self>) {
        match m {
            MeshMessage::Transactions(txs) => {
                let Some(v) = &self.validator else {
                    return;
                };
                // Decode and check signatures here: junk never reaches the DAG.
                let mut good = Vec::with_capacity(txs.len());
                for t in txs {
                    match SignedTransaction::decode(&t).and_then(|s| s.verify(&self.chain_id)) {
                        Ok(()) => good.push(Bytes::from(t)),
                        Err(e) => self.penalize(from, format!("transaction refused: {e}")),
                    }
                }
                if !good.is_empty() {
                    let mempool = v.mempool.clone();
                    ctx.spawn(
                        async move {
                            if let Ok(Err(e)) = mempool.send(SubmitTransactions(good)).await {
                                tracing::debug!(error = %e, "mempool refused transactions");
                            }
                        }
                        .into_actor(self),
                    );
                }
            }
            MeshMessage::SyncRequest { from: index, max } => {
                if let Some(v) = &self.validator {
                    v.sync.do_send(ServeSync {
                        peer: from,
                        from: index,
                        max,
                    });
                }
            }
            MeshMessage::SyncResponse { batches } => match self.peers.authority(&from) {
                Some(a) => self
                    .ledger_sync
                    .do_send(SyncResponseFrom { from: a, batches }),
                None => self.penalize(from, "sync response from a non-validator".into()),
            },
            MeshMessage::BlobRequest { kind, hash } => {
                let bytes = match self.blobs.get(kind, &hash) {
                    Some((b, Audience::Anyone)) => Some(b.to_vec()),
                    Some((b, Audience::Evaluators)) if self.is_evaluator(&from) => Some(b.to_vec()),
                    _ => None,
                };
                self.reply(from, MeshMessage::BlobResponse { kind, hash, bytes });
            }
            MeshMessage::BlobResponse { kind, hash, bytes } => {
                if let Some(bytes) = bytes {
                    if !self.fetcher.deliver(kind, hash, bytes) {
                        self.penalize(from, format!("{kind:?} does not match its hash"));
                    }
                }
            }
        }
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(events) = self.events.take() {
            ctx.add_stream(ReceiverStream::new(events));
        }
    }
}

impl StreamHandler<NetworkEvent> for Router {
    fn handle(&mut self, event: NetworkEvent, ctx: &mut Context<Self>) {
        match event {
            NetworkEvent::Message { from, bytes } => {
                let (channel, body) = match wire::split(&bytes) {
                    Ok(x) => x,
                    Err(e) => return self.penalize(from, e.to_string()),
                };
                if channel == CHANNEL_CONSENSUS {
                    match (&self.validator, self.peers.authority(&from)) {
                        (Some(v), Some(a)) => v.consensus.do_send(ConsensusInbound {
                            from: a,
                            bytes: bytes.slice(1..),
                        }),
                        (_, None) => {
                            self.penalize(from, "consensus message from a non-validator".into())
                        }
                        (None, Some(_)) => {}
                    }
                    return;
                }
                match MeshMessage::decode(body) {
                    Ok(m) => self.on_mesh(from, m, ctx),
                    Err(e) => self.penalize(from, e.to_string()),
                }
            }
            NetworkEvent::Connected(_) => {
                self.connected += 1;
                self.metrics.peers.set(self.connected as i64);
            }
            NetworkEvent::Disconnected(_) => {
                self.connected = self.connected.saturating_sub(1);
                self.metrics.peers.set(self.connected as i64);
            }
            NetworkEvent::Listening(addr) => tracing::debug!(%addr, "listening"),
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        tracing::debug!("network stopped");
    }
}
