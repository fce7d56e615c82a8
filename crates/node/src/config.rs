//! `trainmesh node --config node.toml`: one node of a network. Its roles come from the config
//! (a validator has a consensus key; `[trainer]`, `[evaluator]`, `[provider]` sections add the
//! worker roles). While it runs it keeps `status.json` in its data directory: height, state root,
//! and the roots of recent heights (what operators and the testnet scripts compare).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::{bail, Context as _};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::Deserialize;
use trainmesh_actors::ledger::{LedgerAdvanced, Subscribe};
use trainmesh_actors::mesh_config::MeshConfig;
use trainmesh_actors::node::{self, LocalConsensusConfig, NodeSpec};
use trainmesh_actors::trainer::Registration;
use trainmesh_contracts::Amount;
use trainmesh_dag::ConsensusParams;

use crate::devnet::{local_capability, DatasetChoice};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub genesis: PathBuf,
    pub listen: String,
    pub account_key: PathBuf,
    pub consensus_key: Option<PathBuf>,
    /// A validator's share of the randomness beacon (`trainmesh genesis new --beacon-out`).
    pub beacon_key: Option<PathBuf>,
    /// `/ip4/…/tcp/…/p2p/<peer id>` of peers to dial first (the validators, usually).
    #[serde(default)]
    pub bootstrap: Vec<String>,
    pub trainer: Option<TrainerConfig>,
    pub evaluator: Option<EvaluatorConfig>,
    pub provider: Option<ProviderConfig>,
    #[serde(default)]
    pub consensus: ConsensusConfig,
    /// Network bounds: connection limits, inbound queue, sync rate, commit retention, peer
    /// policy (`docs/design/mesh.md`); every field has a default.
    #[serde(default)]
    pub mesh: MeshConfig,
    /// Serve the HTTP gateway and metrics here, e.g. `"127.0.0.1:8080"`.
    pub gateway: Option<std::net::SocketAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerConfig {
    /// Stake bonded at registration, in TRAIN.
    pub bond: u64,
    /// Fake every segment of every unit (demonstrations of slashing only).
    #[serde(default)]
    pub cheat: bool,
    /// Where to train: `auto` (the default: the GPU when it passes conformance and is faster than
    /// the CPU, measured), `device` (the GPU when it passes conformance), `cpu`.
    #[serde(default)]
    pub device: crate::gpu::TrainOn,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluatorConfig {
    pub bond: u64,
    /// Where to replay audited segments: `auto` (the default), `device`, `cpu`; as the trainer's.
    #[serde(default)]
    pub device: crate::gpu::TrainOn,
    /// `honest` (the default); `lazy` (replay nothing, accept) and `colluding` (reject
    /// everything) are for demonstrations of how disputes catch them.
    #[serde(default)]
    pub mode: trainmesh_actors::dispute::EvaluatorMode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `digits` or `fashion-mnist`.
    pub dataset: String,
}

/// `[consensus]`: what this node tunes in its consensus core (each optional). The parameters
/// every validator must share (`leader_timeout_ms`, `gc_depth_rounds`, `round_window_rounds`,
/// the header and transaction size bounds) come from the genesis file's `consensus` section;
/// a config that names one is refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusConfig {
    pub max_header_delay_ms: Option<u64>,
    pub mempool_bytes_max: Option<usize>,
    pub pending_certificates_max: Option<usize>,
    pub pending_headers_max: Option<usize>,
    pub missing_certificates_max: Option<usize>,
}

impl ConsensusConfig {
    fn local(&self) -> LocalConsensusConfig {
        let d = LocalConsensusConfig::default();
        LocalConsensusConfig {
            max_header_delay_ms: self.max_header_delay_ms.unwrap_or(d.max_header_delay_ms),
            mempool_bytes_max: self.mempool_bytes_max.unwrap_or(d.mempool_bytes_max),
            pending_certificates_max: self
                .pending_certificates_max
                .unwrap_or(d.pending_certificates_max),
            pending_headers_max: self.pending_headers_max.unwrap_or(d.pending_headers_max),
            missing_certificates_max: self
                .missing_certificates_max
                .unwrap_or(d.missing_certificates_max),
        }
    }
}

