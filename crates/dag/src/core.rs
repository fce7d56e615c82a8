//! The consensus core: Narwhal's certified DAG with Bullshark's commit rule, as one synchronous
//! object.
//!
//! Verified messages, timer expiries and the current time go in; [`Action`]s come out: messages to
//! send, certificates to fetch, committed sub-DAGs, evidence of equivocation, and payload to
//! propose again. The core reads no clock and no randomness; it persists through a
//! [`ConsensusStore`] before it emits anything that depends on what it persisted.
//!
//! Persistence comes in two modes:
//! - immediate (the default): every `handle_*` and [`Core::tick`] writes what it produced as one
//!   [`StoreBatch`] before returning its actions, which the driver may carry out at once;
//! - deferred ([`Core::set_deferred_flush`]`(true)`), for group commit: those calls only add to
//!   one pending batch and write nothing. The driver MUST call [`Core::flush`], and see it
//!   succeed, before it carries out ANY action returned since the previous flush — sending a
//!   message, reporting a commit, or [`Core::prune_executed`]. It may handle many messages,
//!   flush once, then carry out all their actions: one durable write for the lot. If `flush`
//!   fails, or the process dies before it, none of those actions may leave; a restart then
//!   resumes from the last flushed state as if the unflushed messages never came. After a failed
//!   flush the in-memory core is ahead of its store: drop it and restart from the store.
//! - pipelined (deferred, and the driver takes the batches): instead of [`Core::flush`], the
//!   driver calls [`Core::take_batch`] and writes the batch on another thread through the store's
//!   [`Core::batch_writer`], handling more messages meanwhile. The actions returned before a take
//!   may be carried out once that batch, and every batch taken before it, is written; batches
//!   are written one at a time, in the order taken. [`Core::prune_executed`] is a write too: it
//!   may run only while no taken batch is unwritten. A failed write is a failed flush.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::committee::{Committee, StakeAggregator};
use crate::config::CoreConfig;
use crate::crypto::KeyPair;
use crate::dag_state::DagState;
use crate::error::{DagError, DagResult};
use crate::linearizer::Linearizer;
use crate::messages::{
    Certificate, CertificateRef, CertificateSummary, CommittedSubDag, ConsensusMessage,
    EquivocationEvidence, SignedHeader, Vote, VoteSignature,
};
use crate::store::{BatchWriter, ConsensusStore, StoreBatch, VoteRecord};
use crate::synchronizer::{Released, Request, Synchronizer};
use crate::types::{AuthorityIndex, Digest, Round, TimestampMs, Transaction};
use crate::validation::{Verified, VerifiedMessage};

/// What the core asks its driver to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send to every other authority.
    Broadcast(ConsensusMessage),
    /// Send to one authority.
    Send {
        to: AuthorityIndex,
        message: ConsensusMessage,
    },
    /// A leader and its causal history are committed: deliver them in this order.
    Commit(CommittedSubDag),
    /// An authority signed two headers for one round.
    EquivocationDetected(EquivocationEvidence),
    /// Our own header was collected without being committed: its transactions should be proposed
    /// again.
    ReproposePayload(Vec<Transaction>),
}

/// A snapshot of the core's progress, for logs, metrics and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreStatus {
    pub proposed_round: Round,
    pub highest_quorum_round: Round,
    pub highest_round: Round,
    pub last_committed_round: Round,
    pub next_commit_index: u64,
    pub gc_round: Round,
    pub pending_certificates: usize,
    pub pending_headers: usize,
    pub missing_certificates: usize,
    pub mempool_bytes: usize,
}

struct OwnHeader {
    header: Arc<SignedHeader>,
    votes: StakeAggregator,
    signatures: Vec<VoteSignature>,
    certified: bool,
}

/// The Narwhal/Bullshark state machine of one authority: a façade that routes between its rooms
/// — the DAG ([`DagState`]), the synchronizer ([`Synchronizer`]), the commit rule
/// ([`Linearizer`]) — and keeps the proposer's and the voter's few fields itself.
pub struct Core<S: ConsensusStore> {
    config: CoreConfig,
    committee: Committee,
    me: AuthorityIndex,
    key: KeyPair,
    store: S,
    batch: StoreBatch,
    /// Deferred mode: calls add to `batch`; only [`Core::flush`] writes it.
    deferred_flush: bool,

