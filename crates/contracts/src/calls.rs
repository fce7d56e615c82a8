//! Every operation a transaction can ask for, and the dispatcher that runs it.

use serde::{Deserialize, Serialize};
use trainmesh_dag::EquivocationEvidence;

use crate::accounts;
use crate::datasets::{self, DatasetSpec};
use crate::error::{ContractError, ContractResult};
use crate::events::{Event, Events};
use crate::governance;
use crate::jobs::{self, Attestation, JobSpec, WorkResult};
use crate::params::ParamUpdate;
use crate::staking;
use crate::state::State;
use crate::types::{Address, Amount, Context, Hash32, ProposalId, UnitId};
use crate::workers::{self, Capability, Role};

/// The operations, by contract. The variant index is the transaction's call kind on the wire:
/// append new variants, never reorder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    Transfer {
        to: Address,
        amount: Amount,
    },
    Bond {
        amount: Amount,
    },
    Unbond {
        amount: Amount,
    },
    Withdraw,
    ReportDoubleSign {
        evidence: Box<EquivocationEvidence>,
    },
    RegisterWorker {
        role: Role,
        bond: Amount,
        capability: Capability,
        /// The libp2p peer id the worker serves from; its key signs
        /// [`crate::workers::peer_binding_message`] of the sender (`peer_signature`), so no one
        /// can register with another node's peer id.
        peer_id: String,
        peer_signature: Vec<u8>,
    },
    Heartbeat,
    DeregisterWorker,
    AttachDataset {
        spec: DatasetSpec,
    },
    SubmitJob {
        spec: JobSpec,
    },
    SubmitWorkResult {
        unit: UnitId,
        result: WorkResult,
    },
    /// An evaluator's reveal: the attestation it committed to (`CommitAttestation`) and the salt
    /// that opens the commitment. Accepted once every evaluator of the panel committed.
    Attest {
        unit: UnitId,
        attestation: Attestation,
        salt: Hash32,
    },
    Propose {
        description: String,
        updates: Vec<ParamUpdate>,
        deposit: Amount,
    },
    Vote {
        proposal: ProposalId,
        approve: bool,
    },
    /// An evaluator's commitment to its attestation
    /// ([`jobs::attestation_commitment`]), before any evaluator's verdict is visible.
    CommitAttestation {
        unit: UnitId,
        commitment: Hash32,
    },
    /// A move of the dispute over a unit's verdict ([`crate::disputes`]): the trainer's contest
    /// and chain openings, the challenger's answers, the validators' referee votes.
    Dispute {
        unit: UnitId,
        #[serde(rename = "move")]
        mv: crate::disputes::Move,
    },
    /// The assigned trainer seals a secret for its unit ([`crate::plants::seal_of`]); the batch
    /// that executes it decides, with the secret, whether the unit is a planted fault.
    SealPlant {
        unit: UnitId,
        seal: Hash32,
    },
    /// The trainer opens its seal once every evaluator committed ([`crate::plants`]).
    OpenPlant {
        unit: UnitId,
        secret: Hash32,
    },
    /// A data provider's deposit for its uploads to the node `node` (a peer id): the node keeps
    /// what the deposit allows ([`crate::datasets::deposit_for_uploads`]).
    DepositForUploads {
        node: String,
        amount: Amount,
    },
    /// Takes back the deposit at the node serving `dataset`, once that dataset of the sender's
    /// was used by a certified unit.
    ReclaimUploadDeposit {
        dataset: crate::types::DatasetId,
    },
}

impl Call {
    /// A stable name per kind (logs, metrics, the gateway).
    pub fn name(&self) -> &'static str {
        match self {
            Call::Transfer { .. } => "transfer",
            Call::Bond { .. } => "bond",
            Call::Unbond { .. } => "unbond",
            Call::Withdraw => "withdraw",
            Call::ReportDoubleSign { .. } => "report_double_sign",
            Call::RegisterWorker { .. } => "register_worker",
            Call::Heartbeat => "heartbeat",
            Call::DeregisterWorker => "deregister_worker",
            Call::AttachDataset { .. } => "attach_dataset",
            Call::SubmitJob { .. } => "submit_job",
            Call::SubmitWorkResult { .. } => "submit_work_result",
            Call::Attest { .. } => "attest",
            Call::CommitAttestation { .. } => "commit_attestation",
            Call::Dispute { .. } => "dispute",
            Call::SealPlant { .. } => "seal_plant",
            Call::OpenPlant { .. } => "open_plant",
            Call::DepositForUploads { .. } => "deposit_for_uploads",
            Call::ReclaimUploadDeposit { .. } => "reclaim_upload_deposit",
            Call::Propose { .. } => "propose",
            Call::Vote { .. } => "vote",
        }
    }

    /// Number of call kinds (for decoding: a kind at or above it is unknown).
    pub const KINDS: u32 = 20;
}

