//! What each [`Behaviour`] does to a faulty node's traffic. The faulty node runs a real core;
//! this module rewrites, withholds or adds to what the core sends. Headers a faulty node signs by
//! hand (forged parents, future stamps) gather their votes here, and the certificate they make is
//! broadcast and handed to the node's own core, so its next headers build on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use rand::Rng;

use crate::committee::StakeAggregator;
use crate::crypto::Signature;
use crate::messages::{
    Certificate, CertificateRef, ConsensusMessage, Header, SignedHeader, SyncRequest, SyncResponse,
    Vote, VoteSignature,
};
use crate::store::ConsensusStore;
use crate::types::{AuthorityIndex, Digest, Round, TimestampMs};
use crate::validation::VerifiedMessage;

use super::config::{Behaviour, FutureStamp, ParentForgery, SyncLie};
use super::Simulator;

/// Junk headers sent inside the round window with each real header.
const IN_WINDOW_JUNK_PER_HEADER: usize = 6;
const TEN_DAYS_MS: u64 = 10 * 24 * 3_600 * 1_000;

/// A header signed by hand, collecting its votes.
struct ForgedHeader {
    header: Arc<SignedHeader>,
    votes: StakeAggregator,
    signatures: Vec<VoteSignature>,
    certified: bool,
}

/// A faulty node's memory of what it forged.
#[derive(Default)]
pub(super) struct ByzantineState {
    /// The digest of the core's header → the forged header sent in its place (resends stay
    /// consistent).
    replacements: BTreeMap<Digest, Digest>,
    forged: BTreeMap<Digest, ForgedHeader>,
}

impl Simulator {
    pub(super) fn emit_byzantine(
        &mut self,
        node: AuthorityIndex,
        behaviour: Behaviour,
        targets: Vec<AuthorityIndex>,
        message: ConsensusMessage,
    ) {
        let message = self.corrupt(behaviour, message);
        let own_header = matches!(&message, ConsensusMessage::Header(h) if h.author() == node);
        match (behaviour, message) {
            (Behaviour::WithholdVotes, ConsensusMessage::Vote(_)) => {}
            (Behaviour::Equivocate, ConsensusMessage::Header(h)) if own_header => {
                self.equivocate(node, h)
            }
            (Behaviour::JunkRounds, ConsensusMessage::Header(h)) if own_header => {
                self.send_far_junk(node, &h);
                self.send_message(node, &targets, &ConsensusMessage::Header(h));
            }
            (Behaviour::InWindowJunk, ConsensusMessage::Header(h)) if own_header => {
                self.send_window_junk(node, &h);
                self.send_message(node, &targets, &ConsensusMessage::Header(h));
            }
            (
                Behaviour::ForgedParents(_) | Behaviour::FutureTimestamps(_),
                ConsensusMessage::Header(h),
            ) if own_header => {
                let forged = self.forge(node, behaviour, &h);
                self.send_message(node, &targets, &ConsensusMessage::Header(forged));
            }
            (Behaviour::WithholdCertificate, message @ ConsensusMessage::CertificateSummary(_)) => {
                // Only the lower half of the committee (by index) ever gets it from us.
                let half = (self.config.nodes / 2) as u32;
                let some: Vec<AuthorityIndex> =
                    targets.into_iter().filter(|a| a.0 < half).collect();
                self.send_message(node, &some, &message);
            }
            (Behaviour::HostileSync(lie), message) => {
                self.hostile_sync(node, lie, targets, message)
            }
            (_, message) => self.send_message(node, &targets, &message),
        }
    }

    /// Takes over what the network delivers to a faulty node when it is a vote for a header the
    /// node forged: the core never saw that header.
    pub(super) fn intercept(&mut self, to: AuthorityIndex, message: &ConsensusMessage) -> bool {
        let ConsensusMessage::Vote(vote) = message else {
            return false;
        };
        let Some(state) = self.byzantine.get(&to) else {
            return false;
        };
        if !state.forged.contains_key(&vote.header_digest) {
            return false;
        }
        if self.nodes[to.as_usize()]
            .validator
            .verify_vote(vote.clone())
            .is_err()
        {
            self.report.messages_rejected += 1;
            return true;
        }
        self.add_forged_vote(to, vote);
        true
    }

