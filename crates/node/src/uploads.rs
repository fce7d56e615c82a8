//! Dataset shards uploaded through the gateway: checked, kept on disk beside the node's data,
//! and served to the mesh from the node's blob store (held-out shards to registered evaluators
//! only). A data provider uploads its shards and a manifest over them, then signs an
//! `AttachDataset` naming this node's peer id: the node serves the dataset from then on, across
//! restarts.
//!
//! A manifest is signed by its provider's account key (`datasets::manifest_message`): the node
//! binds the dataset to that provider with its network key (the `peer_signature` the ledger
//! checks), and a shards root once claimed here by one provider is refused to any other — no one
//! can attach another's upload as its own. Manifests count against the node's quota.
//!
//! Shard uploads are signed too (the gateway checks the signature): each shard belongs to its
//! first uploader, who may keep at most `UPLOAD_BYTES_PER_TRAIN` per TRAIN of its deposit for this
//! node on the ledger (`Call::DepositForUploads`; `PROVIDER_UPLOAD_BYTES_MAX` in all) here, and a
//! manifest lists only its provider's shards.
//! Whatever no attached dataset uses `UPLOAD_TTL_MS` after its upload is deleted
//! ([`Uploads::sweep`]).
//!
//! Files: `<blake3>.train` and `<blake3>.heldout` (shards), `<blake3>.owner` (the uploader's
//! address and the upload's time), `<shards root>.manifest` (the manifest's JSON, as trainers
//! fetch it), `<shards root>.provider` (the claiming provider's address and the time). Every file
//! is checked against its name when loaded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use trainmesh_actors::blobs::{Audience, BlobStore};
use trainmesh_actors::wire::BlobKind;
use trainmesh_gpu::dataset::{decode_shard, DatasetManifest};
use trainmesh_gpu::hash::{merkle_root, Hash32};

/// The largest shard accepted (well inside the mesh's frame limit).
pub const SHARD_UPLOAD_BYTES_MAX: usize = 4 << 20;
/// What one node keeps of uploads, at most.
pub const UPLOADS_BYTES_MAX: u64 = 512 << 20;
/// What one provider may keep on a node, at most, and per TRAIN of its deposit for that node (a
/// provider without a deposit uploads nothing: junk costs its uploader the deposit, which comes
/// back only once a dataset it attached there is used).
pub const PROVIDER_UPLOAD_BYTES_MAX: u64 = 128 << 20;
pub const UPLOAD_BYTES_PER_TRAIN: u64 = 16 << 20;
/// How long an upload may wait for a dataset on the ledger to use it; then it is deleted.
pub const UPLOAD_TTL_MS: u64 = 24 * 3_600_000;
/// The most shards one manifest may list (each split), as the ledger allows.
pub const MANIFEST_SHARDS_MAX: usize = trainmesh_contracts::datasets::SHARDS_MAX;

/// A dataset split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Heldout,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Heldout => "heldout",
        }
    }

    fn audience(self) -> Audience {
        match self {
            Split::Train => Audience::Anyone,
            Split::Heldout => Audience::Evaluators,
        }
    }
}

/// A manifest's tokenizer name: `bytes`, or `bpe:` and the 64 hex digits of the BLAKE3 of the
/// tokenizer file.
pub fn check_tokenizer_name(t: &str) -> Result<(), String> {
    if t == trainmesh_gpu::tokens::BYTES_TOKENIZER {
        return Ok(());
    }
    match t.strip_prefix("bpe:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(()),
        _ => Err(format!(
            "tokenizer {:?} is neither `bytes` nor `bpe:<64 hex digits>`",
            t.chars().take(80).collect::<String>()
        )),
    }
}

/// An uploaded shard.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ShardInfo {
    pub blake3: String,
    pub bytes: u64,
    pub samples: u64,
    pub features: u32,
    pub classes: u32,
    pub split: Split,
}

/// A manifest over uploaded shards, as a provider posts it (and `dataset prepare` writes it).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestRequest {
    pub name: String,
    pub features: u32,
    pub classes: u32,
    pub train: Vec<String>,
    pub heldout: Vec<String>,
    /// A text dataset's tokenizer (`bytes` or `bpe:<BLAKE3 hex of the tokenizer file>`); its
    /// shards are token shards, `features` is 0 and `classes` the vocabulary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// The provider's account public key (hex), and its signature (hex) of
    /// `datasets::manifest_message` over the two roots.
    pub provider: String,
    pub signature: String,
}

