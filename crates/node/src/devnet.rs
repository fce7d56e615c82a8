//! `trainmesh devnet`: a whole network in one process. Validators, trainers, evaluators and a
//! data provider, each with its own libp2p swarm on loopback and its own redb data directory;
//! a researcher submits a demo job, and the run ends with what the network certified and paid.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use trainmesh_actors::coordinator::GetStatus;
use trainmesh_actors::mesh_config::MeshConfig;
use trainmesh_actors::node::{self, NodeHandle, NodeSpec};
use trainmesh_actors::provider::{AttachedDataset, DatasetOffer};
use trainmesh_actors::trainer::Registration;
use trainmesh_actors::wallet::{Submitter, Wallet};
use trainmesh_contracts::jobs::{
    HyperParams, Job, JobSpec, JobState, Metric, Optimizer, Target, Unit, UnitState,
};
use trainmesh_contracts::workers::Capability;
use trainmesh_contracts::{
    keys as state_keys, Address, Amount, Call, DatasetId, Genesis, GenesisAccount,
    GenesisValidator, Hash32, JobId, Params, TimestampMs, UnitId,
};
use trainmesh_dag::CoreConfig;
use trainmesh_gpu::dataset::Samples;

use crate::keys;
use crate::net::{free_port, loopback};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetChoice {
    /// The UCI 8×8 digits (bundled).
    Digits,
    /// Fashion-MNIST from Debian's `dataset-fashion-mnist`.
    FashionMnist,
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
    #[arg(long, value_enum, default_value_t = DatasetChoice::Digits)]
    pub dataset: DatasetChoice,
    /// Keep the nodes' data here (default: a temporary directory, removed at exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where the HTTP gateway (served by validator 0) listens; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway: std::net::SocketAddr,
    /// Give up when the job has not finished after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
}

/// What an honest worker bonds, in TRAIN.
const WORKER_BOND: u64 = 200;
/// What a cheating trainer bonds: ten times more, so the stake-weighted sampler picks it first
/// (the worst case for the network, and the case the demo shows).
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
fn genesis(roles: &Roles) -> Genesis {
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
    let validators = roles
        .validators
        .iter()
        .map(|(account, consensus)| GenesisValidator {
            address: address(account),
            consensus_key: Hash32(node::public_key(consensus)),
            stake: Amount::from_train(100_000),
        })
        .collect();
    Genesis {
        chain_id: "trainmesh-devnet".into(),
        genesis_time_ms: 0,
        accounts,
        validators,
        params: Params {
            unit_timeout_ms: 60_000,
            ..Params::default()
        },
    }
}

