//! The Dispute actor: plays this node's part in every dispute on the ledger
//! ([`trainmesh_contracts::disputes`]).
//! - As an honest trainer: contests a rejection of its unit, opens its chain at the disputed
//!   segment (start and end with Merkle proofs), and answers each midpoint with the state hash it
//!   replays from the segment's start, serving that state for the referee.
//! - As the challenger (an evaluator): answers each midpoint by replaying from the same start; a
//!   colluding evaluator disagrees with everything. (Naming the segment is the
//!   [`EvaluatorActor`](crate::evaluator::EvaluatorActor)'s, which found it.)
//! - As a validator: referees the last step: fetches the agreed state from the trainer, replays
//!   one step on the deterministic executor, and votes the hash (or that it was not served).
//!   When a challenger says the trainer withholds the agreed state, votes whether the trainer
//!   serves it (and then serves it too, so the challenger can fetch it from the validators).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use trainmesh_contracts::disputes::{Dispute, Move, Stage};
use trainmesh_contracts::jobs::{Job, Unit, UnitState};
use trainmesh_contracts::workers::Role;
use trainmesh_contracts::{Call, Hash32};
use trainmesh_gpu::checkpoint::TrainState;
use trainmesh_gpu::device::GpuDevice;
use trainmesh_gpu::gpu_train::Replayer;
use trainmesh_gpu::hash::Hash32 as GpuHash;
use trainmesh_gpu::train::WorkResult as Chain;
use trainmesh_gpu::verify::SegmentReplayer;

use crate::blobs::Audience;
use crate::ledger::LedgerAdvanced;
use crate::wire::BlobKind;
use crate::work::{
    current_units, model_and_hyper, start_state, worker_peers, Outbox, WorkContext, WorkError,
    FETCH_TIMEOUT,
};

/// How an evaluator plays the challenger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvaluatorMode {
    /// Replays what it was drawn and answers from its replays.
    #[default]
    Honest,
    /// Replays nothing and accepts (a free rider; for demonstrations and tests).
    Lazy,
    /// Rejects everything and disagrees with every midpoint (colluding against trainers; for
    /// demonstrations and tests).
    Colluding,
}

/// This node's parts: whether it runs an honest trainer, how its evaluator plays.
#[derive(Clone, Copy, Debug)]
pub struct Parts {
    pub honest_trainer: bool,
    pub evaluator: Option<EvaluatorMode>,
}

pub struct DisputeActor {
    work: WorkContext,
    device: Option<Arc<GpuDevice>>,
    parts: Parts,
    /// The move last sent per (unit, attempt): the stage and the moves played before it.
    sent: Outbox<(Stage, u32)>,
    busy: bool,
}

impl std::fmt::Debug for DisputeActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DisputeActor")
            .field("address", &self.work.wallet.address)
            .field("parts", &self.parts)
            .finish()
    }
}

impl DisputeActor {
    pub fn new(work: WorkContext, device: Option<Arc<GpuDevice>>, parts: Parts) -> Self {
        DisputeActor {
            work,
            device,
            parts,
            sent: Outbox::default(),
            busy: false,
        }
    }

    /// What identifies a move already sent: its stage and the moves before it (a referee's vote
    /// is one per stage, whatever the other validators played meanwhile).
    fn played(d: &Dispute) -> (Stage, u32) {
        match d.stage {
            Stage::Referee => (Stage::Referee, 0),
            Stage::Available => (Stage::Available, 0),
            stage => (stage, d.moves),
        }
    }

    /// Whether `stage` of this dispute is still to be sent (or due again).
    fn fresh(&mut self, unit: &Unit, d: &Dispute) -> bool {
        let key = (unit.id, unit.attempt);
        let mv = Self::played(d);
        match self.sent.get(&key) {
            Some(sent) if *sent == mv => self.sent.due(&key).is_some(),
            _ => true,
        }
    }

