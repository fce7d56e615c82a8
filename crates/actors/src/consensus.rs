//! The consensus driver over the network: owns a [`Core`], feeds it verified messages, the
//! current time and its timer, and carries out its actions through the network.
//!
//! A validator's libp2p identity is its consensus key, so every authority's peer id follows from
//! the committee. Consensus messages go point to point to each authority (the DAG is all-to-all);
//! gossip is kept for announcements to the wider mesh.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use libp2p::PeerId;
use tokio::sync::mpsc;
use trainmesh_dag::encoding::{decode, encode, MESSAGE_BYTES_MAX};
use trainmesh_dag::{
    Action, AuthorityIndex, CommittedSubDag, Committee, ConsensusStore, Core, DagError,
    TimestampMs, Transaction, Validator,
};

use crate::network::{self, NetworkCommand, NetworkError, NetworkEvent};

/// Transactions waiting to enter the core, in submissions.
pub const SUBMIT_QUEUE_MAX: usize = 1_024;
/// Committed sub-DAGs waiting for the ledger.
pub const COMMIT_QUEUE_MAX: usize = 1_024;

/// Milliseconds since the Unix epoch: the node's clock, read here and passed into the core.
pub fn now() -> TimestampMs {
    TimestampMs(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}

/// Counts of what the driver saw, for logs and metrics.
#[derive(Clone, Debug, Default)]
pub struct ConsensusCounters {
    pub messages_in: u64,
    pub messages_rejected: u64,
    pub messages_out: u64,
    pub commits: u64,
    pub equivocations: u64,
}

/// Maps authorities to peers and back.
#[derive(Clone, Debug)]
pub struct PeerBook {
    peers: Vec<PeerId>,
    authorities: BTreeMap<PeerId, AuthorityIndex>,
}

impl PeerBook {
    pub fn new(committee: &Committee) -> Result<PeerBook, NetworkError> {
        let mut peers = Vec::new();
        let mut authorities = BTreeMap::new();
        for (i, a) in committee.authorities() {
            let p = network::peer_id(&a.public_key.0)?;
            peers.push(p);
            authorities.insert(p, i);
        }
        Ok(PeerBook { peers, authorities })
    }

    pub fn peer(&self, a: AuthorityIndex) -> PeerId {
        self.peers[a.as_usize()]
    }

    pub fn authority(&self, p: &PeerId) -> Option<AuthorityIndex> {
        self.authorities.get(p).copied()
    }
}

/// Runs one validator's consensus until the submit channel closes. Committed sub-DAGs go to
/// `commits` in order; after a restart the committed sequence is replayed from the store first,
/// from `replay_from`.
#[allow(clippy::too_many_arguments)]
pub async fn run<S: ConsensusStore>(
    mut core: Core<S>,
    mut startup: Vec<Action>,
    validator: Validator,
    peers: PeerBook,
    network: mpsc::Sender<NetworkCommand>,
    mut events: mpsc::Receiver<NetworkEvent>,
    mut submit: mpsc::Receiver<Vec<Transaction>>,
    commits: mpsc::Sender<CommittedSubDag>,
    replay_from: u64,
) -> Result<ConsensusCounters, DagError> {
    let me = core.authority();
    let mut counters = ConsensusCounters::default();
    for sub_dag in core.committed_from(replay_from)? {
        if commits.send(sub_dag).await.is_err() {
            return Ok(counters);
        }
    }
    let others: Vec<AuthorityIndex> = core.committee().indices().filter(|a| *a != me).collect();
    let mut actions = std::mem::take(&mut startup);
    loop {
        for action in actions.drain(..) {
            match action {
                Action::Broadcast(message) => {
                    let bytes = Bytes::from(encode(&message));
                    for a in &others {
                        counters.messages_out += 1;
                        let _ = network
                            .send(NetworkCommand::SendTo {
                                peer: peers.peer(*a),
                                bytes: bytes.clone(),
                            })
                            .await;
                    }
                }
                Action::Send { to, message } => {
                    counters.messages_out += 1;
                    let _ = network
                        .send(NetworkCommand::SendTo {
                            peer: peers.peer(to),
                            bytes: Bytes::from(encode(&message)),
                        })
                        .await;
                }
                Action::Commit(sub_dag) => {
                    counters.commits += 1;
                    if commits.send(sub_dag).await.is_err() {
                        return Ok(counters);
                    }
                }
                Action::EquivocationDetected(evidence) => {
                    counters.equivocations += 1;
                    tracing::warn!(author = %evidence.first.author(), round = %evidence.first.round(), "equivocation detected");
                }
                Action::ReproposePayload(transactions) => {
                    if let Err(e) = core.submit_transactions(transactions) {
                        tracing::warn!(error = %e, "could not re-propose collected payload");
                    }
                }
            }
        }
        let deadline = core.next_deadline();
        let wait_ms = deadline.0.saturating_sub(now().0).min(1_000);
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return Ok(counters) };
                if let NetworkEvent::Message { from, bytes } = event {
                    counters.messages_in += 1;
                    let Some(from) = peers.authority(&from) else {
                        counters.messages_rejected += 1;
                        continue;
                    };
                    let verified = decode(&bytes, MESSAGE_BYTES_MAX)
                        .map_err(DagError::from)
                        .and_then(|m| validator.verify_message(m));
                    match verified.and_then(|m| core.handle_message(from, m, now())) {
                        Ok(a) => actions = a,
                        Err(e @ (DagError::Storage { .. } | DagError::CorruptStore { .. })) => return Err(e),
                        Err(e) => {
                            counters.messages_rejected += 1;
                            tracing::debug!(%from, error = %e, "message refused");
                        }
                    }
                }
            }
            txs = submit.recv() => {
                let Some(txs) = txs else { return Ok(counters) };
                if let Err(e) = core.submit_transactions(txs) {
                    tracing::warn!(error = %e, "transactions refused");
                }
                actions = core.tick(now())?;
            }
            _ = tokio::time::sleep(Duration::from_millis(wait_ms.max(1))) => {
                actions = core.tick(now())?;
            }
        }
    }
}
