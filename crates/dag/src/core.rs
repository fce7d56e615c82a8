//! The consensus core: Narwhal's certified DAG with Bullshark's commit rule, as one synchronous
//! object.
//!
//! Verified messages, timer expiries and the current time go in; [`Action`]s come out: messages to
//! send, certificates to fetch, committed sub-DAGs, evidence of equivocation, and payload to
//! propose again. The core reads no clock and no randomness; it persists through a
//! [`ConsensusStore`] before it emits anything that depends on what it persisted.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::committee::{Committee, StakeAggregator};
use crate::config::CoreConfig;
use crate::crypto::KeyPair;
use crate::error::{DagError, DagResult};
use crate::leader_schedule::LeaderSchedule;
use crate::messages::{
    Certificate, CertificateRef, CertificateSummary, CommittedSubDag, ConsensusMessage,
    EquivocationEvidence, Header, SignedHeader, SyncRequest, SyncResponse, Vote, VoteSignature,
};
use crate::store::{CommitRecord, ConsensusStore, StoreBatch, VoteRecord};
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

struct Vertex {
    certificate: Certificate,
    committed: bool,
}

/// Something suspended until a certificate arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Waiter {
    Certificate(Digest),
    Header(Digest),
}

struct PendingCertificate {
    certificate: Certificate,
    missing: BTreeSet<Digest>,
}

struct PendingHeader {
    header: Arc<SignedHeader>,
    missing: BTreeSet<Digest>,
}

struct MissingCertificate {
    round: Round,
    /// Authorities that referenced it, asked first.
    referrers: Vec<AuthorityIndex>,
    /// How many requests were sent for it.
    attempts: usize,
    requested_at: Option<TimestampMs>,
}

struct CatchUp {
    peer: AuthorityIndex,
    requested_at: TimestampMs,
    attempts: usize,
}

struct OwnHeader {
    header: Arc<SignedHeader>,
    votes: StakeAggregator,
    signatures: Vec<VoteSignature>,
    certified: bool,
}

/// The Narwhal/Bullshark state machine of one authority.
pub struct Core<S: ConsensusStore> {
    config: CoreConfig,
    committee: Committee,
    me: AuthorityIndex,
    key: KeyPair,
    store: S,
    schedule: LeaderSchedule,
    batch: StoreBatch,

    // The DAG of accepted certificates (all parents present), rounds ≥ gc_round.
    dag: BTreeMap<Round, BTreeMap<AuthorityIndex, Vertex>>,
    accepted: BTreeMap<Digest, CertificateRef>,
    gc_round: Round,
    highest_round: Round,
    highest_quorum_round: Round,
    quorum_reached_at: BTreeMap<Round, TimestampMs>,

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

    // Synchronizer.
    pending_certificates: BTreeMap<Digest, PendingCertificate>,
    pending_headers: BTreeMap<Digest, PendingHeader>,
    /// Missing digest → (its round, what waits for it).
    waiters: BTreeMap<Digest, (Round, BTreeSet<Waiter>)>,
    /// Certificates whose parents were collected while they waited; accepted next.
    released_certificates: Vec<Certificate>,
    missing: BTreeMap<Digest, MissingCertificate>,
    catch_up: Option<CatchUp>,
    behind_peer: Option<AuthorityIndex>,