/// What the provider signs into its `DatasetSpec`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ManifestReply {
    pub shards_root: String,
    pub heldout_root: String,
    pub shard_sizes: Vec<u64>,
    pub heldout_samples: u64,
    pub peer_id: String,
    /// This node's binding of the dataset to the provider (hex), for `DatasetSpec::peer_signature`.
    pub peer_signature: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UploadError {
    #[error("{0}")]
    BadShard(String),
    #[error("{0}")]
    BadManifest(String),
    #[error("shard {0} was not uploaded to this node")]
    UnknownShard(String),
    #[error("these shards were claimed on this node by provider {0}")]
    Claimed(String),
    #[error("this provider would keep {needed} bytes here; its upload deposit allows {allowed}")]
    QuotaExceeded { needed: u64, allowed: u64 },
    #[error("{0}")]
    BadSignature(String),
    #[error("uploads would use {needed} bytes, this node keeps at most {UPLOADS_BYTES_MAX}")]
    StorageFull { needed: u64 },
    #[error("storing the upload: {0}")]
    Io(String),
}

impl UploadError {
    /// (HTTP status, stable code).
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            UploadError::BadShard(_) => (400, "bad_shard"),
            UploadError::BadManifest(_) => (400, "bad_manifest"),
            UploadError::UnknownShard(_) => (404, "unknown_shard"),
            UploadError::Claimed(_) => (409, "claimed"),
            UploadError::QuotaExceeded { .. } => (402, "upload_quota"),
            UploadError::BadSignature(_) => (400, "bad_signature"),
            UploadError::StorageFull { .. } => (507, "storage_full"),
            UploadError::Io(_) => (500, "internal"),
        }
    }
}

#[derive(Debug, Default)]
struct Index {
    shards: HashMap<Hash32, ShardInfo>,
    /// Who uploaded each shard, and when (no one: a file without its owner record).
    owners: HashMap<Hash32, (Option<trainmesh_contracts::Address>, u64)>,
    /// Bytes each provider keeps here.
    held: HashMap<trainmesh_contracts::Address, u64>,
    /// Which provider claimed each shards root, and when.
    claims: HashMap<Hash32, (trainmesh_contracts::Address, u64)>,
    /// The shards each stored manifest lists, and its bytes.
    manifests: HashMap<Hash32, (Vec<Hash32>, u64)>,
    bytes: u64,
}

/// `<address hex> <ms>`: an owner or claim record.
fn record(who: &trainmesh_contracts::Address, at_ms: u64) -> String {
    format!("{} {at_ms}", who.to_hex())
}

fn parse_record(text: &str) -> Option<(trainmesh_contracts::Address, u64)> {
    let (who, at) = text.trim().split_once(' ')?;
    Some((
        trainmesh_contracts::Address::from_hex(who).ok()?,
        at.parse().ok()?,
    ))
}

/// The uploads of one node.
#[derive(Clone, Debug)]
pub struct Uploads {
    dir: PathBuf,
    blobs: BlobStore,
    peer_id: String,
    signer: trainmesh_actors::work::PeerSigner,
    index: Arc<Mutex<Index>>,
}

fn io(path: &Path, e: std::io::Error) -> UploadError {
    UploadError::Io(format!("{}: {e}", path.display()))
}

fn parse_hash(s: &str) -> Result<Hash32, UploadError> {
    let bytes = hex::decode(s.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| UploadError::BadManifest(format!("{s:?} is not a 32-byte hex hash")))?;
    Ok(Hash32(bytes))
}

