//! The key schema of the state: one namespace per record type. See `docs/design/ledger.md`.

use crate::types::{Address, DatasetId, JobId, ProposalId, UnitId};

pub const PARAMS: &[u8] = b"params";
/// The chain id, written once at genesis.
pub const CHAIN_ID: &[u8] = b"chain_id";
pub const SUPPLY: &[u8] = b"supply";
pub const COUNTERS: &[u8] = b"counters";
pub const VALIDATORS: &[u8] = b"validators";
pub const WORKERS: &[u8] = b"workers";
pub const ACTIVE_JOBS: &[u8] = b"jobs/active";
/// `PoolVersion`: bumped whenever a trainer may have become drawable.
pub const TRAINER_POOL: &[u8] = b"jobs/trainer-pool";
pub const OPEN_PROPOSALS: &[u8] = b"gov/open";

fn with(prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + suffix.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(suffix);
    k
}

pub fn account(a: &Address) -> Vec<u8> {
    with(b"acct/", &a.0)
}

pub fn worker(a: &Address) -> Vec<u8> {
    with(b"worker/", &a.0)
}

pub fn reputation(a: &Address) -> Vec<u8> {
    with(b"rep/", &a.0)
}

pub fn dataset(id: DatasetId) -> Vec<u8> {
    with(b"dataset/", &id.0.to_be_bytes())
}

/// Which dataset holds a training-shards root: a root is attached once, by one provider.
pub fn dataset_root(root: &crate::types::Hash32) -> Vec<u8> {
    with(b"dataset-root/", &root.0)
}

/// A provider's deposit for its uploads to one node (by the BLAKE3 of the node's peer id).
pub fn upload_deposit(provider: &Address, node: &str) -> Vec<u8> {
    let mut k = with(b"upload-deposit/", &provider.0);
    k.extend_from_slice(blake3::hash(node.as_bytes()).as_bytes());
    k
}

pub fn job(id: JobId) -> Vec<u8> {
    with(b"job/", &id.0.to_be_bytes())
}

pub fn unit(id: UnitId) -> Vec<u8> {
    let mut k = with(b"unit/", &id.job.0.to_be_bytes());
    k.extend_from_slice(&id.index.to_be_bytes());
    k
}

pub fn proposal(id: ProposalId) -> Vec<u8> {
    with(b"gov/proposal/", &id.0.to_be_bytes())
}

/// Marks a piece of slashing evidence as used, so it cannot slash twice.
pub fn evidence(id: &[u8; 32]) -> Vec<u8> {
    with(b"evidence/", id)
}
