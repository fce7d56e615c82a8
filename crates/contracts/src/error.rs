//! The one error type of the contracts: each variant names the rule broken.

use crate::types::{Address, Amount, DatasetId, JobId, ProposalId, UnitId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("arithmetic overflow")]
    Overflow,
    #[error("arithmetic underflow")]
    Underflow,
    #[error("insufficient balance: {available} available, {required} required")]
    InsufficientBalance { available: Amount, required: Amount },
    #[error("insufficient free stake: {available} free, {required} required")]
    InsufficientStake { available: Amount, required: Amount },
    #[error("stake {stake} is below the minimum {minimum} for {role}")]
    StakeBelowMinimum {
        role: &'static str,
        stake: Amount,
        minimum: Amount,
    },
    #[error("nothing to withdraw yet (next release at {release_at_ms:?} ms)")]
    NothingToWithdraw { release_at_ms: Option<u64> },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("{what} has {count} items, the limit is {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{0} is already registered as a worker")]
    AlreadyRegistered(Address),
    #[error("{0} is not a registered worker")]
    NotRegistered(Address),
    #[error("worker {0} still has work in progress")]
    WorkInProgress(Address),
    #[error("unknown dataset {0}")]
    UnknownDataset(DatasetId),
    #[error("unknown job {0}")]
    UnknownJob(JobId),
    #[error("unknown work unit {0}")]
    UnknownUnit(UnitId),
    #[error("job {job} is {state}, not open for {action}")]
    JobNotOpen {
        job: JobId,
        state: &'static str,
        action: &'static str,
    },
    #[error("unit {unit} is {state}; {action} is not possible")]
    WrongUnitState {
        unit: UnitId,
        state: &'static str,
        action: &'static str,
    },
    #[error("{caller} is not the trainer assigned to unit {unit}")]
    NotAssignedTrainer { unit: UnitId, caller: Address },
    #[error("{caller} was not sampled to evaluate unit {unit}")]
    NotSampledEvaluator { unit: UnitId, caller: Address },
    #[error("{caller} already attested unit {unit}")]
    AlreadyAttested { unit: UnitId, caller: Address },
    #[error("the budget gives {per_unit} per unit, below the dataset's price share {required}")]
    BudgetTooSmall { per_unit: Amount, required: Amount },
    #[error("the deadline {deadline_ms} ms is not after now ({now_ms} ms)")]
    DeadlinePassed { deadline_ms: u64, now_ms: u64 },
    #[error("unknown proposal {0}")]
    UnknownProposal(ProposalId),
    #[error("proposal {proposal} is {state}; {action} is not possible")]
    WrongProposalState {
        proposal: ProposalId,
        state: &'static str,
        action: &'static str,
    },
    #[error("{0} already voted")]
    AlreadyVoted(Address),
    #[error("{0} has no stake to vote with")]
    NoVotingPower(Address),
    #[error("evidence rejected: {0}")]
    InvalidEvidence(String),
    #[error("{0} is not a validator")]
    NotValidator(Address),
    #[error("evidence for this offence was already used")]
    EvidenceAlreadyUsed,
    #[error("stored state is corrupt: {0}")]
    CorruptState(String),
    #[error("storage failed: {0}")]
    Storage(String),
}

pub type ContractResult<T> = Result<T, ContractError>;
