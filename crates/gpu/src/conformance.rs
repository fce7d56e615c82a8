//! The conformance suite: what a device must reproduce, byte for byte, before it may train.
//!
//! A device is eligible only after it computes the exact arithmetic ([`ExactOp`], over fixed
//! operands) and a few training segments of each layer kind and optimizer it trains with the
//! checkpoint hashes pinned below — hashes of the CPU executor, which a test keeps equal to what
//! the executor computes (so the pins never go stale, and a change to the executor's arithmetic
//! is seen). A device that fails trains on the CPU path instead, and the report says why.
//! Nothing here trusts what a device or its driver declares: the result is what it computed.

use serde::{Deserialize, Serialize};

use crate::device::{exact_operands, ExactOp, FmaPath, GpuDevice};
use crate::error::GpuError;
use crate::gpu_train::GpuTrainer;
use crate::hash::Hash32;
use crate::import::digits_bundled;
use crate::optim::{HyperParams, Optimizer};
use crate::spec::ModelSpec;
use crate::train::{initial_state, Trainer};

const DIGEST_DOMAIN: &[u8] = b"trainmesh/gpu/conformance/v2";

/// Operands per exact function in the suite.
pub const EXACT_OPERANDS: usize = 1 << 14;

/// One training segment of the suite.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub spec: &'static str,
    pub hyper: HyperParams,
    /// Steps the CPU executor trains first (so the segment starts with optimizer state).
    pub warm_steps: u64,
    /// Steps of the segment the device trains.
    pub steps: u64,
    /// The CPU executor's checkpoint hash at the end of the segment, hex.
    pub pinned: &'static str,
}

const SGD: HyperParams = HyperParams {
    optimizer: Optimizer::Sgd {
        lr: 0.05,
        momentum: 0.0,
    },
    batch: 16,
    seed: 101,
};
const MOMENTUM: HyperParams = HyperParams {
    optimizer: Optimizer::Sgd {
        lr: 0.05,
        momentum: 0.9,
    },
    batch: 16,
    seed: 102,
};
const ADAM: HyperParams = HyperParams {
    optimizer: Optimizer::Adam {
        lr: 3e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    },
    batch: 16,
    seed: 103,
};

/// The suite: every layer kind (dense and convolution; no activation, relu, tanh, sigmoid) and
/// every optimizer.
pub const CASES: [Case; 6] = [
    Case {
        name: "logistic-sgd",
        spec: r#"{"kind":"logistic","input":64,"classes":10}"#,
        hyper: SGD,
        warm_steps: 4,
        steps: 6,
        pinned: "25c1831e1fec88266340988145f8d6fb0b716e89ed9c2a3d8229cc88c1e25893",
    },
    Case {
        name: "mlp-relu-momentum",
        spec: r#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":32,"activation":"relu"}]}"#,
        hyper: MOMENTUM,
        warm_steps: 4,
        steps: 6,
        pinned: "82c658c8f349509b9b847523ec8cef043790f1f7d4ff6a81856d6f820dc86876",
    },
    Case {
        name: "mlp-tanh-sigmoid-adam",
        spec: r#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":24,"activation":"tanh"},{"units":16,"activation":"sigmoid"}]}"#,
        hyper: ADAM,
        warm_steps: 4,
        steps: 6,
        pinned: "8cea001d2ff62abc55019b732f198ee3800bc319dcf9e5f447ed24472ae3dfef",
    },
    Case {
        name: "mlp-sigmoid-relu-adam",
        spec: r#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":20,"activation":"sigmoid"},{"units":20,"activation":"relu"}]}"#,
        hyper: ADAM,
        warm_steps: 4,
        steps: 6,
        pinned: "011f9c43bbeb0be3f71cf2bae9be134412ea69491cc28fea620044301a27db06",
    },
    Case {
        name: "cnn-relu-tanh-adam",
        spec: r#"{"kind":"cnn","input":{"channels":1,"height":8,"width":8},"classes":10,"conv":[{"filters":4,"kernel":3,"activation":"relu"},{"filters":3,"kernel":2,"activation":"tanh"}],"hidden":[{"units":12,"activation":"sigmoid"}]}"#,
        hyper: ADAM,
        warm_steps: 4,
        steps: 6,
        pinned: "4bbbb60155f27aa9f485c36cfb92ba4f9553ac4fd4d91b9d5b450f4573c65949",
    },
    Case {
        name: "cnn-sigmoid-momentum",
        spec: r#"{"kind":"cnn","input":{"channels":1,"height":8,"width":8},"classes":10,"conv":[{"filters":3,"kernel":3,"activation":"sigmoid"},{"filters":4,"kernel":3,"activation":"relu"}],"hidden":[]}"#,
        hyper: MOMENTUM,
        warm_steps: 4,
        steps: 6,
        pinned: "27ce653ad334deac5958d99eadc4a24b7e3fa34366ffc6e6e5245cf545fc621a",
    },
];

