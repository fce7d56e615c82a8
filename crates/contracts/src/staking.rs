//! Staking and slashing: bond, unbond with a delay, withdraw; slash with evidence, the slashed
//! amount split between the reporters and the burn.

use serde::{Deserialize, Serialize};
use trainmesh_dag::{Authority, Committee, Epoch, EquivocationEvidence, PublicKey};

use crate::accounts::{self, Unbonding};
use crate::error::{ContractError, ContractResult};
use crate::events::{Event, Events, PaymentReason, SlashReason};
use crate::keys;
use crate::params;
use crate::state::{State, StateExt};
use crate::types::{Address, Amount, Context};
use crate::workers;

/// Unbonding entries an account may have at once.
pub const UNBONDING_ENTRIES_MAX: usize = 32;

/// A consensus validator: its account and the key it signs DAG headers with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorInfo {
    pub address: Address,
    pub consensus_key: [u8; 32],
    /// The stake its consensus power rests on: locked while the committee lasts (the committee
    /// is the genesis'), so that a validator cannot unbond and keep its vote.
    pub committee_stake: Amount,
}

pub fn validators(state: &(impl State + ?Sized)) -> ContractResult<Vec<ValidatorInfo>> {
    Ok(state.read(keys::VALIDATORS)?.unwrap_or_default())
}

pub fn bond(
    state: &mut (impl State + ?Sized),
    who: Address,
    amount: Amount,
    events: &mut Events,
) -> ContractResult<()> {
    if amount.is_zero() {
        return Err(ContractError::Invalid {
            what: "bond",
            reason: "amount is zero".into(),
        });
    }
    let mut a = accounts::load(state, &who)?;
    if a.balance < amount {
        return Err(ContractError::InsufficientBalance {
            available: a.balance,
            required: amount,
        });
    }
    a.balance = a.balance.checked_sub(amount)?;
    a.stake = a.stake.checked_add(amount)?;
    crate::jobs::trainer_pool_changed(state)?;
    accounts::store(state, &who, &a);
    let mut s = accounts::supply(state)?;
    s.staked = s.staked.checked_add(amount)?;
    accounts::store_supply(state, &s);
    events.push(Event::Bonded { who, amount });
    Ok(())
}

/// Starts unbonding free stake; a registered worker keeps at least its role's minimum.
pub fn unbond(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    who: Address,
    amount: Amount,
    events: &mut Events,
) -> ContractResult<()> {
    let p = params::load(state)?;
    let mut a = accounts::load(state, &who)?;
    if amount.is_zero() || a.free_stake() < amount {
        return Err(ContractError::InsufficientStake {
            available: a.free_stake(),
            required: amount,
        });
    }
    if let Some(v) = validators(state)?.into_iter().find(|v| v.address == who) {
        let left = a.stake.checked_sub(amount)?;
        if left < v.committee_stake {
            return Err(ContractError::StakeBelowMinimum {
                role: "validator",
                stake: left,
                minimum: v.committee_stake,
            });
        }
    }
    if let Some(w) = workers::load(state, &who)? {
        let minimum = workers::minimum_stake(&p, w.role);
        let left = a.stake.checked_sub(amount)?;
        if left < minimum {
            return Err(ContractError::StakeBelowMinimum {
                role: w.role.name(),
                stake: left,
                minimum,
            });
        }
    }
    if a.unbonding.len() >= UNBONDING_ENTRIES_MAX {
        return Err(ContractError::TooMany {
            what: "unbonding entries",
            count: a.unbonding.len() + 1,
            max: UNBONDING_ENTRIES_MAX,
        });
    }
    let release_at = ctx.time.saturating_add_ms(p.unbonding_delay_ms);
    a.stake = a.stake.checked_sub(amount)?;
    a.unbonding.push(Unbonding { amount, release_at });
    accounts::store(state, &who, &a);
    let mut s = accounts::supply(state)?;
    s.staked = s.staked.checked_sub(amount)?;
    accounts::store_supply(state, &s);
    events.push(Event::UnbondingStarted {
        who,
        amount,
        release_at,
    });
    Ok(())
}

/// Moves every matured unbonding entry back to the balance.
pub fn withdraw(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    who: Address,
    events: &mut Events,
) -> ContractResult<Amount> {
    let mut a = accounts::load(state, &who)?;
    let (ready, waiting): (Vec<Unbonding>, Vec<Unbonding>) = a
        .unbonding
        .drain(..)
        .partition(|u| u.release_at <= ctx.time);
    if ready.is_empty() {
        return Err(ContractError::NothingToWithdraw {
            release_at_ms: waiting.iter().map(|u| u.release_at.0).min(),
        });
    }
    let mut total = Amount::ZERO;
    for u in &ready {
        total = total.checked_add(u.amount)?;
    }
    a.unbonding = waiting;
    a.balance = a.balance.checked_add(total)?;
    accounts::store(state, &who, &a);
    events.push(Event::Withdrawn { who, amount: total });
    Ok(total)
}

