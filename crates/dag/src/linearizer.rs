//! Bullshark's commit rule and the linearizer: which leaders commit, and each one's causal history
//! as one ordered sub-DAG.
//!
//! The rule reads a [`DagState`] and nothing else, so every honest node that holds the same
//! vertices commits the same sequence, whatever order they arrived in and however commits are
//! batched:
//! - a leader of an even round r commits directly once certificates of round r + 1 holding f+1
//!   stake reference it; then every earlier uncommitted leader it links to commits first,
//!   earliest first;
//! - a leader's history excludes what was committed before and what lies below the *collection
//!   floor of that leader*: `(previous committed leader's round) − gc depth`. The floor advances
//!   after every committed leader, not once per batch, so committing L4 then L6 in two calls and
//!   both in one call give the same certificates;
//! - the commit timestamp is the stake-weighted median of the leader's parents' `created_at`,
//!   never below the previous commit's: with at most f faulty stake among parents of ≥ 2f+1
//!   stake, the median lies between two honest stamps, so one faulty leader cannot move the
//!   ledger's clock.

use std::collections::BTreeSet;

use crate::committee::Committee;
use crate::dag_state::DagState;
use crate::leader_schedule::LeaderSchedule;
use crate::messages::{Certificate, CommittedSubDag};
use crate::store::CommitRecord;
use crate::types::{AuthorityIndex, Round, TimestampMs};

pub(crate) struct Linearizer {
    committee: Committee,
    schedule: LeaderSchedule,
    gc_depth_rounds: u64,
    last_committed_round: Round,
    next_commit_index: u64,
    last_commit_timestamp: TimestampMs,
}

impl Linearizer {
    pub(crate) fn new(committee: &Committee, gc_depth_rounds: u64) -> Linearizer {
        Linearizer {
            committee: committee.clone(),
            schedule: LeaderSchedule::new(committee),
            gc_depth_rounds,
            last_committed_round: Round::GENESIS,
            next_commit_index: 0,
            last_commit_timestamp: TimestampMs(0),
        }
    }

    /// Continues after the last commit record of a store.
    pub(crate) fn restore(&mut self, last: &CommitRecord) {
        self.last_committed_round = last.leader.round;
        self.next_commit_index = last.index + 1;
        self.last_commit_timestamp = last.timestamp;
    }

    pub(crate) fn last_committed_round(&self) -> Round {
        self.last_committed_round
    }
    pub(crate) fn next_commit_index(&self) -> u64 {
        self.next_commit_index
    }

    /// The collection round after the commits so far: nothing below it is ever committed again.
    pub(crate) fn gc_round(&self) -> Round {
        self.last_committed_round
            .saturating_sub(self.gc_depth_rounds)
    }

    pub(crate) fn leader(&self, round: Round) -> AuthorityIndex {
        self.schedule.leader(round)
    }

    /// A certificate of `round` arrived: commits the leader of `round − 1` if it now has f+1
    /// support, after the earlier leaders it links to.
    pub(crate) fn try_commit(&mut self, dag: &mut DagState, round: Round) -> Vec<CommittedSubDag> {
        let leader_round = round.prev();
        if round == Round::GENESIS
            || !leader_round.is_even()
            || leader_round == Round::GENESIS
            || leader_round <= self.last_committed_round
        {
            return Vec::new();
        }
        let Some(leader) = self.leader_certificate(dag, leader_round) else {
            return Vec::new();
        };
        if dag.support(round, &leader.digest()) < self.committee.validity_threshold() {
            return Vec::new();
        }
        let leaders = self.linked_leaders(dag, leader);
        leaders
            .into_iter()
            .rev()
            .map(|leader| self.commit_leader(dag, leader))
            .collect()
    }

    fn leader_certificate(&self, dag: &DagState, round: Round) -> Option<Certificate> {
        dag.vertex(round, self.schedule.leader(round))
            .map(|v| v.certificate.clone())
    }

    /// The leader and every earlier uncommitted leader in its history, latest first.
    fn linked_leaders(&self, dag: &DagState, leader: Certificate) -> Vec<Certificate> {
        let mut leaders = vec![leader.clone()];
        let mut current = leader;
        let mut r = current.round();
        let floor = self.gc_round();
        while r.0 >= self.last_committed_round.0 + 4 {
            r = Round(r.0 - 2);
            if r < floor {
                break;
            }
            if let Some(prev) = self.leader_certificate(dag, r) {
                if dag.linked(&current, &prev) {
                    leaders.push(prev.clone());
                    current = prev;
                }
            }
        }
        leaders
    }

