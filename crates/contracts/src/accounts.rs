//! Accounts, the TRAIN supply, and the moves of money between them. Every move keeps
//! `Σ(balances, stakes, unbonding, escrows, deposits) = genesis + emitted − burned`.

use serde::{Deserialize, Serialize};

use crate::error::{ContractError, ContractResult};
use crate::keys;
use crate::state::{State, StateExt};
use crate::types::{Address, Amount, TimestampMs};

/// Stake on its way out: withdrawable at `release_at`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbonding {
    pub amount: Amount,
    pub release_at: TimestampMs,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance: Amount,
    /// The nonce the next transaction of this account must carry.
    pub nonce: u64,
    /// Bonded stake.
    pub stake: Amount,
    /// Part of `stake` held as collateral for work in progress (slashable); never above `stake`.
    pub locked: Amount,
    pub unbonding: Vec<Unbonding>,
}

impl Account {
    /// Stake that is neither locked as collateral nor on its way out.
    pub fn free_stake(&self) -> Amount {
        self.stake.saturating_sub(self.locked)
    }

    pub fn unbonding_total(&self) -> Amount {
        Amount(self.unbonding.iter().map(|u| u.amount.0).sum())
    }
}

/// The supply ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supply {
    pub genesis: Amount,
    pub emitted: Amount,
    pub burned: Amount,
    /// Total bonded stake (for governance quorums).
    pub staked: Amount,
}

impl Supply {
    /// What all holdings must add up to.
    pub fn expected_total(&self) -> Amount {
        Amount(self.genesis.0 + self.emitted.0 - self.burned.0)
    }
}

pub fn load(state: &(impl State + ?Sized), a: &Address) -> ContractResult<Account> {
    Ok(state.read(&keys::account(a))?.unwrap_or_default())
}

pub fn store(state: &mut (impl State + ?Sized), a: &Address, account: &Account) {
    state.write(keys::account(a), account);
}

pub fn supply(state: &(impl State + ?Sized)) -> ContractResult<Supply> {
    Ok(state.read(keys::SUPPLY)?.unwrap_or_default())
}

pub fn store_supply(state: &mut (impl State + ?Sized), supply: &Supply) {
    state.write(keys::SUPPLY.to_vec(), supply);
}

pub fn credit(
    state: &mut (impl State + ?Sized),
    a: &Address,
    amount: Amount,
) -> ContractResult<()> {
    let mut acct = load(state, a)?;
    acct.balance = acct.balance.checked_add(amount)?;
    store(state, a, &acct);
    Ok(())
}

pub fn debit(state: &mut (impl State + ?Sized), a: &Address, amount: Amount) -> ContractResult<()> {
    let mut acct = load(state, a)?;
    if acct.balance < amount {
        return Err(ContractError::InsufficientBalance {
            available: acct.balance,
            required: amount,
        });
    }
    acct.balance = acct.balance.checked_sub(amount)?;
    store(state, a, &acct);
    Ok(())
}

pub fn transfer(
    state: &mut (impl State + ?Sized),
    from: &Address,
    to: &Address,
    amount: Amount,
) -> ContractResult<()> {
    debit(state, from, amount)?;
    credit(state, to, amount)
}

/// New TRAIN: emission for useful work.
pub fn mint(state: &mut (impl State + ?Sized), to: &Address, amount: Amount) -> ContractResult<()> {
    let mut s = supply(state)?;
    s.emitted = s.emitted.checked_add(amount)?;
    store_supply(state, &s);
    credit(state, to, amount)
}

/// Records that `amount`, already taken out of every holding, is destroyed.
pub fn burn(state: &mut (impl State + ?Sized), amount: Amount) -> ContractResult<()> {
    let mut s = supply(state)?;
    s.burned = s.burned.checked_add(amount)?;
    store_supply(state, &s);
    Ok(())
}

/// Takes `amount` from a balance and destroys it (transaction fees).
pub fn burn_from(
    state: &mut (impl State + ?Sized),
    from: &Address,
    amount: Amount,
) -> ContractResult<()> {
    debit(state, from, amount)?;
    burn(state, amount)
}
