//! Stateless checks every message passes before the core sees it: signatures, epoch, membership,
//! stake of parents and votes, and sizes. The core only accepts [`Verified`] values.

use std::ops::Deref;

use crate::committee::{Committee, StakeAggregator};
use crate::config::CoreConfig;
use crate::crypto::{verify_batch, PublicKey, Signature, SigningDomain};
use crate::error::{DagError, DagResult};
use crate::messages::{
    Certificate, CertificateSummary, ConsensusMessage, SignedHeader, SyncRequest, Vote,
    VoteSignature,
};
use crate::types::{AuthorityIndex, Digest, Epoch, Round};

/// A value that passed validation. Only this crate constructs one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A consensus message after validation.
#[derive(Clone, Debug)]
pub enum VerifiedMessage {
    Header(Verified<SignedHeader>),
    Vote(Verified<Vote>),
    Certificate(Verified<Certificate>),
    CertificateSummary(Verified<CertificateSummary>),
    SyncRequest(SyncRequest),
    SyncResponse {
        certificates: Vec<Verified<Certificate>>,
        rounds_from: Option<(Round, AuthorityIndex)>,
    },
}

/// Validates messages against one committee and the size limits of a [`CoreConfig`].
#[derive(Clone, Debug)]
pub struct Validator {
    committee: Committee,
    config: CoreConfig,
}

impl Validator {
    pub fn new(committee: Committee, config: CoreConfig) -> Validator {
        Validator { committee, config }
    }

    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    pub fn verify_message(&self, message: ConsensusMessage) -> DagResult<VerifiedMessage> {
        Ok(match message {
            ConsensusMessage::Header(h) => VerifiedMessage::Header(self.verify_header(h)?),
            ConsensusMessage::Vote(v) => VerifiedMessage::Vote(self.verify_vote(v)?),
            ConsensusMessage::Certificate(c) => {
                VerifiedMessage::Certificate(self.verify_certificate(c)?)
            }
            ConsensusMessage::CertificateSummary(s) => {
                VerifiedMessage::CertificateSummary(self.verify_summary(s)?)
            }
            ConsensusMessage::SyncRequest(r) => {
                match &r {
                    SyncRequest::Certificates { digests } => self.check_count(
                        "sync request digests",
                        digests.len(),
                        self.config.sync_digests_max,
                    )?,
                    SyncRequest::Rounds { round, .. } => {
                        self.check_round("sync request", *round)?
                    }
                }
                VerifiedMessage::SyncRequest(r)
            }
            ConsensusMessage::SyncResponse(r) => {
                self.check_count(
                    "sync response certificates",
                    r.certificates.len(),
                    self.config.sync_response_certificates_max,
                )?;
                let certificates = r
                    .certificates
                    .into_iter()
                    .map(|c| self.verify_certificate(c))
                    .collect::<DagResult<Vec<_>>>()?;
                VerifiedMessage::SyncResponse {
                    certificates,
                    rounds_from: r.rounds_from,
                }
            }
        })
    }

    fn check_epoch(&self, epoch: Epoch) -> DagResult<()> {
        if epoch != self.committee.epoch() {
            return Err(DagError::WrongEpoch {
                expected: self.committee.epoch(),
                actual: epoch,
            });
        }
        Ok(())
    }

    fn check_member(&self, index: AuthorityIndex) -> DagResult<()> {
        if !self.committee.contains(index) {
            return Err(DagError::UnknownAuthority(index));
        }
        Ok(())
    }

    fn check_count(&self, what: &'static str, count: usize, max: usize) -> DagResult<()> {
        if count > max {
            return Err(DagError::TooManyItems { what, count, max });
        }
        Ok(())
    }

    /// Everything about a header but its signature.
    fn check_header_shape(&self, header: &SignedHeader) -> DagResult<()> {
        let h = header.header();
        self.check_epoch(h.epoch)?;
        if h.chain != self.committee.chain() {
            return Err(DagError::WrongChain {
                expected: self.committee.chain(),
                actual: h.chain,
            });
        }
        self.check_member(h.author)?;
        self.check_round("header", h.round)?;
        if h.round == Round::GENESIS {
            return Err(DagError::GenesisFromNetwork);
        }
        self.check_count(
            "header transactions",
            h.payload.len(),
            self.config.header_transactions_max,
        )?;
        let payload_bytes_max = self
            .config
            .header_payload_bytes_max
            .saturating_add(self.config.transaction_bytes_max);
        self.check_count("header payload bytes", h.payload_bytes(), payload_bytes_max)?;
        self.check_count("header parents", h.parents.len(), self.committee.size())?;
        let mut parents = StakeAggregator::new();
        for p in &h.parents {
            self.check_member(p.author)?;
            if p.round != h.round.prev() {
                return Err(DagError::ParentsBelowQuorum {
                    digest: header.digest(),
                    round: h.round,
                    stake: 0,
                    quorum: self.committee.quorum_threshold(),
                });
            }
            if !parents.add(p.author, &self.committee) {
                return Err(DagError::DuplicateParent { author: p.author });
            }
        }
        if !h.parents.windows(2).all(|w| w[0].author < w[1].author) {
            return Err(DagError::DuplicateParent {
                author: h.parents[0].author,
            });
        }
        if !parents.reached(self.committee.quorum_threshold()) {
            return Err(DagError::ParentsBelowQuorum {
                digest: header.digest(),
                round: h.round,
                stake: parents.stake(),
                quorum: self.committee.quorum_threshold(),
            });
        }
        Ok(())
    }

