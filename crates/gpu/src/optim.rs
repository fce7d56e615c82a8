//! Hyper-parameters, deterministic initialization and data order from the job seed, and the two
//! optimizers (SGD with momentum, Adam), all with a fixed order of floating-point operations.

use crate::detmath;
use crate::error::GpuError;
use crate::executor::Tensor;
use crate::spec::Model;
use multiversion::multiversion;
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

/// The largest batch a job may ask for.
pub const BATCH_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Optimizer {
    /// `v ← μ·v + g; θ ← θ − lr·v` (no state when μ = 0).
    Sgd { lr: f32, momentum: f32 },
    /// Adam with bias correction (Kingma & Ba).
    Adam {
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
    },
}

/// What, besides the model and the data, determines training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HyperParams {
    pub optimizer: Optimizer,
    pub batch: usize,
    pub seed: u64,
}

impl HyperParams {
    pub fn validate(&self) -> Result<(), GpuError> {
        let bad = |reason: String| Err(GpuError::HyperParamsInvalid { reason });
        if self.batch == 0 || self.batch > BATCH_MAX {
            return bad(format!(
                "batch = {}, must be in 1..={BATCH_MAX}",
                self.batch
            ));
        }
        let lr = match self.optimizer {
            Optimizer::Sgd { lr, momentum } => {
                if !(0.0..1.0).contains(&momentum) {
                    return bad(format!("momentum = {momentum}, must be in [0, 1)"));
                }
                lr
            }
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                if !(0.0..1.0).contains(&beta1) || !(0.0..1.0).contains(&beta2) {
                    return bad(format!("betas ({beta1}, {beta2}) must be in [0, 1)"));
                }
                if !(eps > 0.0 && eps < 1.0) {
                    return bad(format!("eps = {eps}, must be in (0, 1)"));
                }
                lr
            }
        };
        if !(lr > 0.0 && lr <= 10.0) {
            return bad(format!("lr = {lr}, must be in (0, 10]"));
        }
        Ok(())
    }

    /// How many state tensors the optimizer keeps per parameter tensor.
    pub fn state_slots(&self) -> usize {
        match self.optimizer {
            Optimizer::Sgd { momentum: 0.0, .. } => 0,
            Optimizer::Sgd { .. } => 1,
            Optimizer::Adam { .. } => 2,
        }
    }
}

fn rng_for(seed: u64, purpose: &str, index: u64) -> ChaCha20Rng {
    let mut h = blake3::Hasher::new();
    h.update(b"trainmesh.rng.v1");
    h.update(purpose.as_bytes());
    h.update(&seed.to_le_bytes());
    h.update(&index.to_le_bytes());
    ChaCha20Rng::from_seed(*h.finalize().as_bytes())
}

/// Initial parameters from the job seed: weights uniform in ±√(6/fan_in) (He, for ReLU-family
/// nets; also fine for tanh at these sizes), biases zero. The uniform draw is built from integer
/// bits with exact f64 operations, so it is the same on every platform.
pub fn init_params(model: &Model, seed: u64) -> Vec<Tensor> {
    let mut rng = rng_for(seed, "init", 0);
    let mut out = Vec::with_capacity(2 * model.layers.len());
    for layer in &model.layers {
        let (ws, bs) = layer.param_shapes();
        let (fan_in, _) = layer.fans();
        let a = (6.0 / fan_in as f64).sqrt();
        let mut w = Tensor::zeros(&ws);
        for v in w.data.iter_mut() {
            let u = f64::from(rng.next_u32()) / 4_294_967_296.0; // [0, 1), exact
            *v = ((2.0 * u - 1.0) * a) as f32;
        }
        out.push(w);
        out.push(Tensor::zeros(&bs));
    }
    out
}

/// The order in which a job visits its training samples: epoch `e` is a permutation drawn from
/// (seed, e); step `t` takes the `t mod steps_per_epoch`-th batch of epoch `t / steps_per_epoch`
/// (the remainder of each epoch is dropped). Any step's batch can be computed without replaying
/// the steps before it, which is what lets an evaluator re-execute one segment alone.
#[derive(Debug, Clone)]
pub struct DataOrder {
    seed: u64,
    samples: usize,
    batch: usize,
    cached_epoch: Option<(u64, Vec<usize>)>,
}

impl DataOrder {
    pub fn new(seed: u64, samples: usize, batch: usize) -> Result<Self, GpuError> {
        if samples < batch || batch == 0 {
            return Err(GpuError::HyperParamsInvalid {
                reason: format!("batch {batch} does not fit {samples} training samples"),
            });
        }
        Ok(DataOrder {
            seed,
            samples,
            batch,
            cached_epoch: None,
        })
    }

