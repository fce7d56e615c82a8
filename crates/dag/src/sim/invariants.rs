//! What every honest log must satisfy, checked as each commit happens and over the final logs.
//! The list, with the reasons for each bound, is in the module doc of [`super`].

use std::collections::{BTreeMap, BTreeSet};

use crate::encoding::encode;
use crate::messages::{CommittedSubDag, ConsensusMessage, SignedHeader, SyncResponse};
use crate::types::{AuthorityIndex, Digest, Round, TimestampMs};

use super::{SimConfig, SimReport, CLOCK_ORIGIN_MS};

/// One node's committed sequence, kept across its restarts.
#[derive(Default)]
struct NodeLog {
    /// Every committed sub-DAG, encoded, in order.
    entries: Vec<Vec<u8>>,
    /// The virtual time of each commit.
    times_ms: Vec<u64>,
    committed: BTreeSet<Digest>,
    last_timestamp: Option<TimestampMs>,
}

pub(super) struct Checker {
    logs: Vec<NodeLog>,
    honest: BTreeSet<AuthorityIndex>,
    /// Every committed certificate by slot, over all honest nodes.
    slots: BTreeMap<(Round, AuthorityIndex), Digest>,
    /// The author and round of every header seen on the wire: a digest binds both.
    headers: BTreeMap<Digest, (AuthorityIndex, Round)>,
    /// When an honest node first proposed a header of each round.
    first_honest_header_ms: BTreeMap<Round, u64>,
}

impl Checker {
    pub(super) fn new(config: &SimConfig) -> Checker {
        Checker {
            logs: (0..config.nodes).map(|_| NodeLog::default()).collect(),
            honest: config.honest().collect(),
            slots: BTreeMap::new(),
            headers: BTreeMap::new(),
            first_honest_header_ms: BTreeMap::new(),
        }
    }

    pub(super) fn commits(&self, node: AuthorityIndex) -> u64 {
        self.logs[node.as_usize()].entries.len() as u64
    }

    pub(super) fn commits_since(&self, node: AuthorityIndex, from_ms: u64) -> u64 {
        let times = &self.logs[node.as_usize()].times_ms;
        times.iter().filter(|&&t| t >= from_ms).count() as u64
    }

    pub(super) fn header_proposed(&mut self, round: Round, now_ms: u64) {
        self.first_honest_header_ms.entry(round).or_insert(now_ms);
    }

    /// Learns the author and round behind each header digest a message carries.
    pub(super) fn observe(&mut self, message: &ConsensusMessage) {
        let mut learn = |h: &SignedHeader| {
            self.headers
                .entry(h.digest())
                .or_insert((h.author(), h.round()));
        };
        match message {
            ConsensusMessage::Header(h) => learn(h),
            ConsensusMessage::Certificate(c) => learn(c.signed_header()),
            ConsensusMessage::SyncResponse(SyncResponse { certificates, .. }) => {
                certificates.iter().for_each(|c| learn(c.signed_header()))
            }
            _ => {}
        }
    }

    /// A restarted node re-emits exactly what it committed before.
    pub(super) fn check_replay(
        &self,
        node: AuthorityIndex,
        replayed: &[Vec<u8>],
    ) -> Result<(), String> {
        let log = &self.logs[node.as_usize()].entries;
        if replayed != log.as_slice() {
            return Err(format!(
                "replay: {node} replayed {} commits after restart, different from the {} it had",
                replayed.len(),
                log.len()
            ));
        }
        Ok(())
    }

    /// Checks one commit against the node's log so far, and records it.
    pub(super) fn on_commit(
        &mut self,
        node: AuthorityIndex,
        honest: bool,
        sub_dag: &CommittedSubDag,
        now_ms: u64,
        highest_honest_clock: TimestampMs,
        config: &SimConfig,
    ) -> Result<(), String> {
        let log = &self.logs[node.as_usize()];
        if sub_dag.index != log.entries.len() as u64 {
            return Err(format!(
                "indices: {node} committed index {} after {} commits",
                sub_dag.index,
                log.entries.len()
            ));
        }
        if honest {
            self.check_certificates(node, sub_dag, config)?;
            self.check_timestamp(node, sub_dag, highest_honest_clock, config)?;
        }
        let log = &mut self.logs[node.as_usize()];
        log.entries.push(encode(sub_dag));
        log.times_ms.push(now_ms);
        log.last_timestamp = Some(sub_dag.timestamp);
        log.committed
            .extend(sub_dag.certificates.iter().map(|c| c.digest()));
        Ok(())
    }

