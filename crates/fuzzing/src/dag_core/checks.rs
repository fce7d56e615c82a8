//! What must hold of every honest core whatever the Byzantine authority sends: the commit
//! sequence each one emits, the bounds of its state, and (while at most f authorities are
//! faulty) agreement between them.

use std::collections::{BTreeMap, BTreeSet};

use trainmesh_dag::leader_schedule::LeaderSchedule;
use trainmesh_dag::{
    CertificateRef, CommittedSubDag, CoreConfig, CoreStatus, Digest, Round, TimestampMs,
};

use crate::dag::committee;

/// What one honest node emitted.
#[derive(Debug, Default)]
struct NodeLog {
    commits: Vec<CommittedSubDag>,
    committed: BTreeSet<Digest>,
}

#[derive(Debug)]
pub struct Checks {
    schedule: LeaderSchedule,
    nodes: Vec<NodeLog>,
    /// The first node's commit at each index: (leader, certificates in order).
    agreed: BTreeMap<u64, (CertificateRef, Vec<Digest>)>,
    check_agreement: bool,
}

impl Checks {
    pub fn new(nodes: usize, check_agreement: bool) -> Checks {
        Checks {
            schedule: LeaderSchedule::new(committee()),
            nodes: (0..nodes).map(|_| NodeLog::default()).collect(),
            agreed: BTreeMap::new(),
            check_agreement,
        }
    }

    pub fn commits(&self) -> usize {
        self.nodes.iter().map(|n| n.commits.len()).sum()
    }

    /// Every commit: the next index, a later leader of the schedule, the leader's history in
    /// (round, author) order ending with the leader, nothing committed twice, a clock that does
    /// not go back.
    pub fn on_commit(&mut self, node: usize, sub: &CommittedSubDag) {
        let log = &mut self.nodes[node];
        let (last_round, last_time) = log
            .commits
            .last()
            .map_or((Round::GENESIS, TimestampMs(0)), |c| {
                (c.leader.round, c.timestamp)
            });
        assert_eq!(
            sub.index,
            log.commits.len() as u64,
            "node {node}: commit index"
        );
        let leader = sub.leader;
        assert!(
            leader.round > last_round && leader.round.is_even(),
            "node {node}: leader of {} after one of {last_round}",
            leader.round
        );
        assert_eq!(
            leader.author,
            self.schedule.leader(leader.round),
            "node {node}"
        );
        let last = sub.certificates.last().expect("a commit holds its leader");
        assert_eq!(
            last.reference(),
            leader,
            "node {node}: the leader comes last"
        );
        // The commit time is the median of the leader's parents' stamps, never below the last
        // one; voters refuse a header stamped before its parents, so it never passes the
        // leader's own stamp either.
        assert!(
            sub.timestamp >= last_time && sub.timestamp <= last.header().created_at.max(last_time),
            "node {node}: commit time {:?} after {last_time:?}, leader stamped {:?}",
            sub.timestamp,
            last.header().created_at
        );
        for pair in sub.certificates.windows(2) {
            assert!(
                (pair[0].round(), pair[0].author()) < (pair[1].round(), pair[1].author()),
                "node {node}: commit {} is not in (round, author) order",
                sub.index
            );
        }
        for c in &sub.certificates {
            assert!(
                log.committed.insert(c.digest()),
                "node {node}: certificate {} committed twice",
                c.digest()
            );
        }
        log.commits.push(sub.clone());
        self.check_agreement(node, sub);
    }

    fn check_agreement(&mut self, node: usize, sub: &CommittedSubDag) {
        if !self.check_agreement {
            return;
        }
        let mine = (
            sub.leader,
            sub.certificates.iter().map(|c| c.digest()).collect(),
        );
        let first = self.agreed.entry(sub.index).or_insert_with(|| mine.clone());
        assert_eq!(
            *first, mine,
            "node {node} disagrees with another honest node on commit {}",
            sub.index
        );
    }

    /// After every step: the core's commit position is what it emitted, its queues within bounds.
    pub fn on_status(&self, node: usize, status: &CoreStatus, config: &CoreConfig) {
        let emitted = self.nodes[node].commits.len() as u64;
        assert_eq!(status.next_commit_index, emitted, "node {node}: {status:?}");
        assert!(
            status.pending_certificates <= config.pending_certificates_max
                && status.pending_headers <= config.pending_headers_max
                && status.missing_certificates <= config.missing_certificates_max
                && status.mempool_bytes <= config.mempool_bytes_max,
            "node {node}: {status:?}"
        );
    }

    /// After a restart: the store gives back exactly the commits the node emitted.
    pub fn on_restart(&self, node: usize, recovered: &[CommittedSubDag]) {
        assert_eq!(
            recovered,
            self.nodes[node].commits.as_slice(),
            "node {node}: the commits recovered from the store differ from those emitted"
        );
    }
}
