//! The Coordinator actor: a thin shell around a validator's DAG [`Core`]. It feeds the core
//! verified messages, mempool submissions and the clock (one timer at the core's next deadline),
//! carries out its actions through the network, and hands committed sub-DAGs to the ledger.
//!
//! Two things are kept off this thread: peers' sync requests go to the
//! [`SyncServer`](crate::sync_server::SyncServer), which reads the DAG store beside the core; and
//! only offences (see [`crate::reputation::classify`]) are reported against a peer, never a
//! message that is merely ahead of us. Once the ledger has executed commits, all but the last
//! `retain_commits` of them are pruned from the store.

use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use libp2p::PeerId;
use tokio::sync::mpsc;
use trainmesh_dag::encoding::{decode, MESSAGE_BYTES_MAX};
use trainmesh_dag::{
    Action, AuthorityIndex, BatchWriter, CommittedSubDag, ConsensusMessage, ConsensusStore, Core,
    CoreStatus, DagError, DagResult, KeyPair, SignedHeader, TimestampMs, Transaction, Validator,
    VerifiedMessage,
};

use crate::consensus::{now, PeerBook};
use crate::ledger::{LedgerAdvanced, SharedLedger};
use crate::metrics::NodeMetrics;
use crate::network::NetworkCommand;
use crate::reputation::classify;
use crate::sync_server::ServeCertificates;
use crate::wire::{self, SyncedBatch};
use trainmesh_ledger::admission::{Admission, AdmissionLimits, Admitted, Refusal, Source};
use trainmesh_ledger::beacon::{BeaconSecret, BeaconShare};
use trainmesh_ledger::SignedTransaction;

/// A consensus message from a validator peer (the channel byte already removed).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ConsensusInbound {
    pub from: AuthorityIndex,
    pub bytes: Bytes,
}

/// Transactions for the mempool, from `source`: one answer each, in order (see
/// [`trainmesh_ledger::admission`] for what is refused).
#[derive(Message, Debug)]
#[rtype(result = "Vec<Result<Admitted, Refusal>>")]
pub struct SubmitTransactions(pub Vec<Transaction>, pub Source);

/// What the mempool answers for each transaction of a submission.
pub type Answers = Vec<Result<Admitted, Refusal>>;

/// The first refusal among a submission's answers, as one error.
pub fn first_refusal(answers: &[Result<Admitted, Refusal>]) -> Result<(), Refusal> {
    match answers.iter().find_map(|a| a.as_ref().err()) {
        Some(r) => Err(r.clone()),
        None => Ok(()),
    }
}

/// Mempool admission over the ledger's accounts (see [`trainmesh_ledger::admission`]).
#[derive(Debug)]
pub struct AdmissionGate {
    pub admission: Admission,
    pub ledger: SharedLedger,
    last_sweep_ms: u64,
}

/// How often admission forgets what committed or expired.
const ADMISSION_SWEEP_MS: u64 = 1_000;

impl AdmissionGate {
    pub fn new(ledger: SharedLedger, limits: AdmissionLimits) -> AdmissionGate {
        AdmissionGate {
            admission: Admission::new(limits),
            ledger,
            last_sweep_ms: 0,
        }
    }