impl Uploads {
    /// Opens (creating) `dir` and serves everything already in it. A file that does not match
    /// its name is skipped with a warning (a torn write, a disk fault), never served.
    pub fn open(
        dir: PathBuf,
        blobs: BlobStore,
        peer_id: String,
        signer: trainmesh_actors::work::PeerSigner,
    ) -> Result<Uploads, UploadError> {
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let uploads = Uploads {
            dir: dir.clone(),
            blobs,
            peer_id,
            signer,
            index: Arc::new(Mutex::new(Index::default())),
        };
        let mut manifests = Vec::new();
        let mut shards = Vec::new();
        let mut owners = HashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let path = entry.map_err(|e| io(&dir, e))?.path();
            let Some((stem, ext)) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split_once('.'))
            else {
                continue;
            };
            let split = match ext {
                "train" => Split::Train,
                "heldout" => Split::Heldout,
                "manifest" => {
                    manifests.push((stem.to_string(), path.clone()));
                    continue;
                }
                "provider" | "owner" => {
                    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
                    match parse_hash(stem).ok().zip(parse_record(&text)) {
                        Some((hash, (who, at))) => {
                            let mut index = uploads.index.lock().expect("uploads lock");
                            if ext == "provider" {
                                index.claims.insert(hash, (who, at));
                            } else {
                                owners.insert(hash, (who, at));
                            }
                        }
                        None => tracing::warn!(path = %path.display(), "record skipped"),
                    }
                    continue;
                }
                _ => continue,
            };
            shards.push((split, stem.to_string(), path.clone()));
        }
        for (split, stem, path) in shards {
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            // A shard without its owner record belongs to no one: it expires unless used.
            let owner = parse_hash(&stem).ok().and_then(|h| owners.get(&h).copied());
            match uploads.admit(split, bytes, Some(&stem), owner, u64::MAX) {
                Ok(_) => {}
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "upload skipped"),
            }
        }
        for (stem, path) in manifests {
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            let ok = serde_json::from_slice::<DatasetManifest>(&bytes)
                .ok()
                .filter(|m| merkle_root(&m.train).to_hex() == stem);
            match ok {
                Some(m) => {
                    let mut index = uploads.index.lock().expect("uploads lock");
                    index.bytes += bytes.len() as u64;
                    let listed = m.train.iter().chain(&m.heldout).copied().collect();
                    index
                        .manifests
                        .insert(merkle_root(&m.train), (listed, bytes.len() as u64));
                    drop(index);
                    uploads.blobs.put(
                        BlobKind::Manifest,
                        merkle_root(&m.train).0,
                        bytes,
                        Audience::Anyone,
                    )
                }
                None => tracing::warn!(path = %path.display(), "manifest skipped"),
            }
        }
        Ok(uploads)
    }

    /// Checks a shard and serves it (without writing it anywhere), as `owner`'s (who, when),
    /// within `allowed` bytes for that owner.
    fn admit(
        &self,
        split: Split,
        bytes: Vec<u8>,
        named: Option<&str>,
        owner: Option<(trainmesh_contracts::Address, u64)>,
        allowed: u64,
    ) -> Result<(ShardInfo, bool), UploadError> {
        if bytes.len() > SHARD_UPLOAD_BYTES_MAX {
            return Err(UploadError::BadShard(format!(
                "{} bytes, at most {SHARD_UPLOAD_BYTES_MAX}",
                bytes.len()
            )));
        }
        let hash = Hash32::of(&bytes);
        if named.is_some_and(|n| n != hash.to_hex()) {
            return Err(UploadError::BadShard(
                "contents do not match the name".into(),
            ));
        }
        // A sample shard, or a text dataset's token shard (no features, the vocabulary as its
        // classes, a token per sample).
        let (count, features, classes) = if trainmesh_gpu::tokens::is_token_shard(&bytes) {
            let t = trainmesh_gpu::tokens::decode_token_shard(&bytes, &hash)
                .map_err(|e| UploadError::BadShard(e.to_string()))?;
            (t.len(), 0, t.vocab)
        } else {
            let s =
                decode_shard(&bytes, &hash).map_err(|e| UploadError::BadShard(e.to_string()))?;
            (s.len(), s.features, s.classes)
        };
        let info = ShardInfo {
            blake3: hash.to_hex(),
            bytes: bytes.len() as u64,
            samples: count as u64,
            features: features as u32,
            classes: classes as u32,
            split,
        };
        let mut index = self.index.lock().expect("uploads lock");
        if let Some(known) = index.shards.get(&hash) {
            if known.split != split {
                return Err(UploadError::BadShard(format!(
                    "this shard was uploaded to the {} split; a shard belongs to one split",
                    known.split.name()
                )));
            }
            return Ok((known.clone(), false));
        }
        let needed = index.bytes + info.bytes;
        if needed > UPLOADS_BYTES_MAX {
            return Err(UploadError::StorageFull { needed });
        }
        if let Some((who, _)) = owner {
            let held = index.held.get(&who).copied().unwrap_or(0) + info.bytes;
            let allowed = allowed.min(PROVIDER_UPLOAD_BYTES_MAX);
            if held > allowed {
                return Err(UploadError::QuotaExceeded {
                    needed: held,
                    allowed,
                });
            }
            index.held.insert(who, held);
        }
        index.bytes = needed;
        index.shards.insert(hash, info.clone());
        index
            .owners
            .insert(hash, (owner.map(|(w, _)| w), owner.map_or(0, |(_, t)| t)));
        self.blobs
            .put(BlobKind::Shard, hash.0, bytes, split.audience());
        Ok((info, true))
    }

    /// The peer id this node serves uploads under (what deposits name).
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// How many shards this node keeps of uploads.
    pub fn len(&self) -> usize {
        self.index.lock().expect("uploads lock").shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets a shard: no longer served, its bytes no longer counted.
    fn forget_shard(index: &mut Index, hash: &Hash32) -> Option<ShardInfo> {
        let info = index.shards.remove(hash)?;
        index.bytes -= info.bytes;
        if let Some((Some(who), _)) = index.owners.remove(hash) {
            if let Some(held) = index.held.get_mut(&who) {
                *held = held.saturating_sub(info.bytes);
            }
        }
        Some(info)
    }

    /// Deletes what no attached dataset uses `UPLOAD_TTL_MS` after its upload: manifests whose
    /// shards root is not attached (`attached`), and shards no attached manifest lists.
    /// Returns how many files went.
    pub fn sweep(&self, now_ms: u64, attached: impl Fn(&Hash32) -> bool) -> usize {
        let mut index = self.index.lock().expect("uploads lock");
        let expired = |at: u64| at.saturating_add(UPLOAD_TTL_MS) < now_ms;
        let mut kept = std::collections::HashSet::new();
        let mut gone_manifests = Vec::new();
        for (root, (listed, _)) in &index.manifests {
            if attached(root) {
                kept.extend(listed.iter().copied());
            } else if index.claims.get(root).is_none_or(|(_, at)| expired(*at)) {
                gone_manifests.push(*root);
            }
        }
        let gone_shards: Vec<Hash32> = index
            .owners
            .iter()
            .filter(|(h, (_, at))| !kept.contains(*h) && expired(*at))
            .map(|(h, _)| *h)
            .collect();
        let mut removed = 0;
        for root in gone_manifests {
            if let Some((_, bytes)) = index.manifests.remove(&root) {
                index.bytes -= bytes;
            }
            index.claims.remove(&root);
            self.blobs.remove(BlobKind::Manifest, &root.0);
            for ext in ["manifest", "provider"] {
                let _ = std::fs::remove_file(self.dir.join(format!("{root}.{ext}")));
            }
            removed += 1;
        }
        for hash in gone_shards {
            let Some(info) = Self::forget_shard(&mut index, &hash) else {
                continue;
            };
            self.blobs.remove(BlobKind::Shard, &hash.0);
            for ext in [info.split.name(), "owner"] {
                let _ = std::fs::remove_file(self.dir.join(format!("{hash}.{ext}")));
            }
            removed += 1;
        }
        removed
    }

    /// Checks, stores and serves one shard of `provider` (signed by it: the gateway checked),
    /// within `allowed` bytes for it; uploading the same shard again is a no-op.
    pub fn put_shard(
        &self,
        split: Split,
        bytes: Vec<u8>,
        provider: trainmesh_contracts::Address,
        allowed: u64,
        now_ms: u64,
    ) -> Result<ShardInfo, UploadError> {
        let copy = bytes.clone();
        let (info, new) = self.admit(split, bytes, None, Some((provider, now_ms)), allowed)?;
        if new {
            let path = self.dir.join(format!("{}.{}", info.blake3, split.name()));
            let owner = self.dir.join(format!("{}.owner", info.blake3));
            let written = write_atomically(&owner, record(&provider, now_ms).as_bytes())
                .and_then(|()| write_atomically(&path, &copy));
            if let Err(e) = written {
                // Not kept on disk: not served either, so a restart loses nothing it promised.
                let mut index = self.index.lock().expect("uploads lock");
                Self::forget_shard(&mut index, &Hash32::of(&copy));
                self.blobs.remove(BlobKind::Shard, &Hash32::of(&copy).0);
                return Err(e);
            }
        }
        Ok(info)
    }

    /// Checks a manifest over uploaded shards, stores and serves it, and returns what goes into
    /// the dataset's spec on the ledger.
    pub fn put_manifest(&self, m: ManifestRequest) -> Result<ManifestReply, UploadError> {
        if m.name.is_empty() || m.name.len() > 128 {
            return Err(UploadError::BadManifest(
                "name must be 1 to 128 bytes".into(),
            ));
        }
        for (what, list) in [("train", &m.train), ("heldout", &m.heldout)] {
            if list.is_empty() {
                return Err(UploadError::BadManifest(format!("no {what} shards")));
            }
            if list.len() > MANIFEST_SHARDS_MAX {
                return Err(UploadError::BadManifest(format!(
                    "{} {what} shards, at most {MANIFEST_SHARDS_MAX}",
                    list.len()
                )));
            }
        }
        if let Some(t) = &m.tokenizer {
            check_tokenizer_name(t).map_err(UploadError::BadManifest)?;
            if m.features != 0 {
                return Err(UploadError::BadManifest(format!(
                    "a text dataset (tokenizer {t}) has 0 features, not {}",
                    m.features
                )));
            }
        } else if m.features == 0 {
            return Err(UploadError::BadManifest(
                "a dataset of 0 features must name its tokenizer".into(),
            ));
        }
        let train = m
            .train
            .iter()
            .map(|s| parse_hash(s))
            .collect::<Result<Vec<_>, _>>()?;
        let heldout = m
            .heldout
            .iter()
            .map(|s| parse_hash(s))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut shard_sizes, mut heldout_samples) = (Vec::new(), 0);
        {
            let index = self.index.lock().expect("uploads lock");
            for (split, list) in [(Split::Train, &train), (Split::Heldout, &heldout)] {
                for h in list.iter() {
                    let info = index
                        .shards
                        .get(h)
                        .ok_or_else(|| UploadError::UnknownShard(h.to_hex()))?;
                    if info.split != split {
                        return Err(UploadError::BadManifest(format!(
                            "shard {h} was uploaded to the {} split, listed under {}",
                            info.split.name(),
                            split.name()
                        )));
                    }
                    if (info.features, info.classes) != (m.features, m.classes) {
                        return Err(UploadError::BadManifest(format!(
                            "shard {h} has {} features and {} classes, the manifest says {} and {}",
                            info.features, info.classes, m.features, m.classes
                        )));
                    }
                    match split {
                        Split::Train => shard_sizes.push(info.bytes),
                        Split::Heldout => heldout_samples += info.samples,
                    }
                }
            }
        }
        let provider = provider_of(&m, &train, &heldout)?;
        {
            let index = self.index.lock().expect("uploads lock");
            for h in train.iter().chain(&heldout) {
                if index.owners.get(h).map(|(w, _)| *w) != Some(Some(provider)) {
                    return Err(UploadError::BadManifest(format!(
                        "shard {h} was not uploaded here by this provider"
                    )));
                }
            }
        }
        let manifest = DatasetManifest {
            name: m.name,
            features: m.features,
            classes: m.classes,
            train,
            heldout,
            tokenizer: m.tokenizer,
        };
        let shards_root = merkle_root(&manifest.train);
        let heldout_root = merkle_root(&manifest.heldout);
        let json = serde_json::to_vec(&manifest).expect("manifests serialize");
        {
            // One provider per shards root on this node; the manifest's bytes count.
            let mut index = self.index.lock().expect("uploads lock");
            match index.claims.get(&shards_root) {
                Some((p, _)) if *p != provider => return Err(UploadError::Claimed(p.to_hex())),
                Some(_) => {}
                None => {
                    let needed = index.bytes + json.len() as u64;
                    if needed > UPLOADS_BYTES_MAX {
                        return Err(UploadError::StorageFull { needed });
                    }
                    let now_ms = index
                        .owners
                        .get(&manifest.train[0])
                        .map_or(0, |(_, at)| *at);
                    write_atomically(
                        &self.dir.join(format!("{shards_root}.provider")),
                        record(&provider, now_ms).as_bytes(),
                    )?;
                    index.claims.insert(shards_root, (provider, now_ms));
                    index.bytes = needed;
                    let listed = manifest
                        .train
                        .iter()
                        .chain(&manifest.heldout)
                        .copied()
                        .collect();
                    index
                        .manifests
                        .insert(shards_root, (listed, json.len() as u64));
                }
            }
        }
        write_atomically(&self.dir.join(format!("{shards_root}.manifest")), &json)?;
        self.blobs
            .put(BlobKind::Manifest, shards_root.0, json, Audience::Anyone);
        let peer_signature = self.signer.bind_dataset(
            &provider,
            &trainmesh_contracts::Hash32(shards_root.0),
            &trainmesh_contracts::Hash32(heldout_root.0),
        );
        Ok(ManifestReply {
            shards_root: shards_root.to_hex(),
            heldout_root: heldout_root.to_hex(),
            shard_sizes,
            heldout_samples,
            peer_id: self.peer_id.clone(),
            peer_signature: hex::encode(peer_signature),
        })
    }
}

