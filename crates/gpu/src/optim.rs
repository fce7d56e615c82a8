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
    /// AdamW (Loshchilov & Hutter): Adam with decoupled weight decay on every tensor of rank 2
    /// or more, a learning rate that warms up linearly over `warmup_steps` and then follows a
    /// cosine from `lr` down to `min_lr` at `decay_steps`, and gradients clipped to a global L2
    /// norm of `clip_norm` (0: no clipping). See [`lr_at`] and [`grad_norm`].
    #[serde(rename = "adamw")]
    AdamW {
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        warmup_steps: u64,
        decay_steps: u64,
        min_lr: f32,
        clip_norm: f32,
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
            Optimizer::AdamW {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
                warmup_steps,
                decay_steps,
                min_lr,
                clip_norm,
            } => {
                if !(0.0..1.0).contains(&beta1) || !(0.0..1.0).contains(&beta2) {
                    return bad(format!("betas ({beta1}, {beta2}) must be in [0, 1)"));
                }
                if !(eps > 0.0 && eps < 1.0) {
                    return bad(format!("eps = {eps}, must be in (0, 1)"));
                }
                if !(0.0..1.0).contains(&weight_decay) {
                    return bad(format!("weight_decay = {weight_decay}, must be in [0, 1)"));
                }
                if !(0.0..=lr).contains(&min_lr) {
                    return bad(format!("min_lr = {min_lr}, must be in [0, lr]"));
                }
                if !(0.0..=1e6).contains(&clip_norm) {
                    return bad(format!("clip_norm = {clip_norm}, must be in [0, 1e6]"));
                }
                if warmup_steps > decay_steps || decay_steps > 1 << 40 {
                    return bad(format!(
                        "warmup_steps = {warmup_steps} must not exceed decay_steps = {decay_steps} (at most 2^40)"
                    ));
                }
                lr
            }
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
            Optimizer::Adam { .. } | Optimizer::AdamW { .. } => 2,
        }
    }
}

/// The learning rate of the update after `step` updates under AdamW's schedule: `lr·(step+1)/
/// warmup` while warming up, then `min_lr + ½(lr − min_lr)(1 + cos(π·p))` with `p` the share of
/// the decay done (1 from `decay_steps` on). Computed in f64 with [`detmath::cos_pi`] (a fixed
/// sequence of correctly rounded operations), then rounded once: the same f32 on every machine.
pub fn lr_at(lr: f32, min_lr: f32, warmup_steps: u64, decay_steps: u64, step: u64) -> f32 {
    let (lr, min_lr) = (f64::from(lr), f64::from(min_lr));
    if step < warmup_steps {
        return (lr * (step + 1) as f64 / warmup_steps as f64) as f32;
    }
    let span = decay_steps.saturating_sub(warmup_steps).max(1);
    let p = ((step - warmup_steps).min(span)) as f64 / span as f64;
    (min_lr + 0.5 * (lr - min_lr) * (1.0 + detmath::cos_pi(p))) as f32
}

/// Elements per partial sum of [`grad_norm`].
pub const NORM_BLOCK: usize = 4096;

/// The global L2 norm of `grads` in a fixed order: each tensor is cut into blocks of
/// [`NORM_BLOCK`] elements, each block sums `g·g` (the product rounded, then added) in order,
/// the block sums of a tensor are added in order, the tensors' sums are added in order, and the
/// total's square root is taken. Blocks are independent, so a device sums them in parallel.
pub fn grad_norm(grads: &[Tensor], threads: usize) -> f32 {
    let block_sum = |b: &[f32]| {
        let mut s = 0.0f32;
        for &g in b {
            s += g * g;
        }
        s
    };
    let mut total = 0.0f32;
    for g in grads {
        let sums: Vec<f32> = if threads > 1 && g.data.len() > 4 * NORM_BLOCK {
            use rayon::prelude::*;
            crate::gemm::pool(threads)
                .install(|| g.data.par_chunks(NORM_BLOCK).map(block_sum).collect())
        } else {
            g.data.chunks(NORM_BLOCK).map(block_sum).collect()
        };
        let mut t = 0.0f32;
        for s in sums {
            t += s;
        }
        total += t;
    }
    total.sqrt()
}

