//! The GPU crate's benchmark: capability matmul on the best wgpu adapter against a good CPU GEMM,
//! training throughput and accuracy of an MLP on Fashion-MNIST on the deterministic CPU path,
//! the cost of verifying that training, and the audit's cheat detection rate.
//!
//!   cargo run --release -p trainmesh-gpu --example bench
//!   cargo run --release -p trainmesh-gpu --example bench -- --model transformer   (see
//!   `transformer_mode.rs`: a language model against PyTorch, loss and tokens/s)
//!
//! Environment: BENCH_EPOCHS (default 10), BENCH_MATMUL_N (default 512), BENCH_THREADS
//! (default: all cores), BENCH_ROUNDS (default 3: rounds of the interleaved throughput runs),
//! BENCH_PYTORCH (`0`: skip the PyTorch baseline; `install`: let its wrapper install torch;
//! otherwise it runs when `crates/gpu/bench/pytorch_baseline.sh` has installed torch before),
//! BENCH_PEAK_GFLOPS (the CPU's fp32 peak, when the estimate from /proc/cpuinfo is wrong),
//! BENCH_EXACT_GEMM_N (the exact device GEMM's size: default 4096, 256 on a CPU adapter such as
//! lavapipe), BENCH_DEVICE_STEPS (device training steps timed: default 50, 3 on a CPU adapter).
//!
//! On a device it also times the exact tiled GEMM the training kernels use and device training of
//! the same MLP (784-256-128-10, Adam, batch 128), and, where a CUDA PyTorch is importable
//! (`bench/torch_cuda.py`, fp32 with TF32 off), reports `gemm_ratio_vs_torch_gpu` and
//! `train_ratio_vs_torch_gpu` against it at the same size, model and batch (null elsewhere).
//!
//! Throughput is measured side by side with PyTorch on the same MLP, batch, optimizer and
//! thread counts (1 and all cores), interleaved (ours 1t, PyTorch 1t, ours nt, PyTorch nt, …,
//! BENCH_ROUNDS times), and reported as `ratio_vs_pytorch` (median of ours / median of theirs,
//! per thread count; every run is in the JSON too) with the kernels PyTorch ran.
//! Prints its configuration and results; the last line is one JSON object.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use trainmesh_contracts::jobs::{audit_segments, chain_segments};
use trainmesh_contracts::params::Params;
use trainmesh_contracts::sampling::audit_sample;
use trainmesh_contracts::types::Address;
use trainmesh_gpu::checkpoint::TrainState;
use trainmesh_gpu::device::Compute;
use trainmesh_gpu::import::{digits_bundled, fashion_mnist, FASHION_MNIST_DIR};
use trainmesh_gpu::optim::{HyperParams, Optimizer};
use trainmesh_gpu::spec::{Model, ModelSpec};
use trainmesh_gpu::train::{evaluate, initial_state, CheckpointStore, Trainer, WorkResult};
use trainmesh_gpu::verify::{audit, tier0, SegmentReplayer};

/// The segments evaluator `e` of the network's panel re-executes (the ledger's draw).
fn panel_draw(result: &WorkResult, seed: &Hash32, e: u8) -> Vec<usize> {
    audit_sample(
        &seed.0,
        &result.chain_root().0,
        &Address([e; 32]),
        result.chain.len() as u32,
        audit_segments(&Params::default()),
    )
    .into_iter()
    .map(|i| i as usize)
    .collect()
}
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

/// The median (the mean of the middle two for an even count).
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let h = v.len() / 2;
    if v.len() % 2 == 1 {
        v[h]
    } else {
        (v[h - 1] + v[h]) / 2.0
    }
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

