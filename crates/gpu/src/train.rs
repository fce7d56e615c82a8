//! Training on the deterministic CPU path, and work units: K steps from a given checkpoint on
//! given shards, committed as a checkpoint chain (a checkpoint hash every `segment_steps` steps)
//! with a Merkle root.

use crate::checkpoint::TrainState;
use crate::dataset::Samples;
use crate::error::GpuError;
use crate::executor;
use crate::hash::{merkle_root, Hash32};
use crate::optim::{apply_update_threads, init_params, init_state, DataOrder, HyperParams};
use crate::spec::Model;
use crate::tokens::Tokens;
use crate::transformer::{self, TokenBatch};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The most segments one work unit may be cut into (bounds the result message).
pub const SEGMENTS_MAX: u64 = 1 << 16;

/// What a trainer publishes for a work unit (DESIGN §3 step 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkResult {
    /// The checkpoint the unit started from, and its step.
    pub start: Hash32,
    pub start_step: u64,
    pub segment_steps: u64,
    /// The checkpoint hash at the end of each segment; the last is the unit's result.
    pub chain: Vec<Hash32>,
    /// Mean training loss of every step.
    pub losses: Vec<f32>,
}

impl WorkResult {
    /// The Merkle root over the chain, which the trainer commits to.
    pub fn chain_root(&self) -> Hash32 {
        merkle_root(&self.chain)
    }

    /// The checkpoint the unit ended with.
    pub fn final_checkpoint(&self) -> Hash32 {
        *self
            .chain
            .last()
            .expect("a result has at least one segment")
    }

    /// The checkpoint segment `i` starts from.
    pub fn segment_start(&self, i: usize) -> Hash32 {
        if i == 0 {
            self.start
        } else {
            self.chain[i - 1]
        }
    }

    /// Shape checks an evaluator runs before anything else.
    pub fn validate(&self) -> Result<(), GpuError> {
        let bad = |reason: String| Err(GpuError::ResultMalformed { reason });
        if self.chain.is_empty() || self.chain.len() as u64 > SEGMENTS_MAX {
            return bad(format!(
                "{} segments, must be in 1..={SEGMENTS_MAX}",
                self.chain.len()
            ));
        }
        if self.segment_steps == 0 {
            return bad("segment_steps is 0".into());
        }
        if self.losses.len() as u64 != self.chain.len() as u64 * self.segment_steps {
            return bad(format!(
                "{} losses for {} segments of {} steps",
                self.losses.len(),
                self.chain.len(),
                self.segment_steps
            ));
        }
        Ok(())
    }
}

/// Checkpoint blobs by hash: what a trainer keeps and serves to evaluators.
#[derive(Debug, Clone, Default)]
pub struct CheckpointStore {
    blobs: BTreeMap<Hash32, Vec<u8>>,
}

impl CheckpointStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, bytes: Vec<u8>) -> Hash32 {
        let h = Hash32::of(&bytes);
        self.blobs.insert(h, bytes);
        h
    }

    pub fn get(&self, h: &Hash32) -> Option<&[u8]> {
        self.blobs.get(h).map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
}

/// The state a job starts from: parameters initialized from the job seed, optimizer state zero.
pub fn initial_state(model: &Model, hyper: &HyperParams) -> TrainState {
    let params = init_params(model, hyper.seed);
    let opt_state = init_state(hyper, &params);
    TrainState {
        step: 0,
        params,
        opt_state,
        outer: Vec::new(),
    }
}

/// A training split: labelled samples, or a token stream cut into windows of the model's
/// context (a transformer's).
#[derive(Debug, Clone, Copy)]
pub enum TrainData<'a> {
    Samples(&'a Samples),
    Tokens(&'a Tokens),
}

impl<'a> From<&'a Samples> for TrainData<'a> {
    fn from(s: &'a Samples) -> Self {
        TrainData::Samples(s)
    }
}

impl<'a> From<&'a Tokens> for TrainData<'a> {
    fn from(t: &'a Tokens) -> Self {
        TrainData::Tokens(t)
    }
}

/// A split as a node holds it once fetched and verified: samples, or a text dataset's tokens.
#[derive(Debug, Clone, PartialEq)]
pub enum SplitData {
    Samples(Samples),
    Tokens(Tokens),
}