/// Takes up to `amount` from `offender` (stake, then unbonding entries), pays the reporters'
/// share equally among `reporters`, burns the rest. The caller frees the lock the offence is
/// about first (a unit's collateral, a dispute bond); other locks stay, capped at what stake is
/// left, so that a worker slashed on one unit cannot unbond the collateral of another.
pub fn slash(
    state: &mut (impl State + ?Sized),
    offender: Address,
    amount: Amount,
    reporters: &[Address],
    reason: SlashReason,
    events: &mut Events,
) -> ContractResult<Amount> {
    let p = params::load(state)?;
    let mut a = accounts::load(state, &offender)?;
    let mut s = accounts::supply(state)?;
    let from_stake = amount.min(a.stake);
    a.stake = a.stake.checked_sub(from_stake)?;
    a.locked = a.locked.min(a.stake);
    s.staked = s.staked.checked_sub(from_stake)?;
    let mut taken = from_stake;
    for u in a.unbonding.iter_mut() {
        let more = amount.checked_sub(taken)?.min(u.amount);
        u.amount = u.amount.checked_sub(more)?;
        taken = taken.checked_add(more)?;
    }
    a.unbonding.retain(|u| !u.amount.is_zero());
    accounts::store(state, &offender, &a);
    accounts::store_supply(state, &s);
    let reward_total = if reporters.is_empty() {
        Amount::ZERO
    } else {
        taken.mul_bps(p.slash_reporter_share_bps)
    };
    let each = Amount(reward_total.0 / reporters.len().max(1) as u128);
    let mut paid = Amount::ZERO;
    for r in reporters {
        if each.is_zero() {
            break;
        }
        accounts::credit(state, r, each)?;
        paid = paid.checked_add(each)?;
        events.push(Event::Paid {
            to: *r,
            amount: each,
            reason: PaymentReason::ReporterReward { offender },
        });
    }
    let burned = taken.checked_sub(paid)?;
    accounts::burn(state, burned)?;
    events.push(Event::Slashed {
        who: offender,
        amount: taken,
        burned,
        reason,
    });
    Ok(taken)
}

/// Pays `amount` to the validators in proportion to their committee stake: minted (a share of a
/// certificate's emission) or already taken from payers (a share of a batch's fees). What the
/// division leaves, and everything when there are no validators, is burned (minted amounts are
/// then simply not minted). Returns what was paid.
pub fn pay_validators(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    amount: Amount,
    minted: bool,
    events: &mut Events,
) -> ContractResult<Amount> {
    let validators = validators(state)?;
    let total: u128 = validators.iter().map(|v| v.committee_stake.0).sum();
    let mut paid = Amount::ZERO;
    if total > 0 && !amount.is_zero() {
        for v in &validators {
            // amount × stake / total, without overflow for any u128 amounts that exist.
            let each = Amount(
                (amount.0 / total) * v.committee_stake.0
                    + (amount.0 % total) * v.committee_stake.0 / total,
            );
            if each.is_zero() {
                continue;
            }
            if minted {
                accounts::mint(state, &v.address, each)?;
            } else {
                accounts::credit(state, &v.address, each)?;
            }
            paid = paid.checked_add(each)?;
            events.push(Event::Paid {
                to: v.address,
                amount: each,
                reason: PaymentReason::ValidatorReward { height: ctx.height },
            });
        }
    }
    if !minted {
        let rest = amount.checked_sub(paid)?;
        if !rest.is_zero() {
            accounts::burn(state, rest)?;
        }
    }
    Ok(paid)
}

/// Slashes a validator proven to have signed two headers for one round.
pub fn slash_double_sign(
    state: &mut (impl State + ?Sized),
    reporter: Address,
    evidence: &EquivocationEvidence,
    events: &mut Events,
) -> ContractResult<Amount> {
    let validators = validators(state)?;
    if validators.is_empty() {
        return Err(ContractError::InvalidEvidence("no validators".into()));
    }
    let authorities = validators
        .iter()
        .map(|v| Authority {
            public_key: PublicKey(v.consensus_key),
            stake: 1,
        })
        .collect();
    let chain_id: String = state
        .read(keys::CHAIN_ID)?
        .ok_or_else(|| ContractError::CorruptState("no chain id: genesis not applied".into()))?;
    let chain = trainmesh_dag::chain_digest(&chain_id);
    let committee = Committee::new(Epoch(0), authorities)
        .map_err(|e| ContractError::CorruptState(format!("validator set: {e}")))?
        .with_chain(chain);
    if evidence.first.header().chain != chain || evidence.second.header().chain != chain {
        return Err(ContractError::InvalidEvidence(
            "headers signed for another network".into(),
        ));
    }
    if !evidence.verify(&committee) {
        return Err(ContractError::InvalidEvidence(
            "not two validly signed headers of one author and round".into(),
        ));
    }
    let offender = validators[evidence.first.author().as_usize()].address;
    if reporter == offender {
        return Err(ContractError::InvalidEvidence(
            "a validator cannot report its own double signing".into(),
        ));
    }
    let round = evidence.first.round().0;
    let mut id = blake3::Hasher::new();
    id.update(b"double-sign");
    id.update(&evidence.first.author().0.to_le_bytes());
    id.update(&round.to_le_bytes());
    let id = *id.finalize().as_bytes();
    if state.get(&keys::evidence(&id))?.is_some() {
        return Err(ContractError::EvidenceAlreadyUsed);
    }
    state.put(keys::evidence(&id), vec![1]);
    let p = params::load(state)?;
    let a = accounts::load(state, &offender)?;
    let amount = Amount(a.stake.0 + a.unbonding_total().0).mul_bps(p.slash_double_sign_bps);
    slash(
        state,
        offender,
        amount,
        &[reporter],
        SlashReason::DoubleSign { round },
        events,
    )
}
