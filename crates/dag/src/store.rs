//! What the core persists, behind a narrow trait with an in-memory twin.
//!
//! The core writes a [`StoreBatch`] atomically *before* it emits anything that depends on it:
//! its own header before broadcasting it, a vote record before sending the vote, certificates
//! before they count, commit records before the commit is reported. A restarted core therefore
//! never signs two headers for one round nor two votes for one slot, and re-emits exactly the
//! commit sequence it had.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{DagError, DagResult};
use crate::messages::{Certificate, CertificateRef, SignedHeader};
use crate::types::{AuthorityIndex, Digest, Round, TimestampMs};

/// The record of one commit: the certificates by digest, in commit order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub index: u64,
    pub leader: CertificateRef,
    pub timestamp: TimestampMs,
    pub certificates: Vec<Digest>,
    /// The lowest round among `certificates`: certificates below it are not needed to replay.
    pub lowest_round: Round,
}

/// The vote we sent for an author's header of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRecord {
    pub round: Round,
    pub digest: Digest,
}

/// One atomic write.
#[derive(Clone, Debug, Default)]
pub struct StoreBatch {
    pub own_header: Option<SignedHeader>,
    pub votes: Vec<(AuthorityIndex, VoteRecord)>,
    pub certificates: Vec<Certificate>,
    pub commits: Vec<CommitRecord>,
}

impl StoreBatch {
    pub fn is_empty(&self) -> bool {
        self.own_header.is_none()
            && self.votes.is_empty()
            && self.certificates.is_empty()
            && self.commits.is_empty()
    }
}

/// Writes batches to a store from another thread, so a driver can go on handling messages while
/// a durable write (and its fsync) is under way: pipelined group commit ([`crate::Core::take_batch`]).
pub trait BatchWriter: Send {
    /// Applies one batch atomically and durably, exactly as [`ConsensusStore::write`] would.
    fn write(&mut self, batch: StoreBatch) -> DagResult<()>;
}

/// Storage of the consensus core. Implementations must apply each batch atomically.
pub trait ConsensusStore {
    fn write(&mut self, batch: StoreBatch) -> DagResult<()>;
    /// A writer of this store for another thread, where writes are costly enough to be worth
    /// overlapping with the core's work (a durable store); `None` (the default) where they are not.
    /// Batches written through it are visible to this store's reads once `write` returned.
    fn batch_writer(&self) -> Option<Box<dyn BatchWriter>> {
        None
    }
    /// The latest header we signed.
    fn own_header(&self) -> DagResult<Option<SignedHeader>>;
    /// The last vote per header author.
    fn votes(&self) -> DagResult<BTreeMap<AuthorityIndex, VoteRecord>>;
    /// Certificates of rounds ≥ `round`, in (round, author) order.
    fn certificates_from(&self, round: Round) -> DagResult<Vec<Certificate>>;
    fn certificate(&self, digest: &Digest) -> DagResult<Option<Certificate>>;
    /// At most `max` certificates from position (`round`, `author`) on, of rounds ≤ `last_round`,
    /// in (round, author) order.
    fn certificates_page(
        &self,
        round: Round,
        author: AuthorityIndex,
        last_round: Round,
        max: usize,
    ) -> DagResult<Vec<Certificate>>;
    /// Commit records with index ≥ `index`, in order.
    fn commits_from(&self, index: u64) -> DagResult<Vec<CommitRecord>>;
    /// The commit record of `index`, checked to be that index.
    fn commit(&self, index: u64) -> DagResult<Option<CommitRecord>>;
    fn last_commit(&self) -> DagResult<Option<CommitRecord>>;
    /// Forgets commit records with index < `index` and certificates of rounds < `round`.
    fn prune(&mut self, commits_below_index: u64, certificates_below_round: Round)
        -> DagResult<()>;
}

/// The in-memory twin: the same contract, for tests, the simulator and benchmarks. It survives
/// a simulated crash because the simulator keeps it while dropping the core.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    own_header: Option<SignedHeader>,
    votes: BTreeMap<AuthorityIndex, VoteRecord>,
    certificates: BTreeMap<Digest, Certificate>,
    by_round: BTreeMap<(Round, AuthorityIndex, Digest), ()>,
    commits: BTreeMap<u64, CommitRecord>,
    writes: u64,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Number of batches written.
    pub fn writes(&self) -> u64 {
        self.writes
    }
}

impl ConsensusStore for MemStore {
    fn write(&mut self, batch: StoreBatch) -> DagResult<()> {
        self.writes += 1;
        if let Some(h) = batch.own_header {
            self.own_header = Some(h);
        }
        for (author, v) in batch.votes {
            self.votes.insert(author, v);
        }
        for c in batch.certificates {
            self.by_round
                .insert((c.round(), c.author(), c.digest()), ());
            self.certificates.insert(c.digest(), c);
        }
        for c in batch.commits {
            self.commits.insert(c.index, c);
        }
        Ok(())
    }

    fn own_header(&self) -> DagResult<Option<SignedHeader>> {
        Ok(self.own_header.clone())
    }

    fn votes(&self) -> DagResult<BTreeMap<AuthorityIndex, VoteRecord>> {
        Ok(self.votes.clone())
    }

    fn certificates_from(&self, round: Round) -> DagResult<Vec<Certificate>> {
        self.by_round
            .range((round, AuthorityIndex(0), Digest::default())..)
            .map(|((_, _, d), _)| {
                self.certificates
                    .get(d)
                    .cloned()
                    .ok_or_else(|| DagError::CorruptStore {
                        reason: format!("index names missing certificate {d}"),
                    })
            })
            .collect()
    }

    fn certificate(&self, digest: &Digest) -> DagResult<Option<Certificate>> {
        Ok(self.certificates.get(digest).cloned())
    }

    fn certificates_page(
        &self,
        round: Round,
        author: AuthorityIndex,
        last_round: Round,
        max: usize,
    ) -> DagResult<Vec<Certificate>> {
        self.by_round
            .range((round, author, Digest::default())..)
            .take_while(|((r, _, _), _)| *r <= last_round)
            .take(max)
            .map(|((_, _, d), _)| {
                self.certificates
                    .get(d)
                    .cloned()
                    .ok_or_else(|| DagError::CorruptStore {
                        reason: format!("index names missing certificate {d}"),
                    })
            })
            .collect()
    }

    fn commit(&self, index: u64) -> DagResult<Option<CommitRecord>> {
        Ok(self.commits.get(&index).cloned())
    }

    fn commits_from(&self, index: u64) -> DagResult<Vec<CommitRecord>> {
        Ok(self
            .commits
            .range(index..)
            .map(|(_, c)| c.clone())
            .collect())
    }

    fn last_commit(&self) -> DagResult<Option<CommitRecord>> {
        Ok(self.commits.values().next_back().cloned())
    }

    fn prune(
        &mut self,
        commits_below_index: u64,
        certificates_below_round: Round,
    ) -> DagResult<()> {
        self.commits = self.commits.split_off(&commits_below_index);
        let keep = self.by_round.split_off(&(
            certificates_below_round,
            AuthorityIndex(0),
            Digest::default(),
        ));
        for (_, _, d) in std::mem::replace(&mut self.by_round, keep).into_keys() {
            self.certificates.remove(&d);
        }
        Ok(())
    }
}
