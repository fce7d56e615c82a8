//! The DAG of accepted certificates: what the commit rule reads and the collector trims.
//!
//! A certificate enters only when every parent it references is here *as referenced* — the
//! digest names an accepted certificate whose author and round are the ones the reference claims
//! — or lies below the collection round. So every vertex's parents form a quorum of distinct
//! certificates of the previous round, which is what Bullshark's safety argument assumes.
//!
//! Holds rounds ≥ the collection round; below it, only the store remembers.

use std::collections::{BTreeMap, BTreeSet};

use crate::committee::Committee;
use crate::messages::{Certificate, CertificateRef};
use crate::types::{AuthorityIndex, Digest, Round, Stake, TimestampMs};

pub(crate) struct Vertex {
    pub(crate) certificate: Certificate,
    pub(crate) committed: bool,
}

/// What the DAG says of one parent reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParentStatus {
    /// Accepted as referenced, or below the collection round.
    Present,
    /// Not here yet: fetch it.
    Missing,
    /// The digest names an accepted certificate of another author or round: the reference lies.
    Mismatch { actual: CertificateRef },
}

pub(crate) struct DagState {
    committee: Committee,
    rounds: BTreeMap<Round, BTreeMap<AuthorityIndex, Vertex>>,
    accepted: BTreeMap<Digest, CertificateRef>,
    gc_round: Round,
    highest_round: Round,
    highest_quorum_round: Round,
    quorum_reached_at: BTreeMap<Round, TimestampMs>,
}

impl DagState {
    /// A DAG holding the genesis certificates (committed by definition).
    pub(crate) fn new(committee: &Committee) -> DagState {
        let mut dag = DagState {
            committee: committee.clone(),
            rounds: BTreeMap::new(),
            accepted: BTreeMap::new(),
            gc_round: Round::GENESIS,
            highest_round: Round::GENESIS,
            highest_quorum_round: Round::GENESIS,
            quorum_reached_at: BTreeMap::new(),
        };
        for genesis in Certificate::genesis(committee) {
            dag.insert(genesis, true, TimestampMs(0));
        }
        dag
    }

    pub(crate) fn gc_round(&self) -> Round {
        self.gc_round
    }
    pub(crate) fn highest_round(&self) -> Round {
        self.highest_round
    }
    pub(crate) fn highest_quorum_round(&self) -> Round {
        self.highest_quorum_round
    }
    pub(crate) fn quorum_reached_at(&self, round: Round) -> Option<TimestampMs> {
        self.quorum_reached_at.get(&round).copied()
    }

    pub(crate) fn contains(&self, digest: &Digest) -> bool {
        self.accepted.contains_key(digest)
    }

    pub(crate) fn vertex(&self, round: Round, author: AuthorityIndex) -> Option<&Vertex> {
        self.rounds.get(&round).and_then(|v| v.get(&author))
    }

    pub(crate) fn certificate(&self, digest: &Digest) -> Option<&Certificate> {
        let r = self.accepted.get(digest)?;
        self.vertex(r.round, r.author).map(|v| &v.certificate)
    }

    /// The certificates of one round, by author.
    pub(crate) fn round(&self, round: Round) -> impl Iterator<Item = (&AuthorityIndex, &Vertex)> {
        self.rounds.get(&round).into_iter().flatten()
    }

    /// Certificates of rounds `first..=last`, in (round, author) order.
    pub(crate) fn range(&self, first: Round, last: Round) -> impl Iterator<Item = &Certificate> {
        let first = first.max(self.gc_round);
        let last = last.max(first);
        self.rounds
            .range(first..=last)
            .flat_map(|(_, v)| v.values().map(|v| &v.certificate))
    }

    pub(crate) fn parent_status(&self, parent: &CertificateRef) -> ParentStatus {
        match self.accepted.get(&parent.digest) {
            Some(actual) if actual == parent => ParentStatus::Present,
            Some(actual) => ParentStatus::Mismatch { actual: *actual },
            None if parent.round < self.gc_round => ParentStatus::Present,
            None => ParentStatus::Missing,
        }
    }

