//! The vectors the Python SDK checks its numpy models and shard encoding against
//! (`sdk/python/tests/engine_vectors.json` and `engine_*.safetensors`), written by the engine
//! itself: shard bytes, Merkle roots, and for a logistic, an MLP (tanh, sigmoid) and a CNN briefly
//! trained on the digits, their checkpoints, the logits of the first digits (f32 bits) and the
//! count of correct predictions. This test fails when the engine's arithmetic changes them, so the
//! SDK is never checked against stale numbers; `TRAINMESH_WRITE_SDK_VECTORS=1` rewrites them.

use std::path::PathBuf;

use serde_json::{json, Value};
use trainmesh_gpu::dataset::Samples;
use trainmesh_gpu::executor;
use trainmesh_gpu::hash::{merkle_root, Hash32};
use trainmesh_gpu::import::digits_bundled;
use trainmesh_gpu::optim::{HyperParams, Optimizer};
use trainmesh_gpu::spec::ModelSpec;
use trainmesh_gpu::train::{initial_state, Trainer};

const LOGIT_ROWS: usize = 16;

/// Every file of the vectors, by name, as the engine computes them now.
fn generate() -> Vec<(String, Vec<u8>)> {
    let digits = digits_bundled();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();

    // Shards: the first ten digits, and a tiny hand-made one.
    let first: Vec<usize> = (0..10).collect();
    let shard = digits.select(&first).encode_shard();
    let tiny = Samples::new(3, 2, vec![0.0, 0.5, 1.0, 0.25, 0.75, 0.125], vec![0, 1])
        .expect("valid samples")
        .encode_shard();
    let leaves: Vec<Hash32> = (0..6u32).map(|i| Hash32::of(&i.to_le_bytes())).collect();
    let roots: Vec<Value> = (0..=leaves.len())
        .map(|n| json!({"leaves": n, "root": merkle_root(&leaves[..n]).to_hex()}))
        .collect();

    let specs = [
        (
            "logistic",
            r#"{"kind":"logistic","input":64,"classes":10}"#,
            40u64,
        ),
        (
            "mlp",
            r#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":24,"activation":"tanh"},{"units":16,"activation":"sigmoid"}]}"#,
            60,
        ),
        (
            "cnn",
            r#"{"kind":"cnn","input":{"channels":1,"height":8,"width":8},"classes":10,"conv":[{"filters":4,"kernel":3,"activation":"tanh"},{"filters":3,"kernel":2,"activation":"relu"}],"hidden":[{"units":16,"activation":"sigmoid"}]}"#,
            40,
        ),
    ];
    let mut models = Vec::new();
    for (name, spec, steps) in specs {
        let model = ModelSpec::from_json(spec.as_bytes()).expect("valid spec");
        let hyper = HyperParams {
            optimizer: Optimizer::Adam {
                lr: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            batch: 32,
            seed: 5,
        };
        let mut state = initial_state(&model, &hyper);
        Trainer::new(&model, hyper, &digits)
            .expect("trainer")
            .run(&mut state, steps);
        let bytes = state.encode(&model);
        let file = format!("engine_{name}.safetensors");
        files.push((file.clone(), bytes.clone()));
        let rows: Vec<usize> = (0..LOGIT_ROWS).collect();
        let head = digits.select(&rows);
        let logits = executor::logits(&model, &state.params, &head.x, LOGIT_ROWS);
        let (correct, _) = executor::evaluate(&model, &state.params, &digits.x, &digits.y, 256);
        models.push(json!({
            "name": name,
            "spec": spec,
            "checkpoint": file,
            "blake3": Hash32::of(&bytes).to_hex(),
            "step": steps,
            "logit_rows": LOGIT_ROWS,
            "logits_f32_bits": logits.iter().map(|v| format!("{:08x}", v.to_bits())).collect::<Vec<_>>(),
            "correct": correct,
            "samples": digits.len(),
        }));
    }

    // A small byte-level transformer, briefly trained with AdamW on a fixed text: its checkpoint,
    // the logits of two sequences (f32 bits) and its mean loss over the text's windows.
    let text = "It is a truth universally acknowledged, that a single man in possession of a good \
                fortune, must be in want of a wife. "
        .repeat(8);
    let tokens = trainmesh_gpu::tokens::Tokens::from_bytes(text.as_bytes());
    let spec =
        r#"{"kind":"transformer","layers":2,"d_model":16,"heads":2,"context":12,"vocab":256}"#;
    let model = ModelSpec::from_json(spec.as_bytes()).expect("valid spec");
    let hyper = HyperParams {
        optimizer: Optimizer::AdamW {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            warmup_steps: 5,
            decay_steps: 30,
            min_lr: 0.001,
            clip_norm: 1.0,
        },
        batch: 4,
        seed: 3,
    };
    let mut state = initial_state(&model, &hyper);
    Trainer::new(&model, hyper, &tokens)
        .expect("trainer")
        .run(&mut state, 30);
    let bytes = state.encode(&model);
    let file = "engine_transformer.safetensors".to_string();
    files.push((file.clone(), bytes.clone()));
    let dims = model.transformer.expect("a transformer");
    let inputs: Vec<u32> = tokens.ids[..24].to_vec();
    let batch = trainmesh_gpu::transformer::TokenBatch {
        inputs: &inputs,
        targets: &tokens.ids[1..25],
        batch: 2,
        seq: 12,
    };
    let logits = trainmesh_gpu::transformer::logits(&dims, &state.params, &batch, 1);
    let metrics = trainmesh_gpu::train::evaluate_tokens(&model, &state.params, &tokens, 1)
        .expect("evaluates");
    let transformers = vec![json!({
        "name": "transformer",
        "spec": spec,
        "checkpoint": file,
        "blake3": Hash32::of(&bytes).to_hex(),
        "step": 30,
        "text": text,
        "inputs": inputs,
        "logits_f32_bits": logits.iter().map(|v| format!("{:08x}", v.to_bits())).collect::<Vec<_>>(),
        "loss": metrics.loss,
    })];

    let doc = json!({
        "comment": "Written by crates/gpu/tests/sdk_vectors.rs (the engine itself); checked there and by test_engine_vectors.py.",
        "shards": [
            {"what": "the first ten bundled digits", "blake3": Hash32::of(&shard).to_hex(), "bytes": shard.len()},
            {"what": "3 features, 2 classes: [0, .5, 1] → 0, [.25, .75, .125] → 1", "blake3": Hash32::of(&tiny).to_hex(), "bytes": tiny.len()},
        ],
        "merkle": {"leaves": "BLAKE3 of i as u32 little-endian, i = 0, 1, ...", "roots": roots},
        "models": models,
        "transformers": transformers,
    });
    let text = serde_json::to_string_pretty(&doc).expect("serializes") + "\n";
    files.push(("engine_vectors.json".into(), text.into_bytes()));
    files
}

#[test]
fn the_sdks_engine_vectors_are_what_the_engine_computes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sdk/python/tests");
    let write = std::env::var_os("TRAINMESH_WRITE_SDK_VECTORS").is_some();
    for (name, bytes) in generate() {
        let path = dir.join(&name);
        if write {
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            stored == bytes,
            "{name} differs from what the engine computes now; if the change is intended, rerun with TRAINMESH_WRITE_SDK_VECTORS=1 and check the SDK's numpy models still match"
        );
    }
}