    dag: DagState,
    sync: Synchronizer,
    linearizer: Linearizer,

    // Proposer.
    own: Option<OwnHeader>,
    own_headers: BTreeMap<Round, Arc<SignedHeader>>,
    proposed_round: Round,
    last_proposal_at: TimestampMs,
    mempool: VecDeque<Transaction>,
    mempool_bytes: usize,
    last_progress_at: TimestampMs,
    last_resend_at: TimestampMs,

    // Voter.
    last_votes: BTreeMap<AuthorityIndex, VoteRecord>,
    /// Headers seen (first per slot), for compact certificates and equivocation evidence.
    headers: BTreeMap<Digest, Arc<SignedHeader>>,
    header_slots: BTreeMap<(Round, AuthorityIndex), Digest>,
    reported_equivocations: BTreeSet<(Round, AuthorityIndex)>,
}

mod proposer;
mod recovery;
mod serving;

impl<S: ConsensusStore> std::fmt::Debug for Core<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("me", &self.me)
            .field("status", &self.status())
            .finish()
    }
}

impl<S: ConsensusStore> Core<S> {
    /// Starts a core from its store (empty on first start). Recovers the DAG above the garbage
    /// collection round, our last header and votes, and the commit position; returns the actions
    /// to resume with (our uncertified header is sent again, byte for byte).
    pub fn new(
        config: CoreConfig,
        committee: Committee,
        me: AuthorityIndex,
        key: KeyPair,
        store: S,
        now: TimestampMs,
    ) -> DagResult<(Core<S>, Vec<Action>)> {
        if committee.authority(me).map(|a| a.public_key) != Some(key.public()) {
            return Err(DagError::InvalidCommittee {
                reason: format!("authority {me} does not hold this key"),
            });
        }
        let mut core = Core {
            dag: DagState::new(&committee),
            sync: Synchronizer::new(me, &committee, &config),
            linearizer: Linearizer::new(&committee, config.gc_depth_rounds),
            config,
            committee,
            me,
            key,
            store,
            batch: StoreBatch::default(),
            deferred_flush: false,
            own: None,
            own_headers: BTreeMap::new(),
            proposed_round: Round::GENESIS,
            last_proposal_at: now,
            mempool: VecDeque::new(),
            mempool_bytes: 0,
            last_progress_at: now,
            last_resend_at: now,
            last_votes: BTreeMap::new(),
            headers: BTreeMap::new(),
            header_slots: BTreeMap::new(),
            reported_equivocations: BTreeSet::new(),
        };
        let actions = core.recover(now)?;
        Ok((core, actions))
    }

    // ----------------------------------------------------------------------------------------
    // Inputs.

    /// Adds transactions to the mempool; refuses them whole when the mempool is full.
    pub fn submit_transactions(&mut self, transactions: Vec<Transaction>) -> DagResult<()> {
        let mut bytes = 0usize;
        for t in &transactions {
            if t.len() > self.config.transaction_bytes_max {
                return Err(DagError::TransactionTooLarge {
                    len_bytes: t.len(),
                    max_bytes: self.config.transaction_bytes_max,
                });
            }
            bytes += t.len();
        }
        if self.mempool_bytes + bytes > self.config.mempool_bytes_max {
            return Err(DagError::MempoolFull {
                len_bytes: self.mempool_bytes,
                max_bytes: self.config.mempool_bytes_max,
            });
        }
        self.mempool_bytes += bytes;
        self.mempool.extend(transactions);
        Ok(())
    }

    /// A transaction of the validator's own that must not wait behind, or be refused by, a full
    /// mempool (its beacon share of a commit: one per commit, so bounded by the commit rate):
    /// proposed first, whatever the mempool holds.
    pub fn submit_own_transaction(&mut self, transaction: Transaction) -> DagResult<()> {
        if transaction.len() > self.config.transaction_bytes_max {
            return Err(DagError::TransactionTooLarge {
                len_bytes: transaction.len(),
                max_bytes: self.config.transaction_bytes_max,
            });
        }
        self.mempool_bytes += transaction.len();
        self.mempool.push_front(transaction);
        Ok(())
    }