    /// Decides on each transaction; what it admits as new is returned for the mempool.
    fn admit(
        &mut self,
        txs: Vec<Transaction>,
        source: Source,
        now_ms: u64,
    ) -> (Vec<([u8; 32], Transaction)>, Answers) {
        let ledger = self.ledger.read().expect("ledger lock");
        if now_ms.saturating_sub(self.last_sweep_ms) >= ADMISSION_SWEEP_MS {
            self.last_sweep_ms = now_ms;
            self.admission
                .sweep(now_ms, |a| ledger.account(a).map(|x| x.nonce).unwrap_or(0));
        }
        let min_fee = ledger
            .read::<trainmesh_contracts::Params>(trainmesh_contracts::keys::PARAMS)
            .ok()
            .flatten()
            .map(|p| p.min_fee);
        let mut admitted = Vec::with_capacity(txs.len());
        let mut answers = Vec::with_capacity(txs.len());
        for bytes in txs {
            let answer = match (SignedTransaction::decode(&bytes), min_fee) {
                (Err(e), _) => Err(Refusal {
                    code: e.code(),
                    message: e.to_string(),
                }),
                (_, None) => Err(Refusal {
                    code: "unavailable",
                    message: "the ledger has no parameters".into(),
                }),
                (Ok(tx), Some(min_fee)) => match ledger.account(&tx.sender()) {
                    Err(e) => Err(Refusal {
                        code: "unavailable",
                        message: e.to_string(),
                    }),
                    Ok(account) => {
                        let answer = self.admission.admit(
                            &tx,
                            bytes.len(),
                            source,
                            &account,
                            min_fee,
                            now_ms,
                        );
                        if answer == Ok(Admitted::New) {
                            admitted.push((tx.hash(), bytes.clone()));
                        }
                        answer
                    }
                },
            };
            answers.push(answer);
        }
        (admitted, answers)
    }
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
/// Executed commits pruned at once (pruning rewrites part of the store: not on every commit).
pub const PRUNE_EVERY_COMMITS: u64 = 32;

/// Sent to the ledger, in commit order.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Committed(pub CommittedSubDag);

/// A committed sub-DAG as the ledger and followers see it: its transactions, and apart from them
/// the beacon shares, each attributed to the author of the certificate that carried it (only an
/// author's own certificates can speak for it). Entries tagged as shares that do not decode are
/// dropped, as are all but the first share of one author for one commit.
pub fn synced_batch(sub_dag: &CommittedSubDag) -> SyncedBatch {
    let mut transactions = Vec::new();
    let mut beacon_shares = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for c in &sub_dag.certificates {
        let author = c.author().0;
        for t in &c.header().payload {
            if !BeaconShare::is_share(t) {
                transactions.push(t.to_vec());
            } else if let Some(share) = BeaconShare::decode(t) {
                if seen.insert((author, share.commit)) {
                    beacon_shares.push((author, t.to_vec()));
                }
            }
        }
    }
    SyncedBatch {
        index: sub_dag.index,
        timestamp_ms: sub_dag.timestamp.0,
        transactions,
        beacon_shares,
    }
}

/// What a Coordinator is wired to.
#[derive(Debug)]
pub struct CoordinatorWiring {
    pub validator: Validator,
    pub peers: PeerBook,
    pub net: mpsc::Sender<NetworkCommand>,
    pub ledger: Recipient<Committed>,
    /// Serves peers' DAG sync requests off this thread; without one (benchmarks on an in-memory
    /// store), the core answers them itself.
    pub sync: Option<Recipient<ServeCertificates>>,
    /// The ledger's next index at start: commits from it on are replayed to the ledger.
    pub replay_from: u64,
    /// Executed commits kept in the store for followers.
    pub retain_commits: u64,
    /// This validator's beacon share: it signs every commit it sees committed (none in the
    /// consensus benchmark, which runs no ledger).
    pub beacon: Option<BeaconSecret>,
    /// Where proof of another validator's equivocation goes: the node files it on the ledger
    /// (`ReportDoubleSign`) from this validator's account.
    pub reports: Option<mpsc::UnboundedSender<trainmesh_dag::EquivocationEvidence>>,
    /// What the mempool takes, checked against the ledger; without it (the consensus benchmark,
    /// which runs no ledger) every transaction under the size limits is taken.
    pub admission: Option<AdmissionGate>,
    /// Byzantine, for demonstrations and tests: this validator's key, with which it signs one
    /// conflicting second header (see [`crate::node::NodeSpec::equivocate`]).
    pub equivocate: Option<KeyPair>,
    pub metrics: NodeMetrics,
}

pub struct Coordinator<S: ConsensusStore + Unpin + 'static> {
    core: Core<S>,
    startup: Vec<Action>,
    validator: Validator,
    peers: PeerBook,
    net: mpsc::Sender<NetworkCommand>,
    ledger: Recipient<Committed>,
    sync: Option<Recipient<ServeCertificates>>,
    replay_from: u64,
    retain_commits: u64,
    beacon: Option<BeaconSecret>,
    reports: Option<mpsc::UnboundedSender<trainmesh_dag::EquivocationEvidence>>,
    admission: Option<AdmissionGate>,
    equivocate: Option<KeyPair>,
    /// Commits below this index are pruned from the store.
    pruned_below: u64,
    timer: Option<SpawnHandle>,
    metrics: NodeMetrics,
    recent_leaders: std::collections::VecDeque<(u64, u32)>,
    /// Group commit: actions of the inputs handled since the last write began, carried out only
    /// once the store holds what they depend on.
    group: Vec<Action>,
    /// Pipelined writes, where the store offers a writer for another thread.
    pipeline: Option<Pipeline>,
}

