//! Planted faults: how the ledger measures whether evaluators do the work they are paid for.
//!
//! A lazy evaluator that accepts without replaying is right whenever the trainer is honest, so
//! honest trainers alone never expose it. So the protocol plants faults, Truebit-style, made by
//! the trainers themselves and known to the ledger only after the verdicts:
//!
//! 1. **Seal.** While a unit of audited work (tier ≥ 1) is assigned, its trainer posts
//!    `SealPlant`: the hash of a secret it chose. The batch that executes the seal fixes the
//!    unit's plant seed (from the randomness beacon, so not known before the seal).
//! 2. **Draw.** The unit is a plant when `draw(secret, seed) < rate` ([`PlantParams::rate_ppm`],
//!    fixed at the seal). Only the trainer, who knows the secret, knows; to everyone else a plant
//!    looks like any result.
//! 3. **Plant.** The trainer of a plant submits its chain with the last segment's end replaced by
//!    [`planted_checkpoint`]`(secret, unit)`: a hash no training step can reach, and the last
//!    segment is audited by every evaluator. Every honest evaluator rejects it.
//! 4. **Open.** Once every evaluator of the panel has committed to its verdict, the trainer
//!    posts `OpenPlant` with the secret; reveals open only after that (or after
//!    [`PlantParams::open_ms`], when the silent trainer is penalised). The ledger recomputes the
//!    draw and checks the planted end: a plant is provably faulty, so an evaluator that accepts
//!    it loses [`PlantParams::evaluator_slash_bps`] of its stake (the evaluators that caught it
//!    and the trainer are the reporters) and reputation; one that rejects it gains reputation. The unit then goes back to its trainer,
//!    which submits its true result to a fresh panel. A unit is planted at most once.
//!
//! A trainer cannot fake a plant on honest work to slash the evaluators who accepted it (the
//! ledger checks the planted end, which no honest chain has), cannot choose which units are
//! plants (the seed follows the seal), and cannot skip a plant it was drawn for without paying
//! [`PlantParams::skip_penalty`] (the ledger sees the draw at the opening). Evaluators cannot
//! tell a plant from real work before they commit.

use serde::{Deserialize, Serialize};

use crate::accounts;
use crate::error::{ContractError, ContractResult};
use crate::events::{Event, Events, SlashReason};
use crate::jobs::{self, Unit, UnitState};
use crate::params::Params;
use crate::reputation::{self, Outcome};
use crate::staking;
use crate::state::State;
use crate::types::{Address, Amount, Context, Hash32, TimestampMs, UnitId};

/// Parts per million in a draw.
pub const PPM: u32 = 1_000_000;

/// The plant parameters (governed with the others).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlantParams {
    /// Chance that a sealed unit is a plant, in parts per million (0: no plants, no seals).
    pub rate_ppm: u32,
    /// How long after the last commitment the trainer has to open its seal.
    pub open_ms: u64,
    /// Part of an evaluator's stake slashed when it accepts a plant.
    pub evaluator_slash_bps: u32,
    /// What a trainer drawn for a plant pays when it does not plant, or does not open its seal.
    pub skip_penalty: Amount,
}

impl Default for PlantParams {
    fn default() -> Self {
        PlantParams {
            rate_ppm: 0,
            open_ms: 5 * 60_000,
            evaluator_slash_bps: 2_000,
            skip_penalty: Amount::from_train(5),
        }
    }
}

impl PlantParams {
    pub fn validate(&self) -> Result<(), String> {
        if self.rate_ppm > PPM {
            return Err(format!(
                "plants.rate_ppm {} exceeds every unit ({PPM})",
                self.rate_ppm
            ));
        }
        if self.open_ms == 0 {
            return Err("plants.open_ms must be positive".into());
        }
        if self.evaluator_slash_bps > 10_000 {
            return Err("plants.evaluator_slash_bps exceeds 10000".into());
        }
        Ok(())
    }
}

