//! The data-provider role: shards a dataset into content-addressed shards, serves them (the
//! held-out split to registered evaluators only), and attaches the dataset on the ledger.

use std::time::Instant;

use actix::prelude::*;
use trainmesh_contracts::datasets::{Dataset, DatasetSpec};
use trainmesh_contracts::{keys, Amount, Call, DatasetId, Hash32};
use trainmesh_gpu::dataset::{shard_dataset, DatasetManifest, ShardStore};
use trainmesh_gpu::hash::merkle_root;
use trainmesh_gpu::tokens::{shard_tokens, BYTES_TOKENIZER};
use trainmesh_gpu::train::SplitData;

use crate::blobs::Audience;
use crate::ledger::LedgerAdvanced;
use crate::wire::BlobKind;
use crate::work::{WorkContext, WorkError, RESUBMIT_AFTER};

/// The largest shard a provider serves: a blob response (the shard and a small header) must fit
/// one mesh message.
pub const SHARD_BYTES_SERVED_MAX: usize = crate::network::MESSAGE_BYTES_MAX - 64 * 1024;

/// Which dataset the provider serves, and how.
#[derive(Clone, Debug)]
pub struct DatasetOffer {
    pub name: String,
    pub licence: String,
    pub price_per_use: Amount,
    pub samples_per_shard: usize,
    pub heldout_fraction: f64,
    pub seed: u64,
}

/// The dataset's id on the ledger once attached.
#[derive(Message, Debug)]
#[rtype(result = "Option<DatasetId>")]
pub struct AttachedDataset;

pub struct DataProvider {
    work: WorkContext,
    spec: DatasetSpec,
    attached: Option<DatasetId>,
    sent: Option<Instant>,
}

impl std::fmt::Debug for DataProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataProvider")
            .field("dataset", &self.spec.name)
            .field("attached", &self.attached)
            .finish()
    }
}

impl DataProvider {
    /// Shards `data` (samples, or a byte-tokenized text whose shards hold `samples_per_shard`
    /// tokens), stores the shards and the manifest for serving, and prepares the attachment.
    pub fn new(
        work: WorkContext,
        data: &SplitData,
        offer: DatasetOffer,
    ) -> Result<DataProvider, WorkError> {
        let mut shards = ShardStore::new();
        let manifest: DatasetManifest = match data {
            SplitData::Samples(samples) => shard_dataset(
                &offer.name,
                samples,
                offer.samples_per_shard,
                offer.heldout_fraction,
                offer.seed,
                &mut shards,
            )?,
            SplitData::Tokens(tokens) => shard_tokens(
                &offer.name,
                BYTES_TOKENIZER,
                tokens,
                offer.samples_per_shard,
                offer.heldout_fraction,
                offer.seed,
                &mut shards,
            )?,
        };
        let raw = |h: &trainmesh_gpu::Hash32| {
            shards
                .bytes(h)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| WorkError::Invalid(format!("shard {h} missing")))
        };
        let mut sizes = Vec::new();
        for (i, h) in manifest.train.iter().chain(&manifest.heldout).enumerate() {
            let bytes = raw(h)?.len();
            if bytes > SHARD_BYTES_SERVED_MAX {
                return Err(WorkError::Invalid(format!(
                    "a shard of {bytes} bytes cannot cross the mesh (at most \
                     {SHARD_BYTES_SERVED_MAX}); use fewer samples per shard"
                )));
            }
            if i < manifest.train.len() {
                sizes.push(bytes as u64);
            }
        }
        let mut heldout_samples = 0;
        for h in &manifest.heldout {
            heldout_samples += SplitData::decode_shard(&raw(h)?, h)?.len() as u64;
        }
        for (list, audience) in [
            (&manifest.train, Audience::Anyone),
            (&manifest.heldout, Audience::Evaluators),
        ] {
            for h in list {
                work.blobs.put(BlobKind::Shard, h.0, raw(h)?, audience);
            }
        }
        let shards_root = merkle_root(&manifest.train);
        work.blobs.put(
            BlobKind::Manifest,
            shards_root.0,
            serde_json::to_vec(&manifest).expect("manifests serialize"),
            Audience::Anyone,
        );
        let shards_root = Hash32(shards_root.0);
        let heldout_root = Hash32(merkle_root(&manifest.heldout).0);
        let peer_signature =
            work.peer_signer
                .bind_dataset(&work.wallet.address, &shards_root, &heldout_root);
        let spec = DatasetSpec {
            name: offer.name,
            shards_root,
            shard_sizes: sizes,
            heldout_root,
            heldout_samples,
            licence: offer.licence,
            price_per_use: offer.price_per_use,
            peer_id: work.peer_id.to_string(),
            peer_signature,
        };
        Ok(DataProvider {
            work,
            spec,
            attached: None,
            sent: None,
        })
    }

    pub fn spec(&self) -> &DatasetSpec {
        &self.spec
    }

    /// The id of this provider's dataset on the ledger, if attached.
    fn find(&self) -> Option<DatasetId> {
        let l = self.work.ledger.read().expect("ledger lock");
        let count = l
            .read::<trainmesh_contracts::counters::Counters>(keys::COUNTERS)
            .ok()
            .flatten()?
            .datasets;
        (1..=count).rev().map(DatasetId).find(|id| {
            matches!(l.read::<Dataset>(&keys::dataset(*id)), Ok(Some(d))
                if d.spec.shards_root == self.spec.shards_root && d.provider == self.work.wallet.address)
        })
    }

    fn poll(&mut self) {
        if self.attached.is_some() {
            return;
        }
        self.attached = self.find();
        if let Some(id) = self.attached {
            tracing::info!(dataset = ?id, name = %self.spec.name, "dataset attached");
            return;
        }
        if self.sent.is_some_and(|t| t.elapsed() < RESUBMIT_AFTER) {
            return;
        }
        let resync = self.sent.is_some();
        self.sent = Some(Instant::now());
        let call = Call::AttachDataset {
            spec: self.spec.clone(),
        };
        self.work.send_call(call, resync);
    }
}

impl Actor for DataProvider {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(std::time::Duration::from_secs(1), |act, _| act.poll());
    }
}

impl Handler<LedgerAdvanced> for DataProvider {
    type Result = ();

    fn handle(&mut self, _: LedgerAdvanced, _: &mut Context<Self>) {
        self.poll();
    }
}

impl Handler<AttachedDataset> for DataProvider {
    type Result = Option<DatasetId>;

    fn handle(&mut self, _: AttachedDataset, _: &mut Context<Self>) -> Option<DatasetId> {
        self.attached
    }
}
