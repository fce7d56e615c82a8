//! The SyncServer actor: answers peers' sync requests from the DAG store, on its own thread,
//! never on the consensus actor's.
//!
//! Two kinds of request: a follower's ledger sync (committed batches from an index) and a
//! validator's DAG sync (certificates by digest, or the rounds after one). Every answer is one
//! bounded page: at most a count and a byte size, read by index or round range so that no
//! request walks the store to its tip; the requester asks for the next page from where this one
//! ended. Each peer draws on a token bucket of bytes ([`MeshConfig::sync_bytes_per_second`]), every
//! request costing at least [`MeshConfig::sync_request_cost_bytes`]; a peer over its rate gets no
//! answer (followers poll again, the DAG synchronizer asks the next peer).
//!
//! redb serves readers beside its writer, so the store the core writes is read here through a
//! [`RedbReader`] of the same database.

use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use libp2p::PeerId;
use tokio::sync::mpsc;
use trainmesh_dag::encoding::encode;
use trainmesh_dag::{
    AuthorityIndex, Certificate, CommittedSubDag, ConsensusMessage, CoreConfig, DagError,
    DagResult, RedbReader, Round, SyncRequest, SyncResponse,
};

use crate::coordinator::synced_batch;
use crate::mesh_config::MeshConfig;
use crate::metrics::NodeMetrics;
use crate::network::NetworkCommand;
use crate::rate::RateLimiter;
use crate::wire::{self, MeshMessage, SyncedBatch, SYNC_BATCHES_MAX, SYNC_BYTES_MAX};

/// Requests waiting for the server; beyond, they are refused (and counted).
pub const SYNC_QUEUE_MAX: usize = 256;
/// Peers whose rate is tracked at once.
const PEERS_TRACKED_MAX: usize = 4_096;

/// A follower asks for committed batches from index `from`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ServeSync {
    pub peer: PeerId,
    pub from: u64,
    pub max: u32,
}

/// A validator asks for certificates.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ServeCertificates {
    pub peer: PeerId,
    pub request: SyncRequest,
}

/// At most `max` committed batches from `from` on, in order, at most `bytes_max` bytes of them
/// (the first always, so a page is never empty while there is a commit to give).
pub fn ledger_page(
    reader: &RedbReader,
    from: u64,
    max: usize,
    bytes_max: usize,
) -> DagResult<Vec<SyncedBatch>> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for record in reader.commits_page(from, max)? {
        let certificates = record
            .certificates
            .iter()
            .map(|d| {
                reader
                    .certificate(d)?
                    .ok_or_else(|| DagError::CorruptStore {
                        reason: format!("commit {} names missing certificate {d}", record.index),
                    })
            })
            .collect::<DagResult<Vec<_>>>()?;
        let batch = synced_batch(&CommittedSubDag {
            index: record.index,
            leader: record.leader,
            timestamp: record.timestamp,
            certificates,
        });
        bytes += batch.encoded_len();
        if bytes > bytes_max && !out.is_empty() {
            break;
        }
        out.push(batch);
    }
    Ok(out)
}

/// The certificates a DAG sync request asks for, within the core's response limits and
/// `bytes_max`, lowest rounds first (what `Core::handle_sync_request` answers, read by range).
pub fn certificates_page(
    reader: &RedbReader,
    request: &SyncRequest,
    limits: &CoreConfig,
    bytes_max: usize,
) -> DagResult<Vec<Certificate>> {
    let count_max = limits.sync_response_certificates_max;
    let bytes_max = bytes_max.min(limits.sync_response_bytes_max);
    match request {
        SyncRequest::Certificates { digests } => {
            let mut out = Vec::new();
            let mut bytes = 0;
            for d in digests.iter().take(limits.sync_digests_max) {
                let Some(c) = reader.certificate(d)? else {
                    continue;
                };
                if c.round() == Round::GENESIS {
                    continue;
                }
                bytes += encode(&c).len();
                if out.len() >= count_max || (bytes > bytes_max && !out.is_empty()) {
                    break;
                }
                out.push(c);
            }
            Ok(out)
        }
        SyncRequest::Rounds { round, author } => {
            if *round > Round::MAX {
                return Ok(Vec::new());
            }
            let (first, author) = if *round < Round(1) {
                (Round(1), AuthorityIndex(0))
            } else {
                (*round, *author)
            };
            let last = first.saturating_add(limits.sync_rounds_max.saturating_sub(1));
            reader.certificates_in_rounds((first, author), last, count_max, bytes_max)
        }
    }
}

