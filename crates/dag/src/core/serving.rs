//! Serving peers: certificates by digest and by (round, author) position, and the committed
//! sequence rebuilt from the store. Every reply is bounded by count and bytes; a catch-up reply
//! is one page, and the requester asks for the next.

use super::Core;
use crate::error::{DagError, DagResult};
use crate::messages::{Certificate, CommittedSubDag, SyncRequest, SyncResponse};
use crate::store::ConsensusStore;
use crate::types::{AuthorityIndex, Round};

/// Certificates of one reply, within the count and byte bounds.
struct Page {
    certificates: Vec<Certificate>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
}

impl Page {
    /// Adds a certificate if it fits; false when the page is full.
    fn push(&mut self, c: Certificate) -> bool {
        let size = c.header().payload_bytes() + 200 + 100 * c.votes().len();
        if self.certificates.len() >= self.max_count || self.bytes + size > self.max_bytes {
            return false;
        }
        self.bytes += size;
        self.certificates.push(c);
        true
    }
}

impl<S: ConsensusStore> Core<S> {
    /// Answers a peer's sync request from the DAG, or from the store below the collection round.
    /// A request by digest that finds nothing gets no reply; a request by position always gets
    /// one (empty when there is nothing more), so the requester knows it has caught up.
    pub fn handle_sync_request(&mut self, request: SyncRequest) -> Option<SyncResponse> {
        let mut page = Page {
            certificates: Vec::new(),
            bytes: 0,
            max_count: self.config.sync_response_certificates_max,
            max_bytes: self.config.sync_response_bytes_max,
        };
        let mut rounds_from = None;
        match request {
            SyncRequest::Certificates { digests } => {
                for d in digests.iter().take(self.config.sync_digests_max) {
                    let found = match self.dag.certificate(d) {
                        Some(c) => Some(c.clone()),
                        None => self.store.certificate(d).ok().flatten(),
                    };
                    if let Some(c) = found.filter(|c| c.round() > Round::GENESIS) {
                        if !page.push(c) {
                            break;
                        }
                    }
                }
                if page.certificates.is_empty() {
                    return None;
                }
            }
            SyncRequest::Rounds { round, author } => {
                rounds_from = Some((round, author));
                self.serve_rounds(round, author, &mut page);
            }
        }
        Some(SyncResponse {
            certificates: page.certificates,
            rounds_from,
        })
    }

    fn serve_rounds(&self, round: Round, author: AuthorityIndex, page: &mut Page) {
        let first = round.max(Round(1));
        let author = if round < Round(1) {
            AuthorityIndex(0)
        } else {
            author
        };
        let last = first.saturating_add(self.config.sync_rounds_max.saturating_sub(1));
        if first < self.dag.gc_round() {
            let below = self.dag.gc_round().prev().min(last);
            let stored = self
                .store
                .certificates_page(first, author, below, page.max_count)
                .unwrap_or_default();
            for c in stored {
                if !page.push(c) {
                    return;
                }
            }
        }
        for c in self.dag.range(first, last) {
            if (c.round(), c.author()) < (first, author) {
                continue;
            }
            if !page.push(c.clone()) {
                return;
            }
        }
    }

    /// The committed sequence from `index` on, rebuilt from the store: after a restart this is
    /// byte for byte what was emitted before.
    pub fn committed_from(&self, index: u64) -> DagResult<Vec<CommittedSubDag>> {
        self.store
            .commits_from(index)?
            .into_iter()
            .map(|record| {
                let certificates = record
                    .certificates
                    .iter()
                    .map(|d| {
                        self.store
                            .certificate(d)?
                            .ok_or_else(|| DagError::CorruptStore {
                                reason: format!(
                                    "commit {} names missing certificate {d}",
                                    record.index
                                ),
                            })
                    })
                    .collect::<DagResult<Vec<_>>>()?;
                Ok(CommittedSubDag {
                    index: record.index,
                    leader: record.leader,
                    timestamp: record.timestamp,
                    certificates,
                })
            })
            .collect()
    }

    /// The consumer executed commits up to `index`: storage older than both that and the
    /// collection round may go.
    pub fn prune_executed(&mut self, index: u64) -> DagResult<()> {
        let keep_from_commit = index + 1;
        let lowest_needed = self
            .store
            .commits_from(keep_from_commit)?
            .iter()
            .map(|r| r.lowest_round)
            .min()
            .unwrap_or(self.dag.gc_round());
        self.store
            .prune(keep_from_commit, lowest_needed.min(self.dag.gc_round()))
    }
}
