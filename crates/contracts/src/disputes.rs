//! Disputes over a unit's verdict, played out as transactions and refereed by the validators.
//!
//! A dispute opens when a trainer contests a rejection (within [`DisputeParams::window_ms`], with a
//! bond locked from its free stake) or when, on audited work, any evaluator of the panel rejects
//! while the others accept: the panel split (no fresh draw for free), or a dissenter contests the
//! acceptance of a quorum (it is not outvoted; its stake is its bond). The first rejecting
//! evaluator is the challenger; the trainer defends its checkpoint chain, and the accepting
//! evaluators stand or fall with it.
//!
//! 1. **Segment**: the challenger names a segment of the chain and the end hash its replay gave.
//! 2. **Chain**: the trainer opens its chain there: the segment's start and end hashes with
//!    Merkle proofs under the committed chain root. If its end is the challenger's, there was
//!    nothing to dispute and the trainer wins.
//! 3. **Midpoint / Respond**, repeated: the trainer posts its state hash at the middle step of the
//!    interval still in dispute; the challenger agrees or not; the interval halves. After
//!    ⌈log₂ segment steps⌉ rounds one step remains: from a state both sides accept to one they
//!    do not.
//! 4. **Referee**: each validator replays that one step with the reference executor from the
//!    agreed state (which the trainer serves) and votes the end hash it computed, or that the
//!    state was not served. Two thirds of the validators agreeing decide: the trainer wins exactly
//!    when the step ends where it said.
//!
//! Every move has a deadline ([`DisputeParams::move_ms`]); the side that misses it loses (a
//! referee that reaches no quorum voids the dispute). The loser pays: a losing trainer forfeits
//! its collateral and its bond to the rejecting evaluators, and the evaluators that accepted its
//! faulty work are slashed; losing rejecting evaluators are slashed with the trainer as reporter,
//! and the unit is certified by its accepting evaluators when they are a quorum, or gets a fresh
//! panel.

use serde::{Deserialize, Serialize};

use crate::accounts;
use crate::error::{ContractError, ContractResult};
use crate::events::{Event, Events, SlashReason};
use crate::jobs::{self, Unit, UnitState};
use crate::merkle::{merkle_verify, MerkleProof};
use crate::params::{self, Params};
use crate::reputation::{self, Outcome};
use crate::staking;
use crate::state::State;
use crate::types::{Address, Amount, Context, Hash32, TimestampMs, UnitId};

/// The dispute game's parameters (governed with the others).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeParams {
    /// How long after a rejection its trainer may contest it; then the rejection is final.
    pub window_ms: u64,
    /// The deadline of every move (and of the referee's votes).
    pub move_ms: u64,
    /// What a contesting trainer locks from its free stake; forfeited if it loses.
    pub bond: Amount,
    /// Part of an evaluator's stake slashed when it ends on the losing side.
    pub evaluator_slash_bps: u32,
}

impl Default for DisputeParams {
    fn default() -> Self {
        DisputeParams {
            window_ms: 10 * 60_000,
            move_ms: 5 * 60_000,
            bond: Amount::from_train(10),
            evaluator_slash_bps: 2_000,
        }
    }
}

impl DisputeParams {
    pub fn validate(&self) -> Result<(), String> {
        if self.window_ms == 0 || self.move_ms == 0 {
            return Err("dispute windows must be positive".into());
        }
        if self.evaluator_slash_bps > 10_000 {
            return Err("evaluator_slash_bps above 10,000".into());
        }
        Ok(())
    }
}

/// Whose move a dispute waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// A quorum rejected; the trainer may contest until the deadline.
    Contestable,
    /// The challenger names the segment it disputes.
    Segment,
    /// The trainer opens its chain at that segment.
    Chain,
    /// The trainer posts its state hash at the midpoint.
    Midpoint,
    /// The challenger agrees with that hash or not.
    Respond,
    /// One step is left: the validators replay it.
    Referee,
    /// The challenger says the trainer does not serve the agreed state: the validators say
    /// whether it does (then the challenger answers again, fetching it from them) or not (then
    /// the trainer loses).
    Available,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Contestable => "contestable",
            Stage::Segment => "segment",
            Stage::Chain => "chain",
            Stage::Midpoint => "midpoint",
            Stage::Respond => "respond",
            Stage::Referee => "referee",
            Stage::Available => "available",
        }
    }
}

