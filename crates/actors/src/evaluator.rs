//! The Evaluator actor: registers the node as an evaluator and verifies every result it was
//! sampled for: the chain must be the committed one and start where the unit starts (tier 0
//! also recomputes the metric on the held-out split, which trainers never receive); tier 1
//! re-executes the ledger's draw of segments for this evaluator (the first, the last and its
//! share of the rest, from the audit seed fixed after the result was committed, its address and
//! the chain root). Then it commits to its attestation (which names exactly that draw), and
//! reveals it once every evaluator of the panel committed.
//!
//! When the panel splits, the first rejecting evaluator is the challenger of the dispute
//! ([`trainmesh_contracts::disputes`]): it names the first segment its replay found faked and the
//! end hash it computed (the answers that follow are the [`crate::dispute`] actor's). A *lazy*
//! evaluator (`--lazy-evaluators` in the devnet) runs nothing, accepts, and reports the metric the
//! trainer claimed: the disputes its accepts lose, and the planted faults it accepts, catch it. A *colluding* one
//! (`--colluding-evaluators`) rejects everything: the disputes its rejections lose catch it.
//!
//! At tier ≥ 1 the held-out metric is measured on this evaluator's own replay of the last
//! segment (trainers keep the final checkpoint of audited work until it is certified), and
//! reveals wait until the trainer opened its plant seal ([`trainmesh_contracts::plants`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use trainmesh_contracts::disputes::{Move, Stage};
use trainmesh_contracts::jobs::{Attestation, Job, Metric, Unit, UnitState};
use trainmesh_contracts::workers::Role;
use trainmesh_contracts::{Call, Hash32, UnitId};
use trainmesh_gpu::checkpoint::TrainState;
use trainmesh_gpu::device::GpuDevice;
use trainmesh_gpu::gpu_train::Replayer;
use trainmesh_gpu::hash::Hash32 as GpuHash;
use trainmesh_gpu::train::{CheckpointStore, WorkResult as Chain};
use trainmesh_gpu::verify;

use crate::blobs::Audience;
use crate::dispute::EvaluatorMode;
use crate::ledger::LedgerAdvanced;
use crate::trainer::{ensure_registered, Registration, HEARTBEAT_INTERVAL};
use crate::wire::BlobKind;
use crate::work::Outbox;
use crate::work::{
    audit_draw, current_units, model_and_hyper, ppm, start_state, worker_peers, WorkContext,
    WorkError, FETCH_TIMEOUT,
};

pub struct EvaluatorActor {
    work: WorkContext,
    registration: Registration,
    /// A device that passed conformance: segments replay on it (the same bits as the CPU).
    device: Option<Arc<GpuDevice>>,
    busy: Option<(UnitId, u32)>,
    /// The attestation (and its salt) of each (unit, attempt) this evaluator verified, and when
    /// its commitment was last sent.
    sent: Outbox<(Attestation, Hash32)>,
    /// When each reveal was last sent.
    revealed: Outbox<()>,
    /// The first fault each rejected (unit, attempt) showed: the segment and the end hash the
    /// replay computed, which a dispute names.
    faults: Outbox<(u32, Hash32)>,
    /// When each dispute move was last sent: (stage, moves played before it).
    moves: Outbox<(Stage, u32)>,
    /// How it plays: honest, lazy (replays nothing), colluding (rejects everything).
    mode: EvaluatorMode,
    /// Units whose verification ran out of its time budget: left to time out, not retried.
    gave_up: std::collections::BTreeSet<(UnitId, u32)>,
    registration_sent: Option<Instant>,
}

impl std::fmt::Debug for EvaluatorActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvaluatorActor")
            .field("address", &self.work.wallet.address)
            .finish()
    }
}

impl EvaluatorActor {
    pub fn new(
        work: WorkContext,
        registration: Registration,
        device: Option<Arc<GpuDevice>>,
        mode: EvaluatorMode,
    ) -> Self {
        EvaluatorActor {
            work,
            registration,
            device,
            busy: None,
            sent: Outbox::default(),
            revealed: Outbox::default(),
            faults: Outbox::default(),
            moves: Outbox::default(),
            mode,
            gave_up: std::collections::BTreeSet::new(),
            registration_sent: None,
        }
    }

