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

/// A provider's deposit for its uploads to one node: the node keeps what it allows (the
/// gateway's quota), and the provider takes it back once a dataset it attached, served by that
/// node, was used. Uploads nobody uses cost their uploader the deposit, held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadDeposit {
    pub provider: Address,
    pub node: String,
    pub amount: Amount,
}

/// What `provider` holds as deposit for its uploads to `node`.
pub fn upload_deposit(
    state: &(impl State + ?Sized),
    provider: &Address,
    node: &str,
) -> ContractResult<Amount> {
    Ok(state
        .read::<UploadDeposit>(&keys::upload_deposit(provider, node))?
        .map_or(Amount::ZERO, |d| d.amount))
}

/// Moves `amount` of the sender's balance into its deposit for uploads to `node`.
pub fn deposit_for_uploads(
    state: &mut (impl State + ?Sized),
    sender: Address,
    node: String,
    amount: Amount,
    events: &mut Events,
) -> ContractResult<()> {
    if amount.is_zero() {
        return Err(invalid("a deposit of 0"));
    }
    if node.is_empty() || node.len() > PEER_ID_BYTES_MAX {
        return Err(invalid("the node's peer id must be 1 to 128 bytes"));
    }
    crate::accounts::debit(state, &sender, amount)?;
    let held = upload_deposit(state, &sender, &node)?.checked_add(amount)?;
    state.write(
        keys::upload_deposit(&sender, &node),
        &UploadDeposit {
            provider: sender,
            node: node.clone(),
            amount: held,
        },
    );
    events.push(Event::UploadDeposit {
        provider: sender,
        node,
        held,
    });
    Ok(())
}

/// Returns the sender's deposit at the node serving `dataset`, once that dataset (the sender's)
/// was used by a certified unit.
pub fn reclaim_upload_deposit(
    state: &mut (impl State + ?Sized),
    sender: Address,
    dataset: DatasetId,
    events: &mut Events,
) -> ContractResult<Amount> {
    let d = load(state, dataset)?;
    if d.provider != sender {
        return Err(invalid("not the sender's dataset"));
    }
    if d.uses == 0 {
        return Err(invalid(
            "the dataset was not used yet: the deposit comes back once it is",
        ));
    }
    let amount = upload_deposit(state, &sender, &d.spec.peer_id)?;
    if amount.is_zero() {
        return Err(invalid("no deposit at this dataset's node"));
    }
    state.delete(&keys::upload_deposit(&sender, &d.spec.peer_id));
    crate::accounts::credit(state, &sender, amount)?;
    events.push(Event::UploadDeposit {
        provider: sender,
        node: d.spec.peer_id,
        held: Amount::ZERO,
    });
    Ok(amount)
}