impl SplitData {
    /// Decodes one shard of either kind (told apart by its magic) after checking its hash.
    pub fn decode_shard(bytes: &[u8], expected: &Hash32) -> Result<SplitData, GpuError> {
        if crate::tokens::is_token_shard(bytes) {
            crate::tokens::decode_token_shard(bytes, expected).map(SplitData::Tokens)
        } else {
            crate::dataset::decode_shard(bytes, expected).map(SplitData::Samples)
        }
    }

    /// Concatenates the shards of one split, which must all be of one kind and shape.
    pub fn concat(parts: Vec<SplitData>) -> Result<SplitData, GpuError> {
        let mut samples = Vec::new();
        let mut tokens = Vec::new();
        for p in parts {
            match p {
                SplitData::Samples(s) => samples.push(s),
                SplitData::Tokens(t) => tokens.push(t),
            }
        }
        match (samples.is_empty(), tokens.is_empty()) {
            (false, true) => Samples::concat(&samples).map(SplitData::Samples),
            (true, false) => Tokens::concat(&tokens).map(SplitData::Tokens),
            (true, true) => Err(GpuError::ShapeMismatch {
                reason: "no shards to concatenate".into(),
            }),
            (false, false) => Err(GpuError::ShapeMismatch {
                reason: "a split mixes sample shards and token shards".into(),
            }),
        }
    }

    /// Samples, or tokens, held.
    pub fn len(&self) -> usize {
        match self {
            SplitData::Samples(s) => s.len(),
            SplitData::Tokens(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples, when this is a sample split.
    pub fn samples(&self) -> Option<&Samples> {
        match self {
            SplitData::Samples(s) => Some(s),
            SplitData::Tokens(_) => None,
        }
    }
}

impl<'a> From<&'a SplitData> for TrainData<'a> {
    fn from(d: &'a SplitData) -> Self {
        match d {
            SplitData::Samples(s) => TrainData::Samples(s),
            SplitData::Tokens(t) => TrainData::Tokens(t),
        }
    }
}

impl TrainData<'_> {
    /// Checks that the data fits `model`; returns how many training examples (samples, or
    /// windows of the context) it holds.
    pub fn examples_for(&self, model: &Model) -> Result<usize, GpuError> {
        let mismatch = |reason: String| Err(GpuError::ShapeMismatch { reason });
        match (self, &model.transformer) {
            (TrainData::Samples(data), None) => {
                if data.features != model.input || data.classes != model.classes {
                    return mismatch(format!(
                        "data of {} features × {} classes for a model of {} × {}",
                        data.features, data.classes, model.input, model.classes
                    ));
                }
                Ok(data.len())
            }
            (TrainData::Tokens(t), Some(dims)) => {
                if t.vocab != dims.vocab {
                    return mismatch(format!(
                        "tokens of vocabulary {} for a model of vocabulary {}",
                        t.vocab, dims.vocab
                    ));
                }
                Ok(t.windows(dims.context))
            }
            (TrainData::Samples(_), Some(_)) => {
                mismatch("a transformer trains on token shards, not samples".into())
            }
            (TrainData::Tokens(_), None) => {
                mismatch("token shards train a transformer, not this model".into())
            }
        }
    }
}

/// Trains one model on one training split with the deterministic executor.
#[derive(Debug)]
pub struct Trainer<'a> {
    model: &'a Model,
    hyper: HyperParams,
    data: TrainData<'a>,
    order: DataOrder,
    x: Vec<f32>,
    y: Vec<u8>,
    /// A transformer batch's inputs and targets, reused from step to step.
    tok_in: Vec<u32>,
    tok_out: Vec<u32>,
    /// The gradient buffers, reused from step to step.
    grads: Vec<executor::Tensor>,
    threads: usize,
}

impl<'a> Trainer<'a> {
    pub fn new(
        model: &'a Model,
        hyper: HyperParams,
        data: impl Into<TrainData<'a>>,
    ) -> Result<Self, GpuError> {
        hyper.validate()?;
        let data = data.into();
        let examples = data.examples_for(model)?;
        Ok(Trainer {
            model,
            hyper,
            data,
            order: DataOrder::new(hyper.seed, examples, hyper.batch)?,
            x: Vec::new(),
            y: Vec::new(),
            tok_in: Vec::new(),
            tok_out: Vec::new(),
            grads: Vec::new(),
            threads: 1,
        })
    }