    fn send(&mut self, unit: &Unit, d: &Dispute, mv: Move) {
        let key = (unit.id, unit.attempt);
        let resend = self.sent.get(&key) == Some(&Self::played(d));
        self.sent.insert(key, Self::played(d));
        tracing::info!(unit = ?unit.id, stage = d.stage.name(), "dispute move");
        self.work
            .send_call(Call::Dispute { unit: unit.id, mv }, resend);
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let Ok(units) = current_units(&self.work.ledger) else {
            return;
        };
        let me = self.work.wallet.address;
        let validator = {
            let l = self.work.ledger.read().expect("ledger lock");
            l.read::<Vec<trainmesh_contracts::staking::ValidatorInfo>>(
                trainmesh_contracts::keys::VALIDATORS,
            )
            .ok()
            .flatten()
            .is_some_and(|vs| vs.iter().any(|v| v.address == me))
        };
        for (job, unit) in units {
            if !matches!(unit.state, UnitState::Rejected | UnitState::Disputed) {
                continue;
            }
            let Some(d) = unit.dispute.clone() else {
                continue;
            };
            let mine = match d.stage {
                Stage::Contestable | Stage::Chain | Stage::Midpoint => {
                    d.trainer == me && self.parts.honest_trainer
                }
                Stage::Respond => d.challenger == me && self.parts.evaluator.is_some(),
                Stage::Referee | Stage::Available => {
                    validator && !d.votes.iter().any(|(v, _)| *v == me)
                }
                Stage::Segment => false,
            };
            if !mine || !self.fresh(&unit, &d) {
                continue;
            }
            match d.stage {
                Stage::Contestable => self.send(&unit, &d, Move::Contest),
                Stage::Chain => match self.open_chain(&unit, &d) {
                    Ok(mv) => self.send(&unit, &d, mv),
                    Err(e) => tracing::warn!(unit = ?unit.id, error = %e, "cannot open the chain"),
                },
                Stage::Respond if self.parts.evaluator == Some(EvaluatorMode::Colluding) => {
                    self.send(&unit, &d, Move::Respond { agrees: false })
                }
                Stage::Midpoint | Stage::Respond | Stage::Referee | Stage::Available => {
                    // A replay: off this thread, one at a time.
                    self.busy = true;
                    let (work, device) = (self.work.clone(), self.device.clone());
                    let (u, dd) = (unit.clone(), d.clone());
                    let fut = async move { replay_move(&work, device, &job, &u, &dd).await };
                    ctx.spawn(fut.into_actor(self).map(move |res, act, _| {
                        act.busy = false;
                        match res {
                            Ok(mv) => act.send(&unit, &d, mv),
                            Err(e) => {
                                tracing::warn!(unit = ?unit.id, error = %e, "dispute replay failed")
                            }
                        }
                    }));
                    return;
                }
                Stage::Segment => {}
            }
        }
    }

    /// The trainer's chain at the disputed segment, from its own blob store.
    fn open_chain(&self, unit: &Unit, d: &Dispute) -> Result<Move, WorkError> {
        let chain = own_chain(&self.work, unit)?;
        let leaves: Vec<Hash32> = chain.chain.iter().map(|h| Hash32(h.0)).collect();
        let s = d.segment as usize;
        if s >= leaves.len() {
            return Err(WorkError::Invalid("segment outside the chain".into()));
        }
        let (start, start_proof) = if s == 0 {
            (unit.start_checkpoint, None)
        } else {
            (
                leaves[s - 1],
                Some(trainmesh_contracts::merkle::merkle_proof(&leaves, s - 1)),
            )
        };
        Ok(Move::Chain {
            start,
            start_proof,
            end: leaves[s],
            end_proof: trainmesh_contracts::merkle::merkle_proof(&leaves, s),
        })
    }
}

/// The chain this node's trainer committed to for `unit`.
fn own_chain(work: &WorkContext, unit: &Unit) -> Result<Chain, WorkError> {
    let root = unit
        .result
        .as_ref()
        .ok_or_else(|| WorkError::Invalid("a disputed unit without a result".into()))?
        .chain_root;
    let (bytes, _) = work
        .blobs
        .get(BlobKind::Chain, &root.0)
        .ok_or_else(|| WorkError::Invalid("the chain is not in this node's store".into()))?;
    serde_json::from_slice(&bytes).map_err(|e| WorkError::Invalid(format!("chain: {e}")))
}

