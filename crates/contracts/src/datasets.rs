//! DatasetRegistry: a data provider attaches a dataset by the Merkle root of its shards, with a
//! held-out split that trainers never receive, and a price per certified use.

use serde::{Deserialize, Serialize};

use crate::error::{ContractError, ContractResult};
use crate::events::{Event, Events};
use crate::keys;
use crate::state::{State, StateExt};
use crate::types::{Address, Amount, Context, DatasetId, Hash32, TimestampMs};

pub const SHARDS_MAX: usize = 4_096;
const NAME_BYTES_MAX: usize = 128;
const LICENCE_BYTES_MAX: usize = 256;

pub const PEER_ID_BYTES_MAX: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetSpec {
    pub name: String,
    /// Merkle root over the BLAKE3 hashes of the training shards.
    pub shards_root: Hash32,
    pub shard_sizes: Vec<u64>,
    /// Commitment to the held-out split (evaluators only).
    pub heldout_root: Hash32,
    pub heldout_samples: u64,
    pub licence: String,
    pub price_per_use: Amount,
    /// The libp2p peer id that serves the shards (and the held-out split, to evaluators only).
    pub peer_id: String,
    /// The serving peer's ed25519 signature of [`binding_message`] for this provider and these
    /// roots: no account can name another's node, or its shards, as its own.
    pub peer_signature: Vec<u8>,
}

/// What a dataset's serving peer signs to serve it for `provider`: a domain tag, the provider's
/// address, and both roots.
pub fn binding_message(provider: &Address, shards_root: &Hash32, heldout_root: &Hash32) -> Vec<u8> {
    let mut m = b"trainmesh/dataset-binding/v1/".to_vec();
    m.extend_from_slice(&provider.0);
    m.extend_from_slice(&shards_root.0);
    m.extend_from_slice(&heldout_root.0);
    m
}

/// What a provider's account key signs when it asks a node to serve its uploaded shards (the
/// gateway's manifest upload): a domain tag and both roots. The node then binds them to that
/// provider, and to no other.
pub fn manifest_message(shards_root: &Hash32, heldout_root: &Hash32) -> Vec<u8> {
    let mut m = b"trainmesh/manifest/v1/".to_vec();
    m.extend_from_slice(&shards_root.0);
    m.extend_from_slice(&heldout_root.0);
    m
}

/// Checks that the spec's peer signed its binding to `provider`.
fn check_binding(spec: &DatasetSpec, provider: &Address) -> ContractResult<()> {
    crate::workers::check_peer_signature(
        &spec.peer_id,
        &spec.peer_signature,
        &binding_message(provider, &spec.shards_root, &spec.heldout_root),
        "the serving peer did not bind these shards to this provider",
    )
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    pub id: DatasetId,
    pub provider: Address,
    pub spec: DatasetSpec,
    pub attached_at: TimestampMs,
    pub uses: u64,
}

impl Dataset {
    pub fn total_bytes(&self) -> u64 {
        self.spec.shard_sizes.iter().sum()
    }
}

fn invalid(reason: &str) -> ContractError {
    ContractError::Invalid {
        what: "dataset",
        reason: reason.into(),
    }
}

impl DatasetSpec {
    pub fn validate(&self) -> ContractResult<()> {
        if self.name.is_empty() || self.name.len() > NAME_BYTES_MAX {
            return Err(invalid("name must be 1 to 128 bytes"));
        }
        if self.licence.len() > LICENCE_BYTES_MAX {
            return Err(invalid("licence longer than 256 bytes"));
        }
        if self.peer_id.is_empty() || self.peer_id.len() > PEER_ID_BYTES_MAX {
            return Err(invalid("peer id must be 1 to 128 bytes"));
        }
        if self.shard_sizes.is_empty() {
            return Err(invalid("no shards"));
        }
        if self.shard_sizes.len() > SHARDS_MAX {
            return Err(ContractError::TooMany {
                what: "shards",
                count: self.shard_sizes.len(),
                max: SHARDS_MAX,
            });
        }
        if self.shard_sizes.contains(&0) {
            return Err(invalid("empty shard"));
        }
        if self.heldout_samples == 0 {
            return Err(invalid("no held-out samples"));
        }
        if self.shards_root == Hash32::default() || self.heldout_root == Hash32::default() {
            return Err(invalid("missing Merkle root"));
        }
        Ok(())
    }
}

pub fn load(state: &(impl State + ?Sized), id: DatasetId) -> ContractResult<Dataset> {
    state
        .read(&keys::dataset(id))?
        .ok_or(ContractError::UnknownDataset(id))
}

pub fn store(state: &mut (impl State + ?Sized), d: &Dataset) {
    state.write(keys::dataset(d.id), d);
}

pub fn attach(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    sender: Address,
    spec: DatasetSpec,
    events: &mut Events,
) -> ContractResult<DatasetId> {
    spec.validate()?;
    check_binding(&spec, &sender)?;
    if let Some(existing) = state.read::<DatasetId>(&keys::dataset_root(&spec.shards_root))? {
        return Err(invalid(&format!(
            "these training shards are attached already, as dataset {}",
            existing.0
        )));
    }
    let mut counters = crate::counters::load(state)?;
    counters.datasets += 1;
    let id = DatasetId(counters.datasets);
    crate::counters::store(state, &counters);
    state.write(keys::dataset_root(&spec.shards_root), &id);
    store(
        state,
        &Dataset {
            id,
            provider: sender,
            spec,
            attached_at: ctx.time,
            uses: 0,
        },
    );
    events.push(Event::DatasetAttached {
        dataset: id,
        provider: sender,
    });
    Ok(id)
}
