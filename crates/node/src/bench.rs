//! `trainmesh bench consensus`: the consensus benchmark with every validator a separate process,
//! talking over libp2p on loopback (TCP + noise + yamux), each with its redb DAG store. Each
//! validator's client submits its share of the offered load to its own mempool; every transaction
//! carries its submission time and origin, so each validator measures the commit latency of its
//! own transactions; validator 0 counts what is committed in the measured window.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use anyhow::{bail, Context as _};
use bytes::Bytes;
use trainmesh_actors::consensus::{now, PeerBook};
use trainmesh_actors::coordinator::{
    Committed, ConsensusInbound, Coordinator, CoordinatorWiring, GetStatus, SubmitTransactions,
};
use trainmesh_actors::inbound::InboundReceiver;
use trainmesh_actors::mesh_config::MeshConfig;
use trainmesh_actors::metrics::NodeMetrics;
use trainmesh_actors::network::{self, NetworkConfig, NetworkEvent};
use trainmesh_actors::node::LocalConsensusConfig;
use trainmesh_actors::wire::{self, CHANNEL_CONSENSUS};
use trainmesh_contracts::{Address, Amount, Genesis, GenesisValidator, Hash32, Params};
use trainmesh_dag::{
    ConsensusParams, ConsensusStore, Core, KeyPair, MemStore, RedbStore, Validator,
};
use trainmesh_ledger::admission::Source;