/// The data every case trains on: the first 512 bundled digits.
fn data() -> crate::dataset::Samples {
    let first: Vec<usize> = (0..512).collect();
    digits_bundled().select(&first)
}

/// What the CPU executor computes for `case`: the hash of the checkpoint after the segment.
pub fn cpu_hash(case: &Case) -> Result<Hash32, GpuError> {
    let model = ModelSpec::from_json(case.spec.as_bytes())?;
    let data = data();
    let mut state = initial_state(&model, &case.hyper);
    let mut trainer = Trainer::new(&model, case.hyper, &data)?;
    trainer.run(&mut state, case.warm_steps + case.steps);
    Ok(Hash32::of(&state.encode(&model)))
}

/// One case as the device ran it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseResult {
    pub name: String,
    pub expected: String,
    pub got: String,
}

/// A device's conformance: whether it may train, and on what evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConformanceReport {
    pub adapter: String,
    /// Every exact function and every case reproduced.
    pub passed: bool,
    /// Whether the device's own `fma` rounds once (else kernels use the f64 or integer one).
    pub hardware_fma: bool,
    /// The fused multiply-add the kernels ran.
    pub fma_path: FmaPath,
    /// Exact functions that differed from the CPU on some operand.
    pub exact_failures: Vec<String>,
    pub cases: Vec<CaseResult>,
    /// BLAKE3 over the device's results (the functions' output bits, then each case's hash): a
    /// conforming device's digest is the suite's, whatever the device.
    pub digest: String,
    /// Why the device may not train, when it may not.
    pub reason: Option<String>,
}

/// Runs the suite on `dev`.
pub fn check(dev: &GpuDevice) -> Result<ConformanceReport, GpuError> {
    let mut digest = blake3::Hasher::new();
    digest.update(DIGEST_DOMAIN);
    let mut exact_failures = Vec::new();
    for op in ExactOp::ALL {
        if op == ExactOp::FusedMulAdd {
            // The device's own fma: probed at open; the kernels use it only if it passed.
            continue;
        }
        let a = exact_operands(EXACT_OPERANDS, 0xc0 + op as u64);
        let b = exact_operands(EXACT_OPERANDS, 0xd0 + op as u64);
        let got = dev.exact_probe(op, &a, &b)?;
        let mut same = true;
        for (i, g) in got.iter().enumerate() {
            let want = op.cpu_at(&a, &b, i);
            // NaN payloads are not part of the contract.
            let bits = if g.is_nan() { 0x7fc0_0000 } else { g.to_bits() };
            digest.update(&bits.to_le_bytes());
            same &= want.to_bits() == g.to_bits() || (want.is_nan() && g.is_nan());
        }
        if !same {
            exact_failures.push(format!("{op:?}"));
        }
    }
    let data = data();
    let mut cases = Vec::new();
    for case in CASES {
        let model = ModelSpec::from_json(case.spec.as_bytes())?;
        let mut state = initial_state(&model, &case.hyper);
        Trainer::new(&model, case.hyper, &data)?.run(&mut state, case.warm_steps);
        GpuTrainer::new(dev, &model, case.hyper, &data)?.run(&mut state, case.steps)?;
        let got = Hash32::of(&state.encode(&model));
        digest.update(&got.0);
        cases.push(CaseResult {
            name: case.name.into(),
            expected: case.pinned.into(),
            got: got.to_hex(),
        });
    }
    let wrong: Vec<&str> = cases
        .iter()
        .filter(|c| c.got != c.expected)
        .map(|c| c.name.as_str())
        .collect();
    let reason = match (exact_failures.is_empty(), wrong.is_empty()) {
        (true, true) => None,
        (false, _) => Some(format!(
            "exact arithmetic differs from the CPU in {}",
            exact_failures.join(", ")
        )),
        (true, false) => Some(format!(
            "training segments differ from the pinned CPU hashes: {}",
            wrong.join(", ")
        )),
    };
    let digest = Hash32(*digest.finalize().as_bytes()).to_hex();
    if reason.is_none() {
        let _ = dev.conformed.set(digest.clone());
    }
    Ok(ConformanceReport {
        adapter: dev.adapter.name.clone(),
        passed: reason.is_none(),
        hardware_fma: dev.hardware_fma,
        fma_path: dev.fma_path,
        exact_failures,
        cases,
        digest,
        reason,
    })
}

