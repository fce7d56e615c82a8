//! The deterministic CPU reference executor: forward pass, loss and gradients for every model
//! kind, in plain Rust with a fixed reduction order.
//!
//! Every sum runs in one fixed sequential order (over the input index for layer outputs, over
//! the batch for weight gradients, over the outputs for input gradients). Dense layers go through
//! [`crate::gemm`], which blocks and vectorizes across independent outputs without reassociating
//! any sum (each term one fused multiply-add, on every machine); convolutions are written in
//! "axpy" form for the same reason (separate multiply and add: Rust never fuses `a * b + c` on
//! its own). Rust never reorders float additions, and the only transcendental functions come
//! from [`crate::detmath`], so the same inputs give the same bits on every machine. This
//! executor is the CPU training path and the referee of disputes.

use crate::detmath;
use crate::gemm::{gemm_acc, gemm_set, MatRef};
use crate::spec::{Activation, Layer, Model};

/// A dense tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }
}

fn activate(a: Activation, v: &mut [f32]) {
    match a {
        // A select (not `max`, which may return either zero for ±0): -0 and NaN become +0.
        Activation::Relu => v
            .iter_mut()
            .for_each(|x| *x = if *x > 0.0 { *x } else { 0.0 }),
        Activation::Tanh => v.iter_mut().for_each(|x| *x = detmath::tanh(*x)),
        Activation::Sigmoid => v.iter_mut().for_each(|x| *x = detmath::sigmoid(*x)),
    }
}

/// Multiplies `grad` (w.r.t. the activation's output `y`) into the gradient w.r.t. its input.
fn activation_backward(a: Activation, y: &[f32], grad: &mut [f32]) {
    match a {
        // A select, not a branch, so that it vectorizes.
        Activation::Relu => grad
            .iter_mut()
            .zip(y)
            .for_each(|(g, &y)| *g = if y <= 0.0 { 0.0 } else { *g }),
        Activation::Tanh => grad.iter_mut().zip(y).for_each(|(g, &y)| *g *= 1.0 - y * y),
        Activation::Sigmoid => grad
            .iter_mut()
            .zip(y)
            .for_each(|(g, &y)| *g *= y * (1.0 - y)),
    }
}

fn layer_activation(l: &Layer) -> Option<Activation> {
    match *l {
        Layer::Dense { activation, .. } => activation,
        Layer::Conv { activation, .. } => Some(activation),
    }
}

/// `y = b + x·W` for `n` rows (`W` is `inputs × outputs`): each output one chain of fused
/// multiply-adds over the inputs in order, from the bias.
pub(crate) fn dense_forward(
    x: &[f32],
    n: usize,
    w: &[f32],
    b: &[f32],
    inputs: usize,
    outputs: usize,
    threads: usize,
) -> Vec<f32> {
    // y[i][·] = b + Σ_k x[i][k]·W[k][·], summed over k in order.
    let mut out = Vec::with_capacity(n * outputs);
    for _ in 0..n {
        out.extend_from_slice(b);
    }
    gemm_acc(
        MatRef::row_major(x, n, inputs),
        MatRef::row_major(w, inputs, outputs),
        &mut out,
        threads,
    );
    out
}

struct ConvDims {
    c: usize,
    h: usize,
    w: usize,
    f: usize,
    k: usize,
    oh: usize,
    ow: usize,
}

fn conv_dims(l: &Layer) -> ConvDims {
    match *l {
        Layer::Conv {
            channels,
            height,
            width,
            filters,
            kernel,
            ..
        } => ConvDims {
            c: channels,
            h: height,
            w: width,
            f: filters,
            k: kernel,
            oh: height - kernel + 1,
            ow: width - kernel + 1,
        },
        Layer::Dense { .. } => unreachable!("conv_dims of a dense layer"),
    }
}

