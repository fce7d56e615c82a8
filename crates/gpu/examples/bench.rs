//! The GPU crate's benchmark: capability matmul on the best wgpu adapter against a good CPU GEMM,
//! training throughput and accuracy of an MLP on Fashion-MNIST on the deterministic CPU path,
//! the cost of verifying that training, and the audit's cheat detection rate.
//!
//!   cargo run --release -p trainmesh-gpu --example bench
//!
//! Environment: BENCH_EPOCHS (default 10), BENCH_MATMUL_N (default 512), BENCH_THREADS
//! (default: all cores).
//! Prints its configuration and results; the last line is one JSON object.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use trainmesh_gpu::checkpoint::TrainState;
use trainmesh_gpu::device::Compute;
use trainmesh_gpu::import::{digits_bundled, fashion_mnist, FASHION_MNIST_DIR};
use trainmesh_gpu::optim::{HyperParams, Optimizer};
use trainmesh_gpu::spec::{Model, ModelSpec};
use trainmesh_gpu::train::{evaluate, initial_state, CheckpointStore, Trainer, WorkResult};
use trainmesh_gpu::verify::{audit, tier0, AuditPolicy, SegmentReplayer, DEFAULT_AUDIT_SEGMENTS};
use trainmesh_gpu::{GpuError, Hash32};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A good CPU GEMM in the same run: ndarray's `dot`, i.e. matrixmultiply's packed, runtime-
/// dispatched AVX2/FMA sgemm kernel (single thread).
fn cpu_gemm_gflops(n: usize, reps: usize) -> f64 {
    let a = ndarray::Array2::from_shape_fn((n, n), |(i, j)| ((i * 7 + j) % 13) as f32 / 13.0);
    let mut best = f64::INFINITY;
    let mut checksum = 0.0f32;
    for _ in 0..reps + 1 {
        let t = Instant::now();
        let c = a.dot(&a);
        best = best.min(t.elapsed().as_secs_f64());
        checksum += c[[0, 0]];
    }
    assert!(checksum.is_finite());
    2.0 * (n as f64).powi(3) / best / 1e9
}

struct Memo<'a> {
    inner: Trainer<'a>,
    cache: BTreeMap<Hash32, Vec<u8>>,
}

impl SegmentReplayer for Memo<'_> {
    fn replay(&mut self, start: &[u8], steps: u64) -> Result<Vec<u8>, GpuError> {
        let key = Hash32::of(start);
        if let Some(v) = self.cache.get(&key) {
            return Ok(v.clone());
        }
        let out = self.inner.replay(start, steps)?;
        self.cache.insert(key, out.clone());
        Ok(out)
    }
}

/// Detection rate of the default audit against a trainer faking 10% of 440 one-step segments of a
/// digits MLP, over `audits` beacons.
fn cheat_detection_rate(audits: u64) -> f64 {
    let data = digits_bundled();
    let model = ModelSpec::from_json(
        br#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":16,"activation":"relu"}]}"#,
    )
    .expect("spec");
    let hyper = HyperParams {
        optimizer: Optimizer::Sgd {
            lr: 0.05,
            momentum: 0.9,
        },
        batch: 16,
        seed: 3,
    };
    let m = 440usize;
    let faked: Vec<usize> = (0..m).filter(|i| i % 10 == 7).collect();
    let mut store = CheckpointStore::new();
    let mut trainer = Trainer::new(&model, hyper, &data).expect("trainer");
    let mut state = initial_state(&model, &hyper);
    let start = store.put(state.encode(&model));
    let mut chain = Vec::new();
    let mut losses = Vec::new();
    for i in 0..m {
        if faked.contains(&i) {
            state.step += 1;
            losses.push(0.0);
        } else {
            losses.extend(trainer.run(&mut state, 1));
        }
        chain.push(store.put(state.encode(&model)));
    }
    let result = WorkResult {
        start,
        start_step: 0,
        segment_steps: 1,
        chain,
        losses,
    };
    let mut memo = Memo {
        inner: Trainer::new(&model, hyper, &data).expect("trainer"),
        cache: BTreeMap::new(),
    };
    let caught = (0..audits)
        .filter(|i| {
            let beacon = Hash32::of(&i.to_le_bytes());
            !audit(
                &model,
                &result,
                &result.chain_root(),
                &beacon,
                AuditPolicy::default(),
                &store,
                &mut memo,
            )
            .expect("well-formed result")
            .accepted()
        })
        .count();
    caught as f64 / audits as f64
}

