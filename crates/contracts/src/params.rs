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
}

fn invalid(reason: String) -> ContractError {
    ContractError::Invalid {
        what: "parameters",
        reason,
    }
}

impl Params {
    pub fn validate(&self) -> ContractResult<()> {
        self.disputes
            .validate()
            .and_then(|()| self.plants.validate())
            .map_err(|reason| ContractError::Invalid {
                what: "parameters",
                reason,
            })?;
        let shares = self.fee_share_trainer_bps as u64
            + self.fee_share_evaluators_bps as u64
            + self.fee_share_data_provider_bps as u64
            + self.fee_share_burn_bps as u64;
        if shares != 10_000 {
            return Err(invalid(format!(
                "fee shares add up to {shares} bps, not 10000"
            )));
        }
        for (name, bps) in [
            ("emission_decay_bps", self.emission_decay_bps),
            ("slash_rejected_work_bps", self.slash_rejected_work_bps),
            ("slash_double_sign_bps", self.slash_double_sign_bps),
            ("slash_reporter_share_bps", self.slash_reporter_share_bps),
            ("governance_quorum_bps", self.governance_quorum_bps),
            ("governance_threshold_bps", self.governance_threshold_bps),
        ] {
            if bps > 10_000 {
                return Err(invalid(format!("{name} = {bps} exceeds 10000")));
            }
        }
        if self.emission_decay_interval == 0 {
            return Err(invalid("emission_decay_interval is 0".into()));
        }
        if self.evaluators_per_unit == 0
            || self.attestation_quorum == 0
            || self.attestation_quorum > self.evaluators_per_unit
            || self.evaluators_per_unit > 16
        {
            return Err(invalid(format!(
                "need 0 < attestation_quorum ({}) ≤ evaluators_per_unit ({}) ≤ 16",
                self.attestation_quorum, self.evaluators_per_unit
            )));
        }
        if self.slash_rejected_work_bps == 0 {
            return Err(invalid(
                "slash_rejected_work_bps is 0: cheating would be free".into(),
            ));
        }
        for (name, ms) in [
            ("unit_timeout_ms", self.unit_timeout_ms),
            ("heartbeat_timeout_ms", self.heartbeat_timeout_ms),
            ("reputation_half_life_ms", self.reputation_half_life_ms),
            (
                "governance_voting_period_ms",
                self.governance_voting_period_ms,
            ),
        ] {
            if ms == 0 {
                return Err(invalid(format!("{name} is 0")));
            }
        }
        Ok(())
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
