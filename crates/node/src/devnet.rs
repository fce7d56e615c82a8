//! `trainmesh devnet`: a whole network in one process. Validators, trainers, evaluators and a
//! data provider, each with its own libp2p swarm on loopback and its own redb data directory;
//! a researcher submits a demo job, and the run ends with what the network certified and paid.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use trainmesh_actors::coordinator::GetStatus;
use trainmesh_actors::mesh_config::MeshConfig;
use trainmesh_actors::node::{self, LocalConsensusConfig, NodeHandle, NodeSpec};
use trainmesh_actors::provider::DatasetOffer;
use trainmesh_actors::trainer::Registration;
use trainmesh_contracts::jobs::{HyperParams, Job, JobSpec, JobState, Metric, Optimizer, Target};
use trainmesh_contracts::workers::Capability;
use trainmesh_contracts::{
    Address, Amount, DatasetId, Genesis, GenesisAccount, GenesisValidator, Hash32, Params,
    TimestampMs,
};
use trainmesh_dag::ConsensusParams;
use trainmesh_gpu::dataset::Samples;
use trainmesh_gpu::tokens::Tokens;
use trainmesh_gpu::train::SplitData;

use crate::keys;
use crate::net::{free_port, loopback};

mod phases;
mod summary;

use phases::{follow, submit_job, wait_for_cheater, wait_for_panel, wait_for_workers};
use summary::{Tracked, Verdicts};
use trainmesh_actors::dispute::EvaluatorMode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetChoice {
    /// The UCI 8×8 digits (bundled).
    Digits,
    /// Fashion-MNIST from Debian's `dataset-fashion-mnist`.
    FashionMnist,
    /// The quotations of Debian's `fortunes`, byte-tokenized: a text dataset for a language
    /// model (`--job lm`).
    Fortunes,
}

/// The job the researcher submits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum JobChoice {
    /// An MLP on `--dataset`, target held-out accuracy.
    Mlp,
    /// A byte-level transformer language model on Debian's `fortunes` corpus, target held-out
    /// loss (implies `--dataset fortunes`).
    Lm,
}

#[derive(Clone, Debug, clap::Args)]
pub struct DevnetArgs {
    /// Exit 0 after the job's summary; the last line is one JSON object.
    #[arg(long)]
    pub until_done: bool,
    /// Trainers that fake their work (they are caught, slashed, and their units reassigned).
    #[arg(long, default_value_t = 0)]
    pub cheaters: usize,
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    #[arg(long, default_value_t = 3)]
    pub trainers: usize,
    #[arg(long, default_value_t = 2)]
    pub evaluators: usize,
    /// Evaluators (on top of `--evaluators`) that replay nothing and accept. With cheaters, one
    /// of them sits on the cheater's first panel beside an honest evaluator: the panel splits,
    /// the dispute goes against the cheater, and the lazy accept is slashed.
    #[arg(long, default_value_t = 0)]
    pub lazy_evaluators: usize,
    /// Evaluators (on top of the others) that reject everything and disagree with every
    /// midpoint. One of them sits on the first panel beside an honest evaluator: the honest
    /// trainer wins the dispute at the validators' referee, and the colluder is slashed.
    #[arg(long, default_value_t = 0)]
    pub colluding_evaluators: usize,
    /// Chance, in parts per million, that a unit is a planted fault (each unit at most once):
    /// its trainer plants a provably wrong last segment, and evaluators that accept it are
    /// slashed. With lazy evaluators, one of them sits on the first panel beside an honest one.
    #[arg(long, default_value_t = 0)]
    pub plant_rate_ppm: u32,
    /// Validators (the last ones) that each sign a second, conflicting header for one of their
    /// rounds: a peer detects it, files the evidence, and the ledger slashes the double signer.
    /// Fewer than a third of the validators.
    #[arg(long, default_value_t = 0)]
    pub equivocators: usize,
    #[arg(long, value_enum, default_value_t = DatasetChoice::Digits)]
    pub dataset: DatasetChoice,
    /// `lm`: train a byte-level transformer on the fortunes corpus instead of the MLP.
    #[arg(long, value_enum, default_value_t = JobChoice::Mlp)]
    pub job: JobChoice,
    /// Keep the nodes' data here (default: a temporary directory, removed at exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where the HTTP gateway (served by validator 0) listens; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway: std::net::SocketAddr,
    /// Give up when the job has not finished after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
    /// Where the trainers train: `device` (the default here: the GPU whenever it passes
    /// conformance, to show device training end to end), `auto` (only when it is also faster than
    /// the CPU, measured: what a node does by default), `cpu`.
    #[arg(long, value_enum, default_value_t = crate::gpu::TrainOn::Device)]
    pub train_on: crate::gpu::TrainOn,
}