    pub fn steps_per_epoch(&self) -> u64 {
        (self.samples / self.batch) as u64
    }

    /// The sample indices of global step `step`.
    pub fn batch(&mut self, step: u64) -> &[usize] {
        let epoch = step / self.steps_per_epoch();
        let pos = (step % self.steps_per_epoch()) as usize;
        if self.cached_epoch.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let mut perm: Vec<usize> = (0..self.samples).collect();
            perm.shuffle(&mut rng_for(self.seed, "order", epoch));
            self.cached_epoch = Some((epoch, perm));
        }
        let perm = &self.cached_epoch.as_ref().expect("just filled").1;
        &perm[pos * self.batch..(pos + 1) * self.batch]
    }
}

/// Fresh optimizer state (zeros) for `params`.
pub fn init_state(hyper: &HyperParams, params: &[Tensor]) -> Vec<Tensor> {
    (0..hyper.state_slots())
        .flat_map(|_| params.iter().map(|p| Tensor::zeros(&p.shape)))
        .collect()
}

/// One optimizer update. `step` counts the updates before this one (Adam's bias correction).
pub fn apply_update(
    hyper: &HyperParams,
    step: u64,
    params: &mut [Tensor],
    state: &mut [Tensor],
    grads: &[Tensor],
) {
    apply_update_threads(hyper, step, params, state, grads, 1)
}

/// Elements per piece when an update is split between threads.
const UPDATE_CHUNK: usize = 16 * 1024;

/// [`apply_update`] on up to `threads` threads. Every element's update is independent of the
/// others, so the split changes no bit.
pub fn apply_update_threads(
    hyper: &HyperParams,
    step: u64,
    params: &mut [Tensor],
    state: &mut [Tensor],
    grads: &[Tensor],
    threads: usize,
) {
    let total: usize = params.iter().map(|p| p.data.len()).sum();
    if threads <= 1 || total < 4 * UPDATE_CHUNK {
        return update_serial(hyper, step, params, state, grads);
    }
    // Cut every tensor into pieces of UPDATE_CHUNK elements and hand the pieces out.
    let n = params.len();
    assert_eq!(grads.len(), n, "one gradient per parameter tensor");
    assert_eq!(
        state.len(),
        n * hyper.state_slots(),
        "optimizer state does not fit"
    );
    let slots = hyper.state_slots();
    let mut state_parts: Vec<Vec<&mut [f32]>> = (0..n).map(|_| Vec::new()).collect();
    for (i, s) in state.iter_mut().enumerate() {
        state_parts[i % n].push(&mut s.data);
    }
    // (parameters, gradients, state slots) of one piece.
    type Piece<'a> = (&'a mut [f32], &'a [f32], Vec<&'a mut [f32]>);
    let mut pieces: Vec<Piece<'_>> = Vec::new();
    for ((p, g), st) in params.iter_mut().zip(grads).zip(state_parts) {
        let mut st_chunks: Vec<_> = st.into_iter().map(|s| s.chunks_mut(UPDATE_CHUNK)).collect();
        for (pc, gc) in p
            .data
            .chunks_mut(UPDATE_CHUNK)
            .zip(g.data.chunks(UPDATE_CHUNK))
        {
            let sc: Vec<&mut [f32]> = st_chunks
                .iter_mut()
                .map(|it| it.next().expect("state shaped like the parameter"))
                .collect();
            pieces.push((pc, gc, sc));
        }
    }
    debug_assert!(pieces.iter().all(|(_, _, s)| s.len() == slots));
    let hyper = *hyper;
    let per = pieces.len().div_ceil(threads);
    crate::gemm::pool(threads).install(|| {
        rayon::scope(|s| {
            let mut rest = pieces.as_mut_slice();
            while !rest.is_empty() {
                let (mine, tail) = rest.split_at_mut(per.min(rest.len()));
                rest = tail;
                s.spawn(move |_| {
                    for (p, g, st) in mine.iter_mut() {
                        update_piece(&hyper, step, p, g, st);
                    }
                });
            }
        })
    });
}

/// The update of one piece of one tensor: `st` holds the optimizer's state slots for it.
fn update_piece(hyper: &HyperParams, step: u64, p: &mut [f32], g: &[f32], st: &mut [&mut [f32]]) {
    match hyper.optimizer {
        Optimizer::Sgd { lr, momentum: 0.0 } => sgd(p, g, lr),
        Optimizer::Sgd { lr, momentum } => sgd_momentum(p, g, st[0], lr, momentum),
        Optimizer::Adam { .. } => {
            let (m, v) = st.split_at_mut(1);
            adam(p, g, m[0], v[0], adam_step(hyper, step));
        }
    }
}

