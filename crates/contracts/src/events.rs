//! What execution reports: every move of money carries its reason, so an account's history says
//! which certificate paid what and why something was slashed.

use serde::{Deserialize, Serialize};

use crate::params::ParamUpdate;
use crate::types::{Address, Amount, DatasetId, Hash32, JobId, ProposalId, TimestampMs, UnitId};
use crate::workers::Role;

/// Why money moved to an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentReason {
    /// The trainer's share of a certified unit's payment.
    TrainerShare {
        unit: UnitId,
        certificate: Hash32,
    },
    /// New TRAIN emitted for a certificate of useful work.
    Emission {
        unit: UnitId,
        certificate: Hash32,
    },
    EvaluatorShare {
        unit: UnitId,
        certificate: Hash32,
    },
    DataProviderShare {
        unit: UnitId,
        certificate: Hash32,
    },
    /// The unspent escrow of a finished or expired job.
    Refund {
        job: JobId,
    },
    /// A share of a slash paid to whoever proved the offence.
    ReporterReward {
        offender: Address,
    },
    /// A governance deposit given back.
    DepositReturned {
        proposal: ProposalId,
    },
    /// A validator's share, by committee stake, of the fees of a batch (`height`) or of a
    /// certificate's emission.
    ValidatorReward {
        height: u64,
    },
}

/// Why stake was slashed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlashReason {
    /// Evaluators rejected the work by a quorum: the rejection certificate.
    RejectedWork { unit: UnitId, certificate: Hash32 },
    /// A validator signed two headers for one round.
    DoubleSign { round: u64 },
    /// An evaluator committed to an attestation and did not reveal it in time (it may have
    /// kept it back after seeing the others').
    WithheldReveal { unit: UnitId },
    /// An evaluator ended on the losing side of a dispute over the unit.
    LostDispute { unit: UnitId },
    /// An evaluator accepted a planted fault ([`crate::plants`]).
    AcceptedPlant { unit: UnitId },
    /// A trainer drawn for a plant did not plant it, or did not open its seal in time.
    SkippedPlant { unit: UnitId },
    /// A trainer let its unit time out.
    TimedOut { unit: UnitId },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Transferred {
        from: Address,
        to: Address,
        amount: Amount,
    },
    FeeBurned {
        payer: Address,
        amount: Amount,
    },
    Paid {
        to: Address,
        amount: Amount,
        reason: PaymentReason,
    },
    Burned {
        amount: Amount,
        reason: String,
    },
    Bonded {
        who: Address,
        amount: Amount,
    },
    UnbondingStarted {
        who: Address,
        amount: Amount,
        release_at: TimestampMs,
    },
    Withdrawn {
        who: Address,
        amount: Amount,
    },
    Slashed {
        who: Address,
        amount: Amount,
        burned: Amount,
        reason: SlashReason,
    },
    WorkerRegistered {
        who: Address,
        role: Role,
    },
    WorkerDeregistered {
        who: Address,
    },
    DatasetAttached {
        dataset: DatasetId,
        provider: Address,
    },
    /// A provider's deposit for its uploads to `node` is now `held`.
    UploadDeposit {
        provider: Address,
        node: String,
        held: Amount,
    },
    JobSubmitted {
        job: JobId,
        owner: Address,
        escrow: Amount,
        units: u32,
    },
    UnitAssigned {
        unit: UnitId,
        trainer: Address,
        attempt: u32,
    },
    UnitWaiting {
        unit: UnitId,
    },
    ResultSubmitted {
        unit: UnitId,
        trainer: Address,
        checkpoint: Hash32,
    },
    EvaluatorsSampled {
        unit: UnitId,
        evaluators: Vec<Address>,
        audit_seed: Hash32,
    },
    Attested {
        unit: UnitId,
        evaluator: Address,
        accept: bool,
    },
    /// An evaluator committed to its attestation (its verdict stays hidden until every
    /// evaluator of the panel committed).
    AttestationCommitted {
        unit: UnitId,
        evaluator: Address,
    },
    /// A quorum of evaluators accepted the unit: a certificate of useful work.
    WorkCertified {
        unit: UnitId,
        trainer: Address,
        checkpoint: Hash32,
        metric_ppm: u32,
        certificate: Hash32,
    },
    WorkRejected {
        unit: UnitId,
        trainer: Address,
        certificate: Hash32,
    },
    UnitTimedOut {
        unit: UnitId,
        trainer: Address,
    },
    JobFinished {
        job: JobId,
        state: String,
        metric_ppm: Option<u32>,
        refunded: Amount,
    },
    ProposalCreated {
        proposal: ProposalId,
        proposer: Address,
        updates: Vec<ParamUpdate>,
    },
    Voted {
        proposal: ProposalId,
        voter: Address,
        approve: bool,
        weight: Amount,
    },
    ProposalPassed {
        proposal: ProposalId,
        execute_at: TimestampMs,
    },
    ProposalRejected {
        proposal: ProposalId,
        reason: String,
    },
    ProposalExecuted {
        proposal: ProposalId,
    },
    /// A unit's verdict is disputed: a contested rejection, or a split panel.
    DisputeOpened {
        unit: UnitId,
        trainer: Address,
        challenger: Address,
    },
    /// A dispute move was played; the interval of steps still in dispute.
    DisputeAdvanced {
        unit: UnitId,
        stage: String,
        agreed_step: u64,
        disputed_step: u64,
    },
    /// A dispute ended: `trainer_wins`, `trainer_loses` or `void`.
    DisputeSettled {
        unit: UnitId,
        outcome: String,
        moves: u32,
    },
    /// The trainer sealed its plant secret for the unit.
    PlantSealed {
        unit: UnitId,
    },
    /// The seal was opened: `clear`, `planted` or `skipped`.
    PlantOpened {
        unit: UnitId,
        outcome: String,
    },
    /// A plant's verdicts are in: who rejected it (`caught`) and who accepted it (`missed`).
    PlantResolved {
        unit: UnitId,
        caught: Vec<Address>,
        missed: Vec<Address>,
    },
}

/// Collects events during one call.
#[derive(Debug, Default)]
pub struct Events(pub Vec<Event>);

impl Events {
    pub fn push(&mut self, e: Event) {
        self.0.push(e);
    }
}
