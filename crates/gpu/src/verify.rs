//! Verification of useful work (DESIGN §3 step 5).
//!
//! - **Tier 0** recomputes the metric on the held-out split from the committed final checkpoint.
//! - **Tier 1** re-executes segments of the checkpoint chain and compares their end checkpoints'
//!   hashes exactly: every conforming device computes the CPU executor's bits, so there is no
//!   tolerance to exploit. Which segments is the ledger's draw (`trainmesh_contracts::sampling::
//!   audit_sample`: the first, the last, and others drawn from a seed fixed after the result was
//!   committed, different for each evaluator); this module replays whatever it is given.
//! - **Tier 2** bisects a disputed segment down to one step ([`Bisection`]), which **the referee**
//!   ([`referee_step`]) re-runs on the deterministic executor.
//!
//! Audit arithmetic: with m segments of which f are faked, re-executing k drawn uniformly without
//! replacement misses every fake with probability C(m−f, k) / C(m, k) ≤ (1 − f/m)^k. The default
//! k = 44 catches a trainer that fakes 10% of its segments with probability ≥ 0.99; the ledger's
//! draw always includes the last segment, so a replaced final checkpoint is always caught.

use crate::checkpoint::TrainState;
use crate::error::GpuError;
use crate::hash::Hash32;
use crate::spec::Model;
use crate::train::{CheckpointStore, Metrics, Trainer, WorkResult};
use serde::{Deserialize, Serialize};

/// Segments an evaluator re-executes per audited result by default: the least k with
/// (1 − 0.1)^k ≤ 0.01.
pub const DEFAULT_AUDIT_SEGMENTS: usize = 44;

/// The least k with (1 − cheat_fraction)^k ≤ 1 − detection.
pub fn audit_segments_for(cheat_fraction: f64, detection: f64) -> usize {
    assert!((0.0..1.0).contains(&cheat_fraction) && cheat_fraction > 0.0);
    assert!((0.0..1.0).contains(&detection));
    ((1.0 - detection).ln() / (1.0 - cheat_fraction).ln()).ceil() as usize
}

/// The exact probability that `k` segments drawn without replacement from `m` miss all `faked`.
pub fn miss_probability(m: usize, faked: usize, k: usize) -> f64 {
    let k = k.min(m);
    (0..k).fold(1.0, |p, i| {
        if i + faked >= m {
            0.0
        } else {
            p * (m - faked - i) as f64 / (m - i) as f64
        }
    })
}

/// Where an evaluator gets checkpoint blobs (the trainer serves them; in memory here).
pub trait CheckpointSource {
    fn fetch(&self, h: &Hash32) -> Option<Vec<u8>>;
}

impl CheckpointSource for crate::train::ChainServer<'_> {
    fn fetch(&self, h: &Hash32) -> Option<Vec<u8>> {
        self.serve(h)
    }
}

impl CheckpointSource for CheckpointStore {
    fn fetch(&self, h: &Hash32) -> Option<Vec<u8>> {
        self.get(h).map(<[u8]>::to_vec)
    }
}

/// Re-executes `steps` steps from a checkpoint blob, returning the end checkpoint blob.
pub trait SegmentReplayer {
    fn replay(&mut self, start: &[u8], steps: u64) -> Result<Vec<u8>, GpuError>;
}

/// A replayer with a time budget: once `deadline` has passed, the next replay is refused
/// ([`GpuError::OutOfTime`]) instead of started, so that a verification too large for its
/// deadline ends and frees its worker (a replay under way finishes its segment first).
pub struct Budgeted<R> {
    pub inner: R,
    pub deadline: std::time::Instant,
    pub budget_ms: u64,
}

impl<R> std::fmt::Debug for Budgeted<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgeted")
            .field("budget_ms", &self.budget_ms)
            .finish_non_exhaustive()
    }
}

impl<R: SegmentReplayer> SegmentReplayer for Budgeted<R> {
    fn replay(&mut self, start: &[u8], steps: u64) -> Result<Vec<u8>, GpuError> {
        if std::time::Instant::now() >= self.deadline {
            return Err(GpuError::OutOfTime {
                what: "the audit",
                budget_ms: self.budget_ms,
            });
        }
        self.inner.replay(start, steps)
    }
}