    /// No certificate twice, parents first and named truthfully, one per slot, leader last.
    fn check_certificates(
        &mut self,
        node: AuthorityIndex,
        sub_dag: &CommittedSubDag,
        config: &SimConfig,
    ) -> Result<(), String> {
        let k = sub_dag.index;
        let floor = sub_dag
            .leader
            .round
            .saturating_sub(config.core.gc_depth_rounds);
        let mut committed = self.logs[node.as_usize()].committed.clone();
        for c in &sub_dag.certificates {
            let name = format!("{}{}", c.author(), c.round().0);
            for p in c.parents() {
                if let Some(&(author, round)) = self.headers.get(&p.digest) {
                    if (author, round) != (p.author, p.round) {
                        return Err(format!(
                            "forged reference: {node}'s commit {k} holds {name}, whose parent reference {}{} names the certificate of {author}{}",
                            p.author, p.round.0, round.0
                        ));
                    }
                }
                if p.round > Round::GENESIS && p.round >= floor && !committed.contains(&p.digest) {
                    return Err(format!(
                        "causality: {node}'s commit {k} holds {name} before its parent {}{}",
                        p.author, p.round.0
                    ));
                }
            }
            if !committed.insert(c.digest()) {
                return Err(format!(
                    "double commit: {node} committed {name} ({}) again at commit {k}",
                    c.digest()
                ));
            }
            let slot = (c.round(), c.author());
            if let Some(d) = self.slots.insert(slot, c.digest()) {
                if d != c.digest() {
                    return Err(format!(
                        "slot: two certificates committed for slot {name}: {d} and {}",
                        c.digest()
                    ));
                }
            }
        }
        if sub_dag.certificates.last().map(|c| c.digest()) != Some(sub_dag.leader.digest) {
            return Err(format!(
                "leader: {node}'s commit {k} does not end with its leader"
            ));
        }
        Ok(())
    }

    /// Monotonic, and within the honest clocks: at most the highest honest clock plus the skew
    /// bound; at least the lowest honest offset applied to the time the leader's parent round
    /// was first proposed by an honest node (an honest parent is stamped no earlier).
    fn check_timestamp(
        &self,
        node: AuthorityIndex,
        sub_dag: &CommittedSubDag,
        high: TimestampMs,
        config: &SimConfig,
    ) -> Result<(), String> {
        let k = sub_dag.index;
        let ts = sub_dag.timestamp;
        if let Some(last) = self.logs[node.as_usize()].last_timestamp {
            if ts < last {
                return Err(format!(
                    "timestamp: {node}'s commit {k} is stamped {} before the previous {}",
                    ts.0, last.0
                ));
            }
        }
        let ceiling = high.saturating_add_ms(config.core.max_clock_skew_ms);
        if ts > ceiling {
            return Err(format!(
                "timestamp: {node}'s commit {k} (leader {}{}) is stamped {}, beyond the highest honest clock {} + skew bound {}ms",
                sub_dag.leader.author, sub_dag.leader.round.0, ts.0, high.0, config.core.max_clock_skew_ms
            ));
        }
        let parent_round = sub_dag.leader.round.prev();
        if let Some(&first_ms) = self.first_honest_header_ms.get(&parent_round) {
            let lowest_offset = self
                .honest
                .iter()
                .map(|a| config.clock_offsets_ms.get(a).copied().unwrap_or(0))
                .min()
                .unwrap_or(0);
            let floor = CLOCK_ORIGIN_MS.saturating_add_signed(lowest_offset) + first_ms;
            if ts.0 < floor {
                return Err(format!(
                    "timestamp: {node}'s commit {k} (leader {}{}) is stamped {}, before any honest clock when its parent round was proposed ({floor})",
                    sub_dag.leader.author, sub_dag.leader.round.0, ts.0
                ));
            }
        }
        Ok(())
    }

    /// Any two honest logs agree, byte for byte, up to the shorter one.
    pub(super) fn check_agreement(&self) -> Result<(), String> {
        let honest: Vec<&AuthorityIndex> = self.honest.iter().collect();
        for (i, &a) in honest.iter().enumerate() {
            for &b in &honest[i + 1..] {
                let (x, y) = (
                    &self.logs[a.as_usize()].entries,
                    &self.logs[b.as_usize()].entries,
                );
                if let Some(k) = (0..x.len().min(y.len())).find(|&k| x[k] != y[k]) {
                    return Err(format!("agreement: {a} and {b} differ at commit {k}"));
                }
            }
        }
        Ok(())
    }

    /// With at most f faulty authorities, every honest running node commits at the owed rate over
    /// its measured window; the rates go into the report either way.
    pub(super) fn check_liveness(
        &self,
        config: &SimConfig,
        running: &BTreeMap<AuthorityIndex, Option<u64>>,
        report: &mut SimReport,
    ) -> Result<(), String> {
        let f = (config.nodes - 1) / 3;
        report.liveness_checked = config.faulty().len() <= f;
        let rate = config.min_commit_rate_per_s();
        for (&node, &last_restart) in running {
            if !self.honest.contains(&node) {
                continue;
            }
            let start =
                config.heal_at_ms.max(last_restart.unwrap_or(0)) + config.catch_up_grace_ms();
            if start >= config.duration_ms {
                continue;
            }
            let window_s = (config.duration_ms - start) as f64 / 1_000.0;
            let commits = self.commits_since(node, start);
            report
                .commit_rate_after_heal
                .insert(node, commits as f64 / window_s);
            let owed = (rate * window_s).floor() as u64;
            if report.liveness_checked && commits < owed {
                return Err(format!(
                    "liveness: {node} made {commits} commits in the {window_s:.1}s from {start}ms, {owed} owed (at least {rate:.2}/s)"
                ));
            }
        }
        Ok(())
    }
}