    /// The challenger's moves in a dispute over a unit it rejected: the faked segment it found.
    /// (A trainer that opens its chain and answers midpoints is answered in turn by the next
    /// moves; here the challenger names the fault, and a trainer that does not answer loses.)
    fn challenge(&mut self, unit: &Unit) {
        let me = self.work.wallet.address;
        let Some(d) = &unit.dispute else {
            return;
        };
        if d.challenger != me || d.stage != Stage::Segment {
            return;
        }
        let key = (unit.id, unit.attempt);
        let Some(&(segment, end)) = self.faults.get(&key) else {
            return;
        };
        let mv = (d.stage, d.moves);
        let resend = match self.moves.get(&key) {
            Some(sent) if *sent == mv => {
                if self.moves.due(&key).is_none() {
                    return;
                }
                true
            }
            _ => false,
        };
        self.moves.insert(key, mv);
        tracing::info!(unit = ?unit.id, segment, "challenging the trainer's chain");
        self.work.send_call(
            Call::Dispute {
                unit: unit.id,
                mv: Move::Segment { segment, end },
            },
            resend,
        );
    }

    /// Commits to `attestation` (its verdict stays hidden until the whole panel committed).
    fn commit(&self, unit: UnitId, attempt: u32, sealed: &(Attestation, Hash32), resync: bool) {
        let commitment = trainmesh_contracts::jobs::attestation_commitment(
            unit,
            attempt,
            &self.work.wallet.address,
            &sealed.0,
            &sealed.1,
        );
        self.work
            .send_call(Call::CommitAttestation { unit, commitment }, resync);
    }

    /// Reveals the attestation committed to.
    fn reveal(&self, unit: UnitId, sealed: &(Attestation, Hash32), resync: bool) {
        self.work.send_call(
            Call::Attest {
                unit,
                attestation: sealed.0.clone(),
                salt: sealed.1,
            },
            resync,
        );
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if !ensure_registered(
            &self.work,
            Role::Evaluator,
            &self.registration,
            &mut self.registration_sent,
        ) {
            return;
        }
        let Ok(units) = current_units(&self.work.ledger) else {
            return;
        };
        let me = self.work.wallet.address;
        for (job, unit) in units {
            if unit.state == UnitState::Disputed {
                self.challenge(&unit);
                continue;
            }
            if unit.state != UnitState::Submitted
                || !unit.evaluators.contains(&me)
                || unit.attestations.iter().any(|(a, _)| *a == me)
            {
                continue;
            }
            let key = (unit.id, unit.attempt);
            if let Some(sealed) = self.sent.get(&key).cloned() {
                let committed = unit.commitments.iter().any(|(a, _)| *a == me);
                if !committed {
                    if self.sent.due(&key).is_some() {
                        self.commit(unit.id, unit.attempt, &sealed, true);
                    }
                } else if unit.commitments.len() >= unit.evaluators.len()
                    && !trainmesh_contracts::plants::reveals_wait(&unit)
                {
                    // The whole panel committed and the trainer opened its plant seal (if it
                    // sealed one): reveal (and again while it does not show).
                    if !self.revealed.contains(&key) {
                        self.revealed.insert(key, ());
                        self.reveal(unit.id, &sealed, false);
                    } else if self.revealed.due(&key).is_some() {
                        self.reveal(unit.id, &sealed, true);
                    }
                }
                continue;
            }
            if self.busy.is_some() || self.gave_up.contains(&key) {
                continue;
            }
            // The segments this evaluator must check are the ledger's draw for it; a refusal lists
            // them too (the contract holds every attestation to the draw).
            let tier = job.spec.tier;
            let drawn = audit_draw(&unit, &me, tier);
            self.busy = Some(key);
            let work = self.work.clone();
            let device = self.device.clone();
            let refused_draw = drawn.clone();
            let mode = self.mode;
            let last_segment = unit
                .result
                .as_ref()
                .map_or(0, |r| r.segments.saturating_sub(1));
            let fut = async move {
                if mode == EvaluatorMode::Colluding {
                    // Rejects without looking, claiming the last segment ends elsewhere.
                    let attestation = Attestation {
                        accept: false,
                        metric_ppm: 0,
                        tier,
                        segments_checked: drawn,
                    };
                    return Ok((attestation, Some((last_segment, Hash32([0xc0; 32])))));
                }
                verify_unit(
                    &work,
                    &job,
                    &unit,
                    device,
                    drawn,
                    mode == EvaluatorMode::Lazy,
                )
                .await
            };
            ctx.spawn(fut.into_actor(self).map(move |res, act, _| {
                act.busy = None;
                let attestation = match res {
                    Ok((a, fault)) => {
                        if let Some(f) = fault {
                            act.faults.insert(key, f);
                        }
                        a
                    }
                    Err(WorkError::Gpu(e @ trainmesh_gpu::GpuError::OutOfTime { .. })) => {
                        // Too large for the time it has: free again, and no verdict.
                        tracing::warn!(unit = ?key.0, error = %e, "verification abandoned");
                        act.gave_up.insert(key);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(unit = ?key.0, error = %e, "result refused");
                        // What was refused cannot be replayed: a dispute names the first
                        // segment, and asks the validators whether the trainer serves it.
                        act.faults.insert(key, (0, Hash32::default()));
                        Attestation {
                            accept: false,
                            metric_ppm: 0,
                            tier,
                            segments_checked: refused_draw,
                        }
                    }
                };
                let verdict = if attestation.accept { "accept" } else { "reject" };
                act.work
                    .metrics
                    .verification_outcomes
                    .with_label_values(&[verdict])
                    .inc();
                tracing::info!(unit = ?key.0, verdict, metric_ppm = attestation.metric_ppm, "committing to the verdict");
                let mut domain = b"trainmesh/attestation-salt/".to_vec();
                domain.extend_from_slice(&key.0.job.0.to_le_bytes());
                domain.extend_from_slice(&key.0.index.to_le_bytes());
                domain.extend_from_slice(&key.1.to_le_bytes());
                let sealed = (attestation, Hash32(act.work.wallet.derive(&domain)));
                act.commit(key.0, key.1, &sealed, false);
                act.sent.insert(key, sealed);
            }));
        }
    }
}

