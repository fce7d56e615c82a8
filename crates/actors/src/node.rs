//! One trainmesh node: its network, its ledger, and the actors of its roles, wired together.
//! [`start`] must run inside an actix system on a tokio runtime
//! (`actix::System::with_tokio_rt`).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use actix::prelude::*;
use libp2p::{Multiaddr, PeerId};
use trainmesh_contracts::Genesis;
use trainmesh_dag::{
    Authority, Committee, Core, CoreConfig, Epoch, KeyPair, PublicKey, RedbReader, RedbStore,
    Validator,
};
use trainmesh_gpu::train::SplitData;
use trainmesh_ledger::admission::AdmissionLimits;
use trainmesh_ledger::beacon::{BeaconKey, BeaconSecret};
use trainmesh_ledger::Ledger;

use crate::blobs::{BlobStore, Fetcher};
use crate::consensus::{now, PeerBook};
use crate::coordinator::{AdmissionGate, Coordinator, CoordinatorWiring};
use crate::evaluator::EvaluatorActor;
use crate::ledger::{LedgerActor, SharedLedger, Subscribe};
use crate::mesh_config::MeshConfig;
use crate::metrics::NodeMetrics;
use crate::network::{self, NetworkConfig};
use crate::provider::{DataProvider, DatasetOffer};
use crate::router::{Router, ValidatorInbox};
use crate::sync_server::SyncServer;
use crate::trainer::{Registration, TrainedOn, TrainerActor};
use crate::wallet::{Submitter, Wallet};
use crate::work::{DatasetCache, PeerSigner, WorkContext};
use trainmesh_gpu::device::GpuDevice;

/// What a node is and does.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub data_dir: PathBuf,
    pub genesis: Genesis,
    /// The account key: signs the node's transactions. Also its network key unless it is a
    /// validator (then the consensus key is, so that peers know it from the committee).
    pub account_secret: [u8; 32],
    pub consensus_secret: Option<[u8; 32]>,
    /// A validator's share of the randomness beacon, dealt with the genesis.
    pub beacon_secret: Option<[u8; 32]>,
    pub listen: Multiaddr,
    pub bootstrap: Vec<(PeerId, Multiaddr)>,
    pub trainer: Option<(Registration, bool)>,
    /// The device this node's trainer trains on and its evaluator replays on, when it passed
    /// conformance (every model kind; nodes without one use the CPU executor).
    /// Bit-identical either way.
    pub train_device: Option<Arc<GpuDevice>>,
    /// The evaluator's registration, and how it plays (anything but honest: demonstrations and
    /// tests of how the network catches it).
    pub evaluator: Option<(Registration, crate::dispute::EvaluatorMode)>,
    /// A validator that signs one second, conflicting header for a round it proposed and sends
    /// it to one peer (demonstrations and tests of how the network slashes a double signer).
    pub equivocate: bool,
    pub provider: Option<(Arc<SplitData>, DatasetOffer)>,
    /// What this node tunes in its consensus core; the rest comes from the genesis.
    pub local_consensus: LocalConsensusConfig,
    /// Connection limits, inbound queue, sync rate, commit retention, peer policy.
    pub mesh: MeshConfig,
}

/// What a validator may tune in its consensus core for itself: its batching delay and its queue
/// sizes. Everything that decides which headers are valid or what a commit holds is the same on
/// every validator and comes from the genesis ([`Genesis::consensus`]); the timers and sync
/// bounds not named here keep [`CoreConfig::default`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalConsensusConfig {
    pub max_header_delay_ms: u64,
    pub mempool_bytes_max: usize,
    pub pending_certificates_max: usize,
    pub pending_headers_max: usize,
    pub missing_certificates_max: usize,
}

impl Default for LocalConsensusConfig {
    fn default() -> Self {
        let d = CoreConfig::default();
        LocalConsensusConfig {
            max_header_delay_ms: d.max_header_delay_ms,
            mempool_bytes_max: d.mempool_bytes_max,
            pending_certificates_max: d.pending_certificates_max,
            pending_headers_max: d.pending_headers_max,
            missing_certificates_max: d.missing_certificates_max,
        }
    }
}

