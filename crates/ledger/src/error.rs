//! The one error type of the ledger: each rejection names the rule broken.

use trainmesh_contracts::{Amount, ContractError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("empty transaction")]
    Empty,
    #[error("transaction of {len_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    Oversized { len_bytes: usize, max_bytes: usize },
    #[error("unsupported encoding version {found} (expected {expected})")]
    UnsupportedVersion { found: u8, expected: u8 },
    #[error("truncated transaction")]
    Truncated,
    #[error("malformed transaction: {reason}")]
    Malformed { reason: String },
    #[error("unknown call kind {kind}")]
    UnknownKind { kind: u32 },
    #[error("transaction for chain {actual:?}, this is chain {expected:?}")]
    WrongChainId { expected: String, actual: String },
    #[error("invalid signature")]
    BadSignature,
    #[error("nonce {actual} was already used (the account is at {expected})")]
    NonceReplayed { expected: u64, actual: u64 },
    #[error("nonce {actual} skips ahead (the account is at {expected})")]
    NonceSkipped { expected: u64, actual: u64 },
    #[error("expired at batch time {expires_ms} ms; the batch is at {time_ms} ms")]
    Expired { expires_ms: u64, time_ms: u64 },
    #[error("fee {fee} is below the minimum fee {min_fee}")]
    FeeTooLow { fee: Amount, min_fee: Amount },
    #[error("insufficient balance: {available} available, {required} required")]
    InsufficientBalance { available: Amount, required: Amount },
    #[error("arithmetic overflow")]
    Overflow,
    #[error(transparent)]
    Contract(ContractError),
    #[error("batch {actual} out of order: the next batch is {expected}")]
    BatchOutOfOrder { expected: u64, actual: u64 },
    #[error("batch {index} was already executed")]
    BatchAlreadyExecuted { index: u64 },
    #[error("the ledger holds another genesis ({existing}), not {given}")]
    GenesisMismatch { existing: String, given: String },
    #[error("the ledger has no genesis yet")]
    NoGenesis,
    #[error("invalid genesis: {reason}")]
    InvalidGenesis { reason: String },
    #[error("randomness beacon: {reason}")]
    InvalidBeacon { reason: String },
    #[error("storage failed: {reason}")]
    Storage { reason: String },
    #[error("stored state is corrupt: {reason}")]
    Corrupt { reason: String },
}

impl From<ContractError> for LedgerError {
    fn from(e: ContractError) -> Self {
        match e {
            ContractError::InsufficientBalance {
                available,
                required,
            } => LedgerError::InsufficientBalance {
                available,
                required,
            },
            ContractError::Overflow => LedgerError::Overflow,
            ContractError::Storage(reason) => LedgerError::Storage { reason },
            ContractError::CorruptState(reason) => LedgerError::Corrupt { reason },
            other => LedgerError::Contract(other),
        }
    }
}

impl LedgerError {
    /// A stable machine-readable code (the gateway and the SDK use it).
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::Empty => "empty",
            LedgerError::Oversized { .. } => "oversized",
            LedgerError::UnsupportedVersion { .. } => "unsupported_version",
            LedgerError::Truncated => "truncated",
            LedgerError::Malformed { .. } => "malformed",
            LedgerError::UnknownKind { .. } => "unknown_kind",
            LedgerError::WrongChainId { .. } => "wrong_chain_id",
            LedgerError::BadSignature => "bad_signature",
            LedgerError::NonceReplayed { .. } => "nonce_replayed",
            LedgerError::NonceSkipped { .. } => "nonce_skipped",
            LedgerError::Expired { .. } => "expired",
            LedgerError::FeeTooLow { .. } => "fee_too_low",
            LedgerError::InsufficientBalance { .. } => "insufficient_balance",
            LedgerError::Overflow => "overflow",
            LedgerError::Contract(_) => "contract_error",
            LedgerError::BatchOutOfOrder { .. } => "batch_out_of_order",
            LedgerError::BatchAlreadyExecuted { .. } => "batch_already_executed",
            LedgerError::GenesisMismatch { .. } => "genesis_mismatch",
            LedgerError::NoGenesis => "no_genesis",
            LedgerError::InvalidGenesis { .. } => "invalid_genesis",
            LedgerError::InvalidBeacon { .. } => "invalid_beacon",
            LedgerError::Storage { .. } => "storage",
            LedgerError::Corrupt { .. } => "corrupt",
        }
    }
}

pub type LedgerResult<T> = Result<T, LedgerError>;