/// What an honest worker bonds, in TRAIN.
const WORKER_BOND: u64 = 200;
/// What a cheating trainer bonds: ten times more, so the stake-weighted sampler keeps favouring
/// it once the honest trainers are there (the worst case for the network). Its first unit is
/// certain by construction: the honest trainers start only once it holds it.
const CHEATER_BOND: u64 = 2_000;

struct Roles {
    validators: Vec<([u8; 32], [u8; 32])>,
    trainers: Vec<[u8; 32]>,
    evaluators: Vec<[u8; 32]>,
    provider: [u8; 32],
    researcher: [u8; 32],
}

fn address(secret: &[u8; 32]) -> Address {
    Address::from_public_key(&node::public_key(secret))
}

/// The devnet's genesis: funded workers, provider and researcher, staked validators, and the
/// default economics with a short unit timeout (a stuck unit moves on within the demo).
fn genesis(roles: &Roles, plant_rate_ppm: u32) -> (Genesis, Vec<[u8; 32]>) {
    let mut accounts = Vec::new();
    for s in roles.trainers.iter().chain(&roles.evaluators) {
        accounts.push(GenesisAccount {
            address: address(s),
            balance: Amount::from_train(CHEATER_BOND * 2),
        });
    }
    accounts.push(GenesisAccount {
        address: address(&roles.provider),
        balance: Amount::from_train(100),
    });
    accounts.push(GenesisAccount {
        address: address(&roles.researcher),
        balance: Amount::from_train(10_000),
    });
    // Validators pay fees too (double-sign reports) before their rewards accrue.
    for (account, _) in &roles.validators {
        accounts.push(GenesisAccount {
            address: address(account),
            balance: Amount::from_train(100),
        });
    }
    let validators = roles
        .validators
        .iter()
        .map(|(account, consensus)| GenesisValidator {
            address: address(account),
            consensus_key: Hash32(node::public_key(consensus)),
            stake: Amount::from_train(100_000),
        })
        .collect();
    let mut genesis = Genesis {
        chain_id: "trainmesh-devnet".into(),
        genesis_time_ms: 0,
        accounts,
        validators,
        params: Params {
            unit_timeout_ms: 60_000,
            // A rejection is final 3 s after its certificate unless the trainer contests it;
            // each dispute move gets 10 s (a midpoint replay of a devnet segment takes well
            // under a second).
            disputes: trainmesh_contracts::disputes::DisputeParams {
                window_ms: 3_000,
                move_ms: 10_000,
                ..Default::default()
            },
            // A trainer opens its seal within 30 s of the last commitment.
            plants: trainmesh_contracts::plants::PlantParams {
                rate_ppm: plant_rate_ppm,
                open_ms: 30_000,
                ..Default::default()
            },
            ..Params::default()
        },
        consensus: ConsensusParams::default(),
        beacon: None,
    };
    let shares = crate::genesis::deal_beacon(&mut genesis).expect("equal stakes deal a beacon");
    (genesis, shares)
}

/// The language-model job: a 2-block byte-level transformer (d 64, 4 heads, context 64, tied
/// head; about 120 K parameters) trained with AdamW, target held-out loss 2.6 nats per byte.
pub const LM_MODEL: &str =
    r#"{"kind":"transformer","layers":2,"d_model":64,"heads":4,"context":64,"vocab":256}"#;

