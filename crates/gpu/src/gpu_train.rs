//! Training every model kind (logistic, MLP, CNN) on a wgpu device with the crate's own WGSL
//! kernels: dense and convolution forward passes (`dense_exact.wgsl`, `conv_forward.wgsl`),
//! softmax cross-entropy (`xent.wgsl`), weight and input gradients (`dense_grad_w.wgsl`,
//! `dense_grad_x.wgsl`, `conv_grad_w.wgsl`, `conv_grad_x.wgsl`) and the optimizer update
//! (`update.wgsl`, SGD with or without momentum, Adam). Every kernel binds at most four storage buffers, so the downlevel
//! limits that every adapter meets suffice.
//!
//! The initialization, the data order, the optimizer formulas and the checkpoint format are the
//! CPU path's, and so are the bits: every kernel is built on `kernels/exact.wgsl` and follows the
//! executor's operation order (fused multiply-adds in the GEMM's order, the executor's activation,
//! softmax and update sequences, correctly rounded division and square root), so a segment
//! trained here has the checkpoint hash of the same segment on the CPU executor and an evaluator
//! compares it exactly ([`crate::verify::audit`]). The per-sample losses come back to
//! the host, which averages them in f64 as the executor does.
//!
//! A run's batches, labels and per-step hyper-parameters are gathered on the host and written to
//! the device together (up to [`RUN_UPLOAD_BYTES`] a submission), and all of its steps are
//! recorded into one command buffer; the samples' losses stay on the device until the end of
//! [`GpuTrainer::run`]; parameters and optimizer state are uploaded at the start of a run and
//! read back at its end (once per segment of a work unit). Nothing crosses between host and
//! device per step.

use crate::checkpoint::TrainState;
use crate::dataset::Samples;
use crate::device::GpuDevice;
use crate::error::GpuError;
use crate::executor::Tensor;
use crate::hash::Hash32;
use crate::optim::{DataOrder, HyperParams, Optimizer};
use crate::spec::{Activation, Layer, Model};
use crate::train::{CheckpointStore, Trainer, WorkResult, SEGMENTS_MAX};
use crate::verify::SegmentReplayer;
use wgpu::util::DeviceExt;

fn act_code(a: Option<Activation>) -> u32 {
    match a {
        None => 0,
        Some(Activation::Relu) => 1,
        Some(Activation::Tanh) => 2,
        Some(Activation::Sigmoid) => 3,
    }
}

/// The most bytes of batches, labels and hyper-parameters one submission carries; a run of more
/// steps is cut into submissions of this size.
pub const RUN_UPLOAD_BYTES: usize = 64 << 20;
/// Per-step slots in those buffers start at multiples of this (the largest offset alignment
/// wgpu lets an adapter require for storage and uniform bindings).
const SLOT_ALIGN: usize = 256;

/// `size` bytes of `buffer` from `offset`.
fn at(buffer: &wgpu::Buffer, offset: usize, size: usize) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset: offset as u64,
        size: std::num::NonZeroU64::new(size as u64),
    })
}

/// How a layer runs on the device.
#[derive(Clone, Copy)]
enum LayerKind {
    Dense,
    Conv,
}

fn layer_activation(l: &Layer) -> Option<Activation> {
    match *l {
        Layer::Dense { activation, .. } => activation,
        Layer::Conv { activation, .. } => Some(activation),
    }
}

/// Elements of a layer's bias.
fn outputs_of_bias(l: &Layer) -> usize {
    l.param_shapes().1.iter().product()
}

struct LayerBuffers {
    kind: LayerKind,
    inputs: usize,
    outputs: usize,
    /// Elements of the weight tensor.
    w_len: usize,
    /// Parameters (w, b), their gradients, and two optimizer slots each.
    w: wgpu::Buffer,
    b: wgpu::Buffer,
    gw: wgpu::Buffer,
    gb: wgpu::Buffer,
    slots: [[wgpu::Buffer; 2]; 2],
    /// Activated output, and the gradient w.r.t. the pre-activation output.
    y: wgpu::Buffer,
    g: wgpu::Buffer,
    forward_dims: wgpu::Buffer,
    grad_w_dims: wgpu::Buffer,
    grad_x_dims: wgpu::Buffer,
}