    pub fn verify_header(&self, header: SignedHeader) -> DagResult<Verified<SignedHeader>> {
        self.check_header_shape(&header)?;
        self.check_header_signature(&header)?;
        Ok(Verified(header))
    }

    fn check_header_signature(&self, header: &SignedHeader) -> DagResult<()> {
        let vk = self
            .committee
            .verifying_key(header.author())
            .expect("membership checked");
        if !vk.verify(
            SigningDomain::Header,
            &header.header_digest(),
            header.signature(),
        ) {
            return Err(DagError::InvalidSignature {
                signer: header.author(),
                what: "header",
            });
        }
        Ok(())
    }

    fn check_round(&self, what: &'static str, round: Round) -> DagResult<()> {
        if round > Round::MAX {
            return Err(DagError::RoundOutOfRange { what, round });
        }
        Ok(())
    }

    pub fn verify_vote(&self, vote: Vote) -> DagResult<Verified<Vote>> {
        self.check_epoch(vote.epoch)?;
        self.check_member(vote.voter)?;
        self.check_member(vote.header_author)?;
        self.check_round("vote", vote.round)?;
        if vote.round == Round::GENESIS {
            return Err(DagError::GenesisFromNetwork);
        }
        let vk = self
            .committee
            .verifying_key(vote.voter)
            .expect("membership checked");
        if !vk.verify(SigningDomain::Vote, &vote.header_digest, &vote.signature) {
            return Err(DagError::InvalidSignature {
                signer: vote.voter,
                what: "vote",
            });
        }
        Ok(Verified(vote))
    }

    fn check_votes(&self, digest: &Digest, votes: &[VoteSignature]) -> DagResult<()> {
        self.check_count("certificate votes", votes.len(), self.committee.size())?;
        let mut stake = StakeAggregator::new();
        for v in votes {
            self.check_member(v.voter)?;
            if !stake.add(v.voter, &self.committee) {
                return Err(DagError::DuplicateVoter { voter: v.voter });
            }
        }
        if !votes.windows(2).all(|w| w[0].voter < w[1].voter) {
            return Err(DagError::DuplicateVoter {
                voter: votes[0].voter,
            });
        }
        if !stake.reached(self.committee.quorum_threshold()) {
            return Err(DagError::VotesBelowQuorum {
                digest: *digest,
                stake: stake.stake(),
                quorum: self.committee.quorum_threshold(),
            });
        }
        // One batch check for the common case; one by one only to name a bad voter.
        let signed: Vec<(PublicKey, Signature)> = votes
            .iter()
            .map(|v| {
                let a = self
                    .committee
                    .authority(v.voter)
                    .expect("membership checked");
                (a.public_key, v.signature)
            })
            .collect();
        if verify_batch(SigningDomain::Vote, digest, &signed) {
            return Ok(());
        }
        for v in votes {
            let vk = self
                .committee
                .verifying_key(v.voter)
                .expect("membership checked");
            if !vk.verify(SigningDomain::Vote, digest, &v.signature) {
                return Err(DagError::InvalidSignature {
                    signer: v.voter,
                    what: "certificate vote",
                });
            }
        }
        // The batch failed but no single signature did: only a key that is not a valid point
        // can do that, and membership keys are checked when the committee is built.
        Err(DagError::InvalidSignature {
            signer: votes[0].voter,
            what: "certificate vote",
        })
    }

    /// A certificate is proven by its votes: a quorum signed the vertex digest (header and
    /// signature), which each of them did only after checking the header and its author's
    /// signature. The signature is checked here too, so that every vertex a node holds carries
    /// its author's valid signature (equivocation evidence built from it verifies).
    pub fn verify_certificate(&self, certificate: Certificate) -> DagResult<Verified<Certificate>> {
        self.check_header_shape(certificate.signed_header())?;
        self.check_votes(&certificate.digest(), certificate.votes())?;
        self.check_header_signature(certificate.signed_header())?;
        Ok(Verified(certificate))
    }

    pub fn verify_summary(
        &self,
        summary: CertificateSummary,
    ) -> DagResult<Verified<CertificateSummary>> {
        self.check_epoch(summary.epoch)?;
        self.check_member(summary.author)?;
        self.check_round("certificate summary", summary.round)?;
        if summary.round == Round::GENESIS {
            return Err(DagError::GenesisFromNetwork);
        }
        self.check_votes(&summary.header_digest, &summary.votes)?;
        Ok(Verified(summary))
    }
}
