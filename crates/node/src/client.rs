//! `trainmesh job submit`: joins the network as a light node (a follower with no role), signs and
//! submits a job, and with `--wait` follows it to the end; the last line is one JSON object.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use trainmesh_actors::mesh_config::MeshConfig;
use trainmesh_actors::node::{self, LocalConsensusConfig, NodeSpec};
use trainmesh_contracts::datasets::Dataset;
use trainmesh_contracts::jobs::{Job, JobSpec, JobState};
use trainmesh_contracts::{keys as state_keys, Address, Call, DatasetId, JobId};

use crate::config::parse_peer_addr;
use crate::devnet::{demo_job, DatasetChoice};
use crate::net::{free_port, loopback};

#[derive(clap::Subcommand, Debug)]
pub enum JobCommand {
    /// Submit a job (the demo job on the latest attached dataset unless `--spec` is given).
    Submit(SubmitArgs),
    /// A job's state, units and metric, from a node's gateway.
    Status(GatewayJobArgs),
    /// Follow a job on a node's gateway until it ends (a progress bar on stderr).
    Wait(GatewayJobArgs),
    /// Download a job's certified weights (safetensors), checked against the ledger's hash. The
    /// gateway serves them to the job's owner: the request is signed with its key.
    Download {
        #[command(flatten)]
        job: GatewayJobArgs,
        #[arg(long)]
        out: PathBuf,
        /// The job owner's key file.
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
pub struct GatewayJobArgs {
    /// The gateway, e.g. http://127.0.0.1:8080
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub gateway: String,
    #[arg(long)]
    pub id: u64,
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
}

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// Submit through this gateway (the default), e.g. http://127.0.0.1:8080 ...
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub gateway: String,
    /// ... or join the network as a light node through these validators
    /// (`/ip4/…/tcp/…/p2p/<peer id>`; repeat), with the network's genesis.
    #[arg(long = "bootstrap", requires = "genesis")]
    pub bootstrap: Vec<String>,
    #[arg(long)]
    pub genesis: Option<PathBuf>,
    /// The researcher's key file (pays the budget).
    #[arg(long)]
    pub key: PathBuf,
    /// The dataset (default: the newest attached).
    #[arg(long)]
    pub dataset: Option<u64>,
    /// A job spec as JSON (default: the demo MLP on the digits).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Submit only once this many workers are registered (and so bonded) on the ledger: a
    /// network just started has its trainers and evaluators registering.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Follow the job until it ends.
    #[arg(long)]
    pub wait: bool,
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
}

/// GET `path` from a gateway; a gateway error becomes its code and message.
pub fn get(gateway: &str, path: &str) -> anyhow::Result<ureq::Response> {
    let url = format!("{}{path}", gateway.trim_end_matches('/'));
    reply(
        &url,
        ureq::get(&url).timeout(Duration::from_secs(30)).call(),
    )
}

/// `request` signed by `key` as the gateway's signed routes take it: `X-Trainmesh-Key`,
/// `X-Trainmesh-Time` (now, ms) and `X-Trainmesh-Signature` of `message(time)`.
pub fn signed(
    request: ureq::Request,
    key: &trainmesh_ledger::AccountKey,
    message: impl FnOnce(u64) -> Vec<u8>,
) -> ureq::Request {
    let time = crate::gateway::wall_clock_ms();
    request
        .set("X-Trainmesh-Key", &hex::encode(key.public_key()))
        .set("X-Trainmesh-Time", &time.to_string())
        .set(
            "X-Trainmesh-Signature",
            &hex::encode(key.sign_message(&message(time))),
        )
}

/// A gateway's answer to a request for `url`; an error status becomes its code and message.
pub fn reply(url: &str, r: Result<ureq::Response, ureq::Error>) -> anyhow::Result<ureq::Response> {
    match r {
        Ok(r) => Ok(r),
        Err(ureq::Error::Status(status, r)) => {
            let body: serde_json::Value = r.into_json().unwrap_or_default();
            bail!(
                "{url}: {status} {}: {}",
                body["code"].as_str().unwrap_or("error"),
                body["message"].as_str().unwrap_or("")
            )
        }
        Err(e) => bail!("{url}: {e}"),
    }
}

fn job_json(args: &GatewayJobArgs) -> anyhow::Result<serde_json::Value> {
    Ok(get(&args.gateway, &format!("/v1/jobs/{}", args.id))?.into_json()?)
}

fn job_summary(v: &serde_json::Value) -> serde_json::Value {
    let job = &v["job"];
    serde_json::json!({
        "job": job["id"],
        "job_status": job["state"].as_str().map(str::to_lowercase),
        "units_done": job["units_done"],
        "units_total": job["units_total"],
        "test_accuracy": job["latest_metric_ppm"].as_f64().map(|m| m / 1e6),
        "checkpoint": job["latest_checkpoint"],
    })
}

/// Follows a job on a gateway until it ends, with a progress bar on stderr; returns its last view.
fn wait_job(args: &GatewayJobArgs) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let mut v = job_json(args)?;
    let total = v["job"]["units_total"].as_u64().unwrap_or(0);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} units  {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    while v["job"]["state"] == "Running" {
        if Instant::now() > deadline {
            bar.abandon();
            bail!("job {} did not finish in {} s", args.id, args.timeout_s);
        }
        bar.set_position(v["job"]["units_done"].as_u64().unwrap_or(0));
        bar.set_message(format!(
            "held-out metric {}",
            v["job"]["latest_metric_ppm"]
                .as_f64()
                .map(|m| format!("{:.4}", m / 1e6))
                .unwrap_or_else(|| "-".into())
        ));
        std::thread::sleep(Duration::from_millis(500));
        v = job_json(args)?;
    }
    bar.set_position(v["job"]["units_done"].as_u64().unwrap_or(0));
    bar.finish();
    Ok(v)
}