impl SegmentReplayer for Trainer<'_> {
    fn replay(&mut self, start: &[u8], steps: u64) -> Result<Vec<u8>, GpuError> {
        let model = self.model();
        let mut state = TrainState::decode(start, model)?;
        self.run(&mut state, steps);
        Ok(state.encode(self.model()))
    }
}

/// Why one audited segment failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SegmentFault {
    /// The trainer did not serve a checkpoint it committed to.
    Unavailable { checkpoint: Hash32 },
    /// A served blob is not the committed checkpoint or does not decode.
    Malformed { reason: String },
    /// The re-executed checkpoint differs from the committed one.
    HashMismatch { claimed: Hash32, replayed: Hash32 },
}

/// The outcome of a tier-1 audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub checked: Vec<usize>,
    pub faults: Vec<(usize, SegmentFault)>,
    /// Steps re-executed, for cost accounting.
    pub steps_replayed: u64,
    /// The end checkpoint the replay of the chain's last segment gave, when it was checked and
    /// its start was served: what the held-out metric is measured on, so that the final
    /// checkpoint itself need not travel before the verdict.
    pub last_end: Option<Vec<u8>>,
}

impl AuditReport {
    pub fn accepted(&self) -> bool {
        self.faults.is_empty()
    }
}

fn fetch_verified(source: &impl CheckpointSource, h: &Hash32) -> Result<Vec<u8>, SegmentFault> {
    let bytes = source
        .fetch(h)
        .ok_or(SegmentFault::Unavailable { checkpoint: *h })?;
    if Hash32::of(&bytes) != *h {
        return Err(SegmentFault::Malformed {
            reason: format!("blob served for {h} hashes to {}", Hash32::of(&bytes)),
        });
    }
    Ok(bytes)
}

fn audit_segment(
    result: &WorkResult,
    i: usize,
    source: &impl CheckpointSource,
    replayer: &mut impl SegmentReplayer,
    last_end: &mut Option<Vec<u8>>,
    out_of_time: &mut Option<GpuError>,
) -> Result<(), SegmentFault> {
    let start = fetch_verified(source, &result.segment_start(i))?;
    let replayed = match replayer.replay(&start, result.segment_steps) {
        Ok(r) => r,
        // The evaluator's own budget ran out: no verdict on this segment (the caller fails the
        // audit as a whole instead of calling the segment faked).
        Err(e @ GpuError::OutOfTime { .. }) => {
            *out_of_time = Some(e);
            return Ok(());
        }
        Err(e) => {
            return Err(SegmentFault::Malformed {
                reason: e.to_string(),
            })
        }
    };
    let claimed = result.chain[i];
    let hash = Hash32::of(&replayed);
    if i + 1 == result.chain.len() {
        *last_end = Some(replayed);
    }
    let replayed = hash;
    if replayed == claimed {
        Ok(())
    } else {
        Err(SegmentFault::HashMismatch { claimed, replayed })
    }
}

/// Tier 1: checks that `result` is the one committed under `committed_root` (and well formed),
/// then re-executes each segment of `checked` (the ledger's draw for this evaluator) with
/// `replayer` (which trains the unit's model) from the trainer's checkpoint, and compares the
/// end checkpoint's hash with the committed one.
pub fn audit(
    result: &WorkResult,
    committed_root: &Hash32,
    checked: &[usize],
    source: &impl CheckpointSource,
    replayer: &mut impl SegmentReplayer,
) -> Result<AuditReport, GpuError> {
    result.validate()?;
    if result.chain_root() != *committed_root {
        return Err(GpuError::ResultMalformed {
            reason: format!(
                "chain root {} is not the committed {committed_root}",
                result.chain_root()
            ),
        });
    }
    if let Some(&bad) = checked.iter().find(|&&i| i >= result.chain.len()) {
        return Err(GpuError::ResultMalformed {
            reason: format!("segment {bad} drawn from a chain of {}", result.chain.len()),
        });
    }
    let mut last_end = None;
    let mut out_of_time = None;
    let mut faults = Vec::new();
    for &i in checked {
        if let Err(f) = audit_segment(result, i, source, replayer, &mut last_end, &mut out_of_time)
        {
            faults.push((i, f));
        }
        if let Some(e) = out_of_time.take() {
            return Err(e);
        }
    }
    Ok(AuditReport {
        steps_replayed: checked.len() as u64 * result.segment_steps,
        checked: checked.to_vec(),
        faults,
        last_end,
    })
}