/// The factor gradients are multiplied by before an AdamW update: `clip / (norm + 1e-6)` when
/// the norm exceeds `clip > 0`, else 1.
pub fn clip_scale(norm: f32, clip: f32) -> f32 {
    if clip > 0.0 && norm > clip {
        clip / (norm + 1e-6)
    } else {
        1.0
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
/// bits with exact f64 operations, so it is the same on every platform. A transformer starts as
/// GPT-2 does, with a uniform draw of the same standard deviation in place of the normal one:
/// embeddings and weights σ = 0.02 (the two residual projections of each block 0.02/√(2·layers)),
/// LayerNorm gains one, biases zero.
pub fn init_params(model: &Model, seed: u64) -> Vec<Tensor> {
    let mut rng = rng_for(seed, "init", 0);
    if let Some(dims) = &model.transformer {
        let residual = 0.02 / (2.0 * dims.layers as f64).sqrt();
        let per_block = crate::spec::TransformerDims::TENSORS_PER_BLOCK;
        let lnf = 2 + per_block * dims.layers;
        return dims
            .param_shapes()
            .iter()
            .enumerate()
            .map(|(i, shape)| {
                let mut t = Tensor::zeros(shape);
                let in_block = (2..lnf).contains(&i).then(|| (i - 2) % per_block);
                let std = match in_block {
                    // LayerNorm gains.
                    Some(0) | Some(6) => {
                        return Tensor {
                            shape: shape.clone(),
                            data: vec![1.0; t.data.len()],
                        }
                    }
                    // Biases and LayerNorm shifts.
                    Some(1) | Some(3) | Some(5) | Some(7) | Some(9) | Some(11) => return t,
                    Some(4) | Some(10) => residual,
                    Some(_) => 0.02,
                    None if i == lnf => {
                        return Tensor {
                            shape: shape.clone(),
                            data: vec![1.0; t.data.len()],
                        }
                    }
                    None if i == lnf + 1 => return t,
                    None => 0.02,
                };
                // Uniform on ±σ√3 has standard deviation σ.
                let a = std * 3f64.sqrt();
                for v in t.data.iter_mut() {
                    let u = f64::from(rng.next_u32()) / 4_294_967_296.0;
                    *v = ((2.0 * u - 1.0) * a) as f32;
                }
                t
            })
            .collect();
    }
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
    /// The examples this order visits when it covers one trainer's slice of a round (`None`:
    /// all of them).
    slice: Option<std::sync::Arc<Vec<usize>>>,
}

/// One trainer's share of the training examples in a round trained by several: slot `index` of
/// `count` takes the examples whose position in a permutation drawn from `seed` (randomness the
/// ledger fixed when it opened the round) is `index` modulo `count`. The slots' slices are
/// disjoint and cover every example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSlice {
    pub seed: [u8; 32],
    pub index: u32,
    pub count: u32,
}

impl DataSlice {
    /// The examples (of `total`) in this slice, in the permutation's order.
    pub fn examples(&self, total: usize) -> Vec<usize> {
        let mut perm: Vec<usize> = (0..total).collect();
        perm.shuffle(&mut ChaCha20Rng::from_seed(
            *blake3::Hasher::new()
                .update(b"trainmesh.slice.v1")
                .update(&self.seed)
                .finalize()
                .as_bytes(),
        ));
        perm.into_iter()
            .skip(self.index as usize)
            .step_by(self.count.max(1) as usize)
            .collect()
    }
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
            slice: None,
        })
    }

    /// The order over one slice of `total` examples: epochs are permutations of the slice.
    pub fn sliced(
        seed: u64,
        total: usize,
        batch: usize,
        slice: &DataSlice,
    ) -> Result<Self, GpuError> {
        if slice.count == 0 || slice.index >= slice.count {
            return Err(GpuError::HyperParamsInvalid {
                reason: format!("slice {} of {}", slice.index, slice.count),
            });
        }
        let examples = slice.examples(total);
        let mut order = DataOrder::new(seed, examples.len(), batch)?;
        order.slice = Some(std::sync::Arc::new(examples));
        Ok(order)
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
            if let Some(examples) = &self.slice {
                perm.iter_mut().for_each(|p| *p = examples[*p]);
            }
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
    let adamw_k = matches!(hyper.optimizer, Optimizer::AdamW { .. })
        .then(|| adamw_step(hyper, step, grad_norm(grads, threads)));
    let mut state_parts: Vec<Vec<&mut [f32]>> = (0..n).map(|_| Vec::new()).collect();
    for (i, s) in state.iter_mut().enumerate() {
        state_parts[i % n].push(&mut s.data);
    }
    // (parameters, gradients, state slots, decay factor) of one piece.
    type Piece<'a> = (&'a mut [f32], &'a [f32], Vec<&'a mut [f32]>, f32);
    let mut pieces: Vec<Piece<'_>> = Vec::new();
    for ((p, g), st) in params.iter_mut().zip(grads).zip(state_parts) {
        let decay = match adamw_k {
            Some(k) if p.shape.len() >= 2 => k.decay,
            _ => 1.0,
        };
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
            pieces.push((pc, gc, sc, decay));
        }
    }
    debug_assert!(pieces.iter().all(|(_, _, s, _)| s.len() == slots));
    let hyper = *hyper;
    let per = pieces.len().div_ceil(threads);
    crate::gemm::pool(threads).install(|| {
        rayon::scope(|s| {
            let mut rest = pieces.as_mut_slice();
            while !rest.is_empty() {
                let (mine, tail) = rest.split_at_mut(per.min(rest.len()));
                rest = tail;
                s.spawn(move |_| {
                    for (p, g, st, decay) in mine.iter_mut() {
                        match adamw_k {
                            Some(k) => {
                                let (m, v) = st.split_at_mut(1);
                                adamw(p, g, m[0], v[0], k, *decay);
                            }
                            None => update_piece(&hyper, step, p, g, st),
                        }
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
        Optimizer::AdamW { .. } => unreachable!("AdamW pieces carry their step constants"),
    }
}

/// AdamW's constants for the update after `step` updates with gradients of global norm `norm`:
/// the scheduled rate, bias corrections, the clipping factor, and the decay factor
/// `1 − lr_t·weight_decay` for the tensors that decay.
pub fn adamw_step(hyper: &HyperParams, step: u64, norm: f32) -> AdamWStep {
    let Optimizer::AdamW {
        lr,
        beta1,
        beta2,
        eps,
        weight_decay,
        warmup_steps,
        decay_steps,
        min_lr,
        clip_norm,
    } = hyper.optimizer
    else {
        unreachable!("adamw_step of another optimizer")
    };
    let t = step + 1;
    let lr_t = lr_at(lr, min_lr, warmup_steps, decay_steps, step);
    AdamWStep {
        lr: lr_t,
        beta1,
        beta2,
        eps,
        c1: (1.0 - detmath::powu(f64::from(beta1), t)) as f32,
        c2: (1.0 - detmath::powu(f64::from(beta2), t)) as f32,
        scale: clip_scale(norm, clip_norm),
        decay: 1.0 - lr_t * weight_decay,
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
        Optimizer::AdamW { .. } => {
            let k = adamw_step(hyper, step, grad_norm(grads, 1));
            let (ms, vs) = state.split_at_mut(n);
            for (((p, g), m), v) in params.iter_mut().zip(grads).zip(ms).zip(vs) {
                let decay = if p.shape.len() >= 2 { k.decay } else { 1.0 };
                adamw(&mut p.data, &g.data, &mut m.data, &mut v.data, k, decay);
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

/// AdamW's constants for one step (see [`adamw_step`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub c1: f32,
    pub c2: f32,
    /// The clipping factor every gradient is multiplied by first.
    pub scale: f32,
    /// `1 − lr·weight_decay`, for the tensors that decay.
    pub decay: f32,
}

/// `g ← g·scale; m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g·g; θ ← θ·decay;
/// θ ← θ − lr·(m/c1)/(√(v/c2) + eps)`, each operation rounded once, in that order.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: AdamWStep, decay: f32) {
    let AdamWStep {
        lr,
        beta1,
        beta2,
        eps,
        c1,
        c2,
        scale,
        ..
    } = k;
    for (((pv, &gv), mv), vv) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let gv = gv * scale;
        *mv = beta1 * *mv + (1.0 - beta1) * gv;
        *vv = beta2 * *vv + (1.0 - beta2) * gv * gv;
        let mhat = *mv / c1;
        let vhat = *vv / c2;
        *pv *= decay;
        *pv -= lr * mhat / (vhat.sqrt() + eps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_schedule_warms_up_then_decays_to_the_floor() {
        let at = |s| lr_at(1e-3, 1e-4, 10, 110, s);
        let near = |s: u64, want: f64| {
            assert!(
                (f64::from(at(s)) - want).abs() < 1e-10,
                "lr at {s}: {}, want {want}",
                at(s)
            )
        };
        near(0, 1e-4);
        near(4, 5e-4);
        near(9, 1e-3);
        near(10, 1e-3);
        near(60, 5.5e-4);
        near(110, 1e-4);
        near(10_000, 1e-4);
        for s in 10..110 {
            assert!(at(s + 1) <= at(s));
        }
        // Clipping: the norm of the scaled gradients is the clip.
        let g = vec![Tensor {
            shape: vec![3, 4096],
            data: (0..3 * 4096)
                .map(|i| ((i % 13) as f32 - 6.0) * 0.1)
                .collect(),
        }];
        let n = grad_norm(&g, 1);
        assert_eq!(n.to_bits(), grad_norm(&g, 2).to_bits());
        let exact: f64 = g[0]
            .data
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        assert!((f64::from(n) - exact).abs() < 1e-4 * exact);
        let s = clip_scale(n, 1.0);
        assert!((f64::from(n * s) - 1.0).abs() < 1e-5);
        assert_eq!(clip_scale(n, 0.0), 1.0);
        assert_eq!(clip_scale(0.5, 1.0), 1.0);
    }

    #[test]
    fn slices_are_disjoint_cover_everything_and_stay_inside() {
        let seed = [7u8; 32];
        let parts: Vec<Vec<usize>> = (0..3)
            .map(|index| {
                DataSlice {
                    seed,
                    index,
                    count: 3,
                }
                .examples(100)
            })
            .collect();
        let mut all: Vec<usize> = parts.concat();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(parts.iter().all(|p| p.len() >= 33));
        let slice = DataSlice {
            seed,
            index: 1,
            count: 3,
        };
        let mut order = DataOrder::sliced(4, 100, 8, &slice).unwrap();
        for step in 0..20 {
            assert!(order.batch(step).iter().all(|i| parts[1].contains(i)));
        }
        let other = DataSlice {
            seed: [8; 32],
            index: 1,
            count: 3,
        }
        .examples(100);
        assert_ne!(other, parts[1]);
        assert!(DataOrder::sliced(
            4,
            100,
            8,
            &DataSlice {
                seed,
                index: 3,
                count: 3
            }
        )
        .is_err());
    }

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