/// Runs one call for `sender`. On error the caller discards everything the call wrote.
pub fn execute(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    sender: Address,
    call: Call,
) -> ContractResult<Vec<Event>> {
    let mut events = Events::default();
    match call {
        Call::Transfer { to, amount } => {
            // Nothing moved is nothing to record: a zero transfer would create accounts for free.
            if amount.is_zero() {
                return Err(ContractError::Invalid {
                    what: "transfer",
                    reason: "a transfer of 0 moves nothing".into(),
                });
            }
            accounts::transfer(state, &sender, &to, amount)?;
            events.push(Event::Transferred {
                from: sender,
                to,
                amount,
            });
        }
        Call::Bond { amount } => staking::bond(state, sender, amount, &mut events)?,
        Call::Unbond { amount } => staking::unbond(state, ctx, sender, amount, &mut events)?,
        Call::Withdraw => {
            staking::withdraw(state, ctx, sender, &mut events)?;
        }
        Call::ReportDoubleSign { evidence } => {
            staking::slash_double_sign(state, sender, &evidence, &mut events)?;
        }
        Call::RegisterWorker {
            role,
            bond,
            capability,
            peer_id,
            peer_signature,
        } => workers::register(
            state,
            ctx,
            sender,
            workers::Registration {
                role,
                bond,
                capability,
                peer_id,
                peer_signature,
            },
            &mut events,
        )?,
        Call::Heartbeat => workers::heartbeat(state, ctx, sender)?,
        Call::DeregisterWorker => workers::deregister(state, sender, &mut events)?,
        Call::AttachDataset { spec } => {
            datasets::attach(state, ctx, sender, spec, &mut events)?;
        }
        Call::DepositForUploads { node, amount } => {
            datasets::deposit_for_uploads(state, sender, node, amount, &mut events)?;
        }
        Call::ReclaimUploadDeposit { dataset } => {
            datasets::reclaim_upload_deposit(state, sender, dataset, &mut events)?;
        }
        Call::SubmitJob { spec } => {
            jobs::submit(state, ctx, sender, spec, &mut events)?;
        }
        Call::SubmitWorkResult { unit, result } => {
            jobs::submit_result(state, ctx, sender, unit, result, &mut events)?
        }
        Call::Attest {
            unit,
            attestation,
            salt,
        } => jobs::attest(state, ctx, sender, unit, attestation, &salt, &mut events)?,
        Call::CommitAttestation { unit, commitment } => {
            jobs::commit_attestation(state, ctx, sender, unit, commitment, &mut events)?
        }
        Call::Dispute { unit, mv } => {
            crate::disputes::play(state, ctx, sender, unit, mv, &mut events)?
        }
        Call::SealPlant { unit, seal } => {
            crate::plants::seal(state, ctx, sender, unit, seal, &mut events)?
        }
        Call::OpenPlant { unit, secret } => {
            crate::plants::open(state, sender, unit, secret, &mut events)?
        }
        Call::Propose {
            description,
            updates,
            deposit,
        } => {
            governance::propose(
                state,
                ctx,
                sender,
                description,
                updates,
                deposit,
                &mut events,
            )?;
        }
        Call::Vote { proposal, approve } => {
            governance::vote(state, ctx, sender, proposal, approve, &mut events)?
        }
    }
    Ok(events.0)
}

/// What runs after the last transaction of every batch: deadlines, timeouts, governance.
pub fn on_batch_end(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
) -> ContractResult<Vec<Event>> {
    let mut events = Events::default();
    jobs::on_batch_end(state, ctx, &mut events)?;
    governance::on_batch_end(state, ctx, &mut events)?;
    Ok(events.0)
}