/// Tier 0: the held-out metrics of the committed final checkpoint.
pub fn tier0<'a>(
    model: &Model,
    checkpoint: &[u8],
    committed: &Hash32,
    heldout: impl Into<crate::train::TrainData<'a>>,
) -> Result<Metrics, GpuError> {
    let state = TrainState::decode_verified(checkpoint, committed, model)?;
    crate::train::evaluate_data(model, &state.params, heldout, 1)
}

/// The referee of a dispute narrowed to one step: re-runs it on the deterministic executor and
/// says whether `claimed_end` is its result.
pub fn referee_step(
    trainer: &mut Trainer<'_>,
    start: &[u8],
    start_hash: &Hash32,
    claimed_end: &Hash32,
) -> Result<bool, GpuError> {
    let state = TrainState::decode_verified(start, start_hash, trainer.model())?;
    let end = trainer.replay(&state.encode(trainer.model()), 1)?;
    Ok(Hash32::of(&end) == *claimed_end)
}

/// Tier 2: an interactive bisection over the steps of one disputed segment, between a step both
/// sides agree on (`agreed`) and one they do not (`disputed`). Each round the trainer reveals its
/// checkpoint hash at [`Bisection::midpoint`], the evaluator compares with its own recomputation,
/// and the interval halves; after ⌈log₂ steps⌉ rounds one step remains, which
/// [`referee_step`] settles on the deterministic executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bisection {
    /// The last step (relative to the segment start) at which both hashes agree.
    pub agreed: u64,
    /// The first step known to disagree.
    pub disputed: u64,
}

impl Bisection {
    /// A dispute over a segment of `steps` steps whose start both sides accept and whose end
    /// they do not.
    pub fn new(steps: u64) -> Self {
        assert!(steps > 0, "a segment has at least one step");
        Bisection {
            agreed: 0,
            disputed: steps,
        }
    }

    /// Whether the dispute is down to the single step `agreed → disputed`.
    pub fn is_settled(&self) -> bool {
        self.disputed == self.agreed + 1
    }

    /// The step whose hash the trainer reveals next.
    pub fn midpoint(&self) -> u64 {
        self.agreed + (self.disputed - self.agreed) / 2
    }

    /// Records whether the evaluator's hash at [`Self::midpoint`] matches the trainer's.
    pub fn record(&mut self, agrees: bool) {
        assert!(
            !self.is_settled(),
            "a settled bisection takes no more rounds"
        );
        let mid = self.midpoint();
        if agrees {
            self.agreed = mid;
        } else {
            self.disputed = mid;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_arithmetic() {
        assert_eq!(audit_segments_for(0.1, 0.99), DEFAULT_AUDIT_SEGMENTS);
        assert!(0.9f64.powi(44) <= 0.01 && 0.9f64.powi(43) > 0.01);
        assert!(miss_probability(440, 44, 44) <= 0.9f64.powi(44));
        assert_eq!(miss_probability(10, 1, 10), 0.0);
        assert_eq!(miss_probability(10, 0, 5), 1.0);
    }

    #[test]
    fn bisection_finds_any_first_disagreement_in_log_rounds() {
        assert!(Bisection::new(1).is_settled());
        for steps in 1..=40u64 {
            for bad in 1..=steps {
                let mut b = Bisection::new(steps);
                let mut rounds = 0;
                while !b.is_settled() {
                    b.record(b.midpoint() < bad);
                    rounds += 1;
                }
                assert_eq!((b.agreed, b.disputed), (bad - 1, bad), "steps {steps}");
                assert!(
                    rounds <= 64 - (steps - 1).leading_zeros(),
                    "steps {steps}: {rounds}"
                );
            }
        }
    }
}