impl LocalConsensusConfig {
    /// The core's whole configuration: these local values, and the genesis' consensus part.
    pub fn core_config(&self, genesis: &Genesis) -> CoreConfig {
        CoreConfig {
            max_header_delay_ms: self.max_header_delay_ms,
            mempool_bytes_max: self.mempool_bytes_max,
            pending_certificates_max: self.pending_certificates_max,
            pending_headers_max: self.pending_headers_max,
            missing_certificates_max: self.missing_certificates_max,
            ..CoreConfig::default()
        }
        .with_consensus(&genesis.consensus)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("genesis: {0}")]
    Genesis(String),
    #[error("ledger: {0}")]
    Ledger(#[from] trainmesh_ledger::LedgerError),
    #[error("consensus: {0}")]
    Consensus(#[from] trainmesh_dag::DagError),
    #[error("network: {0}")]
    Network(#[from] network::NetworkError),
    #[error("data directory {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error("dataset: {0}")]
    Dataset(#[from] crate::work::WorkError),
    #[error("the consensus key is not in the genesis committee")]
    NotInCommittee,
}

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    pub name: String,
    /// Where the node keeps its data (ledger, DAG, uploads).
    pub data_dir: std::path::PathBuf,
    pub peer_id: PeerId,
    /// Signs, with the network key, that this node serves a dataset for a provider (the
    /// gateway's uploads).
    pub peer_signer: PeerSigner,
    pub ledger: SharedLedger,
    pub metrics: NodeMetrics,
    pub wallet: Wallet,
    pub committee: Committee,
    pub coordinator: Option<Addr<Coordinator<RedbStore>>>,
    /// A validator's DAG store, read-only (what it serves to peers).
    pub dag: Option<RedbReader>,
    pub ledger_actor: Addr<LedgerActor>,
    pub provider: Option<Addr<DataProvider>>,
    pub blobs: BlobStore,
    /// What each work unit this node trained ran on.
    pub trained_on: TrainedOn,
    /// Fetches blobs from the mesh (checkpoints for downloads, say), verified by hash.
    pub fetcher: Fetcher,
    arbiters: Vec<Arbiter>,
}

impl NodeHandle {
    /// Stops the node's actors (its network stops when they drop their senders).
    pub fn stop(self) {
        for a in self.arbiters {
            a.stop();
        }
    }
}

/// A genesis' consensus committee: validators in genesis order, stake in whole TRAIN, on the
/// genesis' chain.
pub fn committee_of(genesis: &Genesis) -> Result<Committee, NodeError> {
    let authorities = genesis
        .validators
        .iter()
        .map(|v| Authority {
            public_key: PublicKey(v.consensus_key.0),
            stake: ((v.stake.0 / trainmesh_contracts::types::UNITS_PER_TRAIN) as u64).max(1),
        })
        .collect();
    Ok(Committee::new(Epoch(0), authorities)?
        .with_chain(trainmesh_dag::chain_digest(&genesis.chain_id)))
}

/// The genesis' randomness beacon: every node needs it to execute commits.
pub fn beacon_key(genesis: &Genesis) -> Result<BeaconKey, NodeError> {
    let setup = genesis.beacon.as_ref().ok_or_else(|| {
        NodeError::Genesis(
            "the genesis has no randomness beacon (deal one with `trainmesh genesis new`)".into(),
        )
    })?;
    BeaconKey::new(setup, &genesis.chain_id, genesis.validators.len())
        .map_err(|e| NodeError::Genesis(e.to_string()))
}

/// The ed25519 public key of a secret.
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    KeyPair::from_secret_bytes(secret).public().0
}

pub fn start(spec: NodeSpec) -> Result<NodeHandle, NodeError> {
    std::fs::create_dir_all(&spec.data_dir).map_err(|e| NodeError::DataDir {
        path: spec.data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let committee = committee_of(&spec.genesis)?;
    let peers = PeerBook::new(&committee)?;
    let metrics = NodeMetrics::for_node(&spec.name);
    let beacon = beacon_key(&spec.genesis)?;

    let mut ledger = Ledger::open(spec.data_dir.join("ledger.redb"))?;
    if !ledger.is_initialized() {
        ledger.init(&spec.genesis)?;
    } else if ledger.chain_id() != spec.genesis.chain_id {
        return Err(NodeError::Genesis(format!(
            "data directory holds chain {:?}, genesis is {:?}",
            ledger.chain_id(),
            spec.genesis.chain_id
        )));
    }
    let replay_from = ledger.next_index();
    let ledger: SharedLedger = Arc::new(RwLock::new(ledger));

    let validator_index = match spec.consensus_secret {
        Some(s) => Some(
            committee
                .index_of(&PublicKey(public_key(&s)))
                .ok_or(NodeError::NotInCommittee)?,
        ),
        None => None,
    };
    let network_secret = spec.consensus_secret.unwrap_or(spec.account_secret);
    let (net, events) = network::spawn(NetworkConfig {
        secret_key: network_secret,
        listen: spec.listen.clone(),
        bootstrap: spec.bootstrap.clone(),
        topics: vec![],
        validate: Arc::new(|_| true),
        mesh: spec.mesh.clone(),
        metrics: metrics.clone(),
    })?;
    let network_key = network::keypair(&network_secret)?;
    let peer_id = network_key.public().to_peer_id();
    // The network key signs this node's account binding, which the worker registration carries.
    let peer_signature = network_key
        .sign(&trainmesh_contracts::workers::peer_binding_message(
            &trainmesh_ledger::AccountKey::from_secret(spec.account_secret).address(),
        ))
        .map_err(|e| network::NetworkError::Key(e.to_string()))?;
    let blobs = BlobStore::default();
    let fetcher = Fetcher::new(net.clone(), blobs.clone());
    let chain_id = spec.genesis.chain_id.clone();
    let mut arbiters = Vec::new();

    // Equivocation the validator's consensus detects, filed on the ledger from its account.
    let (reports_tx, mut reports_rx) = tokio::sync::mpsc::unbounded_channel();
    let validator = match (validator_index, spec.consensus_secret) {
        (Some(me), Some(secret)) => Some(start_validator(
            &spec,
            ValidatorParts {
                me,
                secret,
                beacon: beacon.clone(),
                reports: reports_tx.clone(),
                committee: committee.clone(),
                peers: peers.clone(),
                ledger: ledger.clone(),
                net: net.clone(),
                replay_from,
                metrics: metrics.clone(),
            },
            &mut arbiters,
        )?),
        _ => None,
    };
    let (ledger_actor, coordinator, sync, dag) = match validator {
        Some(v) => (v.ledger, Some(v.coordinator), Some(v.sync), Some(v.dag)),
        None => {
            let actor = LedgerActor::follower(
                ledger.clone(),
                beacon,
                committee.clone(),
                net.clone(),
                metrics.clone(),
            )?;
            (actor.start(), None, None, None)
        }
    };

    let submitter = match &coordinator {
        Some(c) => Submitter::Local(c.clone().recipient()),
        None => Submitter::Remote {
            net: net.clone(),
            validators: committee.indices().map(|a| peers.peer(a)).collect(),
            next: Arc::default(),
        },
    };
    let wallet = Wallet::new(spec.account_secret, chain_id.clone(), submitter);
    {
        let (wallet, ledger) = (wallet.clone(), ledger.clone());
        actix::spawn(async move {
            while let Some(evidence) = reports_rx.recv().await {
                let call = trainmesh_contracts::Call::ReportDoubleSign {
                    evidence: Box::new(evidence),
                };
                match wallet.send(&ledger, call, false).await {
                    Ok(_) => tracing::warn!("reported a validator's double signing"),
                    Err(e) => tracing::error!(error = %e, "could not report a double signing"),
                }
            }
        });
    }

    let inbox = coordinator
        .as_ref()
        .zip(sync)
        .map(|(c, sync)| ValidatorInbox {
            consensus: c.clone().recipient(),
            mempool: c.clone().recipient(),
            sync: sync.recipient(),
        });
    Router::new(
        peers.clone(),
        inbox,
        ledger_actor.clone().recipient(),
        ledger.clone(),
        chain_id,
        blobs.clone(),
        fetcher.clone(),
        net.clone(),
        events,
        metrics.clone(),
    )
    .start();

    let work = WorkContext {
        ledger: ledger.clone(),
        fetcher: fetcher.clone(),
        blobs: blobs.clone(),
        wallet: wallet.clone(),
        metrics: metrics.clone(),
        peer_id,
        peer_signature,
        peer_signer: PeerSigner::new(&network_secret),
        datasets: DatasetCache::default(),
    };
    let trained_on = TrainedOn::default();
    if let Some((registration, cheat)) = spec.trainer.clone() {
        let t = TrainerActor::new(
            work.clone(),
            registration,
            cheat,
            spec.train_device.clone(),
            trained_on.clone(),
        )
        .start();
        ledger_actor.do_send(Subscribe(t.recipient()));
    }
    let parts = crate::dispute::Parts {
        honest_trainer: spec.trainer.as_ref().is_some_and(|(_, cheat)| !cheat),
        evaluator: spec.evaluator.as_ref().map(|(_, mode)| *mode),
    };
    let dispute =
        crate::dispute::DisputeActor::new(work.clone(), spec.train_device.clone(), parts).start();
    ledger_actor.do_send(Subscribe(dispute.recipient()));
    if let Some((registration, mode)) = spec.evaluator.clone() {
        let e = EvaluatorActor::new(work.clone(), registration, spec.train_device.clone(), mode)
            .start();
        ledger_actor.do_send(Subscribe(e.recipient()));
    }
    let provider = match &spec.provider {
        Some((samples, offer)) => {
            let p = DataProvider::new(work.clone(), samples, offer.clone())?.start();
            ledger_actor.do_send(Subscribe(p.clone().recipient()));
            Some(p)
        }
        None => None,
    };
    tracing::info!(node = %spec.name, %peer_id, validator = ?validator_index, "node started");
    Ok(NodeHandle {
        data_dir: spec.data_dir.clone(),
        name: spec.name,
        peer_id,
        peer_signer: PeerSigner::new(&network_secret),
        ledger,
        metrics,
        wallet,
        committee,
        coordinator,
        dag,
        ledger_actor,
        provider,
        blobs,
        trained_on,
        fetcher,
        arbiters,
    })
}

/// What a validator's actors are started from.
struct ValidatorParts {
    me: trainmesh_dag::AuthorityIndex,
    secret: [u8; 32],
    beacon: BeaconKey,
    reports: tokio::sync::mpsc::UnboundedSender<trainmesh_dag::EquivocationEvidence>,
    committee: Committee,
    peers: PeerBook,
    ledger: SharedLedger,
    net: tokio::sync::mpsc::Sender<network::NetworkCommand>,
    replay_from: u64,
    metrics: NodeMetrics,
}

struct ValidatorActors {
    ledger: Addr<LedgerActor>,
    coordinator: Addr<Coordinator<RedbStore>>,
    sync: Addr<SyncServer>,
    dag: RedbReader,
}

/// A validator's ledger, coordinator and sync server, each on its own thread; the coordinator
/// hears of every executed commit (to prune the store behind the ledger).
fn start_validator(
    spec: &NodeSpec,
    parts: ValidatorParts,
    arbiters: &mut Vec<Arbiter>,
) -> Result<ValidatorActors, NodeError> {
    fn on_thread(arbiters: &mut Vec<Arbiter>) -> ArbiterHandle {
        let arbiter = Arbiter::new();
        let handle = arbiter.handle();
        arbiters.push(arbiter);
        handle
    }
    let secret = spec.beacon_secret.ok_or_else(|| {
        NodeError::Genesis("a validator needs its beacon share (beacon_key in its config)".into())
    })?;
    let beacon_secret = BeaconSecret::new(&parts.beacon, parts.me.as_usize(), &secret)
        .map_err(|e| NodeError::Genesis(e.to_string()))?;
    let admission = AdmissionGate::new(parts.ledger.clone(), AdmissionLimits::default());
    let actor = LedgerActor::validator(
        parts.ledger,
        parts.beacon,
        parts.net.clone(),
        parts.metrics.clone(),
    );
    let ledger = LedgerActor::start_in_arbiter(&on_thread(arbiters), |_| actor);
    let store = RedbStore::open(spec.data_dir.join("dag.redb"))?;
    let dag = store.reader();
    let core_config = spec.local_consensus.core_config(&spec.genesis);
    let server = SyncServer::new(
        dag.clone(),
        core_config.clone(),
        &spec.mesh,
        parts.net.clone(),
        parts.metrics.clone(),
    );
    let sync = SyncServer::start_in_arbiter(&on_thread(arbiters), |_| server);
    let (core, startup) = Core::new(
        core_config.clone(),
        parts.committee.clone(),
        parts.me,
        KeyPair::from_secret_bytes(&parts.secret),
        store,
        now(),
    )?;
    let wiring = CoordinatorWiring {
        validator: Validator::new(parts.committee, core_config),
        peers: parts.peers,
        net: parts.net,
        ledger: ledger.clone().recipient(),
        sync: Some(sync.clone().recipient()),
        replay_from: parts.replay_from,
        retain_commits: spec.mesh.retain_commits,
        beacon: Some(beacon_secret),
        reports: Some(parts.reports),
        admission: Some(admission),
        equivocate: spec
            .equivocate
            .then(|| KeyPair::from_secret_bytes(&parts.secret)),
        metrics: parts.metrics,
    };
    let coordinator = Coordinator::new(core, startup, wiring);
    let coordinator = Coordinator::start_in_arbiter(&on_thread(arbiters), |_| coordinator);
    ledger.do_send(Subscribe(coordinator.clone().recipient()));
    Ok(ValidatorActors {
        ledger,
        coordinator,
        sync,
        dag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use trainmesh_contracts::Params;
    use trainmesh_dag::ConsensusParams;

    #[test]
    fn the_core_takes_its_consensus_part_from_the_genesis_and_the_rest_from_the_node() {
        let consensus = ConsensusParams {
            header_payload_bytes_max: 1_234,
            header_transactions_max: 56,
            transaction_bytes_max: 789,
            leader_timeout_ms: 321,
            gc_depth_rounds: 7,
            round_window_rounds: 70,
        };
        let genesis = Genesis {
            chain_id: "c".into(),
            genesis_time_ms: 0,
            accounts: vec![],
            validators: vec![],
            params: Params::default(),
            consensus,
            beacon: None,
        };
        let local = LocalConsensusConfig {
            max_header_delay_ms: 11,
            mempool_bytes_max: 22,
            pending_certificates_max: 33,
            pending_headers_max: 44,
            missing_certificates_max: 55,
        };
        let core = local.core_config(&genesis);
        assert_eq!(core.consensus(), consensus);
        let d = CoreConfig::default();
        assert_eq!(
            (
                core.max_header_delay_ms,
                core.mempool_bytes_max,
                core.pending_certificates_max,
                core.pending_headers_max,
                core.missing_certificates_max,
            ),
            (11, 22, 33, 44, 55)
        );
        assert_eq!(
            (
                core.resend_interval_ms,
                core.sync_retry_ms,
                core.sync_digests_max
            ),
            (d.resend_interval_ms, d.sync_retry_ms, d.sync_digests_max)
        );
        assert_ne!(core.consensus(), CoreConfig::default().consensus());
    }
}