/// Signs the job with the researcher's key and submits it through a gateway; waits for its
/// receipt (and, with `--wait`, for its end).
fn submit_via_gateway(args: &SubmitArgs) -> anyhow::Result<()> {
    let key = trainmesh_ledger::AccountKey::from_secret(crate::keys::read(&args.key)?);
    let dataset = match args.dataset {
        Some(id) => DatasetId(id),
        None => {
            let list: serde_json::Value = get(&args.gateway, "/v1/datasets")?.into_json()?;
            DatasetId(
                list[0]["id"]
                    .as_u64()
                    .context("no dataset is attached on the network")?,
            )
        }
    };
    let spec = job_spec(args.spec.as_deref(), dataset)?;
    let (tx_hash, events) = crate::dataset::submit_and_wait(
        &args.gateway,
        &key,
        Call::SubmitJob { spec },
        Duration::from_secs(args.timeout_s),
    )?;
    let id = events
        .iter()
        .find_map(|e| match e {
            trainmesh_contracts::Event::JobSubmitted { job, .. } => Some(job.0),
            _ => None,
        })
        .context("the receipt has no JobSubmitted event")?;
    eprintln!("job {id} submitted (transaction {tx_hash})");
    let view = GatewayJobArgs {
        gateway: args.gateway.clone(),
        id,
        timeout_s: args.timeout_s,
    };
    let v = if args.wait {
        wait_job(&view)?
    } else {
        job_json(&view)?
    };
    println!("{}", job_summary(&v));
    Ok(())
}

/// The job spec from a JSON file, or the demo MLP on the digits.
fn job_spec(path: Option<&std::path::Path>, dataset: DatasetId) -> anyhow::Result<JobSpec> {
    Ok(match path {
        Some(p) => serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("job spec {}", p.display()))?,
        None => demo_job(
            DatasetChoice::Digits,
            dataset,
            trainmesh_actors::consensus::now().0,
        ),
    })
}

pub fn run(command: JobCommand) -> anyhow::Result<()> {
    let args = match command {
        JobCommand::Submit(args) if args.bootstrap.is_empty() => {
            return submit_via_gateway(&args);
        }
        JobCommand::Submit(args) => args,
        JobCommand::Status(args) => {
            println!("{}", job_summary(&job_json(&args)?));
            return Ok(());
        }
        JobCommand::Wait(args) => {
            println!("{}", job_summary(&wait_job(&args)?));
            return Ok(());
        }
        JobCommand::Download { job, out, key } => {
            let key = trainmesh_ledger::AccountKey::from_secret(crate::keys::read(&key)?);
            let chain = get(&job.gateway, "/v1/status")?.into_json::<serde_json::Value>()?;
            let chain_id = chain["chain_id"]
                .as_str()
                .context("the status names no chain")?;
            let path = format!("/v1/jobs/{}/weights", job.id);
            let url = format!("{}{path}", job.gateway.trim_end_matches('/'));
            let request = ureq::get(&url).timeout(Duration::from_secs(30));
            let r = reply(
                &url,
                signed(request, &key, |time| {
                    crate::gateway::weights_request_message(chain_id, JobId(job.id), time)
                })
                .call(),
            )?;
            let expected = r
                .header("X-Checkpoint-Blake3")
                .map(str::to_string)
                .context("the gateway sent no checkpoint hash")?;
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(
                &mut r
                    .into_reader()
                    .take(trainmesh_gpu::checkpoint::CHECKPOINT_BYTES_MAX as u64),
                &mut bytes,
            )?;
            let got = blake3::hash(&bytes).to_hex().to_string();
            if got != expected {
                bail!("downloaded weights hash to {got}, the ledger certified {expected}");
            }
            std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{}",
                serde_json::json!({ "job": job.id, "path": out, "bytes": bytes.len(), "blake3": got })
            );
            return Ok(());
        }
    };
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    system.block_on(submit(args))
}

