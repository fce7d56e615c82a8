//! Headers, votes, certificates and the other messages consensus exchanges.
//!
//! A certificate's digest is its signed header's digest (header and signature): one signed
//! header, one vertex, whatever set of votes certifies it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::committee::Committee;
use crate::crypto::{KeyPair, Signature, SigningDomain};
use crate::encoding::digest_of;
use crate::types::{AuthorityIndex, Digest, Epoch, Round, TimestampMs, Transaction};

const HEADER_DIGEST_DOMAIN: &[u8] = b"trainmesh/dag/header-digest/v1";
const VERTEX_DIGEST_DOMAIN: &[u8] = b"trainmesh/dag/vertex-digest/v1";

/// A reference to a certificate of the previous round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CertificateRef {
    pub author: AuthorityIndex,
    pub round: Round,
    pub digest: Digest,
}

/// What an author proposes for a round: its transactions and the certificates it builds on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub epoch: Epoch,
    /// The network (see [`crate::chain_digest`]): a header signed for one network is no header,
    /// and no evidence, on another.
    pub chain: Digest,
    pub round: Round,
    pub author: AuthorityIndex,
    /// The author's clock when it proposed; informational, and the commit timestamp of leaders.
    pub created_at: TimestampMs,
    /// Certificates of `round - 1`, sorted by author, one per author.
    pub parents: Vec<CertificateRef>,
    pub payload: Vec<Transaction>,
}

impl Header {
    pub fn digest(&self) -> Digest {
        digest_of(HEADER_DIGEST_DOMAIN, self)
    }

    pub fn payload_bytes(&self) -> usize {
        self.payload.iter().map(|t| t.len()).sum()
    }
}

#[derive(Deserialize)]
struct SignedHeaderWire {
    header: Header,
    signature: Signature,
}

impl From<SignedHeaderWire> for SignedHeader {
    fn from(w: SignedHeaderWire) -> SignedHeader {
        SignedHeader::with_signature(w.header, w.signature)
    }
}

/// The digest of a signed header: it covers the header *and* its author's signature, so two
/// nodes that hold a vertex of one digest hold it byte for byte (an ed25519 signer can make many
/// valid signatures of one message; only the one the votes name is part of the DAG).
fn vertex_digest(header_digest: &Digest, signature: &Signature) -> Digest {
    digest_of(VERTEX_DIGEST_DOMAIN, &(header_digest, signature))
}

/// A header with its author's signature. Two digests are computed once, on construction: the
/// header's own ([`Header::digest`], which the author signs) and the vertex digest over header
/// and signature ([`SignedHeader::digest`], which votes sign and parents reference).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SignedHeaderWire")]
pub struct SignedHeader {
    header: Header,
    signature: Signature,
    #[serde(skip_serializing)]
    header_digest: Digest,
    #[serde(skip_serializing)]
    digest: Digest,
}

impl SignedHeader {
    pub fn new(header: Header, key: &KeyPair) -> SignedHeader {
        let signature = key.sign(SigningDomain::Header, &header.digest());
        SignedHeader::with_signature(header, signature)
    }

    /// A header with an arbitrary signature: genesis, decoding, and tests of invalid signatures.
    pub fn with_signature(header: Header, signature: Signature) -> SignedHeader {
        let header_digest = header.digest();
        let digest = vertex_digest(&header_digest, &signature);
        SignedHeader {
            header,
            signature,
            header_digest,
            digest,
        }
    }

    pub fn header(&self) -> &Header {
        &self.header
    }
    pub fn signature(&self) -> &Signature {
        &self.signature
    }
    /// The vertex digest: header and signature.
    pub fn digest(&self) -> Digest {
        self.digest
    }
    /// The digest of the header alone: what its author signed.
    pub fn header_digest(&self) -> Digest {
        self.header_digest
    }
    pub fn round(&self) -> Round {
        self.header.round
    }
    pub fn author(&self) -> AuthorityIndex {
        self.header.author
    }
    pub fn epoch(&self) -> Epoch {
        self.header.epoch
    }
    pub fn created_at(&self) -> TimestampMs {
        self.header.created_at
    }
    pub fn reference(&self) -> CertificateRef {
        CertificateRef {
            author: self.header.author,
            round: self.header.round,
            digest: self.digest,
        }
    }
}

/// An authority's vote for a header: a signature over the header's digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub epoch: Epoch,
    pub round: Round,
    pub header_author: AuthorityIndex,
    pub header_digest: Digest,
    pub voter: AuthorityIndex,
    pub signature: Signature,
}

impl Vote {
    pub fn new(header: &SignedHeader, voter: AuthorityIndex, key: &KeyPair) -> Vote {
        Vote {
            epoch: header.epoch(),
            round: header.round(),
            header_author: header.author(),
            header_digest: header.digest(),
            voter,
            signature: key.sign(SigningDomain::Vote, &header.digest()),
        }
    }
}

/// One voter's signature inside a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteSignature {
    pub voter: AuthorityIndex,
    pub signature: Signature,
}

/// A header with votes of at least a quorum of stake: a vertex of the DAG.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    header: Arc<SignedHeader>,
    /// Sorted by voter, one per voter. Empty only for genesis.
    votes: Vec<VoteSignature>,
}

