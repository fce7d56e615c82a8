//! The WGSL kernels against their CPU references, on whatever adapter wgpu finds (Mesa's lavapipe
//! in CI). One device is shared by the whole binary. Without an adapter these tests fail when
//! `CI` is set and skip with a printed reason otherwise.

use std::sync::OnceLock;
use trainmesh_gpu::checkpoint::TrainState;
use trainmesh_gpu::dataset::{shard_dataset, ShardStore};
use trainmesh_gpu::device::{discover, exact_operands, ExactOp, FmaPath, GpuDevice};
use trainmesh_gpu::executor;
use trainmesh_gpu::gpu_train::{GpuTrainer, Replayer};
use trainmesh_gpu::import::digits_bundled;
use trainmesh_gpu::optim::{HyperParams, Optimizer};
use trainmesh_gpu::spec::ModelSpec;
use trainmesh_gpu::train::{evaluate, initial_state, CheckpointStore, Trainer};
use trainmesh_gpu::verify::audit;
use trainmesh_gpu::Hash32;

fn device() -> Option<&'static GpuDevice> {
    static DEVICE: OnceLock<Option<GpuDevice>> = OnceLock::new();
    let d = DEVICE.get_or_init(|| match GpuDevice::open_best() {
        Ok(d) => {
            println!("adapter: {:?}", d.adapter);
            Some(d)
        }
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set and no GPU adapter is usable: {e} (install mesa-vulkan-drivers)"
            );
            println!("SKIPPED: no GPU adapter ({e}); install mesa-vulkan-drivers for lavapipe");
            None
        }
    });
    d.as_ref()
}

fn pseudo(len: usize, salt: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (((i * 7919 + salt * 104729) % 1000) as f32 / 500.0) - 1.0)
        .collect()
}

#[test]
fn adapters_are_discovered_with_their_limits() {
    let Some(d) = device() else { return };
    let all = discover();
    assert!(!all.is_empty());
    assert!(
        all.contains(&d.adapter),
        "the chosen adapter is among those discovered"
    );
    assert!(d.adapter.max_compute_invocations_per_workgroup >= 256);
    assert!(!d.adapter.name.is_empty() && !d.adapter.backend.is_empty());
}

/// Tolerance: |gpu − cpu| ≤ 1e-5 · Σ_k |a_ik·b_kj| + 1e-6 (f32 sums in a different order).
#[test]
fn tiled_matmul_matches_the_cpu_reference() {
    let Some(d) = device() else { return };
    for &(m, k, n) in &[(1, 1, 1), (17, 33, 5), (64, 64, 64), (70, 129, 31)] {
        let a = pseudo(m * k, 1);
        let b = pseudo(k * n, 2);
        let c = d.matmul(&a, &b, m, k, n).unwrap();
        for i in 0..m {
            for j in 0..n {
                let (mut exact, mut scale) = (0.0f64, 0.0f64);
                for t in 0..k {
                    let p = f64::from(a[i * k + t]) * f64::from(b[t * n + j]);
                    exact += p;
                    scale += p.abs();
                }
                let got = f64::from(c[i * n + j]);
                assert!(
                    (got - exact).abs() <= 1e-5 * scale + 1e-6,
                    "({m},{k},{n})[{i},{j}]: gpu {got} cpu {exact}"
                );
            }
        }
    }
    let gflops = d.matmul_gflops(128, 2).unwrap();
    println!("matmul 128³: {gflops:.2} GFLOP/s");
    assert!(gflops > 0.0);
}

