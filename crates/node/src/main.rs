//! `trainmesh`: the node binary.
//!
//! Layout:
//! - `main.rs` — the command line
//! - [`devnet`] — `trainmesh devnet`: a whole network in one process, a demo job end to end
//! - [`config`] — `trainmesh node --config node.toml`: one node of a real network; its status file
//! - [`bench`] — `trainmesh bench consensus`: validators as processes over libp2p
//! - [`client`] — `trainmesh job submit|status|wait|download`: through a gateway, or a light node
//! - [`dataset`] — `trainmesh dataset prepare|attach|list`: shards, uploads, the signed attachment
//! - [`gateway`] — the HTTP gateway (`/v1`, job events, dry runs), the explorer (`/`) and
//!   Prometheus metrics (`/metrics`)
//! - [`uploads`], [`submission`] — what clients upload and submit, and its checks (in the
//!   library, `src/lib.rs`, which the fuzz targets share)
//! - [`net`] — loopback addresses, the shutdown signal
//! - [`genesis`] — `trainmesh genesis new`
//! - [`gpu`] — `trainmesh gpu check`: adapter, conformance, measured throughput
//! - [`keys`] — key files

mod bench;
mod client;

/// mimalloc keeps freed pages for reuse: glibc returns a training step's large buffers to the
/// kernel and faults them in again, zeroed, on the next step (a quarter of a transformer step).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
mod config;
mod dataset;
mod devnet;
mod gateway;
mod genesis;
mod gpu;
mod keys;
mod net;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use trainmesh_node::{submission, uploads};

#[derive(Parser, Debug)]
#[command(
    name = "trainmesh",
    version,
    about = "A network that pays for useful training work"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A whole network on this machine: validators, trainers, evaluators, a data provider,
    /// and a demo job from submission to certified, paid result.
    Devnet(devnet::DevnetArgs),
    /// Run one node from its config file.
    Node {
        #[arg(long)]
        config: PathBuf,
    },
    /// Key files.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Genesis files.
    Genesis {
        #[command(subcommand)]
        command: GenesisCommand,
    },
    /// Benchmarks over the real network.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Jobs: submit (through a light node that joins the network), follow and download (through
    /// a node's gateway).
    Job {
        #[command(subcommand)]
        command: client::JobCommand,
    },
    /// Datasets: prepare shards, upload them to a node's gateway and attach them on the ledger.
    Dataset {
        #[command(subcommand)]
        command: dataset::DatasetCommand,
    },
    /// This machine's GPU: adapter, conformance, measured throughput.
    Gpu {
        #[command(subcommand)]
        command: gpu::GpuCommand,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Write a fresh ed25519 secret to a file; print its public key and account address.
    New {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum GenesisCommand {
    New(genesis::GenesisArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devnet(args) => devnet::run(args),
        Command::Node { config } => config::run(&config),
        Command::Keys {
            command: KeysCommand::New { out },
        } => new_key(&out),
        Command::Genesis {
            command: GenesisCommand::New(args),
        } => genesis::new(args),
        Command::Job { command } => client::run(command),
        Command::Dataset { command } => dataset::run(command),
        Command::Bench { command } => bench::run(command),
        Command::Gpu { command } => gpu::run(command),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn new_key(out: &std::path::Path) -> anyhow::Result<()> {
    if out.exists() {
        anyhow::bail!("{} exists; refusing to overwrite a key", out.display());
    }
    let secret = keys::generate();
    keys::write(out, &secret)?;
    let public = trainmesh_actors::node::public_key(&secret);
    let peer = trainmesh_actors::network::peer_id(&public)?;
    println!(
        "{}",
        serde_json::json!({
            "public_key": hex::encode(public),
            "address": trainmesh_contracts::Address::from_public_key(&public).to_hex(),
            "peer_id": peer.to_string(),
        })
    );
    Ok(())
}