impl Certificate {
    pub fn new(header: Arc<SignedHeader>, mut votes: Vec<VoteSignature>) -> Certificate {
        votes.sort_by_key(|v| v.voter);
        votes.dedup_by_key(|v| v.voter);
        Certificate { header, votes }
    }

    /// The round-0 certificates: derived from the committee, never accepted from the network.
    pub fn genesis(committee: &Committee) -> Vec<Certificate> {
        committee
            .indices()
            .map(|author| {
                let header = Header {
                    epoch: committee.epoch(),
                    chain: committee.chain(),
                    round: Round::GENESIS,
                    author,
                    created_at: TimestampMs(0),
                    parents: vec![],
                    payload: vec![],
                };
                Certificate {
                    header: Arc::new(SignedHeader::with_signature(header, Signature([0; 64]))),
                    votes: vec![],
                }
            })
            .collect()
    }

    pub fn signed_header(&self) -> &Arc<SignedHeader> {
        &self.header
    }
    pub fn header(&self) -> &Header {
        self.header.header()
    }
    pub fn votes(&self) -> &[VoteSignature] {
        &self.votes
    }
    pub fn digest(&self) -> Digest {
        self.header.digest()
    }
    pub fn round(&self) -> Round {
        self.header.round()
    }
    pub fn author(&self) -> AuthorityIndex {
        self.header.author()
    }
    pub fn epoch(&self) -> Epoch {
        self.header.epoch()
    }
    pub fn reference(&self) -> CertificateRef {
        self.header.reference()
    }
    pub fn parents(&self) -> &[CertificateRef] {
        &self.header.header().parents
    }

    /// The compact form broadcast to peers that already hold the header.
    pub fn summary(&self) -> CertificateSummary {
        CertificateSummary {
            epoch: self.epoch(),
            round: self.round(),
            author: self.author(),
            header_digest: self.digest(),
            votes: self.votes.clone(),
        }
    }
}

/// A certificate without its header: the votes alone prove it, since they sign the header digest.
/// A receiver that lacks the header fetches the full certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateSummary {
    pub epoch: Epoch,
    pub round: Round,
    pub author: AuthorityIndex,
    pub header_digest: Digest,
    pub votes: Vec<VoteSignature>,
}

/// Requests of the synchronizer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// Certificates by digest (missing parents).
    Certificates { digests: Vec<Digest> },
    /// The certificates the peer holds from position (`round`, `author`) on, in (round, author)
    /// order, up to the peer's limits (catching up after a partition or a restart). The requester
    /// pages on from just after the last certificate it received, so a round larger than one
    /// reply is served in several.
    Rounds {
        round: Round,
        author: AuthorityIndex,
    },
}

/// The answer to a [`SyncRequest`]: full certificates, lowest rounds first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub certificates: Vec<Certificate>,
    /// For a reply to `Rounds`: the position it answers, so that the requester pages on only
    /// from the reply to its own page request.
    pub rounds_from: Option<(Round, AuthorityIndex)>,
}

/// Everything validators send each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsensusMessage {
    Header(SignedHeader),
    Vote(Vote),
    Certificate(Certificate),
    CertificateSummary(CertificateSummary),
    SyncRequest(SyncRequest),
    SyncResponse(SyncResponse),
}

impl ConsensusMessage {
    pub fn kind(&self) -> &'static str {
        match self {
            ConsensusMessage::Header(_) => "header",
            ConsensusMessage::Vote(_) => "vote",
            ConsensusMessage::Certificate(_) => "certificate",
            ConsensusMessage::CertificateSummary(_) => "certificate_summary",
            ConsensusMessage::SyncRequest(_) => "sync_request",
            ConsensusMessage::SyncResponse(_) => "sync_response",
        }
    }
}

/// A committed leader and its causal history not committed before, in commit order
/// (round, then author).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedSubDag {
    /// Position in the commit sequence, from 0, without gaps.
    pub index: u64,
    pub leader: CertificateRef,
    /// Monotonic: the leader's proposal time, never below the previous commit's.
    pub timestamp: TimestampMs,
    pub certificates: Vec<Certificate>,
}

impl CommittedSubDag {
    pub fn transactions(&self) -> impl Iterator<Item = &Transaction> {
        self.certificates
            .iter()
            .flat_map(|c| c.header().payload.iter())
    }
}

/// Proof that an author signed two different headers for the same round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EquivocationEvidence {
    pub first: SignedHeader,
    pub second: SignedHeader,
}

impl EquivocationEvidence {
    /// Checks the proof on its own: same author, round and epoch, both headers of the
    /// committee's network, different signed headers, both signatures valid under the
    /// committee. Two valid signatures of one header count too: an honest (deterministic)
    /// ed25519 signer never makes a second one.
    pub fn verify(&self, committee: &Committee) -> bool {
        let (a, b) = (&self.first, &self.second);
        if a.author() != b.author()
            || a.round() != b.round()
            || a.epoch() != b.epoch()
            || a.header().chain != committee.chain()
            || b.header().chain != committee.chain()
            || a.digest() == b.digest()
        {
            return false;
        }
        let Some(vk) = committee.verifying_key(a.author()) else {
            return false;
        };
        vk.verify(SigningDomain::Header, &a.header_digest(), a.signature())
            && vk.verify(SigningDomain::Header, &b.header_digest(), b.signature())
    }
}