/// Tolerance: predictions equal the CPU executor's wherever the CPU's top two logits differ by
/// more than 1e-3 (closer calls may flip under a different summation order).
#[test]
fn batched_evaluation_matches_the_cpu_executor() {
    let Some(d) = device() else { return };
    let data = digits_bundled();
    let model = ModelSpec::from_json(
        br#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":32,"activation":"relu"},{"units":16,"activation":"tanh"}]}"#,
    )
    .unwrap();
    let hyper = HyperParams {
        optimizer: Optimizer::Adam {
            lr: 3e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        batch: 32,
        seed: 5,
    };
    let mut state = initial_state(&model, &hyper);
    Trainer::new(&model, hyper, &data)
        .unwrap()
        .run(&mut state, 100);
    let n = 500;
    let (x, y) = (&data.x[..n * 64], &data.y[..n]);
    let (preds, correct) = d.evaluate_dense(&model, &state.params, x, y).unwrap();
    let logits = executor::logits(&model, &state.params, x, n);
    let mut decided = 0;
    for i in 0..n {
        let row = &logits[i * 10..(i + 1) * 10];
        let best = executor::argmax(row);
        let second = row
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != best)
            .map(|(_, v)| *v)
            .fold(f32::NEG_INFINITY, f32::max);
        if row[best] - second > 1e-3 {
            assert_eq!(preds[i] as usize, best, "sample {i}");
            decided += 1;
        }
    }
    assert!(decided > n * 9 / 10, "{decided} of {n} clear predictions");
    let (cpu_correct, _) = executor::evaluate(&model, &state.params, x, y, 128);
    let ambiguous = (n - decided) as u64;
    assert!(correct.abs_diff(cpu_correct as u64) <= ambiguous);
    println!("gpu correct {correct}, cpu correct {cpu_correct}, of {n}");
}

/// Tolerance: relative 1e-5 against an f64 CPU sum.
#[test]
fn checkpoint_distance_matches_the_cpu_reference() {
    let Some(d) = device() else { return };
    for len in [1usize, 255, 256, 257, 70_000, 200_003] {
        let u = pseudo(len, 3);
        let v = pseudo(len, 4);
        let exact = u
            .iter()
            .zip(&v)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum::<f64>()
            .sqrt();
        let got = d.distance(&u, &v).unwrap();
        assert!(
            (got - exact).abs() <= 1e-5 * exact + 1e-9,
            "len {len}: gpu {got} cpu {exact}"
        );
        assert_eq!(d.distance(&u, &u).unwrap(), 0.0);
    }
}

fn digits_split() -> (
    trainmesh_gpu::dataset::Samples,
    trainmesh_gpu::dataset::Samples,
) {
    let mut shards = ShardStore::new();
    let manifest = shard_dataset("digits", &digits_bundled(), 256, 0.2, 11, &mut shards).unwrap();
    (
        shards.load(&manifest.train).unwrap(),
        shards.load(&manifest.heldout).unwrap(),
    )
}

const DIGITS_MLP: &str =
    r#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":64,"activation":"relu"}]}"#;

