//! Sequence numbers for ids, and totals.

use serde::{Deserialize, Serialize};

use crate::error::ContractResult;
use crate::keys;
use crate::state::{State, StateExt};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub jobs: u64,
    pub datasets: u64,
    pub proposals: u64,
    /// Certificates of useful work formed so far.
    pub certificates: u64,
    /// Those of them that earned emission (tier ≥ 1): they drive the emission decay, so that
    /// unaudited work can neither mint nor spend the schedule.
    pub emitting_certificates: u64,
    /// Disputes opened (contested rejections and split panels).
    pub disputes: u64,
    /// Planted faults opened, and the verdicts that accepted one.
    pub plants: u64,
    pub plants_accepted: u64,
}

pub fn load(state: &(impl State + ?Sized)) -> ContractResult<Counters> {
    Ok(state.read(keys::COUNTERS)?.unwrap_or_default())
}

pub fn store(state: &mut (impl State + ?Sized), c: &Counters) {
    state.write(keys::COUNTERS.to_vec(), c);
}