/// The names of the consensus-critical parameters (those of the genesis' `consensus` section).
fn consensus_critical() -> Vec<String> {
    match serde_json::to_value(ConsensusParams::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
        _ => unreachable!("consensus parameters serialize to an object"),
    }
}

/// Refuses a config that sets a consensus-critical parameter, at the top level or in
/// `[consensus]`, naming where it belongs.
fn refuse_consensus_critical(table: &toml::Table) -> anyhow::Result<()> {
    let sections = [
        Some(table),
        table.get("consensus").and_then(|v| v.as_table()),
    ];
    for key in consensus_critical() {
        if sections.iter().flatten().any(|t| t.contains_key(&key)) {
            bail!(
                "{key} is a consensus parameter: every validator takes it from the genesis file \
                 (its \"consensus\" section), never from a node's config; remove it here"
            );
        }
    }
    Ok(())
}

/// `…/p2p/<peer id>` split into the peer and the address to dial.
pub fn parse_peer_addr(s: &str) -> anyhow::Result<(PeerId, Multiaddr)> {
    let mut addr: Multiaddr = s
        .parse()
        .with_context(|| format!("bootstrap address {s:?}"))?;
    match addr.pop() {
        Some(Protocol::P2p(peer)) => Ok((peer, addr)),
        _ => bail!("bootstrap address {s:?} must end with /p2p/<peer id>"),
    }
}

impl NodeConfig {
    pub fn read(path: &Path) -> anyhow::Result<NodeConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        NodeConfig::parse(&text, base).with_context(|| format!("config {}", path.display()))
    }

    /// A config from its TOML text; relative paths are made relative to `base`.
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<NodeConfig> {
        refuse_consensus_critical(&toml::from_str(text)?)?;
        let mut c: NodeConfig = toml::from_str(text)?;
        for p in [&mut c.data_dir, &mut c.genesis, &mut c.account_key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for p in [&mut c.consensus_key, &mut c.beacon_key]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(c)
    }

    pub fn spec(&self) -> anyhow::Result<NodeSpec> {
        // One device for the node: the trainer's choice, else the evaluator's.
        let choice = match (&self.trainer, &self.evaluator) {
            (Some(t), _) => Some(t.device),
            (None, Some(e)) => Some(e.device),
            (None, None) => None,
        };
        let train_device = choice.and_then(crate::gpu::train_device);
        let capability = local_capability(train_device.as_deref());
        let provider = match &self.provider {
            Some(p) => {
                let choice = match p.dataset.as_str() {
                    "digits" => DatasetChoice::Digits,
                    "fashion-mnist" => DatasetChoice::FashionMnist,
                    "fortunes" => DatasetChoice::Fortunes,
                    other => bail!("unknown dataset {other:?} (digits, fashion-mnist, fortunes)"),
                };
                Some((
                    Arc::new(crate::devnet::load_data(choice)?),
                    crate::devnet::offer(choice),
                ))
            }
            None => None,
        };
        Ok(NodeSpec {
            name: self.name.clone(),
            data_dir: self.data_dir.clone(),
            genesis: crate::genesis::read(&self.genesis)?,
            account_secret: crate::keys::read(&self.account_key)?,
            consensus_secret: self
                .consensus_key
                .as_ref()
                .map(|p| crate::keys::read(p))
                .transpose()?,
            beacon_secret: self
                .beacon_key
                .as_ref()
                .map(|p| crate::keys::read(p))
                .transpose()?,
            listen: self
                .listen
                .parse()
                .with_context(|| format!("listen address {:?}", self.listen))?,
            bootstrap: self
                .bootstrap
                .iter()
                .map(|s| parse_peer_addr(s))
                .collect::<anyhow::Result<_>>()?,
            train_device,
            trainer: self.trainer.as_ref().map(|t| {
                (
                    Registration {
                        bond: Amount::from_train(t.bond),
                        capability: capability.clone(),
                    },
                    t.cheat,
                )
            }),
            evaluator: self.evaluator.as_ref().map(|e| {
                (
                    Registration {
                        bond: Amount::from_train(e.bond),
                        capability: capability.clone(),
                    },
                    e.mode,
                )
            }),
            provider,
            equivocate: false,
            local_consensus: self.consensus.local(),
            mesh: self.mesh.clone(),
        })
    }
}

