//! The Byzantine authority: what it saw of honest traffic, what it sent, and how it turns a plan
//! into a message signed with its own key.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use trainmesh_dag::crypto::SigningDomain;
use trainmesh_dag::messages::VoteSignature;
use trainmesh_dag::{
    AuthorityIndex, Certificate, CertificateRef, ConsensusMessage, Core, Digest, Header, KeyPair,
    MemStore, Round, SignedHeader, SyncRequest, SyncResponse, TimestampMs, Vote,
};

use super::plan::{
    capped, ByzantineMessage, CertificateSource, DigestPlan, HeaderPlan, HeaderSource, ParentPlan,
    ParentsPlan, RoundPlan, SyncPlan, TimePlan, PARENTS_MAX, PAYLOAD_TRANSACTIONS_MAX,
    SYNC_CERTIFICATES_MAX, SYNC_DIGESTS_MAX, TRANSACTION_BYTES_MAX,
};
use crate::dag::{committee, key, AUTHORITIES};

/// The Byzantine authority's index.
pub const BYZANTINE: AuthorityIndex = AuthorityIndex(AUTHORITIES - 1);
/// What it remembers of each kind, at most (oldest forgotten first).
const MEMORY_MAX: usize = 512;

/// The receiving core and the time, which relative choices are resolved against.
pub struct Target<'a> {
    pub core: &'a Core<MemStore>,
    pub now: TimestampMs,
}

#[derive(Debug)]
pub struct Byzantine {
    key: KeyPair,
    /// Whether certificates may carry votes signed with honest keys.
    forge_votes: bool,
    own_headers: Vec<Arc<SignedHeader>>,
    sent: Vec<ConsensusMessage>,
    /// Honest votes for its headers, by header digest.
    votes: BTreeMap<Digest, Vec<VoteSignature>>,
    honest_headers: Vec<Arc<SignedHeader>>,
    honest_certificates: Vec<Certificate>,
    digests: Vec<Digest>,
}

fn remember<T>(list: &mut Vec<T>, item: T) {
    if list.len() >= MEMORY_MAX {
        list.remove(0);
    }
    list.push(item);
}

fn pick<T>(list: &[T], index: u16) -> Option<&T> {
    (!list.is_empty()).then(|| &list[usize::from(index) % list.len()])
}

impl Byzantine {
    pub fn new(forge_votes: bool) -> Byzantine {
        Byzantine {
            key: key(BYZANTINE),
            forge_votes,
            own_headers: Vec::new(),
            sent: Vec::new(),
            votes: BTreeMap::new(),
            honest_headers: Vec::new(),
            honest_certificates: Vec::new(),
            digests: Vec::new(),
        }
    }

    /// Learns from a message an honest node sent (to everyone, or to the Byzantine authority).
    pub fn observe(&mut self, message: &ConsensusMessage) {
        match message {
            ConsensusMessage::Header(h) => {
                remember(&mut self.digests, h.digest());
                remember(&mut self.honest_headers, Arc::new(h.clone()));
            }
            ConsensusMessage::Vote(v) if v.header_author == BYZANTINE => {
                let votes = self.votes.entry(v.header_digest).or_default();
                if !votes.iter().any(|s| s.voter == v.voter) {
                    votes.push(VoteSignature {
                        voter: v.voter,
                        signature: v.signature,
                    });
                }
            }
            ConsensusMessage::CertificateSummary(s) => {
                let header = self
                    .honest_headers
                    .iter()
                    .find(|h| h.digest() == s.header_digest)
                    .cloned();
                if let Some(header) = header {
                    let c = Certificate::new(header, s.votes.clone());
                    remember(&mut self.honest_certificates, c);
                }
            }
            ConsensusMessage::Certificate(c) => {
                remember(&mut self.digests, c.digest());
                remember(&mut self.honest_certificates, c.clone());
            }
            ConsensusMessage::SyncResponse(r) => {
                for c in &r.certificates {
                    remember(&mut self.digests, c.digest());
                    remember(&mut self.honest_certificates, c.clone());
                }
            }
            ConsensusMessage::Vote(_) | ConsensusMessage::SyncRequest(_) => {}
        }
    }

