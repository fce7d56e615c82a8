//! GPU devices through wgpu (Vulkan, Metal, DX12, GL) and the crate's own WGSL kernels, each in
//! `src/kernels/` beside this host code and tested against a CPU reference:
//!
//! - `matmul.wgsl` — tiled f32 matmul (64×64 tiles, 4×4 per thread), the capability benchmark a
//!   trainer runs at registration;
//! - `dense.wgsl` + `argmax.wgsl` — batched evaluation (forward pass of dense models, accuracy);
//! - `distance.wgsl` — the L2 distance between two checkpoints' parameters;
//! - `exact.wgsl` — the exact arithmetic (correctly rounded division and square root, software
//!   fused multiply-add, detmath's transcendental functions) that every training kernel is built
//!   on, checked through `exact_probe.wgsl`;
//! - `gemm_core.wgsl` — the tiled exact GEMM (64×64 tiles, 4×4 per thread, fixed order per
//!   output) under `dense_exact.wgsl`, `dense_grad_w.wgsl`, `dense_grad_x.wgsl`;
//! - `dense_exact.wgsl`, `dense_grad_w.wgsl`, `dense_grad_x.wgsl`, `conv_forward.wgsl`,
//!   `conv_grad_w.wgsl`, `conv_grad_x.wgsl`, `xent.wgsl`, `update.wgsl` — training of every model
//!   kind on the device, bit for bit the CPU executor's ([`crate::gpu_train`]).
//!
//! [`discover`] lists every adapter; [`GpuDevice::open_best`] picks the best (discrete, then
//! integrated, then virtual, then a CPU adapter such as Mesa's lavapipe) and [`Compute::select`]
//! falls back to the CPU path with a log line when there is none.

use crate::error::GpuError;
use crate::executor::Tensor;
use crate::spec::{Activation, Layer, Model};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use wgpu::util::DeviceExt;

/// What an adapter reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterReport {
    pub name: String,
    pub vendor: u32,
    pub device_type: String,
    pub backend: String,
    pub driver: String,
    pub max_compute_workgroup_size_x: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
}

fn report(adapter: &wgpu::Adapter) -> AdapterReport {
    let info = adapter.get_info();
    let limits = adapter.limits();
    AdapterReport {
        name: info.name,
        vendor: info.vendor,
        device_type: format!("{:?}", info.device_type),
        backend: format!("{:?}", info.backend),
        driver: info.driver,
        max_compute_workgroup_size_x: limits.max_compute_workgroup_size_x,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_buffer_size: limits.max_buffer_size,
    }
}

fn rank(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 1,
        wgpu::DeviceType::Other => 0,
    }
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle())
}

/// Every adapter wgpu can see, best first.
pub fn discover() -> Vec<AdapterReport> {
    let mut adapters = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    adapters.sort_by_key(|a| std::cmp::Reverse(rank(a.get_info().device_type)));
    adapters.iter().map(report).collect()
}

const MATMUL_WGSL: &str = include_str!("kernels/matmul.wgsl");
const DENSE_WGSL: &str = include_str!("kernels/dense.wgsl");
const ARGMAX_WGSL: &str = include_str!("kernels/argmax.wgsl");
const DISTANCE_WGSL: &str = include_str!("kernels/distance.wgsl");
const DENSE_EXACT_WGSL: &str = include_str!("kernels/dense_exact.wgsl");
const XENT_WGSL: &str = include_str!("kernels/xent.wgsl");
const DENSE_GRAD_W_WGSL: &str = include_str!("kernels/dense_grad_w.wgsl");
const DENSE_GRAD_X_WGSL: &str = include_str!("kernels/dense_grad_x.wgsl");
const UPDATE_WGSL: &str = include_str!("kernels/update.wgsl");
const GEMM_CORE_WGSL: &str = include_str!("kernels/gemm_core.wgsl");
const CONV_FORWARD_WGSL: &str = include_str!("kernels/conv_forward.wgsl");
const CONV_GRAD_W_WGSL: &str = include_str!("kernels/conv_grad_w.wgsl");
const CONV_GRAD_X_WGSL: &str = include_str!("kernels/conv_grad_x.wgsl");
/// Operands the device's `fma` is checked on when it is opened.
const FMA_PROBE_OPERANDS: usize = 1 << 14;