/// Serves sync requests from a reader of the DAG store.
pub struct SyncServer {
    reader: RedbReader,
    limits: CoreConfig,
    rates: RateLimiter<PeerId>,
    request_cost: u64,
    net: mpsc::Sender<NetworkCommand>,
    metrics: NodeMetrics,
}

impl std::fmt::Debug for SyncServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncServer").finish_non_exhaustive()
    }
}

impl SyncServer {
    pub fn new(
        reader: RedbReader,
        limits: CoreConfig,
        mesh: &MeshConfig,
        net: mpsc::Sender<NetworkCommand>,
        metrics: NodeMetrics,
    ) -> Self {
        SyncServer {
            reader,
            limits,
            rates: RateLimiter::new(
                mesh.sync_burst_bytes,
                mesh.sync_bytes_per_second,
                PEERS_TRACKED_MAX,
            ),
            request_cost: mesh.sync_request_cost_bytes.max(1),
            net,
            metrics,
        }
    }

    /// The bytes `peer` may be sent now, or `None` (counted) when it is over its rate.
    fn budget(&mut self, peer: &PeerId, now: Instant) -> Option<usize> {
        let available = self.rates.bucket(peer, now).map(|b| b.available(now));
        match available {
            Some(a) if a >= self.request_cost => Some(a as usize),
            _ => {
                self.metrics.sync_throttled.inc();
                None
            }
        }
    }

    fn reply(&mut self, peer: PeerId, bytes: Bytes, kind: &str, now: Instant) {
        let cost = (bytes.len() as u64).max(self.request_cost);
        if let Some(b) = self.rates.bucket(&peer, now) {
            b.spend(cost, now);
        }
        self.metrics.sync_served.with_label_values(&[kind]).inc();
        self.metrics.bytes_out.inc_by(bytes.len() as u64);
        if self
            .net
            .try_send(NetworkCommand::SendTo { peer, bytes })
            .is_err()
        {
            self.metrics.messages_dropped.inc();
        }
    }
}

impl Actor for SyncServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(SYNC_QUEUE_MAX);
    }
}

impl Handler<ServeSync> for SyncServer {
    type Result = ();

    fn handle(&mut self, msg: ServeSync, _: &mut Context<Self>) {
        let now = Instant::now();
        let Some(budget) = self.budget(&msg.peer, now) else {
            return;
        };
        let max = msg.max.clamp(1, SYNC_BATCHES_MAX) as usize;
        match ledger_page(&self.reader, msg.from, max, budget.min(SYNC_BYTES_MAX)) {
            Ok(batches) => {
                let bytes = MeshMessage::SyncResponse { batches }.encode();
                self.reply(msg.peer, bytes, "ledger", now);
            }
            Err(e) => tracing::warn!(error = %e, "cannot serve ledger sync"),
        }
    }
}

impl Handler<ServeCertificates> for SyncServer {
    type Result = ();

