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
//! Files: `<blake3>.train` and `<blake3>.heldout` (shards), `<shards root>.manifest` (the
//! manifest's JSON, as trainers fetch it), `<shards root>.provider` (the claiming provider's
//! address, hex). Every file is checked against its name when loaded.

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
            UploadError::BadSignature(_) => (400, "bad_signature"),
            UploadError::StorageFull { .. } => (507, "storage_full"),
            UploadError::Io(_) => (500, "internal"),
        }
    }
}

#[derive(Debug, Default)]
struct Index {
    shards: HashMap<Hash32, ShardInfo>,
    /// Which provider claimed each shards root.
    claims: HashMap<Hash32, trainmesh_contracts::Address>,
    bytes: u64,
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
                "provider" => {
                    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
                    let claim = parse_hash(stem)
                        .ok()
                        .zip(trainmesh_contracts::Address::from_hex(text.trim()).ok());
                    match claim {
                        Some((root, provider)) => {
                            let mut index = uploads.index.lock().expect("uploads lock");
                            index.claims.insert(root, provider);
                        }
                        None => tracing::warn!(path = %path.display(), "claim skipped"),
                    }
                    continue;
                }
                _ => continue,
            };
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            match uploads.admit(split, bytes, Some(stem)) {
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
                    uploads.index.lock().expect("uploads lock").bytes += bytes.len() as u64;
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

    /// Checks a shard and serves it (without writing it anywhere).
    fn admit(
        &self,
        split: Split,
        bytes: Vec<u8>,
        named: Option<&str>,
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
        let samples =
            decode_shard(&bytes, &hash).map_err(|e| UploadError::BadShard(e.to_string()))?;
        let info = ShardInfo {
            blake3: hash.to_hex(),
            bytes: bytes.len() as u64,
            samples: samples.len() as u64,
            features: samples.features as u32,
            classes: samples.classes as u32,
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
        index.bytes = needed;
        index.shards.insert(hash, info.clone());
        self.blobs
            .put(BlobKind::Shard, hash.0, bytes, split.audience());
        Ok((info, true))
    }

    /// Checks, stores and serves one shard; uploading the same shard again is a no-op.
    pub fn put_shard(&self, split: Split, bytes: Vec<u8>) -> Result<ShardInfo, UploadError> {
        let copy = bytes.clone();
        let (info, new) = self.admit(split, bytes, None)?;
        if new {
            let path = self.dir.join(format!("{}.{}", info.blake3, split.name()));
            if let Err(e) = write_atomically(&path, &copy) {
                // Not kept on disk: not served either, so a restart loses nothing it promised.
                let mut index = self.index.lock().expect("uploads lock");
                index.shards.remove(&Hash32::of(&copy));
                index.bytes -= info.bytes;
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
        let manifest = DatasetManifest {
            name: m.name,
            features: m.features,
            classes: m.classes,
            train,
            heldout,
        };
        let shards_root = merkle_root(&manifest.train);
        let heldout_root = merkle_root(&manifest.heldout);
        let json = serde_json::to_vec(&manifest).expect("manifests serialize");
        {
            // One provider per shards root on this node; the manifest's bytes count.
            let mut index = self.index.lock().expect("uploads lock");
            match index.claims.get(&shards_root) {
                Some(p) if *p != provider => return Err(UploadError::Claimed(p.to_hex())),
                Some(_) => {}
                None => {
                    let needed = index.bytes + json.len() as u64;
                    if needed > UPLOADS_BYTES_MAX {
                        return Err(UploadError::StorageFull { needed });
                    }
                    write_atomically(
                        &self.dir.join(format!("{shards_root}.provider")),
                        provider.to_hex().as_bytes(),
                    )?;
                    index.claims.insert(shards_root, provider);
                    index.bytes = needed;
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
            provider: hex::encode(public),
            signature: hex::encode(signature),
        }
    }

    #[test]
    fn shards_and_manifests_are_checked_served_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (u, blobs) = open(dir.path());
        let a = u.put_shard(Split::Train, shard(1, 3)).unwrap();
        let b = u.put_shard(Split::Heldout, shard(2, 3)).unwrap();
        assert_eq!((a.samples, a.features, a.classes), (3, 4, 3));
        // Again: the same answer, nothing counted twice.
        assert_eq!(u.put_shard(Split::Train, shard(1, 3)).unwrap(), a);
        assert!(matches!(
            u.put_shard(Split::Heldout, shard(1, 3)),
            Err(UploadError::BadShard(_))
        ));
        let mut cut = shard(3, 3);
        cut.pop();
        assert!(matches!(
            u.put_shard(Split::Train, cut),
            Err(UploadError::BadShard(_))
        ));
        assert!(matches!(
            u.put_shard(Split::Train, vec![0; SHARD_UPLOAD_BYTES_MAX + 1]),
            Err(UploadError::BadShard(_))
        ));

        let provider = [1; 32];
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
        // refused, the shards are claimed. A signature over other roots: refused.
        assert_eq!(
            u.put_manifest(request(&a.blake3, &b.blake3, 3)).unwrap(),
            reply
        );
        assert!(matches!(
            u.put_manifest(signed([2; 32], "mine", &a.blake3, &b.blake3, 3)),
            Err(UploadError::Claimed(_))
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
        // The claim survives the restart too.
        let (u2, _) = open(dir.path());
        assert!(matches!(
            u2.put_manifest(signed([2; 32], "mine", &a.blake3, &b.blake3, 3)),
            Err(UploadError::Claimed(_))
        ));
    }
}
