//! The Coordinator actor: a thin shell around a validator's DAG [`Core`]. It feeds the core
//! verified messages, mempool submissions and the clock (one timer at the core's next deadline),
//! carries out its actions through the network, hands committed sub-DAGs to the ledger, and
//! serves committed batches to followers.

use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use libp2p::PeerId;
use tokio::sync::mpsc;
use trainmesh_dag::encoding::{decode, encode, MESSAGE_BYTES_MAX};
use trainmesh_dag::{
    Action, AuthorityIndex, CommittedSubDag, ConsensusStore, Core, CoreStatus, DagError,
    Transaction, Validator,
};

use crate::consensus::{now, PeerBook};
use crate::metrics::NodeMetrics;
use crate::network::NetworkCommand;
use crate::wire::{self, MeshMessage, SyncedBatch, SYNC_BATCHES_MAX, SYNC_BYTES_MAX};

/// A consensus message from a validator peer (the channel byte already removed).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ConsensusInbound {
    pub from: AuthorityIndex,
    pub bytes: Bytes,
}

/// Transactions for the mempool. Refused (with the reason) when the mempool is full.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), String>")]
pub struct SubmitTransactions(pub Vec<Transaction>);

/// A follower asks for committed batches.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ServeSync {
    pub peer: PeerId,
    pub from: u64,
    pub max: u32,
}

#[derive(Message, Debug)]
#[rtype(result = "CoreStatus")]
pub struct GetStatus;

/// The recent DAG as this validator holds it: for each of the last `rounds` rounds, the authors
/// whose certificates it has and the committed leader, if any.
#[derive(Message, Debug)]
#[rtype(result = "Vec<DagRound>")]
pub struct GetDag {
    pub rounds: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DagRound {
    pub round: u64,
    pub authors: Vec<u32>,
    pub committed_leader: Option<u32>,
}

/// Committed leaders remembered for the DAG view.
const RECENT_LEADERS: usize = 512;

/// Sent to the ledger, in commit order.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Committed(pub CommittedSubDag);

/// A committed sub-DAG as the ledger and followers see it.
pub fn synced_batch(sub_dag: &CommittedSubDag) -> SyncedBatch {
    SyncedBatch {
        index: sub_dag.index,
        timestamp_ms: sub_dag.timestamp.0,
        seed: sub_dag.seed(),
        transactions: sub_dag.transactions().map(|t| t.to_vec()).collect(),
    }
}

pub struct Coordinator<S: ConsensusStore + Unpin + 'static> {
    core: Core<S>,
    startup: Vec<Action>,
    validator: Validator,
    peers: PeerBook,
    net: mpsc::Sender<NetworkCommand>,
    ledger: Recipient<Committed>,
    replay_from: u64,
    timer: Option<SpawnHandle>,
    metrics: NodeMetrics,
    recent_leaders: std::collections::VecDeque<(u64, u32)>,
}

impl<S: ConsensusStore + Unpin + 'static> std::fmt::Debug for Coordinator<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("authority", &self.core.authority())
            .finish()
    }
}

impl<S: ConsensusStore + Unpin + 'static> Coordinator<S> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        core: Core<S>,
        startup: Vec<Action>,
        validator: Validator,
        peers: PeerBook,
        net: mpsc::Sender<NetworkCommand>,
        ledger: Recipient<Committed>,
        replay_from: u64,
        metrics: NodeMetrics,
    ) -> Self {
        Coordinator {
            core,
            startup,
            validator,
            peers,
            net,
            ledger,
            replay_from,
            timer: None,
            metrics,
            recent_leaders: std::collections::VecDeque::new(),
        }
    }

    fn send(&self, peer: PeerId, bytes: Bytes) {
        self.metrics.bytes_out.inc_by(bytes.len() as u64);
        if self
            .net
            .try_send(NetworkCommand::SendTo { peer, bytes })
            .is_err()
        {
            // Consensus tolerates a dropped message (resends, sync); count it.
            self.metrics.messages_dropped.inc();
        }
    }

    fn carry_out(&mut self, actions: Vec<Action>, ctx: &mut Context<Self>) {
        let me = self.core.authority();
        for action in actions {
            match action {
                Action::Broadcast(message) => {
                    let bytes = wire::consensus_frame(encode(&message));
                    for a in self.core.committee().indices().filter(|a| *a != me) {
                        self.send(self.peers.peer(a), bytes.clone());
                    }
                }
                Action::Send { to, message } => {
                    self.send(self.peers.peer(to), wire::consensus_frame(encode(&message)));
                }
                Action::Commit(sub_dag) => {
                    self.metrics.commits.inc();
                    if self.recent_leaders.len() >= RECENT_LEADERS {
                        self.recent_leaders.pop_front();
                    }
                    self.recent_leaders
                        .push_back((sub_dag.leader.round.0, sub_dag.leader.author.0));
                    self.metrics
                        .committed_round
                        .set(sub_dag.leader.round.0 as i64);
                    let lag = now().0.saturating_sub(sub_dag.timestamp.0);
                    self.metrics.commit_latency.observe(lag as f64 / 1_000.0);
                    self.ledger.do_send(Committed(sub_dag));
                }
                Action::EquivocationDetected(evidence) => {
                    self.metrics.equivocations.inc();
                    tracing::warn!(author = %evidence.first.author(), round = %evidence.first.round(), "equivocation detected");
                }
                Action::ReproposePayload(transactions) => {
                    if let Err(e) = self.core.submit_transactions(transactions) {
                        tracing::warn!(error = %e, "could not re-propose collected payload");
                    }
                }
            }
        }
        let status = self.core.status();
        self.metrics.round.set(status.proposed_round.0 as i64);
        self.metrics.mempool_bytes.set(status.mempool_bytes as i64);
        self.schedule(ctx);
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        let wait = self
            .core
            .next_deadline()
            .0
            .saturating_sub(now().0)
            .clamp(1, 1_000);
        self.timer = Some(ctx.run_later(Duration::from_millis(wait), |act, ctx| {
            act.timer = None;
            act.tick(ctx);
        }));
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        match self.core.tick(now()) {
            Ok(actions) => self.carry_out(actions, ctx),
            Err(e) => self.fatal(e, ctx),
        }
    }

    fn fatal(&mut self, e: DagError, ctx: &mut Context<Self>) {
        tracing::error!(error = %e, "consensus stopped: storage failed");
        ctx.stop();
        System::current().stop_with_code(70);
    }
}