    /// Dispatches a verified message from `from`.
    pub fn handle_message(
        &mut self,
        from: AuthorityIndex,
        message: VerifiedMessage,
        now: TimestampMs,
    ) -> DagResult<Vec<Action>> {
        match message {
            VerifiedMessage::Header(h) => self.handle_header(from, h, now),
            VerifiedMessage::Vote(v) => self.handle_vote(from, v, now),
            VerifiedMessage::Certificate(c) => self.handle_certificate(from, c, now),
            VerifiedMessage::CertificateSummary(s) => self.handle_summary(from, s, now),
            VerifiedMessage::SyncRequest(r) => Ok(self
                .handle_sync_request(r)
                .map(|response| Action::Send {
                    to: from,
                    message: ConsensusMessage::SyncResponse(response),
                })
                .into_iter()
                .collect()),
            VerifiedMessage::SyncResponse {
                certificates,
                rounds_from,
            } => self.handle_sync_response(from, certificates, rounds_from, now),
        }
    }

    /// A header from another authority: vote for it once its parents are here, it names them
    /// truly, and its time is neither before its parents' nor too far ahead of ours.
    pub fn handle_header(
        &mut self,
        from: AuthorityIndex,
        header: Verified<SignedHeader>,
        now: TimestampMs,
    ) -> DagResult<Vec<Action>> {
        let header = Arc::new(header.into_inner());
        let mut actions = Vec::new();
        if header.author() == self.me || header.round() < self.dag.gc_round() {
            return Ok(actions);
        }
        self.check_window(from, header.round())?;
        if let Err(e) = self.record_header(&header, &mut actions) {
            // After a restart the first header we see for a slot may not be the one we voted
            // for; the one we voted for still gets its vote again.
            let voted_for_this = self.last_votes.get(&header.author())
                == Some(&VoteRecord {
                    round: header.round(),
                    digest: header.digest(),
                });
            if !voted_for_this {
                self.end_call()?;
                // The evidence is an action the caller must still see.
                if actions.is_empty() {
                    return Err(e);
                }
                return Ok(actions);
            }
        }
        let missing = self.dag.missing_parents(&header.header().parents);
        let result = if missing.is_empty() {
            self.vote_if_valid(&header, now, &mut actions)
        } else {
            self.sync
                .suspend_header(header, missing, from, now)
                .map(|requests| push_requests(&mut actions, requests))
        };
        self.end_call()?;
        result.map(|()| actions)
    }

    /// A vote for our header: a quorum of them makes its certificate.
    pub fn handle_vote(
        &mut self,
        _from: AuthorityIndex,
        vote: Verified<Vote>,
        now: TimestampMs,
    ) -> DagResult<Vec<Action>> {
        let vote = vote.into_inner();
        let mut actions = Vec::new();
        let Some(own) = self.own.as_mut() else {
            return Err(DagError::UnexpectedVote {
                voter: vote.voter,
                expected: None,
                actual: vote.header_digest,
            });
        };
        if vote.header_digest != own.header.digest() {
            if vote.round < own.header.round() {
                return Ok(actions); // A late vote for an older header of ours.
            }
            return Err(DagError::UnexpectedVote {
                voter: vote.voter,
                expected: Some(own.header.digest()),
                actual: vote.header_digest,
            });
        }
        if own.certified || !own.votes.add(vote.voter, &self.committee) {
            return Ok(actions);
        }
        own.signatures.push(VoteSignature {
            voter: vote.voter,
            signature: vote.signature,
        });
        if own.votes.reached(self.committee.quorum_threshold()) {
            own.certified = true;
            let certificate = Certificate::new(own.header.clone(), own.signatures.clone());
            actions.push(Action::Broadcast(ConsensusMessage::CertificateSummary(
                certificate.summary(),
            )));
            self.process_certificate(self.me, certificate, now, &mut actions)?;
        }
        self.end_call()?;
        Ok(actions)
    }

