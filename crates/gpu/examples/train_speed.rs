//! A quick look at the deterministic CPU path's speed: the eight matrix products of one training
//! step of the Fashion-MNIST MLP (784-256-128-10, batch 128), one thread each, and training
//! throughput at 1 and 2 threads, with the checkpoint hash after a fixed number of steps (the
//! same for every thread count and every machine).
//!
//!   cargo run --release -p trainmesh-gpu --example train_speed [steps]
//!
//! TRAIN_SPEED_ISA=portable|avx2|avx512 picks the matmul kernel (default: the best here);
//! TRAIN_SPEED_PRODUCTS=0 skips the products; TRAIN_SPEED_THREADS=1,2 the thread counts to
//! train at, in order (default 1,2,1,2); TRAIN_SPEED_DATA the Fashion-MNIST directory.

use std::path::Path;
use std::time::Instant;
use trainmesh_gpu::gemm::{gemm_acc, Isa, MatRef};
use trainmesh_gpu::import::{fashion_mnist, FASHION_MNIST_DIR};
use trainmesh_gpu::optim::{HyperParams, Optimizer};
use trainmesh_gpu::spec::ModelSpec;
use trainmesh_gpu::train::{initial_state, Trainer};
use trainmesh_gpu::Hash32;

fn main() {
    let isa = match std::env::var("TRAIN_SPEED_ISA").as_deref() {
        Ok("portable") => Isa::Portable,
        Ok("avx2") => Isa::Avx2,
        Ok("avx512") => Isa::Avx512,
        _ => Isa::best(),
    };
    trainmesh_gpu::gemm::with_isa(isa, run);
}

fn run() {
    let steps: u64 = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    println!(
        "kernel: {:?} (available {:?})",
        trainmesh_gpu::gemm::current_isa(),
        Isa::available()
    );
    // (m, k, n, A transposed, B transposed) of forward, weight and input gradients.
    let shapes = [
        ("fwd 1", 128, 784, 256, false, false),
        ("fwd 2", 128, 256, 128, false, false),
        ("fwd 3", 128, 128, 10, false, false),
        ("dW 3", 128, 128, 10, true, false),
        ("dx 3", 128, 10, 128, false, true),
        ("dW 2", 256, 128, 128, true, false),
        ("dx 2", 128, 128, 256, false, true),
        ("dW 1", 784, 128, 256, true, false),
    ];
    let mut total_flops = 0.0;
    let mut total_s = 0.0;
    let products = std::env::var("TRAIN_SPEED_PRODUCTS").map_or(true, |v| v != "0");
    for (name, m, k, n, ta, tb) in shapes.into_iter().filter(|_| products) {
        let ad: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 / 13.0).collect();
        let bd: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 / 11.0).collect();
        let a = if ta {
            MatRef::row_major(&ad, k, m).t()
        } else {
            MatRef::row_major(&ad, m, k)
        };
        let b = if tb {
            MatRef::row_major(&bd, n, k).t()
        } else {
            MatRef::row_major(&bd, k, n)
        };
        let mut c = vec![0.0f32; m * n];
        // Calibrate: about 20 ms per timed round, best of 5 rounds.
        let t = Instant::now();
        gemm_acc(a, b, &mut c, 1);
        let reps = ((0.02 / t.elapsed().as_secs_f64()) as usize).clamp(1, 1000);
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                gemm_acc(a, b, &mut c, 1);
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        let flops = 2.0 * (m * k * n) as f64;
        total_flops += flops;
        total_s += best;
        println!(
            "{name:6} {m:4}×{k:4}·{k:4}×{n:4}: {:8.1} µs {:6.1} GFLOP/s",
            best * 1e6,
            flops / best / 1e9
        );
    }
    if products {
        println!(
            "products of one step: {:.1} µs, {:.1} GFLOP/s",
            total_s * 1e6,
            total_flops / total_s / 1e9
        );
    }

    let dir = std::env::var("TRAIN_SPEED_DATA").unwrap_or_else(|_| FASHION_MNIST_DIR.into());
    let Ok(Some((train, _))) = fashion_mnist(Path::new(&dir)) else {
        println!("no Fashion-MNIST");
        return;
    };
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
        seed: 1,
    };
    let counts: Vec<usize> = match std::env::var("TRAIN_SPEED_THREADS") {
        Ok(v) => v.split(',').filter_map(|t| t.parse().ok()).collect(),
        Err(_) => vec![1, 2, 1, 2],
    };
    for threads in counts {
        let mut trainer = Trainer::new(&model, hyper, &train)
            .expect("trainer")
            .with_threads(threads);
        let mut state = initial_state(&model, &hyper);
        trainer.run(&mut state, 5);
        let t = Instant::now();
        trainer.run(&mut state, steps - 5);
        let s = t.elapsed().as_secs_f64();
        println!(
            "{threads} thread(s): {:.0} samples/s, checkpoint after {steps} steps {}",
            (steps - 5) as f64 * 128.0 / s,
            Hash32::of(&state.encode(&model))
        );
    }
}