impl<S: ConsensusStore + Unpin + 'static> Actor for Coordinator<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4_096);
        match self.core.committed_from(self.replay_from) {
            Ok(replay) => {
                if !replay.is_empty() {
                    tracing::info!(
                        from = self.replay_from,
                        count = replay.len(),
                        "replaying committed sub-DAGs to the ledger"
                    );
                }
                for s in replay {
                    self.ledger.do_send(Committed(s));
                }
            }
            Err(e) => return self.fatal(e, ctx),
        }
        let startup = std::mem::take(&mut self.startup);
        self.carry_out(startup, ctx);
    }
}

impl<S: ConsensusStore + Unpin + 'static> Handler<ConsensusInbound> for Coordinator<S> {
    type Result = ();

    fn handle(&mut self, msg: ConsensusInbound, ctx: &mut Context<Self>) {
        self.metrics.messages_in.inc();
        let verified = decode(&msg.bytes, MESSAGE_BYTES_MAX)
            .map_err(DagError::from)
            .and_then(|m| self.validator.verify_message(m));
        match verified.and_then(|m| self.core.handle_message(msg.from, m, now())) {
            Ok(actions) => self.carry_out(actions, ctx),
            Err(e @ (DagError::Storage { .. } | DagError::CorruptStore { .. })) => {
                self.fatal(e, ctx)
            }
            Err(e) => {
                self.metrics.messages_rejected.inc();
                tracing::debug!(from = %msg.from, error = %e, "consensus message refused");
                let _ = self.net.try_send(NetworkCommand::Penalize {
                    peer: self.peers.peer(msg.from),
                    reason: e.to_string(),
                });
            }
        }
    }
}

impl<S: ConsensusStore + Unpin + 'static> Handler<SubmitTransactions> for Coordinator<S> {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: SubmitTransactions, ctx: &mut Context<Self>) -> Result<(), String> {
        let n = msg.0.len() as u64;
        match self.core.submit_transactions(msg.0) {
            Ok(()) => {
                self.metrics.mempool_accepted.inc_by(n);
                self.tick(ctx);
                Ok(())
            }
            Err(e) => {
                self.metrics.mempool_refused.inc_by(n);
                Err(e.to_string())
            }
        }
    }
}

impl<S: ConsensusStore + Unpin + 'static> Handler<ServeSync> for Coordinator<S> {
    type Result = ();

    fn handle(&mut self, msg: ServeSync, _: &mut Context<Self>) {
        let max = msg.max.clamp(1, SYNC_BATCHES_MAX) as usize;
        let batches = match self.core.committed_from(msg.from) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serve sync");
                return;
            }
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for s in batches.iter().take(max) {
            let b = synced_batch(s);
            bytes += b.encoded_len();
            if bytes > SYNC_BYTES_MAX && !out.is_empty() {
                break;
            }
            out.push(b);
        }
        self.send(
            msg.peer,
            MeshMessage::SyncResponse { batches: out }.encode(),
        );
    }
}

impl<S: ConsensusStore + Unpin + 'static> Handler<GetStatus> for Coordinator<S> {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.status())
    }
}

impl<S: ConsensusStore + Unpin + 'static> Handler<GetDag> for Coordinator<S> {
    type Result = MessageResult<GetDag>;

    fn handle(&mut self, msg: GetDag, _: &mut Context<Self>) -> Self::Result {
        let top = self.core.status().highest_round.0;
        let from = top.saturating_sub(msg.rounds.clamp(1, 200));
        let rounds = (from..=top)
            .map(|r| {
                let mut authors: Vec<u32> = self
                    .core
                    .round_certificates(trainmesh_dag::Round(r))
                    .iter()
                    .map(|c| c.author.0)
                    .collect();
                authors.sort_unstable();
                DagRound {
                    round: r,
                    authors,
                    committed_leader: self
                        .recent_leaders
                        .iter()
                        .find(|(round, _)| *round == r)
                        .map(|(_, a)| *a),
                }
            })
            .collect();
        MessageResult(rounds)
    }
}