    fn handle(&mut self, msg: ServeCertificates, _: &mut Context<Self>) {
        let now = Instant::now();
        let Some(budget) = self.budget(&msg.peer, now) else {
            return;
        };
        let rounds_from = match &msg.request {
            SyncRequest::Rounds { round, author } => Some((*round, *author)),
            SyncRequest::Certificates { .. } => None,
        };
        match certificates_page(&self.reader, &msg.request, &self.limits, budget) {
            // A request by digest that finds nothing gets no reply; a page always gets one (empty
            // when there is nothing more), so the requester knows it has caught up.
            Ok(certificates) if certificates.is_empty() && rounds_from.is_none() => {}
            Ok(certificates) => {
                let message = ConsensusMessage::SyncResponse(SyncResponse {
                    certificates,
                    rounds_from,
                });
                let bytes = wire::consensus_frame(&message);
                self.reply(msg.peer, bytes, "certificates", now);
            }
            Err(e) => tracing::warn!(error = %e, "cannot serve DAG sync"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trainmesh_dag::store::{CommitRecord, StoreBatch};
    use trainmesh_dag::test_dag::{authority, DagBuilder, TestCommittee};
    use trainmesh_dag::{ConsensusStore, RedbStore, TimestampMs};

    const ROUNDS: u64 = 30;

    /// A store holding a 4-authority DAG of 30 full rounds, one commit per round (commit `i`
    /// holds the four certificates of round `i + 1`).
    fn store(dir: &std::path::Path) -> (RedbStore, Vec<Certificate>) {
        let committee = TestCommittee::new(4);
        let text: String = (1..=ROUNDS).map(|r| format!("{r}: * -> *\n")).collect();
        let dag = DagBuilder::parse(&committee, &text);
        let mut store = RedbStore::open(dir.join("dag.redb")).unwrap();
        let commits = (1..=ROUNDS)
            .map(|r| CommitRecord {
                index: r - 1,
                leader: dag.certificate(authority('A'), Round(r)).reference(),
                timestamp: TimestampMs(r * 100),
                certificates: "ABCD"
                    .chars()
                    .map(|a| dag.certificate(authority(a), Round(r)).digest())
                    .collect(),
                lowest_round: Round(r),
            })
            .collect();
        store
            .write(StoreBatch {
                certificates: dag.certificates(),
                commits,
                ..StoreBatch::default()
            })
            .unwrap();
        (store, dag.certificates())
    }

    #[test]
    fn ledger_pages_are_bounded_by_count_and_bytes_and_page_by_index() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store(dir.path());
        let reader = store.reader();
        let page = ledger_page(&reader, 0, 10, usize::MAX).unwrap();
        assert_eq!(
            page.iter().map(|b| b.index).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(page[3].transactions.len(), 4);
        assert_eq!(ledger_page(&reader, 25, 64, usize::MAX).unwrap().len(), 5);
        assert!(ledger_page(&reader, ROUNDS, 64, usize::MAX)
            .unwrap()
            .is_empty());
        // A byte bound under one batch still gives one; two batches' worth gives two.
        let one = page[0].encoded_len();
        assert_eq!(ledger_page(&reader, 0, 64, 1).unwrap().len(), 1);
        assert_eq!(ledger_page(&reader, 0, 64, 2 * one).unwrap().len(), 2);
        // Paging from where the last page ended gives the whole sequence, once, in order.
        let mut all = Vec::new();
        loop {
            let next = all.len() as u64;
            let page = ledger_page(&reader, next, 7, 3 * one).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 3);
            all.extend(page);
        }
        assert_eq!(
            all.iter().map(|b| b.index).collect::<Vec<_>>(),
            (0..ROUNDS).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_rounds_request_from_genesis_reads_one_bounded_page() {
        let dir = tempfile::tempdir().unwrap();
        let (store, certificates) = store(dir.path());
        let reader = store.reader();
        let limits = CoreConfig {
            sync_rounds_max: 5,
            ..CoreConfig::default()
        };
        let request = SyncRequest::Rounds {
            round: Round(0),
            author: AuthorityIndex(0),
        };
        let page = certificates_page(&reader, &request, &limits, usize::MAX).unwrap();
        assert_eq!(page, certificates[..20].to_vec(), "rounds 1 to 5, in order");
        let few = CoreConfig {
            sync_response_certificates_max: 6,
            ..limits.clone()
        };
        let page = certificates_page(&reader, &request, &few, usize::MAX).unwrap();
        assert_eq!(page, certificates[..6].to_vec());
        let one = encode(&certificates[0]).len();
        let page = certificates_page(&reader, &request, &limits, 3 * one).unwrap();
        assert_eq!(page, certificates[..3].to_vec());
        // A page may start inside a round: just after the last certificate received.
        let request = SyncRequest::Rounds {
            round: Round(2),
            author: AuthorityIndex(2),
        };
        let page = certificates_page(&reader, &request, &limits, usize::MAX).unwrap();
        assert_eq!(
            page,
            certificates[6..24].to_vec(),
            "C2 to the end of round 6"
        );
        let request = SyncRequest::Rounds {
            round: Round(28),
            author: AuthorityIndex(0),
        };
        let page = certificates_page(&reader, &request, &limits, usize::MAX).unwrap();
        assert_eq!(page, certificates[108..].to_vec());
        let far = SyncRequest::Rounds {
            round: Round(u64::MAX),
            author: AuthorityIndex(u32::MAX),
        };
        assert!(certificates_page(&reader, &far, &limits, usize::MAX)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn certificates_by_digest_skip_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (store, certificates) = store(dir.path());
        let reader = store.reader();
        let digests = vec![
            certificates[5].digest(),
            trainmesh_dag::Digest([9; 32]),
            certificates[1].digest(),
        ];
        let request = SyncRequest::Certificates { digests };
        let page =
            certificates_page(&reader, &request, &CoreConfig::default(), usize::MAX).unwrap();
        assert_eq!(page, vec![certificates[5].clone(), certificates[1].clone()]);
    }
}