/// One store write at a time runs on a blocking thread while the core goes on; what arrives
/// meanwhile forms the next group (the write's own duration sets the group's size).
struct Pipeline {
    /// The writer while idle; `None` while a write is under way.
    idle: Option<Box<dyn BatchWriter>>,
    /// A prune asked for during a write: run after it (a prune is a write too).
    prune_after: Option<u64>,
}

impl<S: ConsensusStore + Unpin + 'static> std::fmt::Debug for Coordinator<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("authority", &self.core.authority())
            .finish()
    }
}

impl<S: ConsensusStore + Unpin + 'static> Coordinator<S> {
    pub fn new(core: Core<S>, startup: Vec<Action>, wiring: CoordinatorWiring) -> Self {
        Coordinator {
            core,
            startup,
            validator: wiring.validator,
            peers: wiring.peers,
            net: wiring.net,
            ledger: wiring.ledger,
            sync: wiring.sync,
            replay_from: wiring.replay_from,
            retain_commits: wiring.retain_commits,
            beacon: wiring.beacon,
            reports: wiring.reports,
            admission: wiring.admission,
            equivocate: wiring.equivocate,
            pruned_below: 0,
            timer: None,
            metrics: wiring.metrics,
            recent_leaders: std::collections::VecDeque::new(),
            group: Vec::new(),
            pipeline: None,
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

    /// Group commit: the core runs with deferred flushes, and nothing an input produced leaves
    /// before the store holds what it depends on (persist before send).
    /// - Pipelined (a durable store): one write at a time runs off this thread; the actions of
    ///   the inputs handled during it wait for the next write, which starts as soon as it ends.
    ///   A write of many inputs costs one fsync, and no input waits on a timer.
    /// - Otherwise (an in-memory store) each input's batch is written at once.
    fn carry_out(&mut self, actions: Vec<Action>, ctx: &mut Context<Self>) {
        self.group.extend(actions);
        match &self.pipeline {
            None => {
                if let Err(e) = self.core.flush() {
                    return self.fatal(e, ctx);
                }
                self.metrics.store_writes.inc();
                let actions = std::mem::take(&mut self.group);
                self.execute(actions, ctx);
            }
            Some(p) if p.idle.is_some() => self.start_write(ctx),
            Some(_) => {} // they go with the next write
        }
    }

    /// Takes the core's pending batch and the group's actions, and writes the one before
    /// carrying out the other. Only while the writer is idle.
    fn start_write(&mut self, ctx: &mut Context<Self>) {
        let batch = self.core.take_batch();
        let actions = std::mem::take(&mut self.group);
        if batch.is_empty() {
            // Nothing new to persist, and no write under way: what they depend on is stored.
            return self.execute(actions, ctx);
        }
        let Some(mut writer) = self.pipeline.as_mut().and_then(|p| p.idle.take()) else {
            unreachable!("start_write only while the writer is idle");
        };
        self.metrics.store_writes.inc();
        let write = tokio::task::spawn_blocking(move || {
            let result = writer.write(batch);
            (writer, result)
        });
        ctx.spawn(
            write
                .into_actor(self)
                .map(move |joined, act, ctx| act.written(joined, actions, ctx)),
        );
    }

    fn written(
        &mut self,
        joined: Result<(Box<dyn BatchWriter>, DagResult<()>), tokio::task::JoinError>,
        actions: Vec<Action>,
        ctx: &mut Context<Self>,
    ) {
        let writer = match joined {
            Ok((writer, Ok(()))) => writer,
            Ok((_, Err(e))) => return self.fatal(e, ctx),
            Err(e) => {
                let e = DagError::Storage {
                    reason: format!("the store writer failed: {e}"),
                };
                return self.fatal(e, ctx);
            }
        };
        let prune = self.pipeline.as_mut().and_then(|p| {
            p.idle = Some(writer);
            p.prune_after.take()
        });
        self.execute(actions, ctx);
        if let Some(next_index) = prune {
            self.prune(next_index, ctx);
        }
        if self.pipeline.as_ref().is_some_and(|p| p.idle.is_some()) {
            self.start_write(ctx);
        }
    }

    fn execute(&mut self, actions: Vec<Action>, ctx: &mut Context<Self>) {
        let me = self.core.authority();
        for action in actions {
            match action {
                Action::Broadcast(message) => {
                    let bytes = wire::consensus_frame(&message);
                    for a in self.core.committee().indices().filter(|a| *a != me) {
                        self.send(self.peers.peer(a), bytes.clone());
                    }
                    if let ConsensusMessage::Header(h) = &message {
                        self.equivocate_on(h);
                    }
                }
                Action::Send { to, message } => {
                    self.send(self.peers.peer(to), wire::consensus_frame(&message));
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
                    self.sign_beacon(sub_dag.index);
                    self.ledger.do_send(Committed(sub_dag));
                }
                Action::EquivocationDetected(evidence) => {
                    self.metrics.equivocations.inc();
                    tracing::warn!(author = %evidence.first.author(), round = %evidence.first.round(), "equivocation detected");
                    if let Some(reports) = &self.reports {
                        let _ = reports.send(evidence);
                    }
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

    /// Byzantine: once, from round 3 on, signs a second header for the round of its own `h` (a
    /// later timestamp, so another digest) and sends it to the next validator only.
    fn equivocate_on(&mut self, h: &SignedHeader) {
        if h.author() != self.core.authority() || h.round().0 < 3 {
            return;
        }
        let Some(key) = self.equivocate.take() else {
            return;
        };
        let mut second = h.header().clone();
        second.created_at = TimestampMs(second.created_at.0 + 1);
        let second = SignedHeader::new(second, &key);
        let n = self.core.committee().size() as u32;
        let next = AuthorityIndex((h.author().0 + 1) % n);
        tracing::warn!(round = %h.round(), to = %next, "signing a second header (byzantine)");
        let frame = wire::consensus_frame(&ConsensusMessage::Header(second));
        self.send(self.peers.peer(next), frame);
    }

    /// Proposes this validator's beacon share of a commit, ahead of the mempool: the commit
    /// executes only once enough shares are committed after it.
    fn sign_beacon(&mut self, index: u64) {
        let Some(secret) = &self.beacon else {
            return;
        };
        let share = secret.sign(index).encode();
        if let Err(e) = self.core.submit_own_transaction(Bytes::from(share)) {
            tracing::error!(index, error = %e, "could not propose a beacon share");
        }
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
        if let Err(e) = self.core.set_deferred_flush(true) {
            return self.fatal(e, ctx);
        }
        self.pipeline = self.core.batch_writer().map(|w| Pipeline {
            idle: Some(w),
            prune_after: None,
        });
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
                    // The shares of commits not yet executed may never have been proposed.
                    self.sign_beacon(s.index);
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
        let verified = match (verified, &self.sync) {
            (Ok(VerifiedMessage::SyncRequest(request)), Some(sync)) => {
                let peer = self.peers.peer(msg.from);
                if sync.try_send(ServeCertificates { peer, request }).is_err() {
                    self.metrics.sync_throttled.inc();
                }
                return;
            }
            (v, _) => v,
        };
        match verified.and_then(|m| self.core.handle_message(msg.from, m, now())) {
            Ok(actions) => self.carry_out(actions, ctx),
            Err(e @ (DagError::Storage { .. } | DagError::CorruptStore { .. })) => {
                self.fatal(e, ctx)
            }
            Err(e) => self.refused(msg.from, e),
        }
    }
}

impl<S: ConsensusStore + Unpin + 'static> Coordinator<S> {
    /// A message the core refused: an offence is reported against its sender; anything else
    /// (it is ahead of us, it is a late vote) is only counted.
    fn refused(&mut self, from: AuthorityIndex, e: DagError) {
        self.metrics.messages_rejected.inc();
        tracing::debug!(%from, error = %e, "consensus message refused");
        if let Some(offence) = classify(&e) {
            let _ = self.net.try_send(NetworkCommand::Penalize {
                peer: self.peers.peer(from),
                offence,
                reason: e.to_string(),
            });
        }
    }

    /// The ledger executed commits below `next_index`: prune all but the last
    /// `retain_commits` of them, [`PRUNE_EVERY_COMMITS`] at a time.
    fn prune(&mut self, next_index: u64, ctx: &mut Context<Self>) {
        if let Some(p) = self.pipeline.as_mut().filter(|p| p.idle.is_none()) {
            p.prune_after = Some(p.prune_after.map_or(next_index, |i| i.max(next_index)));
            return;
        }
        let Some(keep_from) = prune_point(next_index, self.retain_commits, self.pruned_below)
        else {
            return;
        };
        // `prune_executed(i)` keeps commits from `i + 1` on.
        match self.core.prune_executed(keep_from - 1) {
            Ok(()) => {
                self.pruned_below = keep_from;
                self.metrics.retained_from.set(keep_from as i64);
            }
            Err(e) => self.fatal(e, ctx),
        }
    }
}

/// Where the store may be pruned to (commits below it go) once the ledger executed everything
/// below `next_index`, keeping `retain` executed commits; `None` until that is at least
/// [`PRUNE_EVERY_COMMITS`] past the last prune at `pruned_below`.
pub fn prune_point(next_index: u64, retain: u64, pruned_below: u64) -> Option<u64> {
    let keep_from = next_index.saturating_sub(retain);
    (keep_from > 0 && keep_from >= pruned_below.saturating_add(PRUNE_EVERY_COMMITS))
        .then_some(keep_from)
}

impl<S: ConsensusStore + Unpin + 'static> Handler<LedgerAdvanced> for Coordinator<S> {
    type Result = ();

    fn handle(&mut self, msg: LedgerAdvanced, ctx: &mut Context<Self>) {
        self.prune(msg.next_index, ctx);
    }
}

impl<S: ConsensusStore + Unpin + 'static> Handler<SubmitTransactions> for Coordinator<S> {
    type Result = MessageResult<SubmitTransactions>;

    fn handle(&mut self, msg: SubmitTransactions, ctx: &mut Context<Self>) -> Self::Result {
        let SubmitTransactions(txs, source) = msg;
        let n = txs.len();
        // Whatever enters this validator's headers speaks for it: only the coordinator itself
        // proposes its beacon shares.
        if txs.iter().any(|t| BeaconShare::is_share(t)) {
            self.metrics.mempool_refused.inc_by(n as u64);
            let refusal = Refusal {
                code: "beacon_share",
                message: "a beacon share is proposed only by its validator".into(),
            };
            return MessageResult(vec![Err(refusal); n]);
        }
        let (admitted, mut answers) = match &mut self.admission {
            Some(gate) => gate.admit(txs, source, now().0),
            None => (
                txs.into_iter().map(|t| ([0; 32], t)).collect(),
                vec![Ok(Admitted::New); n],
            ),
        };
        if !admitted.is_empty() {
            let (hashes, bytes): (Vec<[u8; 32]>, Vec<Transaction>) = admitted.into_iter().unzip();
            if let Err(e) = self.core.submit_transactions(bytes) {
                // Not in the mempool after all: admission forgets them, so a retry is new.
                if let Some(gate) = &mut self.admission {
                    hashes.iter().for_each(|h| gate.admission.forget(h));
                }
                let refusal = Refusal {
                    code: "mempool_full",
                    message: e.to_string(),
                };
                for a in answers.iter_mut().filter(|a| **a == Ok(Admitted::New)) {
                    *a = Err(refusal.clone());
                }
            } else {
                self.tick(ctx);
            }
        }
        let refused = answers.iter().filter(|a| a.is_err()).count() as u64;
        self.metrics.mempool_refused.inc_by(refused);
        self.metrics.mempool_accepted.inc_by(n as u64 - refused);
        MessageResult(answers)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc as std_mpsc, Arc, Mutex};
    use std::time::Instant;
    use trainmesh_dag::encoding::encode;
    use trainmesh_dag::store::{CommitRecord, VoteRecord};
    use trainmesh_dag::test_dag::{DagBuilder, TestCommittee};
    use trainmesh_dag::{
        Certificate, ConsensusMessage, CoreConfig, Digest, MemStore, Round, SignedHeader,
        StoreBatch,
    };

    /// A store whose batch writer waits for the test's word before each write: `Ok` writes
    /// the batch, `Err` fails it as a broken disk would.
    struct GatedStore {
        inner: Arc<Mutex<MemStore>>,
        gate: Arc<Mutex<std_mpsc::Receiver<Result<(), ()>>>>,
        started: Arc<AtomicUsize>,
    }

    struct GatedWriter {
        inner: Arc<Mutex<MemStore>>,
        gate: Arc<Mutex<std_mpsc::Receiver<Result<(), ()>>>>,
        started: Arc<AtomicUsize>,
    }

    impl BatchWriter for GatedWriter {
        fn write(&mut self, batch: StoreBatch) -> DagResult<()> {
            self.started.fetch_add(1, Ordering::SeqCst);
            match self.gate.lock().unwrap().recv() {
                Ok(Ok(())) => self.inner.lock().unwrap().write(batch),
                _ => Err(DagError::Storage {
                    reason: "the disk failed".into(),
                }),
            }
        }
    }

    impl ConsensusStore for GatedStore {
        fn write(&mut self, batch: StoreBatch) -> DagResult<()> {
            self.inner.lock().unwrap().write(batch)
        }
        fn batch_writer(&self) -> Option<Box<dyn BatchWriter>> {
            Some(Box::new(GatedWriter {
                inner: self.inner.clone(),
                gate: self.gate.clone(),
                started: self.started.clone(),
            }))
        }
        fn own_header(&self) -> DagResult<Option<SignedHeader>> {
            self.inner.lock().unwrap().own_header()
        }
        fn votes(&self) -> DagResult<BTreeMap<AuthorityIndex, VoteRecord>> {
            self.inner.lock().unwrap().votes()
        }
        fn certificates_from(&self, round: Round) -> DagResult<Vec<Certificate>> {
            self.inner.lock().unwrap().certificates_from(round)
        }
        fn certificate(&self, digest: &Digest) -> DagResult<Option<Certificate>> {
            self.inner.lock().unwrap().certificate(digest)
        }
        fn certificates_page(
            &self,
            round: Round,
            author: AuthorityIndex,
            last_round: Round,
            max: usize,
        ) -> DagResult<Vec<Certificate>> {
            self.inner
                .lock()
                .unwrap()
                .certificates_page(round, author, last_round, max)
        }
        fn commits_from(&self, index: u64) -> DagResult<Vec<CommitRecord>> {
            self.inner.lock().unwrap().commits_from(index)
        }
        fn commit(&self, index: u64) -> DagResult<Option<CommitRecord>> {
            self.inner.lock().unwrap().commit(index)
        }
        fn last_commit(&self) -> DagResult<Option<CommitRecord>> {
            self.inner.lock().unwrap().last_commit()
        }
        fn prune(&mut self, commits: u64, round: Round) -> DagResult<()> {
            self.inner.lock().unwrap().prune(commits, round)
        }
    }

    struct Discard;
    impl Actor for Discard {
        type Context = Context<Self>;
    }
    impl Handler<Committed> for Discard {
        type Result = ();
        fn handle(&mut self, _: Committed, _: &mut Context<Self>) {}
    }

    struct Harness {
        tc: TestCommittee,
        coordinator: Addr<Coordinator<GatedStore>>,
        net: mpsc::Receiver<NetworkCommand>,
        gate: std_mpsc::Sender<Result<(), ()>>,
        started: Arc<AtomicUsize>,
        stored: Arc<Mutex<MemStore>>,
        reports: mpsc::UnboundedReceiver<trainmesh_dag::EquivocationEvidence>,
    }

    /// Validator 0 with a gated store, inside a running actix system; its own proposals and
    /// timeouts are far off, so only what the test sends makes it act.
    fn harness() -> Harness {
        let tc = TestCommittee::new(4);
        let config = CoreConfig {
            max_header_delay_ms: u64::MAX / 4,
            leader_timeout_ms: u64::MAX / 4,
            resend_interval_ms: u64::MAX / 4,
            ..CoreConfig::default()
        };
        let (gate, gate_rx) = std_mpsc::channel();
        let stored = Arc::new(Mutex::new(MemStore::new()));
        let started = Arc::new(AtomicUsize::new(0));
        let store = GatedStore {
            inner: stored.clone(),
            gate: Arc::new(Mutex::new(gate_rx)),
            started: started.clone(),
        };
        let me = AuthorityIndex(0);
        let (core, startup) = Core::new(
            config.clone(),
            tc.committee().clone(),
            me,
            tc.key_copy(me),
            store,
            now(),
        )
        .unwrap();
        let (net_tx, net) = mpsc::channel(64);
        let (reports, reports_rx) = mpsc::unbounded_channel();
        let wiring = CoordinatorWiring {
            validator: Validator::new(tc.committee().clone(), config),
            peers: PeerBook::new(tc.committee()).unwrap(),
            net: net_tx,
            ledger: Discard.start().recipient(),
            sync: None,
            replay_from: 0,
            retain_commits: u64::MAX,
            beacon: None,
            reports: Some(reports),
            admission: None,
            equivocate: None,
            metrics: NodeMetrics::new(),
        };
        let coordinator = Coordinator::new(core, startup, wiring).start();
        Harness {
            tc,
            coordinator,
            net,
            gate,
            started,
            stored,
            reports: reports_rx,
        }
    }

    impl Harness {
        /// Round-1 headers of `authors`, delivered; returns once the coordinator handled them.
        async fn deliver_headers(&self, authors: &[u32]) -> Vec<SignedHeader> {
            let dag = DagBuilder::new(&self.tc);
            let genesis: Vec<_> = self
                .tc
                .committee()
                .indices()
                .map(|a| dag.certificate(a, Round(0)).reference())
                .collect();
            let mut headers = Vec::new();
            for &a in authors {
                let h = self
                    .tc
                    .header(AuthorityIndex(a), Round(1), genesis.clone(), vec![]);
                self.coordinator.do_send(ConsensusInbound {
                    from: AuthorityIndex(a),
                    bytes: Bytes::from(encode(&ConsensusMessage::Header(h.clone()))),
                });
                headers.push(h);
            }
            self.coordinator.send(GetStatus).await.unwrap();
            headers
        }

        async fn writes_started(&self, n: usize) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.started.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "write {n} never started");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }

        /// The next message sent: the peer it went to and the vote it carries.
        async fn next_vote(&mut self) -> (PeerId, trainmesh_dag::Vote) {
            let command = tokio::time::timeout(Duration::from_secs(10), self.net.recv())
                .await
                .expect("a message within 10 s")
                .expect("the network channel is open");
            let NetworkCommand::SendTo { peer, bytes } = command else {
                panic!("expected a direct message, got {command:?}");
            };
            let (channel, body) = wire::split(&bytes).unwrap();
            assert_eq!(channel, wire::CHANNEL_CONSENSUS);
            match decode(body, MESSAGE_BYTES_MAX).unwrap() {
                ConsensusMessage::Vote(v) => (peer, v),
                other => panic!("expected a vote, got {other:?}"),
            }
        }
    }

    #[actix_rt::test]
    async fn no_vote_leaves_before_its_write_and_what_waits_shares_one_write() {
        let mut h = harness();
        let headers = h.deliver_headers(&[1]).await;
        h.writes_started(1).await;
        // Two more headers while the first vote's write is under way.
        h.deliver_headers(&[2, 3]).await;
        assert!(h.net.try_recv().is_err(), "nothing leaves before its write");
        assert!(h.stored.lock().unwrap().votes().unwrap().is_empty());

        h.gate.send(Ok(())).unwrap();
        let (peer, vote) = h.next_vote().await;
        assert_eq!(
            peer,
            PeerBook::new(h.tc.committee())
                .unwrap()
                .peer(AuthorityIndex(1))
        );
        assert_eq!(vote.header_digest, headers[0].digest());
        // The other two votes wait for the second write, which holds both.
        h.writes_started(2).await;
        assert!(h.net.try_recv().is_err());
        assert_eq!(h.stored.lock().unwrap().votes().unwrap().len(), 1);

        h.gate.send(Ok(())).unwrap();
        let mut to = vec![h.next_vote().await.0, h.next_vote().await.0];
        to.sort();
        let book = PeerBook::new(h.tc.committee()).unwrap();
        let mut want = vec![book.peer(AuthorityIndex(2)), book.peer(AuthorityIndex(3))];
        want.sort();
        assert_eq!(to, want);
        h.coordinator.send(GetStatus).await.unwrap();
        assert_eq!(
            h.started.load(Ordering::SeqCst),
            2,
            "three inputs, two writes"
        );
        assert_eq!(h.stored.lock().unwrap().votes().unwrap().len(), 3);
    }

    /// Validator 1 signs two headers for round 1: validator 0's coordinator hands the proof to
    /// the node, which files it on the ledger (`ReportDoubleSign`, tested there), once it holds
    /// it durably.
    #[actix_rt::test]
    async fn an_equivocation_is_handed_over_for_reporting() {
        let mut h = harness();
        let dag = DagBuilder::new(&h.tc);
        let genesis: Vec<_> =
            h.tc.committee()
                .indices()
                .map(|a| dag.certificate(a, Round(0)).reference())
                .collect();
        for payload in [1u8, 2] {
            let header = h.tc.header(
                AuthorityIndex(1),
                Round(1),
                genesis.clone(),
                vec![Bytes::from(vec![payload])],
            );
            h.coordinator.do_send(ConsensusInbound {
                from: AuthorityIndex(1),
                bytes: Bytes::from(encode(&ConsensusMessage::Header(header))),
            });
        }
        h.coordinator.send(GetStatus).await.unwrap();
        h.writes_started(1).await;
        h.gate.send(Ok(())).unwrap();
        let evidence = tokio::time::timeout(Duration::from_secs(10), h.reports.recv())
            .await
            .expect("a report within 10 s")
            .expect("the report channel is open");
        assert_eq!(evidence.first.author(), AuthorityIndex(1));
        assert!(evidence.verify(h.tc.committee()));
    }

    #[test]
    fn a_failed_write_stops_the_validator_and_nothing_of_it_leaves() {
        let system = System::new();
        let mut h = system.block_on(async {
            let h = harness();
            h.deliver_headers(&[1, 2]).await;
            h.writes_started(1).await;
            h
        });
        h.gate.send(Err(())).unwrap();
        assert_eq!(
            system.run_with_code().unwrap(),
            70,
            "storage failure exit code"
        );
        assert!(h.net.try_recv().is_err(), "no vote left");
        assert!(h.stored.lock().unwrap().votes().unwrap().is_empty());
    }

    #[test]
    fn executed_commits_are_pruned_in_steps_keeping_the_retention() {
        // Nothing executed beyond the retention: nothing to prune.
        assert_eq!(prune_point(0, 100, 0), None);
        assert_eq!(prune_point(100, 100, 0), None);
        assert_eq!(prune_point(100 + PRUNE_EVERY_COMMITS - 1, 100, 0), None);
        // One step past it: commits below 32 go, the last 100 executed stay.
        assert_eq!(
            prune_point(100 + PRUNE_EVERY_COMMITS, 100, 0),
            Some(PRUNE_EVERY_COMMITS)
        );
        // Then again one step later, not on every commit.
        let p = PRUNE_EVERY_COMMITS;
        assert_eq!(prune_point(100 + p + 1, 100, p), None);
        assert_eq!(prune_point(100 + 2 * p, 100, p), Some(2 * p));
        // A retention larger than the history keeps everything.
        assert_eq!(prune_point(5_000, u64::MAX, 0), None);
    }
}