/// Heights whose roots `status.json` keeps.
pub const STATUS_ROOTS_KEPT: usize = 2_000;

/// Keeps `status.json` up to date.
pub struct StatusWriter {
    path: PathBuf,
    peer_id: String,
    roots: BTreeMap<u64, String>,
    last: Option<LedgerAdvanced>,
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter")
            .field("path", &self.path)
            .finish()
    }
}

impl StatusWriter {
    pub fn new(path: PathBuf, peer_id: String) -> Self {
        StatusWriter {
            path,
            peer_id,
            roots: BTreeMap::new(),
            last: None,
        }
    }

    fn write(&mut self) {
        let Some(last) = self.last else { return };
        let status = serde_json::json!({
            "peer_id": self.peer_id,
            "height": last.height,
            "next_index": last.next_index,
            "state_root": hex::encode(last.state_root),
            "roots": self.roots,
        });
        let tmp = self.path.with_extension("json.tmp");
        if std::fs::write(&tmp, status.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &self.path);
        }
    }
}

impl Actor for StatusWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_millis(250), |act, _| act.write());
    }
}

impl Handler<LedgerAdvanced> for StatusWriter {
    type Result = ();

    fn handle(&mut self, msg: LedgerAdvanced, _: &mut Context<Self>) {
        self.roots.insert(msg.height, hex::encode(msg.state_root));
        while self.roots.len() > STATUS_ROOTS_KEPT {
            let first = *self.roots.keys().next().expect("not empty");
            self.roots.remove(&first);
        }
        self.last = Some(msg);
    }
}

pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = NodeConfig::read(path)?;
    let spec = config.spec()?;
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    let data_dir = spec.data_dir.clone();
    let gateway = config.gateway;
    let chain_id = spec.genesis.chain_id.clone();
    system.block_on(async move {
        let handle = node::start(spec)?;
        let status =
            StatusWriter::new(data_dir.join("status.json"), handle.peer_id.to_string()).start();
        handle.ledger_actor.do_send(Subscribe(status.recipient()));
        if let Some(addr) = gateway {
            let bound =
                crate::gateway::serve(crate::gateway::Gateway::of(&handle, &chain_id)?, addr)?;
            eprintln!("gateway: http://{bound}/v1/status");
        }
        eprintln!("node {} ({}) running", handle.name, handle.peer_id);
        crate::net::shutdown_signal().await;
        handle.stop();
        anyhow::Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "validator-0"
data_dir = "data"
genesis = "../genesis.json"
listen = "/ip4/127.0.0.1/tcp/4000"
account_key = "account.key"
"#;

    #[test]
    fn a_config_may_tune_batching_and_queues() {
        let text =
            format!("{BASE}[consensus]\nmax_header_delay_ms = 7\nmempool_bytes_max = 1000\n");
        let c = NodeConfig::parse(&text, Path::new("/etc/node")).unwrap();
        let local = c.consensus.local();
        assert_eq!(local.max_header_delay_ms, 7);
        assert_eq!(local.mempool_bytes_max, 1_000);
        let d = LocalConsensusConfig::default();
        assert_eq!(local.pending_headers_max, d.pending_headers_max);
        assert_eq!(c.genesis, Path::new("/etc/node/../genesis.json"));
        let plain = NodeConfig::parse(BASE, Path::new(".")).unwrap();
        assert_eq!(plain.consensus.local(), d);
    }

    #[test]
    fn a_config_that_sets_a_consensus_parameter_is_refused_naming_the_genesis() {
        for key in consensus_critical() {
            for text in [
                format!("{BASE}[consensus]\n{key} = 3\n"),
                format!("{key} = 3\n{BASE}"),
            ] {
                let err = NodeConfig::parse(&text, Path::new(".")).unwrap_err();
                let message = format!("{err:#}");
                assert!(
                    message.contains(&key) && message.contains("genesis file"),
                    "{key}: {message}"
                );
            }
        }
        let names = consensus_critical();
        for key in [
            "gc_depth_rounds",
            "round_window_rounds",
            "leader_timeout_ms",
        ] {
            assert!(names.iter().any(|n| n == key), "{key} in {names:?}");
        }
    }
}
