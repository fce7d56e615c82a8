//! The economics and protocol parameters: set at genesis, changed only by governance.

use serde::{Deserialize, Serialize};

use crate::error::{ContractError, ContractResult};
use crate::keys;
use crate::state::{State, StateExt};
use crate::types::Amount;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// TRAIN minted for the trainer of each certificate of useful work, before decay.
    pub emission_per_certificate: Amount,
    /// After every `emission_decay_interval` certificates, the emission shrinks by this much.
    pub emission_decay_bps: u32,
    pub emission_decay_interval: u64,
    /// Split of each certified unit's payment from escrow; the four add up to 10,000.
    pub fee_share_trainer_bps: u32,
    pub fee_share_evaluators_bps: u32,
    pub fee_share_data_provider_bps: u32,
    pub fee_share_burn_bps: u32,
    pub min_trainer_stake: Amount,
    pub min_evaluator_stake: Amount,
    /// Collateral locked from a trainer's stake per assigned unit; slashed on rejection.
    pub slash_rejected_work_bps: u32,
    /// Part of a validator's stake slashed for signing two headers of one round.
    pub slash_double_sign_bps: u32,
    /// Part of every slash paid to whoever proved it; the rest is burned.
    pub slash_reporter_share_bps: u32,
    pub unbonding_delay_ms: u64,
    pub evaluators_per_unit: u32,
    pub attestation_quorum: u32,
    /// A unit not delivered (or not evaluated) this long after assignment is reassigned.
    pub unit_timeout_ms: u64,
    /// A worker silent for this long is not assigned work.
    pub heartbeat_timeout_ms: u64,
    pub reputation_half_life_ms: u64,
    pub governance_voting_period_ms: u64,
    pub governance_quorum_bps: u32,
    pub governance_threshold_bps: u32,
    pub governance_timelock_ms: u64,
    pub governance_min_deposit: Amount,
    /// The dispute game: contest window, move deadline, bond, evaluator slash.
    #[serde(default)]
    pub disputes: crate::disputes::DisputeParams,
    /// Planted faults: rate, opening deadline, evaluator slash, skip penalty.
    #[serde(default)]
    pub plants: crate::plants::PlantParams,
    /// The validators' share of every transaction fee and of every certificate's emission,
    /// paid at the end of each batch (each committed sub-DAG) in proportion to committee stake.
    #[serde(default = "default_validator_share_bps")]
    pub validator_share_bps: u32,
    /// The least fee a transaction may offer. It is charged once the nonce and expiry checks
    /// pass, even when the call then fails: no transaction that reaches execution is free.
    #[serde(default = "default_min_fee")]
    pub min_fee: Amount,
}

fn default_validator_share_bps() -> u32 {
    2_000
}

/// 0.001 TRAIN.
fn default_min_fee() -> Amount {
    Amount(crate::types::UNITS_PER_TRAIN / 1_000)
}

impl Default for Params {
    fn default() -> Self {
        Params {
            emission_per_certificate: Amount::from_train(10),
            emission_decay_bps: 100,
            emission_decay_interval: 1_000,
            fee_share_trainer_bps: 7_000,
            fee_share_evaluators_bps: 1_500,
            fee_share_data_provider_bps: 1_000,
            fee_share_burn_bps: 500,
            min_trainer_stake: Amount::from_train(100),
            min_evaluator_stake: Amount::from_train(100),
            slash_rejected_work_bps: 2_000,
            slash_double_sign_bps: 5_000,
            slash_reporter_share_bps: 5_000,
            unbonding_delay_ms: 7 * 24 * 3_600_000,
            evaluators_per_unit: 2,
            attestation_quorum: 2,
            unit_timeout_ms: 10 * 60_000,
            heartbeat_timeout_ms: 5 * 60_000,
            reputation_half_life_ms: 30 * 24 * 3_600_000,
            governance_voting_period_ms: 24 * 3_600_000,
            governance_quorum_bps: 3_340,
            governance_threshold_bps: 5_000,
            governance_timelock_ms: 3_600_000,
            governance_min_deposit: Amount::from_train(10),
            disputes: crate::disputes::DisputeParams::default(),
            plants: crate::plants::PlantParams::default(),
            validator_share_bps: default_validator_share_bps(),
            min_fee: default_min_fee(),
        }
    }
}

