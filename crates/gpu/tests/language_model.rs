//! A byte-level transformer language model trained on a real corpus (Debian's `fortunes`) with
//! AdamW: it learns, its checkpoints round-trip, and its work units replay bit for bit.

use trainmesh_gpu::checkpoint::TrainState;
use trainmesh_gpu::dataset::ShardStore;
use trainmesh_gpu::hash::Hash32;
use trainmesh_gpu::optim::{HyperParams, Optimizer};
use trainmesh_gpu::spec::ModelSpec;
use trainmesh_gpu::tokens::{fortunes_corpus, shard_tokens, Tokens, BYTES_TOKENIZER, FORTUNES_DIR};
use trainmesh_gpu::train::{evaluate_tokens, initial_state, CheckpointStore, Trainer};

fn corpus() -> Option<Vec<u8>> {
    let text = fortunes_corpus(std::path::Path::new(FORTUNES_DIR)).unwrap();
    if text.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{FORTUNES_DIR} missing: ./scripts/test.sh installs Debian's fortunes package"
        );
        eprintln!("SKIPPED: {FORTUNES_DIR} not installed (apt-get install fortunes)");
    }
    text
}

fn hyper(steps: u64) -> HyperParams {
    HyperParams {
        optimizer: Optimizer::AdamW {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            warmup_steps: 10,
            decay_steps: steps,
            min_lr: 1e-3,
            clip_norm: 1.0,
        },
        batch: 16,
        seed: 7,
    }
}

#[test]
fn a_byte_level_transformer_learns_english_and_replays_exactly() {
    let Some(text) = corpus() else { return };
    // 256 KiB of the corpus keeps the test quick; the held-out blocks are sealed in the manifest.
    let tokens = Tokens::from_bytes(&text[..text.len().min(256 << 10)]);
    let mut shards = ShardStore::new();
    let manifest = shard_tokens(
        "fortunes",
        BYTES_TOKENIZER,
        &tokens,
        16 << 10,
        0.125,
        3,
        &mut shards,
    )
    .unwrap();
    let train = shards.load_tokens(&manifest.train).unwrap();
    let heldout = shards.load_tokens(&manifest.heldout).unwrap();
    let model = ModelSpec::from_json(
        br#"{"kind":"transformer","layers":2,"d_model":64,"heads":4,"context":64,"vocab":256}"#,
    )
    .unwrap();
    let steps = 150;
    let hyper = hyper(steps);
    let mut state = initial_state(&model, &hyper);
    let before = evaluate_tokens(&model, &state.params, &heldout, 2).unwrap();
    assert!((before.loss - 256f64.ln()).abs() < 0.2, "{before:?}");
    let mut trainer = Trainer::new(&model, hyper, &train).unwrap().with_threads(2);
    let losses = trainer.run(&mut state, steps);
    let after = evaluate_tokens(&model, &state.params, &heldout, 2).unwrap();
    println!(
        "held-out loss {:.3} → {:.3} nats/token ({:.3} bits/token), accuracy {:.3}; last train loss {:.3}",
        before.loss,
        after.loss,
        after.loss / std::f64::consts::LN_2,
        after.accuracy,
        losses.last().unwrap()
    );
    // From uniform over 256 bytes (5.55 nats) to below the corpus's byte frequencies alone.
    assert!(after.loss < 3.3, "{after:?}");
    assert!(after.accuracy > 0.15, "{after:?}");

    // The checkpoint (AdamW state included) round-trips byte for byte.
    let bytes = state.encode(&model);
    assert_eq!(
        TrainState::decode_verified(&bytes, &Hash32::of(&bytes), &model).unwrap(),
        state
    );

    // A work unit from here, on two threads, replays on one thread to the same chain.
    let mut store = CheckpointStore::new();
    let (result, _) = trainer.work_unit(&state, 3, 2, &mut store).unwrap();
    let mut replay = Trainer::new(&model, hyper, &train).unwrap();
    for i in 0..3 {
        let start =
            TrainState::decode(store.get(&result.segment_start(i)).unwrap(), &model).unwrap();
        let mut s = start;
        replay.run(&mut s, 2);
        assert_eq!(s.hash(&model), result.chain[i], "segment {i}");
    }
    // A model fed samples, or a transformer fed the wrong vocabulary, is refused.
    let wrong = Tokens::new(300, vec![1, 2, 3]).unwrap();
    assert!(Trainer::new(&model, hyper, &wrong).is_err());
}
