//! Recovery: a restarted core rebuilds itself from its store.
//!
//! What comes back: the commit position and clock (the last commit record), the collection
//! round, the DAG above it with each vertex's committed flag, our last header and our votes.
//! Which vertices are committed is read from the commit records whose *leader* is at or above
//! the collection round — any older record names only certificates below it. Records are read
//! one index at a time, each decoded once and checked to be the index asked for.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{Action, Core, OwnHeader};
use crate::committee::StakeAggregator;
use crate::error::{DagError, DagResult};
use crate::messages::ConsensusMessage;
use crate::store::ConsensusStore;
use crate::types::{Digest, Round, TimestampMs};

impl<S: ConsensusStore> Core<S> {
    pub(super) fn recover(&mut self, now: TimestampMs) -> DagResult<Vec<Action>> {
        self.last_votes = self.store.votes()?;
        if let Some(last) = self.store.last_commit()? {
            self.linearizer.restore(&last);
            self.dag.restore_gc_round(self.linearizer.gc_round());
        }
        let committed = self.committed_above_gc()?;
        self.restore_dag(&committed, now)?;
        let mut actions = Vec::new();
        self.restore_own_header(&mut actions)?;
        self.try_propose(now, &mut actions);
        self.flush()?;
        Ok(actions)
    }

    /// Digests of the committed certificates the DAG above the collection round may hold.
    fn committed_above_gc(&self) -> DagResult<BTreeSet<Digest>> {
        let gc_round = self.dag.gc_round();
        let mut committed = BTreeSet::new();
        let mut index = self.linearizer.next_commit_index();
        while index > 0 {
            index -= 1;
            let record = self
                .store
                .commit(index)?
                .ok_or_else(|| DagError::CorruptStore {
                    reason: format!("commit record {index} is missing"),
                })?;
            if record.index != index {
                return Err(DagError::CorruptStore {
                    reason: format!("asked for commit {index}, read commit {}", record.index),
                });
            }
            if record.leader.round < gc_round {
                break; // Leaders only grow with the index: older records lie wholly below.
            }
            committed.extend(record.certificates);
        }
        Ok(committed)
    }

    fn restore_dag(&mut self, committed: &BTreeSet<Digest>, now: TimestampMs) -> DagResult<()> {
        for c in self.store.certificates_from(self.dag.gc_round())? {
            if c.round() == Round::GENESIS {
                continue;
            }
            if !self.dag.missing_parents(c.parents()).is_empty()
                || self.dag.first_mismatch(c.parents()).is_some()
            {
                return Err(DagError::CorruptStore {
                    reason: format!("stored certificate {} lacks parents", c.digest()),
                });
            }
            self.headers.insert(c.digest(), c.signed_header().clone());
            self.header_slots
                .insert((c.round(), c.author()), c.digest());
            let is_committed = committed.contains(&c.digest());
            self.dag.insert(c, is_committed, now);
        }
        Ok(())
    }

    /// Our last header: sent again, byte for byte, if it was not certified.
    fn restore_own_header(&mut self, actions: &mut Vec<Action>) -> DagResult<()> {
        let Some(header) = self.store.own_header()? else {
            return Ok(());
        };
        let header = Arc::new(header);
        self.proposed_round = header.round();
        let certified = self.dag.contains(&header.digest());
        self.own_headers.insert(header.round(), header.clone());
        self.own = Some(OwnHeader {
            header: header.clone(),
            votes: StakeAggregator::new(),
            signatures: Vec::new(),
            certified,
        });
        if !certified && header.round() >= self.dag.gc_round() {
            self.add_own_vote(&header);
            actions.push(Action::Broadcast(ConsensusMessage::Header(
                (*header).clone(),
            )));
        }
        Ok(())
    }
}
