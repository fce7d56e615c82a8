//! The Trainer actor: registers the node as a trainer, picks up the units the ledger assigns to
//! it, runs them on the GPU engine (off the actor's thread) — on its device when it has one that
//! passed conformance and the model is dense, else on the CPU executor, with the same bits — keeps
//! and serves the checkpoint chain, and publishes the result.
//!
//! **Planted faults** ([`trainmesh_contracts::plants`]). For audited work (tier ≥ 1, while the
//! network plants) the trainer seals a secret per unit and attempt as soon as the unit is
//! assigned (derived from its account key, so a restart finds it again). Once the seal is
//! executed it knows whether the unit is a plant; if so it submits its chain with the last
//! segment's end replaced by the planted hash, opens its seal once every evaluator committed,
//! and afterwards submits the true result, which it kept. The final checkpoint of audited work
//! is served only once the unit is certified: a plant has none, and must look like any result.
//!
//! A trainer built with `cheat` fakes every segment of every unit (claims the steps without
//! running them): the devnet uses it to show that evaluators catch it and the ledger slashes it.
//! Faking every segment makes the catch certain: whichever segments the audit draws, each one
//! replays to another checkpoint than the claimed one. (A cheater that fakes only some segments
//! is caught with the audit's probability; `trainmesh_gpu::verify::miss_probability` gives it.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use trainmesh_contracts::jobs::{Job, Unit, UnitState, WorkResult};
use trainmesh_contracts::workers::{Capability, Role};
use trainmesh_contracts::{Amount, Call, Hash32, UnitId};
use trainmesh_gpu::device::GpuDevice;
use trainmesh_gpu::gpu_train::GpuTrainer;
use trainmesh_gpu::train::{evaluate, Trainer, WorkResult as Chain};

use crate::blobs::Audience;
use crate::ledger::LedgerAdvanced;
use crate::wire::BlobKind;
use crate::work::Outbox;
use crate::work::{
    current_units, model_and_hyper, ppm, segment_steps, start_state, worker, WorkContext,
    WorkError, RESUBMIT_AFTER,
};

/// How often a worker tells the ledger it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);

/// How a worker registers.
#[derive(Clone, Debug)]
pub struct Registration {
    pub bond: Amount,
    pub capability: Capability,
}

/// Sends (and re-sends until it shows on the ledger) the worker's registration.
pub(crate) fn ensure_registered(
    work: &WorkContext,
    role: Role,
    registration: &Registration,
    last_sent: &mut Option<Instant>,
) -> bool {
    if worker(&work.ledger, &work.wallet.address).is_some() {
        return true;
    }
    if last_sent.is_some_and(|t| t.elapsed() < RESUBMIT_AFTER) {
        return false;
    }
    let resync = last_sent.is_some();
    *last_sent = Some(Instant::now());
    let call = Call::RegisterWorker {
        role,
        bond: registration.bond,
        capability: registration.capability.clone(),
        peer_id: work.peer_id.to_string(),
        peer_signature: work.peer_signature.clone(),
    };
    work.send_call(call, resync);
    false
}

/// One work unit as this trainer ran it: on which device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitTrained {
    pub unit: UnitId,
    pub attempt: u32,
    /// The adapter's name, or `cpu` for the CPU executor.
    pub device: String,
}

/// The units a trainer ran and where, shared with whoever reports on it (the devnet summary).
#[derive(Clone, Debug, Default)]
pub struct TrainedOn(Arc<Mutex<Vec<UnitTrained>>>);

impl TrainedOn {
    pub fn list(&self) -> Vec<UnitTrained> {
        self.0.lock().expect("trained_on lock").clone()
    }

    fn push(&self, u: UnitTrained) {
        self.0.lock().expect("trained_on lock").push(u);
    }
}

pub struct TrainerActor {
    work: WorkContext,
    registration: Registration,
    cheat: bool,
    /// A device that passed conformance: units train on it, bit-identical to the CPU.
    device: Option<Arc<GpuDevice>>,
    trained_on: TrainedOn,
    busy: Option<(UnitId, u32)>,
    /// Units trained, by unit (its start, steps and data fix what it is): the true result,
    /// kept for a submission after a plant, and the final checkpoint until it may be served.
    trained: BTreeMap<UnitId, Trained>,
    /// Results sent, by (unit, attempt).
    sent: Outbox<WorkResult>,
    /// Units whose training ran out of its time budget: not started again.
    gave_up: std::collections::BTreeSet<(UnitId, u32)>,
    /// Plant seals and openings sent, by (unit, attempt).
    seals: Outbox<()>,
    openings: Outbox<()>,
    registration_sent: Option<Instant>,
}

