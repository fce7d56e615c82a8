//! The initial state: balances, validators with their stake, parameters; and the consensus
//! parameters every validator's DAG core must share (they do not enter the state: the node reads
//! them from the genesis when it builds its core).

use serde::{Deserialize, Serialize};
use trainmesh_dag::encoding::MESSAGE_BYTES_MAX;
use trainmesh_dag::ConsensusParams;

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

/// The public side of the randomness beacon, dealt with the genesis: a threshold BLS key on
/// BLS12-381 (signatures in G1, keys in G2) with one share per validator, share `i + 1` to the
/// validator at position `i`. `public` holds the commitments to the sharing polynomial's
/// coefficients (hex of compressed G2 points, lowest degree first): the first is the group key,
/// and together they give every share's public key. The ledger crate checks the points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeaconSetup {
    /// Shares that make a beacon value: `threshold` = `public.len()`.
    pub threshold: u16,
    pub public: Vec<String>,
}

/// Hex characters of one compressed G2 point.
pub const BEACON_POINT_HEX_LEN: usize = 192;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub chain_id: String,
    pub genesis_time_ms: u64,
    pub accounts: Vec<GenesisAccount>,
    pub validators: Vec<GenesisValidator>,
    pub params: Params,
    /// The DAG's consensus-critical parameters (absent in a file: the defaults, those of
    /// `CoreConfig::default()`).
    #[serde(default)]
    pub consensus: ConsensusParams,
    /// The randomness beacon: required to run validators (a ledger executed without consensus,
    /// as in tests, needs none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beacon: Option<BeaconSetup>,
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
        validate_consensus(&self.consensus)?;
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
        if let Some(b) = &self.beacon {
            self.validate_beacon(b)?;
        }
        Ok(())
    }

    /// The consensus stake of each validator: whole TRAIN, at least 1.
    pub fn consensus_stakes(&self) -> Vec<u64> {
        self.validators
            .iter()
            .map(|v| ((v.stake.0 / crate::types::UNITS_PER_TRAIN) as u64).max(1))
            .collect()
    }

    /// The beacon's threshold is the one the validators' stakes call for, with one commitment
    /// per coefficient, each a well-formed hex point.
    fn validate_beacon(&self, b: &BeaconSetup) -> ContractResult<()> {
        let invalid = |reason: String| ContractError::Invalid {
            what: "genesis beacon",
            reason,
        };
        let expected =
            trainmesh_dag::beacon_threshold(&self.consensus_stakes()).ok_or_else(|| {
                invalid("validator stakes are too uneven for one beacon share per validator".into())
            })?;
        if b.threshold != expected {
            return Err(invalid(format!(
                "threshold {} but {} validators with these stakes need {expected}",
                b.threshold,
                self.validators.len()
            )));
        }
        if b.public.len() != b.threshold as usize {
            return Err(invalid(format!(
                "{} coefficient commitments for threshold {}",
                b.public.len(),
                b.threshold
            )));
        }
        for (i, p) in b.public.iter().enumerate() {
            if p.len() != BEACON_POINT_HEX_LEN || hex::decode(p).is_err() {
                return Err(invalid(format!(
                    "commitment {i} is not {BEACON_POINT_HEX_LEN} hex characters"
                )));
            }
        }
        Ok(())
    }

    /// Writes the initial state. Total supply = every balance + every validator stake.
    pub fn apply(&self, state: &mut (impl State + ?Sized)) -> ContractResult<()> {
        self.validate()?;
        params::store(state, &self.params);
        state.write(keys::CHAIN_ID.to_vec(), &self.chain_id);
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
                committee_stake: v.stake,
            });
        }
        accounts::store_supply(state, &supply);
        state.write(keys::VALIDATORS.to_vec(), &validators);
        Ok(())
    }
}

/// The most rounds a validator may hold ahead of its highest round (and so the deepest garbage
/// collection): beyond this, the memory a peer can make it hold is no longer a bound.
pub const ROUND_WINDOW_ROUNDS_MAX: u64 = 10_000;
/// The longest leader timeout: beyond this, a crashed leader stalls commits for minutes.
pub const LEADER_TIMEOUT_MS_MAX: u64 = 600_000;
/// The most transactions a header may hold.
pub const HEADER_TRANSACTIONS_MAX: u64 = 1_000_000;

/// Every consensus parameter within its range: a header (its payload plus one transaction
/// over the batching threshold) fits in half a network message, the leader timeout is positive and
/// bounded, and garbage collection keeps at least the two rounds a commit reads, and no more
/// than the round window.
fn validate_consensus(p: &ConsensusParams) -> ContractResult<()> {
    let invalid = |reason: String| ContractError::Invalid {
        what: "genesis consensus parameters",
        reason,
    };
    let header_bytes_max = MESSAGE_BYTES_MAX as u64 / 2;
    let ranges = [
        (
            "header_payload_bytes_max",
            p.header_payload_bytes_max,
            1,
            header_bytes_max,
        ),
        (
            "transaction_bytes_max",
            p.transaction_bytes_max,
            1,
            header_bytes_max,
        ),
        (
            "header_transactions_max",
            p.header_transactions_max,
            1,
            HEADER_TRANSACTIONS_MAX,
        ),
        (
            "leader_timeout_ms",
            p.leader_timeout_ms,
            1,
            LEADER_TIMEOUT_MS_MAX,
        ),
        (
            "round_window_rounds",
            p.round_window_rounds,
            2,
            ROUND_WINDOW_ROUNDS_MAX,
        ),
        (
            "gc_depth_rounds",
            p.gc_depth_rounds,
            2,
            p.round_window_rounds,
        ),
    ];
    for (name, value, min, max) in ranges {
        if !(min..=max).contains(&value) {
            return Err(invalid(format!(
                "{name} = {value} is outside {min}..={max}"
            )));
        }
    }
    let header = p.header_payload_bytes_max + p.transaction_bytes_max;
    if header > header_bytes_max {
        return Err(invalid(format!(
            "header_payload_bytes_max + transaction_bytes_max = {header} exceeds {header_bytes_max} \
             (half a network message)"
        )));
    }
    Ok(())
}