    /// Trains on one slice of the examples only (a trainer's share of a round trained by
    /// several, [`crate::optim::DataSlice`]).
    pub fn with_slice(mut self, slice: &crate::optim::DataSlice) -> Result<Self, GpuError> {
        let total = self.data.examples_for(self.model)?;
        self.order = DataOrder::sliced(self.hyper.seed, total, self.hyper.batch, slice)?;
        Ok(self)
    }

    /// Runs each step on up to `threads` threads; the results are bit-identical for any count.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    pub fn model(&self) -> &Model {
        self.model
    }

    /// One optimizer step on the batch of `state.step`; returns the batch's mean loss.
    pub fn step(&mut self, state: &mut TrainState) -> f32 {
        let idx = self.order.batch(state.step);
        let loss = match self.data {
            TrainData::Samples(data) => {
                self.x.clear();
                self.y.clear();
                for &i in idx {
                    self.x.extend_from_slice(data.row(i));
                    self.y.push(data.y[i]);
                }
                executor::loss_and_grads_into(
                    self.model,
                    &state.params,
                    &self.x,
                    &self.y,
                    self.threads,
                    &mut self.grads,
                )
            }
            TrainData::Tokens(tokens) => {
                let dims = self.model.transformer.as_ref().expect("checked in new");
                let ctx = dims.context;
                self.tok_in.clear();
                self.tok_out.clear();
                for &i in idx {
                    let w = tokens.window(i, ctx);
                    self.tok_in.extend_from_slice(&w[..ctx]);
                    self.tok_out.extend_from_slice(&w[1..]);
                }
                let batch = TokenBatch {
                    inputs: &self.tok_in,
                    targets: &self.tok_out,
                    batch: idx.len(),
                    seq: ctx,
                };
                transformer::loss_and_grads_into(
                    dims,
                    &state.params,
                    &batch,
                    self.threads,
                    &mut self.grads,
                )
            }
        };
        apply_update_threads(
            &self.hyper,
            state.step,
            &mut state.params,
            &mut state.opt_state,
            &self.grads,
            self.threads,
        );
        state.step += 1;
        loss
    }

    /// `steps` steps; the loss of each.
    pub fn run(&mut self, state: &mut TrainState, steps: u64) -> Vec<f32> {
        (0..steps).map(|_| self.step(state)).collect()
    }

    /// A work unit: `segments × segment_steps` steps from `start`, with every segment's end
    /// checkpoint stored in `store` and committed in the result's chain.
    pub fn work_unit(
        &mut self,
        start: &TrainState,
        segments: u64,
        segment_steps: u64,
        store: &mut CheckpointStore,
    ) -> Result<(WorkResult, TrainState), GpuError> {
        self.work_unit_keeping(start, segments, segment_steps, 1, store)
    }

    /// [`Self::work_unit`] keeping only every `keep_every`-th segment's checkpoint (and the start
    /// and the final one) in `store`; every chain hash is still committed, and a [`ChainServer`]
    /// recomputes a dropped checkpoint on request from the nearest kept one.
    pub fn work_unit_keeping(
        &mut self,
        start: &TrainState,
        segments: u64,
        segment_steps: u64,
        keep_every: u64,
        store: &mut CheckpointStore,
    ) -> Result<(WorkResult, TrainState), GpuError> {
        if segments == 0 || segments > SEGMENTS_MAX || segment_steps == 0 || keep_every == 0 {
            return Err(GpuError::HyperParamsInvalid {
                reason: format!(
                    "{segments} segments of {segment_steps} steps, keeping every {keep_every}"
                ),
            });
        }
        let start_hash = store.put(start.encode(self.model));
        let mut state = start.clone();
        let mut chain = Vec::with_capacity(segments as usize);
        let mut losses = Vec::with_capacity((segments * segment_steps) as usize);
        for i in 0..segments {
            losses.extend(self.run(&mut state, segment_steps));
            let bytes = state.encode(self.model);
            if (i + 1) % keep_every == 0 || i + 1 == segments {
                chain.push(store.put(bytes));
            } else {
                chain.push(Hash32::of(&bytes));
            }
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

/// Held-out metrics of a parameter set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub accuracy: f64,
    pub loss: f64,
    pub samples: u64,
}

/// Accuracy and mean loss of `params` on `data`, on the deterministic executor.
pub fn evaluate(
    model: &Model,
    params: &[executor::Tensor],
    data: &Samples,
) -> Result<Metrics, GpuError> {
    if data.features != model.input || data.classes != model.classes || data.is_empty() {
        return Err(GpuError::ShapeMismatch {
            reason: format!(
                "{} samples of {} features × {} classes for a model of {} × {}",
                data.len(),
                data.features,
                data.classes,
                model.input,
                model.classes
            ),
        });
    }
    let (correct, loss) = executor::evaluate(model, params, &data.x, &data.y, 256);
    Ok(Metrics {
        accuracy: correct as f64 / data.len() as f64,
        loss: loss / data.len() as f64,
        samples: data.len() as u64,
    })
}

/// Held-out metrics of `params` on either kind of data: [`evaluate`] for samples,
/// [`evaluate_tokens`] for a transformer's tokens.
pub fn evaluate_data<'a>(
    model: &Model,
    params: &[executor::Tensor],
    data: impl Into<TrainData<'a>>,
    threads: usize,
) -> Result<Metrics, GpuError> {
    match data.into() {
        TrainData::Samples(s) => evaluate(model, params, s),
        TrainData::Tokens(t) => evaluate_tokens(model, params, t, threads),
    }
}