fn main() {
    let epochs = env_usize("BENCH_EPOCHS", 10);
    let matmul_n = env_usize("BENCH_MATMUL_N", 512);
    let threads = env_usize(
        "BENCH_THREADS",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    println!("== trainmesh-gpu bench ==");
    println!("config: epochs={epochs} matmul_n={matmul_n} cpu_threads={threads} (bit-identical results for any thread count)");

    // 1. Capability matmul: wgpu against the CPU baseline.
    let (adapter, wgpu_gflops) = match Compute::select() {
        Compute::Gpu(d) => {
            let g = d.matmul_gflops(matmul_n, 3).expect("wgpu matmul");
            (
                format!(
                    "{} ({}, {})",
                    d.adapter.name, d.adapter.backend, d.adapter.device_type
                ),
                g,
            )
        }
        Compute::Cpu { reason } => (format!("none: {reason}"), 0.0),
    };
    let cpu_gflops = cpu_gemm_gflops(matmul_n, 3);
    println!("matmul {matmul_n}³: wgpu {wgpu_gflops:.2} GFLOP/s on {adapter}; CPU GEMM (ndarray → matrixmultiply, 1 thread) {cpu_gflops:.2} GFLOP/s");

    // 2. Fashion-MNIST MLP 784-256-128-10, batch 128, Adam.
    // Cheat detection at the default audit rate.
    let detection = cheat_detection_rate(2000);
    println!("cheat detection (10% of 440 segments faked, 2000 beacons): {detection:.4}");

    let (train, test) = match fashion_mnist(Path::new(FASHION_MNIST_DIR)) {
        Ok(Some(d)) => d,
        Ok(None) => {
            println!("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): no training figures");
            let json = serde_json::json!({
                "adapter": adapter,
                "matmul_n": matmul_n,
                "matmul_gflops_wgpu": wgpu_gflops,
                "matmul_gflops_cpu_baseline": cpu_gflops,
                "cpu_threads": threads,
                "train_samples_per_s": null,
                "fashion_mnist_test_accuracy": null,
                "verify_cost_fraction": null,
                "cheat_detection_rate": detection,
            });
            println!("{json}");
            return;
        }
        Err(e) => panic!("Fashion-MNIST: {e}"),
    };
    let model: Model = ModelSpec::from_json(
        br#"{"kind":"mlp","input":784,"classes":10,"hidden":[{"units":256,"activation":"relu"},{"units":128,"activation":"relu"}]}"#,
    )
    .expect("spec");
    let hyper = HyperParams {
        optimizer: Optimizer::Adam {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        batch: 128,
        seed: 1,
    };
    let steps_per_epoch = (train.len() / hyper.batch) as u64;
    let total_steps = steps_per_epoch * epochs as u64;
    // Segments of 5 steps: ~940 per 10 epochs, so 44 audited segments cost about 5%.
    let segment_steps = 5u64;
    let segments = total_steps / segment_steps;
    println!(
        "train: {} samples, test {} samples, {total_steps} steps of batch {} ({segments} segments of {segment_steps})",
        train.len(),
        test.len(),
        hyper.batch
    );
    // Throughput at 1 thread and at `threads`, on 40 steps each.
    let mut per_thread = Vec::new();
    for t in [1, threads] {
        let mut trainer = Trainer::new(&model, hyper, &train)
            .expect("trainer")
            .with_threads(t);
        let mut state = initial_state(&model, &hyper);
        trainer.run(&mut state, 2);
        let start = Instant::now();
        trainer.run(&mut state, 40);
        let sps = 40.0 * hyper.batch as f64 / start.elapsed().as_secs_f64();
        println!("throughput at {t} thread(s): {sps:.0} samples/s");
        per_thread.push(sps);
    }
    let mut store = CheckpointStore::new();
    let mut trainer = Trainer::new(&model, hyper, &train)
        .expect("trainer")
        .with_threads(threads);
    let t = Instant::now();
    let (result, state) = trainer
        .work_unit(
            &initial_state(&model, &hyper),
            segments,
            segment_steps,
            &mut store,
        )
        .expect("work unit");
    let train_s = t.elapsed().as_secs_f64();
    let samples_per_s = (segments * segment_steps * hyper.batch as u64) as f64 / train_s;
    let flops_per_sample = 6.0 * model.param_count() as f64;
    let metrics = evaluate(&model, &state.params, &test).expect("eval");
    println!(
        "training: {train_s:.1} s, {samples_per_s:.0} samples/s (~{:.1} GFLOP/s at 6·params per sample), test accuracy {:.4}, loss {:.4}",
        samples_per_s * flops_per_sample / 1e9,
        metrics.accuracy,
        metrics.loss
    );

    // 3. Verification cost: tier 0 on the test split + a default tier-1 audit.
    let t = Instant::now();
    let final_blob = store
        .get(&result.final_checkpoint())
        .expect("final")
        .to_vec();
    let m0 = tier0(&model, &final_blob, &result.final_checkpoint(), &test).expect("tier 0");
    assert_eq!(m0, metrics);
    let mut evaluator = Trainer::new(&model, hyper, &train)
        .expect("evaluator")
        .with_threads(threads);
    let report = audit(
        &model,
        &result,
        &result.chain_root(),
        &Hash32::of(b"bench beacon"),
        AuditPolicy::default(),
        &store,
        &mut evaluator,
    )
    .expect("audit");
    let verify_s = t.elapsed().as_secs_f64();
    assert!(
        report.accepted(),
        "honest training rejected: {:?}",
        report.faults
    );
    let verify_cost_fraction = verify_s / train_s;
    println!(
        "verification: tier 0 + tier 1 ({DEFAULT_AUDIT_SEGMENTS} of {segments} segments, {} steps) in {verify_s:.2} s = {verify_cost_fraction:.3} of training",
        report.steps_replayed
    );
    let _ = TrainState::decode(&final_blob, &model).expect("decodes");
    drop(store);

    let json = serde_json::json!({
        "adapter": adapter,
        "matmul_n": matmul_n,
        "matmul_gflops_wgpu": wgpu_gflops,
        "matmul_gflops_cpu_baseline": cpu_gflops,
        "cpu_threads": threads,
        "train_samples_per_s": samples_per_s,
        "train_samples_per_s_1thread": per_thread[0],
        "train_samples_per_s_nthreads": per_thread[1],
        "train_seconds": train_s,
        "epochs": epochs,
        "fashion_mnist_test_accuracy": metrics.accuracy,
        "verify_cost_fraction": verify_cost_fraction,
        "cheat_detection_rate": detection,
    });
    println!("{json}");
}