/// The exact arithmetic every bit-exact kernel is built on (prepended to their sources).
pub const EXACT_WGSL: &str = include_str!("kernels/exact.wgsl");
const EXACT_PROBE_WGSL: &str = include_str!("kernels/exact_probe.wgsl");
const EXACT_F64_WGSL: &str = include_str!("kernels/exact_f64.wgsl");
const EXACT_F64_STUB_WGSL: &str = include_str!("kernels/exact_f64_stub.wgsl");

/// Operands that reach every path of the exact functions: special values, subnormals, random
/// bit patterns of every exponent, and the ranges training uses.
pub fn exact_operands(count: usize, salt: u64) -> Vec<f32> {
    let specials = [
        0.0f32,
        -0.0,
        1.0,
        -1.0,
        0.5,
        2.0,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e-45,
        f32::from_bits(0x007f_ffff),
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        88.7,
        -87.3,
        9.0,
        0.49999997,
    ];
    (0..count as u64)
        .map(|i| {
            let mut h = (i ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^= h >> 31;
            h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            h ^= h >> 29;
            match h % 8 {
                0 => specials[(h >> 8) as usize % specials.len()],
                1 | 2 => f32::from_bits((h >> 32) as u32),
                // Subnormals and the smallest normals.
                3 => f32::from_bits((h >> 32) as u32 & 0x80ff_ffff),
                _ => ((h >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 40.0,
            }
        })
        .collect()
}

/// A function of `kernels/exact.wgsl`, run over arrays by [`GpuDevice::exact_probe`]; its CPU
/// twin is [`ExactOp::cpu`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExactOp {
    /// IEEE `a / b`.
    Div,
    /// IEEE `√a`.
    Sqrt,
    Exp,
    Ln,
    Tanh,
    Sigmoid,
    /// `a·b` rounded, then `+ a` (never fused).
    MulThenAdd,
    /// `a·b + a` with one rounding, by the device's `fma` (which a device may leave unfused).
    FusedMulAdd,
    /// `a[i]·b[i] + a[i+1]` with one rounding, in integer arithmetic (`fma_soft`).
    SoftFma,
    /// `a[i]·b[i] + a[i+1]` through `ffma`: the fused multiply-add the kernels use on this
    /// device (its own, the f64 one, or the integer one; [`GpuDevice::fma_path`]).
    KernelFma,
}

/// Which fused multiply-add the exact kernels run on a device: the first of these that
/// reproduced `detmath::fma` on every probe operand when the device was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FmaPath {
    /// The device's own `fma`.
    Hardware,
    /// `fma_f64` (`kernels/exact_f64.wgsl`): an exact f64 product, TwoSum, one corrected
    /// conversion; needs the adapter's SHADER_F64.
    F64,
    /// `fma_soft`: integer arithmetic, on every device.
    Integer,
}

impl ExactOp {
    pub const ALL: [ExactOp; 10] = [
        ExactOp::Div,
        ExactOp::Sqrt,
        ExactOp::Exp,
        ExactOp::Ln,
        ExactOp::Tanh,
        ExactOp::Sigmoid,
        ExactOp::MulThenAdd,
        ExactOp::FusedMulAdd,
        ExactOp::SoftFma,
        ExactOp::KernelFma,
    ];

    fn code(self) -> u32 {
        self as u32
    }

    /// What the CPU executor computes for element `i` of the operands.
    pub fn cpu_at(self, a: &[f32], b: &[f32], i: usize) -> f32 {
        match self {
            ExactOp::SoftFma | ExactOp::KernelFma => {
                crate::detmath::fma(a[i], b[i], a[(i + 1) % a.len()])
            }
            _ => self.cpu(a[i], b[i]),
        }
    }

    /// What the CPU executor computes for the same operands (`SoftFma`: with `a` as addend).
    pub fn cpu(self, a: f32, b: f32) -> f32 {
        use crate::detmath;
        match self {
            ExactOp::Div => a / b,
            ExactOp::Sqrt => a.sqrt(),
            ExactOp::Exp => detmath::exp(a),
            ExactOp::Ln => detmath::ln(a),
            ExactOp::Tanh => detmath::tanh(a),
            ExactOp::Sigmoid => detmath::sigmoid(a),
            ExactOp::MulThenAdd => a * b + a,
            ExactOp::FusedMulAdd | ExactOp::SoftFma | ExactOp::KernelFma => detmath::fma(a, b, a),
        }
    }
}

/// An open device with the crate's kernels compiled.
#[derive(Debug)]
pub struct GpuDevice {
    pub adapter: AdapterReport,
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    matmul: wgpu::ComputePipeline,
    pub(crate) dense: wgpu::ComputePipeline,
    argmax: wgpu::ComputePipeline,
    distance: wgpu::ComputePipeline,
    /// The bit-exact kernels: training (`crate::gpu_train`) and the probe.
    pub(crate) exact: ExactPipelines,
    /// Whether the device's own `fma` computed a fused multiply-add with one rounding on every
    /// probe operand when it was opened; if not, exact kernels use `fma_f64` or `fma_soft`.
    pub hardware_fma: bool,
    /// The fused multiply-add the exact kernels run.
    pub fma_path: FmaPath,
    /// Whether the device was opened with SHADER_F64.
    has_f64: bool,
    /// The digest of the conformance suite, once the device reproduced it
    /// ([`crate::conformance::check`]); what a worker registers with.
    pub(crate) conformed: std::sync::OnceLock<String>,
}

/// Where work runs: a GPU device, or the CPU path when no adapter exists.
#[derive(Debug)]
pub enum Compute {
    Gpu(Box<GpuDevice>),
    Cpu { reason: String },
}

impl Compute {
    /// The best adapter, or the CPU path with a log line saying why.
    pub fn select() -> Compute {
        match GpuDevice::open_best() {
            Ok(d) => Compute::Gpu(Box::new(d)),
            Err(e) => {
                tracing::warn!("no usable GPU adapter ({e}); falling back to the CPU path");
                eprintln!(
                    "trainmesh-gpu: no usable GPU adapter ({e}); falling back to the CPU path"
                );
                Compute::Cpu {
                    reason: e.to_string(),
                }
            }
        }
    }
}

/// The kernels built on `kernels/exact.wgsl`, compiled with the device's fused multiply-add or
/// with `fma_soft`.
#[derive(Debug)]
pub(crate) struct ExactPipelines {
    probe: wgpu::ComputePipeline,
    pub(crate) dense: wgpu::ComputePipeline,
    pub(crate) xent: wgpu::ComputePipeline,
    pub(crate) dense_grad_w: wgpu::ComputePipeline,
    pub(crate) dense_grad_x: wgpu::ComputePipeline,
    pub(crate) update: wgpu::ComputePipeline,
    pub(crate) conv: wgpu::ComputePipeline,
    pub(crate) conv_grad_w: wgpu::ComputePipeline,
    pub(crate) conv_grad_x: wgpu::ComputePipeline,
}

fn exact_pipelines(
    device: &wgpu::Device,
    fma: FmaPath,
    unfused: bool,
    has_f64: bool,
) -> ExactPipelines {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let constants = [
        ("SOFT_FMA", flag(fma == FmaPath::Integer)),
        ("F64_FMA", flag(fma == FmaPath::F64)),
        ("UNFUSED_VARIANT", flag(unfused)),
    ];
    let f64_part = if has_f64 {
        EXACT_F64_WGSL
    } else {
        EXACT_F64_STUB_WGSL
    };
    let p = |label: &str, body: &str| {
        compute_pipeline(
            device,
            label,
            &format!("{EXACT_WGSL}\n{f64_part}\n{body}"),
            &constants,
        )
    };
    let gemm = |label: &str, body: &str| p(label, &format!("{GEMM_CORE_WGSL}\n{body}"));
    ExactPipelines {
        probe: p("exact_probe", EXACT_PROBE_WGSL),
        dense: gemm("dense_exact", DENSE_EXACT_WGSL),
        xent: p("xent", XENT_WGSL),
        dense_grad_w: gemm("dense_grad_w", DENSE_GRAD_W_WGSL),
        dense_grad_x: gemm("dense_grad_x", DENSE_GRAD_X_WGSL),
        update: p("update", UPDATE_WGSL),
        conv: p("conv_forward", CONV_FORWARD_WGSL),
        conv_grad_w: p("conv_grad_w", CONV_GRAD_W_WGSL),
        conv_grad_x: p("conv_grad_x", CONV_GRAD_X_WGSL),
    }
}

fn compute_pipeline(
    device: &wgpu::Device,
    label: &str,
    source: &str,
    constants: &[(&str, f64)],
) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants,
            ..Default::default()
        },
        cache: None,
    })
}