    /// A full certificate (broadcast to a peer that lacked the header, or fetched).
    pub fn handle_certificate(
        &mut self,
        from: AuthorityIndex,
        certificate: Verified<Certificate>,
        now: TimestampMs,
    ) -> DagResult<Vec<Action>> {
        let mut actions = Vec::new();
        let result = self.process_certificate(from, certificate.into_inner(), now, &mut actions);
        self.end_call()?;
        result.map(|()| actions)
    }

    /// A compact certificate: completed from the header we hold, or fetched whole.
    pub fn handle_summary(
        &mut self,
        from: AuthorityIndex,
        summary: Verified<CertificateSummary>,
        now: TimestampMs,
    ) -> DagResult<Vec<Action>> {
        let summary = summary.into_inner();
        let mut actions = Vec::new();
        if summary.round < self.dag.gc_round() || self.is_known(&summary.header_digest) {
            return Ok(actions);
        }
        self.check_window(from, summary.round)?;
        let result = match self.headers.get(&summary.header_digest) {
            Some(header) => {
                let certificate = Certificate::new(header.clone(), summary.votes);
                self.process_certificate(from, certificate, now, &mut actions)
            }
            None => {
                let missing = BTreeSet::from([summary.header_digest]);
                let requests = self
                    .sync
                    .fetch_certified(&missing, summary.round, from, now);
                push_requests(&mut actions, requests);
                Ok(())
            }
        };
        self.end_call()?;
        result.map(|()| actions)
    }

    /// Certificates we asked for, lowest positions first. Each one stands or falls alone: a
    /// reply mixing good certificates with lies loses only the lies.
    pub fn handle_sync_response(
        &mut self,
        from: AuthorityIndex,
        mut certificates: Vec<Verified<Certificate>>,
        rounds_from: Option<(Round, AuthorityIndex)>,
        now: TimestampMs,
    ) -> DagResult<Vec<Action>> {
        let mut actions = Vec::new();
        certificates.sort_by_key(|c| (c.round(), c.author()));
        let last = certificates.last().map(|c| (c.round(), c.author()));
        let window_top = self
            .dag
            .highest_round()
            .max(self.proposed_round)
            .saturating_add(self.config.round_window_rounds);
        let mut first_error = None;
        for c in certificates {
            let c = c.into_inner();
            if c.round() > window_top {
                continue;
            }
            if let Err(e) = self.process_certificate(from, c, now, &mut actions) {
                first_error.get_or_insert(e);
            }
        }
        let page = rounds_from.and_then(|asked| self.sync.on_rounds_reply(from, asked, last, now));
        if let Some((peer, message)) = page {
            actions.push(Action::Send { to: peer, message });
        }
        self.end_call()?;
        match first_error {
            Some(e) if actions.is_empty() => Err(e),
            _ => Ok(actions),
        }
    }

    /// Timers: proposing after the batching delay or the leader timeout, sending again what seems
    /// lost, retrying fetches with the next peer, catching up.
    pub fn tick(&mut self, now: TimestampMs) -> DagResult<Vec<Action>> {
        let mut actions = Vec::new();
        self.try_propose(now, &mut actions);
        if now.saturating_sub(self.last_progress_at) >= self.config.resend_interval_ms
            && now.saturating_sub(self.last_resend_at) >= self.config.resend_interval_ms
        {
            self.last_resend_at = now;
            self.resend(&mut actions);
        }
        let position = (
            self.dag
                .highest_quorum_round()
                .max(self.dag.gc_round())
                .max(Round(1)),
            AuthorityIndex(0),
        );
        let requests = self.sync.retry(now, position);
        push_requests(&mut actions, requests);
        self.end_call()?;
        Ok(actions)
    }

    /// The earliest time at which [`Core::tick`] has something to do.
    pub fn next_deadline(&self) -> TimestampMs {
        let mut at = self
            .last_progress_at
            .max(self.last_resend_at)
            .saturating_add_ms(self.config.resend_interval_ms);
        if self.parent_round().next() > self.proposed_round {
            at = at.min(self.proposal_deadline());
        }
        if let Some(sync) = self.sync.next_deadline() {
            at = at.min(sync);
        }
        at
    }