/// The demo job: an MLP on the chosen dataset, target held-out accuracy; on the fortunes text,
/// the language model, target held-out loss.
pub fn demo_job(choice: DatasetChoice, dataset: DatasetId, now_ms: u64) -> JobSpec {
    if choice == DatasetChoice::Fortunes {
        return JobSpec {
            model: LM_MODEL.into(),
            dataset,
            hyper: HyperParams {
                optimizer: Optimizer::AdamW,
                learning_rate_ppm: 10_000,
                batch_size: 16,
                total_steps: 600,
                steps_per_unit: 200,
                seed: 42,
            },
            target: Target {
                metric: Metric::Loss,
                threshold_ppm: 2_600_000,
            },
            budget: Amount::from_train(400),
            deadline: TimestampMs(now_ms + 30 * 60_000),
            tier: 1,
            min_memory_mb: 0,
        };
    }
    let (model, total_steps, steps_per_unit, batch, target) = match choice {
        DatasetChoice::Digits => (
            r#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":64,"activation":"relu"}]}"#,
            704,
            176,
            32,
            950_000,
        ),
        DatasetChoice::FashionMnist => (
            r#"{"kind":"mlp","input":784,"classes":10,"hidden":[{"units":128,"activation":"relu"}]}"#,
            4_800,
            960,
            128,
            850_000,
        ),
        DatasetChoice::Fortunes => unreachable!("handled above"),
    };
    JobSpec {
        model: model.into(),
        dataset,
        hyper: HyperParams {
            optimizer: Optimizer::Adam,
            learning_rate_ppm: 3_000,
            batch_size: batch,
            total_steps,
            steps_per_unit,
            seed: 42,
        },
        target: Target {
            metric: Metric::Accuracy,
            threshold_ppm: target,
        },
        budget: Amount::from_train(400),
        deadline: TimestampMs(now_ms + 30 * 60_000),
        tier: 1,
        min_memory_mb: 0,
    }
}

/// The chosen dataset as its provider holds it: samples, or the fortunes text's byte tokens.
pub(crate) fn load_data(choice: DatasetChoice) -> anyhow::Result<SplitData> {
    if choice == DatasetChoice::Fortunes {
        let dir = std::path::Path::new(trainmesh_gpu::tokens::FORTUNES_DIR);
        let Some(text) = trainmesh_gpu::tokens::fortunes_corpus(dir)? else {
            bail!(
                "the fortunes corpus is not installed at {} (Debian package fortunes)",
                dir.display()
            );
        };
        return Ok(SplitData::Tokens(Tokens::from_bytes(&text)));
    }
    Ok(SplitData::Samples(load_samples(choice)?))
}

pub(crate) fn load_samples(choice: DatasetChoice) -> anyhow::Result<Samples> {
    match choice {
        DatasetChoice::Fortunes => {
            bail!("fortunes is a text dataset: `dataset prepare --dataset fortunes` tokenizes it")
        }
        DatasetChoice::Digits => Ok(trainmesh_gpu::import::digits_bundled()),
        DatasetChoice::FashionMnist => {
            let dir = std::path::Path::new(trainmesh_gpu::import::FASHION_MNIST_DIR);
            let Some((train, test)) = trainmesh_gpu::import::fashion_mnist(dir)? else {
                bail!(
                    "Fashion-MNIST is not installed at {} (Debian package dataset-fashion-mnist)",
                    dir.display()
                );
            };
            Ok(Samples::concat(&[train, test])?)
        }
    }
}