/// Trains one model (any kind: logistic, MLP, CNN) on one training split on a GPU device.
pub struct GpuTrainer<'a> {
    dev: &'a GpuDevice,
    model: &'a Model,
    hyper: HyperParams,
    data: &'a Samples,
    order: DataOrder,
    layers: Vec<LayerBuffers>,
    xent_dims: wgpu::Buffer,
    /// The most bytes of step inputs per submission ([`RUN_UPLOAD_BYTES`] unless set).
    upload_bytes: usize,
}

impl std::fmt::Debug for GpuTrainer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuTrainer")
            .field("adapter", &self.dev.adapter.name)
            .field("hyper", &self.hyper)
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl<'a> GpuTrainer<'a> {
    pub fn new(
        dev: &'a GpuDevice,
        model: &'a Model,
        hyper: HyperParams,
        data: &'a Samples,
    ) -> Result<Self, GpuError> {
        hyper.validate()?;
        if model.is_transformer() || matches!(hyper.optimizer, Optimizer::AdamW { .. }) {
            return Err(GpuError::DeviceFailed {
                reason: "transformers and AdamW train on the CPU executor (no device kernels yet)"
                    .into(),
            });
        }
        if data.features != model.input || data.classes != model.classes {
            return Err(GpuError::ShapeMismatch {
                reason: format!(
                    "data of {} features × {} classes for a model of {} × {}",
                    data.features, data.classes, model.input, model.classes
                ),
            });
        }
        let n = hyper.batch;
        let d = &dev.device;
        let zeros = |len: usize, label: &str| {
            d.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (len.max(1) * 4) as u64,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let uniform = |v: &[u32]| {
            d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("dims"),
                contents: bytemuck::cast_slice(v),
                usage: wgpu::BufferUsages::UNIFORM,
            })
        };
        let n32 = u32::try_from(n).map_err(|_| GpuError::DeviceFailed {
            reason: format!("batch {n} does not fit a u32"),
        })?;
        let mut layers: Vec<LayerBuffers> = Vec::with_capacity(model.layers.len());
        let u32_of = |what: &str, v: usize| {
            u32::try_from(v).map_err(|_| GpuError::ShapeMismatch {
                reason: format!("{what} = {v} does not fit a u32"),
            })
        };
        for (i, layer) in model.layers.iter().enumerate() {
            let prev_act = if i == 0 {
                0
            } else {
                act_code(layer_activation(&model.layers[i - 1]))
            };
            let (inputs, outputs) = (layer.inputs(), layer.outputs());
            let (w_shape, _) = layer.param_shapes();
            let w_len: usize = w_shape.iter().product();
            // The fields after the shapes hold the exact kernels' run-time zero (always 0).
            let (kind, forward_dims, grad_w_dims, grad_x_dims) = match *layer {
                Layer::Dense { activation, .. } => {
                    let (i32_, o32) = (u32_of("inputs", inputs)?, u32_of("outputs", outputs)?);
                    // gemm_core.wgsl's shapes: m, n, k, A's row and term strides, B's term and
                    // column strides, the epilogue's activation, the run-time zero.
                    let gemm = |m, nn, k, a_rs, a_ks, b_ks, b_cs, act| {
                        uniform(&[m, nn, k, a_rs, a_ks, b_ks, b_cs, act, 0, 0, 0, 0])
                    };
                    (
                        LayerKind::Dense,
                        // y = x·W (+ b, act): batch × outputs over inputs.
                        gemm(n32, o32, i32_, i32_, 1, o32, 1, act_code(activation)),
                        // gw = xᵀ·g: inputs × outputs over the batch.
                        gemm(i32_, o32, n32, 1, i32_, o32, 1, 0),
                        // gx = g·Wᵀ (· the previous activation's derivative): batch × inputs
                        // over outputs.
                        gemm(n32, i32_, o32, o32, 1, 1, o32, prev_act),
                    )
                }
                Layer::Conv {
                    channels,
                    height,
                    width,
                    filters,
                    kernel,
                    activation,
                } => {
                    let dims = [
                        n32,
                        u32_of("channels", channels)?,
                        u32_of("height", height)?,
                        u32_of("width", width)?,
                        u32_of("filters", filters)?,
                        u32_of("kernel", kernel)?,
                        u32_of("output height", height - kernel + 1)?,
                        u32_of("output width", width - kernel + 1)?,
                        act_code(Some(activation)),
                        0,
                        prev_act,
                        0,
                    ];
                    let conv = uniform(&dims);
                    (LayerKind::Conv, conv.clone(), conv.clone(), conv)
                }
            };
            let slot = |name: &str| zeros(w_len, name);
            layers.push(LayerBuffers {
                kind,
                inputs,
                outputs,
                w_len,
                w: zeros(w_len, "w"),
                b: zeros(outputs_of_bias(layer), "b"),
                gw: zeros(w_len, "gw"),
                gb: zeros(outputs_of_bias(layer), "gb"),
                slots: [
                    [slot("m.w"), zeros(outputs_of_bias(layer), "m.b")],
                    [slot("v.w"), zeros(outputs_of_bias(layer), "v.b")],
                ],
                y: zeros(n * outputs, "y"),
                g: zeros(n * outputs, "g"),
                forward_dims,
                grad_w_dims,
                grad_x_dims,
            });
        }
        Ok(GpuTrainer {
            dev,
            model,
            hyper,
            data,
            order: DataOrder::new(hyper.seed, data.len(), n)?,
            xent_dims: uniform(&[n32, model.classes as u32, 0, 0]),
            upload_bytes: RUN_UPLOAD_BYTES,
            layers,
        })
    }

    /// Caps the bytes of batches, labels and hyper-parameters one submission carries (at least
    /// one step's): a run is cut into more submissions, with the same bits.
    pub fn with_upload_bytes(mut self, bytes: usize) -> Self {
        self.upload_bytes = bytes;
        self
    }

    pub fn model(&self) -> &Model {
        self.model
    }

    fn bind(&self, pipeline: &wgpu::ComputePipeline, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.dev
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
    }

    fn bind_resources(
        &self,
        pipeline: &wgpu::ComputePipeline,
        resources: Vec<wgpu::BindingResource<'_>>,
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = resources
            .into_iter()
            .enumerate()
            .map(|(i, resource)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource,
            })
            .collect();
        self.dev
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
    }

    fn upload(&self, state: &TrainState) -> Result<(), GpuError> {
        let slots = self.hyper.state_slots();
        let nt = 2 * self.layers.len();
        if state.params.len() != nt || state.opt_state.len() != slots * nt {
            return Err(GpuError::ShapeMismatch {
                reason: "training state does not fit the model and optimizer".into(),
            });
        }
        let q = &self.dev.queue;
        for (l, lb) in self.layers.iter().enumerate() {
            q.write_buffer(&lb.w, 0, bytemuck::cast_slice(&state.params[2 * l].data));
            q.write_buffer(
                &lb.b,
                0,
                bytemuck::cast_slice(&state.params[2 * l + 1].data),
            );
            for s in 0..slots {
                let t = &state.opt_state[s * nt..];
                q.write_buffer(&lb.slots[s][0], 0, bytemuck::cast_slice(&t[2 * l].data));
                q.write_buffer(&lb.slots[s][1], 0, bytemuck::cast_slice(&t[2 * l + 1].data));
            }
        }
        Ok(())
    }

    fn download(&self, state: &mut TrainState) -> Result<(), GpuError> {
        let slots = self.hyper.state_slots();
        let nt = 2 * self.layers.len();
        let read = |b: &wgpu::Buffer, t: &mut Tensor| -> Result<(), GpuError> {
            let bytes = self.dev.read(b, t.data.len() * 4)?;
            t.data.copy_from_slice(bytemuck::cast_slice(&bytes));
            Ok(())
        };
        for (l, lb) in self.layers.iter().enumerate() {
            read(&lb.w, &mut state.params[2 * l])?;
            read(&lb.b, &mut state.params[2 * l + 1])?;
            for s in 0..slots {
                read(&lb.slots[s][0], &mut state.opt_state[s * nt + 2 * l])?;
                read(&lb.slots[s][1], &mut state.opt_state[s * nt + 2 * l + 1])?;
            }
        }
        Ok(())
    }

    /// The update's uniform: mode, loss slot, batch, lr, β1, β2, eps, c1, c2.
    fn hyper_bytes(&self, step: u64, slot: u32) -> [u32; 12] {
        let (mode, lr, b1, b2, eps, c1, c2) = match self.hyper.optimizer {
            Optimizer::Sgd { lr, momentum: 0.0 } => (0, lr, 0.0, 0.0, 0.0, 1.0, 1.0),
            Optimizer::Sgd { lr, momentum } => (1, lr, momentum, 0.0, 0.0, 1.0, 1.0),
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let t = step + 1;
                let c1 = (1.0 - crate::detmath::powu(f64::from(beta1), t)) as f32;
                let c2 = (1.0 - crate::detmath::powu(f64::from(beta2), t)) as f32;
                (2, lr, beta1, beta2, eps, c1, c2)
            }
            Optimizer::AdamW { .. } => unreachable!("refused by GpuTrainer::new"),
        };
        [
            mode,
            slot,
            self.hyper.batch as u32,
            0,
            lr.to_bits(),
            b1.to_bits(),
            b2.to_bits(),
            eps.to_bits(),
            c1.to_bits(),
            c2.to_bits(),
            0,
            0,
        ]
    }

    /// `steps` optimizer steps from `state` on the device; the mean loss of each.
    ///
    /// The batches, labels and per-step hyper-parameters of up to [`RUN_UPLOAD_BYTES`] worth of
    /// steps are gathered on the host, written to the device in one go, and every step of them
    /// is recorded into one command buffer (one submission): nothing goes back and forth per
    /// step, and the per-sample losses are read once, at the end of the run.
    pub fn run(&mut self, state: &mut TrainState, steps: u64) -> Result<Vec<f32>, GpuError> {
        if steps == 0 {
            return Ok(Vec::new());
        }
        let steps_usize = usize::try_from(steps)
            .ok()
            .filter(|_| u32::try_from(steps).is_ok())
            .ok_or_else(|| GpuError::HyperParamsInvalid {
                reason: format!("{steps} steps in one run"),
            })?;
        self.upload(state)?;
        let dev = self.dev;
        let n = self.hyper.batch;
        // Every sample's loss of every step; the host averages each step's in f64.
        let losses = dev.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("losses"),
            size: (steps_usize * n * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        // Per-step slots, aligned for binding at an offset.
        let x_bytes = n * self.model.input * 4;
        let (x_slot, y_slot) = (
            x_bytes.next_multiple_of(SLOT_ALIGN),
            (n * 4).next_multiple_of(SLOT_ALIGN),
        );
        let chunk = (self.upload_bytes / (x_slot + y_slot + SLOT_ALIGN)).clamp(1, steps_usize);
        let slots = |len: usize, usage: wgpu::BufferUsages, label: &str| {
            dev.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: len as u64,
                usage: usage | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let xs = slots(chunk * x_slot, wgpu::BufferUsages::STORAGE, "batches");
        let ys = slots(chunk * y_slot, wgpu::BufferUsages::STORAGE, "labels");
        let hs = slots(chunk * SLOT_ALIGN, wgpu::BufferUsages::UNIFORM, "hyper");
        // Bind groups that do not change from step to step, made once per run.
        let nl = self.layers.len();
        let kernels = |lb: &LayerBuffers| match lb.kind {
            LayerKind::Dense => (
                &dev.exact.dense,
                &dev.exact.dense_grad_w,
                &dev.exact.dense_grad_x,
            ),
            LayerKind::Conv => (
                &dev.exact.conv,
                &dev.exact.conv_grad_w,
                &dev.exact.conv_grad_x,
            ),
        };
        let mut forward = Vec::with_capacity(nl);
        let mut grad_w = Vec::with_capacity(nl);
        let mut grad_x = Vec::with_capacity(nl);
        for (l, lb) in self.layers.iter().enumerate() {
            let (fwd, gw, gx) = kernels(lb);
            if l == 0 {
                // The first layer reads the step's batch: bound per step below.
                forward.push(None);
                grad_w.push(None);
            } else {
                let input = &self.layers[l - 1].y;
                forward.push(Some(
                    self.bind(fwd, &[input, &lb.w, &lb.b, &lb.y, &lb.forward_dims]),
                ));
                grad_w.push(Some(
                    self.bind(gw, &[input, &lb.g, &lb.gw, &lb.gb, &lb.grad_w_dims]),
                ));
            }
            grad_x.push((l > 0).then(|| {
                let prev = &self.layers[l - 1];
                self.bind(gx, &[&lb.g, &lb.w, &prev.y, &prev.g, &lb.grad_x_dims])
            }));
        }
        let last = &self.layers[nl - 1];
        let first = &self.layers[0];
        let (first_fwd, first_gw, _) = kernels(first);
        let groups64 = |v: usize| v.div_ceil(64) as u32;
        let groups256 = |v: usize| v.div_ceil(256) as u32;
        let mut xh: Vec<f32> = Vec::with_capacity(chunk * x_slot / 4);
        let mut yh: Vec<u32> = Vec::with_capacity(chunk * y_slot / 4);
        let mut hh: Vec<u32> = Vec::with_capacity(chunk * SLOT_ALIGN / 4);
        for chunk_start in (0..steps_usize).step_by(chunk) {
            let count = chunk.min(steps_usize - chunk_start);
            // Gather the chunk's batches, labels and hyper-parameters on the host.
            xh.clear();
            yh.clear();
            hh.clear();
            for k in 0..count {
                let s = chunk_start + k;
                let step = state.step + s as u64;
                for &i in self.order.batch(step) {
                    xh.extend_from_slice(self.data.row(i));
                    yh.push(u32::from(self.data.y[i]));
                }
                xh.resize((k + 1) * x_slot / 4, 0.0);
                yh.resize((k + 1) * y_slot / 4, 0);
                hh.extend_from_slice(&self.hyper_bytes(step, s as u32));
                hh.resize((k + 1) * SLOT_ALIGN / 4, 0);
            }
            let q = &dev.queue;
            q.write_buffer(&xs, 0, bytemuck::cast_slice(&xh));
            q.write_buffer(&ys, 0, bytemuck::cast_slice(&yh));
            q.write_buffer(&hs, 0, bytemuck::cast_slice(&hh));
            // The chunk's per-step bind groups: the first layer's batch, the labels and the
            // step's hyper-parameters.
            let mut per_step = Vec::with_capacity(count);
            for k in 0..count {
                let xb = at(&xs, k * x_slot, x_bytes);
                let hb = || at(&hs, k * SLOT_ALIGN, 48);
                let fwd = self.bind_resources(
                    first_fwd,
                    vec![
                        xb.clone(),
                        first.w.as_entire_binding(),
                        first.b.as_entire_binding(),
                        first.y.as_entire_binding(),
                        first.forward_dims.as_entire_binding(),
                    ],
                );
                let gw = self.bind_resources(
                    first_gw,
                    vec![
                        xb,
                        first.g.as_entire_binding(),
                        first.gw.as_entire_binding(),
                        first.gb.as_entire_binding(),
                        first.grad_w_dims.as_entire_binding(),
                    ],
                );
                let xent = self.bind_resources(
                    &dev.exact.xent,
                    vec![
                        last.y.as_entire_binding(),
                        at(&ys, k * y_slot, n * 4),
                        last.g.as_entire_binding(),
                        losses.as_entire_binding(),
                        self.xent_dims.as_entire_binding(),
                        hb(),
                    ],
                );
                let mut update = Vec::with_capacity(2 * nl);
                for lb in &self.layers {
                    for (t, (p, g)) in [(&lb.w, &lb.gw), (&lb.b, &lb.gb)].into_iter().enumerate() {
                        update.push(self.bind_resources(
                            &dev.exact.update,
                            vec![
                                p.as_entire_binding(),
                                g.as_entire_binding(),
                                lb.slots[0][t].as_entire_binding(),
                                lb.slots[1][t].as_entire_binding(),
                                hb(),
                            ],
                        ));
                    }
                }
                per_step.push((fwd, gw, xent, update));
            }
            let mut enc = dev
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                for (first_fwd_bg, first_gw_bg, xent, update) in &per_step {
                    for (l, lb) in self.layers.iter().enumerate() {
                        let bg = forward[l].as_ref().unwrap_or(first_fwd_bg);
                        pass.set_bind_group(0, bg, &[]);
                        match lb.kind {
                            LayerKind::Dense => {
                                pass.set_pipeline(&dev.exact.dense);
                                pass.dispatch_workgroups(groups64(lb.outputs), groups64(n), 1);
                            }
                            LayerKind::Conv => {
                                pass.set_pipeline(&dev.exact.conv);
                                pass.dispatch_workgroups(groups256(lb.outputs), n as u32, 1);
                            }
                        }
                    }
                    pass.set_pipeline(&dev.exact.xent);
                    pass.set_bind_group(0, xent, &[]);
                    pass.dispatch_workgroups(n.div_ceil(64) as u32, 1, 1);
                    for l in (0..nl).rev() {
                        let lb = &self.layers[l];
                        let gw_bg = grad_w[l].as_ref().unwrap_or(first_gw_bg);
                        match lb.kind {
                            LayerKind::Dense => {
                                pass.set_pipeline(&dev.exact.dense_grad_w);
                                pass.set_bind_group(0, gw_bg, &[]);
                                pass.dispatch_workgroups(
                                    groups64(lb.outputs),
                                    groups64(lb.inputs),
                                    1,
                                );
                                if let Some(bg) = &grad_x[l] {
                                    pass.set_pipeline(&dev.exact.dense_grad_x);
                                    pass.set_bind_group(0, bg, &[]);
                                    pass.dispatch_workgroups(groups64(lb.inputs), groups64(n), 1);
                                }
                            }
                            LayerKind::Conv => {
                                pass.set_pipeline(&dev.exact.conv_grad_w);
                                pass.set_bind_group(0, gw_bg, &[]);
                                pass.dispatch_workgroups(groups256(lb.w_len), 1, 1);
                                if let Some(bg) = &grad_x[l] {
                                    pass.set_pipeline(&dev.exact.conv_grad_x);
                                    pass.set_bind_group(0, bg, &[]);
                                    pass.dispatch_workgroups(groups256(lb.inputs), n as u32, 1);
                                }
                            }
                        }
                    }
                    pass.set_pipeline(&dev.exact.update);
                    for (i, bg) in update.iter().enumerate() {
                        let len = if i % 2 == 0 {
                            self.layers[i / 2].w_len
                        } else {
                            self.model.layers[i / 2].param_shapes().1.iter().product()
                        };
                        pass.set_bind_group(0, bg, &[]);
                        pass.dispatch_workgroups(len.div_ceil(256).clamp(1, 4096) as u32, 1, 1);
                    }
                }
            }
            dev.queue.submit([enc.finish()]);
        }
        let out = dev.read(&losses, steps_usize * n * 4)?;
        let sample_losses: &[f32] = bytemuck::cast_slice(&out);
        self.download(state)?;
        state.step += steps;
        // The executor's mean: the samples' losses summed in order in f64, divided, rounded.
        Ok(sample_losses
            .chunks_exact(n)
            .map(|step| (step.iter().fold(0.0f64, |s, &l| s + f64::from(l)) / n as f64) as f32)
            .collect())
    }

    /// A work unit on the device, committed exactly as [`crate::train::Trainer::work_unit`]
    /// commits one: the checkpoint at the end of every segment goes into `store` and the chain.
    pub fn work_unit(
        &mut self,
        start: &TrainState,
        segments: u64,
        segment_steps: u64,
        store: &mut CheckpointStore,
    ) -> Result<(WorkResult, TrainState), GpuError> {
        if segments == 0 || segments > SEGMENTS_MAX || segment_steps == 0 {
            return Err(GpuError::HyperParamsInvalid {
                reason: format!("{segments} segments of {segment_steps} steps"),
            });
        }
        let start_hash: Hash32 = store.put(start.encode(self.model));
        let mut state = start.clone();
        let mut chain = Vec::with_capacity(segments as usize);
        let mut losses = Vec::with_capacity((segments * segment_steps) as usize);
        for _ in 0..segments {
            losses.extend(self.run(&mut state, segment_steps)?);
            chain.push(store.put(state.encode(self.model)));
        }
        Ok((
            WorkResult {
                start: start_hash,
                start_step: start.step,
                segment_steps,
                chain,
                losses,
            },
            state,
        ))
    }
}