/// A unit this trainer trained.
#[derive(Clone, Debug)]
struct Trained {
    result: WorkResult,
    chain: Chain,
    /// The final checkpoint, held back until the unit is certified (audited work).
    held: Option<(Hash32, Vec<u8>)>,
}

impl std::fmt::Debug for TrainerActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainerActor")
            .field("address", &self.work.wallet.address)
            .field("cheat", &self.cheat)
            .finish()
    }
}

impl TrainerActor {
    pub fn new(
        work: WorkContext,
        registration: Registration,
        cheat: bool,
        device: Option<Arc<GpuDevice>>,
        trained_on: TrainedOn,
    ) -> Self {
        TrainerActor {
            work,
            registration,
            cheat,
            device,
            trained_on,
            busy: None,
            trained: BTreeMap::new(),
            sent: Outbox::default(),
            seals: Outbox::default(),
            openings: Outbox::default(),
            gave_up: std::collections::BTreeSet::new(),
            registration_sent: None,
        }
    }

    /// The plant secret of a unit's attempt: derived from the account key, never stored.
    fn plant_secret(&self, unit: UnitId, attempt: u32) -> Hash32 {
        let mut domain = b"trainmesh/plant-secret/".to_vec();
        domain.extend_from_slice(&unit.job.0.to_le_bytes());
        domain.extend_from_slice(&unit.index.to_le_bytes());
        domain.extend_from_slice(&attempt.to_le_bytes());
        Hash32(self.work.wallet.derive(&domain))
    }

    /// Sends `call` once per (unit, attempt), and again while its effect does not show.
    fn send_once(outbox: &mut Outbox<()>, work: &WorkContext, key: (UnitId, u32), call: Call) {
        if !outbox.contains(&key) {
            outbox.insert(key, ());
            work.send_call(call, false);
        } else if outbox.due(&key).is_some() {
            work.send_call(call, true);
        }
    }

    /// The planted version of a trained unit: its chain with the last end replaced by the
    /// planted hash (served as the chain blob; the planted end itself has no checkpoint).
    fn planted_result(&self, t: &Trained, secret: &Hash32, unit: UnitId) -> WorkResult {
        let planted = trainmesh_contracts::plants::planted_checkpoint(secret, unit);
        let mut chain = t.chain.clone();
        if let Some(last) = chain.chain.last_mut() {
            *last = trainmesh_gpu::hash::Hash32(planted.0);
        }
        let root = chain.chain_root();
        let json = serde_json::to_vec(&chain).expect("chains serialize");
        self.work
            .blobs
            .put(BlobKind::Chain, root.0, json, Audience::Anyone);
        WorkResult {
            checkpoint: planted,
            chain_root: Hash32(root.0),
            ..t.result.clone()
        }
    }

    /// Serves the final checkpoints of units now certified; forgets units no longer its own.
    fn release_finals(&mut self) {
        let me = self.work.wallet.address;
        let ledger = self.work.ledger.read().expect("ledger lock");
        let mut done = Vec::new();
        for (id, t) in &mut self.trained {
            let unit: Option<Unit> = ledger
                .read(&trainmesh_contracts::keys::unit(*id))
                .ok()
                .flatten();
            let Some(unit) = unit else { continue };
            if unit.state == UnitState::Certified {
                if let Some((hash, bytes)) = t.held.take() {
                    self.work
                        .blobs
                        .put(BlobKind::Checkpoint, hash.0, bytes, Audience::Anyone);
                }
                done.push(*id);
            } else if unit.trainer != Some(me) || unit.state == UnitState::Cancelled {
                done.push(*id);
            }
        }
        drop(ledger);
        for id in done {
            self.trained.remove(&id);
        }
    }

