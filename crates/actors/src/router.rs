//! The Router actor: reads the node's inbound queue and hands each message to the actor it is
//! for. Malformed input is refused here, with the peer penalized, before any actor sees it.
//!
//! Every hand-off is a `try_send` into a bounded mailbox. When the consensus actor, the mempool
//! or the ledger is full, the message goes back to the head of the inbound queue and the router
//! waits ([`BUSY_RETRY`]) before offering it again: the queue then fills, and it is the peer over
//! its share there that loses messages. A sync request for a busy sync server is dropped instead
//! (the requester asks again).

use std::time::Duration;

use actix::dev::SendError;
use actix::prelude::*;
use bytes::Bytes;
use libp2p::PeerId;
use tokio::sync::mpsc;
use trainmesh_contracts::{keys, Address};
use trainmesh_ledger::transaction::SignedTransaction;

use crate::blobs::{Audience, BlobStore, Fetcher};
use crate::consensus::PeerBook;
use crate::coordinator::{ConsensusInbound, SubmitTransactions};
use crate::inbound::{Closed, InboundReceiver};
use crate::ledger::{SharedLedger, SyncResponseFrom};
use crate::metrics::NodeMetrics;
use crate::network::{NetworkCommand, NetworkEvent};
use crate::reputation::Offence;
use crate::sync_server::ServeSync;
use crate::wire::{self, MeshMessage, CHANNEL_CONSENSUS};
use trainmesh_ledger::admission::Source;

/// Messages routed in one turn before the router yields to its other work.
const ROUTE_BATCH: usize = 256;
/// How long a message for a busy actor waits before it is offered again.
pub const BUSY_RETRY: Duration = Duration::from_millis(5);

/// The actor a message is for is full: the message goes back to the inbound queue.
struct Busy;

/// Offers `msg` to `to`'s bounded mailbox; a closed mailbox drops it (the node is stopping).
fn offer<M>(to: &Recipient<M>, msg: M) -> Result<(), Busy>
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    match to.try_send(msg) {
        Ok(()) | Err(SendError::Closed(_)) => Ok(()),
        Err(SendError::Full(_)) => Err(Busy),
    }
}

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
    pub inbound: InboundReceiver,
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
        inbound: InboundReceiver,
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
            inbound,
            metrics,
            connected: 0,
        }
    }

    fn penalize(&self, peer: PeerId, offence: Offence, reason: String) {
        tracing::debug!(%peer, ?offence, %reason, "refused a message");
        let _ = self.net.try_send(NetworkCommand::Penalize {
            peer,
            offence,
            reason,
        });
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

    fn on_mesh(&mut self, from: PeerId, m: MeshMessage) -> Result<(), Busy> {
        match m {
            MeshMessage::Transactions(txs) => self.on_transactions(from, txs),
            MeshMessage::SyncRequest { from: index, max } => {
                if let Some(v) = &self.validator {
                    let request = ServeSync {
                        peer: from,
                        from: index,
                        max,
                    };
                    if v.sync.try_send(request).is_err() {
                        self.metrics.sync_throttled.inc();
                    }
                }
                Ok(())
            }
            MeshMessage::SyncResponse { batches } => match self.peers.authority(&from) {
                Some(a) => offer(&self.ledger_sync, SyncResponseFrom { from: a, batches }),
                None => {
                    let reason = "sync response from a non-validator".into();
                    self.penalize(from, Offence::NotAValidator, reason);
                    Ok(())
                }
            },
            MeshMessage::BlobRequest { kind, hash } => {
                let evaluator =
                    matches!(self.blobs.get(kind, &hash), Some((_, Audience::Evaluators)))
                        && self.is_evaluator(&from);
                let bytes = self.blobs.serve(kind, &hash, evaluator);
                self.reply(from, MeshMessage::BlobResponse { kind, hash, bytes });
                Ok(())
            }
            MeshMessage::BlobResponse { kind, hash, bytes } => {
                if let Some(bytes) = bytes {
                    if !self.fetcher.deliver(kind, hash, bytes) {
                        let reason = format!("{kind:?} does not match its hash");
                        self.penalize(from, Offence::WrongBlob, reason);
                    }
                }
                Ok(())
            }
        }
    }

    /// Checks signatures and chain id here: junk never reaches the mempool. One penalty per
    /// message with bad transactions, once the good ones were taken.
    fn on_transactions(&mut self, from: PeerId, txs: Vec<Vec<u8>>) -> Result<(), Busy> {
        let Some(v) = &self.validator else {
            return Ok(());
        };
        let mut good = Vec::with_capacity(txs.len());
        let mut refused = None;
        for t in txs {
            match SignedTransaction::decode(&t).and_then(|s| s.verify(&self.chain_id)) {
                Ok(()) => good.push(Bytes::from(t)),
                Err(e) => refused = Some(e),
            }
        }
        if !good.is_empty() {
            let source = Source::Peer(*blake3::hash(&from.to_bytes()).as_bytes());
            offer(&v.mempool, SubmitTransactions(good, source))?;
        }
        if let Some(e) = refused {
            let reason = format!("transaction refused: {e}");
            self.penalize(from, Offence::InvalidTransaction, reason);
        }
        Ok(())
    }

    fn on_message(&mut self, from: PeerId, bytes: &Bytes) -> Result<(), Busy> {
        let (channel, body) = match wire::split(bytes) {
            Ok(x) => x,
            Err(e) => {
                self.penalize(from, Offence::Malformed, e.to_string());
                return Ok(());
            }
        };
        if channel == CHANNEL_CONSENSUS {
            return match (&self.validator, self.peers.authority(&from)) {
                (Some(v), Some(a)) => offer(
                    &v.consensus,
                    ConsensusInbound {
                        from: a,
                        bytes: bytes.slice(1..),
                    },
                ),
                (_, None) => {
                    let reason = "consensus message from a non-validator".into();
                    self.penalize(from, Offence::NotAValidator, reason);
                    Ok(())
                }
                (None, Some(_)) => Ok(()),
            };
        }
        match MeshMessage::decode(body) {
            Ok(m) => self.on_mesh(from, m),
            Err(e) => {
                self.penalize(from, Offence::Malformed, e.to_string());
                Ok(())
            }
        }
    }

    fn on_event(&mut self, event: NetworkEvent) -> Result<(), Busy> {
        match event {
            NetworkEvent::Message { from, bytes } => {
                if self.on_message(from, &bytes).is_err() {
                    self.inbound.put_back(from, bytes);
                    return Err(Busy);
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
        Ok(())
    }

    /// Routes what is queued, a batch at a time; then waits for more, or for a busy actor.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        for _ in 0..ROUTE_BATCH {
            let event = match self.inbound.try_recv() {
                Ok(Some(e)) => e,
                Ok(None) => {
                    let ready = self.inbound.ready().into_actor(self);
                    ctx.spawn(ready.map(|_, act, ctx| act.pump(ctx)));
                    return;
                }
                Err(Closed) => {
                    tracing::debug!("network stopped");
                    return;
                }
            };
            if self.on_event(event).is_err() {
                self.metrics.inbound_paused.inc();
                ctx.run_later(BUSY_RETRY, |act, ctx| act.pump(ctx));
                return;
            }
        }
        self.metrics
            .inbound_bytes
            .set(self.inbound.queued_bytes() as i64);
        ctx.run_later(Duration::ZERO, |act, ctx| act.pump(ctx));
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.pump(ctx);
    }
}
