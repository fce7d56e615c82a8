//! The conservation laws of the state, checked over every record (by tests after every batch).

use crate::accounts::{Account, Supply};
use crate::governance::{Proposal, ProposalState};
use crate::jobs::{Job, JobState};
use crate::keys;
use crate::types::Amount;

/// What the invariants found, for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holdings {
    pub balances: Amount,
    pub stakes: Amount,
    pub unbonding: Amount,
    pub escrow: Amount,
    pub deposits: Amount,
}

impl Holdings {
    pub fn total(&self) -> u128 {
        self.balances.0 + self.stakes.0 + self.unbonding.0 + self.escrow.0 + self.deposits.0
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, String> {
    bcs::from_bytes(value).map_err(|e| format!("record {}: {e}", String::from_utf8_lossy(key)))
}

/// Checks, over every (key, value) of the state:
/// - total supply = genesis + emission − burn = Σ balances, stakes, unbonding, escrows, deposits;
/// - stake ≥ locked collateral for every account (what can be slashed is covered);
/// - a running job's escrow never exceeds its budget, a finished job holds none;
/// - total bonded stake matches the supply record.
pub fn check<'a>(
    entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Holdings, String> {
    let mut h = Holdings::default();
    let mut supply: Option<Supply> = None;
    for (k, v) in entries {
        if k.starts_with(b"acct/") {
            let a: Account = decode(k, v)?;
            if a.locked > a.stake {
                return Err(format!(
                    "account {} locks {} of {} stake",
                    String::from_utf8_lossy(k),
                    a.locked,
                    a.stake
                ));
            }
            h.balances.0 += a.balance.0;
            h.stakes.0 += a.stake.0;
            h.unbonding.0 += a.unbonding_total().0;
        } else if k.starts_with(b"job/") {
            let j: Job = decode(k, v)?;
            if j.escrow > j.spec.budget {
                return Err(format!(
                    "job {} escrow {} exceeds its budget {}",
                    j.id, j.escrow, j.spec.budget
                ));
            }
            if j.state != JobState::Running && !j.escrow.is_zero() {
                return Err(format!("finished job {} still holds {}", j.id, j.escrow));
            }
            h.escrow.0 += j.escrow.0;
        } else if k.starts_with(b"gov/proposal/") {
            let p: Proposal = decode(k, v)?;
            if p.state == ProposalState::Voting {
                h.deposits.0 += p.deposit.0;
            }
        } else if k.starts_with(b"upload-deposit/") {
            let d: crate::datasets::UploadDeposit = decode(k, v)?;
            h.deposits.0 += d.amount.0;
        } else if k == keys::SUPPLY {
            supply = Some(decode(k, v)?);
        }
    }
    let supply = supply.ok_or("no supply record")?;
    let expected = supply.genesis.0 + supply.emitted.0 - supply.burned.0;
    if h.total() != expected {
        return Err(format!(
            "supply: holdings {} ≠ genesis {} + emitted {} − burned {} = {expected} ({h:?})",
            h.total(),
            supply.genesis.0,
            supply.emitted.0,
            supply.burned.0
        ));
    }
    if h.stakes != supply.staked {
        return Err(format!(
            "bonded stake {} ≠ supply record {}",
            h.stakes, supply.staked
        ));
    }
    Ok(h)
}