    fn send_result(&self, unit: UnitId, result: WorkResult, resync: bool) {
        self.work
            .send_call(Call::SubmitWorkResult { unit, result }, resync);
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if !ensure_registered(
            &self.work,
            Role::Trainer,
            &self.registration,
            &mut self.registration_sent,
        ) {
            return;
        }
        self.release_finals();
        let Ok(units) = current_units(&self.work.ledger) else {
            return;
        };
        let params: trainmesh_contracts::Params = match self
            .work
            .ledger
            .read()
            .expect("ledger lock")
            .read(trainmesh_contracts::keys::PARAMS)
        {
            Ok(Some(p)) => p,
            _ => return,
        };
        let me = self.work.wallet.address;
        for (job, unit) in units {
            if unit.trainer != Some(me) {
                continue;
            }
            let key = (unit.id, unit.attempt);
            if unit.state == UnitState::Submitted {
                // Open the plant seal once every verdict is committed.
                if let Some(p) = &unit.plant {
                    if p.opened.is_none() && p.committed_at.is_some() {
                        let secret = self.plant_secret(unit.id, unit.attempt);
                        let call = Call::OpenPlant {
                            unit: unit.id,
                            secret,
                        };
                        Self::send_once(&mut self.openings, &self.work, key, call);
                    }
                }
                continue;
            }
            if unit.state != UnitState::Assigned {
                continue;
            }
            let plants = trainmesh_contracts::plants::required(&unit, job.spec.tier, &params);
            if plants && unit.plant.is_none() {
                let seal =
                    trainmesh_contracts::plants::seal_of(&self.plant_secret(unit.id, unit.attempt));
                let call = Call::SealPlant {
                    unit: unit.id,
                    seal,
                };
                Self::send_once(&mut self.seals, &self.work, key, call);
            }
            if self.sent.contains(&key) {
                if let Some(result) = self.sent.due(&key) {
                    self.send_result(unit.id, result, true);
                }
                continue;
            }
            if let Some(t) = self.trained.get(&unit.id) {
                let result = if plants {
                    // The seal must be executed first: it decides whether this is a plant.
                    let Some(p) = &unit.plant else { continue };
                    let secret = self.plant_secret(unit.id, unit.attempt);
                    if trainmesh_contracts::plants::is_plant(&secret, &p.seed, p.rate_ppm) {
                        tracing::info!(unit = ?unit.id, "submitting a planted fault");
                        self.planted_result(t, &secret, unit.id)
                    } else {
                        t.result.clone()
                    }
                } else {
                    t.result.clone()
                };
                self.sent.insert(key, result.clone());
                self.send_result(unit.id, result, false);
                continue;
            }
            if self.busy.is_some() || self.gave_up.contains(&key) {
                continue;
            }
            self.busy = Some(key);
            let work = self.work.clone();
            let cheat = self.cheat;
            let device = self.device.clone();
            let fut = async move { run_unit(work, job, unit, cheat, device).await };
            ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
                act.busy = None;
                match res {
                    Ok((trained, device)) => {
                        act.trained_on.push(UnitTrained {
                            unit: key.0,
                            attempt: key.1,
                            device,
                        });
                        act.trained.insert(key.0, trained);
                        act.poll(ctx);
                    }
                    Err(WorkError::Gpu(e @ trainmesh_gpu::GpuError::OutOfTime { .. })) => {
                        tracing::warn!(unit = ?key.0, error = %e, "work unit abandoned");
                        act.gave_up.insert(key);
                    }
                    Err(e) => tracing::warn!(unit = ?key.0, error = %e, "work unit failed"),
                }
            }));
        }
    }
}