/// One governed change of a parameter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamUpdate {
    EmissionPerCertificate(Amount),
    EmissionDecay {
        bps: u32,
        interval: u64,
    },
    FeeShares {
        trainer_bps: u32,
        evaluators_bps: u32,
        data_provider_bps: u32,
        burn_bps: u32,
    },
    MinTrainerStake(Amount),
    MinEvaluatorStake(Amount),
    SlashRejectedWorkBps(u32),
    SlashDoubleSignBps(u32),
    SlashReporterShareBps(u32),
    UnbondingDelayMs(u64),
    Evaluators {
        per_unit: u32,
        quorum: u32,
    },
    UnitTimeoutMs(u64),
    HeartbeatTimeoutMs(u64),
    ReputationHalfLifeMs(u64),
    Governance {
        voting_period_ms: u64,
        quorum_bps: u32,
        threshold_bps: u32,
        timelock_ms: u64,
    },
    Disputes(crate::disputes::DisputeParams),
    Plants(crate::plants::PlantParams),
    ValidatorShareBps(u32),
    MinFee(Amount),
}

fn invalid(reason: String) -> ContractError {
    ContractError::Invalid {
        what: "parameters",
        reason,
    }
}

/// A governed parameter's hard bounds, and how far one proposal may move it: to at most twice or
/// at least half its current value, or by `step`, whichever allows more (so that a value at 0
/// can move at all). No vote can leave the bounds; collapsing a safeguard takes one proposal per
/// halving, each with its own vote and timelock, in plain sight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    pub name: &'static str,
    pub min: u128,
    pub max: u128,
    pub step: u128,
}

const TRAIN: u128 = crate::types::UNITS_PER_TRAIN;
const SECOND: u128 = 1_000;
const MINUTE: u128 = 60 * SECOND;
const HOUR: u128 = 60 * MINUTE;
const DAY: u128 = 24 * HOUR;

const fn bound(name: &'static str, min: u128, max: u128, step: u128) -> Bound {
    Bound {
        name,
        min,
        max,
        step,
    }
}

/// Every governed scalar, in the order of [`Params::scalars`] (documented in
/// `docs/design/ledger.md`).
pub const BOUNDS: [Bound; 36] = [
    bound("emission_per_certificate", 0, 1_000 * TRAIN, TRAIN),
    bound("emission_decay_bps", 1, 5_000, 10),
    bound("emission_decay_interval", 1, 1_000_000, 100),
    bound("fee_share_trainer_bps", 1_000, 9_000, 500),
    bound("fee_share_evaluators_bps", 500, 5_000, 250),
    bound("fee_share_data_provider_bps", 0, 5_000, 250),
    bound("fee_share_burn_bps", 0, 5_000, 250),
    bound("min_trainer_stake", TRAIN, 1_000_000 * TRAIN, TRAIN),
    bound("min_evaluator_stake", TRAIN, 1_000_000 * TRAIN, TRAIN),
    bound("slash_rejected_work_bps", 500, 10_000, 250),
    bound("slash_double_sign_bps", 1_000, 10_000, 500),
    bound("slash_reporter_share_bps", 0, 5_000, 250),
    bound("unbonding_delay_ms", SECOND, 90 * DAY, HOUR),
    bound("evaluators_per_unit", 2, 16, 1),
    bound("attestation_quorum", 2, 16, 1),
    bound("unit_timeout_ms", SECOND, 7 * DAY, MINUTE),
    bound("heartbeat_timeout_ms", SECOND, DAY, MINUTE),
    bound("reputation_half_life_ms", MINUTE, 365 * DAY, DAY),
    bound("governance_voting_period_ms", SECOND, 30 * DAY, HOUR),
    bound("governance_quorum_bps", 2_000, 10_000, 250),
    bound("governance_threshold_bps", 5_000, 10_000, 250),
    bound("governance_timelock_ms", SECOND, 30 * DAY, HOUR),
    bound("governance_min_deposit", TRAIN, 1_000_000 * TRAIN, TRAIN),
    bound("disputes.window_ms", SECOND, 7 * DAY, MINUTE),
    bound("disputes.move_ms", SECOND, DAY, MINUTE),
    bound("disputes.bond", 0, 1_000_000 * TRAIN, TRAIN),
    bound("disputes.evaluator_slash_bps", 500, 10_000, 250),
    bound("plants.rate_ppm", 0, crate::plants::PPM as u128, 10_000),
    bound("plants.open_ms", SECOND, DAY, MINUTE),
    bound("plants.evaluator_slash_bps", 500, 10_000, 250),
    bound("plants.skip_penalty", 0, 1_000_000 * TRAIN, TRAIN),
    bound("validator_share_bps", 0, 5_000, 250),
    // Never free: a floor of a millionth of a TRAIN, at most one TRAIN.
    bound("min_fee", TRAIN / 1_000_000, TRAIN, TRAIN / 1_000),
    // Derived: the most TRAIN emission can ever mint (see `Params::emission_total_max`).
    bound(
        "emission_total_max_train",
        0,
        EMISSION_TOTAL_MAX_TRAIN,
        100_000,
    ),
    bound("fee shares in total (bps)", 10_000, 10_000, 0),
    bound("attestation quorum beyond the panel", 0, 0, 0),
];

