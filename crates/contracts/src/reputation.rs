//! Reputation per worker: rises with certified work, falls with rejected or abandoned work, and
//! decays toward the baseline over time. It weights assignment together with stake.

use serde::{Deserialize, Serialize};

use crate::error::ContractResult;
use crate::keys;
use crate::state::{State, StateExt};
use crate::types::{Address, TimestampMs};

/// Scores are parts per million.
pub const SCORE_MAX: u32 = 1_000_000;
/// Where a new worker starts and where every score drifts back to.
pub const SCORE_BASELINE: u32 = 500_000;
/// A certified unit moves the score this share (bps) of the way to the maximum.
const CERTIFIED_GAIN_BPS: u64 = 500;
/// A rejected unit cuts the score by this share (bps).
const REJECTED_PENALTY_BPS: u64 = 5_000;
/// An abandoned unit (timed out) cuts the score by this share (bps).
const TIMEOUT_PENALTY_BPS: u64 = 1_000;
/// No score falls below this, so a worker can always earn its way back.
const SCORE_FLOOR: u32 = 1_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reputation {
    pub score_ppm: u32,
    pub certified: u64,
    pub rejected: u64,
    pub timed_out: u64,
    pub updated_at: TimestampMs,
}

impl Reputation {
    pub fn new(now: TimestampMs) -> Reputation {
        Reputation {
            score_ppm: SCORE_BASELINE,
            certified: 0,
            rejected: 0,
            timed_out: 0,
            updated_at: now,
        }
    }

    /// The score at `now`: every half-life halves the distance to the baseline.
    pub fn score_at(&self, now: TimestampMs, half_life_ms: u64) -> u32 {
        let elapsed = now.0.saturating_sub(self.updated_at.0);
        let halvings = elapsed / half_life_ms;
        let rest = elapsed % half_life_ms;
        let base = SCORE_BASELINE as i64;
        let mut distance = self.score_ppm as i64 - base;
        if halvings >= 63 {
            distance = 0;
        } else {
            distance /= 1i64 << halvings;
        }
        // Within a half-life, interpolate linearly between the distance and its half.
        distance -= distance * rest as i64 / (2 * half_life_ms as i64);
        (base + distance).clamp(SCORE_FLOOR as i64, SCORE_MAX as i64) as u32
    }
}

pub fn load(
    state: &(impl State + ?Sized),
    a: &Address,
    now: TimestampMs,
) -> ContractResult<Reputation> {
    Ok(state
        .read(&keys::reputation(a))?
        .unwrap_or_else(|| Reputation::new(now)))
}

pub fn score(
    state: &(impl State + ?Sized),
    a: &Address,
    now: TimestampMs,
    half_life_ms: u64,
) -> ContractResult<u32> {
    Ok(load(state, a, now)?.score_at(now, half_life_ms))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Certified,
    Rejected,
    TimedOut,
}

pub fn record(
    state: &mut (impl State + ?Sized),
    a: &Address,
    outcome: Outcome,
    now: TimestampMs,
    half_life_ms: u64,
) -> ContractResult<u32> {
    let mut r = load(state, a, now)?;
    let s = r.score_at(now, half_life_ms) as u64;
    let s = match outcome {
        Outcome::Certified => {
            r.certified += 1;
            s + (SCORE_MAX as u64 - s) * CERTIFIED_GAIN_BPS / 10_000
        }
        Outcome::Rejected => {
            r.rejected += 1;
            s - s * REJECTED_PENALTY_BPS / 10_000
        }
        Outcome::TimedOut => {
            r.timed_out += 1;
            s - s * TIMEOUT_PENALTY_BPS / 10_000
        }
    };
    r.score_ppm = (s as u32).clamp(SCORE_FLOOR, SCORE_MAX);
    r.updated_at = now;
    state.write(keys::reputation(a), &r);
    Ok(r.score_ppm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_decay_toward_the_baseline() {
        let mut r = Reputation::new(TimestampMs(0));
        r.score_ppm = 900_000;
        let day = 86_400_000;
        assert_eq!(r.score_at(TimestampMs(0), day), 900_000);
        assert_eq!(r.score_at(TimestampMs(day), day), 700_000);
        assert_eq!(r.score_at(TimestampMs(2 * day), day), 600_000);
        let half = r.score_at(TimestampMs(day / 2), day);
        assert!(half > 700_000 && half < 900_000);
        r.score_ppm = 100_000;
        assert_eq!(r.score_at(TimestampMs(day), day), 300_000);
        assert_eq!(r.score_at(TimestampMs(100 * day), day), SCORE_BASELINE);
    }
}