pub(crate) fn offer(choice: DatasetChoice) -> DatasetOffer {
    match choice {
        DatasetChoice::Digits => DatasetOffer {
            name: "uci-digits-8x8".into(),
            licence: "CC BY 4.0".into(),
            price_per_use: Amount::from_train(1),
            samples_per_shard: 256,
            heldout_fraction: 0.2,
            seed: 11,
        },
        DatasetChoice::Fortunes => DatasetOffer {
            name: "fortunes".into(),
            licence: "BSD (Debian fortunes)".into(),
            price_per_use: Amount::from_train(1),
            // Tokens per shard: 256 K bytes, 512 KiB of u16 ids.
            samples_per_shard: 256 << 10,
            heldout_fraction: 0.05,
            seed: 11,
        },
        DatasetChoice::FashionMnist => DatasetOffer {
            name: "fashion-mnist".into(),
            licence: "MIT".into(),
            price_per_use: Amount::from_train(1),
            // 2,000 × 784 features × 4 bytes: 6.3 MB, inside one mesh message.
            samples_per_shard: 2_000,
            heldout_fraction: 1.0 / 7.0,
            seed: 11,
        },
    }
}

/// What this machine registers with, measured rather than typed: the training device's adapter,
/// its matmul GFLOP/s (a timed kernel) and buffer limit; without one, the CPU executor's GEMM
/// GFLOP/s and the host's memory.
pub fn local_capability(device: Option<&trainmesh_gpu::device::GpuDevice>) -> Capability {
    match device {
        Some(d) => Capability {
            adapter: d.adapter.name.clone(),
            backend: d.adapter.backend.clone(),
            memory_mb: d.adapter.max_buffer_size >> 20,
            gflops: d
                .matmul_gflops(256, 2)
                .map_or(0, |g| g.round().max(1.0) as u32),
            conformance: d.conformance_digest().map(str::to_owned),
        },
        None => Capability {
            adapter: "cpu".into(),
            backend: "cpu".into(),
            memory_mb: host_memory_mb(),
            gflops: trainmesh_gpu::gemm::measured_gflops(256, 2)
                .round()
                .max(1.0) as u32,
            conformance: None,
        },
    }
}

/// The host's memory from /proc/meminfo (0 where there is none).
fn host_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

pub fn run(mut args: DevnetArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if args.job == JobChoice::Lm {
        args.dataset = DatasetChoice::Fortunes;
    } else if args.dataset == DatasetChoice::Fortunes {
        bail!("the fortunes text trains a language model: use --job lm");
    }
    if args.validators < 4 {
        bail!("a devnet needs at least 4 validators");
    }
    if args.evaluators < 2 {
        bail!("a devnet needs at least 2 evaluators (the attestation quorum)");
    }
    if args.cheaters >= args.trainers {
        bail!("at least one trainer must be honest for the job to finish");
    }
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    system.block_on(devnet(args, started))
}

impl Roles {
    fn derive(args: &DevnetArgs) -> Roles {
        Roles {
            validators: (0..args.validators)
                .map(|i| {
                    (
                        keys::derived(&format!("validator-{i}/account")),
                        keys::derived(&format!("validator-{i}/consensus")),
                    )
                })
                .collect(),
            trainers: (0..args.trainers)
                .map(|i| keys::derived(&format!("trainer-{i}")))
                .collect(),
            evaluators: (0..args.evaluators + args.lazy_evaluators + args.colluding_evaluators)
                .map(|i| keys::derived(&format!("evaluator-{i}")))
                .collect(),
            provider: keys::derived("provider"),
            researcher: keys::derived("researcher"),
        }
    }

    /// The accounts the summary reports on; the first `cheaters` trainers cheat, evaluators play
    /// as `mode_of` says.
    fn tracked(&self, cheaters: usize, mode_of: impl Fn(usize) -> EvaluatorMode) -> Vec<Tracked> {
        let trainers = self.trainers.iter().enumerate().map(|(i, s)| Tracked {
            name: format!(
                "trainer-{i}{}",
                if i < cheaters { " (cheater)" } else { "" }
            ),
            cheater: i < cheaters,
            address: address(s),
        });
        let evaluators = self.evaluators.iter().enumerate().map(|(i, s)| Tracked {
            name: format!(
                "evaluator-{i}{}",
                match mode_of(i) {
                    EvaluatorMode::Honest => "",
                    EvaluatorMode::Lazy => " (lazy)",
                    EvaluatorMode::Colluding => " (colluding)",
                }
            ),
            cheater: false,
            address: address(s),
        });
        let others = [
            ("provider", &self.provider),
            ("researcher", &self.researcher),
        ]
        .map(|(name, s)| Tracked {
            name: name.into(),
            cheater: false,
            address: address(s),
        });
        trainers.chain(evaluators).chain(others).collect()
    }
}