/// The digest every conforming device's report carries, computed from the CPU's side of the
/// suite (the exact functions' CPU results, then the pinned hashes).
pub fn suite_digest() -> Result<Hash32, GpuError> {
    let mut digest = blake3::Hasher::new();
    digest.update(DIGEST_DOMAIN);
    for op in ExactOp::ALL {
        if op == ExactOp::FusedMulAdd {
            continue;
        }
        let a = exact_operands(EXACT_OPERANDS, 0xc0 + op as u64);
        let b = exact_operands(EXACT_OPERANDS, 0xd0 + op as u64);
        for i in 0..a.len() {
            let want = op.cpu_at(&a, &b, i);
            let bits = if want.is_nan() {
                0x7fc0_0000
            } else {
                want.to_bits()
            };
            digest.update(&bits.to_le_bytes());
        }
    }
    for case in CASES {
        let pinned = Hash32::from_hex(case.pinned).ok_or_else(|| GpuError::ShapeMismatch {
            reason: format!("conformance case {} has a malformed pin", case.name),
        })?;
        digest.update(&pinned.0);
    }
    Ok(Hash32(*digest.finalize().as_bytes()))
}

/// The workload that decides which path trains: the digits MLP 64-64-10 with Adam, batch 32.
const THROUGHPUT_SPEC: &str =
    r#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":64,"activation":"relu"}]}"#;

/// Training throughput, measured: samples per second of `steps` steps of the reference workload
/// on the CPU executor (`threads` threads) and, when given, on `dev` (after one warm-up step
/// each). What a trainer reports and the path it takes come from this, never from a declaration.
pub fn training_throughput(
    dev: Option<&GpuDevice>,
    steps: u64,
    threads: usize,
) -> Result<(f64, Option<f64>), GpuError> {
    let model = ModelSpec::from_json(THROUGHPUT_SPEC.as_bytes())?;
    let hyper = HyperParams { batch: 32, ..ADAM };
    let data = data();
    let samples = (steps * hyper.batch as u64) as f64;
    let mut state = initial_state(&model, &hyper);
    let mut cpu = Trainer::new(&model, hyper, &data)?.with_threads(threads);
    cpu.run(&mut state, 1);
    let t = std::time::Instant::now();
    cpu.run(&mut state, steps);
    let cpu_sps = samples / t.elapsed().as_secs_f64();
    let device_sps = match dev {
        None => None,
        Some(dev) => {
            let mut gpu = GpuTrainer::new(dev, &model, hyper, &data)?;
            gpu.run(&mut state, 1)?;
            let t = std::time::Instant::now();
            gpu.run(&mut state, steps)?;
            Some(samples / t.elapsed().as_secs_f64())
        }
    };
    Ok((cpu_sps, device_sps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_hashes_are_the_cpu_executors() {
        let computed: Vec<(&str, String)> = CASES
            .iter()
            .map(|c| (c.name, cpu_hash(c).unwrap().to_hex()))
            .collect();
        let pinned: Vec<(&str, String)> = CASES.iter().map(|c| (c.name, c.pinned.into())).collect();
        assert_eq!(
            computed, pinned,
            "the CPU executor's conformance hashes changed; if the change is intended, pin the new ones"
        );
    }
}