    // ----------------------------------------------------------------------------------------
    // Queries.

    pub fn authority(&self) -> AuthorityIndex {
        self.me
    }

    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the store back (a simulated crash keeps it and drops everything else).
    pub fn into_store(self) -> S {
        self.store
    }

    pub fn status(&self) -> CoreStatus {
        CoreStatus {
            proposed_round: self.proposed_round,
            highest_quorum_round: self.dag.highest_quorum_round(),
            highest_round: self.dag.highest_round(),
            last_committed_round: self.linearizer.last_committed_round(),
            next_commit_index: self.linearizer.next_commit_index(),
            gc_round: self.dag.gc_round(),
            pending_certificates: self.sync.pending_certificates(),
            pending_headers: self.sync.pending_headers(),
            missing_certificates: self.sync.missing(),
            mempool_bytes: self.mempool_bytes,
        }
    }

    /// References of the certificates we hold for a round.
    pub fn round_certificates(&self, round: Round) -> Vec<CertificateRef> {
        self.dag
            .round(round)
            .map(|(_, v)| v.certificate.reference())
            .collect()
    }

    // ----------------------------------------------------------------------------------------
    // Narwhal: headers, votes, certificates.

    fn check_window(&mut self, from: AuthorityIndex, round: Round) -> DagResult<()> {
        let ours = self.dag.highest_round().max(self.proposed_round);
        if round > ours.saturating_add(self.config.round_window_rounds) {
            // Either junk, or we are behind: catch up from that peer (bounded, one at a time).
            self.sync.note_behind(from);
            return Err(DagError::RoundTooFarAhead {
                round,
                ours,
                window_rounds: self.config.round_window_rounds,
            });
        }
        Ok(())
    }

    /// Remembers the first header of each slot; a second, different one is equivocation.
    fn record_header(
        &mut self,
        header: &Arc<SignedHeader>,
        actions: &mut Vec<Action>,
    ) -> DagResult<()> {
        let slot = (header.round(), header.author());
        match self.header_slots.get(&slot) {
            Some(first) if *first != header.digest() => {
                let first = *first;
                if self.reported_equivocations.insert(slot) {
                    if let Some(first_header) = self.headers.get(&first) {
                        actions.push(Action::EquivocationDetected(EquivocationEvidence {
                            first: (**first_header).clone(),
                            second: (**header).clone(),
                        }));
                    }
                }
                Err(DagError::Equivocation {
                    author: header.author(),
                    round: header.round(),
                    first,
                    second: header.digest(),
                })
            }
            Some(_) => Ok(()),
            None => {
                self.header_slots.insert(slot, header.digest());
                self.headers.insert(header.digest(), header.clone());
                Ok(())
            }
        }
    }

    /// The checks a voter makes once a header's parents are all here: each reference names the
    /// certificate it claims, and the header's time is not before its parents' nor more than
    /// `max_clock_skew_ms` ahead of ours.
    fn check_header_for_vote(&self, header: &SignedHeader, now: TimestampMs) -> DagResult<()> {
        let parents = &header.header().parents;
        if let Some((claimed, actual)) = self.dag.first_mismatch(parents) {
            return Err(DagError::ParentMismatch {
                header: header.digest(),
                claimed: (claimed.author, claimed.round),
                actual: (actual.author, actual.round),
            });
        }
        let created_at = header.created_at();
        if created_at.0 > now.0.saturating_add(self.config.max_clock_skew_ms) {
            return Err(DagError::HeaderFromFuture {
                digest: header.digest(),
                created_at_ms: created_at.0,
                now_ms: now.0,
                skew_ms: self.config.max_clock_skew_ms,
            });
        }
        let latest_parent = self.dag.parents_latest_time(parents);
        if created_at < latest_parent {
            return Err(DagError::HeaderBeforeParents {
                digest: header.digest(),
                created_at_ms: created_at.0,
                parent_ms: latest_parent.0,
            });
        }
        Ok(())
    }

