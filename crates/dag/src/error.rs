//! The one error type of the consensus crate.

use crate::types::{AuthorityIndex, Digest, Epoch, Round, Stake};

/// Why an encoded message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("message of {len_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    Oversized { len_bytes: usize, max_bytes: usize },
    #[error("unsupported encoding version {found} (expected {expected})")]
    UnsupportedVersion { found: u8, expected: u8 },
    #[error("malformed or truncated message: {reason}")]
    Malformed { reason: String },
}

/// Everything that can go wrong in the consensus core: each variant names the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("message of epoch {actual:?} but the committee is of epoch {expected:?}")]
    WrongEpoch { expected: Epoch, actual: Epoch },
    #[error("a header of another network ({actual}), this is {expected}")]
    WrongChain { expected: Digest, actual: Digest },
    #[error("authority {0} is not in the committee")]
    UnknownAuthority(AuthorityIndex),
    #[error("invalid signature from {signer} on {what}")]
    InvalidSignature {
        signer: AuthorityIndex,
        what: &'static str,
    },
    #[error("round 0 holds only genesis certificates derived from the committee")]
    GenesisFromNetwork,
    #[error("header {digest} of {round} has parents of {stake} stake, quorum is {quorum}")]
    ParentsBelowQuorum {
        digest: Digest,
        round: Round,
        stake: Stake,
        quorum: Stake,
    },
    #[error("{what} names {round}, beyond the highest round a message may carry")]
    RoundOutOfRange { what: &'static str, round: Round },
    #[error("header {header} names parent {claimed:?}, but that digest is the certificate of {actual:?}")]
    ParentMismatch {
        header: Digest,
        claimed: (AuthorityIndex, Round),
        actual: (AuthorityIndex, Round),
    },
    #[error("header {digest} is stamped {created_at_ms} ms, more than {skew_ms} ms ahead of our clock ({now_ms} ms)")]
    HeaderFromFuture {
        digest: Digest,
        created_at_ms: u64,
        now_ms: u64,
        skew_ms: u64,
    },
    #[error("header {digest} is stamped {created_at_ms} ms, earlier than its parent stamped {parent_ms} ms")]
    HeaderBeforeParents {
        digest: Digest,
        created_at_ms: u64,
        parent_ms: u64,
    },
    #[error("{author} already has {count} headers waiting for parents, its share is {max}")]
    AuthorQuotaExceeded {
        author: AuthorityIndex,
        count: usize,
        max: usize,
    },
    #[error("header lists parent author {author} twice")]
    DuplicateParent { author: AuthorityIndex },
    #[error("certificate {digest} has votes of {stake} stake, quorum is {quorum}")]
    VotesBelowQuorum {
        digest: Digest,
        stake: Stake,
        quorum: Stake,
    },
    #[error("certificate lists voter {voter} twice")]
    DuplicateVoter { voter: AuthorityIndex },
    #[error("{what} holds {count} items, the limit is {max}")]
    TooManyItems {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{round} is too far ahead: ours is {ours}, the window is {window_rounds} rounds")]
    RoundTooFarAhead {
        round: Round,
        ours: Round,
        window_rounds: u64,
    },
    #[error("{author} signed two headers for {round}: {first} and {second}")]
    Equivocation {
        author: AuthorityIndex,
        round: Round,
        first: Digest,
        second: Digest,
    },
    #[error("vote from {voter} is for header {actual}, ours is {expected:?}")]
    UnexpectedVote {
        voter: AuthorityIndex,
        expected: Option<Digest>,
        actual: Digest,
    },
    #[error("the mempool holds {len_bytes} bytes, its limit is {max_bytes}")]
    MempoolFull { len_bytes: usize, max_bytes: usize },
    #[error("transaction of {len_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    TransactionTooLarge { len_bytes: usize, max_bytes: usize },
    #[error("invalid committee: {reason}")]
    InvalidCommittee { reason: String },
    #[error("storage failed: {reason}")]
    Storage { reason: String },
    #[error("stored state is inconsistent: {reason}")]
    CorruptStore { reason: String },
}

pub type DagResult<T> = Result<T, DagError>;