/// Starts the devnet's nodes, every one with the same genesis, bootstrap list and settings.
struct Launcher {
    root: PathBuf,
    genesis: Genesis,
    /// Each validator's beacon share, by position (the devnet deals them itself).
    beacon_shares: Vec<[u8; 32]>,
    ports: Vec<u16>,
    bootstrap: Vec<(libp2p::PeerId, libp2p::Multiaddr)>,
    capability: Capability,
    /// The device every trainer of the devnet trains on (shared), if one passed conformance.
    train_device: Option<std::sync::Arc<trainmesh_gpu::device::GpuDevice>>,
}

impl Launcher {
    fn new(
        root: PathBuf,
        roles: &Roles,
        train_device: Option<std::sync::Arc<trainmesh_gpu::device::GpuDevice>>,
        plant_rate_ppm: u32,
    ) -> Launcher {
        let ports: Vec<u16> = roles.validators.iter().map(|_| free_port()).collect();
        let bootstrap = roles
            .validators
            .iter()
            .zip(&ports)
            .map(|((_, c), port)| {
                let peer =
                    trainmesh_actors::network::peer_id(&node::public_key(c)).expect("valid key");
                (peer, loopback(*port))
            })
            .collect();
        let (genesis, beacon_shares) = genesis(roles, plant_rate_ppm);
        Launcher {
            root,
            genesis,
            beacon_shares,
            ports,
            bootstrap,
            capability: local_capability(train_device.as_deref()),
            train_device,
        }
    }

    fn spec(&self, name: String, account: [u8; 32], port: u16) -> NodeSpec {
        NodeSpec {
            data_dir: self.root.join(&name),
            name,
            genesis: self.genesis.clone(),
            account_secret: account,
            consensus_secret: None,
            beacon_secret: None,
            listen: loopback(port),
            bootstrap: self.bootstrap.clone(),
            trainer: None,
            train_device: None,
            evaluator: None,
            equivocate: false,
            provider: None,
            local_consensus: LocalConsensusConfig::default(),
            mesh: MeshConfig::default(),
        }
    }

    fn registration(&self, bond: u64) -> Registration {
        Registration {
            bond: Amount::from_train(bond),
            capability: self.capability.clone(),
        }
    }

    fn validator(
        &self,
        i: usize,
        (account, consensus): &([u8; 32], [u8; 32]),
        equivocate: bool,
    ) -> anyhow::Result<NodeHandle> {
        let mut s = self.spec(format!("validator-{i}"), *account, self.ports[i]);
        s.consensus_secret = Some(*consensus);
        s.beacon_secret = Some(self.beacon_shares[i]);
        s.equivocate = equivocate;
        Ok(node::start(s)?)
    }

    fn trainer(&self, i: usize, secret: &[u8; 32], cheat: bool) -> anyhow::Result<NodeHandle> {
        let mut s = self.spec(format!("trainer-{i}"), *secret, free_port());
        let bond = if cheat { CHEATER_BOND } else { WORKER_BOND };
        s.trainer = Some((self.registration(bond), cheat));
        s.train_device = self.train_device.clone();
        Ok(node::start(s)?)
    }

    fn evaluator(
        &self,
        i: usize,
        secret: &[u8; 32],
        mode: EvaluatorMode,
    ) -> anyhow::Result<NodeHandle> {
        let mut s = self.spec(format!("evaluator-{i}"), *secret, free_port());
        s.evaluator = Some((self.registration(WORKER_BOND), mode));
        // Even evaluators replay on the device, odd ones on the CPU executor: every unit is
        // checked exactly across backends.
        if i.is_multiple_of(2) {
            s.train_device = self.train_device.clone();
        }
        Ok(node::start(s)?)
    }