    /// Orders the leader's uncommitted history above its floor by (round, author), marks it
    /// committed and advances the floor.
    fn commit_leader(&mut self, dag: &mut DagState, leader: Certificate) -> CommittedSubDag {
        let floor = self.gc_round();
        let mut seen = BTreeSet::new();
        let mut stack = vec![leader.reference()];
        let mut chosen: Vec<(Round, AuthorityIndex)> = Vec::new();
        while let Some(r) = stack.pop() {
            if r.round < floor || !seen.insert(r.digest) {
                continue;
            }
            let Some(v) = dag.vertex(r.round, r.author) else {
                continue;
            };
            if v.committed || v.certificate.digest() != r.digest {
                continue;
            }
            chosen.push((r.round, r.author));
            stack.extend(v.certificate.parents().iter().copied());
        }
        chosen.sort();
        let certificates = chosen
            .into_iter()
            .map(|(round, author)| {
                let v = dag.vertex_mut(round, author).expect("chosen from the DAG");
                v.committed = true;
                v.certificate.clone()
            })
            .collect();
        let timestamp = self
            .median_parent_time(dag, &leader)
            .max(self.last_commit_timestamp);
        let sub_dag = CommittedSubDag {
            index: self.next_commit_index,
            leader: leader.reference(),
            timestamp,
            certificates,
        };
        self.next_commit_index += 1;
        self.last_commit_timestamp = timestamp;
        self.last_committed_round = leader.round();
        sub_dag
    }

    /// The stake-weighted median of the leader's parents' proposal times: the earliest time by
    /// which parents holding more than half of the parents' stake had proposed.
    fn median_parent_time(&self, dag: &DagState, leader: &Certificate) -> TimestampMs {
        let mut stamps: Vec<(TimestampMs, u64)> = leader
            .parents()
            .iter()
            .filter_map(|p| dag.certificate(&p.digest))
            .map(|c| (c.header().created_at, self.committee.stake(c.author())))
            .collect();
        stamps.sort();
        median(&stamps).unwrap_or(self.last_commit_timestamp)
    }
}

/// The lower stake-weighted median of `(value, stake)` pairs sorted by value: the first value at
/// which the cumulative stake exceeds half of the total.
pub(crate) fn median(sorted: &[(TimestampMs, u64)]) -> Option<TimestampMs> {
    let total: u128 = sorted.iter().map(|(_, s)| u128::from(*s)).sum();
    let mut cumulative = 0u128;
    for (t, s) in sorted {
        cumulative += u128::from(*s);
        if cumulative * 2 > total {
            return Some(*t);
        }
    }
    None
}

impl CommittedSubDag {
    /// The record the store keeps of this commit.
    pub(crate) fn record(&self) -> CommitRecord {
        CommitRecord {
            index: self.index,
            leader: self.leader,
            timestamp: self.timestamp,
            certificates: self.certificates.iter().map(|c| c.digest()).collect(),
            lowest_round: self
                .certificates
                .iter()
                .map(|c| c.round())
                .min()
                .unwrap_or(self.leader.round),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: u64) -> TimestampMs {
        TimestampMs(v)
    }

    #[test]
    fn median_of_equal_stakes_is_the_middle_one() {
        assert_eq!(median(&[(t(1), 1), (t(5), 1), (t(9), 1)]), Some(t(5)));
        assert_eq!(
            median(&[(t(1), 1), (t(5), 1), (t(7), 1), (t(9), 1)]),
            Some(t(7))
        );
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn median_stays_between_honest_stamps_whatever_f_faulty_stamps_say() {
        // 3f+1 = 7 authorities, f = 2 faulty; parents of quorum stake 5 (3 honest, 2 faulty).
        let honest = [t(1_000), t(1_010), t(1_020)];
        for faulty in [t(0), t(u64::MAX), t(1_015)] {
            let mut stamps: Vec<_> = honest.iter().map(|h| (*h, 1)).collect();
            stamps.extend([(faulty, 1), (faulty, 1)]);
            stamps.sort();
            let m = median(&stamps).unwrap();
            assert!(
                m >= honest[0] && m <= honest[2],
                "{faulty:?} moved it to {m:?}"
            );
        }
    }

    #[test]
    fn median_weighs_stake() {
        assert_eq!(median(&[(t(1), 1), (t(2), 1), (t(3), 5)]), Some(t(3)));
        assert_eq!(median(&[(t(1), 5), (t(2), 1), (t(3), 1)]), Some(t(1)));
    }
}