    /// The parents that are not here yet (a lying reference is not "missing": see
    /// [`DagState::first_mismatch`]).
    pub(crate) fn missing_parents(&self, parents: &[CertificateRef]) -> BTreeSet<Digest> {
        parents
            .iter()
            .filter(|p| self.parent_status(p) == ParentStatus::Missing)
            .map(|p| p.digest)
            .collect()
    }

    /// The first reference whose digest names a different certificate than it claims.
    pub(crate) fn first_mismatch(
        &self,
        parents: &[CertificateRef],
    ) -> Option<(CertificateRef, CertificateRef)> {
        parents.iter().find_map(|p| match self.parent_status(p) {
            ParentStatus::Mismatch { actual } => Some((*p, actual)),
            _ => None,
        })
    }

    /// The latest `created_at` among the parents held here.
    pub(crate) fn parents_latest_time(&self, parents: &[CertificateRef]) -> TimestampMs {
        parents
            .iter()
            .filter_map(|p| self.certificate(&p.digest))
            .map(|c| c.header().created_at)
            .max()
            .unwrap_or_default()
    }

    /// Inserts a certificate whose parents are all present; returns whether its round is a new
    /// highest round with a quorum (progress).
    pub(crate) fn insert(
        &mut self,
        certificate: Certificate,
        committed: bool,
        now: TimestampMs,
    ) -> bool {
        let round = certificate.round();
        self.accepted
            .insert(certificate.digest(), certificate.reference());
        self.rounds.entry(round).or_default().insert(
            certificate.author(),
            Vertex {
                certificate,
                committed,
            },
        );
        self.highest_round = self.highest_round.max(round);
        if !self.has_quorum(round) {
            return false;
        }
        self.quorum_reached_at.entry(round).or_insert(now);
        if round > self.highest_quorum_round {
            self.highest_quorum_round = round;
            return true;
        }
        false
    }

    pub(crate) fn round_stake(&self, round: Round) -> Stake {
        self.round(round)
            .map(|(a, _)| self.committee.stake(*a))
            .sum()
    }

    pub(crate) fn has_quorum(&self, round: Round) -> bool {
        self.round_stake(round) >= self.committee.quorum_threshold()
    }

    /// Stake of the certificates of `round` that reference `digest`.
    pub(crate) fn support(&self, round: Round, digest: &Digest) -> Stake {
        self.round(round)
            .filter(|(_, v)| v.certificate.parents().iter().any(|p| p.digest == *digest))
            .map(|(a, _)| self.committee.stake(*a))
            .sum()
    }

    /// Whether `to` is in the causal history of `from`.
    pub(crate) fn linked(&self, from: &Certificate, to: &Certificate) -> bool {
        let mut layer: BTreeSet<Digest> = BTreeSet::from([from.digest()]);
        let mut r = from.round();
        while r > to.round() {
            let mut next = BTreeSet::new();
            for (_, v) in self.round(r) {
                if layer.contains(&v.certificate.digest()) {
                    next.extend(v.certificate.parents().iter().map(|p| p.digest));
                }
            }
            layer = next;
            r = r.prev();
        }
        layer.contains(&to.digest())
    }

    pub(crate) fn vertex_mut(
        &mut self,
        round: Round,
        author: AuthorityIndex,
    ) -> Option<&mut Vertex> {
        self.rounds.get_mut(&round).and_then(|v| v.get_mut(&author))
    }

    /// Raises the collection round; returns the rounds dropped.
    pub(crate) fn collect(
        &mut self,
        gc_round: Round,
    ) -> BTreeMap<Round, BTreeMap<AuthorityIndex, Vertex>> {
        if gc_round <= self.gc_round {
            return BTreeMap::new();
        }
        self.gc_round = gc_round;
        let kept = self.rounds.split_off(&gc_round);
        let collected = std::mem::replace(&mut self.rounds, kept);
        for vertices in collected.values() {
            for v in vertices.values() {
                self.accepted.remove(&v.certificate.digest());
            }
        }
        self.quorum_reached_at = self.quorum_reached_at.split_off(&gc_round);
        collected
    }

    /// Sets the collection round of a DAG being rebuilt from the store (nothing to drop yet but
    /// genesis).
    pub(crate) fn restore_gc_round(&mut self, gc_round: Round) {
        self.collect(gc_round);
    }
}
