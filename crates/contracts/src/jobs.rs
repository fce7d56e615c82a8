//! JobManager: a researcher's job from escrow to finished weights.
//!
//! ```text
//! SubmitJob ─► unit 0: Waiting ─assign─► Assigned ─result─► Submitted ─quorum accept─► Certified
//!                  ▲                          │ timeout          │ quorum reject            │
//!                  └──────────reassign────────┴──────────────────┘ (slash, exclude)         ▼
//!                                                        next unit, or the job finishes
//! ```
//! Units run one after another (each starts from the previous unit's checkpoint). Trainers and
//! evaluators are drawn from the commit's seed, by stake × reputation, among live, capable
//! workers; evaluators are drawn when the result is committed, so a trainer cannot know them in
//! advance, and the audit seed is fixed only then.

use serde::{Deserialize, Serialize};

use crate::accounts;
use crate::counters;
use crate::datasets;
use crate::error::{ContractError, ContractResult};
use crate::events::{Event, Events, PaymentReason, SlashReason};
use crate::keys;
use crate::params::{self, Params};
use crate::reputation::{self, Outcome};
use crate::sampling::{weighted_sample, Sampler};
use crate::staking;
use crate::state::{State, StateExt};
use crate::types::{Address, Amount, Context, DatasetId, Hash32, JobId, TimestampMs, UnitId};
use crate::workers::{self, Role};

pub const MODEL_SPEC_BYTES_MAX: usize = 16 * 1024;
pub const UNITS_PER_JOB_MAX: u64 = 10_000;
pub const ACTIVE_JOBS_MAX: usize = 1_000;
/// Active jobs one owner may hold: nobody takes every slot.
pub const ACTIVE_JOBS_PER_OWNER_MAX: usize = 16;
/// The furthest deadline a job may set: a slot is not held indefinitely.
pub const JOB_DEADLINE_MAX_MS: u64 = 90 * 24 * 3_600_000;
/// The least a job pays per unit: a slot costs something.
pub const UNIT_PRICE_MIN: Amount = Amount(crate::types::UNITS_PER_TRAIN);
/// Bounds on what a job asks of a worker, checked before anything is allocated.
pub const STEPS_PER_UNIT_MAX: u64 = 1_000_000;
pub const BATCH_SIZE_MAX: u32 = 65_536;
/// The most memory a job may require or a worker may declare (1 TiB): beyond it a requirement
/// only selects a worker that declared the impossible.
pub const MEMORY_MB_MAX: u64 = 1 << 20;
/// How many unit timeouts a unit may wait for a capable trainer before its job expires.
pub const WAITING_TIMEOUTS_MAX: u64 = 10;
pub const LOSS_TRACE_MAX: usize = 1_024;
pub const SEGMENTS_MAX: u32 = 4_096;
pub const SEGMENTS_CHECKED_MAX: usize = 512;
/// The most segments a unit's checkpoint chain is cut into ([`chain_segments`]): enough that
/// the panel's audit of a unit of ≥ 1,024 steps costs under a tenth of its training.
pub const CHAIN_SEGMENTS: u64 = 1_024;
/// How many times the base collateral ([`unit_collateral`]) a trainer locks for a unit of
/// `steps` steps: what the panel's sample cannot see. Faking one middle segment of m is
/// caught with probability about `AUDIT_DRAWN / (m − 2)`, so the collateral is the base times
/// ⌈(m − 2) / AUDIT_DRAWN⌉: the expected slash for faking even one segment is at least the base.
pub fn collateral_factor(steps: u64) -> u32 {
    chain_segments(steps)
        .saturating_sub(2)
        .div_ceil(AUDIT_DRAWN)
        .max(1)
}

/// The collateral a trainer locks for a unit of `steps` steps: the base, the minimum trainer
/// stake × `slash_rejected_work_bps`, times [`collateral_factor`]. The base is the network's, not
/// a share of the trainer's own stake: a share of its own stake times a factor above
/// 10,000 / `slash_rejected_work_bps` (5 by default, units of more than 222 segments) would
/// exceed any stake, and no trainer could take such a unit. A trainer with more stake takes more
/// units at once.
pub fn unit_collateral(p: &Params, steps: u64) -> Amount {
    let base = p.min_trainer_stake.mul_bps(p.slash_rejected_work_bps);
    Amount(base.0.saturating_mul(u128::from(collateral_factor(steps))))
}

/// What an evaluator that committed to an attestation and never revealed it loses, in basis
/// points of the minimum evaluator stake.
pub const WITHHELD_REVEAL_SLASH_BPS: u32 = 1_000;

/// Middle segments the whole panel draws per unit at tier ≥ 1: the least k with
/// (1 − 0.1)^k ≤ 0.01, so a trainer faking 10% of its segments is missed by every evaluator
/// together with probability below 0.01 (`docs/design/gpu.md`). Each evaluator draws its share
/// ([`audit_segments`]) independently, from its own seed.
pub const AUDIT_DRAWN: u32 = 44;

/// Segments each evaluator re-executes per unit at tier ≥ 1: the first and the last (so a
/// replaced final checkpoint is never missed) and its share of [`AUDIT_DRAWN`].
pub fn audit_segments(p: &Params) -> u32 {
    panel_audit_segments(p.evaluators_per_unit as usize)
}

/// Segments each evaluator of a panel of `panel` re-executes: the first, the last, and its share
/// of [`AUDIT_DRAWN`]. A unit's draw is sized by the panel it drew ([`Unit::drawn_segments`]),
/// so a parameter change after the panel was drawn cannot change what its evaluators owe.
pub fn panel_audit_segments(panel: usize) -> u32 {
    2 + AUDIT_DRAWN.div_ceil(panel.max(1) as u32)
}

/// How many segments the chain of a unit of `steps` steps has — fixed by the contract, not by
/// the trainer: the most (up to [`CHAIN_SEGMENTS`]) that divide the unit into equal segments.
pub fn chain_segments(steps: u64) -> u32 {
    let len = (1..=steps)
        .find(|d| steps.is_multiple_of(*d) && steps / d <= CHAIN_SEGMENTS)
        .unwrap_or(steps.max(1));
    (steps / len).max(1) as u32
}
/// Metrics are parts per million: accuracy 0.95 = 950,000; a loss of 0.1 = 100,000.
pub const PPM: u32 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Optimizer {
    Sgd,
    Adam,
    /// AdamW for language models: betas (0.9, 0.95), eps 10⁻⁸, weight decay 0.1 on matrices,
    /// linear warm-up then cosine decay to a tenth of the rate ([`AdamWSchedule`]), gradients
    /// clipped to norm 1.
    AdamW,
}

/// The warm-up and decay lengths of an AdamW job, fixed by its hyper-parameters so that every
/// trainer and evaluator runs the same schedule: warm-up over a tenth of the steps (at most
/// 1,000), decay to the last step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdamWSchedule {
    pub warmup_steps: u64,
    pub decay_steps: u64,
}