fn latest_dataset(n: &node::NodeHandle) -> anyhow::Result<Option<DatasetId>> {
    let l = n.ledger.read().expect("ledger lock");
    let count = l
        .read::<trainmesh_contracts::counters::Counters>(state_keys::COUNTERS)?
        .map(|c| c.datasets)
        .unwrap_or(0);
    Ok((count > 0)
        .then_some(DatasetId(count))
        .filter(|id| matches!(l.read::<Dataset>(&state_keys::dataset(*id)), Ok(Some(_)))))
}

fn registered_workers(n: &node::NodeHandle) -> anyhow::Result<usize> {
    let l = n.ledger.read().expect("ledger lock");
    Ok(l.read::<Vec<Address>>(state_keys::WORKERS)?
        .map_or(0, |w| w.len()))
}

fn job_of(n: &node::NodeHandle, owner: &Address, after: u64) -> anyhow::Result<Option<Job>> {
    let l = n.ledger.read().expect("ledger lock");
    let count = l
        .read::<trainmesh_contracts::counters::Counters>(state_keys::COUNTERS)?
        .map(|c| c.jobs)
        .unwrap_or(0);
    for id in (after + 1..=count).rev() {
        if let Some(job) = l.read::<Job>(&state_keys::job(JobId(id)))? {
            if job.owner == *owner {
                return Ok(Some(job));
            }
        }
    }
    Ok(None)
}

async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_s);
    let dir = tempfile::tempdir().context("creating a data directory")?;
    let secret = crate::keys::read(&args.key)?;
    let genesis = crate::genesis::read(args.genesis.as_deref().context("--genesis is needed")?)?;
    let handle = node::start(NodeSpec {
        name: "client".into(),
        data_dir: dir.path().to_path_buf(),
        genesis,
        account_secret: secret,
        consensus_secret: None,
        beacon_secret: None,
        listen: loopback(free_port()),
        bootstrap: args
            .bootstrap
            .iter()
            .map(|s| parse_peer_addr(s))
            .collect::<anyhow::Result<_>>()?,
        trainer: None,
        train_device: None,
        evaluator: None,
        equivocate: false,
        provider: None,
        local_consensus: LocalConsensusConfig::default(),
        mesh: MeshConfig::default(),
    })?;
    let me = handle.wallet.address;
    // Catch up with the ledger first (the nonce and the dataset come from it), and wait for the
    // workers asked for.
    let dataset = loop {
        let workers = registered_workers(&handle)?;
        if let (Some(d), true) = (latest_dataset(&handle)?, workers >= args.workers) {
            break d;
        }
        if Instant::now() > deadline {
            bail!(
                "no dataset attached, or {workers} of {} workers registered, in time",
                args.workers
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let spec = job_spec(
        args.spec.as_deref(),
        args.dataset.map_or(dataset, DatasetId),
    )?;
    let jobs_before = handle
        .ledger
        .read()
        .expect("ledger lock")
        .read::<trainmesh_contracts::counters::Counters>(state_keys::COUNTERS)?
        .map(|c| c.jobs)
        .unwrap_or(0);
    // One signed transaction, sent again (to the next validator) while it does not show: its
    // one nonce lets at most one copy commit.
    let tx = handle
        .wallet
        .sign_next(&handle.ledger, Call::SubmitJob { spec })
        .map_err(|e| anyhow::anyhow!("signing: {e}"))?
        .encode();
    let mut sent: Option<Instant> = None;
    let job = loop {
        if let Some(job) = job_of(&handle, &me, jobs_before)? {
            break job;
        }
        if sent.is_none_or(|t| t.elapsed() > Duration::from_secs(6)) {
            // Once it committed, a resend is a replay: the next look finds its receipt.
            match handle.wallet.submitter().submit(vec![tx.clone()]).await {
                Err(e) if e.code != "nonce_replayed" => bail!("submitting: {e}"),
                _ => {}
            }
            sent = Some(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("the job was not committed in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("job {} submitted ({} units)", job.id.0, job.units_total);
    let mut job = job;
    if args.wait {
        let mut last = None;
        while job.state == JobState::Running {
            if Instant::now() > deadline {
                bail!("job {} did not finish in {} s", job.id.0, args.timeout_s);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            job = handle
                .ledger
                .read()
                .expect("ledger lock")
                .read::<Job>(&state_keys::job(job.id))?
                .context("the job vanished")?;
            if last != Some(job.units_done) {
                last = Some(job.units_done);
                eprintln!(
                    "job {}: {} of {} units certified, held-out metric {:?}",
                    job.id.0, job.units_done, job.units_total, job.latest_metric_ppm
                );
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "job": job.id.0,
            "job_status": job.state.name(),
            "units_done": job.units_done,
            "units_total": job.units_total,
            "test_accuracy": job.latest_metric_ppm.map(|m| m as f64 / 1e6),
            "ledger_height": handle.ledger.read().expect("ledger lock").height(),
            "wall_s": started.elapsed().as_secs_f64(),
        })
    );
    handle.stop();
    actix::System::current().stop();
    Ok(())
}