fn uniform4(device: &wgpu::Device, v: [u32; 4]) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("dims"),
        contents: bytemuck::cast_slice(&v),
        usage: wgpu::BufferUsages::UNIFORM,
    })
}

fn size_u32(what: &str, v: usize) -> Result<u32, GpuError> {
    u32::try_from(v).map_err(|_| GpuError::DeviceFailed {
        reason: format!("{what} = {v} does not fit a u32"),
    })
}

impl GpuDevice {
    /// Opens the best adapter and compiles the kernels.
    pub fn open_best() -> Result<Self, GpuError> {
        let mut adapters = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
        adapters.sort_by_key(|a| std::cmp::Reverse(rank(a.get_info().device_type)));
        let adapter = adapters
            .into_iter()
            .next()
            .ok_or_else(|| GpuError::NoAdapter {
                reason: "wgpu found no adapter (Vulkan, Metal, DX12 or GL)".into(),
            })?;
        let adapter_report = report(&adapter);
        tracing::info!(?adapter_report, "opening GPU adapter");
        let has_f64 = adapter.features().contains(wgpu::Features::SHADER_F64);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("trainmesh"),
            required_features: if has_f64 {
                wgpu::Features::SHADER_F64
            } else {
                wgpu::Features::empty()
            },
            required_limits: wgpu::Limits::downlevel_defaults().using_resolution(adapter.limits()),
            ..Default::default()
        }))
        .map_err(|e| GpuError::DeviceFailed {
            reason: format!("request_device on {}: {e}", adapter_report.name),
        })?;
        let pipeline = |label: &str, source: &str| compute_pipeline(&device, label, source, &[]);
        let mut dev = GpuDevice {
            adapter: adapter_report,
            matmul: pipeline("matmul", MATMUL_WGSL),
            dense: pipeline("dense", DENSE_WGSL),
            argmax: pipeline("argmax", ARGMAX_WGSL),
            distance: pipeline("distance", DISTANCE_WGSL),
            exact: exact_pipelines(&device, FmaPath::Hardware, false, has_f64),
            hardware_fma: true,
            fma_path: FmaPath::Hardware,
            has_f64,
            conformed: std::sync::OnceLock::new(),
            device,
            queue,
        };
        // Does the device's own fma round once? If not, every exact kernel uses fma_soft.
        let a = exact_operands(FMA_PROBE_OPERANDS, 0xf3a);
        let b = exact_operands(FMA_PROBE_OPERANDS, 0xb0b);
        dev.hardware_fma = dev.reproduces(ExactOp::FusedMulAdd, &a, &b)?;
        if !dev.hardware_fma {
            // The next path that reproduces detmath::fma on the probe: f64, else integers.
            dev.fma_path = FmaPath::Integer;
            if has_f64 {
                dev.exact = exact_pipelines(&dev.device, FmaPath::F64, false, true);
                if dev.reproduces(ExactOp::KernelFma, &a, &b)? {
                    dev.fma_path = FmaPath::F64;
                }
            }
            tracing::info!(adapter = %dev.adapter.name, fma = ?dev.fma_path, "the device's fma is not exact");
            if dev.fma_path == FmaPath::Integer {
                dev.exact = exact_pipelines(&dev.device, FmaPath::Integer, false, has_f64);
            }
        }
        Ok(dev)
    }

    fn storage(&self, data: &[u8], writable: bool) -> wgpu::Buffer {
        let mut usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        if writable {
            usage |= wgpu::BufferUsages::COPY_DST;
        }
        // wgpu refuses zero-sized bindings.
        let padded;
        let contents = if data.is_empty() {
            padded = [0u8; 4];
            &padded[..]
        } else {
            data
        };
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents,
                usage,
            })
    }

    fn output(&self, bytes: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes.max(4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    fn dispatch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&wgpu::Buffer],
        groups: (u32, u32),
    ) {
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, 1);
        }
        self.queue.submit([enc.finish()]);
    }

    pub(crate) fn read(&self, buffer: &wgpu::Buffer, bytes: usize) -> Result<Vec<u8>, GpuError> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size: bytes.max(4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes.max(4) as u64);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        let failed = |reason: String| GpuError::DeviceFailed { reason };
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| failed(format!("poll: {e}")))?;
        rx.recv()
            .map_err(|e| failed(format!("map callback: {e}")))?
            .map_err(|e| failed(format!("map: {e}")))?;
        let out = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| failed(format!("mapped range: {e}")))?;
            view[..bytes].to_vec()
        };
        staging.unmap();
        Ok(out)
    }

    /// Recompiles the exact kernels as a deliberately non-conforming variant (every multiply-add
    /// with two roundings), to show that conformance refuses such a device. Tests only.
    #[doc(hidden)]
    pub fn use_unfused_variant_for_tests(&mut self) {
        self.exact = exact_pipelines(&self.device, self.fma_path, true, self.has_f64);
        self.conformed = std::sync::OnceLock::new();
    }

    /// Compiles the exact kernels with another fused multiply-add (tests only: to hold every
    /// path to the suite on one device). Forgets the conformance digest.
    pub fn use_fma_path_for_tests(&mut self, path: FmaPath) {
        assert!(
            path != FmaPath::F64 || self.has_f64,
            "the device has no f64"
        );
        self.fma_path = path;
        self.exact = exact_pipelines(&self.device, path, false, self.has_f64);
        self.conformed = std::sync::OnceLock::new();
    }

    /// The conformance digest this device reproduced, once [`crate::conformance::check`] passed
    /// on it (with its kernels as they are now); `None` before, or when it failed.
    pub fn conformance_digest(&self) -> Option<&str> {
        self.conformed.get().map(String::as_str)
    }

    /// Whether the device computes `op` over the operands bit for bit as the CPU does (any NaN
    /// for a NaN: payloads are not part of the contract).
    fn reproduces(&self, op: ExactOp, a: &[f32], b: &[f32]) -> Result<bool, GpuError> {
        let got = self.exact_probe(op, a, b)?;
        Ok(got.iter().enumerate().all(|(i, g)| {
            let want = op.cpu_at(a, b, i);
            want.to_bits() == g.to_bits() || (want.is_nan() && g.is_nan())
        }))
    }

    /// `op` over `a` (and `b`, for two-operand functions; the same length) on the device, bit
    /// for bit what [`ExactOp::cpu`] computes on a conforming device.
    pub fn exact_probe(&self, op: ExactOp, a: &[f32], b: &[f32]) -> Result<Vec<f32>, GpuError> {
        assert_eq!(
            a.len(),
            b.len(),
            "exact_probe operands of different lengths"
        );
        let n = u32::try_from(a.len()).map_err(|_| GpuError::DeviceFailed {
            reason: format!("{} operands in one probe", a.len()),
        })?;
        let bits =
            |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect() };
        let ab = self.storage(&bits(a), false);
        let bb = self.storage(&bits(b), false);
        let out = self.output(a.len() * 4);
        // The zero the kernels XOR products with: a run-time value, so never folded away.
        let probe = uniform4(&self.device, [op.code(), 0, n, 0]);
        let groups = (a.len().div_ceil(64)).clamp(1, 4096) as u32;
        self.dispatch(&self.exact.probe, &[&ab, &bb, &out, &probe], (groups, 1));
        let raw = self.read(&out, a.len() * 4)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_bits(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect())
    }

    /// `a (m×k) · b (k×n)` on the device.
    pub fn matmul(
        &self,
        a: &[f32],
        b: &[f32],
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<Vec<f32>, GpuError> {
        assert_eq!(a.len(), m * k, "a is not m×k");
        assert_eq!(b.len(), k * n, "b is not k×n");
        let dims = uniform4(
            &self.device,
            [size_u32("m", m)?, size_u32("k", k)?, size_u32("n", n)?, 0],
        );
        let (ba, bb) = (
            self.storage(bytemuck::cast_slice(a), false),
            self.storage(bytemuck::cast_slice(b), false),
        );
        let bc = self.output(m * n * 4);
        self.dispatch(
            &self.matmul,
            &[&ba, &bb, &bc, &dims],
            (n.div_ceil(64) as u32, m.div_ceil(64) as u32),
        );
        Ok(bytemuck::cast_slice(&self.read(&bc, m * n * 4)?).to_vec())
    }

    /// Measured GFLOP/s of an `n×n×n` matmul, best of `reps` timed runs after one warm-up.
    pub fn matmul_gflops(&self, n: usize, reps: usize) -> Result<f64, GpuError> {
        let a: Vec<f32> = (0..n * n).map(|i| ((i * 7) % 13) as f32 / 13.0).collect();
        let dims = uniform4(&self.device, [n as u32, n as u32, n as u32, 0]);
        let (ba, bb) = (
            self.storage(bytemuck::cast_slice(&a), false),
            self.storage(bytemuck::cast_slice(&a), false),
        );
        let bc = self.output(n * n * 4);
        let groups = (n.div_ceil(64) as u32, n.div_ceil(64) as u32);
        self.dispatch(&self.matmul, &[&ba, &bb, &bc, &dims], groups);
        self.read(&bc, 4)?;
        let mut best = f64::INFINITY;
        for _ in 0..reps.max(1) {
            let t = Instant::now();
            self.dispatch(&self.matmul, &[&ba, &bb, &bc, &dims], groups);
            self.read(&bc, 4)?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(2.0 * (n as f64).powi(3) / best / 1e9)
    }

    /// `x · w + b` (x: m×k, w: k×n, b: n; row-major) through the exact tiled GEMM the training
    /// kernels use: each output one fused multiply-add per term, k ascending from the bias — bit
    /// for bit [`crate::gemm::gemm_acc`] on a conforming device.
    pub fn exact_gemm(
        &self,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<Vec<f32>, GpuError> {
        assert_eq!(x.len(), m * k, "x is not m×k");
        assert_eq!(w.len(), k * n, "w is not k×n");
        assert_eq!(b.len(), n, "b is not n long");
        let (bx, bw, bb) = (
            self.storage(bytemuck::cast_slice(x), false),
            self.storage(bytemuck::cast_slice(w), false),
            self.storage(bytemuck::cast_slice(b), false),
        );
        let out = self.output(m * n * 4);
        let (m32, k32, n32) = (size_u32("m", m)?, size_u32("k", k)?, size_u32("n", n)?);
        let dims = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("gemm dims"),
                contents: bytemuck::cast_slice(&[m32, n32, k32, k32, 1, n32, 1, 0, 0, 0, 0, 0]),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let groups = (n.div_ceil(64) as u32, m.div_ceil(64) as u32);
        self.dispatch(&self.exact.dense, &[&bx, &bw, &bb, &out, &dims], groups);
        let bytes = self.read(&out, m * n * 4)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    /// GFLOP/s of [`GpuDevice::exact_gemm`]'s kernel at n³ (best of `reps` timed runs after a
    /// warm-up; the operands stay on the device).
    pub fn exact_gemm_gflops(&self, n: usize, reps: usize) -> Result<f64, GpuError> {
        let a: Vec<f32> = (0..n * n).map(|i| ((i * 7) % 13) as f32 / 13.0).collect();
        let (ba, bb) = (
            self.storage(bytemuck::cast_slice(&a), false),
            self.storage(bytemuck::cast_slice(&a), false),
        );
        let bias = self.storage(bytemuck::cast_slice(&vec![0.0f32; n]), false);
        let out = self.output(n * n * 4);
        let n32 = size_u32("n", n)?;
        let dims = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("gemm dims"),
                contents: bytemuck::cast_slice(&[n32, n32, n32, n32, 1, n32, 1, 0, 0, 0, 0, 0]),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let groups = (n.div_ceil(64) as u32, n.div_ceil(64) as u32);
        let buffers = [&ba, &bb, &bias, &out, &dims];
        self.dispatch(&self.exact.dense, &buffers, groups);
        self.read(&out, 4)?;
        let mut best = f64::INFINITY;
        for _ in 0..reps.max(1) {
            let t = Instant::now();
            self.dispatch(&self.exact.dense, &buffers, groups);
            self.read(&out, 4)?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(2.0 * (n as f64).powi(3) / best / 1e9)
    }

    /// Batched evaluation of a dense model (logistic or MLP): predictions and correct count.
    pub fn evaluate_dense(
        &self,
        model: &Model,
        params: &[Tensor],
        x: &[f32],
        labels: &[u8],
    ) -> Result<(Vec<u32>, u64), GpuError> {
        let n = labels.len();
        assert_eq!(x.len(), n * model.input, "batch does not fit the model");
        let mut current = self.storage(bytemuck::cast_slice(x), false);
        for (i, layer) in model.layers.iter().enumerate() {
            let Layer::Dense {
                inputs,
                outputs,
                activation,
            } = *layer
            else {
                return Err(GpuError::ShapeMismatch {
                    reason: "the GPU evaluator runs dense models (logistic, MLP) only".into(),
                });
            };
            let act = match activation {
                None => 0,
                Some(Activation::Relu) => 1,
                Some(Activation::Tanh) => 2,
                Some(Activation::Sigmoid) => 3,
            };
            let dims = uniform4(
                &self.device,
                [size_u32("n", n)?, inputs as u32, outputs as u32, act],
            );
            let w = self.storage(bytemuck::cast_slice(&params[2 * i].data), false);
            let b = self.storage(bytemuck::cast_slice(&params[2 * i + 1].data), false);
            let y = self.output(n * outputs * 4);
            self.dispatch(
                &self.dense,
                &[&current, &w, &b, &y, &dims],
                (outputs.div_ceil(16) as u32, n.div_ceil(16) as u32),
            );
            current = y;
        }
        let labels32: Vec<u32> = labels.iter().map(|&l| u32::from(l)).collect();
        let bl = self.storage(bytemuck::cast_slice(&labels32), false);
        let preds = self.output(n * 4);
        let correct = self.storage(&[0u8; 4], true);
        let dims = uniform4(&self.device, [n as u32, model.classes as u32, 0, 0]);
        self.dispatch(
            &self.argmax,
            &[&current, &bl, &preds, &correct, &dims],
            (n.div_ceil(64) as u32, 1),
        );
        let p: Vec<u32> = bytemuck::cast_slice(&self.read(&preds, n * 4)?).to_vec();
        let c: Vec<u32> = bytemuck::cast_slice(&self.read(&correct, 4)?).to_vec();
        Ok((p, u64::from(c[0])))
    }

    /// ‖u − v‖₂ on the device (partial sums in f32 per workgroup, added in f64 on the host).
    pub fn distance(&self, u: &[f32], v: &[f32]) -> Result<f64, GpuError> {
        assert_eq!(u.len(), v.len(), "distance of vectors of different lengths");
        let groups = u.len().div_ceil(256).clamp(1, 256);
        let dims = uniform4(&self.device, [size_u32("len", u.len())?, 0, 0, 0]);
        let (bu, bv) = (
            self.storage(bytemuck::cast_slice(u), false),
            self.storage(bytemuck::cast_slice(v), false),
        );
        let partial = self.output(groups * 4);
        self.dispatch(
            &self.distance,
            &[&bu, &bv, &partial, &dims],
            (groups as u32, 1),
        );
        let p: Vec<f32> = bytemuck::cast_slice(&self.read(&partial, groups * 4)?).to_vec();
        Ok(p.iter().map(|&s| f64::from(s)).sum::<f64>().sqrt())
    }
}