/// Detection rate of the network's audit (each evaluator of the default panel checks the ledger's
/// draw for it; the unit is rejected when any finds a fault) against a trainer faking 10% of 440
/// one-step segments of a digits MLP (`last_only`: replacing only the final segment), over
/// `audits` audit seeds.
fn cheat_detection_rate(audits: u64, last_only: bool) -> f64 {
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
    let faked: Vec<usize> = if last_only {
        vec![m - 1]
    } else {
        (0..m).filter(|i| i % 10 == 7).collect()
    };
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
    let panel = Params::default().evaluators_per_unit as u8;
    let caught = (0..audits)
        .filter(|i| {
            let seed = Hash32::of(&i.to_le_bytes());
            (1..=panel).any(|e| {
                !audit(
                    &result,
                    &result.chain_root(),
                    &panel_draw(&result, &seed, e),
                    &store,
                    &mut memo,
                )
                .expect("well-formed result")
                .accepted()
            })
        })
        .count();
    caught as f64 / audits as f64
}

/// Multiply-add FLOPs of one training sample of a dense model: forward, weight gradients, and
/// input gradients of every layer but the first (neither side computes those).
fn dense_train_flops_per_sample(model: &Model) -> f64 {
    let mut fwd = 0.0;
    let mut dx = 0.0;
    for (i, layer) in model.layers.iter().enumerate() {
        let (ws, _) = layer.param_shapes();
        let macs: f64 = ws.iter().product::<usize>() as f64;
        fwd += macs;
        if i > 0 {
            dx += macs;
        }
    }
    2.0 * (2.0 * fwd + dx)
}

/// This CPU's fp32 peak: cores × 2 vector units × lanes × 2 FLOPs (multiply + add) × clock.
/// BENCH_PEAK_GFLOPS overrides it.
fn cpu_fp32_peak_gflops(cores: usize) -> (f64, String) {
    if let Some(v) = std::env::var("BENCH_PEAK_GFLOPS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        return (v, "BENCH_PEAK_GFLOPS".into());
    }
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let (lanes, isa) = if has("avx512f") {
        (16.0, "AVX-512")
    } else if has("avx2") {
        (8.0, "AVX2")
    } else {
        (4.0, "SSE")
    };
    let mhz = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(2500.0);
    let peak = cores as f64 * 2.0 * lanes * 2.0 * mhz / 1000.0;
    (
        peak,
        format!("{cores} cores × 2 units × {lanes} lanes ({isa}) × 2 × {mhz:.0} MHz"),
    )
}

/// Training throughput on the deterministic path: 5 warm-up steps, then the best of 3 timed runs
/// of 40 steps (the PyTorch baseline measures the same way).
fn train_throughput(
    model: &Model,
    hyper: HyperParams,
    data: &trainmesh_gpu::dataset::Samples,
    threads: usize,
) -> f64 {
    let mut trainer = Trainer::new(model, hyper, data)
        .expect("trainer")
        .with_threads(threads);
    let mut state = initial_state(model, &hyper);
    trainer.run(&mut state, 5);
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = Instant::now();
        trainer.run(&mut state, 40);
        best = best.max(40.0 * hyper.batch as f64 / start.elapsed().as_secs_f64());
    }
    best
}

/// Runs `bench/pytorch_baseline.sh` at `threads` threads (same model, batch, optimizer and
/// measurement). BENCH_PYTORCH=0 skips it; BENCH_PYTORCH=install lets the wrapper install torch
/// into its virtualenv; otherwise it runs only when torch is already installed there.
fn pytorch_baseline(threads: usize, probe: bool) -> Result<serde_json::Value, String> {
    let mut args: Vec<String> = ["--threads", &threads.to_string()]
        .into_iter()
        .chain(["--warmup", "5", "--steps", "40", "--reps", "3"])
        .map(String::from)
        .collect();
    if probe {
        args.push("--probe".into());
    }
    pytorch_script(&args)
}