/// Checks one result: the attestation, and the first segment found faked with the end hash its
/// replay gave. `Err` means the result is refused (the reason is logged); a fetch that times out
/// counts as withheld data, which is refused too. A `lazy` evaluator skips the replays.
async fn verify_unit(
    work: &WorkContext,
    job: &Job,
    unit: &Unit,
    device: Option<Arc<GpuDevice>>,
    drawn: Vec<u32>,
    lazy: bool,
) -> Result<(Attestation, Option<(u32, Hash32)>), WorkError> {
    let result = unit
        .result
        .clone()
        .ok_or_else(|| WorkError::Invalid("submitted unit without result".into()))?;
    if lazy {
        // Runs nothing and says it did, guessing the metric from the trainer's report.
        let attestation = Attestation {
            accept: true,
            metric_ppm: result.metric_ppm,
            tier: job.spec.tier,
            segments_checked: drawn,
        };
        return Ok((attestation, None));
    }
    let (model, hyper) = model_and_hyper(job)?;
    let trainer_peers = worker_peers(&work.ledger, Role::Trainer, unit.trainer.as_ref());
    let chain_bytes = work
        .fetcher
        .fetch(
            BlobKind::Chain,
            result.chain_root.0,
            &trainer_peers,
            FETCH_TIMEOUT,
            Audience::Anyone,
        )
        .await?;
    let chain: Chain = serde_json::from_slice(&chain_bytes)
        .map_err(|e| WorkError::Invalid(format!("chain: {e}")))?;
    if chain.final_checkpoint().0 != result.checkpoint.0
        || chain.chain.len() as u32 != result.segments
        || chain.start_step != unit.first_step
        || chain.chain.len() as u64 * chain.segment_steps != unit.steps
    {
        return Err(WorkError::Invalid(
            "the chain does not match the committed result and unit".into(),
        ));
    }
    // The chain must start where the unit starts.
    let start = start_state(work, job, unit, &model, &hyper).await?;
    let start_bytes = start.encode(&model);
    if GpuHash::of(&start_bytes) != chain.start {
        return Err(WorkError::Invalid(
            "the chain starts from another checkpoint".into(),
        ));
    }
    let train = work.datasets.load(work, job.spec.dataset, false).await?;
    let heldout = work.datasets.load(work, job.spec.dataset, true).await?;
    let audited: Vec<usize> = drawn.iter().map(|&i| i as usize).collect();
    if audited.iter().any(|&i| i >= chain.chain.len()) {
        return Err(WorkError::Invalid(
            "the drawn segments do not fit the chain".into(),
        ));
    }
    // Fetch every checkpoint the audit and tier 0 need.
    let mut store = CheckpointStore::new();
    store.put(start_bytes);
    // The start of every drawn segment: a replay is compared with the committed end by its hash,
    // so the end checkpoints need not travel. Tier 0 measures the final checkpoint; tier ≥ 1
    // measures its own replay of the last segment (always drawn), since trainers keep the final
    // checkpoint of audited work until it is certified (a planted fault has none to serve, and a
    // plant must look like any result).
    let tier = job.spec.tier;
    let mut wanted: Vec<GpuHash> = if tier == 0 {
        vec![chain.final_checkpoint()]
    } else {
        Vec::new()
    };
    for &i in &audited {
        wanted.push(chain.segment_start(i));
    }
    wanted.sort();
    wanted.dedup();
    for h in wanted {
        if store.get(&h).is_some() {
            continue;
        }
        let b = work
            .fetcher
            .fetch(
                BlobKind::Checkpoint,
                h.0,
                &trainer_peers,
                FETCH_TIMEOUT,
                Audience::Anyone,
            )
            .await?;
        store.put(b.to_vec());
    }
    let metrics = work.metrics.clone();
    let metric_kind = job.spec.target.metric;
    let budget_ms = crate::work::unit_timeout_ms(&work.ledger);
    let committed_root = GpuHash(result.chain_root.0);
    let end_step = unit.first_step + unit.steps;
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut fault = None;
        let (measured, accept) = if tier == 0 {
            let final_bytes = store
                .get(&chain.final_checkpoint())
                .expect("fetched above")
                .to_vec();
            let measured =
                verify::tier0(&model, &final_bytes, &chain.final_checkpoint(), &*heldout)?;
            let final_state = TrainState::decode(&final_bytes, &model)?;
            (measured, final_state.step == end_step)
        } else {
            // On the device when there is one: the same bits, so still exact. Within the unit's
            // timeout: past it, no verdict at all (the ledger times this evaluator out) rather
            // than a false one.
            let mut replayer = verify::Budgeted {
                inner: Replayer::new(device.as_deref(), &model, hyper, &*train)?,
                deadline: started + Duration::from_millis(budget_ms),
                budget_ms,
            };
            let report = verify::audit(&chain, &committed_root, &audited, &store, &mut replayer)?;
            if !report.accepted() {
                tracing::info!(
                    faults = report.faults.len(),
                    checked = report.checked.len(),
                    "audit found faked segments"
                );
            }
            // The segment a dispute names: the first faked one, with the end the replay gave;
            // else the first whose start was not served (its end unknown).
            fault = report
                .faults
                .iter()
                .find_map(|(i, f)| match f {
                    verify::SegmentFault::HashMismatch { replayed, .. } => {
                        Some((*i as u32, Hash32(replayed.0)))
                    }
                    _ => None,
                })
                .or_else(|| {
                    report
                        .faults
                        .first()
                        .map(|(i, _)| (*i as u32, Hash32::default()))
                });
            // The held-out metric of this evaluator's own replay of the last segment.
            let last = report.last_end.as_deref().ok_or_else(|| {
                trainmesh_gpu::GpuError::ResultMalformed {
                    reason: "the last segment could not be replayed".into(),
                }
            })?;
            let last_state = TrainState::decode(last, &model)?;
            let measured =
                trainmesh_gpu::train::evaluate_data(&model, &last_state.params, &*heldout, 1)?;
            (measured, report.accepted() && last_state.step == end_step)
        };
        metrics
            .verification_seconds
            .observe(started.elapsed().as_secs_f64());
        let attestation = Attestation {
            accept,
            metric_ppm: match metric_kind {
                Metric::Accuracy => ppm(measured.accuracy),
                Metric::Loss => ppm(measured.loss),
            },
            tier,
            segments_checked: drawn,
        };
        Ok::<_, trainmesh_gpu::GpuError>((attestation, fault))
    })
    .await
    .map_err(|e| WorkError::Invalid(format!("verification task: {e}")))?
    .map_err(WorkError::from)
}

impl Actor for EvaluatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.poll(ctx));
        ctx.run_interval(HEARTBEAT_INTERVAL, |act, _| {
            act.work.send_call(Call::Heartbeat, false)
        });
    }
}

impl Handler<LedgerAdvanced> for EvaluatorActor {
    type Result = ();

    fn handle(&mut self, _: LedgerAdvanced, ctx: &mut Context<Self>) {
        self.poll(ctx);
    }
}