/// The most TRAIN all emission together may ever mint: the geometric series of the schedule.
pub const EMISSION_TOTAL_MAX_TRAIN: u128 = 1_000_000_000;

impl Params {
    /// Each governed scalar with its value, in the order of [`BOUNDS`].
    pub fn scalars(&self) -> [u128; 36] {
        [
            self.emission_per_certificate.0,
            self.emission_decay_bps.into(),
            self.emission_decay_interval.into(),
            self.fee_share_trainer_bps.into(),
            self.fee_share_evaluators_bps.into(),
            self.fee_share_data_provider_bps.into(),
            self.fee_share_burn_bps.into(),
            self.min_trainer_stake.0,
            self.min_evaluator_stake.0,
            self.slash_rejected_work_bps.into(),
            self.slash_double_sign_bps.into(),
            self.slash_reporter_share_bps.into(),
            self.unbonding_delay_ms.into(),
            self.evaluators_per_unit.into(),
            self.attestation_quorum.into(),
            self.unit_timeout_ms.into(),
            self.heartbeat_timeout_ms.into(),
            self.reputation_half_life_ms.into(),
            self.governance_voting_period_ms.into(),
            self.governance_quorum_bps.into(),
            self.governance_threshold_bps.into(),
            self.governance_timelock_ms.into(),
            self.governance_min_deposit.0,
            self.disputes.window_ms.into(),
            self.disputes.move_ms.into(),
            self.disputes.bond.0,
            self.disputes.evaluator_slash_bps.into(),
            self.plants.rate_ppm.into(),
            self.plants.open_ms.into(),
            self.plants.evaluator_slash_bps.into(),
            self.plants.skip_penalty.0,
            self.validator_share_bps.into(),
            self.min_fee.0,
            self.emission_total_max_train(),
            u128::from(self.fee_share_trainer_bps)
                + u128::from(self.fee_share_evaluators_bps)
                + u128::from(self.fee_share_data_provider_bps)
                + u128::from(self.fee_share_burn_bps),
            // A quorum larger than the panel could never certify.
            u128::from(
                self.attestation_quorum
                    .saturating_sub(self.evaluators_per_unit),
            ),
        ]
    }

    /// The most TRAIN the emission schedule can mint in all: each interval of
    /// `emission_decay_interval` certificates pays at most the previous one's rate, decaying by
    /// `emission_decay_bps`, so the total is below `first × interval × 10000 / decay_bps`.
    pub fn emission_total_max_train(&self) -> u128 {
        let per = self.emission_per_certificate.0 / TRAIN + 1;
        per.saturating_mul(u128::from(self.emission_decay_interval))
            .saturating_mul(10_000)
            / u128::from(self.emission_decay_bps.max(1))
    }

    /// Every scalar within its hard bounds.
    pub fn check_bounds(&self) -> ContractResult<()> {
        for (b, v) in BOUNDS.iter().zip(self.scalars()) {
            if v < b.min || v > b.max {
                return Err(invalid(format!(
                    "{} = {v} is outside its bounds {}..={}",
                    b.name, b.min, b.max
                )));
            }
        }
        Ok(())
    }

