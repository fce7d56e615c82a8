//! `trainmesh dataset prepare|attach|list`: a data provider cuts a dataset into content-addressed
//! shards (a training split and a held-out split) and a manifest, uploads them to a node's
//! gateway, which keeps and serves them, and attaches the dataset on the ledger with a signed
//! transaction. The key never leaves this process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use trainmesh_contracts::datasets::DatasetSpec;
use trainmesh_contracts::{Amount, Call, Event, Hash32};
use trainmesh_gpu::dataset::{decode_shard, shard_dataset, Samples, ShardStore};
use trainmesh_gpu::hash::Hash32 as BlobHash;
use trainmesh_gpu::tokens::{shard_tokens, Tokens, BYTES_TOKENIZER};
use trainmesh_ledger::AccountKey;

use crate::devnet::DatasetChoice;

#[derive(clap::Subcommand, Debug)]
pub enum DatasetCommand {
    /// Cut a dataset into shards (train and held-out) and a `manifest.json` in a directory.
    Prepare(PrepareArgs),
    /// Upload a prepared dataset to a node's gateway and attach it on the ledger.
    Attach(AttachArgs),
    /// The datasets attached on the ledger.
    List {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        gateway: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct PrepareArgs {
    /// A bundled or installed dataset.
    #[arg(long, value_enum, conflicts_with_all = ["digits_csv", "idx_images", "text"])]
    pub dataset: Option<DatasetChoice>,
    /// Text files (UTF-8 for a BPE tokenizer), in this order, for a language model: tokenized,
    /// cut into token shards of `--tokens-per-shard`, a seeded share of the shards held out.
    #[arg(long, num_args = 1.., conflicts_with_all = ["digits_csv", "idx_images"])]
    pub text: Vec<PathBuf>,
    /// How `--text` becomes token ids: `bytes` (one id per byte, vocabulary 256) or
    /// `bpe:FILE` (a Hugging Face `tokenizer.json`; the manifest names it by its BLAKE3).
    #[arg(long, default_value = "bytes")]
    pub tokenizer: String,
    #[arg(long, default_value_t = 1 << 20)]
    pub tokens_per_shard: usize,
    /// A CSV in the UCI digits layout (64 pixel values in 0..=16, then the label), maybe gzipped.
    #[arg(long)]
    pub digits_csv: Option<PathBuf>,
    /// IDX image and label files (as MNIST ships them), maybe gzipped.
    #[arg(long, requires = "idx_labels")]
    pub idx_images: Option<PathBuf>,
    #[arg(long, requires = "idx_images")]
    pub idx_labels: Option<PathBuf>,
    /// Classes of an IDX dataset.
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 256)]
    pub samples_per_shard: usize,
    #[arg(long, default_value_t = 0.2)]
    pub heldout_fraction: f64,
    /// Seeds the shuffle that picks the held-out samples.
    #[arg(long, default_value_t = 11)]
    pub seed: u64,
}

#[derive(clap::Args, Debug)]
pub struct AttachArgs {
    /// A directory written by `dataset prepare`.
    #[arg(long)]
    pub dir: PathBuf,
    /// The provider's key file (signs the attachment; is paid per certified use).
    #[arg(long)]
    pub key: PathBuf,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub gateway: String,
    #[arg(long, default_value = "")]
    pub licence: String,
    /// Paid to the provider per certified use, in base units (1 TRAIN = 10⁹).
    #[arg(long, default_value_t = 0)]
    pub price_per_use: u128,
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
}

/// `manifest.json` of a prepared dataset: the body the gateway's manifest route takes, once its
/// provider signs it (`attach` does).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreparedManifest {
    pub name: String,
    pub features: u32,
    pub classes: u32,
    pub train: Vec<String>,
    pub heldout: Vec<String>,
    /// A text dataset's tokenizer (`bytes` or `bpe:<BLAKE3 hex>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
}