    fn vote_if_valid(
        &mut self,
        header: &Arc<SignedHeader>,
        now: TimestampMs,
        actions: &mut Vec<Action>,
    ) -> DagResult<()> {
        self.check_header_for_vote(header, now)?;
        self.vote(header, actions);
        Ok(())
    }

    /// Votes at most once per (author, round), persisting the vote before sending it; the same
    /// header asked again gets the same vote again.
    fn vote(&mut self, header: &Arc<SignedHeader>, actions: &mut Vec<Action>) {
        let author = header.author();
        match self.last_votes.get(&author) {
            Some(last) if last.round > header.round() => return,
            Some(last) if last.round == header.round() && last.digest != header.digest() => return,
            Some(last) if last.round == header.round() => {}
            _ => {
                let record = VoteRecord {
                    round: header.round(),
                    digest: header.digest(),
                };
                self.last_votes.insert(author, record);
                self.batch.votes.push((author, record));
            }
        }
        actions.push(Action::Send {
            to: author,
            message: ConsensusMessage::Vote(Vote::new(header, self.me, &self.key)),
        });
    }

    fn is_known(&self, digest: &Digest) -> bool {
        self.dag.contains(digest) || self.sync.is_pending(digest)
    }

    /// Accepts a certificate once its parents are here as it names them; else suspends it and
    /// fetches them. A certificate whose references lie is refused.
    fn process_certificate(
        &mut self,
        from: AuthorityIndex,
        certificate: Certificate,
        now: TimestampMs,
        actions: &mut Vec<Action>,
    ) -> DagResult<()> {
        let digest = certificate.digest();
        if certificate.round() < self.dag.gc_round() || self.is_known(&digest) {
            return Ok(());
        }
        self.check_window(from, certificate.round())?;
        if let Some(existing) = self.dag.vertex(certificate.round(), certificate.author()) {
            // Two certified headers for one slot need more than f faulty authorities.
            return Err(DagError::Equivocation {
                author: certificate.author(),
                round: certificate.round(),
                first: existing.certificate.digest(),
                second: digest,
            });
        }
        self.check_references(&certificate)?;
        let slot = (certificate.round(), certificate.author());
        self.header_slots.entry(slot).or_insert(digest);
        self.headers
            .entry(digest)
            .or_insert_with(|| certificate.signed_header().clone());
        let missing = self.dag.missing_parents(certificate.parents());
        if missing.is_empty() {
            self.accept(certificate, now, actions);
            return Ok(());
        }
        let round = certificate.round();
        let requests = self
            .sync
            .suspend_certificate(certificate, missing, from, now);
        push_requests(actions, requests);
        if round > self.dag.highest_quorum_round().saturating_add(2) {
            self.sync.note_behind(from);
        }
        Ok(())
    }

    fn check_references(&self, certificate: &Certificate) -> DagResult<()> {
        match self.dag.first_mismatch(certificate.parents()) {
            Some((claimed, actual)) => Err(DagError::ParentMismatch {
                header: certificate.digest(),
                claimed: (claimed.author, claimed.round),
                actual: (actual.author, actual.round),
            }),
            None => Ok(()),
        }
    }

    /// Inserts a certificate whose parents are all here, then everything that waited on it;
    /// commits what the new certificates decide.
    fn accept(&mut self, certificate: Certificate, now: TimestampMs, actions: &mut Vec<Action>) {
        let mut ready = vec![certificate];
        while let Some(certificate) = ready.pop() {
            if self.dag.contains(&certificate.digest())
                || certificate.round() < self.dag.gc_round()
                || self.check_references(&certificate).is_err()
            {
                continue; // A released certificate whose fetched parent is not what it named.
            }
            let digest = certificate.digest();
            let round = certificate.round();
            self.batch.certificates.push(certificate.clone());
            if self.dag.insert(certificate, false, now) {
                self.last_progress_at = now;
            }
            if let Some(own) = self.own.as_mut().filter(|o| o.header.digest() == digest) {
                own.certified = true;
            }
            let released = self.sync.on_accepted(&digest);
            self.absorb(released, now, &mut ready, actions);
            self.commit(round, now, &mut ready, actions);
        }
        self.try_propose(now, actions);
    }