/// The provider a manifest names, once its signature over the two roots checks.
fn provider_of(
    m: &ManifestRequest,
    train: &[Hash32],
    heldout: &[Hash32],
) -> Result<trainmesh_contracts::Address, UploadError> {
    let bad = |why: &str| UploadError::BadSignature(format!("manifest: {why}"));
    let key: [u8; 32] = hex::decode(m.provider.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("provider is not a 32-byte hex public key"))?;
    let signature: [u8; 64] = hex::decode(m.signature.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("signature is not 64 bytes of hex"))?;
    let message = trainmesh_contracts::datasets::manifest_message(
        &trainmesh_contracts::Hash32(merkle_root(train).0),
        &trainmesh_contracts::Hash32(merkle_root(heldout).0),
    );
    ed25519_zebra::VerificationKey::try_from(key)
        .and_then(|k| k.verify(&ed25519_zebra::Signature::from(signature), &message))
        .map_err(|_| bad("the provider's key did not sign these roots"))?;
    Ok(trainmesh_contracts::Address::from_public_key(&key))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), UploadError> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use trainmesh_gpu::dataset::Samples;

    fn shard(seed: u8, classes: usize) -> Vec<u8> {
        let x = (0..12)
            .map(|i| f32::from(seed) / 8.0 + i as f32 / 32.0)
            .collect();
        Samples::new(4, classes, x, vec![0, 1, (seed as usize % classes) as u8])
            .unwrap()
            .encode_shard()
    }

    const NODE_SECRET: [u8; 32] = [9; 32];
    const PROVIDER: [u8; 32] = [1; 32];
    const T0: u64 = 1_000_000;

    fn address_of(secret: [u8; 32]) -> trainmesh_contracts::Address {
        trainmesh_contracts::Address::from_public_key(
            &ed25519_zebra::VerificationKey::from(&ed25519_zebra::SigningKey::from(secret)).into(),
        )
    }

    /// The provider who uploads the test's shards.
    fn owner() -> trainmesh_contracts::Address {
        address_of(PROVIDER)
    }

    fn open(dir: &Path) -> (Uploads, BlobStore) {
        let blobs = BlobStore::default();
        let signer = trainmesh_actors::work::PeerSigner::new(&NODE_SECRET);
        let u = Uploads::open(dir.to_path_buf(), blobs.clone(), "peer".into(), signer).unwrap();
        (u, blobs)
    }

    /// A manifest request signed by the provider of secret `provider`.
    fn signed(
        provider: [u8; 32],
        name: &str,
        train: &str,
        heldout: &str,
        classes: u32,
    ) -> ManifestRequest {
        let key = ed25519_zebra::SigningKey::from(provider);
        let public: [u8; 32] = ed25519_zebra::VerificationKey::from(&key).into();
        let roots = [train, heldout].map(|h| {
            parse_hash(h)
                .map(|h| trainmesh_contracts::Hash32(merkle_root(&[h]).0))
                .unwrap_or_default()
        });
        let message = trainmesh_contracts::datasets::manifest_message(&roots[0], &roots[1]);
        let signature: [u8; 64] = key.sign(&message).into();
        ManifestRequest {
            name: name.into(),
            features: 4,
            classes,
            train: vec![train.into()],
            heldout: vec![heldout.into()],
            tokenizer: None,
            provider: hex::encode(public),
            signature: hex::encode(signature),
        }
    }

    #[test]
    fn text_datasets_upload_as_token_shards_with_their_tokenizer() {
        use trainmesh_gpu::tokens::Tokens;
        let dir = tempfile::tempdir().unwrap();
        let (u, _) = open(dir.path());
        let tokens = |text: &[u8]| Tokens::from_bytes(text).encode_shard();
        let a = u
            .put_shard(
                Split::Train,
                tokens(b"to be or not to be"),
                owner(),
                u64::MAX,
                T0,
            )
            .unwrap();
        let b = u
            .put_shard(
                Split::Heldout,
                tokens(b"that is the question"),
                owner(),
                u64::MAX,
                T0,
            )
            .unwrap();
        assert_eq!((a.samples, a.features, a.classes), (18, 0, 256));
        let text = |tokenizer: Option<&str>, features| {
            let mut r = signed(PROVIDER, "verse", &a.blake3, &b.blake3, 256);
            r.features = features;
            r.tokenizer = tokenizer.map(Into::into);
            r
        };
        // Without a tokenizer, or with one that is not a tokenizer name, or with features: refused.
        for bad in [
            text(None, 0),
            text(Some("bpe:nothex"), 0),
            text(Some("sentencepiece"), 0),
            text(Some("bytes"), 4),
        ] {
            assert!(
                matches!(
                    u.put_manifest(bad.clone()),
                    Err(UploadError::BadManifest(_))
                ),
                "{bad:?}"
            );
        }
        // A sample manifest over token shards: their shapes differ, refused.
        assert!(matches!(
            u.put_manifest(signed(PROVIDER, "verse", &a.blake3, &b.blake3, 256)),
            Err(UploadError::BadManifest(_))
        ));
        let reply = u.put_manifest(text(Some("bytes"), 0)).unwrap();
        assert_eq!(reply.heldout_samples, 20);
        assert!(check_tokenizer_name(&format!("bpe:{}", "ab".repeat(32))).is_ok());
    }

    #[test]
    fn shards_and_manifests_are_checked_served_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (u, blobs) = open(dir.path());
        let a = u
            .put_shard(Split::Train, shard(1, 3), owner(), u64::MAX, T0)
            .unwrap();
        let b = u
            .put_shard(Split::Heldout, shard(2, 3), owner(), u64::MAX, T0)
            .unwrap();
        assert_eq!((a.samples, a.features, a.classes), (3, 4, 3));
        // Again: the same answer, nothing counted twice.
        assert_eq!(
            u.put_shard(Split::Train, shard(1, 3), owner(), u64::MAX, T0)
                .unwrap(),
            a
        );
        assert!(matches!(
            u.put_shard(Split::Heldout, shard(1, 3), owner(), u64::MAX, T0),
            Err(UploadError::BadShard(_))
        ));
        let mut cut = shard(3, 3);
        cut.pop();
        assert!(matches!(
            u.put_shard(Split::Train, cut, owner(), u64::MAX, T0),
            Err(UploadError::BadShard(_))
        ));
        assert!(matches!(
            u.put_shard(
                Split::Train,
                vec![0; SHARD_UPLOAD_BYTES_MAX + 1],
                owner(),
                u64::MAX,
                T0
            ),
            Err(UploadError::BadShard(_))
        ));

        let provider = PROVIDER;
        let request =
            |train: &str, heldout: &str, classes| signed(provider, "tiny", train, heldout, classes);
        let reply = u.put_manifest(request(&a.blake3, &b.blake3, 3)).unwrap();
        assert_eq!(reply.shard_sizes, vec![a.bytes]);
        assert_eq!(reply.heldout_samples, 3);
        assert_eq!(reply.peer_id, "peer");
        // The node's binding of these roots to this provider, which the ledger checks.
        let provider_address = trainmesh_contracts::Address::from_public_key(
            &ed25519_zebra::VerificationKey::from(&ed25519_zebra::SigningKey::from(provider))
                .into(),
        );
        let node_key: ed25519_zebra::VerificationKey =
            (&ed25519_zebra::SigningKey::from(NODE_SECRET)).into();
        let binding = trainmesh_contracts::datasets::binding_message(
            &provider_address,
            &trainmesh_contracts::Hash32(parse_hash(&reply.shards_root).unwrap().0),
            &trainmesh_contracts::Hash32(parse_hash(&reply.heldout_root).unwrap().0),
        );
        let sig: [u8; 64] = hex::decode(&reply.peer_signature)
            .unwrap()
            .try_into()
            .unwrap();
        node_key
            .verify(&ed25519_zebra::Signature::from(sig), &binding)
            .expect("the node bound the dataset to its provider");
        // The same provider again: the same binding. Another provider over the same shards:
        // refused, they are not its uploads. A signature over other roots: refused.
        assert_eq!(
            u.put_manifest(request(&a.blake3, &b.blake3, 3)).unwrap(),
            reply
        );
        assert!(matches!(
            u.put_manifest(signed([2; 32], "mine", &a.blake3, &b.blake3, 3)),
            Err(UploadError::BadManifest(_))
        ));
        let mut forged = request(&a.blake3, &b.blake3, 3);
        forged.signature = signed(provider, "tiny", &b.blake3, &a.blake3, 3).signature;
        assert!(matches!(
            u.put_manifest(forged),
            Err(UploadError::BadSignature(_))
        ));
        assert!(matches!(
            u.put_manifest(request(&b.blake3, &a.blake3, 3)),
            Err(UploadError::BadManifest(_))
        ));
        assert!(matches!(
            u.put_manifest(request(&a.blake3, &b.blake3, 4)),
            Err(UploadError::BadManifest(_))
        ));
        assert!(matches!(
            u.put_manifest(request(&"ab".repeat(32), &b.blake3, 3)),
            Err(UploadError::UnknownShard(_))
        ));
        assert!(matches!(
            u.put_manifest(request("zz", &b.blake3, 3)),
            Err(UploadError::BadManifest(_))
        ));
        let root = parse_hash(&reply.shards_root).unwrap();
        let a_hash = parse_hash(&a.blake3).unwrap();
        let b_hash = parse_hash(&b.blake3).unwrap();
        assert!(matches!(
            blobs.get(BlobKind::Shard, &b_hash.0),
            Some((_, Audience::Evaluators))
        ));

        // A restart serves the same, and skips a file whose bytes do not match its name.
        std::fs::write(
            dir.path().join(format!("{}.train", "cd".repeat(32))),
            shard(4, 3),
        )
        .unwrap();
        let (_, again) = open(dir.path());
        assert!(matches!(
            again.get(BlobKind::Shard, &a_hash.0),
            Some((_, Audience::Anyone))
        ));
        assert!(matches!(
            again.get(BlobKind::Shard, &b_hash.0),
            Some((_, Audience::Evaluators))
        ));
        assert!(again.get(BlobKind::Manifest, &root.0).is_some());
        assert_eq!(again.len(), 3);
        // Ownership survives the restart too.
        let (u2, _) = open(dir.path());
        assert!(matches!(
            u2.put_manifest(signed([2; 32], "mine", &a.blake3, &b.blake3, 3)),
            Err(UploadError::BadManifest(_))
        ));
        assert_eq!(
            u2.put_manifest(request(&a.blake3, &b.blake3, 3)).unwrap(),
            reply
        );
    }

    /// Junk uploads cost their uploader: at most its deposit's allowance is kept, and whatever
    /// no attached dataset uses within the time-to-live is deleted (files, serving, quota).
    #[test]
    fn uploads_are_bounded_by_the_uploaders_deposit_and_expire_unused() {
        let dir = tempfile::tempdir().unwrap();
        let (u, blobs) = open(dir.path());
        let junk = address_of([3; 32]);
        let one = shard(1, 3);
        let allowance = one.len() as u64 * 2;
        u.put_shard(Split::Train, shard(1, 3), junk, allowance, T0)
            .unwrap();
        u.put_shard(Split::Train, shard(2, 3), junk, allowance, T0)
            .unwrap();
        assert!(matches!(
            u.put_shard(Split::Train, shard(3, 3), junk, allowance, T0),
            Err(UploadError::QuotaExceeded { .. })
        ));
        // Another provider is not held back by it.
        let a = u
            .put_shard(Split::Train, shard(4, 3), owner(), u64::MAX, T0)
            .unwrap();
        let b = u
            .put_shard(Split::Heldout, shard(5, 3), owner(), u64::MAX, T0)
            .unwrap();
        let reply = u
            .put_manifest(signed(PROVIDER, "kept", &a.blake3, &b.blake3, 3))
            .unwrap();
        let kept_root = parse_hash(&reply.shards_root).unwrap();
        // Before the time-to-live nothing goes; after it, all but the attached dataset's.
        assert_eq!(u.sweep(T0 + UPLOAD_TTL_MS, |_| false), 0);
        let removed = u.sweep(T0 + UPLOAD_TTL_MS + 1, |root| *root == kept_root);
        assert_eq!(removed, 2, "the two junk shards");
        assert_eq!(u.len(), 2);
        let junk_hash = Hash32::of(&shard(1, 3));
        assert!(blobs.get(BlobKind::Shard, &junk_hash.0).is_none());
        assert!(!dir.path().join(format!("{junk_hash}.train")).exists());
        // Its quota is free again.
        u.put_shard(
            Split::Train,
            shard(3, 3),
            junk,
            allowance,
            T0 + UPLOAD_TTL_MS + 2,
        )
        .unwrap();
        // A restart keeps what is kept, and an unattached manifest later goes too.
        let (again, _) = open(dir.path());
        assert_eq!(again.len(), 3);
        let removed = again.sweep(T0 + 3 * UPLOAD_TTL_MS, |_| false);
        assert_eq!(
            removed, 4,
            "the manifest, its two shards and the last junk shard"
        );
        assert_eq!(again.len(), 0);
    }
}
