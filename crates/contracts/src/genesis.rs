//! The initial state: balances, validators with their stake, parameters.

use serde::{Deserialize, Serialize};

use crate::accounts::{self, Supply};
use crate::error::{ContractError, ContractResult};
use crate::keys;
use crate::params::{self, Params};
use crate::staking::ValidatorInfo;
use crate::state::{State, StateExt};
use crate::types::{Address, Amount, Hash32};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisAccount {
    pub address: Address,
    pub balance: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisValidator {
    pub address: Address,
    /// The ed25519 key it signs consensus headers with (hex in JSON).
    pub consensus_key: Hash32,
    /// Bonded at genesis, on top of any balance.
    pub stake: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub chain_id: String,
    pub genesis_time_ms: u64,
    pub accounts: Vec<GenesisAccount>,
    pub validators: Vec<GenesisValidator>,
    pub params: Params,
}

impl Genesis {
    /// Reads a genesis from its JSON form (see `ops/genesis/`).
    pub fn from_json(json: &str) -> ContractResult<Genesis> {
        let g: Genesis = serde_json::from_str(json).map_err(|e| ContractError::Invalid {
            what: "genesis file",
            reason: e.to_string(),
        })?;
        g.validate()?;
        Ok(g)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a genesis always serializes")
    }

    /// A stable fingerprint of the genesis (its canonical encoding, hashed).
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&bcs::to_bytes(self).expect("a genesis always serializes")).as_bytes()
    }

    pub fn validate(&self) -> ContractResult<()> {
        let invalid = |reason: String| ContractError::Invalid {
            what: "genesis",
            reason,
        };
        if self.chain_id.is_empty() || self.chain_id.len() > 64 {
            return Err(invalid("chain id must be 1 to 64 bytes".into()));
        }
        self.params.validate()?;
        let mut seen = std::collections::BTreeSet::new();
        for a in &self.accounts {
            if !seen.insert(a.address) {
                return Err(invalid(format!("account {} listed twice", a.address)));
            }
        }
        let mut keys_seen = std::collections::BTreeSet::new();
        for v in &self.validators {
            if v.stake.is_zero() {
                return Err(invalid(format!("validator {} has no stake", v.address)));
            }
            if !keys_seen.insert(v.consensus_key) {
                return Err(invalid("two validators share a consensus key".into()));
            }
        }
        Ok(())
    }

    /// Writes the initial state. Total supply = every balance + every validator stake.
    pub fn apply(&self, state: &mut (impl State + ?Sized)) -> ContractResult<()> {
        self.validate()?;
        params::store(state, &self.params);
        let mut supply = Supply::default();
        for a in &self.accounts {
            accounts::credit(state, &a.address, a.balance)?;
            supply.genesis = supply.genesis.checked_add(a.balance)?;
        }
        let mut validators = Vec::new();
        for v in &self.validators {
            let mut acct = accounts::load(state, &v.address)?;
            acct.stake = acct.stake.checked_add(v.stake)?;
            accounts::store(state, &v.address, &acct);
            supply.genesis = supply.genesis.checked_add(v.stake)?;
            supply.staked = supply.staked.checked_add(v.stake)?;
            validators.push(ValidatorInfo {
                address: v.address,
                consensus_key: v.consensus_key.0,
            });
        }
        accounts::store_supply(state, &supply);
        state.write(keys::VALIDATORS.to_vec(), &validators);
        Ok(())
    }
}