    fn add_forged_vote(&mut self, node: AuthorityIndex, vote: &Vote) {
        let committee = self.committee.committee().clone();
        let state = self
            .byzantine
            .get_mut(&node)
            .expect("checked by the caller");
        let forged = state
            .forged
            .get_mut(&vote.header_digest)
            .expect("checked by the caller");
        if forged.certified || !forged.votes.add(vote.voter, &committee) {
            return;
        }
        forged.signatures.push(VoteSignature {
            voter: vote.voter,
            signature: vote.signature,
        });
        if !forged.votes.reached(committee.quorum_threshold()) {
            return;
        }
        forged.certified = true;
        let certificate = Certificate::new(forged.header.clone(), forged.signatures.clone());
        self.report.forged_certified += 1;
        let others = self.others(node);
        self.send_message(
            node,
            &others,
            &ConsensusMessage::Certificate(certificate.clone()),
        );
        match self.nodes[node.as_usize()]
            .validator
            .verify_certificate(certificate)
        {
            Ok(v) => self.feed(node, node, VerifiedMessage::Certificate(v)),
            Err(e) => self.fail(format!(
                "simulator: {node}'s forged certificate does not verify: {e}"
            )),
        }
    }

    /// The header sent in place of the core's: same round, rewritten parents or stamp, signed by
    /// the author (the same replacement every time the core sends it again).
    fn forge(
        &mut self,
        node: AuthorityIndex,
        behaviour: Behaviour,
        original: &SignedHeader,
    ) -> SignedHeader {
        let state = self
            .byzantine
            .get(&node)
            .expect("a faulty node has a state");
        if let Some(d) = state.replacements.get(&original.digest()) {
            return (*state.forged[d].header).clone();
        }
        let mut header = original.header().clone();
        match behaviour {
            Behaviour::ForgedParents(forgery) => self.forge_parents(node, forgery, &mut header),
            Behaviour::FutureTimestamps(FutureStamp::Max) => {
                header.created_at = TimestampMs(u64::MAX)
            }
            Behaviour::FutureTimestamps(FutureStamp::TenDays) => {
                header.created_at = header.created_at.saturating_add_ms(TEN_DAYS_MS)
            }
            _ => unreachable!("{behaviour:?} does not forge headers"),
        }
        let forged = Arc::new(SignedHeader::new(header, self.committee.key(node)));
        let own_vote = Vote::new(&forged, node, self.committee.key(node));
        let mut votes = StakeAggregator::new();
        votes.add(node, self.committee.committee());
        let state = self.byzantine.get_mut(&node).expect("present");
        state
            .replacements
            .insert(original.digest(), forged.digest());
        state.forged.insert(
            forged.digest(),
            ForgedHeader {
                header: forged.clone(),
                votes,
                signatures: vec![VoteSignature {
                    voter: node,
                    signature: own_vote.signature,
                }],
                certified: false,
            },
        );
        self.report.forged_headers += 1;
        (*forged).clone()
    }

    fn forge_parents(&mut self, node: AuthorityIndex, forgery: ParentForgery, header: &mut Header) {
        let parents = &mut header.parents;
        if parents.len() < 2 {
            return;
        }
        match forgery {
            ParentForgery::ReuseDigest => {
                let digest = parents[self.rng.gen_range(0..parents.len())].digest;
                parents.iter_mut().for_each(|p| p.digest = digest);
            }
            ParentForgery::SwapAuthors => {
                let first = parents[0].digest;
                for i in 0..parents.len() - 1 {
                    parents[i].digest = parents[i + 1].digest;
                }
                let last = parents.len() - 1;
                parents[last].digest = first;
            }
            ParentForgery::StaleRound => {
                let Some(core) = self.nodes[node.as_usize()].core.as_ref() else {
                    return;
                };
                let old_round = header.round.saturating_sub(3);
                if old_round == Round::GENESIS {
                    return;
                }
                let old: Vec<CertificateRef> = core.round_certificates(old_round);
                for p in parents.iter_mut() {
                    if let Some(o) = old.iter().find(|o| o.author == p.author) {
                        p.digest = o.digest;
                    }
                }
            }
        }
    }