    fn provider(&self, secret: &[u8; 32], choice: DatasetChoice) -> anyhow::Result<NodeHandle> {
        let mut s = self.spec("provider".into(), *secret, free_port());
        s.provider = Some((Arc::new(load_data(choice)?), offer(choice)));
        Ok(node::start(s)?)
    }
}

async fn devnet(args: DevnetArgs, started: Instant) -> anyhow::Result<()> {
    let temp;
    let root = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().context("creating a data directory")?;
            temp.path().to_path_buf()
        }
    };
    let roles = Roles::derive(&args);
    let train_device = crate::gpu::train_device(args.train_on);
    let train_device_name = train_device.as_ref().map(|d| d.adapter.name.clone());
    eprintln!(
        "devnet: trainers train on {}",
        train_device_name.as_deref().unwrap_or("the CPU executor")
    );
    let launcher = Launcher::new(root.clone(), &roles, train_device, args.plant_rate_ppm);
    let tracked = roles.tracked(args.cheaters, |i| args.evaluator_mode(i));
    let mut nodes = Vec::new();
    if 3 * args.equivocators >= roles.validators.len() {
        anyhow::bail!(
            "--equivocators {} of {} validators: fewer than a third, or consensus stops",
            args.equivocators,
            roles.validators.len()
        );
    }
    let honest_validators = roles.validators.len() - args.equivocators;
    for (i, v) in roles.validators.iter().enumerate() {
        nodes.push(launcher.validator(i, v, i >= honest_validators)?);
    }
    let validators = nodes.len();
    // With cheaters, the honest trainers start only once a cheater holds the job's first unit:
    // then the demo shows a cheater caught whatever the draw, not only when the draw favours it.
    let (cheating, honest) = roles.trainers.split_at(args.cheaters);
    // With lazy evaluators and a cheater, or with colluding evaluators, the first panel is one
    // of them and one honest evaluator (the only ones on the ledger when it is drawn); the
    // others start after it.
    let evaluators: Vec<(usize, &[u8; 32], EvaluatorMode)> = roles
        .evaluators
        .iter()
        .enumerate()
        .map(|(i, e)| (i, e, args.evaluator_mode(i)))
        .collect();
    let odd_one = evaluators
        .iter()
        .find(|(_, _, m)| match m {
            EvaluatorMode::Lazy => !cheating.is_empty() || args.plant_rate_ppm > 0,
            EvaluatorMode::Colluding => true,
            EvaluatorMode::Honest => false,
        })
        .map(|(i, _, _)| *i);
    let (first_panel, held_back): (Vec<_>, Vec<_>) = match odd_one {
        None => (evaluators, Vec::new()),
        Some(odd) => evaluators
            .into_iter()
            .partition(|(i, _, _)| *i == 0 || *i == odd),
    };
    let mut before_job: Vec<&[u8; 32]> = cheating
        .iter()
        .chain(first_panel.iter().map(|(_, e, _)| *e))
        .collect();
    for (i, t) in cheating.iter().enumerate() {
        nodes.push(launcher.trainer(i, t, true)?);
    }
    if cheating.is_empty() {
        for (i, t) in honest.iter().enumerate() {
            nodes.push(launcher.trainer(i, t, false)?);
        }
        before_job.extend(honest);
    }
    for (i, e, mode) in &first_panel {
        nodes.push(launcher.evaluator(*i, e, *mode)?);
    }
    nodes.push(launcher.provider(&roles.provider, args.dataset)?);
    let provider = nodes
        .last()
        .and_then(|n| n.provider.clone())
        .expect("a provider");
    let v0 = &nodes[0];
    let chain_id = launcher.genesis.chain_id.clone();
    let served = crate::gateway::Gateway::of(v0, &chain_id)?;
    *served.registries.write().expect("registries lock") =
        nodes.iter().map(|n| n.metrics.registry.clone()).collect();
    let registries = served.registries.clone();
    let gateway = crate::gateway::serve(served, args.gateway)
        .with_context(|| format!("starting the gateway on {}", args.gateway))?;
    eprintln!("gateway: http://{gateway}/v1/status · metrics: http://{gateway}/metrics");
    eprintln!(
        "devnet: {} validators, {} trainers ({} cheating), {} evaluators, 1 data provider; data in {}",
        args.validators,
        args.trainers,
        args.cheaters,
        args.evaluators,
        root.display()
    );

    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let expected: Vec<Address> = before_job.into_iter().map(address).collect();
    let dataset = wait_for_workers(v0, &provider, &expected, deadline).await?;
    let setup_s = started.elapsed().as_secs_f64();
    let before: Vec<u128> = tracked
        .iter()
        .map(|t| summary::balance_of(v0, &t.address))
        .collect();

    let job_started = Instant::now();
    let spec = demo_job(args.dataset, dataset, trainmesh_actors::consensus::now().0);
    let job_id = submit_job(v0, &roles.researcher, &chain_id, &spec, deadline).await?;
    if !cheating.is_empty() {
        let cheaters: Vec<Address> = cheating.iter().map(address).collect();
        let holder = wait_for_cheater(v0, job_id, &cheaters, deadline).await?;
        eprintln!(
            "devnet: {} holds unit 0; the honest trainers start",
            summary::name_of(&tracked, &holder)
        );
        for (i, t) in honest.iter().enumerate() {
            let trainer = launcher.trainer(args.cheaters + i, t, false)?;
            let mut served = registries.write().expect("registries lock");
            served.push(trainer.metrics.registry.clone());
            nodes.push(trainer);
        }
    }
    if !held_back.is_empty() {
        wait_for_panel(&nodes[0], job_id, deadline).await?;
        eprintln!("devnet: the first panel is drawn; the other evaluators start");
        for (i, e, mode) in &held_back {
            let evaluator = launcher.evaluator(*i, e, *mode)?;
            let mut served = registries.write().expect("registries lock");
            served.push(evaluator.metrics.registry.clone());
            nodes.push(evaluator);
        }
    }
    let v0 = &nodes[0];
    let job = follow(v0, job_id, spec.units(), deadline, args.timeout_s).await?;
    let timings = Timings {
        setup_s,
        job_s: job_started.elapsed().as_secs_f64(),
        started,
    };
    let mut summary = report(&nodes, &job, &tracked, &before, &args, timings).await?;
    summary["train_device"] = serde_json::json!(train_device_name);
    let ok = job.state == JobState::Completed;
    println!("{summary}");
    if !args.until_done {
        eprintln!("devnet keeps running (Ctrl-C or SIGTERM to stop)");
        crate::net::shutdown_signal().await;
    }
    drop(nodes.drain(validators..));
    for n in nodes {
        n.stop();
    }
    actix::System::current().stop();
    if !ok {
        bail!("the job ended {}", job.state.name());
    }
    Ok(())
}