    // Committer.
    last_committed_round: Round,
    next_commit_index: u64,
    last_commit_timestamp: TimestampMs,
}

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
        let schedule = LeaderSchedule::new(&committee);
        let mut core = Core {
            config,
            committee,
            me,
            key,
            store,
            schedule,
            batch: StoreBatch::default(),
            dag: BTreeMap::new(),
            accepted: BTreeMap::new(),
            gc_round: Round::GENESIS,
            highest_round: Round::GENESIS,
            highest_quorum_round: Round::GENESIS,
            quorum_reached_at: BTreeMap::new(),
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
            pending_certificates: BTreeMap::new(),
            pending_headers: BTreeMap::new(),
            waiters: BTreeMap::new(),
            released_certificates: Vec::new(),
            missing: BTreeMap::new(),
            catch_up: None,
            behind_peer: None,
            last_committed_round: Round::GENESIS,
            next_commit_index: 0,
            last_commit_timestamp: TimestampMs(0),
        };
        for genesis in Certificate::genesis(&core.committee) {
            core.insert_vertex(genesis, true, now);
        }
        let actions = core.recover(now)?;
        Ok((core, actions))
    }

    fn recover(&mut self, now: TimestampMs) -> DagResult<Vec<Action>> {
        self.last_votes = self.store.votes()?;
        if let Some(last) = self.store.last_commit()? {
            self.last_committed_round = last.leader.round;
            self.next_commit_index = last.index + 1;
            self.last_commit_timestamp = last.timestamp;
            self.gc_round = self.gc_round_for(last.leader.round);
        }
        // Which recovered certificates are already committed: those named by commit records whose
        // certificates reach above the collection round.
        let mut committed = BTreeSet::new();
        let mut index = self.next_commit_index;
        while index > 0 {
            index -= 1;
            let records = self.store.commits_from(index)?;
            let Some(record) = records.first() else { break };
            committed.extend(record.certificates.iter().copied());
            if record.lowest_round < self.gc_round {
                break;
            }
        }
        let certificates = self.store.certificates_from(self.gc_round)?;
        for c in certificates {
            if c.round() == Round::GENESIS {
                continue;
            }
            let missing = self.missing_parents(c.parents());
            if !missing.is_empty() {
                return Err(DagError::CorruptStore {
                    reason: format!("stored certificate {} lacks parents", c.digest()),
                });
            }
            self.headers.insert(c.digest(), c.signed_header().clone());
            self.header_slots
                .insert((c.round(), c.author()), c.digest());
            let is_committed = committed.contains(&c.digest());
            self.insert_vertex(c, is_committed, now);
        }
        let mut actions = Vec::new();
        if let Some(header) = self.store.own_header()? {
            let header = Arc::new(header);
            self.proposed_round = header.round();
            let certified = self.accepted.contains_key(&header.digest());
            self.own_headers.insert(header.round(), header.clone());
            self.own = Some(OwnHeader {
                header: header.clone(),
                votes: StakeAggregator::new(),
                signatures: Vec::new(),
                certified,
            });
            if !certified && header.round() >= self.gc_round {
                self.add_own_vote(&header);
                actions.push(Action::Broadcast(ConsensusMessage::Header(
                    (*header).clone(),
                )));
            }
        }
        self.try_propose(now, &mut actions);
        self.flush()?;
        Ok(actions)
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
            VerifiedMessage::SyncResponse(certificates) => {
                self.handle_sync_response(from, certificates, now)
            }
        }
    }

    /// A header from another authority: vote for it once its parents are here.
    pub fn handle_header(
        &mut self,
        from: AuthorityIndex,
        header: Verified<SignedHeader>,
        now: TimestampMs,
    ) -> DagResult<Vec<Action>> {
        let header = Arc::new(header.into_inner());
        let mut actions = Vec::new();
        if header.author() == self.me || header.round() < self.gc_round {
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
                self.flush()?;
                // The evidence is an action the caller must still see.
                if actions.is_empty() {
                    return Err(e);
                }
                return Ok(actions);
            }
        }
        let missing = self.missing_parents(header.header().parents.as_slice());
        if missing.is_empty() {
            self.vote(&header, &mut actions);
        } else if self.pending_headers.len() < self.config.pending_headers_max {
            let parent_round = header.round().prev();
            for d in &missing {
                self.waiters
                    .entry(*d)
                    .or_insert_with(|| (parent_round, BTreeSet::new()))
                    .1
                    .insert(Waiter::Header(header.digest()));
            }
            self.request_missing(&missing, header.round().prev(), from, now, &mut actions);
            self.pending_headers
                .insert(header.digest(), PendingHeader { header, missing });
        }
        self.flush()?;
        Ok(actions)
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
        self.flush()?;
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
        self.process_certificate(from, certificate.into_inner(), now, &mut actions)?;
        self.flush()?;
        Ok(actions)
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
        if summary.round < self.gc_round || self.is_known(&summary.header_digest) {
            return Ok(actions);
        }
        self.check_window(from, summary.round)?;
        match self.headers.get(&summary.header_digest) {
            Some(header) => {
                let certificate = Certificate::new(header.clone(), summary.votes);
                self.process_certificate(from, certificate, now, &mut actions)?;
            }
            None => {
                let missing = BTreeSet::from([summary.header_digest]);
                self.request_missing(&missing, summary.round, from, now, &mut actions);
            }
        }
        self.flush()?;
        Ok(actions)
    }

    /// Answers a peer's sync request from the DAG, or from the store below the collection round.
    pub fn handle_sync_request(&mut self, request: SyncRequest) -> Option<SyncResponse> {
        let mut certificates = Vec::new();
        let mut bytes = 0usize;
        let mut room = |c: &Certificate, certificates: &mut Vec<Certificate>| -> bool {
            let size = c.header().payload_bytes() + 200 + 100 * c.votes().len();
            if certificates.len() >= self.config.sync_response_certificates_max
                || bytes + size > self.config.sync_response_bytes_max
            {
                return false;
            }
            bytes += size;
            certificates.push(c.clone());
            true
        };
        match request {
            SyncRequest::Certificates { digests } => {
                for d in digests.iter().take(self.config.sync_digests_max) {
                    let found = match self.accepted.get(d) {
                        Some(r) => self
                            .dag
                            .get(&r.round)
                            .and_then(|v| v.get(&r.author))
                            .map(|v| v.certificate.clone()),
                        None => self.store.certificate(d).ok().flatten(),
                    };
                    if let Some(c) = found.filter(|c| c.round() > Round::GENESIS) {
                        if !room(&c, &mut certificates) {
                            break;
                        }
                    }
                }
            }
            SyncRequest::Rounds { after_round } => {
                let first = after_round.next().max(Round(1));
                let last = after_round.saturating_add(self.config.sync_rounds_max);
                let mut from_store = Vec::new();
                if first < self.gc_round {
                    from_store = self
                        .store
                        .certificates_from(first)
                        .unwrap_or_default()
                        .into_iter()
                        .take_while(|c| c.round() < self.gc_round && c.round() <= last)
                        .collect();
                }
                let from_dag = self
                    .dag
                    .range(first.max(self.gc_round)..=last)
                    .flat_map(|(_, v)| v.values().map(|v| v.certificate.clone()))
                    .collect::<Vec<_>>();
                for c in from_store.iter().chain(from_dag.iter()) {
                    if !room(c, &mut certificates) {
                        break;
                    }
                }
            }
        }
        if certificates.is_empty() {
            None
        } else {
            Some(SyncResponse { certificates })
        }
    }

    /// Certificates we asked for, lowest rounds first.
    pub fn handle_sync_response(
        &mut self,
        from: AuthorityIndex,
        mut certificates: Vec<Verified<Certificate>>,
        now: TimestampMs,
    ) -> DagResult<Vec<Action>> {
        let mut actions = Vec::new();
        if self.catch_up.as_ref().is_some_and(|c| c.peer == from) {
            self.catch_up = None;
        }
        certificates.sort_by_key(|c| (c.round(), c.author()));
        for c in certificates {
            let c = c.into_inner();
            if c.round()
                > self
                    .highest_round
                    .saturating_add(self.config.round_window_rounds)
            {
                continue;
            }
            self.process_certificate(from, c, now, &mut actions)?;
        }
        self.flush()?;
        Ok(actions)
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
        self.retry_fetches(now, &mut actions);
        self.flush()?;
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
        for m in self.missing.values() {
            match m.requested_at {
                Some(t) => at = at.min(t.saturating_add_ms(self.config.sync_retry_ms)),
                None => return TimestampMs(0),
            }
        }
        if let Some(c) = &self.catch_up {
            at = at.min(c.requested_at.saturating_add_ms(self.config.sync_retry_ms));
        } else if self.behind_peer.is_some() {
            return TimestampMs(0);
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
            highest_quorum_round: self.highest_quorum_round,
            highest_round: self.highest_round,
            last_committed_round: self.last_committed_round,
            next_commit_index: self.next_commit_index,
            gc_round: self.gc_round,
            pending_certificates: self.pending_certificates.len(),
            pending_headers: self.pending_headers.len(),
            missing_certificates: self.missing.len(),
            mempool_bytes: self.mempool_bytes,
        }
    }

    /// References of the certificates we hold for a round.
    pub fn round_certificates(&self, round: Round) -> Vec<CertificateRef> {
        self.dag
            .get(&round)
            .map(|v| v.values().map(|v| v.certificate.reference()).collect())
            .unwrap_or_default()
    }

    /// The committed sequence from `index` on, rebuilt from the store: after a restart this is
    /// byte for byte what was emitted before.
    pub fn committed_from(&self, index: u64) -> DagResult<Vec<CommittedSubDag>> {
        self.store
            .commits_from(index)?
            .into_iter()
            .map(|record| {
                let certificates = record
                    .certificates
                    .iter()
                    .map(|d| {
                        self.store
                            .certificate(d)?
                            .ok_or_else(|| DagError::CorruptStore {
                                reason: format!(
                                    "commit {} names missing certificate {d}",
                                    record.index
                                ),
                            })
                    })
                    .collect::<DagResult<Vec<_>>>()?;
                Ok(CommittedSubDag {
                    index: record.index,
                    leader: record.leader,
                    timestamp: record.timestamp,
                    certificates,
                })
            })
            .collect()
    }

    /// The consumer executed commits up to `index`: storage older than both that and the
    /// collection round may go.
    pub fn prune_executed(&mut self, index: u64) -> DagResult<()> {
        let keep_from_commit = index + 1;
        let lowest_needed = self
            .store
            .commits_from(keep_from_commit)?
            .iter()
            .map(|r| r.lowest_round)
            .min()
            .unwrap_or(self.gc_round);
        self.store
            .prune(keep_from_commit, lowest_needed.min(self.gc_round))
    }

    // ----------------------------------------------------------------------------------------
    // Narwhal: headers, votes, certificates.

    fn check_window(&mut self, from: AuthorityIndex, round: Round) -> DagResult<()> {
        let ours = self.highest_round.max(self.proposed_round);
        if round > ours.saturating_add(self.config.round_window_rounds) {
            // Either junk, or we are behind: catch up from that peer (bounded, one at a time).
            if self.catch_up.is_none() {
                self.behind_peer = Some(from);
            }
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
        self.accepted.contains_key(digest) || self.pending_certificates.contains_key(digest)
    }

    fn has_parent(&self, parent: &CertificateRef) -> bool {
        parent.round < self.gc_round || self.accepted.contains_key(&parent.digest)
    }

    fn missing_parents(&self, parents: &[CertificateRef]) -> BTreeSet<Digest> {
        parents
            .iter()
            .filter(|p| !self.has_parent(p))
            .map(|p| p.digest)
            .collect()
    }

    /// Accepts a certificate once its parents are here; else suspends it and fetches them.
    fn process_certificate(
        &mut self,
        from: AuthorityIndex,
        certificate: Certificate,
        now: TimestampMs,
        actions: &mut Vec<Action>,
    ) -> DagResult<()> {
        let digest = certificate.digest();
        if certificate.round() < self.gc_round || self.is_known(&digest) {
            return Ok(());
        }
        self.check_window(from, certificate.round())?;
        if let Some(existing) = self
            .dag
            .get(&certificate.round())
            .and_then(|v| v.get(&certificate.author()))
        {
            // Two certified headers for one slot need more than f faulty authorities.
            return Err(DagError::Equivocation {
                author: certificate.author(),
                round: certificate.round(),
                first: existing.certificate.digest(),
                second: digest,
            });
        }
        let slot = (certificate.round(), certificate.author());
        self.header_slots.entry(slot).or_insert(digest);
        self.headers
            .entry(digest)
            .or_insert_with(|| certificate.signed_header().clone());
        let missing = self.missing_parents(certificate.parents());
        if missing.is_empty() {
            return self.accept(certificate, now, actions);
        }
        if self.pending_certificates.len() >= self.config.pending_certificates_max {
            return Ok(()); // Dropped; fetched again when something refers to it.
        }
        let parent_round = certificate.round().prev();
        for d in &missing {
            self.waiters
                .entry(*d)
                .or_insert_with(|| (parent_round, BTreeSet::new()))
                .1
                .insert(Waiter::Certificate(digest));
        }
        let round = certificate.round();
        self.request_missing(&missing, round.prev(), from, now, actions);
        self.missing.remove(&digest);
        self.pending_certificates.insert(
            digest,
            PendingCertificate {
                certificate,
                missing,
            },
        );
        if round > self.highest_quorum_round.saturating_add(2) && self.catch_up.is_none() {
            self.behind_peer = Some(from);
        }
        Ok(())
    }

    /// Inserts a certificate whose parents are all here, then everything that waited on it.
    fn accept(
        &mut self,
        certificate: Certificate,
        now: TimestampMs,
        actions: &mut Vec<Action>,
    ) -> DagResult<()> {
        let mut ready = vec![certificate];
        while let Some(certificate) = ready.pop() {
            let digest = certificate.digest();
            let round = certificate.round();
            self.batch.certificates.push(certificate.clone());
            self.insert_vertex(certificate, false, now);
            self.missing.remove(&digest);
            if self
                .own
                .as_ref()
                .is_some_and(|o| o.header.digest() == digest)
            {
                if let Some(own) = self.own.as_mut() {
                    own.certified = true;
                }
            }
            let waiters = self
                .waiters
                .remove(&digest)
                .map(|(_, w)| w)
                .unwrap_or_default();
            for waiter in waiters {
                match waiter {
                    Waiter::Certificate(child) => {
                        let Some(p) = self.pending_certificates.get_mut(&child) else {
                            continue;
                        };
                        p.missing.remove(&digest);
                        if p.missing.is_empty() {
                            let p = self.pending_certificates.remove(&child).expect("present");
                            ready.push(p.certificate);
                        }
                    }
                    Waiter::Header(child) => {
                        let Some(p) = self.pending_headers.get_mut(&child) else {
                            continue;
                        };
                        p.missing.remove(&digest);
                        if p.missing.is_empty() {
                            let p = self.pending_headers.remove(&child).expect("present");
                            self.vote(&p.header, actions);
                        }
                    }
                }
            }
            self.try_commit(round, actions);
            for c in self.released_certificates.drain(..) {
                if !self.accepted.contains_key(&c.digest()) {
                    ready.push(c);
                }
            }
        }
        self.try_propose(now, actions);
        Ok(())
    }

    fn insert_vertex(&mut self, certificate: Certificate, committed: bool, now: TimestampMs) {
        let round = certificate.round();
        self.accepted
            .insert(certificate.digest(), certificate.reference());
        let vertices = self.dag.entry(round).or_default();
        vertices.insert(
            certificate.author(),
            Vertex {
                certificate,
                committed,
            },
        );
        let stake: u64 = vertices.keys().map(|a| self.committee.stake(*a)).sum();
        if round > self.highest_round {
            self.highest_round = round;
        }
        if stake >= self.committee.quorum_threshold() && round > self.highest_quorum_round {
            self.highest_quorum_round = round;
            self.quorum_reached_at.insert(round, now);
            self.last_progress_at = now;
        } else if stake >= self.committee.quorum_threshold() {
            self.quorum_reached_at.entry(round).or_insert(now);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Proposer with Bullshark's waits.

    /// When the next proposal is due, given what is ready now.
    fn proposal_deadline(&self) -> TimestampMs {
        let parent_round = self.parent_round();
        let batch_due = if self.mempool_bytes >= self.config.header_payload_bytes_max {
            TimestampMs(0)
        } else {
            self.last_proposal_at
                .saturating_add_ms(self.config.max_header_delay_ms)
        };
        let leader_due = if self.leader_wait_over(parent_round) {
            TimestampMs(0)
        } else {
            self.quorum_reached_at
                .get(&parent_round)
                .copied()
                .unwrap_or_default()
                .saturating_add_ms(self.config.leader_timeout_ms)
        };
        batch_due.max(leader_due)
    }

    /// Bullshark's partially synchronous wait before leaving `round`: after a leader round, for
    /// the leader's certificate; after a voting round, for f+1 stake of votes for the leader or
    /// 2f+1 against.
    fn leader_wait_over(&self, round: Round) -> bool {
        if round == Round::GENESIS {
            return true;
        }
        let certificates = self.dag.get(&round);
        if round.is_even() {
            let leader = self.schedule.leader(round);
            if certificates.is_some_and(|v| v.contains_key(&leader)) {
                return true;
            }
            // Waiting for ourselves is pointless once we did not propose in our own slot.
            return leader == self.me && self.proposed_round != round;
        }
        let leader_round = round.prev();
        if leader_round == Round::GENESIS {
            return true;
        }
        // The next leader proposes at once: everyone else waits for its certificate, and votes
        // that are still missing cannot change what it should reference.
        if self.schedule.leader(round.next()) == self.me {
            return true;
        }
        let Some(leader) = self
            .dag
            .get(&leader_round)
            .and_then(|v| v.get(&self.schedule.leader(leader_round)))
        else {
            return true; // No leader to vote for: waiting cannot help it.
        };
        let leader_digest = leader.certificate.digest();
        let (mut support, mut against) = (0, 0);
        for (author, v) in certificates.into_iter().flatten() {
            if v.certificate
                .parents()
                .iter()
                .any(|p| p.digest == leader_digest)
            {
                support += self.committee.stake(*author);
            } else {
                against += self.committee.stake(*author);
            }
        }
        support >= self.committee.validity_threshold()
            || against >= self.committee.quorum_threshold()
    }

    /// The round whose certificates the next header builds on: the highest with a quorum — except
    /// that a leader that fell behind proposes in its own leader round instead of skipping it,
    /// since everyone else waits for that certificate.
    fn parent_round(&self) -> Round {
        let hq = self.highest_quorum_round;
        if hq.is_even()
            && hq > Round::GENESIS
            && self.proposed_round < hq
            && self.schedule.leader(hq) == self.me
            && self.has_quorum(hq.prev())
        {
            return hq.prev();
        }
        hq
    }

    fn has_quorum(&self, round: Round) -> bool {
        let stake: u64 = self
            .dag
            .get(&round)
            .map(|v| v.keys().map(|a| self.committee.stake(*a)).sum())
            .unwrap_or(0);
        stake >= self.committee.quorum_threshold()
    }

    fn try_propose(&mut self, now: TimestampMs, actions: &mut Vec<Action>) {
        let parent_round = self.parent_round();
        if parent_round.next() <= self.proposed_round || now < self.proposal_deadline() {
            return;
        }
        let parents: Vec<CertificateRef> = self.dag[&parent_round]
            .values()
            .map(|v| v.certificate.reference())
            .collect();
        let mut payload = Vec::new();
        let mut bytes = 0;
        while let Some(t) = self.mempool.front() {
            if payload.len() >= self.config.header_transactions_max
                || (bytes + t.len() > self.config.header_payload_bytes_max && !payload.is_empty())
            {
                break;
            }
            bytes += t.len();
            payload.push(self.mempool.pop_front().expect("front exists"));
        }
        self.mempool_bytes -= bytes;
        let header = Arc::new(SignedHeader::new(
            Header {
                epoch: self.committee.epoch(),
                round: parent_round.next(),
                author: self.me,
                created_at: now,
                parents,
                payload,
            },
            &self.key,
        ));
        self.batch.own_header = Some((*header).clone());
        self.proposed_round = header.round();
        self.last_proposal_at = now;
        self.last_progress_at = now;
        self.own_headers.insert(header.round(), header.clone());
        self.header_slots
            .insert((header.round(), self.me), header.digest());
        self.headers.insert(header.digest(), header.clone());
        self.own = Some(OwnHeader {
            header: header.clone(),
            votes: StakeAggregator::new(),
            signatures: Vec::new(),
            certified: false,
        });
        self.add_own_vote(&header);
        actions.push(Action::Broadcast(ConsensusMessage::Header(
            (*header).clone(),
        )));
        // A committee of one certifies its own header.
        if self.committee.stake(self.me) >= self.committee.quorum_threshold() {
            let own = self.own.as_mut().expect("just set");
            own.certified = true;
            let certificate = Certificate::new(header, own.signatures.clone());
            let _ = self.accept(certificate, now, actions);
        }
    }

    fn add_own_vote(&mut self, header: &Arc<SignedHeader>) {
        let record = VoteRecord {
            round: header.round(),
            digest: header.digest(),
        };
        if self.last_votes.get(&self.me) != Some(&record) {
            self.last_votes.insert(self.me, record);
            self.batch.votes.push((self.me, record));
        }
        let vote = Vote::new(header, self.me, &self.key);
        if let Some(own) = self.own.as_mut() {
            if own.votes.add(self.me, &self.committee) {
                own.signatures.push(VoteSignature {
                    voter: self.me,
                    signature: vote.signature,
                });
            }
        }
    }

    /// Sends again what may have been lost when the round stalls: our uncertified header, or our
    /// latest certificate.
    fn resend(&mut self, actions: &mut Vec<Action>) {
        let Some(own) = &self.own else { return };
        if own.certified {
            if let Some(v) = self
                .dag
                .get(&own.header.round())
                .and_then(|v| v.get(&self.me))
            {
                actions.push(Action::Broadcast(ConsensusMessage::CertificateSummary(
                    v.certificate.summary(),
                )));
            }
        } else {
            actions.push(Action::Broadcast(ConsensusMessage::Header(
                (*own.header).clone(),
            )));
        }
    }

    // ----------------------------------------------------------------------------------------
    // Synchronizer.

    fn request_missing(
        &mut self,
        digests: &BTreeSet<Digest>,
        round: Round,
        referrer: AuthorityIndex,
        now: TimestampMs,
        actions: &mut Vec<Action>,
    ) {
        let mut ask = Vec::new();
        for d in digests {
            if self.pending_certificates.contains_key(d) {
                continue; // Here already, waiting on its own parents.
            }
            match self.missing.get_mut(d) {
                Some(m) => {
                    if !m.referrers.contains(&referrer) {
                        m.referrers.push(referrer);
                    }
                }
                None => {
                    if self.missing.len() >= self.config.missing_certificates_max {
                        continue;
                    }
                    self.missing.insert(
                        *d,
                        MissingCertificate {
                            round,
                            referrers: vec![referrer],
                            attempts: 1,
                            requested_at: Some(now),
                        },
                    );
                    ask.push(*d);
                }
            }
        }
        if referrer != self.me {
            for chunk in ask.chunks(self.config.sync_digests_max) {
                actions.push(Action::Send {
                    to: referrer,
                    message: ConsensusMessage::SyncRequest(SyncRequest::Certificates {
                        digests: chunk.to_vec(),
                    }),
                });
            }
        }
    }

    /// The peer to ask on the n-th attempt: the referrers first, then everyone else in turn.
    fn peer_for_attempt(&self, referrers: &[AuthorityIndex], attempt: usize) -> AuthorityIndex {
        let others: Vec<AuthorityIndex> = referrers
            .iter()
            .copied()
            .chain(self.committee.indices().filter(|a| !referrers.contains(a)))
            .filter(|a| *a != self.me)
            .collect();
        others
            .get(attempt % others.len().max(1))
            .copied()
            .unwrap_or(self.me)
    }

    fn retry_fetches(&mut self, now: TimestampMs, actions: &mut Vec<Action>) {
        let mut by_peer: BTreeMap<AuthorityIndex, Vec<Digest>> = BTreeMap::new();
        let due: Vec<Digest> = self
            .missing
            .iter()
            .filter(|(_, m)| {
                m.requested_at
                    .is_none_or(|t| now.saturating_sub(t) >= self.config.sync_retry_ms)
            })
            .map(|(d, _)| *d)
            .collect();
        for d in due {
            let m = &self.missing[&d];
            if m.round < self.gc_round {
                self.missing.remove(&d);
                continue;
            }
            let peer = self.peer_for_attempt(&m.referrers, m.attempts);
            let m = self.missing.get_mut(&d).expect("present");
            m.attempts += 1;
            m.requested_at = Some(now);
            if peer != self.me {
                by_peer.entry(peer).or_default().push(d);
            }
        }
        for (peer, digests) in by_peer {
            for chunk in digests.chunks(self.config.sync_digests_max) {
                actions.push(Action::Send {
                    to: peer,
                    message: ConsensusMessage::SyncRequest(SyncRequest::Certificates {
                        digests: chunk.to_vec(),
                    }),
                });
            }
        }
        // Catching up by rounds: one request at a time, moving to the next peer on silence.
        let peer = match (&self.catch_up, self.behind_peer.take()) {
            (Some(c), _) if now.saturating_sub(c.requested_at) >= self.config.sync_retry_ms => {
                let attempts = c.attempts + 1;
                Some((self.peer_for_attempt(&[c.peer], attempts), attempts))
            }
            (None, Some(p)) => Some((p, 0)),
            _ => None,
        };
        if let Some((peer, attempts)) = peer {
            if peer != self.me {
                self.catch_up = Some(CatchUp {
                    peer,
                    requested_at: now,
                    attempts,
                });
                actions.push(Action::Send {
                    to: peer,
                    message: ConsensusMessage::SyncRequest(SyncRequest::Rounds {
                        after_round: self.highest_quorum_round.prev().max(self.gc_round),
                    }),
                });
            }
        }
        if self
            .catch_up
            .as_ref()
            .is_some_and(|c| c.attempts >= self.committee.size() * 2)
        {
            self.catch_up = None;
        }
    }

    // ----------------------------------------------------------------------------------------
    // Bullshark commit rule and garbage collection.

    /// A certificate of `round` arrived: if `round - 1` is a leader round, see whether its
    /// leader now has f+1 stake of support, and commit it after the earlier leaders it links to.
    fn try_commit(&mut self, round: Round, actions: &mut Vec<Action>) {
        let leader_round = round.prev();
        if round == Round::GENESIS
            || !leader_round.is_even()
            || leader_round == Round::GENESIS
            || leader_round <= self.last_committed_round
        {
            return;
        }
        let Some(leader) = self.leader_certificate(leader_round) else {
            return;
        };
        let leader_digest = leader.digest();
        let support: u64 = self
            .dag
            .get(&round)
            .into_iter()
            .flatten()
            .filter(|(_, v)| {
                v.certificate
                    .parents()
                    .iter()
                    .any(|p| p.digest == leader_digest)
            })
            .map(|(a, _)| self.committee.stake(*a))
            .sum();
        if support < self.committee.validity_threshold() {
            return;
        }
        // Walk back over the uncommitted leader rounds; commit each leader the current one links
        // to, earliest first.
        let mut leaders = vec![leader.clone()];
        let mut current = leader;
        let mut r = leader_round;
        while r.0 >= self.last_committed_round.0 + 4 {
            r = Round(r.0 - 2);
            if r < self.gc_round {
                break;
            }
            if let Some(prev) = self.leader_certificate(r) {
                if self.linked(&current, &prev) {
                    leaders.push(prev.clone());
                    current = prev;
                }
            }
        }
        for leader in leaders.into_iter().rev() {
            self.commit_leader(leader, actions);
        }
        self.collect_garbage(actions);
    }

    fn leader_certificate(&self, round: Round) -> Option<Certificate> {
        self.dag
            .get(&round)
            .and_then(|v| v.get(&self.schedule.leader(round)))
            .map(|v| v.certificate.clone())
    }

    /// Whether `to` is in the causal history of `from`.
    fn linked(&self, from: &Certificate, to: &Certificate) -> bool {
        let mut layer: BTreeSet<Digest> = BTreeSet::from([from.digest()]);
        let mut r = from.round();
        while r > to.round() {
            let mut next = BTreeSet::new();
            if let Some(vertices) = self.dag.get(&r) {
                for v in vertices.values() {
                    if layer.contains(&v.certificate.digest()) {
                        next.extend(v.certificate.parents().iter().map(|p| p.digest));
                    }
                }
            }
            layer = next;
            r = r.prev();
        }
        layer.contains(&to.digest())
    }

    /// Orders the leader's uncommitted causal history by (round, author) and emits it.
    fn commit_leader(&mut self, leader: Certificate, actions: &mut Vec<Action>) {
        let mut seen = BTreeSet::new();
        let mut stack = vec![leader.reference()];
        let mut chosen: Vec<(Round, AuthorityIndex)> = Vec::new();
        while let Some(r) = stack.pop() {
            if r.round < self.gc_round || !seen.insert(r.digest) {
                continue;
            }
            let Some(v) = self.dag.get(&r.round).and_then(|v| v.get(&r.author)) else {
                continue;
            };
            if v.committed || v.certificate.digest() != r.digest {
                continue;
            }
            chosen.push((r.round, r.author));
            stack.extend(v.certificate.parents().iter().copied());
        }
        chosen.sort();
        let mut certificates = Vec::with_capacity(chosen.len());
        for (round, author) in chosen {
            let v = self
                .dag
                .get_mut(&round)
                .and_then(|v| v.get_mut(&author))
                .expect("chosen from the DAG");
            v.committed = true;
            certificates.push(v.certificate.clone());
        }
        let timestamp = leader.header().created_at.max(self.last_commit_timestamp);
        let sub_dag = CommittedSubDag {
            index: self.next_commit_index,
            leader: leader.reference(),
            timestamp,
            certificates,
        };
        self.batch.commits.push(CommitRecord {
            index: sub_dag.index,
            leader: sub_dag.leader,
            timestamp,
            certificates: sub_dag.certificates.iter().map(|c| c.digest()).collect(),
            lowest_round: sub_dag
                .certificates
                .iter()
                .map(|c| c.round())
                .min()
                .unwrap_or(leader.round()),
        });
        self.next_commit_index += 1;
        self.last_commit_timestamp = timestamp;
        self.last_committed_round = leader.round();
        actions.push(Action::Commit(sub_dag));
    }

    /// Persists what this call produced, before any of its actions leave the core.
    fn flush(&mut self) -> DagResult<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.store.write(std::mem::take(&mut self.batch))
    }

    fn gc_round_for(&self, committed_round: Round) -> Round {
        committed_round.saturating_sub(self.config.gc_depth_rounds)
    }

    /// Drops everything below `last committed round − depth`; reports the payload of our own
    /// headers that were collected without being committed.
    fn collect_garbage(&mut self, actions: &mut Vec<Action>) {
        let gc_round = self.gc_round_for(self.last_committed_round);
        if gc_round <= self.gc_round {
            return;
        }
        self.gc_round = gc_round;
        let kept = self.dag.split_off(&gc_round);
        let collected = std::mem::replace(&mut self.dag, kept);
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
        for (_, vertices) in collected {
            for v in vertices.into_values() {
                self.accepted.remove(&v.certificate.digest());
            }
        }
        self.quorum_reached_at = self.quorum_reached_at.split_off(&gc_round);
        let kept_slots = self.header_slots.split_off(&(gc_round, AuthorityIndex(0)));
        for (_, d) in std::mem::replace(&mut self.header_slots, kept_slots) {
            self.headers.remove(&d);
        }
        self.reported_equivocations = self
            .reported_equivocations
            .split_off(&(gc_round, AuthorityIndex(0)));
        self.missing.retain(|_, m| m.round >= gc_round);
        self.waiters.retain(|_, (round, _)| *round >= gc_round);
        // Suspended items whose parents are now below the collection round count as complete.
        let stale: Vec<Digest> = self
            .pending_certificates
            .iter()
            .filter(|(_, p)| p.certificate.round().prev() < gc_round)
            .map(|(d, _)| *d)
            .collect();
        for d in stale {
            let p = self.pending_certificates.remove(&d).expect("present");
            if p.certificate.round() >= gc_round {
                self.released_certificates.push(p.certificate);
            }
        }
        let stale: Vec<Digest> = self
            .pending_headers
            .iter()
            .filter(|(_, p)| p.header.round().prev() < gc_round)
            .map(|(d, _)| *d)
            .collect();
        for d in stale {
            let p = self.pending_headers.remove(&d).expect("present");
            if p.header.round() >= gc_round {
                self.vote(&p.header, actions);
            }
        }
    }
}
