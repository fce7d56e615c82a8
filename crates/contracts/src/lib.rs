//! trainmesh's native contracts: deterministic state machines the ledger executes for each
//! transaction, over a key-value [`State`](state::State), with an explicit [`Context`] (height,
//! time, seed) and typed errors. No clock, no OS randomness, no map order reaches an output.
//!
//! Layout:
//! - [`types`]: `Address`, `Amount` (checked arithmetic), ids, `Context`
//! - [`state`]: the `State` trait, its in-memory twin and transaction overlays; [`keys`]: the schema
//! - [`accounts`]: balances, nonces, stake, the supply ledger
//! - [`params`]: economics and protocol parameters, and their governed updates
//! - [`staking`]: bond, unbond, withdraw, slash (rejected work, double signing)
//! - [`workers`]: WorkerRegistry; [`datasets`]: DatasetRegistry
//! - [`jobs`]: JobManager: units, assignment, results, attestations, certificates, settlement
//! - [`disputes`]: contested verdicts: bisection over a checkpoint chain, refereed by validators
//! - [`plants`]: planted faults, sealed by trainers, that measure evaluators' diligence
//! - [`reputation`]: per-worker scores that decay; [`governance`]: proposals and votes
//! - [`merkle`]: the Merkle tree of checkpoint chains and shard lists (roots, proofs)
//! - [`sampling`]: stake × reputation weighted draws from a commit's seed
//! - [`calls`]: the `Call` enum and its dispatcher; [`events`]: what execution reports
//! - [`genesis`]: the initial state; [`invariants`]: the conservation laws

pub mod accounts;
pub mod calls;
pub mod counters;
pub mod datasets;
pub mod disputes;
pub mod error;
pub mod events;
pub mod genesis;
pub mod governance;
pub mod invariants;
pub mod jobs;
pub mod keys;
pub mod merkle;
pub mod params;
pub mod plants;
pub mod reputation;
pub mod sampling;
pub mod staking;
pub mod state;
pub mod types;
pub mod workers;

pub use calls::{execute, on_batch_end, Call};
pub use error::{ContractError, ContractResult};
pub use events::{Event, PaymentReason, SlashReason};
pub use genesis::{BeaconSetup, Genesis, GenesisAccount, GenesisValidator};
pub use params::{ParamUpdate, Params};
pub use state::{MemState, Overlay, State, StateExt};
pub use types::{
    Address, Amount, Context, DatasetId, Hash32, JobId, ProposalId, TimestampMs, UnitId,
};
