//! Training on the deterministic CPU path, through the public API: digits shards in, checkpoints
//! and held-out accuracy out.

use trainmesh_gpu::checkpoint::TrainState;
use trainmesh_gpu::dataset::{shard_dataset, ShardStore};
use trainmesh_gpu::import::digits_bundled;
use trainmesh_gpu::optim::{HyperParams, Optimizer};
use trainmesh_gpu::spec::ModelSpec;
use trainmesh_gpu::train::{evaluate, initial_state, CheckpointStore, Trainer};
use trainmesh_gpu::GpuError;

const MLP: &str =
    r#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":64,"activation":"relu"}]}"#;

fn adam(seed: u64) -> HyperParams {
    HyperParams {
        optimizer: Optimizer::Adam {
            lr: 3e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        batch: 32,
        seed,
    }
}

#[test]
fn mlp_on_digits_reaches_095_heldout_accuracy_and_is_deterministic() {
    let mut shards = ShardStore::new();
    let manifest = shard_dataset("digits", &digits_bundled(), 256, 0.2, 11, &mut shards).unwrap();
    let train = shards.load(&manifest.train).unwrap();
    let heldout = shards.load(&manifest.heldout).unwrap();
    assert_eq!(train.len() + heldout.len(), 1797);
    let model = ModelSpec::from_json(MLP.as_bytes()).unwrap();
    let hyper = adam(42);

    let run = || {
        let mut trainer = Trainer::new(&model, hyper, &train).unwrap();
        let mut store = CheckpointStore::new();
        let start = initial_state(&model, &hyper);
        // About 16 epochs of 44 steps, committed as 88 segments of 8 steps.
        let (result, state) = trainer.work_unit(&start, 88, 8, &mut store).unwrap();
        (result, state, store)
    };
    let (a, state, store) = run();
    let metrics = evaluate(&model, &state.params, &heldout).unwrap();
    println!(
        "held-out: {metrics:?}; first loss {} last loss {}",
        a.losses[0],
        a.losses.last().unwrap()
    );
    assert!(
        metrics.accuracy >= 0.95,
        "held-out accuracy {}",
        metrics.accuracy
    );

    let (b, _, _) = run();
    assert_eq!(a.chain, b.chain, "same inputs, same checkpoint chain");
    assert_eq!(a.chain_root(), b.chain_root());
    assert_eq!(a.final_checkpoint(), state.hash(&model));

    // The final checkpoint round-trips through its blob and evaluates the same.
    let blob = store.get(&a.final_checkpoint()).unwrap();
    let loaded = TrainState::decode_verified(blob, &a.final_checkpoint(), &model).unwrap();
    assert_eq!(evaluate(&model, &loaded.params, &heldout).unwrap(), metrics);

    // A different seed is a different run.
    let mut other = Trainer::new(&model, adam(43), &train).unwrap();
    let (c, _) = other
        .work_unit(
            &initial_state(&model, &adam(43)),
            2,
            8,
            &mut CheckpointStore::new(),
        )
        .unwrap();
    assert_ne!(c.chain[0], a.chain[0]);
}

#[test]
fn resuming_from_a_checkpoint_equals_training_straight_through() {
    let data = digits_bundled();
    let model = ModelSpec::from_json(MLP.as_bytes()).unwrap();
    let hyper = HyperParams {
        optimizer: Optimizer::Sgd {
            lr: 0.1,
            momentum: 0.9,
        },
        batch: 16,
        seed: 9,
    };
    let mut trainer = Trainer::new(&model, hyper, &data).unwrap();
    let mut straight = initial_state(&model, &hyper);
    trainer.run(&mut straight, 30);

    let mut first = initial_state(&model, &hyper);
    trainer.run(&mut first, 17);
    let bytes = first.encode(&model);
    let mut resumed = TrainState::decode(&bytes, &model).unwrap();
    // A fresh trainer (as an evaluator would build) continues from the blob.
    let mut fresh = Trainer::new(&model, hyper, &data).unwrap();
    fresh.run(&mut resumed, 13);
    assert_eq!(resumed.hash(&model), straight.hash(&model));
}

#[test]
fn logistic_and_cnn_train_on_digits() {
    let mut shards = ShardStore::new();
    let manifest = shard_dataset("digits", &digits_bundled(), 512, 0.2, 5, &mut shards).unwrap();
    let train = shards.load(&manifest.train).unwrap();
    let heldout = shards.load(&manifest.heldout).unwrap();
    for (spec, steps, floor) in [
        (r#"{"kind":"logistic","input":64,"classes":10}"#, 300, 0.90),
        (
            r#"{"kind":"cnn","input":{"channels":1,"height":8,"width":8},"classes":10,
                "conv":[{"filters":6,"kernel":3,"activation":"relu"}],"hidden":[]}"#,
            300,
            0.90,
        ),
    ] {
        let model = ModelSpec::from_json(spec.as_bytes()).unwrap();
        let hyper = adam(3);
        let mut trainer = Trainer::new(&model, hyper, &train).unwrap();
        let mut state = initial_state(&model, &hyper);
        trainer.run(&mut state, steps);
        let m = evaluate(&model, &state.params, &heldout).unwrap();
        println!("{spec}: {m:?}");
        assert!(m.accuracy >= floor, "{spec}: accuracy {}", m.accuracy);
    }
}

#[test]
fn mismatched_data_and_bad_shards_are_rejected() {
    let model = ModelSpec::from_json(br#"{"kind":"logistic","input":10,"classes":10}"#).unwrap();
    let data = digits_bundled();
    assert!(matches!(
        Trainer::new(&model, adam(1), &data),
        Err(GpuError::ShapeMismatch { .. })
    ));
    let mut shards = ShardStore::new();
    let manifest = shard_dataset("digits", &data, 300, 0.2, 1, &mut shards).unwrap();
    let victim = manifest.train[2];
    shards.raw_mut(&victim).unwrap().truncate(100);
    let err = shards.load(&manifest.train).unwrap_err();
    assert!(matches!(err, GpuError::ShardHashMismatch { .. }), "{err}");
    println!("rejected: {err}");
}

#[test]
fn thread_count_does_not_change_a_bit() {
    let data = digits_bundled();
    let model = ModelSpec::from_json(
        br#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":48,"activation":"relu"},{"units":24,"activation":"tanh"}]}"#,
    )
    .unwrap();
    let hyper = adam(21);
    let hashes: Vec<_> = [1usize, 2, 3]
        .iter()
        .map(|&threads| {
            let mut trainer = Trainer::new(&model, hyper, &data)
                .unwrap()
                .with_threads(threads);
            let mut state = initial_state(&model, &hyper);
            trainer.run(&mut state, 25);
            state.hash(&model)
        })
        .collect();
    assert_eq!(hashes[0], hashes[1]);
    assert_eq!(hashes[0], hashes[2]);
}

#[test]
fn fashion_mnist_imports_from_the_debian_package_when_installed() {
    let dir = std::path::Path::new(trainmesh_gpu::import::FASHION_MNIST_DIR);
    let Some((train, test)) = trainmesh_gpu::import::fashion_mnist(dir).unwrap() else {
        println!(
            "SKIPPED: {} not installed (apt-get install dataset-fashion-mnist)",
            dir.display()
        );
        return;
    };
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!((train.features, train.classes), (784, 10));
    for c in 0..10u8 {
        assert_eq!(
            test.y.iter().filter(|&&l| l == c).count(),
            1000,
            "class {c}"
        );
    }
    // Through the shard format and back, verified by hash.
    let mut shards = ShardStore::new();
    let manifest = shard_dataset("fashion", &test, 2500, 0.2, 1, &mut shards).unwrap();
    // 8000 train samples in shards of at most 2500, 2000 held out in one.
    assert_eq!((manifest.train.len(), manifest.heldout.len()), (4, 1));
    assert_eq!(shards.load(&manifest.heldout).unwrap().len(), 2000);
}

#[test]
fn every_matmul_kernel_gives_the_same_checkpoints() {
    use trainmesh_gpu::gemm::{with_isa, Isa};
    let data = digits_bundled();
    let model = ModelSpec::from_json(
        br#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":40,"activation":"relu"},{"units":20,"activation":"sigmoid"}]}"#,
    )
    .unwrap();
    let hyper = adam(5);
    let kernels = Isa::available();
    println!("kernels on this CPU: {kernels:?} of {:?}", Isa::ALL);
    let chains: Vec<_> = kernels
        .iter()
        .map(|&isa| {
            with_isa(isa, || {
                let mut trainer = Trainer::new(&model, hyper, &data).unwrap().with_threads(2);
                let start = initial_state(&model, &hyper);
                trainer
                    .work_unit(&start, 4, 5, &mut CheckpointStore::new())
                    .unwrap()
                    .0
                    .chain
            })
        })
        .collect();
    for (isa, chain) in kernels.iter().zip(&chains) {
        assert_eq!(chain, &chains[0], "{isa:?} against {:?}", kernels[0]);
    }
}
