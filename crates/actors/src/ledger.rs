//! The Ledger actor: executes committed batches, in order, on the node's redb ledger and tells
//! its subscribers (trainer, evaluator, data provider, the devnet's monitor) that the state moved.
//!
//! A validator executes what its own Coordinator commits. A follower (a node that is not a
//! validator, or one catching up) asks the validators for committed batches and executes one
//! only when validators holding at least the validity threshold of stake (f + 1: at least one of
//! them honest) sent the identical batch. Peers are authenticated by the transport (a validator's
//! peer id is its consensus key), so an answer cannot be forged, only withheld or contradicted.
//!
//! Reads never go through the mailbox: the ledger is shared behind a read-write lock.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::mpsc;
use trainmesh_contracts::TimestampMs;
use trainmesh_dag::{AuthorityIndex, Committee, StakeAggregator};
use trainmesh_ledger::beacon::{BeaconGate, BeaconKey, BeaconShare, PendingBatch};
use trainmesh_ledger::{Batch, Ledger};

use crate::consensus::PeerBook;
use crate::coordinator::{synced_batch, Committed};
use crate::metrics::NodeMetrics;
use crate::network::NetworkCommand;
use crate::wire::{MeshMessage, SyncedBatch, SYNC_BATCHES_MAX};

pub type SharedLedger = Arc<RwLock<Ledger>>;

/// How often a follower asks for new batches.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// Indices ahead of the next one a follower keeps votes for.
pub const SYNC_WINDOW: u64 = 4 * SYNC_BATCHES_MAX as u64;

/// The ledger executed a batch.
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct LedgerAdvanced {
    pub height: u64,
    pub next_index: u64,
    pub state_root: [u8; 32],
    pub timestamp_ms: u64,
}

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<LedgerAdvanced>);

/// Batches a validator sent to this follower.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SyncResponseFrom {
    pub from: AuthorityIndex,
    pub batches: Vec<SyncedBatch>,
}

enum Mode {
    Validator,
    Follower {
        committee: Committee,
        peers: PeerBook,
        votes: BTreeMap<u64, BTreeMap<[u8; 32], (SyncedBatch, StakeAggregator)>>,
        last_request: Option<Instant>,
    },
}

pub struct LedgerActor {
    ledger: SharedLedger,
    /// Committed batches wait here until the beacon shares committed after them make their seed.
    gate: BeaconGate,
    mode: Mode,
    subscribers: Vec<Recipient<LedgerAdvanced>>,
    net: mpsc::Sender<NetworkCommand>,
    metrics: NodeMetrics,
}

impl std::fmt::Debug for LedgerActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerActor").finish_non_exhaustive()
    }
}

impl LedgerActor {
    /// The ledger of a validator: it executes what the local Coordinator commits.
    pub fn validator(
        ledger: SharedLedger,
        beacon: BeaconKey,
        net: mpsc::Sender<NetworkCommand>,
        metrics: NodeMetrics,
    ) -> Self {
        let next = ledger.read().expect("ledger lock").next_index();
        LedgerActor {
            ledger,
            gate: BeaconGate::new(beacon, next),
            mode: Mode::Validator,
            subscribers: Vec::new(),
            net,
            metrics,
        }
    }

    /// The ledger of a follower: it syncs from the committee.
    pub fn follower(
        ledger: SharedLedger,
        beacon: BeaconKey,
        committee: Committee,
        net: mpsc::Sender<NetworkCommand>,
        metrics: NodeMetrics,
    ) -> Result<Self, crate::network::NetworkError> {
        let peers = PeerBook::new(&committee)?;
        let next = ledger.read().expect("ledger lock").next_index();
        Ok(LedgerActor {
            ledger,
            gate: BeaconGate::new(beacon, next),
            mode: Mode::Follower {
                committee,
                peers,
                votes: BTreeMap::new(),
                last_request: None,
            },
            subscribers: Vec::new(),
            net,
            metrics,
        })
    }

    /// Passes a committed batch through the beacon gate and executes whatever that makes ready.
    fn admit(&mut self, batch: SyncedBatch, ctx: &mut Context<Self>) {
        match self.gate.push(pending(batch)) {
            Ok(ready) => {
                for b in ready {
                    self.execute(b, ctx);
                }
            }
            Err(e) => tracing::error!(error = %e, "commit out of order; ignored until replayed"),
        }
        self.metrics.beacon_waiting.set(self.gate.waiting() as i64);
    }

