//! The WGSL kernels against their CPU references, on whatever adapter wgpu finds (Mesa's lavapipe
//! in CI). One device is shared by the whole binary. Without an adapter these tests fail when
//! `CI` is set and skip with a printed reason otherwise.

use std::sync::OnceLock;
use trainmesh_gpu::device::{discover, GpuDevice};
use trainmesh_gpu::executor;
use trainmesh_gpu::import::digits_bundled;
use trainmesh_gpu::optim::{HyperParams, Optimizer};
use trainmesh_gpu::spec::ModelSpec;
use trainmesh_gpu::train::{initial_state, Trainer};

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