/// What the opening of a seal showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Opening {
    /// Not drawn for a plant: the verdicts stand as they are.
    Clear,
    /// A plant, planted as it must be: the evaluators that accept it are wrong.
    Planted,
    /// Drawn for a plant but not planted, or the seal never opened: the trainer paid the penalty
    /// and the verdicts stand as they are.
    Skipped,
}

impl Opening {
    pub fn name(self) -> &'static str {
        match self {
            Opening::Clear => "clear",
            Opening::Planted => "planted",
            Opening::Skipped => "skipped",
        }
    }
}

/// A unit's sealed plant secret and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plant {
    /// `seal_of(secret)`.
    pub seal: Hash32,
    /// From the beacon of the batch that executed the seal.
    pub seed: Hash32,
    /// The rate when it was sealed (a later change of the parameter does not redraw).
    pub rate_ppm: u32,
    /// When the last evaluator of the panel committed: the opening's deadline counts from it.
    pub committed_at: Option<TimestampMs>,
    pub opened: Option<Opening>,
}

/// The seal of a secret.
pub fn seal_of(secret: &Hash32) -> Hash32 {
    Hash32(*blake3::keyed_hash(&domain(b"seal"), &secret.0).as_bytes())
}

fn domain(what: &[u8]) -> [u8; 32] {
    *blake3::hash(&[b"trainmesh/plant/".as_slice(), what].concat()).as_bytes()
}

/// The plant seed of a unit sealed in a batch of seed `batch_seed`.
pub fn plant_seed(batch_seed: &[u8; 32], unit: UnitId, attempt: u32) -> Hash32 {
    let mut h = blake3::Hasher::new_keyed(batch_seed);
    h.update(&domain(b"seed"));
    h.update(&unit.job.0.to_le_bytes());
    h.update(&unit.index.to_le_bytes());
    h.update(&attempt.to_le_bytes());
    Hash32(*h.finalize().as_bytes())
}

/// Whether a unit sealed with `secret` under `seed` is a plant at `rate_ppm`.
pub fn is_plant(secret: &Hash32, seed: &Hash32, rate_ppm: u32) -> bool {
    let mut h = blake3::Hasher::new_keyed(&domain(b"draw"));
    h.update(&secret.0);
    h.update(&seed.0);
    let bytes = h.finalize();
    let draw = u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"));
    draw % u64::from(PPM) < u64::from(rate_ppm)
}

/// The end a plant's chain claims for its last segment: a hash, not a checkpoint anyone can
/// train to, so that the fault is provable.
pub fn planted_checkpoint(secret: &Hash32, unit: UnitId) -> Hash32 {
    let mut h = blake3::Hasher::new_keyed(&domain(b"checkpoint"));
    h.update(&secret.0);
    h.update(&unit.job.0.to_le_bytes());
    h.update(&unit.index.to_le_bytes());
    Hash32(*h.finalize().as_bytes())
}

/// Whether the unit's current result needs a sealed plant secret before it may be submitted.
pub fn required(unit: &Unit, tier: u8, p: &Params) -> bool {
    p.plants.rate_ppm > 0 && tier >= 1 && !unit.planted
}

/// Whether reveals of the unit's attestations must wait for the trainer's opening.
pub fn reveals_wait(unit: &Unit) -> bool {
    unit.plant.as_ref().is_some_and(|p| p.opened.is_none())
}

fn invalid(reason: impl Into<String>) -> ContractError {
    ContractError::Invalid {
        what: "plant",
        reason: reason.into(),
    }
}