    fn execute(&mut self, batch: Batch, ctx: &mut Context<Self>) {
        let started = Instant::now();
        let outcome = {
            let mut ledger = self.ledger.write().expect("ledger lock");
            if batch.index < ledger.next_index() {
                return;
            }
            ledger.execute(&batch)
        };
        match outcome {
            Ok(outcome) => {
                self.metrics
                    .batch_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.ledger_height.set(outcome.height as i64);
                self.record_jobs();
                let ok = outcome.accepted() as u64;
                let total = outcome.receipts.len() as u64;
                self.metrics
                    .ledger_transactions
                    .with_label_values(&["accepted"])
                    .inc_by(ok);
                self.metrics
                    .ledger_transactions
                    .with_label_values(&["rejected"])
                    .inc_by(total - ok);
                for r in &outcome.receipts {
                    if let Err(e) = &r.outcome {
                        tracing::debug!(code = %e.code, message = %e.message, "transaction rejected");
                    }
                }
                let event = LedgerAdvanced {
                    height: outcome.height,
                    next_index: batch.index + 1,
                    state_root: outcome.state_root,
                    timestamp_ms: batch.timestamp.0,
                };
                self.subscribers.retain(|s| s.connected());
                for s in &self.subscribers {
                    s.do_send(event);
                }
            }
            Err(e) => {
                tracing::error!(index = batch.index, error = %e, "ledger stopped: batch failed");
                ctx.stop();
                System::current().stop_with_code(70);
            }
        }
    }

    fn record_jobs(&self) {
        use trainmesh_contracts::keys;
        let l = self.ledger.read().expect("ledger lock");
        let active = l
            .read::<Vec<trainmesh_contracts::JobId>>(keys::ACTIVE_JOBS)
            .ok()
            .flatten()
            .map(|a| a.len() as i64)
            .unwrap_or(0);
        if let Ok(Some(c)) = l.read::<trainmesh_contracts::counters::Counters>(keys::COUNTERS) {
            self.metrics
                .jobs
                .with_label_values(&["running"])
                .set(active);
            self.metrics
                .jobs
                .with_label_values(&["finished"])
                .set(c.jobs as i64 - active);
            self.metrics.certificates.set(c.certificates as i64);
        }
    }

    fn request_sync(&mut self) {
        let next = self.gate.expected();
        if let Mode::Follower {
            peers,
            committee,
            last_request,
            ..
        } = &mut self.mode
        {
            *last_request = Some(Instant::now());
            let bytes = MeshMessage::SyncRequest {
                from: next,
                max: SYNC_BATCHES_MAX,
            }
            .encode();
            for a in committee.indices() {
                let _ = self.net.try_send(NetworkCommand::SendTo {
                    peer: peers.peer(a),
                    bytes: bytes.clone(),
                });
            }
        }
    }
}

fn pending(b: SyncedBatch) -> PendingBatch {
    PendingBatch {
        index: b.index,
        timestamp: TimestampMs(b.timestamp_ms),
        transactions: b.transactions.into_iter().map(Bytes::from).collect(),
        shares: b
            .beacon_shares
            .iter()
            .filter_map(|(author, bytes)| Some((*author, BeaconShare::decode(bytes)?)))
            .collect(),
    }
}

impl Actor for LedgerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4_096);
        if matches!(self.mode, Mode::Follower { .. }) {
            ctx.run_interval(SYNC_INTERVAL, |act, _| act.request_sync());
        }
    }
}

impl Handler<Subscribe> for LedgerActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        self.subscribers.push(msg.0);
    }
}

impl Handler<Committed> for LedgerActor {
    type Result = ();

    fn handle(&mut self, msg: Committed, ctx: &mut Context<Self>) {
        self.admit(synced_batch(&msg.0), ctx);
    }
}

impl Handler<SyncResponseFrom> for LedgerActor {
    type Result = ();

    fn handle(&mut self, msg: SyncResponseFrom, ctx: &mut Context<Self>) {
        let full = msg.batches.len() as u32 >= SYNC_BATCHES_MAX;
        let mut ready = Vec::new();
        {
            let Mode::Follower {
                committee, votes, ..
            } = &mut self.mode
            else {
                return;
            };
            let mut next = self.gate.expected();
            for b in msg.batches {
                if b.index < next || b.index >= next + SYNC_WINDOW {
                    continue;
                }
                let digest = b.digest();
                let entry = votes
                    .entry(b.index)
                    .or_default()
                    .entry(digest)
                    .or_insert_with(|| (b, StakeAggregator::new()));
                entry.1.add(msg.from, committee);
            }
            // Execute every batch, in order, that enough stake vouches for.
            while let Some(candidates) = votes.get(&next) {
                let Some((batch, _)) = candidates
                    .values()
                    .find(|(_, s)| s.reached(committee.validity_threshold()))
                else {
                    break;
                };
                ready.push(batch.clone());
                votes.remove(&next);
                next += 1;
            }
            votes.retain(|i, _| *i >= next);
        }
        for b in ready {
            self.admit(b, ctx);
        }
        if full {
            self.request_sync();
        }
    }
}