    /// The message a plan describes, signed where it needs to be; `None` when the plan refers
    /// to something the Byzantine authority has not seen.
    pub fn build(&mut self, plan: ByzantineMessage, t: &Target) -> Option<ConsensusMessage> {
        let message = match plan {
            ByzantineMessage::Header(plan) => {
                ConsensusMessage::Header((*self.new_header(plan, t)).clone())
            }
            ByzantineMessage::Vote {
                header,
                digest,
                round,
            } => ConsensusMessage::Vote(self.vote(header, digest, round, t)?),
            ByzantineMessage::Certificate { header, voters } => {
                ConsensusMessage::Certificate(self.certificate(header, voters, t)?)
            }
            ByzantineMessage::Summary { header, voters } => {
                ConsensusMessage::CertificateSummary(self.certificate(header, voters, t)?.summary())
            }
            ByzantineMessage::SyncRequest(plan) => ConsensusMessage::SyncRequest(match plan {
                SyncPlan::Certificates(digests) => SyncRequest::Certificates {
                    digests: capped(digests, SYNC_DIGESTS_MAX)
                        .into_iter()
                        .map(|d| self.digest(d))
                        .collect(),
                },
                SyncPlan::Rounds(round, author) => SyncRequest::Rounds {
                    round: resolve_round(round, highest(t)),
                    author: AuthorityIndex(author),
                },
            }),
            ByzantineMessage::SyncResponse { certificates } => {
                let certificates = capped(certificates, SYNC_CERTIFICATES_MAX)
                    .into_iter()
                    .filter_map(|c| match c {
                        CertificateSource::Seen(i) => pick(&self.honest_certificates, i).cloned(),
                        CertificateSource::Own { header, voters } => {
                            self.certificate(header, voters, t)
                        }
                    })
                    .collect();
                ConsensusMessage::SyncResponse(SyncResponse {
                    certificates,
                    rounds_from: None,
                })
            }
            ByzantineMessage::Replay { pick: i } => pick(&self.sent, i)?.clone(),
        };
        remember(&mut self.sent, message.clone());
        Some(message)
    }

    fn digest(&self, plan: DigestPlan) -> Digest {
        match plan {
            DigestPlan::Known(i) => pick(&self.digests, i).copied().unwrap_or_default(),
            DigestPlan::Raw(bytes) => Digest(bytes),
        }
    }

    fn new_header(&mut self, plan: HeaderPlan, t: &Target) -> Arc<SignedHeader> {
        let round = resolve_round(plan.round, highest(t));
        let parents = match plan.parents {
            ParentsPlan::Quorum => t.core.round_certificates(round.prev()),
            ParentsPlan::Some(mask) => t
                .core
                .round_certificates(round.prev())
                .into_iter()
                .filter(|r| mask & (1 << r.author.0) != 0)
                .collect(),
            ParentsPlan::Custom(list) => capped(list, PARENTS_MAX)
                .into_iter()
                .map(|p| self.parent(p, round, t))
                .collect(),
        };
        let payload = capped(plan.payload, PAYLOAD_TRANSACTIONS_MAX)
            .into_iter()
            .map(|tx| Bytes::from(capped(tx, TRANSACTION_BYTES_MAX)))
            .collect();
        let header = Header {
            epoch: committee().epoch(),
            chain: committee().chain(),
            round,
            author: BYZANTINE,
            created_at: resolve_time(plan.created_at, t.now),
            parents,
            payload,
        };
        let header = Arc::new(SignedHeader::new(header, &self.key));
        remember(&mut self.digests, header.digest());
        remember(&mut self.own_headers, header.clone());
        header
    }