use crate::net::{free_port, loopback};

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Validators as separate processes over libp2p; prints a summary and one JSON line.
    Consensus(ConsensusArgs),
    /// One validator of `bench consensus` (started by it).
    #[command(hide = true)]
    ConsensusValidator(ValidatorArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ConsensusArgs {
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Bytes per transaction (at least 16: submission time, origin, sequence).
    #[arg(long, default_value_t = 512)]
    pub tx_size: usize,
    /// Offered load, transactions per second, over all validators.
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Warm-up excluded from the measurements (default: max(2 s, 10% of the run)).
    #[arg(long)]
    pub warmup: Option<f64>,
    /// The genesis `header_payload_bytes_max` of the benchmark's network (the network's default
    /// is 500 kB). A round carries at most this much payload per validator, so the round rate
    /// times this bounds throughput: with every payload written durably before it is voted on,
    /// 1 MB keeps that bound well above the offered load on a slow shared disk.
    #[arg(long, default_value_t = 1_000_000)]
    pub header_bytes: usize,
    #[arg(long, default_value_t = 50)]
    pub max_header_delay_ms: u64,
    #[arg(long, default_value_t = 1_000)]
    pub leader_timeout_ms: u64,
    /// The validators' DAG store: `memory` (as the in-process benchmark) or `redb` (durable,
    /// as a real node).
    #[arg(long, value_enum, default_value_t = StoreKind::Memory)]
    pub store: StoreKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Memory,
    Redb,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ValidatorArgs {
    #[command(flatten)]
    pub common: ConsensusArgs,
    #[arg(long)]
    pub index: usize,
    /// Comma-separated listen ports of every validator.
    #[arg(long)]
    pub ports: String,
    /// Wall-clock ms at which every validator starts its load.
    #[arg(long)]
    pub start_at_ms: u64,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub data_dir: PathBuf,
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Consensus(args) => parent(args),
        BenchCommand::ConsensusValidator(args) => validator(args),
    }
}

fn secret(i: usize) -> [u8; 32] {
    crate::keys::derived(&format!("bench-validator-{i}"))
}

/// The benchmark's genesis: its validators, and the consensus parameters of its arguments (the
/// same for every validator process, as a network's genesis is).
fn genesis(a: &ConsensusArgs) -> Genesis {
    Genesis {
        chain_id: "bench".into(),
        genesis_time_ms: 0,
        accounts: vec![],
        validators: (0..a.validators)
            .map(|i| GenesisValidator {
                address: Address::from_public_key(&trainmesh_actors::node::public_key(&secret(i))),
                consensus_key: Hash32(trainmesh_actors::node::public_key(&secret(i))),
                stake: Amount::from_train(1_000),
            })
            .collect(),
        params: Params::default(),
        consensus: ConsensusParams {
            header_payload_bytes_max: a.header_bytes as u64,
            leader_timeout_ms: a.leader_timeout_ms,
            ..ConsensusParams::default()
        },
        beacon: None,
    }
}

fn warmup(a: &ConsensusArgs) -> f64 {
    a.warmup.unwrap_or((a.seconds * 0.1).max(2.0))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn parent(args: ConsensusArgs) -> anyhow::Result<()> {
    if args.validators < 4 {
        bail!("at least 4 validators");
    }
    if args.tx_size < 16 {
        bail!("transactions of at least 16 bytes");
    }
    if warmup(&args) >= args.seconds {
        bail!("the warm-up must be shorter than the run");
    }
    let dir = tempfile::tempdir()?;
    let ports: Vec<String> = (0..args.validators)
        .map(|_| free_port().to_string())
        .collect();
    let start_at = now().0 + 3_000;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for i in 0..args.validators {
        let out = dir.path().join(format!("v{i}.json"));
        let child = Command::new(&exe)
            .arg("bench")
            .arg("consensus-validator")
            .args(["--validators", &args.validators.to_string()])
            .args(["--tx-size", &args.tx_size.to_string()])
            .args(["--rate", &args.rate.to_string()])
            .args(["--seconds", &args.seconds.to_string()])
            .args(["--warmup", &warmup(&args).to_string()])
            .args(["--header-bytes", &args.header_bytes.to_string()])
            .args([
                "--max-header-delay-ms",
                &args.max_header_delay_ms.to_string(),
            ])
            .args(["--leader-timeout-ms", &args.leader_timeout_ms.to_string()])
            .args([
                "--store",
                match args.store {
                    StoreKind::Memory => "memory",
                    StoreKind::Redb => "redb",
                },
            ])
            .args(["--index", &i.to_string()])
            .args(["--ports", &ports.join(",")])
            .args(["--start-at-ms", &start_at.to_string()])
            .arg("--out")
            .arg(&out)
            .arg("--data-dir")
            .arg(dir.path().join(format!("v{i}")))
            .stdout(Stdio::null())
            .spawn()
            .context("starting a validator process")?;
        children.push((child, out));
    }
    let mut reports = Vec::new();
    for (mut child, out) in children {
        let status = child.wait()?;
        if !status.success() {
            bail!("a validator process failed: {status}");
        }
        let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
        reports.push(r);
    }
    let measured = args.seconds - warmup(&args);
    let committed = reports[0]["committed_in_window"].as_u64().unwrap_or(0);
    let committed_tps = committed as f64 / measured;
    let mut latencies: Vec<f64> = reports
        .iter()
        .flat_map(|r| {
            r["latency_samples_ms"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|v| v.as_f64())
        .collect();
    latencies.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let sent: u64 = reports
        .iter()
        .map(|r| r["sent"].as_u64().unwrap_or(0))
        .sum();
    let refused: u64 = reports
        .iter()
        .map(|r| r["refused"].as_u64().unwrap_or(0))
        .sum();
    let own_sent: u64 = reports
        .iter()
        .map(|r| r["own_sent_in_window"].as_u64().unwrap_or(0))
        .sum();
    let own_committed: u64 = reports
        .iter()
        .map(|r| r["own_committed_in_window"].as_u64().unwrap_or(0))
        .sum();
    let (agree, commits_compared) = agreement(&reports);
    let store = match args.store {
        StoreKind::Memory => "memory (no fsync)",
        StoreKind::Redb => "redb (one fsync per group commit)",
    };
    println!("-----------------------------------------");
    println!(" SUMMARY (libp2p, one process per validator):");
    println!("-----------------------------------------");
    println!(" + CONFIG:");
    println!(
        " Validators: {} processes on loopback (TCP + noise + yamux), DAG stores: {store}",
        args.validators
    );
    println!(
        " Input rate: {} tx/s; transaction size: {} B",
        args.rate, args.tx_size
    );
    println!(
        " Run: {} s, of which warm-up {} s",
        args.seconds,
        warmup(&args)
    );
    println!(
        " Header size: {} B; max header delay: {} ms; leader timeout: {} ms",
        args.header_bytes, args.max_header_delay_ms, args.leader_timeout_ms
    );
    println!();
    println!(" + RESULTS:");
    println!(" Committed TPS: {committed_tps:.0} tx/s");
    println!(
        " Committed BPS: {:.1} MB/s",
        committed_tps * args.tx_size as f64 / 1e6
    );
    println!(
        " Commit latency: p50 {p50:.0} ms, p99 {p99:.0} ms ({} samples)",
        latencies.len()
    );
    println!(" Sent {sent} tx, refused by full mempools {refused}");
    println!(
        " Of the ~{own_sent} tx sent in the measured window, {own_committed} committed by the end (3 s after it)"
    );
    println!(
        " Commit sequences agree: {agree} (every pair over all the commits both made; {commits_compared} at the least)"
    );
    for r in &reports {
        println!(
            "   validator {}: sent {} tx (refused {}), {} commits, last committed round {}",
            r["index"], r["sent"], r["refused"], r["commits"], r["last_committed_round"]
        );
    }
    println!("-----------------------------------------");
    println!(
        "{}",
        serde_json::json!({
            "mode": "libp2p-processes",
            "store": format!("{:?}", args.store).to_lowercase(),
            "store_durability": store,
            "validators": args.validators,
            "tx_size": args.tx_size,
            "input_rate": args.rate,
            "seconds": args.seconds,
            "warmup_seconds": warmup(&args),
            "committed_tps": committed_tps.round(),
            "committed_mb_per_s": (committed_tps * args.tx_size as f64 / 1e4).round() / 100.0,
            "p50_commit_latency_ms": p50.round(),
            "p99_commit_latency_ms": p99.round(),
            "latency_samples": latencies.len(),
            "sent_txs": sent,
            "refused_txs": refused,
            "window_sent_txs": own_sent,
            "window_committed_txs": own_committed,
            "agreement": agree,
            "commits_compared": commits_compared,
        })
    );
    if !agree {
        anyhow::bail!("validators committed different sequences");
    }
    Ok(())
}

/// Whether every pair of validators committed the same sequence over all the commits both made
/// (their running hashes at the shorter length are equal), and the fewest commits compared.
fn agreement(reports: &[serde_json::Value]) -> (bool, usize) {
    let chains: Vec<Vec<&str>> = reports
        .iter()
        .map(|r| {
            r["commit_chain"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default()
        })
        .collect();
    let mut agree = true;
    let mut compared = usize::MAX;
    for (i, a) in chains.iter().enumerate() {
        for b in &chains[i + 1..] {
            let n = a.len().min(b.len());
            compared = compared.min(n);
            if n > 0 && a[n - 1] != b[n - 1] {
                agree = false;
            }
        }
    }
    (agree, if compared == usize::MAX { 0 } else { compared })
}

/// What one validator process measures.
#[derive(Default)]
struct Stats {
    committed_in_window: u64,
    own_committed: u64,
    commits: u64,
    latencies_ms: Vec<f64>,
    /// A running hash over every commit so far, one per commit: entry k covers commits 0..=k,
    /// so two validators agree on everything they both committed iff their entries at the
    /// shorter length are equal.
    chain: Vec<String>,
}
const LATENCY_SAMPLES_MAX: usize = 20_000;

struct Sink {
    me: u32,
    window: (u64, u64),
    stats: Arc<Mutex<Stats>>,
    seen: u64,
    /// Keep every `sample_every`-th own transaction: spread over the whole window.
    sample_every: u64,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Committed> for Sink {
    type Result = ();

    fn handle(&mut self, msg: Committed, _: &mut Context<Self>) {
        let t = now().0;
        let mut s = self.stats.lock().expect("stats lock");
        s.commits += 1;
        // The chain covers each commit byte for byte without re-encoding its payload: a
        // certificate's digest, computed here from the bytes received, covers its header,
        // payload and author's signature; its votes are added whole.
        let d = &msg.0;
        let certificates: Vec<_> = d
            .certificates
            .iter()
            .map(|c| (c.digest(), c.votes()))
            .collect();
        let mut h = blake3::Hasher::new();
        h.update(s.chain.last().map_or(&b""[..], |p| p.as_bytes()));
        h.update(&trainmesh_dag::encoding::encode(&(
            d.index,
            &d.leader,
            d.timestamp,
            certificates,
        )));
        s.chain.push(h.finalize().to_hex().to_string());
        let in_window = t >= self.window.0 && t < self.window.1;
        for tx in msg.0.transactions() {
            if tx.len() < 16 {
                continue;
            }
            if in_window {
                s.committed_in_window += 1;
            }
            let origin = u32::from_le_bytes(tx[8..12].try_into().expect("4 bytes"));
            let sent = u64::from_le_bytes(tx[0..8].try_into().expect("8 bytes"));
            if origin == self.me && sent >= self.window.0 && sent < self.window.1 {
                self.seen += 1;
                s.own_committed += 1;
                if self.seen.is_multiple_of(self.sample_every)
                    && s.latencies_ms.len() < LATENCY_SAMPLES_MAX
                {
                    s.latencies_ms.push(t.saturating_sub(sent) as f64);
                }
            }
        }
    }
}

/// One validator process. Its network and client share one tokio worker (the coordinator has
/// its own arbiter thread, store writes a blocking thread): the benchmark runs every validator
/// on one machine, and more workers per process than the machine has cores to spare only adds
/// thread hand-offs.
fn validator(args: ValidatorArgs) -> anyhow::Result<()> {
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    system.block_on(validator_async(args))
}

async fn validator_async(args: ValidatorArgs) -> anyhow::Result<()> {
    let c = &args.common;
    let n = c.validators;
    let committee = trainmesh_actors::node::committee_of(&genesis(c))?;
    let peers = PeerBook::new(&committee)?;
    let ports: Vec<u16> = args
        .ports
        .split(',')
        .map(|p| p.parse())
        .collect::<Result<_, _>>()
        .context("--ports")?;
    let (net, events) = network::spawn(NetworkConfig {
        secret_key: secret(args.index),
        listen: loopback(ports[args.index]),
        bootstrap: (0..n)
            .filter(|j| *j != args.index)
            .map(|j| {
                (
                    peers.peer(trainmesh_dag::AuthorityIndex(j as u32)),
                    loopback(ports[j]),
                )
            })
            .collect(),
        topics: vec![],
        validate: Arc::new(|_| true),
        mesh: MeshConfig::default(),
        metrics: NodeMetrics::new(),
    })?;
    std::fs::create_dir_all(&args.data_dir)?;
    match c.store {
        StoreKind::Memory => run_validator(args.clone(), MemStore::new(), peers, net, events).await,
        StoreKind::Redb => {
            let store = RedbStore::open(args.data_dir.join("dag.redb"))?;
            run_validator(args.clone(), store, peers, net, events).await
        }
    }
}

async fn run_validator<S: ConsensusStore + Unpin + Send + 'static>(
    args: ValidatorArgs,
    store: S,
    peers: PeerBook,
    net: tokio::sync::mpsc::Sender<trainmesh_actors::network::NetworkCommand>,
    events: InboundReceiver,
) -> anyhow::Result<()> {
    let c = &args.common;
    let n = c.validators;
    let genesis = genesis(c);
    genesis
        .validate()
        .map_err(|e| anyhow::anyhow!("benchmark parameters: {e}"))?;
    let committee = trainmesh_actors::node::committee_of(&genesis)?;
    let me = trainmesh_dag::AuthorityIndex(args.index as u32);
    let config = LocalConsensusConfig {
        max_header_delay_ms: c.max_header_delay_ms,
        ..LocalConsensusConfig::default()
    }
    .core_config(&genesis);
    let (core, startup) = Core::new(
        config.clone(),
        committee.clone(),
        me,
        KeyPair::from_secret_bytes(&secret(args.index)),
        store,
        now(),
    )?;
    let window_start = args.start_at_ms + (warmup(c) * 1_000.0) as u64;
    let window_end = args.start_at_ms + (c.seconds * 1_000.0) as u64;
    let stats = Arc::new(Mutex::new(Stats::default()));
    let sink = Sink {
        me: me.0,
        window: (window_start, window_end),
        stats: stats.clone(),
        seen: 0,
        sample_every: ((c.rate as f64 / n as f64 * (c.seconds - warmup(c)))
            / LATENCY_SAMPLES_MAX as f64)
            .ceil()
            .max(1.0) as u64,
    }
    .start();
    let arbiter = Arbiter::new();
    let wiring = CoordinatorWiring {
        validator: Validator::new(committee.clone(), config),
        peers: peers.clone(),
        net: net.clone(),
        ledger: sink.recipient(),
        sync: None,
        replay_from: 0,
        retain_commits: u64::MAX,
        beacon: None,
        reports: None,
        admission: None,
        equivocate: None,
        metrics: NodeMetrics::new(),
    };
    let coordinator = Coordinator::new(core, startup, wiring);
    let coordinator = Coordinator::start_in_arbiter(&arbiter.handle(), |_| coordinator);
    // Network events to the coordinator.
    let inbound = coordinator.clone();
    let book = peers.clone();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let NetworkEvent::Message { from, bytes } = e {
                if let (Ok((CHANNEL_CONSENSUS, _)), Some(a)) =
                    (wire::split(&bytes), book.authority(&from))
                {
                    inbound.do_send(ConsensusInbound {
                        from: a,
                        bytes: bytes.slice(1..),
                    });
                }
            }
        }
    });
    // The client: this validator's share of the load, every 10 ms, from the common start.
    let wait = args.start_at_ms.saturating_sub(now().0);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let per_tick = (c.rate as f64 / n as f64 / 100.0).max(1.0);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let (mut sent, mut refused, mut seq, mut owed) = (0u64, 0u64, 0u32, 0.0f64);
    while now().0 < window_end {
        tick.tick().await;
        owed += per_tick;
        let count = owed.floor() as usize;
        owed -= count as f64;
        let t = now().0;
        let txs: Vec<Bytes> = (0..count)
            .map(|_| {
                let mut tx = vec![0u8; c.tx_size];
                tx[0..8].copy_from_slice(&t.to_le_bytes());
                tx[8..12].copy_from_slice(&me.0.to_le_bytes());
                tx[12..16].copy_from_slice(&seq.to_le_bytes());
                seq = seq.wrapping_add(1);
                Bytes::from(tx)
            })
            .collect();
        sent += count as u64;
        match coordinator
            .send(SubmitTransactions(txs, Source::Local))
            .await
        {
            Ok(answers) => refused += answers.iter().filter(|a| a.is_err()).count() as u64,
            Err(_) => refused += count as u64,
        }
    }
    // Let the last transactions commit.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = coordinator.send(GetStatus).await?;
    let mut s = stats.lock().expect("stats lock");
    let own_in_window =
        ((window_end - window_start) as f64 / 1_000.0 * c.rate as f64 / n as f64) as u64;
    let report = serde_json::json!({
        "index": args.index,
        "own_committed_in_window": s.own_committed,
        "own_sent_in_window": own_in_window,
        "sent": sent,
        "refused": refused,
        "committed_in_window": s.committed_in_window,
        "commits": s.commits,
        "last_committed_round": status.last_committed_round.0,
        "commit_chain": std::mem::take(&mut s.chain),
        "latency_samples_ms": std::mem::take(&mut s.latencies_ms),
    });
    std::fs::write(&args.out, report.to_string())?;
    arbiter.stop();
    actix::System::current().stop();
    Ok(())
}