/// Fetches what the unit needs, trains it off the actor thread (on `device` when it has one and
/// the model is dense, else on the CPU executor: the same bits), stores the chain for serving.
/// Returns the result and what it trained on.
async fn run_unit(
    work: WorkContext,
    job: Job,
    unit: Unit,
    cheat: bool,
    device: Option<Arc<GpuDevice>>,
) -> Result<(Trained, String), WorkError> {
    let (model, hyper) = model_and_hyper(&job)?;
    let train = work.datasets.load(&work, job.spec.dataset, false).await?;
    let start = start_state(&work, &job, &unit, &model, &hyper).await?;
    if start.step != unit.first_step {
        return Err(WorkError::Invalid(format!(
            "start checkpoint is at step {}, the unit starts at {}",
            start.step, unit.first_step
        )));
    }
    let steps = unit.steps;
    let metrics = work.metrics.clone();
    // The unit's timeout is the training's budget: past it the unit is abandoned between
    // segments and this trainer is free again (the ledger reassigns the unit).
    let budget_ms = crate::work::unit_timeout_ms(&work.ledger);
    let (chain, blobs, metric, trained_on) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut trainer = Trainer::new(&model, hyper, &*train)?;
        // The device trains every model kind; without one (or if it cannot take the model's
        // buffers) the unit trains on the CPU executor, with the same bits.
        let mut on_device = match device.as_deref() {
            Some(d) => match train
                .samples()
                .map(|s| GpuTrainer::new(d, &model, hyper, s))
            {
                Some(Ok(t)) => Some(t),
                Some(Err(e)) => {
                    tracing::info!(error = %e, "training this unit on the CPU executor");
                    None
                }
                None => None,
            },
            None => None,
        };
        let trained_on = match (&on_device, device.as_deref()) {
            (Some(_), Some(d)) => d.adapter.name.clone(),
            _ => "cpu".to_string(),
        };
        let seg = segment_steps(steps);
        let segments = steps / seg;
        let mut blobs = vec![start.encode(&model)];
        let start_hash = trainmesh_gpu::hash::Hash32::of(&blobs[0]);
        let mut state = start;
        let mut chain = Vec::with_capacity(segments as usize);
        let mut losses = Vec::with_capacity(steps as usize);
        let deadline = started + Duration::from_millis(budget_ms);
        for _ in 0..segments {
            if Instant::now() >= deadline {
                return Err(trainmesh_gpu::GpuError::OutOfTime {
                    what: "training",
                    budget_ms,
                });
            }
            if cheat {
                // Claims the segment's steps without doing them.
                state.step += seg;
                let last = losses.last().copied().unwrap_or(0.0);
                losses.extend(std::iter::repeat_n(last, seg as usize));
            } else if let Some(gpu) = on_device.as_mut() {
                losses.extend(gpu.run(&mut state, seg)?);
            } else {
                losses.extend(trainer.run(&mut state, seg));
            }
            let bytes = state.encode(&model);
            chain.push(trainmesh_gpu::hash::Hash32::of(&bytes));
            blobs.push(bytes);
        }
        // What the trainer reports beside its chain: training accuracy for samples; for a
        // language model (whose job targets a loss) the mean loss of the unit's last segment.
        let metric = match train.samples() {
            Some(s) => evaluate(&model, &state.params, s)?.accuracy,
            None => {
                let last = &losses[losses.len() - seg as usize..];
                last.iter().map(|&l| f64::from(l)).sum::<f64>() / last.len() as f64
            }
        };
        let elapsed = started.elapsed().as_secs_f64();
        metrics.training_steps.inc_by(steps);
        metrics.training_seconds.observe(elapsed);
        metrics
            .training_samples_per_second
            .set((steps as f64 * hyper.batch as f64) / elapsed.max(1e-9));
        let chain = Chain {
            start: start_hash,
            start_step: unit.first_step,
            segment_steps: seg,
            chain,
            losses,
        };
        Ok::<_, trainmesh_gpu::GpuError>((chain, blobs, metric, trained_on))
    })
    .await
    .map_err(|e| WorkError::Invalid(format!("training task: {e}")))??;
    let mut blobs = blobs;
    // Audited work keeps its final checkpoint until certified (see the module's notes).
    let held = if job.spec.tier >= 1 {
        blobs
            .pop()
            .map(|b| (Hash32(*blake3::hash(&b).as_bytes()), b))
    } else {
        None
    };
    for b in blobs {
        let h = *blake3::hash(&b).as_bytes();
        work.blobs.put(BlobKind::Checkpoint, h, b, Audience::Anyone);
    }
    let chain_root = chain.chain_root();
    let chain_json = serde_json::to_vec(&chain).expect("chains serialize");
    work.blobs
        .put(BlobKind::Chain, chain_root.0, chain_json, Audience::Anyone);
    // One loss per segment: its mean.
    let per_segment = chain.segment_steps as usize;
    let loss_trace_ppm = chain
        .losses
        .chunks(per_segment)
        .map(|c| ppm(c.iter().map(|&l| l as f64).sum::<f64>() / c.len() as f64))
        .take(trainmesh_contracts::jobs::LOSS_TRACE_MAX)
        .collect();
    let result = WorkResult {
        checkpoint: Hash32(chain.final_checkpoint().0),
        chain_root: Hash32(chain_root.0),
        segments: chain.chain.len() as u32,
        loss_trace_ppm,
        metric_ppm: ppm(metric),
    };
    Ok((
        Trained {
            result,
            chain,
            held,
        },
        trained_on,
    ))
}

impl Actor for TrainerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.poll(ctx));
        ctx.run_interval(HEARTBEAT_INTERVAL, |act, _| {
            act.work.send_call(Call::Heartbeat, false)
        });
    }
}

impl Handler<LedgerAdvanced> for TrainerActor {
    type Result = ();

    fn handle(&mut self, _: LedgerAdvanced, ctx: &mut Context<Self>) {
        self.poll(ctx);
    }
}
