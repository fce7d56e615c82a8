//! trainmesh's consensus core: a Narwhal certified DAG ordered by the Bullshark commit rule.
//!
//! The crate is sans-IO: no sockets, no threads, no clock and no OS randomness. A driver (the
//! node's coordinator actor, the simulator, the benchmark) decodes and validates messages, feeds
//! them to [`Core`] with the current time, and carries out the [`Action`]s it returns.
//!
//! Layout:
//! - [`types`]: `Round`, `Epoch`, `AuthorityIndex`, `Digest`, `TimestampMs`
//! - [`committee`]: the stake-weighted committee and quorum arithmetic
//! - [`crypto`]: ed25519 keys and domain-separated signatures (fastcrypto)
//! - [`encoding`]: the canonical, versioned, size-limited binary encoding
//! - [`messages`]: headers, votes, certificates, sync messages, committed sub-DAGs
//! - [`validation`]: stateless checks that turn messages into `Verified` values
//! - [`leader_schedule`]: the stake-weighted leader of each even round
//! - [`config`]: timing and every bound of the core
//! - [`core`]: the state machine's façade: routes messages between its rooms, votes, collects
//!   garbage; `core/proposer.rs` (when and what to propose), `core/recovery.rs` (restart from the
//!   store), `core/serving.rs` (answering peers' sync requests, the committed sequence)
//! - `dag_state`: the accepted DAG, parent references checked against what they name
//! - `synchronizer`: what waits for which parent, fetches, catching up by pages, per-author quotas
//! - `linearizer`: Bullshark's commit rule, each leader's history as a sub-DAG, commit timestamps
//! - [`store`]: the storage trait, its writer for another thread (pipelined group commit) and
//!   its in-memory twin; [`redb_store`]: the redb one
//! - [`sim`]: a seeded, single-threaded simulator of many nodes with faults
//! - [`test_dag`]: a text notation for DAG scenarios

pub mod committee;
pub mod config;
pub mod core;
pub mod crypto;
mod dag_state;
pub mod encoding;
pub mod error;
pub mod leader_schedule;
mod linearizer;
pub mod messages;
pub mod redb_store;
pub mod sim;
pub mod store;
mod synchronizer;
pub mod test_dag;
pub mod types;
pub mod validation;

pub use crate::committee::{beacon_threshold, chain_digest, Authority, Committee, StakeAggregator};
pub use crate::config::{ConsensusParams, CoreConfig};
pub use crate::core::{Action, Core, CoreStatus};
pub use crate::crypto::{KeyPair, PublicKey, Signature};
pub use crate::error::{DagError, DagResult, DecodeError};
pub use crate::messages::{
    Certificate, CertificateRef, CertificateSummary, CommittedSubDag, ConsensusMessage,
    EquivocationEvidence, Header, SignedHeader, SyncRequest, SyncResponse, Vote,
};
pub use crate::redb_store::{RedbBatchWriter, RedbReader, RedbStore};
pub use crate::store::{BatchWriter, ConsensusStore, MemStore, StoreBatch};
pub use crate::types::{AuthorityIndex, Digest, Epoch, Round, Stake, TimestampMs, Transaction};
pub use crate::validation::{Validator, Verified, VerifiedMessage};