    /// Corrupts the signature of half of the headers and votes of an `InvalidSignatures` node.
    fn corrupt(&mut self, behaviour: Behaviour, message: ConsensusMessage) -> ConsensusMessage {
        if behaviour != Behaviour::InvalidSignatures || !self.rng.gen_bool(0.5) {
            return message;
        }
        match message {
            ConsensusMessage::Header(h) => {
                let mut sig = *h.signature();
                sig.0[5] ^= 0x40;
                ConsensusMessage::Header(SignedHeader::with_signature(h.header().clone(), sig))
            }
            ConsensusMessage::Vote(mut v) => {
                v.signature.0[9] ^= 0x01;
                ConsensusMessage::Vote(v)
            }
            other => other,
        }
    }

    /// Signs a second header for the same round and splits the committee between the two; one
    /// honest node sees both.
    fn equivocate(&mut self, node: AuthorityIndex, header: SignedHeader) {
        let mut twin: Header = header.header().clone();
        twin.payload
            .push(Bytes::from(format!("twin/{node}/{}", header.round().0)));
        let twin = SignedHeader::new(twin, self.committee.key(node));
        let others = self.others(node);
        let half = others.len() / 2;
        let first = ConsensusMessage::Header(header);
        let second = ConsensusMessage::Header(twin);
        self.send_message(node, &others[..half], &first);
        self.send_message(node, &others[half..], &second);
        self.send_message(node, &others[..1], &second);
    }

    /// A properly signed header with made-up parents of the previous round.
    fn junk_header(
        &mut self,
        node: AuthorityIndex,
        round: Round,
        template: &Header,
    ) -> SignedHeader {
        let quorum = self.committee().quorum_threshold() as usize;
        let parents = self
            .committee()
            .indices()
            .take(quorum.max(1))
            .map(|author| CertificateRef {
                author,
                round: round.prev(),
                digest: Digest(self.rng.gen()),
            })
            .collect();
        let junk = Header {
            epoch: template.epoch,
            chain: template.chain,
            round,
            author: node,
            created_at: template.created_at,
            parents,
            payload: vec![Bytes::from(format!("junk/{node}/{}", round.0))],
        };
        SignedHeader::new(junk, self.committee.key(node))
    }

    /// A header far beyond the round window, and garbage bytes.
    fn send_far_junk(&mut self, node: AuthorityIndex, header: &SignedHeader) {
        let round = Round(header.round().0 + 100_000);
        let junk = self.junk_header(node, round, header.header());
        let others = self.others(node);
        self.send_message(node, &others, &ConsensusMessage::Header(junk));
        let garbage: Vec<u8> = (0..self.rng.gen_range(0..200))
            .map(|_| self.rng.gen())
            .collect();
        for to in others {
            self.send_bytes(node, to, Bytes::from(garbage.clone()), 0);
        }
    }

    /// Junk headers of rounds inside the window, above the real one: each is the first header
    /// its receivers see for that slot, so each waits in `pending_headers` for made-up parents.
    fn send_window_junk(&mut self, node: AuthorityIndex, header: &SignedHeader) {
        let window = self.config.core.round_window_rounds.max(2);
        let others = self.others(node);
        for _ in 0..IN_WINDOW_JUNK_PER_HEADER {
            let round = Round(header.round().0 + self.rng.gen_range(1..window));
            let junk = self.junk_header(node, round, header.header());
            self.report.forged_headers += 1;
            self.send_message(node, &others, &ConsensusMessage::Header(junk));
        }
    }