struct Timings {
    setup_s: f64,
    job_s: f64,
    started: Instant,
}

/// Prints the job's summary; returns it as one JSON object.
async fn report(
    nodes: &[NodeHandle],
    job: &Job,
    tracked: &[Tracked],
    before: &[u128],
    args: &DevnetArgs,
    timings: Timings,
) -> anyhow::Result<serde_json::Value> {
    let v0 = &nodes[0];
    let status = v0
        .coordinator
        .as_ref()
        .expect("validator")
        .send(GetStatus)
        .await?;
    println!();
    println!("job {} — {}", job.id.0, job.state.name());
    let metric = job.latest_metric_ppm.map(|m| m as f64 / 1e6);
    let lm = args.dataset == DatasetChoice::Fortunes;
    println!(
        "  model {} · dataset {} · {} of {} units certified · held-out {} {}",
        args.dataset_name(),
        job.spec.dataset.0,
        job.units_done,
        job.units_total,
        if lm { "loss (nats/byte)" } else { "accuracy" },
        metric
            .map(|m| format!("{m:.4}"))
            .unwrap_or_else(|| "-".into())
    );
    let verdicts = Verdicts::of(v0, job)?;
    let certificates = summary::print_units(v0, job, &verdicts, tracked)?;
    let balances = summary::print_balances(v0, tracked, before, &verdicts);
    for (who, round) in &verdicts.double_signers {
        println!("  validator {who} slashed: signed two headers of round {round}");
    }
    let sum = |f: &dyn Fn(&NodeHandle) -> f64| nodes.iter().map(f).sum::<f64>();
    // Which device trained each unit (every attempt, the cheaters' included).
    let devices: Vec<serde_json::Value> = nodes
        .iter()
        .flat_map(|n| {
            n.trained_on.list().into_iter().map(move |u| {
                serde_json::json!({
                    "unit": u.unit.to_string(),
                    "attempt": u.attempt,
                    "trainer": n.name,
                    "device": u.device,
                })
            })
        })
        .collect();
    let gpu_units = devices.iter().filter(|d| d["device"] != "cpu").count();
    println!(
        "  units trained on a device: {gpu_units} of {}",
        devices.len()
    );
    let model_parameters = trainmesh_gpu::spec::ModelSpec::from_json(job.spec.model.as_bytes())
        .map(|m| m.param_count())
        .ok();
    let mut out = serde_json::json!({
        "devices": devices,
        "gpu_units": gpu_units,
        "job_status": job.state.name(),
        "model_parameters": model_parameters,
        "certificates": certificates,
        "rejected_results": verdicts.rejected.len(),
        "rejected_honest_results": summary::honest_rejections(&verdicts, tracked),
        "timed_out_units": verdicts.timed_out.len(),
        "disputes": verdicts.disputes,
        "dispute_outcomes": verdicts
            .settled
            .iter()
            .map(|(unit, outcome, moves)| serde_json::json!({
                "unit": unit.to_string(),
                "outcome": outcome,
                "moves": moves,
            }))
            .collect::<Vec<_>>(),
        "evaluators_slashed": verdicts.evaluators_slashed.len(),
        "validators_slashed": verdicts.double_signers.len(),
        "plants": verdicts.plants,
        "plants_accepted": verdicts.plants_accepted,
        "units_total": job.units_total,
        "committed_rounds": status.last_committed_round.0,
        "ledger_height": v0.ledger.read().expect("ledger lock").height(),
        "trainer_rewards": balances.rewards,
        "trainers_slashed": balances.slashed,
        "cheaters_slashed": balances.cheaters_slashed,
        "cheaters": args.cheaters,
        "setup_s": timings.setup_s,
        "job_s": timings.job_s,
        "training_s": sum(&|n| n.metrics.training_seconds.get_sample_sum()),
        "verification_s": sum(&|n| n.metrics.verification_seconds.get_sample_sum()),
        "wall_s": timings.started.elapsed().as_secs_f64(),
    });
    if lm {
        // The certified metric of a language model is its held-out loss (nats per byte).
        out["held_out_loss"] = serde_json::json!(metric);
        out["held_out_bits_per_token"] =
            serde_json::json!(metric.map(|l| l / std::f64::consts::LN_2));
        out["rounds"] = serde_json::json!(job.units_done);
        out["trainers_per_round"] = serde_json::json!(1);
    } else {
        out["test_accuracy"] = serde_json::json!(metric);
    }
    Ok(out)
}

impl DevnetArgs {
    /// Evaluator `i`: the honest ones first, then the lazy ones, then the colluding ones.
    fn evaluator_mode(&self, i: usize) -> EvaluatorMode {
        if i < self.evaluators {
            EvaluatorMode::Honest
        } else if i < self.evaluators + self.lazy_evaluators {
            EvaluatorMode::Lazy
        } else {
            EvaluatorMode::Colluding
        }
    }

    fn dataset_name(&self) -> &'static str {
        match self.dataset {
            DatasetChoice::Digits => "MLP 64-64-10 on UCI digits",
            DatasetChoice::FashionMnist => "MLP 784-128-10 on Fashion-MNIST",
            DatasetChoice::Fortunes => "byte-level transformer (2 × 64, context 64) on fortunes",
        }
    }
}