/// Adam's constants for the update after `step` updates.
fn adam_step(hyper: &HyperParams, step: u64) -> AdamStep {
    let Optimizer::Adam {
        lr,
        beta1,
        beta2,
        eps,
    } = hyper.optimizer
    else {
        unreachable!("adam_step of another optimizer")
    };
    let t = step + 1;
    AdamStep {
        lr,
        beta1,
        beta2,
        eps,
        c1: (1.0 - detmath::powu(f64::from(beta1), t)) as f32,
        c2: (1.0 - detmath::powu(f64::from(beta2), t)) as f32,
    }
}

fn update_serial(
    hyper: &HyperParams,
    step: u64,
    params: &mut [Tensor],
    state: &mut [Tensor],
    grads: &[Tensor],
) {
    let n = params.len();
    assert_eq!(grads.len(), n, "one gradient per parameter tensor");
    assert_eq!(
        state.len(),
        n * hyper.state_slots(),
        "optimizer state does not fit"
    );
    match hyper.optimizer {
        Optimizer::Sgd { lr, momentum: 0.0 } => {
            for (p, g) in params.iter_mut().zip(grads) {
                sgd(&mut p.data, &g.data, lr);
            }
        }
        Optimizer::Sgd { lr, momentum } => {
            for ((p, g), v) in params.iter_mut().zip(grads).zip(state.iter_mut()) {
                sgd_momentum(&mut p.data, &g.data, &mut v.data, lr, momentum);
            }
        }
        Optimizer::Adam { .. } => {
            let k = adam_step(hyper, step);
            let (ms, vs) = state.split_at_mut(n);
            for (((p, g), m), v) in params.iter_mut().zip(grads).zip(ms).zip(vs) {
                adam(&mut p.data, &g.data, &mut m.data, &mut v.data, k);
            }
        }
    }
}

// The update loops, compiled for the baseline and for wider vectors (chosen at run time). Each
// element gets the same IEEE operations in the same order in every build (multiplies, adds,
// divisions and square roots are correctly rounded, and Rust never fuses them), so the width
// changes only the speed.

#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn sgd(p: &mut [f32], g: &[f32], lr: f32) {
    for (pv, &gv) in p.iter_mut().zip(g) {
        *pv -= lr * gv;
    }
}

#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn sgd_momentum(p: &mut [f32], g: &[f32], v: &mut [f32], lr: f32, momentum: f32) {
    for ((pv, &gv), vv) in p.iter_mut().zip(g).zip(v.iter_mut()) {
        *vv = momentum * *vv + gv;
        *pv -= lr * *vv;
    }
}

/// Adam's constants for one step; `c1`, `c2` are the bias corrections `1 − βᵗ`.
#[derive(Debug, Clone, Copy)]
struct AdamStep {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    c1: f32,
    c2: f32,
}

#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn adam(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: AdamStep) {
    let AdamStep {
        lr,
        beta1,
        beta2,
        eps,
        c1,
        c2,
    } = k;
    for (((pv, &gv), mv), vv) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *mv = beta1 * *mv + (1.0 - beta1) * gv;
        *vv = beta2 * *vv + (1.0 - beta2) * gv * gv;
        let mhat = *mv / c1;
        let vhat = *vv / c2;
        *pv -= lr * mhat / (vhat.sqrt() + eps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_order_is_a_permutation_per_epoch_and_reproducible() {
        let mut a = DataOrder::new(5, 10, 3).unwrap();
        assert_eq!(a.steps_per_epoch(), 3);
        let mut seen: Vec<usize> = (0..3).flat_map(|t| a.batch(t).to_vec()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9);
        let mut b = DataOrder::new(5, 10, 3).unwrap();
        assert_eq!(b.batch(7).to_vec(), a.batch(7).to_vec());
        let mut c = DataOrder::new(6, 10, 3).unwrap();
        assert_ne!(
            (0..3).map(|t| c.batch(t).to_vec()).collect::<Vec<_>>(),
            (0..3).map(|t| b.batch(t).to_vec()).collect::<Vec<_>>()
        );
        assert!(DataOrder::new(1, 2, 3).is_err());
    }

    #[test]
    fn invalid_hyper_params_are_rejected() {
        let ok = HyperParams {
            optimizer: Optimizer::Adam {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            batch: 32,
            seed: 1,
        };
        assert!(ok.validate().is_ok());
        for bad in [
            HyperParams { batch: 0, ..ok },
            HyperParams {
                optimizer: Optimizer::Sgd {
                    lr: -1.0,
                    momentum: 0.0,
                },
                ..ok
            },
            HyperParams {
                optimizer: Optimizer::Sgd {
                    lr: 0.1,
                    momentum: 1.0,
                },
                ..ok
            },
            HyperParams {
                optimizer: Optimizer::Adam {
                    lr: f32::NAN,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                },
                ..ok
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