impl SegmentReplayer for GpuTrainer<'_> {
    fn replay(&mut self, start: &[u8], steps: u64) -> Result<Vec<u8>, GpuError> {
        let model = self.model;
        let mut state = TrainState::decode(start, model)?;
        self.run(&mut state, steps)?;
        Ok(state.encode(model))
    }
}

/// What an evaluator replays segments on: its device when it has one that takes the model,
/// else the CPU executor. The bits are the same, so the comparison stays exact.
pub enum Replayer<'a> {
    Cpu(Trainer<'a>),
    Device(GpuTrainer<'a>),
}

impl<'a> Replayer<'a> {
    pub fn new(
        device: Option<&'a GpuDevice>,
        model: &'a Model,
        hyper: HyperParams,
        data: impl Into<crate::train::TrainData<'a>>,
    ) -> Result<Self, GpuError> {
        let data = data.into();
        if let (Some(d), crate::train::TrainData::Samples(s)) = (device, data) {
            if let Ok(t) = GpuTrainer::new(d, model, hyper, s) {
                return Ok(Replayer::Device(t));
            }
        }
        Ok(Replayer::Cpu(Trainer::new(model, hyper, data)?))
    }

    /// The adapter's name, or `cpu`.
    pub fn device_name(&self) -> String {
        match self {
            Replayer::Cpu(_) => "cpu".into(),
            Replayer::Device(t) => t.dev.adapter.name.clone(),
        }
    }
}

impl std::fmt::Debug for Replayer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Replayer({})", self.device_name())
    }
}

impl SegmentReplayer for Replayer<'_> {
    fn replay(&mut self, start: &[u8], steps: u64) -> Result<Vec<u8>, GpuError> {
        match self {
            Replayer::Cpu(t) => t.replay(start, steps),
            Replayer::Device(t) => t.replay(start, steps),
        }
    }
}