    /// What one proposal may do to the parameters: every scalar moves at most to twice or half
    /// its value, or by its step, whichever allows more.
    pub fn check_change(&self, next: &Params) -> ContractResult<()> {
        for ((b, old), new) in BOUNDS.iter().zip(self.scalars()).zip(next.scalars()) {
            let high = old.saturating_mul(2).max(old.saturating_add(b.step));
            let low = (old / 2).min(old.saturating_sub(b.step));
            if new > high || new < low {
                return Err(invalid(format!(
                    "{} from {old} to {new}: one proposal moves it within {low}..={high}",
                    b.name
                )));
            }
        }
        Ok(())
    }

    /// Every scalar within its bounds ([`BOUNDS`]: they cover the fee shares' sum, a quorum
    /// no larger than the panel, no zero timeouts or slashes), and the dispute and plant
    /// parameters coherent.
    pub fn validate(&self) -> ContractResult<()> {
        self.check_bounds()?;
        self.disputes
            .validate()
            .and_then(|()| self.plants.validate())
            .map_err(|reason| ContractError::Invalid {
                what: "parameters",
                reason,
            })
    }

    /// Applies one update to a copy and validates the result.
    pub fn updated(&self, update: &ParamUpdate) -> ContractResult<Params> {
        let mut p = self.clone();
        match *update {
            ParamUpdate::EmissionPerCertificate(a) => p.emission_per_certificate = a,
            ParamUpdate::EmissionDecay { bps, interval } => {
                p.emission_decay_bps = bps;
                p.emission_decay_interval = interval;
            }
            ParamUpdate::FeeShares {
                trainer_bps,
                evaluators_bps,
                data_provider_bps,
                burn_bps,
            } => {
                p.fee_share_trainer_bps = trainer_bps;
                p.fee_share_evaluators_bps = evaluators_bps;
                p.fee_share_data_provider_bps = data_provider_bps;
                p.fee_share_burn_bps = burn_bps;
            }
            ParamUpdate::MinTrainerStake(a) => p.min_trainer_stake = a,
            ParamUpdate::MinEvaluatorStake(a) => p.min_evaluator_stake = a,
            ParamUpdate::SlashRejectedWorkBps(b) => p.slash_rejected_work_bps = b,
            ParamUpdate::SlashDoubleSignBps(b) => p.slash_double_sign_bps = b,
            ParamUpdate::SlashReporterShareBps(b) => p.slash_reporter_share_bps = b,
            ParamUpdate::UnbondingDelayMs(ms) => p.unbonding_delay_ms = ms,
            ParamUpdate::Evaluators { per_unit, quorum } => {
                p.evaluators_per_unit = per_unit;
                p.attestation_quorum = quorum;
            }
            ParamUpdate::UnitTimeoutMs(ms) => p.unit_timeout_ms = ms,
            ParamUpdate::HeartbeatTimeoutMs(ms) => p.heartbeat_timeout_ms = ms,
            ParamUpdate::ReputationHalfLifeMs(ms) => p.reputation_half_life_ms = ms,
            ParamUpdate::Governance {
                voting_period_ms,
                quorum_bps,
                threshold_bps,
                timelock_ms,
            } => {
                p.governance_voting_period_ms = voting_period_ms;
                p.governance_quorum_bps = quorum_bps;
                p.governance_threshold_bps = threshold_bps;
                p.governance_timelock_ms = timelock_ms;
            }
            ParamUpdate::Disputes(ref d) => p.disputes = d.clone(),
            ParamUpdate::Plants(ref d) => p.plants = d.clone(),
            ParamUpdate::ValidatorShareBps(b) => p.validator_share_bps = b,
            ParamUpdate::MinFee(a) => p.min_fee = a,
        }
        p.validate()?;
        Ok(p)
    }

    /// The emission for the `n`-th certificate (0-based): decays geometrically per interval.
    pub fn emission_for(&self, n: u64) -> Amount {
        let mut e = self.emission_per_certificate;
        let steps = (n / self.emission_decay_interval).min(10_000);
        for _ in 0..steps {
            e = e.mul_bps(10_000 - self.emission_decay_bps);
            if e.is_zero() {
                break;
            }
        }
        e
    }
}

pub fn load(state: &(impl State + ?Sized)) -> ContractResult<Params> {
    state
        .read(keys::PARAMS)?
        .ok_or_else(|| ContractError::CorruptState("no parameters: genesis not applied".into()))
}

pub fn store(state: &mut (impl State + ?Sized), params: &Params) {
    state.write(keys::PARAMS.to_vec(), params);
}
