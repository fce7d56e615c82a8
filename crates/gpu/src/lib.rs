//! trainmesh's training engine and the verification of useful work.
//!
//! A trainer turns a work unit — K steps from a committed checkpoint on committed dataset shards —
//! into a new checkpoint and a *checkpoint chain* (a hash every few steps, under a Merkle root).
//! An evaluator checks the result at a fraction of the cost: tier 0 recomputes the held-out metric,
//! tier 1 re-executes segments of the chain drawn from randomness revealed after the commitment.
//! Training runs on the deterministic CPU executor or on a conforming wgpu device with the crate's
//! own WGSL kernels, with the same bits either way (exact hashes everywhere); the device module
//! discovers GPU adapters and runs the kernels.
//!
//! # Layout
//! - [`hash`] — BLAKE3 content hashes, Merkle roots and proofs.
//! - [`dataset`] — the shard format, content-addressed shard store, train/held-out split.
//! - [`import`] — importers for the UCI digits (CSV) and Fashion-MNIST (IDX).
//! - [`spec`] — the declarative model spec (logistic, MLP, CNN, transformer) and its bounds.
//! - [`tokens`] — text datasets: token-id shards, the byte tokenizer, training windows, the
//!   fortunes corpus.
//! - [`detmath`] — exp/ln/tanh/sigmoid as fixed sequences of f32 operations (bit-identical on
//!   every platform, and on devices through `kernels/exact.wgsl`).
//! - [`executor`] — the deterministic reference executor: forward, loss, gradients.
//! - [`transformer`] — the decoder-only transformer on the executor's rules: forward pass,
//!   next-token loss and gradients (`docs/design/training.md`).
//! - [`gemm`] — the executor's packed, cache- and register-blocked matmul with a fixed summation
//!   order of fused multiply-adds (AVX-512, AVX2 + FMA and portable kernels chosen at run time,
//!   exact software FMA where the CPU has none: the same bits on every machine).
//! - [`optim`] — hyper-parameters, seeded init and data order, SGD, Adam and AdamW (warm-up,
//!   cosine decay, global-norm clipping).
//! - [`outer`] — the outer step of a round trained by several trainers (DiLoCo: averaged
//!   pseudo-gradients, Nesterov momentum), recomputed exactly by evaluators.
//! - [`checkpoint`] — training state as canonical safetensors, hashed with BLAKE3.
//! - [`train`] — the trainer, work units and checkpoint chains (with sparse retention and a
//!   recomputing chain server), held-out evaluation.
//! - [`device`] — wgpu adapter discovery and choice, CPU fallback, the WGSL kernels in
//!   `src/kernels/` (tiled matmul benchmark, batched evaluation, checkpoint distance, training;
//!   `exact.wgsl`: the CPU's exact arithmetic on a device, with its probe).
//! - [`gpu_train`] — training every model kind on the device (forward, cross-entropy, gradients,
//!   SGD/Adam in WGSL), work units with the CPU path's chain format.
//! - [`conformance`] — the suite a device must reproduce byte for byte before it may train.
//! - [`verify`] — tier 0 (held-out metric), tier 1 (seeded segment audits), the one-step referee.
//! - [`error`] — [`GpuError`], the crate's one error type.

pub mod checkpoint;
pub mod conformance;
pub mod dataset;
pub mod detmath;
pub mod device;
pub mod error;
pub mod executor;
pub mod gemm;
pub mod gpu_train;
pub mod hash;
pub mod import;
pub mod optim;
pub mod outer;
pub mod spec;
pub mod tokens;
pub mod train;
pub mod transformer;
pub mod verify;

pub use error::GpuError;
pub use hash::Hash32;