    /// Lies in sync replies, silence, oversized replies, or requests for the rounds after
    /// `u64::MAX`.
    fn hostile_sync(
        &mut self,
        node: AuthorityIndex,
        lie: SyncLie,
        targets: Vec<AuthorityIndex>,
        message: ConsensusMessage,
    ) {
        let message = match (lie, message) {
            (SyncLie::Withhold, ConsensusMessage::SyncResponse(_)) => return,
            (SyncLie::OtherRounds, ConsensusMessage::SyncResponse(r)) => {
                ConsensusMessage::SyncResponse(self.other_rounds(node, &r))
            }
            (SyncLie::ForgedSignatures, ConsensusMessage::SyncResponse(r)) => {
                ConsensusMessage::SyncResponse(forge_header_signatures(&r))
            }
            (SyncLie::Oversized, ConsensusMessage::SyncResponse(r)) => {
                let cap = self.config.core.sync_response_certificates_max;
                let certificates = r
                    .certificates
                    .iter()
                    .cycle()
                    .take(cap + 1)
                    .cloned()
                    .collect();
                ConsensusMessage::SyncResponse(SyncResponse {
                    certificates,
                    rounds_from: r.rounds_from,
                })
            }
            (
                SyncLie::HugeAfterRound,
                ConsensusMessage::SyncRequest(SyncRequest::Rounds { .. }),
            ) => ConsensusMessage::SyncRequest(SyncRequest::Rounds {
                round: Round(u64::MAX),
                author: AuthorityIndex(u32::MAX),
            }),
            (SyncLie::HugeAfterRound, ConsensusMessage::Header(h)) if h.author() == node => {
                // Every round, one peer in turn is asked for the rounds after u64::MAX.
                let peer = self.others(node)[h.round().0 as usize % (self.config.nodes - 1)];
                let ask = ConsensusMessage::SyncRequest(SyncRequest::Rounds {
                    round: Round(u64::MAX),
                    author: AuthorityIndex(u32::MAX),
                });
                self.send_message(node, &[peer], &ask);
                ConsensusMessage::Header(h)
            }
            (SyncLie::OtherRounds | SyncLie::ForgedSignatures, ConsensusMessage::Header(h))
                if h.author() == node =>
            {
                self.push_unsolicited(node, lie, h.round().prev());
                ConsensusMessage::Header(h)
            }
            (_, message) => message,
        };
        self.send_message(node, &targets, &message);
    }

    /// A reply nobody asked for, with the round's certificates lied about: peers still missing
    /// some of them take them from it.
    fn push_unsolicited(&mut self, node: AuthorityIndex, lie: SyncLie, round: Round) {
        let Some(core) = self.nodes[node.as_usize()].core.as_ref() else {
            return;
        };
        let certificates: Vec<Certificate> = core
            .store()
            .certificates_from(round)
            .unwrap_or_default()
            .into_iter()
            .take_while(|c| c.round() == round)
            .filter(|c| c.round() > Round::GENESIS)
            .collect();
        if certificates.is_empty() {
            return;
        }
        let honest = SyncResponse {
            certificates,
            rounds_from: None,
        };
        let lie = match lie {
            SyncLie::ForgedSignatures => forge_header_signatures(&honest),
            _ => self.other_rounds(node, &honest),
        };
        let others = self.others(node);
        self.send_message(node, &others, &ConsensusMessage::SyncResponse(lie));
    }

    /// Certificates of rounds other than the ones asked, from the node's store.
    fn other_rounds(&mut self, node: AuthorityIndex, asked: &SyncResponse) -> SyncResponse {
        let count = asked.certificates.len();
        let asked_rounds: Vec<Round> = asked.certificates.iter().map(|c| c.round()).collect();
        let Some(core) = self.nodes[node.as_usize()].core.as_ref() else {
            return asked.clone();
        };
        let top = core.status().highest_round.0.max(1);
        let from = Round(self.rng.gen_range(1..=top));
        let certificates = core
            .store()
            .certificates_from(from)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.round() > Round::GENESIS && !asked_rounds.contains(&c.round()))
            .take(count.max(1))
            .collect();
        SyncResponse {
            certificates,
            rounds_from: asked.rounds_from,
        }
    }
}

/// The same certificates with their header signatures replaced (the vertex digest covers the
/// signature, so the votes no longer prove them).
fn forge_header_signatures(response: &SyncResponse) -> SyncResponse {
    let certificates = response
        .certificates
        .iter()
        .map(|c| {
            let header = SignedHeader::with_signature(c.header().clone(), Signature([0x5a; 64]));
            Certificate::new(Arc::new(header), c.votes().to_vec())
        })
        .collect();
    SyncResponse {
        certificates,
        rounds_from: response.rounds_from,
    }
}