impl PreparedManifest {
    /// The manifest request `key` signs: its public key and its signature of both roots.
    pub fn signed(&self, key: &AccountKey) -> anyhow::Result<crate::uploads::ManifestRequest> {
        let root = |list: &[String]| -> anyhow::Result<Hash32> {
            let hashes = list
                .iter()
                .map(|h| {
                    let bytes: [u8; 32] = hex::decode(h)
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .with_context(|| format!("{h:?} is not a 32-byte hex hash"))?;
                    Ok(BlobHash(bytes))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(Hash32(trainmesh_gpu::hash::merkle_root(&hashes).0))
        };
        let message = trainmesh_contracts::datasets::manifest_message(
            &root(&self.train)?,
            &root(&self.heldout)?,
        );
        Ok(crate::uploads::ManifestRequest {
            name: self.name.clone(),
            features: self.features,
            classes: self.classes,
            train: self.train.clone(),
            heldout: self.heldout.clone(),
            tokenizer: self.tokenizer.clone(),
            provider: hex::encode(key.public_key()),
            signature: hex::encode(key.sign_message(&message)),
        })
    }
}

pub fn run(command: DatasetCommand) -> anyhow::Result<()> {
    match command {
        DatasetCommand::Prepare(args) => {
            let m = prepare(&args)?;
            println!(
                "{}",
                serde_json::json!({
                    "dir": args.out, "name": m.name, "features": m.features, "classes": m.classes,
                    "train_shards": m.train.len(), "heldout_shards": m.heldout.len(),
                    "tokenizer": m.tokenizer,
                })
            );
        }
        DatasetCommand::Attach(args) => {
            let out = attach(&args)?;
            println!("{out}");
        }
        DatasetCommand::List { gateway } => {
            let v: serde_json::Value = crate::client::get(&gateway, "/v1/datasets")?.into_json()?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(())
}

fn read_maybe(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn load(args: &PrepareArgs) -> anyhow::Result<Samples> {
    if let Some(choice) = args.dataset {
        return crate::devnet::load_samples(choice);
    }
    if let Some(p) = &args.digits_csv {
        return trainmesh_gpu::import::digits_from_csv(&read_maybe(p)?)
            .with_context(|| format!("parsing {}", p.display()));
    }
    if let (Some(i), Some(l)) = (&args.idx_images, &args.idx_labels) {
        let images = trainmesh_gpu::import::maybe_gunzip(&read_maybe(i)?)?;
        let labels = trainmesh_gpu::import::maybe_gunzip(&read_maybe(l)?)?;
        return Ok(trainmesh_gpu::import::samples_from_idx(
            &images,
            &labels,
            args.classes,
        )?);
    }
    bail!("name a source: --dataset, --digits-csv or --idx-images with --idx-labels")
}

/// Tokenizes `--text` with `--tokenizer`: the ids and the tokenizer's manifest name.
fn tokenize(args: &PrepareArgs) -> anyhow::Result<(Tokens, String)> {
    if args.dataset == Some(DatasetChoice::Fortunes) {
        let trainmesh_gpu::train::SplitData::Tokens(t) =
            crate::devnet::load_data(DatasetChoice::Fortunes)?
        else {
            unreachable!("fortunes is text")
        };
        return Ok((t, BYTES_TOKENIZER.into()));
    }
    let mut text = Vec::new();
    for p in &args.text {
        text.extend_from_slice(&read_maybe(p)?);
        if !text.ends_with(b"\n") {
            text.push(b'\n');
        }
    }
    if args.tokenizer == BYTES_TOKENIZER {
        return Ok((Tokens::from_bytes(&text), BYTES_TOKENIZER.into()));
    }
    let Some(file) = args.tokenizer.strip_prefix("bpe:") else {
        bail!(
            "--tokenizer {:?}: use `bytes` or `bpe:FILE` (a tokenizer.json)",
            args.tokenizer
        );
    };
    let raw = read_maybe(Path::new(file))?;
    let tokenizer = tokenizers::Tokenizer::from_bytes(&raw)
        .map_err(|e| anyhow::anyhow!("{file}: not a tokenizer.json ({e})"))?;
    let vocab = tokenizer.get_vocab_size(true);
    let text = String::from_utf8(text).context("a BPE tokenizer reads UTF-8 text")?;
    let encoding = tokenizer
        .encode(text, false)
        .map_err(|e| anyhow::anyhow!("tokenizing with {file}: {e}"))?;
    let tokens = Tokens::new(vocab, encoding.get_ids().to_vec())?;
    Ok((tokens, format!("bpe:{}", BlobHash::of(&raw).to_hex())))
}

/// Shards the dataset into `args.out`: `<blake3>.shard` files and `manifest.json`.
pub fn prepare(args: &PrepareArgs) -> anyhow::Result<PreparedManifest> {
    let mut store = ShardStore::new();
    let m = if args.text.is_empty() && args.dataset != Some(DatasetChoice::Fortunes) {
        let samples = load(args)?;
        shard_dataset(
            &args.name,
            &samples,
            args.samples_per_shard,
            args.heldout_fraction,
            args.seed,
            &mut store,
        )?
    } else {
        let (tokens, tokenizer) = tokenize(args)?;
        shard_tokens(
            &args.name,
            &tokenizer,
            &tokens,
            args.tokens_per_shard,
            args.heldout_fraction,
            args.seed,
            &mut store,
        )?
    };
    store.write_dir(&args.out)?;
    let prepared = PreparedManifest {
        name: m.name,
        features: m.features,
        classes: m.classes,
        train: m.train.iter().map(BlobHash::to_hex).collect(),
        heldout: m.heldout.iter().map(BlobHash::to_hex).collect(),
        tokenizer: m.tokenizer,
    };
    let path = args.out.join("manifest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&prepared)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(prepared)
}

/// Reads a shard of a prepared directory, checked against its name.
fn read_shard(dir: &Path, hex: &str) -> anyhow::Result<Vec<u8>> {
    let bytes: [u8; 32] = hex::decode(hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("manifest: {hex:?} is not a 32-byte hex hash"))?;
    let path = dir.join(format!("{hex}.shard"));
    let data = read_maybe(&path)?;
    if trainmesh_gpu::tokens::is_token_shard(&data) {
        trainmesh_gpu::tokens::decode_token_shard(&data, &BlobHash(bytes))
            .with_context(|| format!("{}", path.display()))?;
    } else {
        decode_shard(&data, &BlobHash(bytes)).with_context(|| format!("{}", path.display()))?;
    }
    Ok(data)
}

fn post(gateway: &str, path: &str) -> ureq::Request {
    ureq::post(&format!("{}{path}", gateway.trim_end_matches('/'))).timeout(Duration::from_secs(60))
}

/// A gateway reply as JSON, or its error code and message as the error.
fn reply(url: &str, r: Result<ureq::Response, ureq::Error>) -> anyhow::Result<serde_json::Value> {
    Ok(crate::client::reply(url, r)?.into_json()?)
}

fn hash32(v: &serde_json::Value, field: &str) -> anyhow::Result<Hash32> {
    let s = v[field]
        .as_str()
        .with_context(|| format!("reply lacks {field}"))?;
    let b: [u8; 32] = hex::decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{field} is not a 32-byte hash"))?;
    Ok(Hash32(b))
}

/// Signs `call` with `key`, submits it through the gateway and waits for its receipt; returns the
/// receipt's events.
pub fn submit_and_wait(
    gateway: &str,
    key: &AccountKey,
    call: Call,
    timeout: Duration,
) -> anyhow::Result<(String, Vec<Event>)> {
    let status = crate::client::get(gateway, "/v1/status")?.into_json::<serde_json::Value>()?;
    let chain_id = status["chain_id"]
        .as_str()
        .context("status lacks chain_id")?;
    let since = status["height"].as_u64().unwrap_or(0);
    let account = crate::client::get(gateway, &format!("/v1/accounts/{}", key.address().to_hex()))?
        .into_json::<serde_json::Value>()?;
    let nonce = account["account"]["nonce"]
        .as_u64()
        .context("account lacks nonce")?;
    let fee = status["min_fee"]
        .as_str()
        .and_then(|f| f.parse::<u128>().ok())
        .map(Amount)
        .context("status lacks min_fee")?;
    let expires_ms = trainmesh_actors::wallet::expiry_ms();
    let tx = key.sign_until(chain_id, nonce, fee, expires_ms, call);
    let url = format!("{}/v1/transactions", gateway.trim_end_matches('/'));
    let sent = reply(
        &url,
        post(gateway, "/v1/transactions")
            .send_json(serde_json::json!({ "transaction": hex::encode(tx.encode()) })),
    )?;
    let tx_hash = sent["tx_hash"]
        .as_str()
        .context("reply lacks tx_hash")?
        .to_string();
    let deadline = Instant::now() + timeout;
    loop {
        let path = format!("/v1/transactions/{tx_hash}?since={since}");
        let url = format!("{}{path}", gateway.trim_end_matches('/'));
        let r = ureq::get(&url).timeout(Duration::from_secs(30)).call();
        match r {
            Err(ureq::Error::Status(404, _)) => {}
            r => {
                let v = reply(&url, r)?;
                if v["status"] == "rejected" {
                    bail!(
                        "transaction {tx_hash} rejected: {}: {}",
                        v["error"]["code"].as_str().unwrap_or("error"),
                        v["error"]["message"].as_str().unwrap_or("")
                    );
                }
                let events =
                    serde_json::from_value(v["events"].clone()).context("the receipt's events")?;
                return Ok((tx_hash, events));
            }
        }
        if Instant::now() > deadline {
            bail!(
                "transaction {tx_hash} was not executed in {} s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The deposit (whole TRAIN) that lets a node keep `bytes` of a provider's uploads, with a
/// shard's worth of room for the manifest.
pub fn upload_deposit_train(bytes: u64) -> u64 {
    let per_train = crate::uploads::UPLOAD_BYTES_PER_TRAIN;
    (bytes + crate::uploads::SHARD_UPLOAD_BYTES_MAX as u64).div_ceil(per_train)
}

/// Uploads the shards and manifest of `args.dir`, signs and submits `AttachDataset`, and waits
/// for it to execute; returns a JSON summary with the dataset's id.
pub fn attach(args: &AttachArgs) -> anyhow::Result<serde_json::Value> {
    let key = AccountKey::from_secret(crate::keys::read(&args.key)?);
    let path = args.dir.join("manifest.json");
    let manifest: PreparedManifest = serde_json::from_slice(&read_maybe(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    let bar = indicatif::ProgressBar::new((manifest.train.len() + manifest.heldout.len()) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} shards")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let status =
        crate::client::get(&args.gateway, "/v1/status")?.into_json::<serde_json::Value>()?;
    let chain_id = status["chain_id"]
        .as_str()
        .context("status lacks chain_id")?
        .to_string();
    // The node keeps what the provider's deposit for it allows: deposit for these uploads.
    let node = status["peer_id"]
        .as_str()
        .context("status lacks the node's peer_id")?
        .to_string();
    let mut bytes = 0u64;
    for hex in manifest.train.iter().chain(&manifest.heldout) {
        bytes += read_shard(&args.dir, hex)?.len() as u64;
    }
    let amount = Amount::from_train(upload_deposit_train(bytes));
    submit_and_wait(
        &args.gateway,
        &key,
        Call::DepositForUploads { node, amount },
        Duration::from_secs(args.timeout_s),
    )?;
    for (split, list) in [("train", &manifest.train), ("heldout", &manifest.heldout)] {
        for hex in list {
            let bytes = read_shard(&args.dir, hex)?;
            let route = format!("/v1/datasets/shards?split={split}");
            // Signed by the provider: its deposit for this node bounds what the node keeps.
            let request =
                post(&args.gateway, &route).set("Content-Type", "application/octet-stream");
            let v = reply(
                &route,
                crate::client::signed(request, &key, |time| {
                    let shard = blake3::hash(&bytes);
                    crate::gateway::upload_request_message(&chain_id, shard.as_bytes(), time)
                })
                .send_bytes(&bytes),
            )?;
            if v["blake3"].as_str() != Some(hex.as_str()) {
                bail!("the gateway stored shard {hex} as {}", v["blake3"]);
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let request = manifest.signed(&key)?;
    let served = reply(
        "/v1/datasets/manifests",
        post(&args.gateway, "/v1/datasets/manifests").send_json(serde_json::to_value(&request)?),
    )?;
    let spec = DatasetSpec {
        name: manifest.name.clone(),
        shards_root: hash32(&served, "shards_root")?,
        shard_sizes: serde_json::from_value(served["shard_sizes"].clone())
            .context("reply's shard_sizes")?,
        heldout_root: hash32(&served, "heldout_root")?,
        heldout_samples: served["heldout_samples"]
            .as_u64()
            .context("reply lacks heldout_samples")?,
        licence: args.licence.clone(),
        price_per_use: Amount(args.price_per_use),
        peer_id: served["peer_id"]
            .as_str()
            .context("reply lacks peer_id")?
            .to_string(),
        peer_signature: served["peer_signature"]
            .as_str()
            .and_then(|h| hex::decode(h).ok())
            .context("reply lacks the node's peer_signature")?,
    };
    let (tx_hash, events) = submit_and_wait(
        &args.gateway,
        &key,
        Call::AttachDataset { spec: spec.clone() },
        Duration::from_secs(args.timeout_s),
    )?;
    let id = events
        .iter()
        .find_map(|e| match e {
            Event::DatasetAttached { dataset, .. } => Some(dataset.0),
            _ => None,
        })
        .context("the receipt has no DatasetAttached event")?;
    Ok(serde_json::json!({
        "dataset": id,
        "name": spec.name,
        "shards_root": spec.shards_root,
        "heldout_samples": spec.heldout_samples,
        "served_by": spec.peer_id,
        "tx_hash": tx_hash,
    }))
}