/// The moves that need a replay: the trainer's midpoint hash, the challenger's answer, the
/// referee's vote.
async fn replay_move(
    work: &WorkContext,
    device: Option<Arc<GpuDevice>>,
    job: &Job,
    unit: &Unit,
    d: &Dispute,
) -> Result<Move, WorkError> {
    let (model, hyper) = model_and_hyper(job)?;
    let mut peers = worker_peers(&work.ledger, Role::Trainer, Some(&d.trainer));
    if d.unserved {
        // The validators found the agreed state served, and serve it too.
        peers.extend(validator_peers(work));
    }
    let fetch = |hash: Hash32| {
        let peers = peers.clone();
        async move {
            work.fetcher
                .fetch(
                    BlobKind::Checkpoint,
                    hash.0,
                    &peers,
                    FETCH_TIMEOUT,
                    Audience::Anyone,
                )
                .await
        }
    };
    if d.stage == Stage::Available {
        return Ok(match fetch(d.agreed.1).await {
            Ok(b) if GpuHash::of(&b).0 == d.agreed.1 .0 => {
                work.blobs.put(
                    BlobKind::Checkpoint,
                    d.agreed.1 .0,
                    b.to_vec(),
                    Audience::Anyone,
                );
                Move::Referee {
                    end: Some(d.agreed.1),
                }
            }
            _ => Move::Referee { end: None },
        });
    }
    // Where the replay starts, and how many steps it runs.
    let (from_hash, steps) = match d.stage {
        Stage::Referee => (d.agreed.1, d.disputed.0 - d.agreed.0),
        _ => (d.agreed.1, d.midpoint() - d.agreed.0),
    };
    let unit_start = d.agreed.0 == 0 && d.segment == 0;
    let start: Vec<u8> = if unit_start {
        // The unit's start (a certified checkpoint, or the job's initial state), which the
        // contract pinned at the chain opening.
        let s = start_state(work, job, unit, &model, &hyper).await?;
        s.encode(&model)
    } else {
        match fetch(from_hash).await {
            Ok(b) => b.to_vec(),
            Err(e) if d.stage == Stage::Referee => {
                tracing::info!(error = %e, "the agreed state was not served");
                return Ok(Move::Referee { end: None });
            }
            Err(e) if d.stage == Stage::Respond && !d.unserved => {
                tracing::info!(error = %e, "the trainer withholds the agreed state");
                return Ok(Move::Unserved);
            }
            Err(e) => return Err(e.into()),
        }
    };
    if !unit_start && GpuHash::of(&start).0 != from_hash.0 {
        return match d.stage {
            Stage::Referee => Ok(Move::Referee { end: None }),
            _ => Err(WorkError::Invalid(
                "the agreed state is not the one agreed".into(),
            )),
        };
    }
    let train = work.datasets.load(work, job.spec.dataset, false).await?;
    let stage = d.stage;
    let pending = d.pending;
    let (end_bytes, end) = tokio::task::spawn_blocking(move || {
        TrainState::decode(&start, &model)?;
        let mut replayer = Replayer::new(device.as_deref(), &model, hyper, &*train)?;
        let end = replayer.replay(&start, steps)?;
        let hash = GpuHash::of(&end);
        Ok::<_, trainmesh_gpu::GpuError>((end, Hash32(hash.0)))
    })
    .await
    .map_err(|e| WorkError::Invalid(format!("replay task: {e}")))??;
    Ok(match stage {
        Stage::Midpoint => {
            // The referee may need this state if it ends up agreed: serve it.
            work.blobs
                .put(BlobKind::Checkpoint, end.0, end_bytes, Audience::Anyone);
            Move::Midpoint { hash: end }
        }
        Stage::Respond => Move::Respond {
            agrees: end == pending,
        },
        _ => Move::Referee { end: Some(end) },
    })
}

/// The validators' network peers (their consensus keys are their network keys).
fn validator_peers(work: &WorkContext) -> Vec<libp2p::PeerId> {
    let l = work.ledger.read().expect("ledger lock");
    l.read::<Vec<trainmesh_contracts::staking::ValidatorInfo>>(
        trainmesh_contracts::keys::VALIDATORS,
    )
    .ok()
    .flatten()
    .unwrap_or_default()
    .iter()
    .filter_map(|v| crate::network::peer_id(&v.consensus_key).ok())
    .collect()
}

impl Actor for DisputeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.poll(ctx));
    }
}

impl Handler<LedgerAdvanced> for DisputeActor {
    type Result = ();

    fn handle(&mut self, _: LedgerAdvanced, ctx: &mut Context<Self>) {
        self.poll(ctx);
    }
}
