//! The seed corpus: a handful of valid inputs per target, from which the fuzzer mutates. Written
//! into `fuzz/corpus/<target>/` by `cargo run -p trainmesh-fuzzing --example write_corpus`;
//! every seed is deterministic (fixed keys, fixed search), so writing them again changes nothing.

use std::sync::Arc;

use trainmesh_actors::wire::{consensus_frame, BlobKind, MeshMessage, SyncedBatch};
use trainmesh_contracts::jobs::{HyperParams, JobSpec, Metric, Optimizer, Target};
use trainmesh_contracts::workers::{Capability, Role};
use trainmesh_contracts::{Address, Amount, Call, DatasetId, TimestampMs as LedgerTime};
use trainmesh_dag::encoding::encode;
use trainmesh_dag::{
    AuthorityIndex, Certificate, ConsensusMessage, Header, Round, SignedHeader, SyncRequest,
    SyncResponse, TimestampMs, Vote,
};
use trainmesh_gpu::dataset::DatasetManifest;
use trainmesh_gpu::hash::Hash32;
use trainmesh_gpu::optim::{HyperParams as TrainHyper, Optimizer as TrainOptimizer};
use trainmesh_gpu::train::{initial_state, WorkResult};
use trainmesh_ledger::account_key::AccountKey;
use trainmesh_node::submission::SubmitBody;
use trainmesh_node::uploads::ManifestRequest;

use crate::dag::{committee, key};
use crate::gateway::{fixture_shard, fixture_shard_hashes};
use crate::gpu::{checkpoint_models, CHECKPOINT_MODELS};
use crate::{blob, dag_core, CHAIN_ID};

/// Every target's seeds, by target name.
pub fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("dag_message", dag_message()),
        ("dag_core", dag_core_inputs()),
        ("mesh_frame", mesh_frame()),
        ("ledger_transaction", transactions()),
        ("blob", blobs()),
        ("shard", vec![fixture_shard(1), fixture_shard(2)]),
        ("model_spec", model_specs()),
        ("checkpoint", checkpoints()),
        ("gateway_submit", submit_bodies()),
        ("gateway_manifest", manifest_bodies()),
    ]
}

/// A round-1 certificate of authority 1, voted by authorities 0 to 2.
fn certificate() -> Certificate {
    let genesis = Certificate::genesis(committee());
    let author = AuthorityIndex(1);
    let header = Arc::new(SignedHeader::new(
        Header {
            epoch: committee().epoch(),
            chain: committee().chain(),
            round: Round(1),
            author,
            created_at: TimestampMs(1_000),
            parents: genesis.iter().map(|c| c.reference()).collect(),
            payload: vec![bytes::Bytes::from_static(b"a transaction")],
        },
        &key(author),
    ));
    let votes = (0..3)
        .map(|v| {
            let voter = AuthorityIndex(v);
            let vote = Vote::new(&header, voter, &key(voter));
            trainmesh_dag::messages::VoteSignature {
                voter,
                signature: vote.signature,
            }
        })
        .collect();
    Certificate::new(header, votes)
}

fn consensus_messages() -> Vec<ConsensusMessage> {
    let c = certificate();
    let header = (**c.signed_header()).clone();
    vec![
        ConsensusMessage::Vote(Vote::new(
            &header,
            AuthorityIndex(2),
            &key(AuthorityIndex(2)),
        )),
        ConsensusMessage::Header(header),
        ConsensusMessage::CertificateSummary(c.summary()),
        ConsensusMessage::SyncRequest(SyncRequest::Certificates {
            digests: vec![c.digest()],
        }),
        ConsensusMessage::SyncRequest(SyncRequest::Rounds {
            round: Round(0),
            author: AuthorityIndex(0),
        }),
        // The top of the range, from which a mutation reaches the last round.
        ConsensusMessage::SyncRequest(SyncRequest::Rounds {
            round: Round(u64::MAX - 1),
            author: AuthorityIndex(u32::MAX),
        }),
        ConsensusMessage::SyncResponse(SyncResponse {
            certificates: vec![c.clone()],
            rounds_from: Some((Round(1), AuthorityIndex(0))),
        }),
        ConsensusMessage::Certificate(c),
    ]
}

fn dag_message() -> Vec<Vec<u8>> {
    consensus_messages()
        .iter()
        .map(|m| [&[1u8][..], &encode(m)].concat())
        .collect()
}