/// A dispute over one attempt of a unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispute {
    pub trainer: Address,
    /// The rejecting evaluator that plays against the trainer.
    pub challenger: Address,
    pub accepters: Vec<Address>,
    pub rejecters: Vec<Address>,
    /// The rejection certificate, when a quorum rejected.
    pub certificate: Option<Hash32>,
    /// Locked from the trainer's stake when it contested (zero for a split panel).
    pub bond: Amount,
    pub stage: Stage,
    pub deadline: TimestampMs,
    pub segment: u32,
    /// The end of the segment as the challenger's replay computed it.
    pub claimed_end: Hash32,
    /// Steps from the segment's start, with the state hash there: the last both sides accept...
    pub agreed: (u64, Hash32),
    /// ...and the first they do not (the trainer's hash).
    pub disputed: (u64, Hash32),
    /// The trainer's hash at the midpoint, while the challenger's answer is awaited.
    pub pending: Hash32,
    /// The challenger said a state was not served (once per dispute: after the validators
    /// fetched it, the challenger fetches it from them).
    pub unserved: bool,
    /// Transactions played so far.
    pub moves: u32,
    /// Validators' referee votes: the end hash each computed, or `None` (state not served).
    pub votes: Vec<(Address, Option<Hash32>)>,
}

impl Dispute {
    /// The step (from the segment's start) whose hash the trainer reveals next.
    pub fn midpoint(&self) -> u64 {
        self.agreed.0 + (self.disputed.0 - self.agreed.0) / 2
    }
}

/// How a dispute ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    TrainerWins,
    TrainerLoses,
    Void,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::TrainerWins => "trainer_wins",
            Verdict::TrainerLoses => "trainer_loses",
            Verdict::Void => "void",
        }
    }
}

/// A move of a dispute (the calls that carry them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Move {
    /// The trainer contests a rejection.
    Contest,
    /// The challenger names the segment and the end its replay gave.
    Segment { segment: u32, end: Hash32 },
    /// The trainer's chain at the segment: its start (with a proof, except for segment 0, which
    /// starts at the unit's start checkpoint) and its end, under the committed chain root.
    Chain {
        start: Hash32,
        start_proof: Option<MerkleProof>,
        end: Hash32,
        end_proof: MerkleProof,
    },
    /// The trainer's state hash at the midpoint.
    Midpoint { hash: Hash32 },
    /// The challenger's answer to the midpoint hash.
    Respond { agrees: bool },
    /// A validator's replay of the last step (at `Referee`), or whether it could fetch the agreed
    /// state, `Some` of its hash or `None` (at `Available`).
    Referee { end: Option<Hash32> },
    /// The challenger cannot fetch the agreed state from the trainer (at `Respond`).
    Unserved,
}

impl Move {
    fn stage(&self) -> Option<Stage> {
        match self {
            Move::Contest => Some(Stage::Contestable),
            Move::Segment { .. } => Some(Stage::Segment),
            Move::Chain { .. } => Some(Stage::Chain),
            Move::Midpoint { .. } => Some(Stage::Midpoint),
            Move::Respond { .. } => Some(Stage::Respond),
            Move::Referee { .. } => None,
            Move::Unserved => Some(Stage::Respond),
        }
    }
}

fn invalid(reason: impl Into<String>) -> ContractError {
    ContractError::Invalid {
        what: "dispute",
        reason: reason.into(),
    }
}

