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

/// The first `bytes` of the corpus as byte tokens, cut into 16 KiB shards of which an eighth is
/// held out (sealed in the manifest): (train, held-out).
fn split(text: &[u8], bytes: usize) -> (Tokens, Tokens) {
    let tokens = Tokens::from_bytes(&text[..text.len().min(bytes)]);
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
    (
        shards.load_tokens(&manifest.train).unwrap(),
        shards.load_tokens(&manifest.heldout).unwrap(),
    )
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
    // 256 KiB of the corpus keeps the test quick.
    let (train, heldout) = split(&text, 256 << 10);
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

/// Rounds of K = 3 trainers (DiLoCo): each trains H steps from the same global checkpoint on its
/// own slice of the windows, the outer step averages their pseudo-gradients; a slot left out (its
/// trainer failed) still gives a round. The global model learns, and every piece recomputes to
/// the same bits.
#[test]
fn rounds_of_three_trainers_learn_and_recompute_exactly() {
    use trainmesh_gpu::optim::DataSlice;
    use trainmesh_gpu::outer::{outer_step, OuterParams};
    let Some(text) = corpus() else { return };
    let (train, heldout) = split(&text, 128 << 10);
    let model = ModelSpec::from_json(
        br#"{"kind":"transformer","layers":1,"d_model":32,"heads":2,"context":32,"vocab":256}"#,
    )
    .unwrap();
    let (rounds, k, h) = (4u64, 3u32, 15u64);
    let hyper = HyperParams {
        batch: 8,
        ..hyper(rounds * h)
    };
    let mut global = initial_state(&model, &hyper);
    let before = evaluate_tokens(&model, &global.params, &heldout, 1).unwrap();
    let mut last_inners = Vec::new();
    for round in 0..rounds {
        let seed = *blake3::hash(&round.to_le_bytes()).as_bytes();
        let inners: Vec<TrainState> = (0..k)
            .map(|index| {
                let mut s = global.clone();
                Trainer::new(&model, hyper, &train)
                    .unwrap()
                    .with_slice(&DataSlice {
                        seed,
                        index,
                        count: k,
                    })
                    .unwrap()
                    .run(&mut s, h);
                s
            })
            .collect();
        // The last round loses its third trainer: the outer step runs on the two that finished.
        let finished = if round + 1 == rounds {
            &inners[..2]
        } else {
            &inners[..]
        };
        let next = outer_step(&global, finished, &OuterParams::DILOCO).unwrap();
        assert_eq!(next.step, global.step + h);
        assert_eq!(
            next.encode(&model),
            outer_step(&global, finished, &OuterParams::DILOCO)
                .unwrap()
                .encode(&model)
        );
        last_inners = inners;
        global = next;
    }
    let after = evaluate_tokens(&model, &global.params, &heldout, 1).unwrap();
    println!(
        "rounds of 3: held-out loss {:.3} → {:.3} after {rounds} rounds of {h} steps",
        before.loss, after.loss
    );
    assert!(after.loss < before.loss - 1.0, "{before:?} → {after:?}");
    // Different slices give different inner results.
    assert_ne!(last_inners[0].params, last_inners[1].params);
}
