//! What trainers and evaluators share: reading jobs and units from the ledger, turning a job's
//! spec into the GPU engine's model and hyper-parameters, and fetching datasets and checkpoints
//! from the peers that serve them (every byte checked against the ledger's hashes).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use trainmesh_contracts::datasets::Dataset;
use trainmesh_contracts::jobs::{self, Job, Unit};
use trainmesh_contracts::workers::{Role, Worker};
use trainmesh_contracts::{keys, Address, Call, DatasetId, JobId, UnitId};
use trainmesh_gpu::checkpoint::TrainState;
use trainmesh_gpu::dataset::DatasetManifest;
use trainmesh_gpu::hash::{merkle_root, Hash32 as GpuHash};
use trainmesh_gpu::optim::{HyperParams, Optimizer};
use trainmesh_gpu::spec::{Model, ModelSpec};
use trainmesh_gpu::train::SplitData;

use crate::blobs::{Audience, BlobStore, Fetcher};
use crate::ledger::SharedLedger;
use crate::metrics::NodeMetrics;
use crate::wallet::Wallet;
use crate::wire::BlobKind;

/// How long a worker waits for one blob from its peers.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(20);
/// A transaction whose effect has not shown on the ledger after this long is sent again.
pub const RESUBMIT_AFTER: Duration = Duration::from_secs(6);

/// Everything a worker actor needs from its node.
#[derive(Clone, Debug)]
pub struct WorkContext {
    pub ledger: SharedLedger,
    pub fetcher: Fetcher,
    pub blobs: BlobStore,
    pub wallet: Wallet,
    pub metrics: NodeMetrics,
    pub peer_id: PeerId,
    /// The network key's signature binding `peer_id` to this node's account
    /// (`trainmesh_contracts::workers::peer_binding_message`), sent with the registration.
    pub peer_signature: Vec<u8>,
    pub peer_signer: PeerSigner,
    pub datasets: DatasetCache,
}

/// What this node's network key signs for others: that it serves a dataset for a provider
/// (`trainmesh_contracts::datasets::binding_message`). The key itself never leaves.
#[derive(Clone)]
pub struct PeerSigner {
    key: ed25519_zebra::SigningKey,
}

impl std::fmt::Debug for PeerSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSigner").finish_non_exhaustive()
    }
}

impl PeerSigner {
    pub fn new(network_secret: &[u8; 32]) -> PeerSigner {
        PeerSigner {
            key: ed25519_zebra::SigningKey::from(*network_secret),
        }
    }

    /// This node's signature that it serves the dataset of these roots for `provider`.
    pub fn bind_dataset(
        &self,
        provider: &trainmesh_contracts::Address,
        shards_root: &trainmesh_contracts::Hash32,
        heldout_root: &trainmesh_contracts::Hash32,
    ) -> Vec<u8> {
        let message =
            trainmesh_contracts::datasets::binding_message(provider, shards_root, heldout_root);
        let signature: [u8; 64] = self.key.sign(&message).into();
        signature.to_vec()
    }
}

impl WorkContext {
    /// Signs and submits `call` in the background. A failure to hand it over is logged; callers
    /// send again when its effect does not show on the ledger.
    pub fn send_call(&self, call: Call, resync: bool) {
        let work = self.clone();
        actix::spawn(async move {
            let name = call.name();
            if let Err(e) = work.wallet.send(&work.ledger, call, resync).await {
                tracing::warn!(error = %e, call = name, "could not send a transaction");
            }
        });
    }
}

/// What a worker sent per (unit, attempt), kept to send again while its effect has not shown.
#[derive(Debug)]
pub struct Outbox<T> {
    sent: BTreeMap<(UnitId, u32), (T, Instant)>,
}

impl<T: Clone> Default for Outbox<T> {
    fn default() -> Self {
        Outbox {
            sent: BTreeMap::new(),
        }
    }
}

impl<T: Clone> Outbox<T> {
    /// Entries kept at most (the oldest key goes first).
    pub const MAX: usize = 1_024;

    pub fn contains(&self, key: &(UnitId, u32)) -> bool {
        self.sent.contains_key(key)
    }

    pub fn get(&self, key: &(UnitId, u32)) -> Option<&T> {
        self.sent.get(key).map(|(item, _)| item)
    }

    /// The entry to send again, when it was sent at least [`RESUBMIT_AFTER`] ago (its clock
    /// restarts).
    pub fn due(&mut self, key: &(UnitId, u32)) -> Option<T> {
        let (item, at) = self.sent.get_mut(key)?;
        if at.elapsed() < RESUBMIT_AFTER {
            return None;
        }
        *at = Instant::now();
        Some(item.clone())
    }