/// Runs `bench/pytorch_baseline.sh ARGS…`, the PyTorch side of every CPU comparison (it installs
/// torch only under BENCH_PYTORCH=install); its last line, parsed.
fn pytorch_script(args: &[String]) -> Result<serde_json::Value, String> {
    let mode = std::env::var("BENCH_PYTORCH").unwrap_or_default();
    if mode == "0" {
        return Err("BENCH_PYTORCH=0".into());
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/pytorch_baseline.sh");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(script).args(args);
    if mode != "install" {
        cmd.env("TRAINMESH_TORCH_NO_INSTALL", "1");
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{script}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{script} exited with {} (run it once to install torch, or set BENCH_PYTORCH=install)",
            out.status
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).map_err(|e| format!("{script}: unreadable output ({e}): {last}"))
}

/// The device's exact GEMM at n³ and its training throughput on the Fashion-MNIST MLP
/// (784-256-128-10, Adam, batch 128, random data of that shape: throughput does not depend on
/// the values), each the best of a few timed runs.
fn device_figures(dev: &trainmesh_gpu::device::GpuDevice) -> (usize, f64, f64) {
    use trainmesh_gpu::dataset::Samples;
    use trainmesh_gpu::gpu_train::GpuTrainer;
    let cpu_adapter = dev.adapter.device_type == "Cpu";
    let n = env_usize("BENCH_EXACT_GEMM_N", if cpu_adapter { 256 } else { 4096 });
    let gemm = dev.exact_gemm_gflops(n, 3).expect("exact gemm");
    let steps = env_usize("BENCH_DEVICE_STEPS", if cpu_adapter { 3 } else { 50 }) as u64;
    let model = ModelSpec::from_json(
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
        seed: 5,
    };
    let rows: usize = 4096;
    let x: Vec<f32> = (0..rows * 784)
        .map(|i| ((i * 7919) % 255) as f32 / 255.0)
        .collect();
    let y: Vec<u8> = (0..rows).map(|i| (i % 10) as u8).collect();
    let data = Samples::new(784, 10, x, y).expect("samples");
    let mut state = initial_state(&model, &hyper);
    let mut gpu = GpuTrainer::new(dev, &model, hyper, &data).expect("device trainer");
    gpu.run(&mut state, 1).expect("device warm-up");
    let mut best = 0.0f64;
    for _ in 0..2 {
        let t = Instant::now();
        gpu.run(&mut state, steps).expect("device run");
        best = best.max((steps * 128) as f64 / t.elapsed().as_secs_f64());
    }
    (n, gemm, best)
}

/// `bench/torch_cuda.py` at GEMM size `n`: PyTorch's fp32 GEMM and MLP training on a CUDA GPU,
/// or why there is none.
fn torch_cuda(n: usize) -> Result<serde_json::Value, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/torch_cuda.py");
    let venv = std::env::var("TRAINMESH_TORCH_VENV").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/torch-venv").to_string()
    });
    let venv_py = format!("{venv}/bin/python");
    let py = if Path::new(&venv_py).exists() {
        venv_py
    } else {
        "python3".to_string()
    };
    let out = std::process::Command::new(&py)
        .arg(script)
        .args(["--n", &n.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{py} {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{script}: no CUDA PyTorch ({})", out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).map_err(|e| format!("{script}: unreadable output ({e}): {last}"))
}

/// A short segment of the digits MLP trained on the device and on the CPU executor: the same
/// checkpoint hash?
fn device_training_bit_exact(dev: &trainmesh_gpu::device::GpuDevice) -> bool {
    use trainmesh_gpu::gpu_train::GpuTrainer;
    let model = ModelSpec::from_json(
        br#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":64,"activation":"tanh"}]}"#,
    )
    .expect("spec");
    let hyper = HyperParams {
        optimizer: Optimizer::Adam {
            lr: 3e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        batch: 32,
        seed: 12,
    };
    let data = digits_bundled();
    let mut cpu = initial_state(&model, &hyper);
    Trainer::new(&model, hyper, &data)
        .expect("trainer")
        .run(&mut cpu, 10);
    let mut gpu = initial_state(&model, &hyper);
    GpuTrainer::new(dev, &model, hyper, &data)
        .expect("device trainer")
        .run(&mut gpu, 10)
        .expect("device run");
    cpu.encode(&model) == gpu.encode(&model)
}

mod transformer_mode;

/// The allocator the `trainmesh` binary runs with (see `crates/node/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args
        .windows(2)
        .any(|w| w[0] == "--model" && w[1] == "transformer")
    {
        return transformer_mode::run();
    }
    let epochs = env_usize("BENCH_EPOCHS", 10);
    let matmul_n = env_usize("BENCH_MATMUL_N", 512);
    let threads = env_usize(
        "BENCH_THREADS",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    // Only the interleaved throughput comparison (and the matmuls on the CPU), for quick checks.
    let throughput_only = std::env::var("BENCH_THROUGHPUT_ONLY").is_ok_and(|v| v == "1");
    println!("== trainmesh-gpu bench ==");
    println!("config: epochs={epochs} matmul_n={matmul_n} cpu_threads={threads} (bit-identical results for any thread count)");

    // 1. Capability matmul: wgpu against the CPU baseline; the exact GEMM and device training
    // against PyTorch on a CUDA GPU where there is one.
    let mut exact_gemm: Option<(usize, f64)> = None;
    let mut device_train_sps: Option<f64> = None;
    let mut torch_gpu = serde_json::Value::Null;
    let (adapter, wgpu_gflops, wgpu_train_bit_exact) = match if throughput_only {
        Compute::Cpu {
            reason: "skipped (BENCH_THROUGHPUT_ONLY=1)".into(),
        }
    } else {
        Compute::select()
    } {
        Compute::Gpu(d) => {
            let g = d.matmul_gflops(matmul_n, 3).expect("wgpu matmul");
            let exact = device_training_bit_exact(&d);
            println!("device training bit-identical to the CPU executor: {exact}");
            let (n, gemm, sps) = device_figures(&d);
            println!(
                "exact GEMM (training kernels, fixed order per output) {n}³: {gemm:.2} GFLOP/s; device training (MLP 784-256-128-10, Adam, batch 128): {sps:.0} samples/s"
            );
            exact_gemm = Some((n, gemm));
            device_train_sps = Some(sps);
            if d.adapter.device_type != "Cpu" {
                match torch_cuda(n) {
                    Ok(v) => torch_gpu = v,
                    Err(e) => println!("no PyTorch GPU baseline: {e}"),
                }
            }
            (
                format!(
                    "{} ({}, {})",
                    d.adapter.name, d.adapter.backend, d.adapter.device_type
                ),
                g,
                Some(exact),
            )
        }
        Compute::Cpu { reason } => (format!("none: {reason}"), 0.0, None),
    };
    // Ratios against PyTorch on a CUDA GPU, at the same GEMM size and on the same MLP and batch;
    // null where there is no CUDA PyTorch beside the device.
    let ratio = |ours: Option<f64>, key: &str| -> Option<f64> {
        Some(ours? / torch_gpu.get(key)?.as_f64()?)
    };
    let gemm_ratio_vs_torch_gpu = ratio(exact_gemm.map(|(_, g)| g), "gemm_gflops");
    let train_ratio_vs_torch_gpu = ratio(device_train_sps, "train_samples_per_s");
    if let (Some(g), Some(t)) = (gemm_ratio_vs_torch_gpu, train_ratio_vs_torch_gpu) {
        println!("against PyTorch on the GPU: GEMM {g:.3}×, training {t:.3}×");
    }
    let cpu_gflops = cpu_gemm_gflops(matmul_n, 3);
    let det_gflops = trainmesh_gpu::gemm::measured_gflops(matmul_n, 3);
    println!("matmul {matmul_n}³: wgpu {wgpu_gflops:.2} GFLOP/s on {adapter}; CPU GEMM (ndarray → matrixmultiply, 1 thread) {cpu_gflops:.2} GFLOP/s; deterministic GEMM (trainmesh_gpu::gemm, 1 thread) {det_gflops:.2} GFLOP/s");

    // 2. Fashion-MNIST MLP 784-256-128-10, batch 128, Adam.
    // Cheat detection at the default audit rate.
    let (detection, last_detection) = if throughput_only {
        (f64::NAN, f64::NAN)
    } else {
        (
            cheat_detection_rate(2000, false),
            cheat_detection_rate(2000, true),
        )
    };
    println!("cheat detection by the panel (2000 audit seeds, 440 segments): 10% faked {detection:.4}, only the last replaced {last_detection:.4}");

    let (train, test) = match fashion_mnist(Path::new(FASHION_MNIST_DIR)) {
        Ok(Some(d)) => d,
        Ok(None) => {
            println!("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): no training figures");
            let json = serde_json::json!({
                "adapter": adapter,
                "matmul_n": matmul_n,
                "matmul_gflops_wgpu": wgpu_gflops,
                "matmul_gflops_cpu_baseline": cpu_gflops,
                "wgpu_train_bit_exact": wgpu_train_bit_exact,
                "gemm_ratio_vs_torch_gpu": gemm_ratio_vs_torch_gpu,
                "train_ratio_vs_torch_gpu": train_ratio_vs_torch_gpu,
                "exact_gemm_n": exact_gemm.map(|(n, _)| n),
                "exact_gemm_gflops_wgpu": exact_gemm.map(|(_, g)| g),
                "device_train_samples_per_s": device_train_sps,
                "pytorch_gpu": torch_gpu,
                "cpu_threads": threads,
                "train_samples_per_s": null,
                "fashion_mnist_test_accuracy": null,
                "verify_cost_fraction": null,
                "cheat_detection_rate": detection,
                "final_segment_detection_rate": last_detection,
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
    // The run as one unit, cut into segments as the contract cuts a unit of that many steps.
    let segments = u64::from(chain_segments(total_steps));
    let segment_steps = total_steps / segments;
    println!(
        "train: {} samples, test {} samples, {total_steps} steps of batch {} ({segments} segments of {segment_steps})",
        train.len(),
        test.len(),
        hyper.batch
    );
    // Throughput at 1 thread and at `threads`, side by side with PyTorch at the same count,
    // interleaved: ours 1t, theirs 1t, ours nt, theirs nt, and again (BENCH_ROUNDS rounds), so a
    // load that comes and goes on the machine touches both; the medians over the rounds are
    // compared.
    let flops_per_sample = dense_train_flops_per_sample(&model);
    let (peak_gflops, peak_how) = cpu_fp32_peak_gflops(threads);
    let rounds = env_usize("BENCH_ROUNDS", 3).max(1);
    let thread_counts: Vec<usize> = if threads > 1 {
        vec![1, threads]
    } else {
        vec![1]
    };
    let mut ours_runs = BTreeMap::<usize, Vec<f64>>::new();
    let mut theirs_runs = BTreeMap::<usize, Vec<f64>>::new();
    let mut torch_info = serde_json::Value::Null;
    let mut torch_skip: Option<String> = None;
    for round in 0..rounds {
        for &t in &thread_counts {
            let sps = train_throughput(&model, hyper, &train, t);
            println!("round {round}: trainmesh at {t} thread(s): {sps:.0} samples/s");
            ours_runs.entry(t).or_default().push(sps);
            if torch_skip.is_some() {
                continue;
            }
            match pytorch_baseline(t, torch_info.is_null()) {
                Ok(v) => {
                    let sps = v["train_samples_per_s"][t.to_string()]
                        .as_f64()
                        .unwrap_or(0.0);
                    println!("round {round}: pytorch   at {t} thread(s): {sps:.0} samples/s");
                    theirs_runs.entry(t).or_default().push(sps);
                    if torch_info.is_null() {
                        torch_info = v;
                    }
                }
                Err(e) => {
                    println!("PyTorch baseline not run: {e}");
                    torch_skip = Some(e);
                }
            }
        }
    }
    let ours: BTreeMap<usize, f64> = ours_runs.iter().map(|(&t, v)| (t, median(v))).collect();
    let theirs: BTreeMap<usize, f64> = theirs_runs.iter().map(|(&t, v)| (t, median(v))).collect();
    let mut ratio = serde_json::Map::new();
    let mut ratio_runs = serde_json::Map::new();
    let per_core_peak = peak_gflops / threads as f64;
    println!("medians of {rounds} interleaved rounds:");
    for (&t, &sps) in &ours {
        let gflops = sps * flops_per_sample / 1e9;
        let peak_t = per_core_peak * t as f64;
        print!(
            "{t} thread(s): trainmesh {sps:.0} samples/s = {gflops:.1} GFLOP/s ({:.1}% of {peak_t:.0} peak)",
            100.0 * gflops / peak_t
        );
        if let Some(&p) = theirs.get(&t) {
            let pg = p * flops_per_sample / 1e9;
            print!(
                "; PyTorch {p:.0} samples/s = {pg:.1} GFLOP/s ({:.1}%); ratio {:.2}",
                100.0 * pg / peak_t,
                sps / p
            );
            ratio.insert(t.to_string(), serde_json::json!(sps / p));
            let per_round: Vec<f64> = ours_runs[&t]
                .iter()
                .zip(&theirs_runs[&t])
                .map(|(a, b)| a / b)
                .collect();
            print!(" (per round: {per_round:.2?})");
            ratio_runs.insert(t.to_string(), serde_json::json!(per_round));
        }
        println!();
    }
    if !torch_info.is_null() {
        println!(
            "PyTorch {} kernels: BLAS {}, ATen CPU capability {}, mkldnn {}; MKL: {}",
            torch_info["torch"],
            torch_info["blas"],
            torch_info["cpu_capability"],
            torch_info["mkldnn_available"],
            torch_info["mkl_verbose"]
        );
    }
    println!("fp32 peak: {peak_gflops:.0} GFLOP/s ({peak_how}); {flops_per_sample:.0} FLOPs per training sample");
    println!(
        "deterministic GEMM {det_gflops:.1} GFLOP/s = {:.1}% of one core's {per_core_peak:.0}; ndarray/matrixmultiply {cpu_gflops:.1} = {:.1}%",
        100.0 * det_gflops / per_core_peak,
        100.0 * cpu_gflops / per_core_peak
    );
    if throughput_only {
        let json = serde_json::json!({
            "gemm_kernel": format!("{:?}", trainmesh_gpu::gemm::Isa::best()),
            "matmul_gflops_cpu_baseline": cpu_gflops,
            "matmul_gflops_cpu_deterministic": det_gflops,
            "cpu_fp32_peak_gflops": peak_gflops,
            "train_samples_per_s_by_threads": ours,
            "pytorch_samples_per_s_by_threads": theirs,
            "train_samples_per_s_runs": ours_runs,
            "pytorch_samples_per_s_runs": theirs_runs,
            "ratio_vs_pytorch": ratio,
            "ratio_vs_pytorch_runs": ratio_runs,
            "pytorch": torch_info,
        });
        println!("{json}");
        return;
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
    let metrics = evaluate(&model, &state.params, &test).expect("eval");
    println!(
        "training: {train_s:.1} s, {samples_per_s:.0} samples/s ({:.1} GFLOP/s), test accuracy {:.4}, loss {:.4}",
        samples_per_s * flops_per_sample / 1e9,
        metrics.accuracy,
        metrics.loss
    );

    // 3. Verification cost as the network runs it: every evaluator of the default panel
    // recomputes tier 0 on the test split and re-executes the ledger's draw for it.
    let t = Instant::now();
    let final_blob = store
        .get(&result.final_checkpoint())
        .expect("final")
        .to_vec();
    let panel = Params::default().evaluators_per_unit as u8;
    let mut steps_replayed = 0;
    let mut checked = 0;
    for e in 1..=panel {
        let m0 = tier0(&model, &final_blob, &result.final_checkpoint(), &test).expect("tier 0");
        assert_eq!(m0, metrics);
        let mut evaluator = Trainer::new(&model, hyper, &train)
            .expect("evaluator")
            .with_threads(threads);
        let report = audit(
            &result,
            &result.chain_root(),
            &panel_draw(&result, &Hash32::of(b"bench audit seed"), e),
            &store,
            &mut evaluator,
        )
        .expect("audit");
        assert!(
            report.accepted(),
            "honest training rejected: {:?}",
            report.faults
        );
        steps_replayed += report.steps_replayed;
        checked += report.checked.len();
    }
    let verify_s = t.elapsed().as_secs_f64();
    let verify_cost_fraction = verify_s / train_s;
    println!(
        "verification by a panel of {panel}: tier 0 + tier 1 ({checked} segment audits of {segments}, {steps_replayed} of {total_steps} steps) in {verify_s:.2} s = {verify_cost_fraction:.3} of training"
    );
    let _ = TrainState::decode(&final_blob, &model).expect("decodes");
    drop(store);

    let json = serde_json::json!({
        "adapter": adapter,
        "matmul_n": matmul_n,
        "matmul_gflops_wgpu": wgpu_gflops,
        "matmul_gflops_cpu_baseline": cpu_gflops,
        "matmul_gflops_cpu_deterministic": det_gflops,
        "wgpu_train_bit_exact": wgpu_train_bit_exact,
        "gemm_ratio_vs_torch_gpu": gemm_ratio_vs_torch_gpu,
        "train_ratio_vs_torch_gpu": train_ratio_vs_torch_gpu,
        "exact_gemm_n": exact_gemm.map(|(n, _)| n),
        "exact_gemm_gflops_wgpu": exact_gemm.map(|(_, g)| g),
        "device_train_samples_per_s": device_train_sps,
        "pytorch_gpu": torch_gpu,
        "cpu_threads": threads,
        "train_samples_per_s": samples_per_s,
        "train_samples_per_s_1thread": ours.get(&1),
        "train_samples_per_s_nthreads": ours.get(&threads),
        "train_samples_per_s_by_threads": ours.iter().map(|(t, v)| (t.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "pytorch_samples_per_s_by_threads": theirs.iter().map(|(t, v)| (t.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "train_samples_per_s_runs": ours_runs.iter().map(|(t, v)| (t.to_string(), v.clone())).collect::<BTreeMap<_, _>>(),
        "pytorch_samples_per_s_runs": theirs_runs.iter().map(|(t, v)| (t.to_string(), v.clone())).collect::<BTreeMap<_, _>>(),
        "ratio_vs_pytorch_runs": ratio_runs,
        "pytorch_peak_fraction_by_threads": theirs.iter().map(|(t, v)| (t.to_string(), v * flops_per_sample / 1e9 / (per_core_peak * *t as f64))).collect::<BTreeMap<_, _>>(),
        "gemm_kernel": format!("{:?}", trainmesh_gpu::gemm::Isa::best()),
        "pytorch": torch_info,
        "pytorch_skipped": torch_skip,
        "ratio_vs_pytorch": ratio,
        "train_flops_per_sample": flops_per_sample,
        "train_gflops_by_threads": ours.iter().map(|(t, v)| (t.to_string(), v * flops_per_sample / 1e9)).collect::<BTreeMap<_, _>>(),
        "cpu_fp32_peak_gflops": peak_gflops,
        "train_peak_fraction_by_threads": ours.iter().map(|(t, v)| (t.to_string(), v * flops_per_sample / 1e9 / (per_core_peak * *t as f64))).collect::<BTreeMap<_, _>>(),
        "matmul_cpu_baseline_peak_fraction_1thread": cpu_gflops / (peak_gflops / threads as f64),
        "matmul_cpu_deterministic_peak_fraction_1thread": det_gflops / (peak_gflops / threads as f64),
        "train_seconds": train_s,
        "epochs": epochs,
        "fashion_mnist_test_accuracy": metrics.accuracy,
        "verify_cost_fraction": verify_cost_fraction,
        "cheat_detection_rate": detection,
        "final_segment_detection_rate": last_detection,
    });
    println!("{json}");
}
