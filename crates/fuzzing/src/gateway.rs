//! The gateway's JSON bodies, parsed as its JSON extractor parses them (`serde_json` into the
//! body type), then checked by the functions its handlers call.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use trainmesh_actors::blobs::BlobStore;
use trainmesh_gpu::dataset::Samples;
use trainmesh_ledger::transaction::SignedTransaction;
use trainmesh_node::submission::{check_submission, SubmitBody};
use trainmesh_node::uploads::{ManifestRequest, Split, UploadError, Uploads, MANIFEST_SHARDS_MAX};

use crate::CHAIN_ID;

/// `POST /v1/transactions`.
pub fn gateway_submit(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<SubmitBody>(data) else {
        return;
    };
    let Ok(submission) = check_submission(&body, CHAIN_ID) else {
        return;
    };
    let decoded = SignedTransaction::decode(&submission.bytes).expect("checked bytes decode");
    assert_eq!(decoded, submission.transaction);
    let is_job = matches!(
        submission.transaction.transaction.call,
        trainmesh_contracts::Call::SubmitJob { .. }
    );
    assert_eq!(is_job, submission.model.is_some());
}

/// The shards the manifest fixture holds: (hex hash, split, features, classes).
type KnownShards = BTreeMap<String, (Split, u32, u32)>;

struct ManifestFixture {
    uploads: Uploads,
    known: KnownShards,
}

/// Uploads holding one training and one held-out shard of 4 features and 3 classes, whose
/// folder is gone: a manifest that passes every check fails at the write, so no input touches
/// the disk, and the fixture is the same for every input.
fn manifest_fixture() -> &'static ManifestFixture {
    static FIXTURE: OnceLock<ManifestFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let uploads = Uploads::open(
            dir.path().join("uploads"),
            BlobStore::default(),
            "fuzz".into(),
            trainmesh_actors::work::PeerSigner::new(&[7; 32]),
        )
        .expect("uploads open");
        let mut known = KnownShards::new();
        for (split, seed) in [(Split::Train, 1u8), (Split::Heldout, 2)] {
            let info = uploads
                .put_shard(split, fixture_shard(seed), provider(), u64::MAX, 0)
                .expect("a valid shard");
            known.insert(info.blake3, (split, info.features, info.classes));
        }
        drop(dir);
        ManifestFixture { uploads, known }
    })
}

/// Who uploaded the fixture's shards (and signs the seed manifests).
pub fn provider() -> trainmesh_contracts::Address {
    trainmesh_ledger::AccountKey::from_seed(5).address()
}

/// One of the fixture's shards (also used by the seed corpus).
pub fn fixture_shard(seed: u8) -> Vec<u8> {
    let x = (0..12)
        .map(|i| f32::from(seed) / 8.0 + i as f32 / 64.0)
        .collect();
    Samples::new(4, 3, x, vec![0, 1, seed % 3])
        .expect("a valid shard")
        .encode_shard()
}

/// The hex hashes of the fixture's (training, held-out) shards.
pub fn fixture_shard_hashes() -> (String, String) {
    let hash = |seed| trainmesh_gpu::hash::Hash32::of(&fixture_shard(seed)).to_hex();
    (hash(1), hash(2))
}

/// `POST /v1/datasets/manifests`, against a plain statement of what the gateway accepts.
pub fn gateway_manifest(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<ManifestRequest>(data) else {
        return;
    };
    let fixture = manifest_fixture();
    let acceptable = acceptable(&request, &fixture.known);
    match fixture.uploads.put_manifest(request) {
        Ok(reply) => panic!("a manifest was written to a folder that is gone: {reply:?}"),
        Err(UploadError::Io(e)) => {
            assert!(
                acceptable,
                "a manifest the rules refuse reached the write: {e}"
            )
        }
        Err(e) => assert!(!acceptable, "an acceptable manifest was refused: {e}"),
    }
}

/// Whether a manifest request follows the rules: a name of 1 to 128 bytes, 1 to
/// `MANIFEST_SHARDS_MAX` shards per split, each a 32-byte hex hash of a shard uploaded to that
/// split with the manifest's features and classes.
fn acceptable(m: &ManifestRequest, known: &KnownShards) -> bool {
    let split_ok = |list: &[String], split: Split| {
        (1..=MANIFEST_SHARDS_MAX).contains(&list.len())
            && list.iter().all(|s| {
                let canonical = hex::decode(s.trim())
                    .ok()
                    .filter(|b| b.len() == 32)
                    .map(hex::encode);
                canonical
                    .and_then(|h| known.get(&h))
                    .is_some_and(|&(sp, f, c)| sp == split && (f, c) == (m.features, m.classes))
            })
    };
    (1..=128).contains(&m.name.len())
        && split_ok(&m.train, Split::Train)
        && split_ok(&m.heldout, Split::Heldout)
}
