//! The proposer: when to propose (batching and Bullshark's partially synchronous waits), what
//! (parents and payload), and at what time.
//!
//! A header's `created_at` is our clock, raised to its parents' latest stamp: honest voters refuse
//! a header stamped before its parents, so a parent stamped slightly ahead (within the skew bound)
//! never makes our own header unvotable.

use std::sync::Arc;

use super::{Action, Core, OwnHeader};
use crate::committee::StakeAggregator;
use crate::messages::{Certificate, CertificateRef, ConsensusMessage, Header, SignedHeader};
use crate::messages::{Vote, VoteSignature};
use crate::store::{ConsensusStore, VoteRecord};
use crate::types::{Round, TimestampMs};

impl<S: ConsensusStore> Core<S> {
    /// When the next proposal is due, given what is ready now.
    pub(super) fn proposal_deadline(&self) -> TimestampMs {
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
            self.dag
                .quorum_reached_at(parent_round)
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
        if round.is_even() {
            let leader = self.linearizer.leader(round);
            if self.dag.vertex(round, leader).is_some() {
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
        if self.linearizer.leader(round.next()) == self.me {
            return true;
        }
        let Some(leader) = self
            .dag
            .vertex(leader_round, self.linearizer.leader(leader_round))
        else {
            return true; // No leader to vote for: waiting cannot help it.
        };
        let support = self.dag.support(round, &leader.certificate.digest());
        let against = self.dag.round_stake(round) - support;
        support >= self.committee.validity_threshold()
            || against >= self.committee.quorum_threshold()
    }

    /// The round whose certificates the next header builds on: the highest with a quorum — except
    /// that a leader that fell behind proposes in its own leader round instead of skipping it,
    /// since everyone else waits for that certificate.
    pub(super) fn parent_round(&self) -> Round {
        let hq = self.dag.highest_quorum_round();
        if hq.is_even()
            && hq > Round::GENESIS
            && self.proposed_round < hq
            && self.linearizer.leader(hq) == self.me
            && self.dag.has_quorum(hq.prev())
        {
            return hq.prev();
        }
        hq
    }

    pub(super) fn try_propose(&mut self, now: TimestampMs, actions: &mut Vec<Action>) {
        let parent_round = self.parent_round();
        if parent_round.next() <= self.proposed_round || now < self.proposal_deadline() {
            return;
        }
        let parents: Vec<CertificateRef> = self
            .dag
            .round(parent_round)
            .map(|(_, v)| v.certificate.reference())
            .collect();
        let created_at = now.max(self.dag.parents_latest_time(&parents));
        let payload = self.take_payload();
        let header = Arc::new(SignedHeader::new(
            Header {
                epoch: self.committee.epoch(),
                chain: self.committee.chain(),
                round: parent_round.next(),
                author: self.me,
                created_at,
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
            self.accept(certificate, now, actions);
        }
    }

    fn take_payload(&mut self) -> Vec<crate::types::Transaction> {
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
        payload
    }

    pub(super) fn add_own_vote(&mut self, header: &Arc<SignedHeader>) {
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
    pub(super) fn resend(&mut self, actions: &mut Vec<Action>) {
        let Some(own) = &self.own else { return };
        if own.certified {
            if let Some(v) = self.dag.vertex(own.header.round(), self.me) {
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
}