impl Dispute {
    /// A dispute of `unit`'s trainer against the first of `rejecters`, waiting at `stage` until
    /// `deadline`.
    fn open(
        unit: &Unit,
        accepters: &[Address],
        rejecters: &[Address],
        certificate: Option<Hash32>,
        stage: Stage,
        deadline: TimestampMs,
    ) -> Dispute {
        Dispute {
            trainer: unit.trainer.expect("a submitted unit has a trainer"),
            challenger: rejecters[0],
            accepters: accepters.to_vec(),
            rejecters: rejecters.to_vec(),
            certificate,
            bond: Amount::ZERO,
            stage,
            deadline,
            segment: 0,
            claimed_end: Hash32::default(),
            agreed: (0, Hash32::default()),
            disputed: (0, Hash32::default()),
            pending: Hash32::default(),
            unserved: false,
            moves: 0,
            votes: Vec::new(),
        }
    }
}

/// A quorum rejected: the rejection waits out the contest window before it is final.
pub(crate) fn open_contest_window(
    ctx: &Context,
    unit: &mut Unit,
    rejecters: &[Address],
    certificate: Hash32,
    p: &Params,
) {
    let deadline = TimestampMs(ctx.time.0.saturating_add(p.disputes.window_ms));
    unit.dispute = Some(Dispute::open(
        unit,
        &[],
        rejecters,
        Some(certificate),
        Stage::Contestable,
        deadline,
    ));
    unit.state = UnitState::Rejected;
}

/// The panel split (no quorum either way, some rejecting): a dispute, not a free redraw.
pub(crate) fn open_on_split(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    unit: &mut Unit,
    accepters: &[Address],
    rejecters: &[Address],
    p: &Params,
    events: &mut Events,
) -> ContractResult<()> {
    let deadline = TimestampMs(ctx.time.0.saturating_add(p.disputes.move_ms));
    unit.dispute = Some(Dispute::open(
        unit,
        accepters,
        rejecters,
        None,
        Stage::Segment,
        deadline,
    ));
    unit.state = UnitState::Disputed;
    opened(state, unit, events)
}

fn opened(
    state: &mut (impl State + ?Sized),
    unit: &Unit,
    events: &mut Events,
) -> ContractResult<()> {
    let d = unit.dispute.as_ref().expect("an open dispute");
    let mut c = crate::counters::load(state)?;
    c.disputes += 1;
    crate::counters::store(state, &c);
    events.push(Event::DisputeOpened {
        unit: unit.id,
        trainer: d.trainer,
        challenger: d.challenger,
    });
    Ok(())
}