    pub fn insert(&mut self, key: (UnitId, u32), item: T) {
        self.sent.insert(key, (item, Instant::now()));
        while self.sent.len() > Self::MAX {
            self.sent.pop_first();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    #[error("ledger: {0}")]
    Ledger(String),
    #[error("{0}")]
    Fetch(#[from] crate::blobs::FetchError),
    #[error("gpu: {0}")]
    Gpu(#[from] trainmesh_gpu::GpuError),
    #[error("{0}")]
    Invalid(String),
}

fn ledger_err(e: impl std::fmt::Display) -> WorkError {
    WorkError::Ledger(e.to_string())
}

/// The unit each active job is working on, with its job.
pub fn current_units(ledger: &SharedLedger) -> Result<Vec<(Job, Unit)>, WorkError> {
    let l = ledger.read().expect("ledger lock");
    let active: Vec<JobId> = l
        .read(keys::ACTIVE_JOBS)
        .map_err(ledger_err)?
        .unwrap_or_default();
    let mut out = Vec::new();
    for id in active {
        let Some(job) = l.read::<Job>(&keys::job(id)).map_err(ledger_err)? else {
            continue;
        };
        let uid = trainmesh_contracts::UnitId {
            job: id,
            index: job.current_unit,
        };
        if let Some(unit) = l.read::<Unit>(&keys::unit(uid)).map_err(ledger_err)? {
            out.push((job, unit));
        }
    }
    Ok(out)
}

/// The ledger's parameters as they stand.
pub fn ledger_params(
    ledger: &SharedLedger,
) -> Result<trainmesh_contracts::params::Params, WorkError> {
    let l = ledger.read().expect("ledger lock");
    l.read(keys::PARAMS)
        .map_err(ledger_err)?
        .ok_or_else(|| WorkError::Invalid("the ledger has no parameters".into()))
}

/// The chain segments `evaluator` must re-execute for `unit` at `tier` (the ledger's draw, which
/// the contract recomputes for its attestation; empty at tier 0 or without a result).
pub fn audit_draw(unit: &Unit, evaluator: &Address, tier: u8) -> Vec<u32> {
    unit.drawn_segments(evaluator, tier)
}

pub fn worker(ledger: &SharedLedger, a: &Address) -> Option<Worker> {
    ledger
        .read()
        .expect("ledger lock")
        .read::<Worker>(&keys::worker(a))
        .ok()
        .flatten()
}

/// Peer ids of the registered workers of `role`, `first` (when given) in front.
pub fn worker_peers(ledger: &SharedLedger, role: Role, first: Option<&Address>) -> Vec<PeerId> {
    let l = ledger.read().expect("ledger lock");
    let index: Vec<Address> = l.read(keys::WORKERS).ok().flatten().unwrap_or_default();
    let mut out = Vec::new();
    if let Some(w) = first.and_then(|a| l.read::<Worker>(&keys::worker(a)).ok().flatten()) {
        if let Ok(p) = PeerId::from_str(&w.peer_id) {
            out.push(p);
        }
    }
    for a in index {
        if let Ok(Some(w)) = l.read::<Worker>(&keys::worker(&a)) {
            if w.role == role {
                if let Ok(p) = PeerId::from_str(&w.peer_id) {
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        }
    }
    out
}

/// The job's model spec and the engine's hyper-parameters.
pub fn model_and_hyper(job: &Job) -> Result<(Model, HyperParams), WorkError> {
    let model = ModelSpec::from_json(job.spec.model.as_bytes())?;
    let h = &job.spec.hyper;
    let lr = h.learning_rate_ppm as f32 / 1e6;
    let optimizer = match h.optimizer {
        jobs::Optimizer::Sgd => Optimizer::Sgd { lr, momentum: 0.0 },
        jobs::Optimizer::Adam => Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        jobs::Optimizer::AdamW => {
            let s = jobs::AdamWSchedule::of(h);
            Optimizer::AdamW {
                lr,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.1,
                warmup_steps: s.warmup_steps,
                decay_steps: s.decay_steps,
                min_lr: lr / 10.0,
                clip_norm: 1.0,
            }
        }
    };
    let hyper = HyperParams {
        optimizer,
        batch: h.batch_size as usize,
        seed: h.seed,
    };
    hyper.validate()?;
    Ok((model, hyper))
}

/// The unit timeout the ledger holds workers to: a unit's training and its audit run within it.
pub fn unit_timeout_ms(ledger: &SharedLedger) -> u64 {
    ledger
        .read()
        .expect("ledger lock")
        .read::<trainmesh_contracts::Params>(trainmesh_contracts::keys::PARAMS)
        .ok()
        .flatten()
        .map_or(u64::MAX / 4, |p| p.unit_timeout_ms)
}

/// How many steps each segment of a unit of `steps` steps has: the contract fixes the number of
/// segments (`trainmesh_contracts::jobs::chain_segments`), not the trainer.
pub fn segment_steps(steps: u64) -> u64 {
    steps / u64::from(trainmesh_contracts::jobs::chain_segments(steps)).max(1)
}

/// The state a unit starts from: the job's seeded initial state for its first unit, else the
/// previous unit's certified checkpoint, fetched from the trainers and checked against its hash.
pub async fn start_state(
    work: &WorkContext,
    job: &Job,
    unit: &Unit,
    model: &Model,
    hyper: &HyperParams,
) -> Result<TrainState, WorkError> {
    if unit.start_checkpoint == trainmesh_contracts::Hash32::default() {
        return Ok(trainmesh_gpu::train::initial_state(model, hyper));
    }
    let previous = if unit.id.index > 0 {
        let uid = trainmesh_contracts::UnitId {
            job: job.id,
            index: unit.id.index - 1,
        };
        work.ledger
            .read()
            .expect("ledger lock")
            .read::<Unit>(&keys::unit(uid))
            .map_err(ledger_err)?
            .and_then(|u| u.trainer)
    } else {
        None
    };
    let peers = worker_peers(&work.ledger, Role::Trainer, previous.as_ref());
    let hash = unit.start_checkpoint.0;
    let bytes = work
        .fetcher
        .fetch(
            BlobKind::Checkpoint,
            hash,
            &peers,
            FETCH_TIMEOUT,
            Audience::Anyone,
        )
        .await?;
    Ok(TrainState::decode_verified(&bytes, &GpuHash(hash), model)?)
}

/// Training (and, for evaluators, held-out) splits of attached datasets, fetched once.
type SamplesBySplit = BTreeMap<(DatasetId, bool), Arc<SplitData>>;

#[derive(Clone, Debug, Default)]
pub struct DatasetCache {
    inner: Arc<Mutex<SamplesBySplit>>,
}

impl DatasetCache {
    /// The training split (`heldout = false`) or the held-out split of dataset `id`, fetched
    /// from its provider and checked against the roots attached on the ledger.
    pub async fn load(
        &self,
        work: &WorkContext,
        id: DatasetId,
        heldout: bool,
    ) -> Result<Arc<SplitData>, WorkError> {
        if let Some(s) = self.inner.lock().expect("cache lock").get(&(id, heldout)) {
            return Ok(s.clone());
        }
        let dataset: Dataset = work
            .ledger
            .read()
            .expect("ledger lock")
            .read(&keys::dataset(id))
            .map_err(ledger_err)?
            .ok_or_else(|| WorkError::Invalid(format!("dataset {id:?} is not attached")))?;
        let provider = PeerId::from_str(&dataset.spec.peer_id)
            .map_err(|e| WorkError::Invalid(format!("dataset provider peer id: {e}")))?;
        let peers = [provider];
        let root = dataset.spec.shards_root.0;
        let manifest = work
            .fetcher
            .fetch(
                BlobKind::Manifest,
                root,
                &peers,
                FETCH_TIMEOUT,
                Audience::Anyone,
            )
            .await?;
        let manifest: DatasetManifest = serde_json::from_slice(&manifest)
            .map_err(|e| WorkError::Invalid(format!("manifest: {e}")))?;
        if merkle_root(&manifest.heldout).0 != dataset.spec.heldout_root.0 {
            return Err(WorkError::Invalid(
                "manifest's held-out split is not the attached one".into(),
            ));
        }
        // What this node fetched it serves on only as its provider does: the held-out split to
        // registered evaluators, never to a trainer.
        let (shards, audience) = if heldout {
            (&manifest.heldout, Audience::Evaluators)
        } else {
            (&manifest.train, Audience::Anyone)
        };
        let mut parts = Vec::with_capacity(shards.len());
        for h in shards {
            let bytes = work
                .fetcher
                .fetch(BlobKind::Shard, h.0, &peers, FETCH_TIMEOUT, audience)
                .await?;
            let part = SplitData::decode_shard(&bytes, h)?;
            if matches!(part, SplitData::Tokens(_)) != manifest.is_text() {
                return Err(WorkError::Invalid(format!(
                    "shard {h} is not of the kind its manifest names"
                )));
            }
            parts.push(part);
        }
        let samples = Arc::new(SplitData::concat(parts)?);
        self.inner
            .lock()
            .expect("cache lock")
            .insert((id, heldout), samples.clone());
        Ok(samples)
    }
}

/// A metric as parts per million.
pub fn ppm(x: f64) -> u32 {
    (x.clamp(0.0, 4_000.0) * 1e6).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_divide_the_unit() {
        assert_eq!(segment_steps(176), 1);
        assert_eq!(segment_steps(2_048), 2);
        assert_eq!(segment_steps(1_031), 1_031);
        assert_eq!(segment_steps(10_000), 10);
        assert_eq!(ppm(0.95), 950_000);
    }
}