    fn parent(&self, plan: ParentPlan, round: Round, t: &Target) -> CertificateRef {
        match plan {
            ParentPlan::Real {
                rounds_back,
                author,
            } => {
                let round = round.saturating_sub(1 + u64::from(rounds_back % 4));
                let author = AuthorityIndex(u32::from(author) % AUTHORITIES);
                t.core
                    .round_certificates(round)
                    .into_iter()
                    .find(|r| r.author == author)
                    .unwrap_or(CertificateRef {
                        author,
                        round,
                        digest: Digest::default(),
                    })
            }
            ParentPlan::Forged {
                author,
                round: parent_round,
                digest,
            } => CertificateRef {
                // Twice the committee: non-members too.
                author: AuthorityIndex(author % (2 * AUTHORITIES)),
                round: resolve_round(parent_round, round.prev()),
                digest: self.digest(digest),
            },
        }
    }

    fn vote(
        &self,
        header: u16,
        digest: Option<DigestPlan>,
        round: Option<RoundPlan>,
        t: &Target,
    ) -> Option<Vote> {
        let seen = pick(&self.honest_headers, header);
        let header_digest = match (digest, seen) {
            (Some(d), _) => self.digest(d),
            (None, Some(h)) => h.digest(),
            (None, None) => return None,
        };
        let round = match (round, seen) {
            (Some(r), _) => resolve_round(r, highest(t)),
            (None, Some(h)) => h.round(),
            (None, None) => highest(t),
        };
        Some(Vote {
            epoch: committee().epoch(),
            round,
            header_author: seen.map_or(AuthorityIndex(0), |h| h.author()),
            header_digest,
            voter: BYZANTINE,
            signature: self.key.sign(SigningDomain::Vote, &header_digest),
        })
    }

    /// A certificate of a Byzantine header with the votes of `voters` (a bit mask): its own,
    /// honest votes it received, and forged ones when allowed.
    fn certificate(&mut self, source: HeaderSource, voters: u8, t: &Target) -> Option<Certificate> {
        let header = match source {
            HeaderSource::Sent(i) => pick(&self.own_headers, i)?.clone(),
            HeaderSource::New(plan) => self.new_header(plan, t),
        };
        let digest = header.digest();
        let received = self.votes.get(&digest);
        let votes = (0..AUTHORITIES)
            .map(AuthorityIndex)
            .filter(|a| voters & (1 << a.0) != 0)
            .filter_map(|voter| {
                if voter == BYZANTINE || self.forge_votes {
                    let signature = key(voter).sign(SigningDomain::Vote, &digest);
                    return Some(VoteSignature { voter, signature });
                }
                received?.iter().find(|v| v.voter == voter).copied()
            })
            .collect();
        Some(Certificate::new(header, votes))
    }
}

fn highest(t: &Target) -> Round {
    t.core.status().highest_round
}

fn resolve_round(plan: RoundPlan, base: Round) -> Round {
    match plan {
        RoundPlan::Next => base.saturating_add(1),
        RoundPlan::Offset(o) if o >= 0 => base.saturating_add(o.unsigned_abs().into()),
        RoundPlan::Offset(o) => base.saturating_sub(o.unsigned_abs().into()),
        RoundPlan::Exact(r) => Round(r),
        RoundPlan::Max => Round(u64::MAX),
        RoundPlan::BelowMax(k) => Round(u64::MAX - u64::from(k)),
    }
}

fn resolve_time(plan: TimePlan, now: TimestampMs) -> TimestampMs {
    match plan {
        TimePlan::Now => now,
        TimePlan::Ahead(ms) => now.saturating_add_ms(ms.into()),
        TimePlan::Behind(ms) => TimestampMs(now.0.saturating_sub(ms.into())),
        TimePlan::Exact(t) => TimestampMs(t),
        TimePlan::Max => TimestampMs(u64::MAX),
    }
}