/// One move of a dispute by `sender`.
pub fn play(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    sender: Address,
    unit_id: UnitId,
    mv: Move,
    events: &mut Events,
) -> ContractResult<()> {
    let mut unit = jobs::load_unit(state, unit_id)?;
    let expected_state = if mv == Move::Contest {
        UnitState::Rejected
    } else {
        UnitState::Disputed
    };
    if unit.state != expected_state {
        return Err(ContractError::WrongUnitState {
            unit: unit_id,
            state: unit.state.name(),
            action: "a dispute move",
        });
    }
    let p = params::load(state)?;
    let mut d = unit
        .dispute
        .clone()
        .expect("a rejected or disputed unit has a dispute");
    if let Some(stage) = mv.stage() {
        if stage != d.stage {
            return Err(invalid(format!(
                "the dispute waits for the {} move",
                d.stage.name()
            )));
        }
        let mover = match stage {
            Stage::Contestable | Stage::Chain | Stage::Midpoint => d.trainer,
            _ => d.challenger,
        };
        if sender != mover {
            return Err(invalid(format!(
                "the {} move is {mover}'s, not {sender}'s",
                stage.name()
            )));
        }
    } else if !matches!(d.stage, Stage::Referee | Stage::Available) {
        return Err(invalid(
            "validators vote once one step is left, or on whether a state is served",
        ));
    }
    if ctx.time >= d.deadline {
        return Err(invalid("the move's deadline passed"));
    }
    let stage_before = d.stage;
    let mut settled = None;
    match mv {
        Move::Contest => {
            let mut a = accounts::load(state, &sender)?;
            if a.free_stake() < p.disputes.bond {
                return Err(ContractError::InsufficientStake {
                    available: a.free_stake(),
                    required: p.disputes.bond,
                });
            }
            a.locked = a.locked.checked_add(p.disputes.bond)?;
            accounts::store(state, &sender, &a);
            d.bond = p.disputes.bond;
            d.stage = Stage::Segment;
            unit.state = UnitState::Disputed;
            unit.dispute = Some(d.clone());
            opened(state, &unit, events)?;
        }
        Move::Segment { segment, end } => {
            let result = unit.result.as_ref().expect("a disputed unit has a result");
            if segment >= result.segments {
                return Err(invalid(format!(
                    "segment {segment} of a chain of {}",
                    result.segments
                )));
            }
            d.segment = segment;
            d.claimed_end = end;
            d.stage = Stage::Chain;
        }
        Move::Chain {
            start,
            start_proof,
            end,
            end_proof,
        } => {
            let result = unit.result.as_ref().expect("a disputed unit has a result");
            let leaves = u64::from(result.segments);
            let in_chain = |value: &Hash32, proof: &MerkleProof, index: u64| {
                proof.index == index
                    && proof.leaf_count == leaves
                    && merkle_verify(&result.chain_root, value, proof)
            };
            let start_ok = match (d.segment, &start_proof) {
                (0, None) => start == unit.start_checkpoint,
                (s, Some(proof)) if s > 0 => in_chain(&start, proof, u64::from(s) - 1),
                _ => false,
            };
            if !start_ok {
                return Err(invalid(format!(
                    "{} is not the start of segment {} under the chain root",
                    start.to_hex(),
                    d.segment
                )));
            }
            if !in_chain(&end, &end_proof, u64::from(d.segment)) {
                return Err(invalid(format!(
                    "{} is not the end of segment {} under the chain root",
                    end.to_hex(),
                    d.segment
                )));
            }
            let segment_steps = unit.steps / u64::from(result.segments.max(1));
            d.agreed = (0, start);
            d.disputed = (segment_steps.max(1), end);
            if end == d.claimed_end {
                // The challenger's replay ends where the trainer's chain does.
                settled = Some(Verdict::TrainerWins);
            } else {
                d.stage = next_stage(&d);
            }
        }
        Move::Midpoint { hash } => {
            d.pending = hash;
            d.stage = Stage::Respond;
        }
        Move::Respond { agrees } => {
            let m = d.midpoint();
            if agrees {
                d.agreed = (m, d.pending);
            } else {
                d.disputed = (m, d.pending);
            }
            d.stage = next_stage(&d);
        }
        Move::Referee { end } => {
            let validators = staking::validators(state)?;
            if !validators.iter().any(|v| v.address == sender) {
                return Err(invalid(format!("{sender} is not a validator")));
            }
            if d.votes.iter().any(|(v, _)| *v == sender) {
                return Err(invalid(format!("{sender} already refereed this step")));
            }
            d.votes.push((sender, end));
            let quorum = validators.len() * 2 / 3 + 1;
            let same = d.votes.iter().filter(|(_, e)| *e == end).count();
            if same >= quorum {
                match d.stage {
                    Stage::Available if end == Some(d.agreed.1) => {
                        // Served: the challenger answers again (the validators hold it too).
                        d.votes.clear();
                        d.stage = Stage::Respond;
                    }
                    Stage::Available => settled = Some(Verdict::TrainerLoses),
                    _ => {
                        settled = Some(if end == Some(d.disputed.1) {
                            Verdict::TrainerWins
                        } else {
                            Verdict::TrainerLoses
                        })
                    }
                }
            }
        }
        Move::Unserved => {
            if d.unserved {
                return Err(invalid(
                    "the validators found the agreed state served: fetch it from them",
                ));
            }
            d.unserved = true;
            d.votes.clear();
            d.stage = Stage::Available;
        }
    }
    d.moves += 1;
    if d.stage != stage_before {
        // Each move opens the next one's window (the referee's votes share one).
        d.deadline = TimestampMs(ctx.time.0.saturating_add(p.disputes.move_ms));
    }
    events.push(Event::DisputeAdvanced {
        unit: unit_id,
        stage: d.stage.name().into(),
        agreed_step: d.agreed.0,
        disputed_step: d.disputed.0,
    });
    unit.dispute = Some(d);
    if let Some(v) = settled {
        let mut job = jobs::load_job(state, unit.id.job)?;
        settle(state, ctx, &mut job, &mut unit, v, &p, events)?;
        jobs::store_job(state, &job);
    }
    jobs::store_unit(state, &unit);
    Ok(())
}