fn conv_forward(x: &[f32], n: usize, wt: &[f32], b: &[f32], d: &ConvDims) -> Vec<f32> {
    let (in_len, out_len) = (d.c * d.h * d.w, d.f * d.oh * d.ow);
    let mut out = vec![0.0f32; n * out_len];
    for (xs, os) in x.chunks_exact(in_len).zip(out.chunks_exact_mut(out_len)) {
        for f in 0..d.f {
            let of = &mut os[f * d.oh * d.ow..(f + 1) * d.oh * d.ow];
            of.iter_mut().for_each(|v| *v = b[f]);
            for c in 0..d.c {
                for ky in 0..d.k {
                    for kx in 0..d.k {
                        let wv = wt[((f * d.c + c) * d.k + ky) * d.k + kx];
                        for oy in 0..d.oh {
                            let src = &xs[c * d.h * d.w + (oy + ky) * d.w + kx..][..d.ow];
                            let dst = &mut of[oy * d.ow..(oy + 1) * d.ow];
                            for (o, &xv) in dst.iter_mut().zip(src) {
                                *o += wv * xv;
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// The output of every layer (after its activation) for a batch; the last is the logits.
pub fn forward(model: &Model, params: &[Tensor], x: &[f32], n: usize) -> Vec<Vec<f32>> {
    forward_threads(model, params, x, n, 1)
}

/// [`forward`] on up to `threads` threads, with the same bits.
pub fn forward_threads(
    model: &Model,
    params: &[Tensor],
    x: &[f32],
    n: usize,
    threads: usize,
) -> Vec<Vec<f32>> {
    assert_eq!(
        params.len(),
        2 * model.layers.len(),
        "params do not fit the model"
    );
    assert_eq!(x.len(), n * model.input, "batch does not fit the model");
    let mut outs: Vec<Vec<f32>> = Vec::with_capacity(model.layers.len());
    for (i, layer) in model.layers.iter().enumerate() {
        let input = if i == 0 { x } else { &outs[i - 1] };
        let (w, b) = (&params[2 * i].data, &params[2 * i + 1].data);
        let mut y = match *layer {
            Layer::Dense {
                inputs, outputs, ..
            } => dense_forward(input, n, w, b, inputs, outputs, threads),
            Layer::Conv { .. } => conv_forward(input, n, w, b, &conv_dims(layer)),
        };
        if let Some(a) = layer_activation(layer) {
            activate(a, &mut y);
        }
        outs.push(y);
    }
    outs
}

/// The logits for a batch.
pub fn logits(model: &Model, params: &[Tensor], x: &[f32], n: usize) -> Vec<f32> {
    forward(model, params, x, n)
        .pop()
        .expect("a model has at least one layer")
}

/// Softmax cross-entropy: (sum of per-sample losses, gradient w.r.t. the logits of the mean loss).
fn softmax_cross_entropy(z: &[f32], y: &[u8], classes: usize) -> (f64, Vec<f32>) {
    let n = y.len();
    let mut grad = vec![0.0f32; z.len()];
    let mut loss_sum = 0.0f64;
    for ((zr, gr), &label) in z
        .chunks_exact(classes)
        .zip(grad.chunks_exact_mut(classes))
        .zip(y)
    {
        let m = zr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut s = 0.0f32;
        for (g, &zv) in gr.iter_mut().zip(zr) {
            *g = detmath::exp(zv - m);
            s += *g;
        }
        loss_sum += f64::from(detmath::ln(s) - (zr[usize::from(label)] - m));
        let inv_n = 1.0 / n as f32;
        for g in gr.iter_mut() {
            *g = *g / s * inv_n;
        }
        gr[usize::from(label)] -= inv_n;
    }
    (loss_sum, grad)
}

/// Mean loss over the batch and the gradients of every parameter, in the order of `params`.
pub fn loss_and_grads(model: &Model, params: &[Tensor], x: &[f32], y: &[u8]) -> (f32, Vec<Tensor>) {
    loss_and_grads_threads(model, params, x, y, 1)
}

/// [`loss_and_grads`] on up to `threads` threads, with the same bits.
pub fn loss_and_grads_threads(
    model: &Model,
    params: &[Tensor],
    x: &[f32],
    y: &[u8],
    threads: usize,
) -> (f32, Vec<Tensor>) {
    let mut grads = Vec::new();
    let loss = loss_and_grads_into(model, params, x, y, threads, &mut grads);
    (loss, grads)
}

/// [`loss_and_grads_threads`] writing the gradients into `grads`, whose buffers are reused from
/// call to call (they are (re)shaped like `params` when they do not fit). Returns the mean loss.
pub fn loss_and_grads_into(
    model: &Model,
    params: &[Tensor],
    x: &[f32],
    y: &[u8],
    threads: usize,
    grads: &mut Vec<Tensor>,
) -> f32 {
    let n = y.len();
    let outs = forward_threads(model, params, x, n, threads);
    let (loss_sum, mut grad) =
        softmax_cross_entropy(outs.last().expect("at least one layer"), y, model.classes);
    if grads.len() != params.len() || grads.iter().zip(params).any(|(g, p)| g.shape != p.shape) {
        *grads = params.iter().map(|p| Tensor::zeros(&p.shape)).collect();
    }
    for i in (0..model.layers.len()).rev() {
        let layer = &model.layers[i];
        if let Some(a) = layer_activation(layer) {
            activation_backward(a, &outs[i], &mut grad);
        }
        let input = if i == 0 { x } else { &outs[i - 1] };
        let w = &params[2 * i].data;
        let (gw, gb) = {
            let (a, b) = grads.split_at_mut(2 * i + 1);
            (&mut a[2 * i].data, &mut b[0].data)
        };
        let need_input_grad = i > 0;
        let mut gx = if need_input_grad {
            vec![0.0f32; n * layer.inputs()]
        } else {
            Vec::new()
        };
        match *layer {
            Layer::Dense {
                inputs, outputs, ..
            } => {
                gb.fill(0.0);
                for gr in grad.chunks_exact(outputs) {
                    for (bv, &g) in gb.iter_mut().zip(gr) {
                        *bv += g;
                    }
                }
                // dW[k][·] = Σ_i x[i][k]·g[i][·], summed over i in order (from +0: the buffer's
                // old contents are not read).
                gemm_set(
                    MatRef::row_major(input, n, inputs).t(),
                    MatRef::row_major(&grad, n, outputs),
                    gw,
                    threads,
                );
                if need_input_grad {
                    // dx[i][k] = Σ_j g[i][j]·W[k][j], summed over j in order.
                    gemm_acc(
                        MatRef::row_major(&grad, n, outputs),
                        MatRef::row_major(w, inputs, outputs).t(),
                        &mut gx,
                        threads,
                    );
                }
            }
            Layer::Conv { .. } => {
                gb.fill(0.0);
                gw.fill(0.0);
                let d = conv_dims(layer);
                let (in_len, out_len) = (d.c * d.h * d.w, d.f * d.oh * d.ow);
                for s in 0..n {
                    let xs = &input[s * in_len..(s + 1) * in_len];
                    let gs = &grad[s * out_len..(s + 1) * out_len];
                    for f in 0..d.f {
                        let gf = &gs[f * d.oh * d.ow..(f + 1) * d.oh * d.ow];
                        for &g in gf {
                            gb[f] += g;
                        }
                        for c in 0..d.c {
                            for ky in 0..d.k {
                                for kx in 0..d.k {
                                    let wi = ((f * d.c + c) * d.k + ky) * d.k + kx;
                                    let mut acc = gw[wi];
                                    for oy in 0..d.oh {
                                        let src =
                                            &xs[c * d.h * d.w + (oy + ky) * d.w + kx..][..d.ow];
                                        for (&g, &xv) in
                                            gf[oy * d.ow..(oy + 1) * d.ow].iter().zip(src)
                                        {
                                            acc += g * xv;
                                        }
                                    }
                                    gw[wi] = acc;
                                    if need_input_grad {
                                        let wv = w[wi];
                                        let gxs = &mut gx[s * in_len..(s + 1) * in_len];
                                        for oy in 0..d.oh {
                                            let dst = &mut gxs
                                                [c * d.h * d.w + (oy + ky) * d.w + kx..][..d.ow];
                                            for (o, &g) in
                                                dst.iter_mut().zip(&gf[oy * d.ow..(oy + 1) * d.ow])
                                            {
                                                *o += wv * g;
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        grad = gx;
    }
    (loss_sum / n as f64) as f32
}

/// (correct predictions, summed loss) over `x`, evaluated in chunks of `chunk` samples.
pub fn evaluate(
    model: &Model,
    params: &[Tensor],
    x: &[f32],
    y: &[u8],
    chunk: usize,
) -> (usize, f64) {
    let mut correct = 0usize;
    let mut loss = 0.0f64;
    let chunk = chunk.max(1);
    for (xc, yc) in x.chunks(chunk * model.input).zip(y.chunks(chunk)) {
        let z = logits(model, params, xc, yc.len());
        for (zr, &label) in z.chunks_exact(model.classes).zip(yc) {
            if argmax(zr) == usize::from(label) {
                correct += 1;
            }
        }
        loss += softmax_cross_entropy(&z, yc, model.classes).0;
    }
    (correct, loss)
}

/// The index of the largest value; the first one on ties.
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ModelSpec;

    fn numeric_gradient_check(spec: &str, input: usize) {
        let model = ModelSpec::from_json(spec.as_bytes()).unwrap();
        let mut params = crate::optim::init_params(&model, 7);
        // Non-zero biases so every path is exercised.
        for p in params.iter_mut() {
            for (i, v) in p.data.iter_mut().enumerate() {
                *v += 0.01 * ((i % 7) as f32 - 3.0);
            }
        }
        let n = 3;
        let x: Vec<f32> = (0..n * input)
            .map(|i| ((i * 37) % 17) as f32 / 17.0)
            .collect();
        let y = vec![1u8, 0, 2];
        let (_, grads) = loss_and_grads(&model, &params, &x, &y);
        let eps = 1e-2f32;
        for (pi, p) in params.clone().iter().enumerate() {
            for j in (0..p.data.len()).step_by(p.data.len().div_ceil(5)) {
                let mut plus = params.clone();
                plus[pi].data[j] += eps;
                let mut minus = params.clone();
                minus[pi].data[j] -= eps;
                let lp = f64::from(loss_and_grads(&model, &plus, &x, &y).0);
                let lm = f64::from(loss_and_grads(&model, &minus, &x, &y).0);
                let numeric = (lp - lm) / (2.0 * f64::from(eps));
                let analytic = f64::from(grads[pi].data[j]);
                assert!(
                    (numeric - analytic).abs() < 2e-3 + 0.05 * analytic.abs(),
                    "{spec}: param {pi}[{j}] numeric {numeric} analytic {analytic}"
                );
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        numeric_gradient_check(r#"{"kind":"logistic","input":6,"classes":3}"#, 6);
        numeric_gradient_check(
            r#"{"kind":"mlp","input":6,"classes":3,"hidden":[{"units":5,"activation":"tanh"},{"units":4,"activation":"sigmoid"}]}"#,
            6,
        );
        numeric_gradient_check(
            r#"{"kind":"cnn","input":{"channels":1,"height":4,"width":4},"classes":3,"conv":[{"filters":2,"kernel":2,"activation":"tanh"},{"filters":2,"kernel":2,"activation":"sigmoid"}],"hidden":[{"units":4,"activation":"tanh"}]}"#,
            16,
        );
    }
}