    fn absorb(
        &mut self,
        released: Released,
        now: TimestampMs,
        ready: &mut Vec<Certificate>,
        actions: &mut Vec<Action>,
    ) {
        ready.extend(released.certificates);
        for header in released.headers {
            // A released header that fails the voter's checks simply gets no vote.
            let _ = self.vote_if_valid(&header, now, actions);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Commits and garbage collection.

    /// Runs the commit rule for a new certificate of `round`; records and reports each commit,
    /// then collects below the new floor.
    fn commit(
        &mut self,
        round: Round,
        now: TimestampMs,
        ready: &mut Vec<Certificate>,
        actions: &mut Vec<Action>,
    ) {
        let committed = self.linearizer.try_commit(&mut self.dag, round);
        if committed.is_empty() {
            return;
        }
        for sub_dag in committed {
            self.batch.commits.push(sub_dag.record());
            actions.push(Action::Commit(sub_dag));
        }
        self.collect_garbage(now, ready, actions);
    }

    /// Chooses deferred persistence (group commit): see the module documentation for the
    /// contract. Switching it off writes whatever is pending first.
    pub fn set_deferred_flush(&mut self, deferred: bool) -> DagResult<()> {
        if !deferred {
            self.flush()?;
        }
        self.deferred_flush = deferred;
        Ok(())
    }

    /// Whether persistence is deferred to [`Core::flush`].
    pub fn deferred_flush(&self) -> bool {
        self.deferred_flush
    }

    /// Writes everything produced since the last write as one batch. In deferred mode the
    /// driver must call this, successfully, before carrying out any action returned since the
    /// previous flush; in immediate mode there is never anything pending.
    pub fn flush(&mut self) -> DagResult<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.store.write(std::mem::take(&mut self.batch))
    }

    /// Pipelined group commit: everything produced since the last take or flush, for the driver
    /// to write through [`Core::batch_writer`] (see the module documentation for the contract).
    pub fn take_batch(&mut self) -> StoreBatch {
        std::mem::take(&mut self.batch)
    }

    /// A writer of this core's store for another thread, where the store offers one.
    pub fn batch_writer(&self) -> Option<Box<dyn BatchWriter>> {
        self.store.batch_writer()
    }

    /// The end of a call: persists what it produced, before any of its actions leave the core,
    /// unless persistence is deferred to the driver's [`Core::flush`].
    fn end_call(&mut self) -> DagResult<()> {
        if self.deferred_flush {
            return Ok(());
        }
        self.flush()
    }

    /// Drops everything below the linearizer's floor; reports the payload of our own headers
    /// that were collected without being committed.
    fn collect_garbage(
        &mut self,
        now: TimestampMs,
        ready: &mut Vec<Certificate>,
        actions: &mut Vec<Action>,
    ) {
        let gc_round = self.linearizer.gc_round();
        if gc_round <= self.dag.gc_round() {
            return;
        }
        let collected = self.dag.collect(gc_round);
        let kept_own = self.own_headers.split_off(&gc_round);
        for (round, header) in std::mem::replace(&mut self.own_headers, kept_own) {
            let committed = collected
                .get(&round)
                .and_then(|v| v.get(&self.me))
                .is_some_and(|v| v.committed && v.certificate.digest() == header.digest());
            if !committed && !header.header().payload.is_empty() {
                actions.push(Action::ReproposePayload(header.header().payload.clone()));
            }
        }
        let kept_slots = self.header_slots.split_off(&(gc_round, AuthorityIndex(0)));
        for (_, d) in std::mem::replace(&mut self.header_slots, kept_slots) {
            self.headers.remove(&d);
        }
        self.reported_equivocations = self
            .reported_equivocations
            .split_off(&(gc_round, AuthorityIndex(0)));
        let released = self.sync.collect(gc_round);
        self.absorb(released, now, ready, actions);
    }
}

fn push_requests(actions: &mut Vec<Action>, requests: Vec<Request>) {
    actions.extend(
        requests
            .into_iter()
            .map(|(to, message)| Action::Send { to, message }),
    );
}