impl AdamWSchedule {
    pub fn of(h: &HyperParams) -> Self {
        AdamWSchedule {
            warmup_steps: (h.total_steps / 10).min(1_000),
            decay_steps: h.total_steps,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HyperParams {
    pub optimizer: Optimizer,
    /// Learning rate × 10⁶.
    pub learning_rate_ppm: u32,
    pub batch_size: u32,
    pub total_steps: u64,
    pub steps_per_unit: u64,
    pub seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Metric {
    /// Held-out accuracy; the target is reached at or above the threshold.
    Accuracy,
    /// Held-out loss; the target is reached at or below the threshold.
    Loss,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub metric: Metric,
    pub threshold_ppm: u32,
}

impl Target {
    pub fn reached(&self, metric_ppm: u32) -> bool {
        match self.metric {
            Metric::Accuracy => metric_ppm >= self.threshold_ppm,
            Metric::Loss => metric_ppm <= self.threshold_ppm,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The declarative model spec (JSON), validated in full by the GPU engine.
    pub model: String,
    pub dataset: DatasetId,
    pub hyper: HyperParams,
    pub target: Target,
    pub budget: Amount,
    pub deadline: TimestampMs,
    /// 0: recompute the metric; 1: also audit checkpoint-chain segments; 2: disputes allowed.
    pub tier: u8,
    pub min_memory_mb: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Running,
    /// The target metric was reached.
    Completed,
    /// Every step ran without reaching the target.
    Exhausted,
    /// The deadline passed first.
    Expired,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Exhausted => "exhausted",
            JobState::Expired => "expired",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub owner: Address,
    pub spec: JobSpec,
    pub state: JobState,
    /// What is left of the budget.
    pub escrow: Amount,
    pub price_per_unit: Amount,
    pub units_total: u32,
    pub units_done: u32,
    pub current_unit: u32,
    pub latest_checkpoint: Hash32,
    pub latest_metric_ppm: Option<u32>,
    pub created_at: TimestampMs,
    pub finished_at: Option<TimestampMs>,
}

/// What a trainer commits to for a unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkResult {
    /// BLAKE3 of the final checkpoint (safetensors).
    pub checkpoint: Hash32,
    /// Merkle root of the checkpoint chain (a hash every steps/segments steps).
    pub chain_root: Hash32,
    pub segments: u32,
    /// Training loss per segment, × 10⁶.
    pub loss_trace_ppm: Vec<u32>,
    /// The trainer's own measurement of the target metric.
    pub metric_ppm: u32,
}

/// An evaluator's signed verdict (signed as the transaction carrying it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    pub accept: bool,
    /// The metric the evaluator recomputed on the held-out split.
    pub metric_ppm: u32,
    pub tier: u8,
    /// Segments of the chain it re-executed (tier ≥ 1).
    pub segments_checked: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnitState {
    /// No capable trainer was free; retried every batch.
    Waiting,
    Assigned,
    Submitted,
    Certified,
    Cancelled,
    /// A quorum rejected; the trainer may contest until the dispute's deadline.
    Rejected,
    /// A dispute is under way ([`crate::disputes`]).
    Disputed,
}

impl UnitState {
    pub fn name(self) -> &'static str {
        match self {
            UnitState::Waiting => "waiting",
            UnitState::Assigned => "assigned",
            UnitState::Submitted => "submitted",
            UnitState::Certified => "certified",
            UnitState::Cancelled => "cancelled",
            UnitState::Rejected => "rejected",
            UnitState::Disputed => "disputed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    pub id: UnitId,
    pub start_checkpoint: Hash32,
    pub first_step: u64,
    pub steps: u64,
    pub state: UnitState,
    pub trainer: Option<Address>,
    pub attempt: u32,
    /// Workers that failed this unit (trainers rejected or timed out, evaluators that lost a
    /// dispute over it); never drawn again for it.
    pub excluded: Vec<Address>,
    pub collateral: Amount,
    pub assigned_at: TimestampMs,
    pub result: Option<WorkResult>,
    pub submitted_at: TimestampMs,
    pub evaluators: Vec<Address>,
    /// Each panel evaluator's commitment to its attestation; reveals open when all are in.
    pub commitments: Vec<(Address, Hash32)>,
    pub attestations: Vec<(Address, Attestation)>,
    /// Chooses the audited segments; fixed only after the result is committed.
    pub audit_seed: Hash32,
    /// The certificate (of useful work, or of rejection) that closed the last attempt.
    pub certificate: Option<Hash32>,
    /// The dispute over the current attempt's verdict, while one is open (or contestable).
    pub dispute: Option<crate::disputes::Dispute>,
    /// The trainer's sealed plant secret for the current result ([`crate::plants`]).
    pub plant: Option<crate::plants::Plant>,
    /// Whether a plant of this unit was opened already: a unit is planted at most once.
    pub planted: bool,
}

impl Unit {
    /// The chain segments `evaluator` must re-execute at `tier`: the ledger's draw, from the
    /// unit's audit seed, its result's chain root and the evaluator's address, sized by the panel
    /// drawn with the seed (empty at tier 0 or without a result).
    pub fn drawn_segments(&self, evaluator: &Address, tier: u8) -> Vec<u32> {
        match (&self.result, tier) {
            (Some(r), 1..) => crate::sampling::audit_sample(
                &self.audit_seed.0,
                &r.chain_root.0,
                evaluator,
                r.segments,
                panel_audit_segments(self.evaluators.len()),
            ),
            _ => Vec::new(),
        }
    }
}

fn invalid(reason: String) -> ContractError {
    ContractError::Invalid {
        what: "job",
        reason,
    }
}

impl JobSpec {
    pub fn validate(&self, now: TimestampMs) -> ContractResult<()> {
        if self.model.is_empty() {
            return Err(invalid("empty model spec".into()));
        }
        if self.model.len() > MODEL_SPEC_BYTES_MAX {
            return Err(ContractError::TooMany {
                what: "model spec bytes",
                count: self.model.len(),
                max: MODEL_SPEC_BYTES_MAX,
            });
        }
        let h = &self.hyper;
        if h.steps_per_unit == 0 || h.total_steps == 0 {
            return Err(invalid("steps must be positive".into()));
        }
        if h.batch_size == 0 || h.learning_rate_ppm == 0 {
            return Err(invalid(
                "batch size and learning rate must be positive".into(),
            ));
        }
        if h.steps_per_unit > STEPS_PER_UNIT_MAX || h.batch_size > BATCH_SIZE_MAX {
            return Err(invalid(format!(
                "at most {STEPS_PER_UNIT_MAX} steps per unit and batches of {BATCH_SIZE_MAX}"
            )));
        }
        if self.min_memory_mb > MEMORY_MB_MAX {
            return Err(invalid(format!(
                "a unit cannot require more than {MEMORY_MB_MAX} MB"
            )));
        }
        if self.deadline.0 > now.0.saturating_add(JOB_DEADLINE_MAX_MS) {
            return Err(invalid(format!(
                "the deadline is more than {} days away",
                JOB_DEADLINE_MAX_MS / 86_400_000
            )));
        }
        let units = self.units();
        if units > UNITS_PER_JOB_MAX {
            return Err(ContractError::TooMany {
                what: "work units",
                count: units as usize,
                max: UNITS_PER_JOB_MAX as usize,
            });
        }
        if self.tier > 2 {
            return Err(invalid(format!(
                "verification tier {} does not exist",
                self.tier
            )));
        }
        if self.budget.is_zero() {
            return Err(invalid("zero budget".into()));
        }
        if self.deadline <= now {
            return Err(ContractError::DeadlinePassed {
                deadline_ms: self.deadline.0,
                now_ms: now.0,
            });
        }
        if self.target.metric == Metric::Accuracy && self.target.threshold_ppm > PPM {
            return Err(invalid("accuracy target above 1".into()));
        }
        Ok(())
    }

    pub fn units(&self) -> u64 {
        self.hyper.total_steps.div_ceil(self.hyper.steps_per_unit)
    }
}

pub fn load_job(state: &(impl State + ?Sized), id: JobId) -> ContractResult<Job> {
    state
        .read(&keys::job(id))?
        .ok_or(ContractError::UnknownJob(id))
}

pub(crate) fn store_job(state: &mut (impl State + ?Sized), job: &Job) {
    state.write(keys::job(job.id), job);
}

pub fn load_unit(state: &(impl State + ?Sized), id: UnitId) -> ContractResult<Unit> {
    state
        .read(&keys::unit(id))?
        .ok_or(ContractError::UnknownUnit(id))
}

/// Loads a unit that must be in `expected` state for `action`.
fn load_unit_in(
    state: &(impl State + ?Sized),
    id: UnitId,
    expected: UnitState,
    action: &'static str,
) -> ContractResult<Unit> {
    let unit = load_unit(state, id)?;
    if unit.state != expected {
        return Err(ContractError::WrongUnitState {
            unit: id,
            state: unit.state.name(),
            action,
        });
    }
    Ok(unit)
}

pub(crate) fn store_unit(state: &mut (impl State + ?Sized), unit: &Unit) {
    state.write(keys::unit(unit.id), unit);
}

pub fn active_jobs(state: &(impl State + ?Sized)) -> ContractResult<Vec<JobId>> {
    Ok(state.read(keys::ACTIVE_JOBS)?.unwrap_or_default())
}

pub fn submit(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    owner: Address,
    spec: JobSpec,
    events: &mut Events,
) -> ContractResult<JobId> {
    spec.validate(ctx.time)?;
    let p = params::load(state)?;
    let dataset = datasets::load(state, spec.dataset)?;
    let units = spec.units() as u32;
    let price_per_unit = Amount(spec.budget.0 / units as u128);
    let provider_share = price_per_unit.mul_bps(p.fee_share_data_provider_bps);
    if provider_share < dataset.spec.price_per_use || price_per_unit.is_zero() {
        return Err(ContractError::BudgetTooSmall {
            per_unit: provider_share,
            required: dataset.spec.price_per_use,
        });
    }
    if price_per_unit < UNIT_PRICE_MIN {
        return Err(ContractError::BudgetTooSmall {
            per_unit: price_per_unit,
            required: UNIT_PRICE_MIN,
        });
    }
    let mut active = active_jobs(state)?;
    if active.len() >= ACTIVE_JOBS_MAX {
        return Err(ContractError::TooMany {
            what: "active jobs",
            count: active.len() + 1,
            max: ACTIVE_JOBS_MAX,
        });
    }
    let mut owned = 0;
    for id in &active {
        if load_job(state, *id)?.owner == owner {
            owned += 1;
        }
    }
    if owned >= ACTIVE_JOBS_PER_OWNER_MAX {
        return Err(ContractError::TooMany {
            what: "active jobs of one owner",
            count: owned + 1,
            max: ACTIVE_JOBS_PER_OWNER_MAX,
        });
    }
    accounts::debit(state, &owner, spec.budget)?;
    let mut c = counters::load(state)?;
    c.jobs += 1;
    counters::store(state, &c);
    let id = JobId(c.jobs);
    active.push(id);
    state.write(keys::ACTIVE_JOBS.to_vec(), &active);
    let job = Job {
        id,
        owner,
        escrow: spec.budget,
        spec,
        state: JobState::Running,
        price_per_unit,
        units_total: units,
        units_done: 0,
        current_unit: 0,
        latest_checkpoint: Hash32::default(),
        latest_metric_ppm: None,
        created_at: ctx.time,
        finished_at: None,
    };
    events.push(Event::JobSubmitted {
        job: id,
        owner,
        escrow: job.escrow,
        units,
    });
    store_job(state, &job);
    open_unit(state, ctx, &job, &p, events)?;
    Ok(id)
}

/// Creates the job's current unit and tries to assign it.
fn open_unit(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    job: &Job,
    p: &Params,
    events: &mut Events,
) -> ContractResult<()> {
    let first_step = job.current_unit as u64 * job.spec.hyper.steps_per_unit;
    let steps = job
        .spec
        .hyper
        .steps_per_unit
        .min(job.spec.hyper.total_steps - first_step);
    let mut unit = Unit {
        id: UnitId {
            job: job.id,
            index: job.current_unit,
        },
        start_checkpoint: job.latest_checkpoint,
        first_step,
        steps,
        state: UnitState::Waiting,
        trainer: None,
        attempt: 0,
        excluded: Vec::new(),
        collateral: Amount::ZERO,
        assigned_at: ctx.time,
        result: None,
        submitted_at: ctx.time,
        evaluators: Vec::new(),
        commitments: Vec::new(),
        attestations: Vec::new(),
        audit_seed: Hash32::default(),
        certificate: None,
        dispute: None,
        plant: None,
        planted: false,
    };
    assign(state, ctx, job, &mut unit, p, events)?;
    store_unit(state, &unit);
    Ok(())
}

/// When waiting units are drawn again: `version` moves whenever a trainer may have become
/// drawable (it registered, came back alive, bonded, had collateral or a bond released, or the
/// parameters changed); the end of a batch draws the waiting units only when it moved since the
/// last draw (`drawn`). Nothing else makes a waiting unit takeable: time only takes liveness away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolVersion {
    pub version: u64,
    pub drawn: u64,
}

fn pool_version(state: &(impl State + ?Sized)) -> ContractResult<PoolVersion> {
    Ok(state.read(keys::TRAINER_POOL)?.unwrap_or_default())
}

/// Something that can make a trainer drawable changed: waiting units are drawn again at the end
/// of the batch.
pub fn trainer_pool_changed(state: &mut (impl State + ?Sized)) -> ContractResult<()> {
    let mut v = pool_version(state)?;
    v.version += 1;
    state.write(keys::TRAINER_POOL.to_vec(), &v);
    Ok(())
}

/// A live worker of a role whose stake meets the role's minimum, with what a draw filters and
/// weighs it by.
#[derive(Clone, Debug)]
struct PoolEntry {
    address: Address,
    memory_mb: u64,
    free_stake: Amount,
    score: u128,
}

/// Every live worker of `role` with the role's minimum stake: one scan of the worker index.
fn pool(
    state: &(impl State + ?Sized),
    ctx: &Context,
    role: Role,
    p: &Params,
) -> ContractResult<Vec<PoolEntry>> {
    let minimum = workers::minimum_stake(p, role);
    let mut out = Vec::new();
    for a in workers::index(state)? {
        let Some(w) = workers::load(state, &a)? else {
            continue;
        };
        if w.role != role || !w.is_alive(ctx.time, p) {
            continue;
        }
        let account = accounts::load(state, &a)?;
        if account.stake < minimum {
            continue;
        }
        let score = reputation::score(state, &a, ctx.time, p.reputation_half_life_ms)? as u128;
        out.push(PoolEntry {
            address: a,
            memory_mb: w.capability.memory_mb,
            free_stake: account.free_stake(),
            score,
        });
    }
    Ok(out)
}

/// The entries of a pool a draw may pick, with their weight (free stake × reputation): enough
/// memory, not excluded, and free stake covering `free_at_least` and the role's collateral floor.
fn eligible(
    pool: &[PoolEntry],
    role: Role,
    min_memory_mb: u64,
    exclude: &[Address],
    free_at_least: Amount,
    p: &Params,
) -> Vec<(Address, u128)> {
    let floor = workers::minimum_stake(p, role).mul_bps(p.slash_rejected_work_bps);
    pool.iter()
        .filter(|e| {
            e.memory_mb >= min_memory_mb
                && !exclude.contains(&e.address)
                && e.free_stake >= floor
                && e.free_stake >= free_at_least
        })
        // Stake in milli-TRAIN keeps the product far from overflow.
        .map(|e| {
            let weight = (e.free_stake.0 / 1_000_000).max(1).saturating_mul(e.score);
            (e.address, weight)
        })
        .collect()
}

/// Live, capable workers of a role with their assignment weight (free stake × reputation).
fn candidates(
    state: &(impl State + ?Sized),
    ctx: &Context,
    role: Role,
    min_memory_mb: u64,
    exclude: &[Address],
    p: &Params,
) -> ContractResult<Vec<(Address, u128)>> {
    let all = pool(state, ctx, role, p)?;
    Ok(eligible(
        &all,
        role,
        min_memory_mb,
        exclude,
        Amount::ZERO,
        p,
    ))
}

fn unit_domain(tag: &[u8], unit: &Unit) -> Vec<u8> {
    let mut d = tag.to_vec();
    d.extend_from_slice(&unit.id.job.0.to_le_bytes());
    d.extend_from_slice(&unit.id.index.to_le_bytes());
    d.extend_from_slice(&unit.attempt.to_le_bytes());
    d
}

/// Who is paid by a job besides its workers — its owner and its dataset's provider — and so is
/// never drawn to train or evaluate it: a job's owner cannot pay itself emission through its own
/// worker account. (Accounts the ledger cannot tell apart are one party it cannot see; the
/// emission cap in `certify` bounds what such a party gains.)
fn parties(state: &(impl State + ?Sized), job: &Job) -> ContractResult<[Address; 2]> {
    Ok([job.owner, datasets::load(state, job.spec.dataset)?.provider])
}

/// Draws a trainer for a waiting unit and locks its collateral; leaves the unit waiting if none.
fn assign(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    job: &Job,
    unit: &mut Unit,
    p: &Params,
    events: &mut Events,
) -> ContractResult<()> {
    let mut trainers = pool(state, ctx, Role::Trainer, p)?;
    assign_from(state, ctx, job, unit, &mut trainers, p, events)
}

/// [`assign`] from a pool already scanned (the end of a batch draws every waiting unit from one
/// scan); the pool is kept exact: the drawn trainer's free stake drops by the collateral locked.
fn assign_from(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    job: &Job,
    unit: &mut Unit,
    trainers: &mut [PoolEntry],
    p: &Params,
    events: &mut Events,
) -> ContractResult<()> {
    let mut exclude = unit.excluded.clone();
    exclude.extend(parties(state, job)?);
    let collateral = unit_collateral(p, unit.steps);
    // Only trainers whose free stake covers this unit's collateral are drawn.
    let drawable = eligible(
        trainers,
        Role::Trainer,
        job.spec.min_memory_mb,
        &exclude,
        collateral,
        p,
    );
    let mut sampler = Sampler::new(&ctx.seed, &unit_domain(b"assign", unit));
    let Some(trainer) = weighted_sample(drawable, 1, &mut sampler).pop() else {
        if unit.state != UnitState::Waiting {
            // Waiting from now: the wait's limit counts from here.
            unit.assigned_at = ctx.time;
        }
        unit.state = UnitState::Waiting;
        events.push(Event::UnitWaiting { unit: unit.id });
        return Ok(());
    };
    let mut account = accounts::load(state, &trainer)?;
    account.locked = account.locked.checked_add(collateral)?;
    accounts::store(state, &trainer, &account);
    if let Some(e) = trainers.iter_mut().find(|e| e.address == trainer) {
        e.free_stake = account.free_stake();
    }
    workers::adjust_open_units(state, &trainer, 1)?;
    unit.trainer = Some(trainer);
    unit.plant = None;
    unit.collateral = collateral;
    unit.state = UnitState::Assigned;
    unit.assigned_at = ctx.time;
    unit.result = None;
    unit.evaluators.clear();
    unit.commitments.clear();
    unit.attestations.clear();
    events.push(Event::UnitAssigned {
        unit: unit.id,
        trainer,
        attempt: unit.attempt,
    });
    Ok(())
}

/// The unit's trainer failed it (rejected or silent): never draw it again for this unit, and
/// draw another.
fn exclude_and_reassign(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    job: &Job,
    unit: &mut Unit,
    failed: Address,
    p: &Params,
    events: &mut Events,
) -> ContractResult<()> {
    unit.excluded.push(failed);
    unit.trainer = None;
    unit.attempt += 1;
    assign(state, ctx, job, unit, p, events)
}

fn release_trainer(state: &mut (impl State + ?Sized), unit: &mut Unit) -> ContractResult<()> {
    if let Some(t) = unit.trainer {
        let mut account = accounts::load(state, &t)?;
        account.locked = account.locked.saturating_sub(unit.collateral);
        accounts::store(state, &t, &account);
        workers::adjust_open_units(state, &t, -1)?;
        trainer_pool_changed(state)?;
    }
    unit.collateral = Amount::ZERO;
    Ok(())
}

fn release_evaluators(state: &mut (impl State + ?Sized), unit: &Unit) -> ContractResult<()> {
    for e in &unit.evaluators {
        workers::adjust_open_units(state, e, -1)?;
    }
    Ok(())
}

/// Draws the evaluator panel of a submitted unit (never its trainer), optionally leaving out the
/// current panel (after a split verdict or silence).
fn sample_evaluators(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    unit: &mut Unit,
    exclude_current: bool,
    p: &Params,
    events: &mut Events,
) -> ContractResult<()> {
    let mut exclude = vec![unit.trainer.unwrap_or_default()];
    exclude.extend(unit.excluded.iter().copied());
    exclude.extend(parties(state, &load_job(state, unit.id.job)?)?);
    if exclude_current {
        exclude.extend(unit.evaluators.iter().copied());
    }
    let pool = candidates(state, ctx, Role::Evaluator, 0, &exclude, p)?;
    let mut sampler = Sampler::new(&ctx.seed, &unit_domain(b"evaluate", unit));
    release_evaluators(state, unit)?;
    unit.evaluators = weighted_sample(pool, p.evaluators_per_unit as usize, &mut sampler);
    unit.commitments.clear();
    unit.attestations.clear();
    if let Some(plant) = &mut unit.plant {
        if plant.opened.is_none() {
            // A fresh panel commits afresh: the opening's deadline restarts with it.
            plant.committed_at = None;
        }
    }
    for e in &unit.evaluators {
        workers::adjust_open_units(state, e, 1)?;
    }
    let mut audit = blake3::Hasher::new_keyed(&ctx.seed);
    audit.update(&unit_domain(b"audit", unit));
    unit.audit_seed = Hash32(*audit.finalize().as_bytes());
    unit.submitted_at = ctx.time;
    events.push(Event::EvaluatorsSampled {
        unit: unit.id,
        evaluators: unit.evaluators.clone(),
        audit_seed: unit.audit_seed,
    });
    Ok(())
}

pub fn submit_result(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    sender: Address,
    unit_id: UnitId,
    result: WorkResult,
    events: &mut Events,
) -> ContractResult<()> {
    let mut unit = load_unit_in(state, unit_id, UnitState::Assigned, "submitting a result")?;
    if unit.trainer != Some(sender) {
        return Err(ContractError::NotAssignedTrainer {
            unit: unit_id,
            caller: sender,
        });
    }
    let segments = chain_segments(unit.steps);
    if result.segments != segments {
        return Err(invalid(format!(
            "{} segments, but a unit of {} steps is cut into {segments}",
            result.segments, unit.steps
        )));
    }
    if result.loss_trace_ppm.len() > LOSS_TRACE_MAX {
        return Err(ContractError::TooMany {
            what: "loss trace entries",
            count: result.loss_trace_ppm.len(),
            max: LOSS_TRACE_MAX,
        });
    }
    let p = params::load(state)?;
    let tier = load_job(state, unit_id.job)?.spec.tier;
    if crate::plants::required(&unit, tier, &p) && unit.plant.is_none() {
        return Err(invalid(
            "seal a plant secret for the unit (SealPlant) before submitting its result".into(),
        ));
    }
    events.push(Event::ResultSubmitted {
        unit: unit_id,
        trainer: sender,
        checkpoint: result.checkpoint,
    });
    unit.result = Some(result);
    unit.state = UnitState::Submitted;
    sample_evaluators(state, ctx, &mut unit, false, &p, events)?;
    store_unit(state, &unit);
    Ok(())
}

fn certificate_id(unit: &Unit, accept: bool, signers: &[Address]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(if accept {
        b"certificate/accept"
    } else {
        b"certificate/reject"
    });
    h.update(&unit.id.job.0.to_le_bytes());
    h.update(&unit.id.index.to_le_bytes());
    h.update(&unit.attempt.to_le_bytes());
    if let Some(r) = &unit.result {
        h.update(&r.checkpoint.0);
        h.update(&r.chain_root.0);
    }
    for s in signers {
        h.update(&s.0);
    }
    Hash32(*h.finalize().as_bytes())
}

/// What an evaluator commits to before any verdict of its panel is visible: BLAKE3 over a domain
/// tag, the unit and attempt, the evaluator, the attestation (BCS) and a secret salt. Binding the
/// evaluator's address means a commitment cannot be copied from another evaluator of the panel.
pub fn attestation_commitment(
    unit: UnitId,
    attempt: u32,
    evaluator: &Address,
    attestation: &Attestation,
    salt: &Hash32,
) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(b"trainmesh/attestation/v1");
    h.update(&unit.job.0.to_le_bytes());
    h.update(&unit.index.to_le_bytes());
    h.update(&attempt.to_le_bytes());
    h.update(&evaluator.0);
    h.update(&bcs::to_bytes(attestation).expect("an attestation encodes"));
    h.update(&salt.0);
    Hash32(*h.finalize().as_bytes())
}

/// A panel evaluator commits to its attestation (once per attempt).
pub fn commit_attestation(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    sender: Address,
    unit_id: UnitId,
    commitment: Hash32,
    events: &mut Events,
) -> ContractResult<()> {
    let mut unit = load_unit_in(
        state,
        unit_id,
        UnitState::Submitted,
        "committing an attestation",
    )?;
    if !unit.evaluators.contains(&sender) {
        return Err(ContractError::NotSampledEvaluator {
            unit: unit_id,
            caller: sender,
        });
    }
    if unit.commitments.iter().any(|(a, _)| *a == sender) {
        return Err(ContractError::AlreadyAttested {
            unit: unit_id,
            caller: sender,
        });
    }
    unit.commitments.push((sender, commitment));
    if unit.commitments.len() == unit.evaluators.len() {
        crate::plants::on_commitments_complete(ctx, &mut unit);
    }
    events.push(Event::AttestationCommitted {
        unit: unit_id,
        evaluator: sender,
    });
    store_unit(state, &unit);
    Ok(())
}

/// A panel evaluator reveals the attestation it committed to. Reveals open only once every
/// evaluator of the panel committed, so none can copy or answer another's verdict.
pub fn attest(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    sender: Address,
    unit_id: UnitId,
    attestation: Attestation,
    salt: &Hash32,
    events: &mut Events,
) -> ContractResult<()> {
    let mut unit = load_unit_in(state, unit_id, UnitState::Submitted, "attesting")?;
    if !unit.evaluators.contains(&sender) {
        return Err(ContractError::NotSampledEvaluator {
            unit: unit_id,
            caller: sender,
        });
    }
    if unit.attestations.iter().any(|(a, _)| *a == sender) {
        return Err(ContractError::AlreadyAttested {
            unit: unit_id,
            caller: sender,
        });
    }
    let Some(&(_, committed)) = unit.commitments.iter().find(|(a, _)| *a == sender) else {
        return Err(invalid(
            "an attestation is revealed only after it was committed".into(),
        ));
    };
    if unit.commitments.len() < unit.evaluators.len() {
        return Err(invalid(format!(
            "reveals open once every evaluator of the panel committed ({} of {})",
            unit.commitments.len(),
            unit.evaluators.len()
        )));
    }
    if crate::plants::reveals_wait(&unit) {
        return Err(invalid(
            "reveals open once the trainer opened its plant seal (or its deadline passed)".into(),
        ));
    }
    if attestation_commitment(unit_id, unit.attempt, &sender, &attestation, salt) != committed {
        return Err(invalid(
            "the revealed attestation does not open its commitment".into(),
        ));
    }
    if attestation.segments_checked.len() > SEGMENTS_CHECKED_MAX {
        return Err(ContractError::TooMany {
            what: "segments checked",
            count: attestation.segments_checked.len(),
            max: SEGMENTS_CHECKED_MAX,
        });
    }
    let mut job = load_job(state, unit_id.job)?;
    let p = params::load(state)?;
    let tier = job.spec.tier;
    if attestation.tier != tier {
        return Err(invalid(format!(
            "an attestation of tier {} for a job of tier {tier}",
            attestation.tier
        )));
    }
    // The segments this evaluator had to re-execute are the ledger's draw, not its choice.
    let expected = unit.drawn_segments(&sender, tier);
    if attestation.segments_checked != expected {
        return Err(invalid(format!(
            "segments checked {:?} are not the drawn {expected:?}",
            attestation.segments_checked
        )));
    }
    events.push(Event::Attested {
        unit: unit_id,
        evaluator: sender,
        accept: attestation.accept,
    });
    let accepted = attestation.accept;
    unit.attestations.push((sender, attestation));
    let t = tally(&unit);
    let all_in = unit.attestations.len() == unit.evaluators.len();
    let quorum = p.attestation_quorum as usize;
    if crate::plants::is_planted(&unit) {
        // A plant: each verdict is judged against the known fault; no certificate, no dispute.
        crate::plants::judge(state, ctx, sender, accepted, &p)?;
        if all_in {
            crate::plants::resolve(state, ctx, &mut unit, &p, events)?;
        }
    } else if t.rejects.len() >= quorum {
        reject(state, ctx, &job, &mut unit, &t.rejects, &p, events)?;
    } else if tier >= 1 && !t.rejects.is_empty() {
        // Dissent on audited work: once the whole panel has spoken, a dispute — the dissenters
        // contest the acceptance, or the panel split. A trainer with one friendly evaluator gets
        // no free redraws, an evaluator that saw a fault is not outvoted, and whoever is wrong
        // about the chain pays.
        if all_in {
            crate::disputes::open_on_split(
                state, ctx, &mut unit, &t.accepts, &t.rejects, &p, events,
            )?;
        }
    } else if t.accepts.len() >= quorum && t.metrics_agree && (all_in || tier == 0) {
        certify(state, ctx, &mut job, &mut unit, &t.accepts, &p, events)?;
    } else if all_in {
        // Accepts that disagree on the metric, or a split over an unaudited tier: nothing to
        // bisect; a fresh panel.
        redraw_panel(state, ctx, &mut unit, &p, events)?;
    }
    store_unit(state, &unit);
    store_job(state, &job);
    Ok(())
}

fn pay(
    state: &mut (impl State + ?Sized),
    to: Address,
    amount: Amount,
    reason: PaymentReason,
    events: &mut Events,
) -> ContractResult<()> {
    if amount.is_zero() {
        return Ok(());
    }
    accounts::credit(state, &to, amount)?;
    events.push(Event::Paid { to, amount, reason });
    Ok(())
}

/// A panel's attestations so far.
pub(crate) struct Tally {
    pub(crate) accepts: Vec<Address>,
    pub(crate) rejects: Vec<Address>,
    /// Every engine is exact, so honest evaluators measure the same held-out metric: accepts
    /// that disagree on it certify nothing (one of them did not compute what it claims).
    metrics_agree: bool,
}

pub(crate) fn tally(unit: &Unit) -> Tally {
    let verdict = |accept: bool| -> Vec<Address> {
        unit.attestations
            .iter()
            .filter(|(_, a)| a.accept == accept)
            .map(|(e, _)| *e)
            .collect()
    };
    let metrics: std::collections::BTreeSet<u32> = unit
        .attestations
        .iter()
        .filter(|(_, a)| a.accept)
        .map(|(_, a)| a.metric_ppm)
        .collect();
    Tally {
        accepts: verdict(true),
        rejects: verdict(false),
        metrics_agree: metrics.len() <= 1,
    }
}

/// A dispute over a unit found the trainer right: the evaluators that accepted certify it when
/// they are a quorum agreeing on the metric (a dissenter contested their acceptance and lost);
/// otherwise a fresh panel looks again.
pub(crate) fn certify_or_redraw(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    job: &mut Job,
    unit: &mut Unit,
    accepters: &[Address],
    p: &Params,
    events: &mut Events,
) -> ContractResult<()> {
    let metrics: std::collections::BTreeSet<u32> = unit
        .attestations
        .iter()
        .filter(|(e, a)| a.accept && accepters.contains(e))
        .map(|(_, a)| a.metric_ppm)
        .collect();
    if accepters.len() >= p.attestation_quorum as usize && metrics.len() == 1 {
        certify(state, ctx, job, unit, accepters, p, events)
    } else {
        redraw_panel(state, ctx, unit, p, events)
    }
}

/// A quorum accepted: the certificate of useful work. Pays from escrow, emits, updates
/// reputation, and moves the job on.
fn certify(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    job: &mut Job,
    unit: &mut Unit,
    accepts: &[Address],
    p: &Params,
    events: &mut Events,
) -> ContractResult<()> {
    let trainer = unit.trainer.expect("a submitted unit has a trainer");
    let result = unit.result.clone().expect("a submitted unit has a result");
    let certificate = certificate_id(unit, true, accepts);
    unit.certificate = Some(certificate);
    unit.state = UnitState::Certified;
    release_trainer(state, unit)?;
    release_evaluators(state, unit)?;
    events.push(Event::WorkCertified {
        unit: unit.id,
        trainer,
        checkpoint: result.checkpoint,
        metric_ppm: certified_metric(job.spec.target.metric, unit, accepts),
        certificate,
    });

    let payment = job.price_per_unit.min(job.escrow);
    job.escrow = job.escrow.checked_sub(payment)?;
    let trainer_share = payment.mul_bps(p.fee_share_trainer_bps);
    let evaluators_share = payment.mul_bps(p.fee_share_evaluators_bps);
    let provider_share = payment.mul_bps(p.fee_share_data_provider_bps);
    let per_evaluator = Amount(evaluators_share.0 / accepts.len().max(1) as u128);
    let mut dataset = datasets::load(state, job.spec.dataset)?;
    pay(
        state,
        trainer,
        trainer_share,
        PaymentReason::TrainerShare {
            unit: unit.id,
            certificate,
        },
        events,
    )?;
    for e in accepts {
        pay(
            state,
            *e,
            per_evaluator,
            PaymentReason::EvaluatorShare {
                unit: unit.id,
                certificate,
            },
            events,
        )?;
    }
    pay(
        state,
        dataset.provider,
        provider_share,
        PaymentReason::DataProviderShare {
            unit: unit.id,
            certificate,
        },
        events,
    )?;
    let paid = trainer_share.0 + per_evaluator.0 * accepts.len() as u128 + provider_share.0;
    let burned = Amount(payment.0 - paid);
    accounts::burn(state, burned)?;
    if !burned.is_zero() {
        events.push(Event::Burned {
            amount: burned,
            reason: format!("fee share of unit {}", unit.id),
        });
    }
    // Emission pays for audited work only: a tier-0 job (the metric recomputed, no segment
    // re-executed) could be a researcher paying itself through a sybil trainer for nothing.
    let mut c = counters::load(state)?;
    // Emission follows paid work: at most what the payment gave away to parties the trainer
    // does not choose (the evaluators' share and the burn), so that a researcher paying its own
    // sybil trainer (and its own dataset) mints at most what it loses.
    let emission_cap = payment.mul_bps(p.fee_share_evaluators_bps + p.fee_share_burn_bps);
    let emission = if job.spec.tier >= 1 {
        c.emitting_certificates += 1;
        p.emission_for(c.emitting_certificates - 1)
            .min(emission_cap)
    } else {
        Amount::ZERO
    };
    c.certificates += 1;
    counters::store(state, &c);
    if !emission.is_zero() {
        // The validators that ordered the work take their share of its emission.
        let validators_part = emission.mul_bps(p.validator_share_bps);
        let paid = staking::pay_validators(state, ctx, validators_part, true, events)?;
        let to_trainer = emission.checked_sub(paid)?;
        accounts::mint(state, &trainer, to_trainer)?;
        events.push(Event::Paid {
            to: trainer,
            amount: to_trainer,
            reason: PaymentReason::Emission {
                unit: unit.id,
                certificate,
            },
        });
    }
    dataset.uses += 1;
    datasets::store(state, &dataset);
    reputation::record(
        state,
        &trainer,
        Outcome::Certified,
        ctx.time,
        p.reputation_half_life_ms,
    )?;
    for e in accepts {
        reputation::record(
            state,
            e,
            Outcome::Certified,
            ctx.time,
            p.reputation_half_life_ms,
        )?;
    }

    job.units_done += 1;
    job.latest_checkpoint = result.checkpoint;
    // The target is judged on what the accepting evaluators measured on the held-out split
    // (which the trainer never saw), taking the least favourable of their measurements.
    let measured = certified_metric(job.spec.target.metric, unit, accepts);
    job.latest_metric_ppm = Some(measured);
    if job.spec.target.reached(measured) {
        finish(state, ctx, job, JobState::Completed, events)
    } else if job.units_done >= job.units_total {
        finish(state, ctx, job, JobState::Exhausted, events)
    } else {
        job.current_unit += 1;
        open_unit(state, ctx, job, p, events)
    }
}

/// The least favourable metric among the accepting evaluators' attestations.
fn certified_metric(metric: Metric, unit: &Unit, accepts: &[Address]) -> u32 {
    let measured = unit
        .attestations
        .iter()
        .filter(|(e, a)| a.accept && accepts.contains(e))
        .map(|(_, a)| a.metric_ppm);
    match metric {
        Metric::Accuracy => measured.min().unwrap_or(0),
        Metric::Loss => measured.max().unwrap_or(u32::MAX),
    }
}

/// A quorum rejected: the rejection certificate, and the contest window
/// ([`crate::disputes`]); the trainer's collateral stays locked until the rejection is final.
fn reject(
    _state: &mut (impl State + ?Sized),
    ctx: &Context,
    _job: &Job,
    unit: &mut Unit,
    rejects: &[Address],
    p: &Params,
    events: &mut Events,
) -> ContractResult<()> {
    let trainer = unit.trainer.expect("a submitted unit has a trainer");
    let certificate = certificate_id(unit, false, rejects);
    unit.certificate = Some(certificate);
    events.push(Event::WorkRejected {
        unit: unit.id,
        trainer,
        certificate,
    });
    crate::disputes::open_contest_window(ctx, unit, rejects, certificate, p);
    Ok(())
}

/// The rejection is final (not contested in time, or the trainer lost its dispute): slash the
/// trainer's collateral and any dispute bond (the rejecting evaluators share the reporter's
/// part), exclude it from this unit, and assign the unit again.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reject_final(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    job: &Job,
    unit: &mut Unit,
    rejects: &[Address],
    certificate: Option<Hash32>,
    bond: Amount,
    p: &Params,
    events: &mut Events,
) -> ContractResult<()> {
    let trainer = unit.trainer.expect("a submitted unit has a trainer");
    let certificate = match certificate {
        Some(c) => c,
        None => {
            // A split panel's dispute went against the trainer: the rejection is certified now.
            let c = certificate_id(unit, false, rejects);
            events.push(Event::WorkRejected {
                unit: unit.id,
                trainer,
                certificate: c,
            });
            c
        }
    };
    unit.certificate = Some(certificate);
    let forfeit = unit.collateral.checked_add(bond)?;
    release_trainer(state, unit)?;
    release_evaluators(state, unit)?;
    staking::slash(
        state,
        trainer,
        forfeit,
        rejects,
        SlashReason::RejectedWork {
            unit: unit.id,
            certificate,
        },
        events,
    )?;
    reputation::record(
        state,
        &trainer,
        Outcome::Rejected,
        ctx.time,
        p.reputation_half_life_ms,
    )?;
    for e in rejects {
        reputation::record(
            state,
            e,
            Outcome::Certified,
            ctx.time,
            p.reputation_half_life_ms,
        )?;
    }
    unit.evaluators.clear();
    exclude_and_reassign(state, ctx, job, unit, trainer, p, events)
}

/// The result stands for another look: a fresh panel (the current one excluded), the next
/// attempt.
/// A resolved plant: the unit goes back to its trainer (collateral still locked, a fresh
/// deadline) for its true result.
pub(crate) fn return_to_trainer(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    unit: &mut Unit,
) -> ContractResult<()> {
    release_evaluators(state, unit)?;
    unit.evaluators.clear();
    unit.commitments.clear();
    unit.attestations.clear();
    unit.result = None;
    unit.plant = None;
    unit.state = UnitState::Assigned;
    unit.assigned_at = ctx.time;
    // A new attempt: commitments and results of the plant's round are of another attempt.
    unit.attempt += 1;
    Ok(())
}

pub(crate) fn redraw_panel(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    unit: &mut Unit,
    p: &Params,
    events: &mut Events,
) -> ContractResult<()> {
    unit.state = UnitState::Submitted;
    unit.attempt += 1;
    sample_evaluators(state, ctx, unit, true, p, events)
}

/// Ends a job: cancels its open unit, refunds what is left of the escrow.
fn finish(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    job: &mut Job,
    outcome: JobState,
    events: &mut Events,
) -> ContractResult<()> {
    let unit_id = UnitId {
        job: job.id,
        index: job.current_unit,
    };
    if let Some(mut unit) = state.read::<Unit>(&keys::unit(unit_id))? {
        if matches!(
            unit.state,
            UnitState::Assigned
                | UnitState::Submitted
                | UnitState::Waiting
                | UnitState::Rejected
                | UnitState::Disputed
        ) {
            if let Some(d) = unit.dispute.take() {
                let mut a = accounts::load(state, &d.trainer)?;
                a.locked = a.locked.saturating_sub(d.bond);
                accounts::store(state, &d.trainer, &a);
                trainer_pool_changed(state)?;
            }
            release_trainer(state, &mut unit)?;
            release_evaluators(state, &unit)?;
            unit.state = UnitState::Cancelled;
            store_unit(state, &unit);
        }
    }
    let refund = job.escrow;
    job.escrow = Amount::ZERO;
    job.state = outcome;
    job.finished_at = Some(ctx.time);
    pay(
        state,
        job.owner,
        refund,
        PaymentReason::Refund { job: job.id },
        events,
    )?;
    let mut active = active_jobs(state)?;
    active.retain(|j| *j != job.id);
    state.write(keys::ACTIVE_JOBS.to_vec(), &active);
    events.push(Event::JobFinished {
        job: job.id,
        state: outcome.name().into(),
        metric_ppm: job.latest_metric_ppm,
        refunded: refund,
    });
    Ok(())
}

/// Part of a unit's collateral a trainer loses when it lets the unit time out.
pub const TIMEOUT_SLASH_BPS: u32 = 1_000;

/// How many unit timeouts past its job's deadline a submitted result still has to settle.
pub const SETTLE_GRACE_TIMEOUTS: u64 = 4;

/// Once per batch: expire jobs past their deadline, retry waiting units, reassign units whose
/// trainer went silent, and draw new evaluators for results nobody evaluated in time.
pub fn on_batch_end(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    events: &mut Events,
) -> ContractResult<()> {
    let p = params::load(state)?;
    // Units still waiting for a trainer: drawn after everything else, all from one scan of the
    // workers (not a scan per waiting unit per batch).
    let mut waiting: Vec<JobId> = Vec::new();
    for id in active_jobs(state)? {
        let mut job = load_job(state, id)?;
        let unit_id = UnitId {
            job: id,
            index: job.current_unit,
        };
        let mut unit = load_unit(state, unit_id)?;
        if job.deadline() <= ctx.time {
            // A result that came before the deadline is settled (paid or disputed) past it: a
            // researcher cannot time its deadline to take the last unit's work for free. The
            // grace is bounded: SETTLE_GRACE_TIMEOUTS unit timeouts.
            let grace = p.unit_timeout_ms.saturating_mul(SETTLE_GRACE_TIMEOUTS);
            let in_flight = matches!(
                unit.state,
                UnitState::Submitted | UnitState::Rejected | UnitState::Disputed
            );
            if !in_flight || ctx.time.0 >= job.deadline().0.saturating_add(grace) {
                finish(state, ctx, &mut job, JobState::Expired, events)?;
                store_job(state, &job);
                continue;
            }
        }
        let overdue = |since: TimestampMs| ctx.time.0.saturating_sub(since.0) > p.unit_timeout_ms;
        if unit.state == UnitState::Submitted
            && !overdue(unit.submitted_at)
            && crate::plants::on_deadline(state, ctx, &mut unit, &p, events)?
        {
            // The trainer kept its seal shut: penalised, and the reveals open without it.
            store_unit(state, &unit);
            continue;
        }
        match unit.state {
            UnitState::Waiting
                if ctx.time.0.saturating_sub(unit.assigned_at.0)
                    > p.unit_timeout_ms.saturating_mul(WAITING_TIMEOUTS_MAX) =>
            {
                // Nobody could take it for that long: the job ends and its escrow goes back,
                // rather than holding a slot (and a scan per batch) indefinitely.
                finish(state, ctx, &mut job, JobState::Expired, events)?;
                store_job(state, &job);
                continue;
            }
            UnitState::Waiting => {
                waiting.push(id);
                continue;
            }
            UnitState::Assigned if overdue(unit.assigned_at) => {
                let trainer = unit.trainer.expect("assigned");
                events.push(Event::UnitTimedOut {
                    unit: unit.id,
                    trainer,
                });
                // Holding a unit and not delivering costs a share of its collateral: a trainer
                // that keeps timing out (to squat units, or because it took more than it can
                // run) pays each time.
                let penalty = unit.collateral.mul_bps(TIMEOUT_SLASH_BPS);
                release_trainer(state, &mut unit)?;
                staking::slash(
                    state,
                    trainer,
                    penalty,
                    &[],
                    SlashReason::TimedOut { unit: unit.id },
                    events,
                )?;
                reputation::record(
                    state,
                    &trainer,
                    Outcome::TimedOut,
                    ctx.time,
                    p.reputation_half_life_ms,
                )?;
                exclude_and_reassign(state, ctx, &job, &mut unit, trainer, &p, events)?;
            }
            UnitState::Submitted if overdue(unit.submitted_at) => {
                for e in &unit.evaluators {
                    if !unit.attestations.iter().any(|(a, _)| a == e) {
                        reputation::record(
                            state,
                            e,
                            Outcome::TimedOut,
                            ctx.time,
                            p.reputation_half_life_ms,
                        )?;
                        // Committed and then kept the verdict back: slashed.
                        if unit.commitments.iter().any(|(a, _)| a == e) {
                            staking::slash(
                                state,
                                *e,
                                p.min_evaluator_stake.mul_bps(WITHHELD_REVEAL_SLASH_BPS),
                                &[],
                                SlashReason::WithheldReveal { unit: unit.id },
                                events,
                            )?;
                        }
                    }
                }
                // Those who spoke decide when they can: an accepting quorum certifies (or, with
                // a dissenter, goes to dispute); otherwise a fresh panel.
                let t = tally(&unit);
                let quorum = p.attestation_quorum as usize;
                if crate::plants::is_planted(&unit) {
                    crate::plants::resolve(state, ctx, &mut unit, &p, events)?;
                } else if job.spec.tier >= 1 && t.accepts.len() >= quorum && t.metrics_agree {
                    if t.rejects.is_empty() {
                        certify(state, ctx, &mut job, &mut unit, &t.accepts, &p, events)?;
                    } else {
                        crate::disputes::open_on_split(
                            state, ctx, &mut unit, &t.accepts, &t.rejects, &p, events,
                        )?;
                    }
                } else {
                    unit.attempt += 1;
                    sample_evaluators(state, ctx, &mut unit, true, &p, events)?;
                }
            }
            UnitState::Rejected | UnitState::Disputed => {
                if !crate::disputes::on_deadline(state, ctx, &mut job, &mut unit, &p, events)? {
                    continue;
                }
            }
            UnitState::Submitted if unit.evaluators.len() < p.attestation_quorum as usize => {
                // Too few evaluators were live when the result came: try again as they join.
                let before = unit.evaluators.len();
                let mut quiet = Events::default();
                sample_evaluators(state, ctx, &mut unit, false, &p, &mut quiet)?;
                if unit.evaluators.len() == before {
                    continue;
                }
                events.0.extend(quiet.0);
            }
            _ => continue,
        }
        store_unit(state, &unit);
        store_job(state, &job);
    }
    // Nothing that could make a trainer drawable happened since the last draw: the waiting
    // units would wait again. No scan at all.
    let mut version = pool_version(state)?;
    if waiting.is_empty() || version.drawn == version.version {
        return Ok(());
    }
    version.drawn = version.version;
    state.write(keys::TRAINER_POOL.to_vec(), &version);
    let mut trainers = pool(state, ctx, Role::Trainer, &p)?;
    for id in waiting {
        let job = load_job(state, id)?;
        let mut unit = load_unit(
            state,
            UnitId {
                job: id,
                index: job.current_unit,
            },
        )?;
        assign_from(
            state,
            ctx,
            &job,
            &mut unit,
            &mut trainers,
            &p,
            &mut Events::default(),
        )?;
        if unit.state == UnitState::Assigned {
            if let Some(trainer) = unit.trainer {
                events.push(Event::UnitAssigned {
                    unit: unit.id,
                    trainer,
                    attempt: unit.attempt,
                });
            }
            store_unit(state, &unit);
        }
    }
    Ok(())
}

impl Job {
    pub fn deadline(&self) -> TimestampMs {
        self.spec.deadline
    }
}
