//! Writes the SDK's engine vectors (see README.md).

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

fn main() {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let digits = digits_bundled();

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
        std::fs::write(out.join(&file), &bytes).expect("writing a checkpoint");
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

    let doc = json!({
        "comment": "Written by sdk/python/tests/engine (the engine itself); checked by test_engine_vectors.py.",
        "shards": [
            {"what": "the first ten bundled digits", "blake3": Hash32::of(&shard).to_hex(), "bytes": shard.len()},
            {"what": "3 features, 2 classes: [0, .5, 1] → 0, [.25, .75, .125] → 1", "blake3": Hash32::of(&tiny).to_hex(), "bytes": tiny.len()},
        ],
        "merkle": {"leaves": "BLAKE3 of i as u32 little-endian, i = 0, 1, ...", "roots": roots},
        "models": models,
    });
    let text = serde_json::to_string_pretty(&doc).expect("serializes") + "\n";
    std::fs::write(out.join("engine_vectors.json"), text).expect("writing the vectors");
}