/// Structured plans are found, not written: a fixed pseudo-random search keeps the first inputs
/// that reach commits, Byzantine messages the cores accept, and both.
fn dag_core_inputs() -> Vec<Vec<u8>> {
    let mut state = 0x5eed_u64;
    let mut wanted: Vec<fn(&dag_core::Report) -> bool> = vec![
        |r| r.commits >= 3,
        |r| r.byzantine_accepted >= 2,
        |r| r.commits >= 1 && r.byzantine_accepted >= 1,
        |r| r.byzantine_refused >= 3,
    ];
    let mut found = Vec::new();
    for _ in 0..4_000 {
        let len = 64 + (splitmix(&mut state) % 1_024) as usize;
        let input: Vec<u8> = (0..len).map(|_| splitmix(&mut state) as u8).collect();
        let report = dag_core::run(&input);
        if let Some(i) = wanted.iter().position(|w| w(&report)) {
            wanted.remove(i);
            found.push(input);
        }
        if wanted.is_empty() {
            break;
        }
    }
    found
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn manifest() -> DatasetManifest {
    DatasetManifest {
        name: "seed".into(),
        features: 4,
        classes: 3,
        train: vec![Hash32::of(&fixture_shard(1))],
        heldout: vec![Hash32::of(&fixture_shard(2))],
        tokenizer: None,
    }
}

fn mesh_frame() -> Vec<Vec<u8>> {
    let manifest = serde_json::to_vec(&manifest()).expect("serializes");
    let messages = [
        MeshMessage::Transactions(transactions()),
        MeshMessage::SyncRequest { from: 1, max: 16 },
        MeshMessage::SyncResponse {
            batches: vec![SyncedBatch {
                index: 1,
                timestamp_ms: 1_000,
                transactions: transactions(),
                beacon_shares: vec![(
                    2,
                    trainmesh_ledger::beacon::BeaconShare {
                        commit: 0,
                        signature: [7; 48],
                    }
                    .encode(),
                )],
            }],
        },
        MeshMessage::BlobRequest {
            kind: BlobKind::Manifest,
            hash: [1; 32],
        },
        MeshMessage::BlobResponse {
            kind: BlobKind::Manifest,
            hash: trainmesh_gpu::hash::merkle_root(&self::manifest().train).0,
            bytes: Some(manifest),
        },
    ];
    let mut frames: Vec<Vec<u8>> = messages.iter().map(|m| m.encode().to_vec()).collect();
    frames.push(consensus_frame(&ConsensusMessage::Certificate(certificate())).to_vec());
    frames
}

fn job_spec() -> JobSpec {
    JobSpec {
        model: CHECKPOINT_MODELS[1].into(),
        dataset: DatasetId(1),
        hyper: HyperParams {
            optimizer: Optimizer::Adam,
            learning_rate_ppm: 10_000,
            batch_size: 8,
            total_steps: 64,
            steps_per_unit: 16,
            seed: 7,
        },
        target: Target {
            metric: Metric::Accuracy,
            threshold_ppm: 900_000,
        },
        budget: Amount(1_000_000),
        deadline: LedgerTime(1 << 40),
        tier: 1,
        min_memory_mb: 0,
    }
}

fn transactions() -> Vec<Vec<u8>> {
    let key = AccountKey::from_seed(1);
    let (peer_id, peer_signature) = key.peer_binding(&key.secret());
    let calls = [
        Call::Transfer {
            to: Address([9; 32]),
            amount: Amount(5),
        },
        Call::SubmitJob { spec: job_spec() },
        Call::RegisterWorker {
            role: Role::Trainer,
            bond: Amount(100),
            capability: Capability {
                adapter: "cpu".into(),
                backend: "cpu".into(),
                memory_mb: 1_024,
                gflops: 10,
                conformance: None,
            },
            peer_id,
            peer_signature,
        },
        Call::Heartbeat,
        Call::CommitAttestation {
            unit: trainmesh_contracts::UnitId {
                job: trainmesh_contracts::JobId(1),
                index: 0,
            },
            commitment: trainmesh_contracts::Hash32([4; 32]),
        },
        Call::Attest {
            unit: trainmesh_contracts::UnitId {
                job: trainmesh_contracts::JobId(1),
                index: 0,
            },
            attestation: trainmesh_contracts::jobs::Attestation {
                accept: true,
                metric_ppm: 960_000,
                tier: 1,
                segments_checked: vec![0, 17, 99],
            },
            salt: trainmesh_contracts::Hash32([5; 32]),
        },
        Call::Dispute {
            unit: trainmesh_contracts::UnitId {
                job: trainmesh_contracts::JobId(1),
                index: 0,
            },
            mv: trainmesh_contracts::disputes::Move::Chain {
                start: trainmesh_contracts::Hash32([6; 32]),
                start_proof: None,
                end: trainmesh_contracts::Hash32([7; 32]),
                end_proof: trainmesh_contracts::merkle::merkle_proof(
                    &[
                        trainmesh_contracts::Hash32([7; 32]),
                        trainmesh_contracts::Hash32([8; 32]),
                    ],
                    0,
                ),
            },
        },
    ];
    calls
        .into_iter()
        .enumerate()
        .map(|(nonce, call)| {
            key.sign_until(CHAIN_ID, nonce as u64, Amount(1_000_000), u64::MAX, call)
                .encode()
        })
        .collect()
}

fn blobs() -> Vec<Vec<u8>> {
    let chain = WorkResult {
        start: Hash32([3; 32]),
        start_step: 0,
        segment_steps: 2,
        chain: vec![Hash32([4; 32]), Hash32([5; 32])],
        losses: vec![0.5, 0.25, 0.125, 0.0625],
    };
    let checkpoint = checkpoints().remove(0);
    let shard = fixture_shard(1);
    vec![
        blob::input(
            BlobKind::Chain,
            chain.chain_root().0,
            &serde_json::to_vec(&chain).expect("serializes"),
        ),
        blob::input(
            BlobKind::Manifest,
            trainmesh_gpu::hash::merkle_root(&manifest().train).0,
            &serde_json::to_vec(&manifest()).expect("serializes"),
        ),
        blob::input(BlobKind::Shard, Hash32::of(&shard).0, &shard),
        blob::input(
            BlobKind::Checkpoint,
            Hash32::of(&checkpoint[1..]).0,
            &checkpoint[1..],
        ),
    ]
}

fn model_specs() -> Vec<Vec<u8>> {
    let mut specs: Vec<Vec<u8>> = CHECKPOINT_MODELS
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    specs.push(
        br#"{"kind":"mlp","input":64,"hidden":[{"units":32,"activation":"relu"},{"units":16,"activation":"sigmoid"}],"classes":10}"#
            .to_vec(),
    );
    specs
}

/// Initial states of every checkpoint model, without and with optimizer state.
fn checkpoints() -> Vec<Vec<u8>> {
    let optimizers = [
        TrainOptimizer::Sgd {
            lr: 0.1,
            momentum: 0.0,
        },
        TrainOptimizer::Adam {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
    ];
    let mut out = Vec::new();
    for (i, model) in checkpoint_models().iter().enumerate() {
        for optimizer in optimizers {
            let hyper = TrainHyper {
                optimizer,
                batch: 4,
                seed: 1,
            };
            let state = initial_state(model, &hyper);
            out.push([&[i as u8][..], &state.encode(model)].concat());
        }
    }
    out
}

fn submit_bodies() -> Vec<Vec<u8>> {
    transactions()
        .iter()
        .map(|t| {
            serde_json::to_vec(&SubmitBody {
                transaction: hex::encode(t),
            })
            .expect("serializes")
        })
        .collect()
}

fn manifest_bodies() -> Vec<Vec<u8>> {
    let (train, heldout) = fixture_shard_hashes();
    // Signed by a provider key over the roots of the shards it names.
    let provider = trainmesh_ledger::AccountKey::from_seed(5);
    let request = |train: &str, heldout: &str, classes| {
        let root = |h: &str| {
            let bytes: [u8; 32] = hex::decode(h).expect("hex").try_into().expect("32 bytes");
            let root = trainmesh_gpu::hash::merkle_root(&[trainmesh_gpu::hash::Hash32(bytes)]);
            trainmesh_contracts::Hash32(root.0)
        };
        let message = trainmesh_contracts::datasets::manifest_message(&root(train), &root(heldout));
        ManifestRequest {
            name: "seed".into(),
            features: 4,
            classes,
            train: vec![train.into()],
            heldout: vec![heldout.into()],
            tokenizer: None,
            provider: hex::encode(provider.public_key()),
            signature: hex::encode(provider.sign_message(&message)),
        }
    };
    [
        request(&train, &heldout, 3),
        request(&train, &heldout, 4),
        request(&heldout, &train, 3),
    ]
    .iter()
    .map(|r| serde_json::to_vec(r).expect("serializes"))
    .collect()
}
