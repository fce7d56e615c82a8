//! WorkerRegistry: trainers and evaluators, their stake, declared capability and endpoint.

use serde::{Deserialize, Serialize};

use crate::accounts;
use crate::error::{ContractError, ContractResult};
use crate::events::{Event, Events};
use crate::keys;
use crate::params::Params;
use crate::state::{State, StateExt};
use crate::types::{Address, Amount, Context, TimestampMs};

/// Most workers the registry holds.
pub const WORKERS_MAX: usize = 10_000;
const TEXT_BYTES_MAX: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Trainer,
    Evaluator,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Trainer => "trainer",
            Role::Evaluator => "evaluator",
        }
    }
}

/// What a worker registers with: what its node measured (the device's timed matmul, or the CPU
/// GEMM's; the device's buffer limit or the host's memory) and the conformance suite its device
/// reproduced. The ledger records it for operators and researchers; nothing pays or trusts on
/// it — a unit is accepted only when evaluators reproduce its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// Adapter name, e.g. "NVIDIA H100" or "cpu".
    pub adapter: String,
    /// Backend, e.g. "vulkan", "metal", "cpu".
    pub backend: String,
    pub memory_mb: u64,
    /// Measured matmul throughput.
    pub gflops: u32,
    /// The digest (64 lowercase hex digits) of the conformance suite the device reproduced,
    /// the same on every conforming device; `None` where units train on the CPU executor.
    #[serde(default)]
    pub conformance: Option<String>,
}

/// Checks the form of a conformance digest: 64 lowercase hex digits.
fn check_conformance(digest: &Option<String>) -> ContractResult<()> {
    match digest {
        Some(d) if d.len() != 64 || !d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Err(ContractError::Invalid {
                what: "conformance digest",
                reason: "must be 64 lowercase hex digits".into(),
            })
        }
        _ => Ok(()),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worker {
    pub address: Address,
    pub role: Role,
    pub capability: Capability,
    /// The libp2p peer id it serves checkpoints from.
    pub peer_id: String,
    pub registered_at: TimestampMs,
    pub last_heartbeat: TimestampMs,
    /// Units assigned to it (as trainer) or awaiting its attestation (as evaluator).
    pub open_units: u32,
}

impl Worker {
    pub fn is_alive(&self, now: TimestampMs, params: &Params) -> bool {
        now.0.saturating_sub(self.last_heartbeat.0) <= params.heartbeat_timeout_ms
    }
}

pub fn load(state: &(impl State + ?Sized), a: &Address) -> ContractResult<Option<Worker>> {
    state.read(&keys::worker(a))
}

pub fn store(state: &mut (impl State + ?Sized), w: &Worker) {
    state.write(keys::worker(&w.address), w);
}

pub fn index(state: &(impl State + ?Sized)) -> ContractResult<Vec<Address>> {
    Ok(state.read(keys::WORKERS)?.unwrap_or_default())
}

fn check_text(what: &'static str, s: &str) -> ContractResult<()> {
    if s.len() > TEXT_BYTES_MAX {
        return Err(ContractError::TooMany {
            what,
            count: s.len(),
            max: TEXT_BYTES_MAX,
        });
    }
    Ok(())
}

pub fn minimum_stake(params: &Params, role: Role) -> Amount {
    match role {
        Role::Trainer => params.min_trainer_stake,
        Role::Evaluator => params.min_evaluator_stake,
    }
}

/// What a worker registers with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub role: Role,
    /// Stake to bond now, on top of what is bonded already.
    pub bond: Amount,
    pub capability: Capability,
    pub peer_id: String,
    /// The peer id's ed25519 key's signature of [`peer_binding_message`] of the sender.
    pub peer_signature: Vec<u8>,
}

/// What a worker's network key signs to bind its peer id to its account: a domain tag and the
/// account's address.
pub fn peer_binding_message(account: &Address) -> Vec<u8> {
    let mut m = b"trainmesh/peer-binding/v1/".to_vec();
    m.extend_from_slice(&account.0);
    m
}

/// The ed25519 public key inside a libp2p peer id (base58 of the identity multihash of the
/// protobuf-encoded key: `00 24 08 01 12 20` then the 32 key bytes).
pub fn peer_id_ed25519_key(peer_id: &str) -> Option<[u8; 32]> {
    let bytes = bs58::decode(peer_id).into_vec().ok()?;
    let key = bytes.strip_prefix(&[0x00, 0x24, 0x08, 0x01, 0x12, 0x20])?;
    key.try_into().ok()
}

/// The libp2p peer id of an ed25519 public key (the inverse of [`peer_id_ed25519_key`]).
pub fn ed25519_peer_id(public_key: &[u8; 32]) -> String {
    let mut bytes = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    bytes.extend_from_slice(public_key);
    bs58::encode(bytes).into_string()
}