fn digits_adam(seed: u64) -> HyperParams {
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

/// The digits MLP trained on the device with the crate's WGSL kernels (forward, cross-entropy,
/// gradients, Adam) reaches ≥ 0.95 held-out accuracy, as it does on the CPU path; the device's
/// own evaluator agrees.
#[test]
fn mlp_trains_on_the_device_to_095_heldout_accuracy() {
    let Some(d) = device() else { return };
    let (train, heldout) = digits_split();
    let model = ModelSpec::from_json(DIGITS_MLP.as_bytes()).unwrap();
    let hyper = digits_adam(42);
    let mut trainer = GpuTrainer::new(d, &model, hyper, &train).unwrap();
    let mut state = initial_state(&model, &hyper);
    let t = std::time::Instant::now();
    // About 16 epochs of 44 steps, as the CPU test.
    let losses = trainer.run(&mut state, 704).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(state.step, 704);
    assert!(losses.iter().all(|l| l.is_finite()));
    let head: f32 = losses[..20].iter().sum::<f32>() / 20.0;
    let tail: f32 = losses[684..].iter().sum::<f32>() / 20.0;
    let metrics = evaluate(&model, &state.params, &heldout).unwrap();
    let (_, correct) = d
        .evaluate_dense(&model, &state.params, &heldout.x, &heldout.y)
        .unwrap();
    println!(
        "device training: 704 steps in {secs:.2} s, loss {head:.3} → {tail:.3}, held-out {metrics:?}, device-evaluated accuracy {:.4}",
        correct as f64 / heldout.len() as f64
    );
    assert!(tail < head / 4.0, "loss {head} → {tail}");
    assert!(
        metrics.accuracy >= 0.95,
        "held-out accuracy {}",
        metrics.accuracy
    );
    assert!(correct as f64 / heldout.len() as f64 >= 0.95);
    // The checkpoint is an ordinary one: it round-trips and names the model.
    let blob = state.encode(&model);
    assert_eq!(TrainState::decode(&blob, &model).unwrap(), state);
}

/// The dense models and optimizers the device trains, each against the CPU executor.
fn device_cases() -> Vec<(&'static str, HyperParams)> {
    let sgd = HyperParams {
        optimizer: Optimizer::Sgd {
            lr: 0.05,
            momentum: 0.0,
        },
        batch: 32,
        seed: 3,
    };
    let momentum = HyperParams {
        optimizer: Optimizer::Sgd {
            lr: 0.05,
            momentum: 0.9,
        },
        batch: 24,
        seed: 4,
    };
    vec![
        (r#"{"kind":"logistic","input":64,"classes":10}"#, sgd),
        (DIGITS_MLP, momentum),
        (DIGITS_MLP, digits_adam(5)),
        (
            r#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":48,"activation":"tanh"},{"units":24,"activation":"sigmoid"}]}"#,
            digits_adam(6),
        ),
        (
            r#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":40,"activation":"sigmoid"},{"units":20,"activation":"tanh"}]}"#,
            momentum,
        ),
        // CNNs: convolutions over one and several channels, every activation, a conv feeding a
        // conv (the input gradient through the first's activation) and one feeding the classes.
        (
            r#"{"kind":"cnn","input":{"channels":1,"height":8,"width":8},"classes":10,"conv":[{"filters":6,"kernel":3,"activation":"relu"},{"filters":4,"kernel":2,"activation":"tanh"}],"hidden":[{"units":16,"activation":"sigmoid"}]}"#,
            digits_adam(7),
        ),
        (
            r#"{"kind":"cnn","input":{"channels":1,"height":8,"width":8},"classes":10,"conv":[{"filters":3,"kernel":4,"activation":"sigmoid"},{"filters":5,"kernel":3,"activation":"relu"}],"hidden":[]}"#,
            momentum,
        ),
        (
            r#"{"kind":"cnn","input":{"channels":1,"height":8,"width":8},"classes":10,"conv":[{"filters":4,"kernel":5,"activation":"tanh"}],"hidden":[{"units":12,"activation":"relu"}]}"#,
            sgd,
        ),
    ]
}

/// A segment trained on the device has the checkpoint hash of the same segment on the CPU
/// executor at 1, 2 and 3 threads — for a logistic model, MLPs and CNNs with every activation, and
/// SGD, momentum and Adam — and the same per-step losses: device training is exact, not close.
#[test]
fn device_training_is_bit_identical_to_the_cpu_executor() {
    let Some(d) = device() else { return };
    let (train, _) = digits_split();
    for (spec, hyper) in device_cases() {
        let model = ModelSpec::from_json(spec.as_bytes()).unwrap();
        // From mid-training, so optimizer state and every activation's range are exercised.
        let mut start = initial_state(&model, &hyper);
        Trainer::new(&model, hyper, &train)
            .unwrap()
            .run(&mut start, 30);
        let mut on_device = start.clone();
        let device_losses = GpuTrainer::new(d, &model, hyper, &train)
            .unwrap()
            .run(&mut on_device, 25)
            .unwrap();
        let device_hash = Hash32::of(&on_device.encode(&model));
        // The same run cut into submissions of one to three steps: the same bytes.
        let mut cut = start.clone();
        let bytes_per_step = 4 * (hyper.batch * model.input + hyper.batch) + 3 * 256;
        GpuTrainer::new(d, &model, hyper, &train)
            .unwrap()
            .with_upload_bytes(bytes_per_step * (1 + hyper.seed as usize % 3))
            .run(&mut cut, 25)
            .unwrap();
        assert_eq!(
            Hash32::of(&cut.encode(&model)),
            device_hash,
            "{spec}: cut run"
        );
        for threads in 1..=3 {
            let mut on_cpu = start.clone();
            let cpu_losses = Trainer::new(&model, hyper, &train)
                .unwrap()
                .with_threads(threads)
                .run(&mut on_cpu, 25);
            let cpu_hash = Hash32::of(&on_cpu.encode(&model));
            assert_eq!(
                device_hash, cpu_hash,
                "{spec} with {:?}: the device's checkpoint is not the CPU's at {threads} threads",
                hyper.optimizer
            );
            assert_eq!(
                device_losses
                    .iter()
                    .map(|l| l.to_bits())
                    .collect::<Vec<_>>(),
                cpu_losses.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
                "{spec}: losses"
            );
        }
        println!(
            "{spec} with {:?}: device = CPU (1, 2, 3 threads), {device_hash}",
            hyper.optimizer
        );
    }
}

/// Tier 1 across backends: a work unit trained on the device and audited by re-execution on the
/// CPU executor is accepted by the *exact* comparison, every segment of it, for SGD with momentum
/// and for Adam; a segment the trainer skipped is still rejected; and an evaluator replaying on
/// the device reaches the same verdicts.
#[test]
fn tier1_exact_comparison_accepts_device_trained_work_replayed_on_the_cpu() {
    let Some(d) = device() else { return };
    let (train, _) = digits_split();
    let model = ModelSpec::from_json(DIGITS_MLP.as_bytes()).unwrap();
    for hyper in [
        HyperParams {
            optimizer: Optimizer::Sgd {
                lr: 0.05,
                momentum: 0.9,
            },
            batch: 32,
            seed: 8,
        },
        digits_adam(9),
    ] {
        let mut start = initial_state(&model, &hyper);
        Trainer::new(&model, hyper, &train)
            .unwrap()
            .run(&mut start, 60);
        let mut store = CheckpointStore::new();
        let mut gpu = GpuTrainer::new(d, &model, hyper, &train).unwrap();
        let segments = 12u64;
        let (result, _) = gpu.work_unit(&start, segments, 8, &mut store).unwrap();
        let every: Vec<usize> = (0..segments as usize).collect();
        let report = audit(
            &result,
            &result.chain_root(),
            &every,
            &store,
            &mut Trainer::new(&model, hyper, &train).unwrap(),
        )
        .unwrap();
        assert!(report.accepted(), "{:?}", report.faults);
        assert_eq!(report.checked.len(), segments as usize);

        // A trainer that skipped segment 5 (republished segment 4's parameters) is caught.
        let mut cheat = result.clone();
        let mut skipped = TrainState::decode(store.get(&result.chain[4]).unwrap(), &model).unwrap();
        skipped.step += 8;
        cheat.chain[5] = store.put(skipped.encode(&model));
        let report = audit(
            &cheat,
            &cheat.chain_root(),
            &every,
            &store,
            &mut Trainer::new(&model, hyper, &train).unwrap(),
        )
        .unwrap();
        assert_eq!(report.faults.len(), 2, "{:?}", report.faults);
        assert!(report.faults.iter().all(|(i, _)| *i == 5 || *i == 6));

        // An evaluator with a device replays on it, still exactly: the same verdicts.
        for (claimed, faults) in [(&result, 0), (&cheat, 2)] {
            let mut on_device = Replayer::new(Some(d), &model, hyper, &train).unwrap();
            assert_ne!(on_device.device_name(), "cpu");
            let report = audit(
                claimed,
                &claimed.chain_root(),
                &every,
                &store,
                &mut on_device,
            )
            .unwrap();
            assert_eq!(report.faults.len(), faults, "{:?}", report.faults);
            assert_eq!(report.checked.len(), segments as usize);
        }
    }
}

#[test]
fn exact_functions_on_the_device_equal_the_cpu_bit_for_bit() {
    let Some(dev) = device() else { return };
    let n = 1 << 18;
    println!(
        "the device's own fma is {}; the kernels use {:?}",
        if dev.hardware_fma {
            "exact"
        } else {
            "not exact"
        },
        dev.fma_path
    );
    for op in ExactOp::ALL {
        if op == ExactOp::FusedMulAdd && !dev.hardware_fma {
            // What the probe at open found; the kernels do not use it.
            continue;
        }
        let a = exact_operands(n, 0x51 + op as u64);
        let b = exact_operands(n, 0x77 + op as u64);
        let got = dev.exact_probe(op, &a, &b).expect("probe");
        let mut wrong = Vec::new();
        for i in 0..n {
            let want = op.cpu_at(&a, &b, i);
            let same = want.to_bits() == got[i].to_bits() || (want.is_nan() && got[i].is_nan());
            if !same {
                wrong.push((a[i], b[i], want, got[i]));
            }
        }
        println!("{op:?}: {} of {n} differ", wrong.len());
        assert!(
            wrong.is_empty(),
            "{op:?}: {} of {n} differ, e.g. (a, b, cpu, device) {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }
}

/// The conformance suite passes on this device with its kernels as built (lavapipe: with the
/// integer fused multiply-add), and a variant that rounds multiply-adds twice — what a driver
/// that splits `fma` would compute — fails it and is refused, with the reason.
#[test]
fn the_device_conforms_and_a_variant_that_fuses_differently_is_refused() {
    let Some(_) = device() else { return };
    // Its own device: the variant recompiles the kernels.
    let mut dev = GpuDevice::open_best().unwrap();
    let report = trainmesh_gpu::conformance::check(&dev).unwrap();
    println!("{}", serde_json::to_string(&report).unwrap());
    assert!(report.passed, "{report:?}");
    assert!(report.reason.is_none());
    assert!(report.cases.iter().all(|c| c.got == c.expected));
    let digest = report.digest.clone();
    // What the device computed is the suite itself: its digest is the one the CPU derives, and
    // the device now carries it (what its worker registers with).
    assert_eq!(
        digest,
        trainmesh_gpu::conformance::suite_digest().unwrap().to_hex()
    );
    assert_eq!(dev.conformance_digest(), Some(digest.as_str()));

    // Every fused multiply-add the kernels can run on this device reproduces the suite too (on
    // lavapipe: the f64 one it chose, and the integer one a device without f64 would use).
    let chosen = dev.fma_path;
    for path in [FmaPath::Integer, FmaPath::F64] {
        if path == FmaPath::F64 && chosen != FmaPath::F64 {
            continue;
        }
        dev.use_fma_path_for_tests(path);
        let r = trainmesh_gpu::conformance::check(&dev).unwrap();
        assert!(r.passed, "{path:?}: {r:?}");
        assert_eq!(r.digest, digest, "{path:?}");
        println!("conformance passes with the {path:?} fused multiply-add");
    }
    dev.use_fma_path_for_tests(chosen);

    dev.use_unfused_variant_for_tests();
    let refused = trainmesh_gpu::conformance::check(&dev).unwrap();
    println!("{}", serde_json::to_string(&refused).unwrap());
    assert!(!refused.passed);
    assert!(
        refused.reason.as_deref().unwrap().contains("differ"),
        "{refused:?}"
    );
    assert!(refused.cases.iter().all(|c| c.got != c.expected));
    assert_ne!(refused.digest, digest);
    assert_eq!(
        dev.conformance_digest(),
        None,
        "a refused device has no digest"
    );
}

/// The tiled exact GEMM under the dense training kernels equals the CPU executor's GEMM bit for
/// bit at ragged shapes: several 64×64 tiles each way with partial edges, k not a multiple of the
/// 16-term tile, a single element, and biases of −0 (which an added padding zero would turn +0).
#[test]
fn the_tiled_exact_gemm_is_the_cpu_gemm_at_ragged_shapes() {
    let Some(d) = device() else { return };
    use trainmesh_gpu::gemm::{gemm_acc, MatRef};
    for (salt, (m, k, n)) in [
        (1, 1, 1),
        (67, 45, 130),
        (130, 17, 3),
        (5, 200, 70),
        (64, 16, 64),
    ]
    .into_iter()
    .enumerate()
    {
        let x: Vec<f32> = pseudo(m * k, salt)
            .into_iter()
            .map(|v| 2.0 * v - 1.0)
            .collect();
        let w: Vec<f32> = pseudo(k * n, salt + 10)
            .into_iter()
            .map(|v| 0.5 - v)
            .collect();
        let b: Vec<f32> = (0..n)
            .map(|j| {
                if j % 3 == 0 {
                    -0.0
                } else {
                    j as f32 * 0.01 - 0.2
                }
            })
            .collect();
        // Row 0 of x all −0 and column 0 of w positive: y[0][0] = −0 + Σ(−0) stays −0.
        let mut x = x;
        x[..k].fill(-0.0);
        let mut w = w;
        for r in 0..k {
            w[r * n] = w[r * n].abs() + 0.125;
        }
        let got = d.exact_gemm(&x, &w, &b, m, k, n).unwrap();
        let mut want: Vec<f32> = (0..m).flat_map(|_| b.iter().copied()).collect();
        gemm_acc(
            MatRef::row_major(&x, m, k),
            MatRef::row_major(&w, k, n),
            &mut want,
            1,
        );
        let differ = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| g.to_bits() != w.to_bits())
            .count();
        assert_eq!(
            differ, 0,
            "{m}×{k}×{n}: {differ} outputs differ from the CPU GEMM"
        );
        assert_eq!(want[0].to_bits(), (-0.0f32).to_bits());
    }
}