/// `SealPlant`: the assigned trainer seals its secret for the unit.
pub fn seal(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    sender: Address,
    unit_id: UnitId,
    seal: Hash32,
    events: &mut Events,
) -> ContractResult<()> {
    let mut unit = jobs::load_unit(state, unit_id)?;
    if unit.state != UnitState::Assigned {
        return Err(ContractError::WrongUnitState {
            unit: unit_id,
            state: unit.state.name(),
            action: "sealing a plant",
        });
    }
    if unit.trainer != Some(sender) {
        return Err(ContractError::NotAssignedTrainer {
            unit: unit_id,
            caller: sender,
        });
    }
    let p = crate::params::load(state)?;
    let tier = jobs::load_job(state, unit_id.job)?.spec.tier;
    if !required(&unit, tier, &p) {
        return Err(invalid(
            "this unit takes no plant (rate 0, tier 0, or planted once)",
        ));
    }
    if unit.plant.is_some() {
        return Err(invalid("the unit's plant is sealed already"));
    }
    unit.plant = Some(Plant {
        seal,
        seed: plant_seed(&ctx.seed, unit_id, unit.attempt),
        rate_ppm: p.plants.rate_ppm,
        committed_at: None,
        opened: None,
    });
    events.push(Event::PlantSealed { unit: unit_id });
    jobs::store_unit(state, &unit);
    Ok(())
}

/// The panel's last commitment came in: the opening's deadline starts.
pub(crate) fn on_commitments_complete(ctx: &Context, unit: &mut Unit) {
    if let Some(p) = &mut unit.plant {
        p.committed_at.get_or_insert(ctx.time);
    }
}

/// `OpenPlant`: the trainer opens its seal once every verdict is committed.
pub fn open(
    state: &mut (impl State + ?Sized),
    sender: Address,
    unit_id: UnitId,
    secret: Hash32,
    events: &mut Events,
) -> ContractResult<()> {
    let mut unit = jobs::load_unit(state, unit_id)?;
    if unit.state != UnitState::Submitted {
        return Err(ContractError::WrongUnitState {
            unit: unit_id,
            state: unit.state.name(),
            action: "opening a plant",
        });
    }
    if unit.trainer != Some(sender) {
        return Err(ContractError::NotAssignedTrainer {
            unit: unit_id,
            caller: sender,
        });
    }
    let Some(plant) = unit.plant.clone() else {
        return Err(invalid("the unit has no sealed plant"));
    };
    if plant.opened.is_some() {
        return Err(invalid("the plant is opened already"));
    }
    if plant.committed_at.is_none() {
        return Err(invalid(format!(
            "a plant opens once every evaluator committed ({} of {})",
            unit.commitments.len(),
            unit.evaluators.len()
        )));
    }
    if seal_of(&secret) != plant.seal {
        return Err(invalid("the secret does not open the seal"));
    }
    let p = crate::params::load(state)?;
    let opening = if !is_plant(&secret, &plant.seed, plant.rate_ppm) {
        Opening::Clear
    } else if unit.result.as_ref().map(|r| r.checkpoint)
        == Some(planted_checkpoint(&secret, unit_id))
    {
        unit.planted = true;
        Opening::Planted
    } else {
        skipped(state, &unit, sender, &p, events)?;
        Opening::Skipped
    };
    record_opening(state, &mut unit, opening, events)?;
    jobs::store_unit(state, &unit);
    Ok(())
}

fn skipped(
    state: &mut (impl State + ?Sized),
    unit: &Unit,
    trainer: Address,
    p: &Params,
    events: &mut Events,
) -> ContractResult<()> {
    staking::slash(
        state,
        trainer,
        p.plants.skip_penalty,
        &[],
        SlashReason::SkippedPlant { unit: unit.id },
        events,
    )?;
    Ok(())
}

fn record_opening(
    state: &mut (impl State + ?Sized),
    unit: &mut Unit,
    opening: Opening,
    events: &mut Events,
) -> ContractResult<()> {
    if let Some(p) = &mut unit.plant {
        p.opened = Some(opening);
    }
    if opening == Opening::Planted {
        let mut c = crate::counters::load(state)?;
        c.plants += 1;
        crate::counters::store(state, &c);
    }
    events.push(Event::PlantOpened {
        unit: unit.id,
        outcome: opening.name().into(),
    });
    Ok(())
}