/// Next-token accuracy and mean loss per token of a transformer's `params` on `data` (every
/// window of the context, evaluated 8 windows at a time), on the deterministic executor. The
/// loss is in nats; bits per token are `loss / ln 2`.
pub fn evaluate_tokens(
    model: &Model,
    params: &[executor::Tensor],
    data: &Tokens,
    threads: usize,
) -> Result<Metrics, GpuError> {
    let windows = TrainData::Tokens(data).examples_for(model)?;
    let dims = model.transformer.as_ref().expect("checked by examples_for");
    if windows == 0 {
        return Err(GpuError::ShapeMismatch {
            reason: format!(
                "{} tokens hold no window of {} tokens",
                data.len(),
                dims.context
            ),
        });
    }
    let ctx = dims.context;
    let (mut loss, mut correct) = (0.0f64, 0usize);
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    for first in (0..windows).step_by(8) {
        let n = (windows - first).min(8);
        inputs.clear();
        targets.clear();
        for i in first..first + n {
            let w = data.window(i, ctx);
            inputs.extend_from_slice(&w[..ctx]);
            targets.extend_from_slice(&w[1..]);
        }
        let batch = TokenBatch {
            inputs: &inputs,
            targets: &targets,
            batch: n,
            seq: ctx,
        };
        let (l, c) = transformer::evaluate(dims, params, &batch, threads);
        loss += l;
        correct += c;
    }
    let tokens = (windows * ctx) as f64;
    Ok(Metrics {
        accuracy: correct as f64 / tokens,
        loss: loss / tokens,
        samples: (windows * ctx) as u64,
    })
}

/// Serves every checkpoint of a committed chain from a store that kept only some of them,
/// recomputing a dropped one forward from the nearest kept predecessor (and checking that the
/// recomputation hashes to the committed value). This is how a trainer commits to hundreds of
/// segments while holding a few full checkpoints.
#[derive(Debug)]
pub struct ChainServer<'a> {
    trainer: std::cell::RefCell<Trainer<'a>>,
    store: &'a CheckpointStore,
    result: &'a WorkResult,
}

impl<'a> ChainServer<'a> {
    pub fn new(trainer: Trainer<'a>, store: &'a CheckpointStore, result: &'a WorkResult) -> Self {
        ChainServer {
            trainer: std::cell::RefCell::new(trainer),
            store,
            result,
        }
    }

    /// The blob of checkpoint `h`, kept or recomputed; `None` if `h` is not in the chain or
    /// cannot be reproduced.
    pub fn serve(&self, h: &Hash32) -> Option<Vec<u8>> {
        if let Some(b) = self.store.get(h) {
            return Some(b.to_vec());
        }
        // Chain position p: 0 is the unit's start, p ≥ 1 the end of segment p − 1.
        let target = 1 + self.result.chain.iter().position(|c| c == h)?;
        let (base, bytes) = (0..target).rev().find_map(|p| {
            let hash = if p == 0 {
                self.result.start
            } else {
                self.result.chain[p - 1]
            };
            self.store.get(&hash).map(|b| (p, b))
        })?;
        let mut trainer = self.trainer.borrow_mut();
        let mut state = TrainState::decode(bytes, trainer.model()).ok()?;
        trainer.run(
            &mut state,
            (target - base) as u64 * self.result.segment_steps,
        );
        let out = state.encode(trainer.model());
        (Hash32::of(&out) == *h).then_some(out)
    }
}