/// The demo job: an MLP on the chosen dataset, target held-out accuracy.
pub fn demo_job(choice: DatasetChoice, dataset: DatasetId, now_ms: u64) -> JobSpec {
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

pub(crate) fn load_samples(choice: DatasetChoice) -> anyhow::Result<Samples> {
    match choice {
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

/// What this machine declares at registration.
pub fn local_capability() -> Capability {
    let adapters = trainmesh_gpu::device::discover();
    let (adapter, backend) = adapters
        .first()
        .map(|a| (a.name.clone(), a.backend.clone()))
        .unwrap_or_else(|| ("cpu".into(), "cpu".into()));
    Capability {
        adapter,
        backend,
        memory_mb: 1_024,
        gflops: 1,
    }
}

fn balance_of(n: &NodeHandle, a: &Address) -> u128 {
    n.ledger
        .read()
        .expect("ledger lock")
        .account(a)
        .map(|acc| acc.balance.0 + acc.stake.0)
        .unwrap_or(0)
}

fn train(amount: i128) -> f64 {
    amount as f64 / trainmesh_contracts::types::UNITS_PER_TRAIN as f64
}

fn histogram_sum(nodes: &[NodeHandle], f: impl Fn(&NodeHandle) -> f64) -> f64 {
    nodes.iter().map(f).sum()
}

pub fn run(args: DevnetArgs) -> anyhow::Result<()> {
    let started = Instant::now();
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

async fn devnet(args: DevnetArgs, started: Instant) -> anyhow::Result<()> {
    let temp;
    let root = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().context("creating a data directory")?;
            temp.path().to_path_buf()
        }
    };
    let roles = Roles {
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
        evaluators: (0..args.evaluators)
            .map(|i| keys::derived(&format!("evaluator-{i}")))
            .collect(),
        provider: keys::derived("provider"),
        researcher: keys::derived("researcher"),
    };
    let genesis = genesis(&roles);
    let samples = Arc::new(load_samples(args.dataset)?);
    let ports: Vec<u16> = (0..args.validators).map(|_| free_port()).collect();
    let bootstrap: Vec<_> = roles
        .validators
        .iter()
        .zip(&ports)
        .map(|((_, c), port)| {
            let peer = trainmesh_actors::network::peer_id(&node::public_key(c)).expect("valid key");
            (peer, loopback(*port))
        })
        .collect();
    let core_config = CoreConfig {
        max_header_delay_ms: 100,
        leader_timeout_ms: 1_000,
        ..CoreConfig::default()
    };
    let capability = local_capability();
    let registration = |bond: u64| Registration {
        bond: Amount::from_train(bond),
        capability: capability.clone(),
    };
    let spec = |name: String, account: [u8; 32], port: u16| NodeSpec {
        data_dir: root.join(&name),
        name,
        genesis: genesis.clone(),
        account_secret: account,
        consensus_secret: None,
        listen: loopback(port),
        bootstrap: bootstrap.clone(),
        trainer: None,
        evaluator: None,
        provider: None,
        core_config: core_config.clone(),
        mesh: MeshConfig::default(),
    };
    let mut nodes = Vec::new();
    for (i, (account, consensus)) in roles.validators.iter().enumerate() {
        let mut s = spec(format!("validator-{i}"), *account, ports[i]);
        s.consensus_secret = Some(*consensus);
        nodes.push(node::start(s)?);
    }
    let validators = nodes.len();
    for (i, t) in roles.trainers.iter().enumerate() {
        let mut s = spec(format!("trainer-{i}"), *t, free_port());
        let cheat = i < args.cheaters;
        let bond = if cheat { CHEATER_BOND } else { WORKER_BOND };
        s.trainer = Some((registration(bond), cheat));
        nodes.push(node::start(s)?);
    }
    for (i, e) in roles.evaluators.iter().enumerate() {
        let mut s = spec(format!("evaluator-{i}"), *e, free_port());
        s.evaluator = Some(registration(WORKER_BOND));
        nodes.push(node::start(s)?);
    }
    let mut s = spec("provider".into(), roles.provider, free_port());
    s.provider = Some((samples.clone(), offer(args.dataset)));
    nodes.push(node::start(s)?);
    let provider = nodes
        .last()
        .expect("just started")
        .provider
        .clone()
        .expect("a provider");
    let v0 = &nodes[0];
    let mut served = crate::gateway::Gateway::of(v0, &genesis.chain_id)?;
    served.registries = nodes.iter().map(|n| n.metrics.registry.clone()).collect();
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

    // Wait for the workers to register and the dataset to be attached.
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let worker_count = args.trainers + args.evaluators;
    let dataset = loop {
        let registered = v0
            .ledger
            .read()
            .expect("ledger lock")
            .read::<Vec<Address>>(state_keys::WORKERS)?
            .unwrap_or_default()
            .len();
        let attached = provider.send(AttachedDataset).await?;
        if let (true, Some(d)) = (registered >= worker_count, attached) {
            break d;
        }
        if Instant::now() > deadline {
            bail!("workers or dataset not on the ledger in time ({registered}/{worker_count} registered)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let setup_s = started.elapsed().as_secs_f64();

    let tracked: Vec<(String, Address)> = roles
        .trainers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                format!(
                    "trainer-{i}{}",
                    if i < args.cheaters { " (cheater)" } else { "" }
                ),
                address(s),
            )
        })
        .chain(
            roles
                .evaluators
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("evaluator-{i}"), address(s))),
        )
        .chain([
            ("provider".to_string(), address(&roles.provider)),
            ("researcher".to_string(), address(&roles.researcher)),
        ])
        .collect();
    let before: Vec<u128> = tracked.iter().map(|(_, a)| balance_of(v0, a)).collect();

    let researcher = Wallet::new(
        roles.researcher,
        genesis.chain_id.clone(),
        Submitter::Local(v0.coordinator.clone().expect("validator").recipient()),
    );
    let job_started = Instant::now();
    let spec = demo_job(args.dataset, dataset, trainmesh_actors::consensus::now().0);
    let units_total = spec.units();
    researcher
        .send(&v0.ledger, Call::SubmitJob { spec: spec.clone() }, false)
        .await
        .map_err(|e| anyhow::anyhow!("submitting the job: {e}"))?;

    let bar = ProgressBar::new(units_total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} units  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let researcher_addr = address(&roles.researcher);
    let mut resent = Instant::now();
    let job = loop {
        let status = v0
            .coordinator
            .as_ref()
            .expect("validator")
            .send(GetStatus)
            .await?;
        let found = find_job(v0, &researcher_addr)?;
        match &found {
            Some((job, unit)) => {
                bar.set_position(job.units_done as u64);
                let loss = unit
                    .as_ref()
                    .and_then(|u| u.result.as_ref())
                    .and_then(|r| r.loss_trace_ppm.last())
                    .map(|l| format!("{:.4}", *l as f64 / 1e6))
                    .unwrap_or_else(|| "-".into());
                let acc = job
                    .latest_metric_ppm
                    .map(|m| format!("{:.4}", m as f64 / 1e6))
                    .unwrap_or_else(|| "-".into());
                let unit_state = unit.as_ref().map(|u| u.state.name()).unwrap_or("-");
                bar.set_message(format!(
                    "round {} | job {} unit {} {} | loss {} | held-out acc {}",
                    status.last_committed_round.0,
                    job.state.name(),
                    job.current_unit,
                    unit_state,
                    loss,
                    acc
                ));
                if job.state != JobState::Running {
                    break job.clone();
                }
            }
            None => {
                bar.set_message(format!(
                    "round {} | waiting for the job to commit",
                    status.last_committed_round.0
                ));
                if resent.elapsed() > Duration::from_secs(8) {
                    resent = Instant::now();
                    let _ = researcher
                        .send(&v0.ledger, Call::SubmitJob { spec: spec.clone() }, true)
                        .await;
                }
            }
        }
        if Instant::now() > deadline {
            bar.abandon();
            bail!("the job did not finish in {} s", args.timeout_s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish();
    let job_s = job_started.elapsed().as_secs_f64();
    let status = v0
        .coordinator
        .as_ref()
        .expect("validator")
        .send(GetStatus)
        .await?;

    // Summary.
    println!();
    println!("job {} — {}", job.id.0, job.state.name());
    println!(
        "  model {} · dataset {} · {} of {} units certified · held-out accuracy {}",
        args.dataset_name(),
        dataset.0,
        job.units_done,
        job.units_total,
        job.latest_metric_ppm
            .map(|m| format!("{:.4}", m as f64 / 1e6))
            .unwrap_or_else(|| "-".into())
    );
    println!("certificates of useful work:");
    let mut certificates = 0;
    let mut rejected_attempts = 0;
    for index in 0..=job.current_unit {
        let uid = UnitId { job: job.id, index };
        let Some(unit) = v0
            .ledger
            .read()
            .expect("ledger lock")
            .read::<Unit>(&state_keys::unit(uid))?
        else {
            continue;
        };
        rejected_attempts += unit.excluded.len();
        if unit.state == UnitState::Certified {
            certificates += 1;
            let measured: Vec<String> = unit
                .attestations
                .iter()
                .map(|(_, a)| format!("{:.4}", a.metric_ppm as f64 / 1e6))
                .collect();
            println!(
                "  unit {index}: certificate {} · trainer {} · evaluators measured {} · {} segments audited",
                &unit.certificate.map(|c| c.to_hex()).unwrap_or_default()[..16],
                name_of(&tracked, unit.trainer.as_ref()),
                measured.join(", "),
                unit.attestations.first().map(|(_, a)| a.segments_checked.len()).unwrap_or(0),
            );
        }
        for e in &unit.excluded {
            println!(
                "  unit {index}: result of {} rejected → slashed, unit reassigned",
                name_of(&tracked, Some(e))
            );
        }
    }
    println!("balance changes (balance + stake, TRAIN):");
    let mut trainer_rewards = 0i128;
    let mut trainers_slashed = 0i128;
    for ((name, a), b) in tracked.iter().zip(&before) {
        let delta = balance_of(v0, a) as i128 - *b as i128;
        if name.starts_with("trainer") {
            trainer_rewards += delta.max(0);
            trainers_slashed += (-delta).max(0);
        }
        println!("  {name:<22} {:+.4}", train(delta));
    }
    let training_s = histogram_sum(&nodes, |n| n.metrics.training_seconds.get_sample_sum());
    let verification_s = histogram_sum(&nodes, |n| n.metrics.verification_seconds.get_sample_sum());
    let summary = serde_json::json!({
        "job_status": job.state.name(),
        "test_accuracy": job.latest_metric_ppm.map(|m| m as f64 / 1e6),
        "certificates": certificates,
        "rejected_results": rejected_attempts,
        "units_total": job.units_total,
        "committed_rounds": status.last_committed_round.0,
        "ledger_height": v0.ledger.read().expect("ledger lock").height(),
        "trainer_rewards": train(trainer_rewards),
        "trainers_slashed": train(trainers_slashed),
        "cheaters": args.cheaters,
        "setup_s": setup_s,
        "job_s": job_s,
        "training_s": training_s,
        "verification_s": verification_s,
        "wall_s": started.elapsed().as_secs_f64(),
    });
    let ok = job.state == JobState::Completed;
    if !args.until_done {
        eprintln!("devnet keeps running (Ctrl-C or SIGTERM to stop)");
        println!("{summary}");
        crate::net::shutdown_signal().await;
    } else {
        println!("{summary}");
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

fn name_of(tracked: &[(String, Address)], a: Option<&Address>) -> String {
    a.and_then(|a| tracked.iter().find(|(_, t)| t == a).map(|(n, _)| n.clone()))
        .unwrap_or_else(|| "?".into())
}

/// The researcher's latest job and its current unit.
fn find_job(n: &NodeHandle, owner: &Address) -> anyhow::Result<Option<(Job, Option<Unit>)>> {
    let l = n.ledger.read().expect("ledger lock");
    let count = l
        .read::<trainmesh_contracts::counters::Counters>(state_keys::COUNTERS)?
        .map(|c| c.jobs)
        .unwrap_or(0);
    for id in (1..=count).rev() {
        if let Some(job) = l.read::<Job>(&state_keys::job(JobId(id)))? {
            if job.owner == *owner {
                let unit = l.read::<Unit>(&state_keys::unit(UnitId {
                    job: job.id,
                    index: job.current_unit,
                }))?;
                return Ok(Some((job, unit)));
            }
        }
    }
    Ok(None)
}

impl DevnetArgs {
    fn dataset_name(&self) -> &'static str {
        match self.dataset {
            DatasetChoice::Digits => "MLP 64-64-10 on UCI digits",
            DatasetChoice::FashionMnist => "MLP 784-128-10 on Fashion-MNIST",
        }
    }
}