/// Checks that `peer_id` names an ed25519 key that signed `sender`'s binding message: a worker
/// cannot register (and so be served held-out data, or be asked for checkpoints) under another
/// node's peer id, and an account cannot claim a network identity it does not hold.
fn check_peer_binding(peer_id: &str, signature: &[u8], sender: &Address) -> ContractResult<()> {
    check_peer_signature(
        peer_id,
        signature,
        &peer_binding_message(sender),
        "the peer id's key did not sign this account's binding",
    )
}

/// Checks that the ed25519 key inside `peer_id` signed `message`; `refused` says what it means
/// when it did not.
pub(crate) fn check_peer_signature(
    peer_id: &str,
    signature: &[u8],
    message: &[u8],
    refused: &str,
) -> ContractResult<()> {
    let invalid = |reason: &str| ContractError::Invalid {
        what: "peer id",
        reason: reason.into(),
    };
    let key =
        peer_id_ed25519_key(peer_id).ok_or_else(|| invalid("not the peer id of an ed25519 key"))?;
    let signature: [u8; 64] = signature
        .try_into()
        .map_err(|_| invalid("the peer's signature is not 64 bytes"))?;
    let key = ed25519_zebra::VerificationKey::try_from(key)
        .map_err(|_| invalid("the peer id's key is not a valid ed25519 point"))?;
    key.verify(&ed25519_zebra::Signature::from(signature), message)
        .map_err(|_| invalid(refused))
}

/// Registers `sender`, bonding `bond` more stake first; its total stake must reach the role's
/// minimum.
pub fn register(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    sender: Address,
    registration: Registration,
    events: &mut Events,
) -> ContractResult<()> {
    let Registration {
        role,
        bond,
        capability,
        peer_id,
        peer_signature,
    } = registration;
    check_text("adapter bytes", &capability.adapter)?;
    check_text("backend bytes", &capability.backend)?;
    check_conformance(&capability.conformance)?;
    if capability.memory_mb > crate::jobs::MEMORY_MB_MAX {
        return Err(ContractError::Invalid {
            what: "capability",
            reason: format!(
                "{} MB declared; at most {} MB",
                capability.memory_mb,
                crate::jobs::MEMORY_MB_MAX
            ),
        });
    }
    check_text("peer id bytes", &peer_id)?;
    check_peer_binding(&peer_id, &peer_signature, &sender)?;
    if load(state, &sender)?.is_some() {
        return Err(ContractError::AlreadyRegistered(sender));
    }
    let params = crate::params::load(state)?;
    if !bond.is_zero() {
        crate::staking::bond(state, sender, bond, events)?;
    }
    let account = accounts::load(state, &sender)?;
    let minimum = minimum_stake(&params, role);
    if account.stake < minimum {
        return Err(ContractError::StakeBelowMinimum {
            role: role.name(),
            stake: account.stake,
            minimum,
        });
    }
    let mut all = index(state)?;
    if all.len() >= WORKERS_MAX {
        return Err(ContractError::TooMany {
            what: "workers",
            count: all.len() + 1,
            max: WORKERS_MAX,
        });
    }
    all.push(sender);
    state.write(keys::WORKERS.to_vec(), &all);
    store(
        state,
        &Worker {
            address: sender,
            role,
            capability,
            peer_id,
            registered_at: ctx.time,
            last_heartbeat: ctx.time,
            open_units: 0,
        },
    );
    events.push(Event::WorkerRegistered { who: sender, role });
    crate::jobs::trainer_pool_changed(state)?;
    Ok(())
}

pub fn heartbeat(
    state: &mut (impl State + ?Sized),
    ctx: &Context,
    sender: Address,
) -> ContractResult<()> {
    let mut w = load(state, &sender)?.ok_or(ContractError::NotRegistered(sender))?;
    let revived = !w.is_alive(ctx.time, &crate::params::load(state)?);
    w.last_heartbeat = ctx.time;
    store(state, &w);
    if revived {
        crate::jobs::trainer_pool_changed(state)?;
    }
    Ok(())
}

/// Leaves the registry; only without work in progress. Stake stays bonded until unbonded.
pub fn deregister(
    state: &mut (impl State + ?Sized),
    sender: Address,
    events: &mut Events,
) -> ContractResult<()> {
    let w = load(state, &sender)?.ok_or(ContractError::NotRegistered(sender))?;
    if w.open_units > 0 {
        return Err(ContractError::WorkInProgress(sender));
    }
    let mut all = index(state)?;
    all.retain(|a| *a != sender);
    state.write(keys::WORKERS.to_vec(), &all);
    state.delete(&keys::worker(&sender));
    events.push(Event::WorkerDeregistered { who: sender });
    Ok(())
}

pub fn adjust_open_units(
    state: &mut (impl State + ?Sized),
    a: &Address,
    delta: i32,
) -> ContractResult<()> {
    if let Some(mut w) = load(state, a)? {
        w.open_units = w.open_units.saturating_add_signed(delta);
        store(state, &w);
    }
    Ok(())
}