/// After a midpoint answer or the chain: more halving, or the referee.
fn next_stage(d: &Dispute) -> Stage {
    if d.disputed.0 - d.agreed.0 <= 1 {
        Stage::Referee
    } else {
        Stage::Midpoint
    }
}

/// Deadlines: the side that missed its move loses; a referee without a quorum voids.
pub(crate) fn on_deadline(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    job: &mut jobs::Job,
    unit: &mut Unit,
    p: &Params,
    events: &mut Events,
) -> ContractResult<bool> {
    let Some(d) = &unit.dispute else {
        return Ok(false);
    };
    if ctx.time < d.deadline {
        return Ok(false);
    }
    let verdict = match d.stage {
        // Not contested: the rejection stands.
        Stage::Contestable => Verdict::TrainerLoses,
        Stage::Chain | Stage::Midpoint => Verdict::TrainerLoses,
        Stage::Segment | Stage::Respond => Verdict::TrainerWins,
        Stage::Referee | Stage::Available => Verdict::Void,
    };
    settle(state, ctx, job, unit, verdict, p, events)?;
    Ok(true)
}

/// Ends a dispute: slashes the losing side, frees the bond, and moves the unit on.
fn settle(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    job: &mut jobs::Job,
    unit: &mut Unit,
    verdict: Verdict,
    p: &Params,
    events: &mut Events,
) -> ContractResult<()> {
    let d = unit.dispute.take().expect("an open dispute");
    let contested = d.stage != Stage::Contestable;
    if contested {
        events.push(Event::DisputeSettled {
            unit: unit.id,
            outcome: verdict.name().into(),
            moves: d.moves,
        });
    }
    // The bond is freed in every case; a losing trainer's is slashed below with its collateral.
    let mut a = accounts::load(state, &d.trainer)?;
    a.locked = a.locked.saturating_sub(d.bond);
    accounts::store(state, &d.trainer, &a);
    crate::jobs::trainer_pool_changed(state)?;
    match verdict {
        Verdict::TrainerLoses => {
            for e in &d.accepters {
                slash_evaluator(state, ctx, *e, &[d.challenger], unit.id, p, events)?;
                unit.excluded.push(*e);
            }
            jobs::reject_final(
                state,
                ctx,
                job,
                unit,
                &d.rejecters,
                d.certificate,
                d.bond,
                p,
                events,
            )?;
        }
        Verdict::TrainerWins => {
            for e in &d.rejecters {
                slash_evaluator(state, ctx, *e, &[d.trainer], unit.id, p, events)?;
                unit.excluded.push(*e);
            }
            // An accepting quorum whose acceptance was contested certifies now; a split panel
            // gets a fresh one.
            jobs::certify_or_redraw(state, ctx, job, unit, &d.accepters, p, events)?;
        }
        Verdict::Void => jobs::redraw_panel(state, ctx, unit, p, events)?,
    }
    Ok(())
}

fn slash_evaluator(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    evaluator: Address,
    reporters: &[Address],
    unit: UnitId,
    p: &Params,
    events: &mut Events,
) -> ContractResult<()> {
    let stake = accounts::load(state, &evaluator)?.stake;
    staking::slash(
        state,
        evaluator,
        stake.mul_bps(p.disputes.evaluator_slash_bps),
        reporters,
        SlashReason::LostDispute { unit },
        events,
    )?;
    reputation::record(
        state,
        &evaluator,
        Outcome::Rejected,
        ctx.time,
        p.reputation_half_life_ms,
    )?;
    Ok(())
}
