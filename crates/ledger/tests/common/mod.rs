//! A small network around one ledger: keys, genesis, batches with advancing time.
#![allow(dead_code)]

use bytes::Bytes;
use trainmesh_ledger::contracts::{
    invariants, Address, Amount, Call, Event, Genesis, GenesisAccount, GenesisValidator, Params,
    TimestampMs,
};
use trainmesh_ledger::{AccountKey, Batch, BatchOutcome, Ledger, Rejection};

pub const CHAIN: &str = "trainmesh-test";
/// The default minimum fee.
pub const FEE: Amount = Amount(1_000_000);

pub struct Net {
    pub ledger: Ledger,
    pub time_ms: u64,
    pub dir: tempfile::TempDir,
}

pub fn genesis(
    accounts: &[(&AccountKey, u64)],
    validators: &[&AccountKey],
    params: Params,
) -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 1_000_000,
        accounts: accounts
            .iter()
            .map(|(k, train)| GenesisAccount {
                address: k.address(),
                balance: Amount::from_train(*train),
            })
            .collect(),
        validators: validators
            .iter()
            .enumerate()
            .map(|(i, k)| GenesisValidator {
                address: k.address(),
                consensus_key: trainmesh_ledger::contracts::Hash32(
                    trainmesh_dag::KeyPair::from_seed(i as u64).public().0,
                ),
                stake: Amount::from_train(1_000),
            })
            .collect(),
        params,
        consensus: trainmesh_dag::ConsensusParams::default(),
        beacon: None,
    }
}

impl Net {
    pub fn new(genesis: &Genesis) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path().join("ledger.redb")).unwrap();
        ledger.init(genesis).unwrap();
        Net {
            ledger,
            time_ms: genesis.genesis_time_ms,
            dir,
        }
    }

    pub fn nonce(&self, a: &Address) -> u64 {
        self.ledger.account(a).unwrap().nonce
    }

    pub fn balance(&self, a: &Address) -> Amount {
        self.ledger.account(a).unwrap().balance
    }

    pub fn signed(&self, key: &AccountKey, nonce: u64, call: Call) -> Bytes {
        Bytes::from(key.sign(CHAIN, nonce, FEE, call).encode())
    }

    /// Executes one batch `step_ms` after the previous one.
    pub fn batch(&mut self, transactions: Vec<Bytes>, step_ms: u64) -> BatchOutcome {
        self.time_ms += step_ms;
        let index = self.ledger.next_index();
        let batch = Batch {
            index,
            timestamp: TimestampMs(self.time_ms),
            seed: *blake3::hash(&index.to_le_bytes()).as_bytes(),
            transactions,
        };
        let out = self.ledger.execute(&batch).unwrap();
        self.check();
        out
    }

    /// One transaction in its own batch; its events or its rejection.
    pub fn call(&mut self, key: &AccountKey, call: Call) -> Result<Vec<Event>, Rejection> {
        let tx = self.signed(key, self.nonce(&key.address()), call);
        let out = self.batch(vec![tx], 1_000);
        out.receipts[0].outcome.clone()
    }

    pub fn ok(&mut self, key: &AccountKey, call: Call) -> Vec<Event> {
        let name = call.name();
        self.call(key, call)
            .unwrap_or_else(|r| panic!("{name} rejected: {} ({})", r.message, r.code))
    }

    /// The invariants over every record of the committed state.
    pub fn check(&self) {
        let entries = self.ledger.entries().unwrap();
        invariants::check(entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
            .unwrap_or_else(|e| panic!("invariant broken at height {}: {e}", self.ledger.height()));
    }
}