/// Batch end: a trainer that did not open its seal in time pays the penalty, and the reveals
/// open without it. Returns whether the unit changed.
pub(crate) fn on_deadline(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    unit: &mut Unit,
    p: &Params,
    events: &mut Events,
) -> ContractResult<bool> {
    let Some(plant) = &unit.plant else {
        return Ok(false);
    };
    let Some(at) = plant.committed_at else {
        return Ok(false);
    };
    if plant.opened.is_some() || ctx.time.0 < at.0.saturating_add(p.plants.open_ms) {
        return Ok(false);
    }
    let trainer = unit.trainer.expect("a submitted unit has a trainer");
    skipped(state, unit, trainer, p, events)?;
    record_opening(state, unit, Opening::Skipped, events)?;
    Ok(true)
}

/// Whether the unit's current result is an opened plant.
pub fn is_planted(unit: &Unit) -> bool {
    unit.plant
        .as_ref()
        .is_some_and(|p| p.opened == Some(Opening::Planted))
}

/// An evaluator revealed its verdict on a plant: accepting it is provably wrong, rejecting it is
/// diligence (its reputation shows which; the stake is settled in [`resolve`]).
pub(crate) fn judge(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    evaluator: Address,
    accepted: bool,
    p: &Params,
) -> ContractResult<()> {
    reputation::record(
        state,
        &evaluator,
        if accepted {
            Outcome::Rejected
        } else {
            Outcome::Certified
        },
        ctx.time,
        p.reputation_half_life_ms,
    )?;
    Ok(())
}

/// The plant's verdicts are in (or their deadline passed): every evaluator that accepted it loses
/// [`PlantParams::evaluator_slash_bps`] of its stake, the reporters' share going to the
/// evaluators that caught it and to the trainer that planted it (so checking pays whatever the
/// verdict); then the unit goes back to its trainer, which submits its true result to a fresh
/// panel.
pub(crate) fn resolve(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    unit: &mut Unit,
    p: &Params,
    events: &mut Events,
) -> ContractResult<()> {
    let jobs::Tally {
        accepts: missed,
        rejects: caught,
        ..
    } = jobs::tally(unit);
    let mut reporters = caught.clone();
    reporters.push(unit.trainer.expect("a submitted unit has a trainer"));
    for e in &missed {
        let stake = accounts::load(state, e)?.stake;
        staking::slash(
            state,
            *e,
            stake.mul_bps(p.plants.evaluator_slash_bps),
            &reporters,
            SlashReason::AcceptedPlant { unit: unit.id },
            events,
        )?;
    }
    let mut c = crate::counters::load(state)?;
    c.plants_accepted += missed.len() as u64;
    crate::counters::store(state, &c);
    events.push(Event::PlantResolved {
        unit: unit.id,
        caught,
        missed,
    });
    jobs::return_to_trainer(state, ctx, unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_draw_follows_the_rate() {
        let seed = Hash32([3; 32]);
        let n = 20_000u32;
        let hits = (0..n)
            .filter(|i| {
                let mut s = [0u8; 32];
                s[..4].copy_from_slice(&i.to_le_bytes());
                is_plant(&Hash32(s), &seed, 50_000)
            })
            .count() as f64;
        // 5% of 20,000 = 1,000; the draw is a hash, so the count is fixed for these inputs.
        assert!((850.0..1150.0).contains(&hits), "{hits}");
        assert!(!is_plant(&Hash32([1; 32]), &seed, 0));
        assert!(is_plant(&Hash32([1; 32]), &seed, PPM));
    }

    #[test]
    fn seals_and_planted_ends_are_bound_to_their_inputs() {
        let a = Hash32([1; 32]);
        let b = Hash32([2; 32]);
        assert_ne!(seal_of(&a), seal_of(&b));
        let u = UnitId {
            job: crate::types::JobId(1),
            index: 0,
        };
        let v = UnitId {
            job: crate::types::JobId(1),
            index: 1,
        };
        assert_ne!(planted_checkpoint(&a, u), planted_checkpoint(&a, v));
        assert_ne!(planted_checkpoint(&a, u), planted_checkpoint(&b, u));
    }
}
