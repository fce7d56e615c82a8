//! The trainmesh ledger: signed transactions in a canonical encoding, executed batch by batch
//! (one committed sub-DAG each) in one redb write transaction, with a Jellyfish Merkle state root
//! that lets a light client check one account.
//!
//! Layout:
//! - [`transaction`]: `Transaction`, `SignedTransaction`, the wire encoding and stateless checks
//! - [`verify`]: batch signature verification on every core
//! - [`admission`]: what a validator's mempool takes (duplicates, replays, quotas, expiry)
//! - [`ledger`]: `Ledger` (genesis, `execute(batch)`, queries, proofs) over redb
//! - `tree`: the Merkle tree's records in redb (the latest tree, one record per path)
//! - [`beacon`]: the threshold-BLS randomness beacon that seeds every draw, and the gate that
//!   holds a committed batch until its seed is known
//! - [`account_key`]: an account's signing key
//! - [`error`]: `LedgerError`, one variant per rule, with stable codes
//!
//! The state machines themselves (accounts, staking, jobs, ...) live in `trainmesh-contracts`.

pub mod account_key;
pub mod admission;
pub mod beacon;
pub mod error;
pub mod ledger;
pub mod transaction;
mod tree;
pub mod verify;

pub use account_key::AccountKey;
pub use error::{LedgerError, LedgerResult};
pub use ledger::{
    Batch, BatchOutcome, BatchTimings, Ledger, PreparedBatch, Receipt, Rejection, StateProof,
};
pub use trainmesh_contracts as contracts;
pub use transaction::{SignedTransaction, Transaction, TRANSACTION_BYTES_MAX};
