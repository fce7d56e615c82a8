//! Consensus benchmark: N validators in one process, each on its own OS thread owning a
//! `Core` over the store chosen with `--store` (`mem`: `MemStore`; `redb`: a `RedbStore` in a
//! temporary directory, one fsync'd write transaction per write batch), exchanging real, signed,
//! encoded messages.
//!
//! What it does NOT pay, so its figures are an upper bound for a deployment:
//! - no network: validators talk over channels in one process, so there is no bandwidth limit,
//!   no round-trip time and no packet loss other than a full inbox;
//! - no fsync unless `--store redb` is chosen (`mem` keeps everything in memory).
//!
//! What it measures, as Narwhal's local benchmark does:
//! - committed tx/s and MB/s: transactions in every certificate committed at validator 0
//!   (Bullshark commits the same sequence everywhere, so validator 0 sees every commit);
//! - certificates/s committed, commits and rounds reached;
//! - commit latency: at the validator a transaction was submitted to, the time of the
//!   `Action::Commit` that carries it minus its submission time (every `--sample-every`-th
//!   transaction the mempool accepted is sampled), reported as p50/p99. Nothing is censored:
//!   when the load stops the validators keep running without new load (the drain) until every
//!   sampled transaction committed or `--drain-seconds` passed; a sample still uncommitted then
//!   counts with latency = end of the drain − submission (`in_flight_at_end`);
//! - agreement: every validator's whole committed sequence (per commit: index, leader digest
//!   and certificate digests, hashed) is compared with every other's; each pair must agree on
//!   their common prefix. A disagreement makes the process exit non-zero;
//! - transactions refused by backpressure: client bursts refused by a full client channel, and
//!   bursts the core refused with `MempoolFull`;
//! - peak RSS (VmHWM) and the CPU time of validator and client threads.
//!
//! A warm-up at the start (by default the larger of 1 s and 10% of the run) is excluded from
//! every rate and latency: only commits that happen after it, and latencies of transactions
//! submitted after it, are counted.
//!
//! Everything a real deployment pays per message is paid here: each message is encoded once
//! with `encoding::encode` (a broadcast is encoded once and the same `Bytes` handed to every
//! recipient), each recipient decodes it with `encoding::decode`, verifies it with its own
//! `Validator::verify_message` (ed25519 signatures) and feeds `Core::handle_message`. Only the
//! network is missing: validators talk over bounded crossbeam channels (`--inbox-messages-max`)
//! behind a small [`Transport`] trait, so a transport over real sockets (libp2p, one process per
//! validator) can replace [`ChannelTransport`] without touching the validator loop. A message
//! for a full inbox is dropped and counted, as a lossy network would (the core resends and
//! fetches what it misses); it never blocks the sender, so validators cannot deadlock.
//!
//! Group commit: each validator runs its core with deferred persistence
//! (`Core::set_deferred_flush`): it takes whatever inputs are already waiting (up to
//! `--group-inputs`, without waiting for more), handles them, writes their state with one
//! `Core::flush` — one fsync'd transaction with redb — and only then sends their messages and
//! reports their commits. `--group-inputs 1` writes once per input.
//!
//! Clients: one thread per validator submits `--tx-size`-byte transactions at `--rate / N`
//! tx/s in bursts every `--burst-interval-ms`, through a bounded channel
//! (`--client-bursts-max`). A transaction starts with its submission time in microseconds
//! since the start (u64 LE) and a sequence number (u64 LE); the rest is filler. The
//! transactions of one burst share one buffer.
//!
//! Run (release; the last line of stdout is one JSON object with the results):
//!
//! ```text
//! cargo run --release -p trainmesh-dag --example bench -- \
//!     --validators 4 --tx-size 512 --rate 50000 --seconds 10
//! ```
//!
//! Per-second progress goes to stderr; the summary and the JSON go to stdout. Besides the
//! two tuning flags of the header (`--header-bytes`, `--max-header-delay-ms`), the core runs
//! with `CoreConfig::default()`; `--leader-timeout-ms` overrides Bullshark's leader timeout,
//! which bounds the stall when a leader's vertex never comes.
//!
//! The wall time split by section (decode, verify, core, ...) includes time spent waiting for a
//! CPU when validator threads outnumber cores; use `perf` for where the CPU goes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use crossbeam_channel::{bounded, Receiver, Select, SelectTimeoutError, Sender, TrySendError};
use trainmesh_dag::encoding::{decode, encode, MESSAGE_BYTES_MAX};
use trainmesh_dag::{
    Action, Authority, AuthorityIndex, CommittedSubDag, Committee, ConsensusMessage,
    ConsensusStore, Core, CoreConfig, CoreStatus, DagError, Epoch, KeyPair, MemStore, RedbStore,
    TimestampMs, Transaction, Validator,
};

/// The longest a validator waits without looking at the stop flag.
const POLL_MAX: Duration = Duration::from_millis(20);

#[derive(Parser, Debug, Clone)]
#[command(about = "Narwhal/Bullshark consensus benchmark: N validators in one process")]
struct Args {
    /// Number of validators (equal stake), one thread each.
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Bytes per transaction (at least 16: submission time and sequence number).
    #[arg(long, default_value_t = 512)]
    tx_size: usize,
    /// Total input rate over all clients, transactions per second.
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Duration of the run in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Warm-up excluded from the measurements, seconds (default: max(1 s, 10% of the run)).
    #[arg(long)]
    warmup: Option<f64>,
    /// `CoreConfig::header_payload_bytes_max`: a header is proposed once this much is waiting.
    #[arg(long, default_value_t = 500_000)]
    header_bytes: usize,
    /// `CoreConfig::max_header_delay_ms`: a header is proposed at the latest after this delay.
    #[arg(long, default_value_t = 50)]
    max_header_delay_ms: u64,
    /// `CoreConfig::leader_timeout_ms`: Bullshark's wait for the leader, or for votes on it
    /// (default: the core's default).
    #[arg(long)]
    leader_timeout_ms: Option<u64>,
    /// Clients submit a burst this often.
    #[arg(long, default_value_t = 5)]
    burst_interval_ms: u64,
    /// Record the commit latency of every n-th transaction.
    #[arg(long, default_value_t = 16)]
    sample_every: u64,
    /// Bound of each validator's inbox of peer messages; a message for a full inbox is dropped.
    #[arg(long, default_value_t = 1_000)]
    inbox_messages_max: usize,
    /// Bound of each client's channel, in bursts; a burst for a full channel is refused.
    #[arg(long, default_value_t = 64)]
    client_bursts_max: usize,
    /// Where each validator persists: `mem` (no fsync) or `redb` (a temporary file, fsync per
    /// write batch).
    #[arg(long, value_enum, default_value_t = StoreKind::Mem)]
    store: StoreKind,
    /// Most inputs (peer messages, client bursts, a tick) a validator handles per store write.
    #[arg(long, default_value_t = 256)]
    group_inputs: usize,
    /// After the load stops, the longest wait for sampled transactions still in flight.
    #[arg(long, default_value_t = 10.0)]
    drain_seconds: f64,
    /// No per-second progress on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum StoreKind {
    Mem,
    Redb,
}

impl StoreKind {
    /// How the summary and the JSON name the store.
    fn label(self) -> &'static str {
        match self {
            StoreKind::Mem => "mem (no fsync)",
            StoreKind::Redb => "redb (fsync per write batch)",
        }
    }
}

// ------------------------------------------------------------------------------------------
// Clock.

/// The benchmark's clock: milliseconds (the core's `TimestampMs`) and microseconds since start.
#[derive(Clone, Copy, Debug)]
struct Clock {
    start: Instant,
}

impl Clock {
    fn now_ms(&self) -> TimestampMs {
        TimestampMs(self.start.elapsed().as_millis() as u64)
    }
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
    fn instant_of(&self, t: TimestampMs) -> Instant {
        self.start + Duration::from_millis(t.0)
    }
}

// ------------------------------------------------------------------------------------------
// Transport.

/// What a validator receives from outside: a peer's encoded consensus message, or a burst of
/// client transactions (over RPC in a node, over a channel here).
#[derive(Debug)]
enum Inbound {
    Message { from: AuthorityIndex, bytes: Bytes },
    Transactions(Vec<Transaction>),
}

#[derive(Debug)]
enum Received {
    Inbound(Inbound),
    Timeout,
    Closed,
}

/// How a validator reaches its peers. Messages are already encoded: one encoding per broadcast,
/// the same bytes for every recipient.
trait Transport {
    /// Sends to one peer; false when the message was dropped (inbox full or peer gone).
    fn send(&self, to: AuthorityIndex, bytes: Bytes) -> bool;
    /// Sends to every other validator; returns how many copies were dropped.
    fn broadcast(&self, bytes: Bytes) -> usize;
    /// The next peer message or client burst, waiting at most until `deadline`. Peer messages
    /// come first: consensus is never starved by clients.
    fn recv_until(&mut self, deadline: Instant) -> Received;
    /// A peer message or client burst already waiting, without waiting; peers first.
    fn try_recv(&mut self) -> Option<Inbound>;
    /// True once the clients finished and everything they sent was received.
    fn clients_done(&self) -> bool;
}

/// The in-process transport: one bounded crossbeam channel per validator inbox.
struct ChannelTransport {
    me: AuthorityIndex,
    /// Inboxes of every validator, by index (ours included, unused).
    peers: Vec<Sender<(AuthorityIndex, Bytes)>>,
    inbox: Receiver<(AuthorityIndex, Bytes)>,
    clients: Option<Receiver<Vec<Transaction>>>,
}

impl Transport for ChannelTransport {
    fn send(&self, to: AuthorityIndex, bytes: Bytes) -> bool {
        match self.peers.get(to.as_usize()) {
            Some(peer) if to != self.me => peer.try_send((self.me, bytes)).is_ok(),
            _ => false,
        }
    }

    fn broadcast(&self, bytes: Bytes) -> usize {
        let mut dropped = 0;
        for (i, peer) in self.peers.iter().enumerate() {
            if i != self.me.as_usize() && peer.try_send((self.me, bytes.clone())).is_err() {
                dropped += 1;
            }
        }
        dropped
    }

    fn recv_until(&mut self, deadline: Instant) -> Received {
        if let Ok((from, bytes)) = self.inbox.try_recv() {
            return Received::Inbound(Inbound::Message { from, bytes });
        }
        let Some(clients) = &self.clients else {
            return match self.inbox.recv_deadline(deadline) {
                Ok((from, bytes)) => Received::Inbound(Inbound::Message { from, bytes }),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => Received::Timeout,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Received::Closed,
            };
        };
        let mut select = Select::new();
        let inbox_op = select.recv(&self.inbox);
        select.recv(clients);
        let mut clients_done = false;
        let received = match select.select_deadline(deadline) {
            Err(SelectTimeoutError) => Received::Timeout,
            Ok(op) if op.index() == inbox_op => match op.recv(&self.inbox) {
                Ok((from, bytes)) => Received::Inbound(Inbound::Message { from, bytes }),
                Err(_) => Received::Closed,
            },
            Ok(op) => match op.recv(clients) {
                Ok(txs) => Received::Inbound(Inbound::Transactions(txs)),
                Err(_) => {
                    clients_done = true;
                    Received::Timeout
                }
            },
        };
        if clients_done {
            // The client finished: wait on peers alone from now on.
            self.clients = None;
        }
        received
    }

    fn try_recv(&mut self) -> Option<Inbound> {
        if let Ok((from, bytes)) = self.inbox.try_recv() {
            return Some(Inbound::Message { from, bytes });
        }
        match self.clients.as_ref()?.try_recv() {
            Ok(txs) => Some(Inbound::Transactions(txs)),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                self.clients = None;
                None
            }
        }
    }

    fn clients_done(&self) -> bool {
        self.clients.is_none()
    }
}

// ------------------------------------------------------------------------------------------
// Validator.

/// Wall time a validator thread spent in each part of its loop, nanoseconds.
#[derive(Clone, Debug, Default)]
struct TimeSplit {
    decode_ns: u64,
    verify_ns: u64,
    core_ns: u64,
    encode_ns: u64,
    transport_ns: u64,
    commit_ns: u64,
    flush_ns: u64,
    wait_ns: u64,
}

impl TimeSplit {
    fn add(&mut self, other: &TimeSplit) {
        self.decode_ns += other.decode_ns;
        self.verify_ns += other.verify_ns;
        self.core_ns += other.core_ns;
        self.encode_ns += other.encode_ns;
        self.transport_ns += other.transport_ns;
        self.commit_ns += other.commit_ns;
        self.flush_ns += other.flush_ns;
        self.wait_ns += other.wait_ns;
    }
}

/// What one validator thread measured.
#[derive(Debug, Default)]
struct ValidatorReport {
    index: usize,
    /// In the measurement window.
    commits: u64,
    committed_certificates: u64,
    committed_txs: u64,
    committed_bytes: u64,
    /// Over the whole run.
    commits_total: u64,
    own_committed_txs: u64,
    /// Commit latencies of the sampled transactions, those still in flight at the end of the
    /// drain included (measured to the end of the drain).
    latencies_us: Vec<u64>,
    /// Sampled transactions not committed by the end of the drain.
    in_flight_at_end: u64,
    submitted_txs: u64,
    /// Store writes (`Core::flush` calls with inputs handled) and the inputs they covered.
    flushes: u64,
    flushed_inputs: u64,
    mempool_rejected_txs: u64,
    reproposed_txs: u64,
    equivocations: u64,
    messages_in: u64,
    bytes_in: u64,
    messages_out: u64,
    bytes_out: u64,
    dropped_messages: u64,
    messages_by_kind: BTreeMap<&'static str, u64>,
    errors: BTreeMap<String, u64>,
    /// The hash of each commit (index, leader digest, certificate digests), by commit index:
    /// compared across validators at the end.
    sequence: Vec<[u8; 32]>,
    status: Option<CoreStatus>,
    time: TimeSplit,
    cpu_s: f64,
}

/// What every validator shares: the run's parameters.
#[derive(Clone)]
struct Shared {
    config: CoreConfig,
    committee: Committee,
    clock: Clock,
    warmup_us: u64,
    end_us: u64,
    sample_every: u64,
    group_inputs: usize,
    stop: Arc<AtomicBool>,
    /// Sampled transactions accepted by a mempool and not yet committed, over all validators.
    in_flight_samples: Arc<AtomicU64>,
    /// Validators whose clients finished and whose client channel is empty.
    clients_drained: Arc<AtomicU64>,
    /// The end of the drain (µs since start), set before `stop`.
    drain_end_us: Arc<AtomicU64>,
    /// Published by validator 0 for the progress line: transactions committed, highest round.
    progress_txs: Arc<AtomicU64>,
    progress_round: Arc<AtomicU64>,
}

/// One validator: its core, its validator of incoming messages and its transport.
struct Node<T: Transport, S: ConsensusStore> {
    me: AuthorityIndex,
    core: Core<S>,
    validator: Validator,
    transport: T,
    shared: Shared,
    report: ValidatorReport,
    /// Sampled transactions in this validator's mempool or DAG: sequence number → submission
    /// time (µs since start).
    in_flight: BTreeMap<u64, u64>,
    clients_drained: bool,
    /// The last commit index reported, and the one storage was last pruned to.
    executed: Option<u64>,
    pruned: Option<u64>,
}

/// Storage is pruned once this many commits were executed since the last pruning.
const PRUNE_EVERY_COMMITS: u64 = 8;

fn elapsed_ns(since: Instant) -> u64 {
    since.elapsed().as_nanos() as u64
}

/// The variant name of an error, for counting.
fn error_kind(e: &DagError) -> String {
    let debug = format!("{e:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("?")
        .to_string()
}

impl<T: Transport, S: ConsensusStore> Node<T, S> {
    fn start(index: usize, shared: Shared, transport: T, store: S) -> Result<Node<T, S>> {
        let me = AuthorityIndex(index as u32);
        let key = KeyPair::from_seed(index as u64);
        let now = shared.clock.now_ms();
        let (core, actions) = Core::new(
            shared.config.clone(),
            shared.committee.clone(),
            me,
            key,
            store,
            now,
        )
        .with_context(|| format!("starting validator {index}"))?;
        let validator = Validator::new(shared.committee.clone(), shared.config.clone());
        let mut node = Node {
            me,
            core,
            validator,
            transport,
            shared,
            report: ValidatorReport {
                index,
                ..ValidatorReport::default()
            },
            in_flight: BTreeMap::new(),
            clients_drained: false,
            executed: None,
            pruned: None,
        };
        // `Core::new` wrote what its actions depend on.
        node.execute(actions);
        node.core
            .set_deferred_flush(true)
            .context("deferring the core's writes")?;
        Ok(node)
    }

    fn run(mut self) -> ValidatorReport {
        let mut actions = Vec::new();
        let mut last_tick = None;
        while !self.shared.stop.load(Ordering::Relaxed) {
            if !self.clients_drained && self.transport.clients_done() {
                self.clients_drained = true;
                self.shared.clients_drained.fetch_add(1, Ordering::Relaxed);
            }
            let mut inputs = 0usize;
            match self.tick_or_wait(&mut last_tick, &mut actions) {
                Some(handled) => inputs += handled,
                None => break,
            }
            // The group: what is already waiting, without waiting for more.
            while inputs < self.shared.group_inputs.max(1) {
                let Some(inbound) = self.transport.try_recv() else {
                    break;
                };
                self.on_inbound(inbound, &mut actions);
                inputs += 1;
            }
            if inputs > 0 {
                self.flush_and_execute(inputs, &mut actions);
            }
        }
        self.count_in_flight_at_end();
        self.report.status = Some(self.core.status());
        self.report.cpu_s = thread_cpu_seconds().unwrap_or(0.0);
        self.report
    }

    /// Ticks the core when a deadline passed (at most once per millisecond), else waits for one
    /// input until the next deadline. Returns the inputs handled, `None` once the transport
    /// closed.
    fn tick_or_wait(
        &mut self,
        last_tick: &mut Option<TimestampMs>,
        actions: &mut Vec<Action>,
    ) -> Option<usize> {
        let clock = self.shared.clock;
        let now = clock.now_ms();
        let deadline = self.core.next_deadline();
        if deadline <= now && *last_tick != Some(now) {
            *last_tick = Some(now);
            let t = Instant::now();
            let result = self.core.tick(now);
            self.report.time.core_ns += elapsed_ns(t);
            self.collect(result, actions);
            return Some(1);
        }
        let wake = if deadline <= now {
            clock.instant_of(now.saturating_add_ms(1))
        } else {
            clock.instant_of(deadline)
        };
        let t = Instant::now();
        let received = self.transport.recv_until(wake.min(t + POLL_MAX));
        self.report.time.wait_ns += elapsed_ns(t);
        match received {
            Received::Inbound(inbound) => {
                self.on_inbound(inbound, actions);
                Some(1)
            }
            Received::Timeout => Some(0),
            Received::Closed => None,
        }
    }

    fn on_inbound(&mut self, inbound: Inbound, actions: &mut Vec<Action>) {
        match inbound {
            Inbound::Message { from, bytes } => self.on_message(from, bytes, actions),
            Inbound::Transactions(txs) => self.on_transactions(txs),
        }
    }

    /// Persists the group's state with one write, then — and only then — carries out its
    /// actions; prunes storage every few commits.
    fn flush_and_execute(&mut self, inputs: usize, actions: &mut Vec<Action>) {
        let t = Instant::now();
        let flushed = self.core.flush();
        self.report.time.flush_ns += elapsed_ns(t);
        self.report.flushes += 1;
        self.report.flushed_inputs += inputs as u64;
        if let Err(e) = flushed {
            // Nothing that depends on the lost write may leave.
            actions.clear();
            *self.report.errors.entry(error_kind(&e)).or_default() += 1;
            return;
        }
        self.execute(std::mem::take(actions));
        if let Some(index) = self.executed {
            let due = self.pruned.is_none_or(|p| index >= p + PRUNE_EVERY_COMMITS);
            if due {
                self.pruned = Some(index);
                if let Err(e) = self.core.prune_executed(index) {
                    *self.report.errors.entry(error_kind(&e)).or_default() += 1;
                }
            }
        }
    }

    /// Samples still uncommitted when the drain ended count with the drain's end as their
    /// commit time: a latency that is at least that long.
    fn count_in_flight_at_end(&mut self) {
        let end_us = self.shared.drain_end_us.load(Ordering::Relaxed);
        for submitted_us in std::mem::take(&mut self.in_flight).into_values() {
            self.report
                .latencies_us
                .push(end_us.saturating_sub(submitted_us));
            self.report.in_flight_at_end += 1;
        }
    }

    /// Remembers the sampled transactions of an accepted burst until they commit.
    fn track_samples(&mut self, txs: &[Transaction]) {
        for tx in txs {
            let Some((submitted_us, seq)) = tx_stamp(tx) else {
                continue;
            };
            if seq.is_multiple_of(self.shared.sample_every)
                && submitted_us >= self.shared.warmup_us
                && self.in_flight.insert(seq, submitted_us).is_none()
            {
                self.shared
                    .in_flight_samples
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn on_transactions(&mut self, txs: Vec<Transaction>) {
        let n = txs.len() as u64;
        let stamps = txs.clone();
        let t = Instant::now();
        let result = self.core.submit_transactions(txs);
        self.report.time.core_ns += elapsed_ns(t);
        match result {
            Ok(()) => {
                self.report.submitted_txs += n;
                self.track_samples(&stamps);
            }
            Err(DagError::MempoolFull { .. }) => self.report.mempool_rejected_txs += n,
            Err(e) => *self.report.errors.entry(error_kind(&e)).or_default() += 1,
        }
    }

    fn on_message(&mut self, from: AuthorityIndex, bytes: Bytes, actions: &mut Vec<Action>) {
        self.report.messages_in += 1;
        self.report.bytes_in += bytes.len() as u64;
        let t = Instant::now();
        let decoded = decode::<ConsensusMessage>(&bytes, MESSAGE_BYTES_MAX);
        self.report.time.decode_ns += elapsed_ns(t);
        drop(bytes);
        let message = match decoded {
            Ok(m) => m,
            Err(e) => {
                *self
                    .report
                    .errors
                    .entry(format!("decode: {e}"))
                    .or_default() += 1;
                return;
            }
        };
        *self
            .report
            .messages_by_kind
            .entry(message.kind())
            .or_default() += 1;
        let t = Instant::now();
        let verified = self.validator.verify_message(message);
        self.report.time.verify_ns += elapsed_ns(t);
        let verified = match verified {
            Ok(v) => v,
            Err(e) => {
                *self.report.errors.entry(error_kind(&e)).or_default() += 1;
                return;
            }
        };
        let t = Instant::now();
        let result = self
            .core
            .handle_message(from, verified, self.shared.clock.now_ms());
        self.report.time.core_ns += elapsed_ns(t);
        self.collect(result, actions);
    }

    /// Adds a core call's actions to the group's, to be carried out after the flush.
    fn collect(&mut self, result: Result<Vec<Action>, DagError>, actions: &mut Vec<Action>) {
        match result {
            Ok(more) => actions.extend(more),
            Err(e) => *self.report.errors.entry(error_kind(&e)).or_default() += 1,
        }
    }

    /// Carries out the core's actions in order.
    fn execute(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Broadcast(message) => {
                    let bytes = self.encode(&message);
                    let t = Instant::now();
                    let dropped = self.transport.broadcast(bytes.clone());
                    self.report.time.transport_ns += elapsed_ns(t);
                    let copies = self.shared.committee.size() as u64 - 1;
                    self.report.messages_out += copies;
                    self.report.bytes_out += copies * bytes.len() as u64;
                    self.report.dropped_messages += dropped as u64;
                }
                Action::Send { to, message } => {
                    let bytes = self.encode(&message);
                    self.report.messages_out += 1;
                    self.report.bytes_out += bytes.len() as u64;
                    let t = Instant::now();
                    if !self.transport.send(to, bytes) {
                        self.report.dropped_messages += 1;
                    }
                    self.report.time.transport_ns += elapsed_ns(t);
                }
                Action::Commit(sub_dag) => {
                    let t = Instant::now();
                    self.on_commit(sub_dag);
                    self.report.time.commit_ns += elapsed_ns(t);
                }
                Action::ReproposePayload(txs) => {
                    self.report.reproposed_txs += txs.len() as u64;
                    let n = txs.len() as u64;
                    if self.core.submit_transactions(txs).is_err() {
                        self.report.mempool_rejected_txs += n;
                    }
                }
                Action::EquivocationDetected(_) => self.report.equivocations += 1,
            }
        }
    }

    fn encode(&mut self, message: &ConsensusMessage) -> Bytes {
        let t = Instant::now();
        let bytes = Bytes::from(encode(message));
        self.report.time.encode_ns += elapsed_ns(t);
        bytes
    }

    fn on_commit(&mut self, sub_dag: CommittedSubDag) {
        let now_us = self.shared.clock.now_us();
        let in_window = now_us >= self.shared.warmup_us && now_us <= self.shared.end_us;
        let r = &mut self.report;
        if sub_dag.index != r.sequence.len() as u64 {
            *r.errors.entry("commit index gap".into()).or_default() += 1;
        }
        r.sequence.push(commit_hash(&sub_dag));
        r.commits_total += 1;
        let mut txs = 0u64;
        let mut bytes = 0u64;
        for certificate in &sub_dag.certificates {
            let payload = &certificate.header().payload;
            txs += payload.len() as u64;
            bytes += payload.iter().map(|t| t.len() as u64).sum::<u64>();
            if certificate.author() != self.me {
                continue;
            }
            r.own_committed_txs += payload.len() as u64;
            for tx in payload {
                let Some((_, seq)) = tx_stamp(tx) else {
                    continue;
                };
                if let Some(submitted_us) = self.in_flight.remove(&seq) {
                    r.latencies_us.push(now_us.saturating_sub(submitted_us));
                    self.shared
                        .in_flight_samples
                        .fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        if in_window {
            r.commits += 1;
            r.committed_certificates += sub_dag.certificates.len() as u64;
            r.committed_txs += txs;
            r.committed_bytes += bytes;
        }
        if self.me == AuthorityIndex(0) {
            self.shared.progress_txs.fetch_add(txs, Ordering::Relaxed);
            self.shared
                .progress_round
                .store(sub_dag.leader.round.0, Ordering::Relaxed);
        }
        self.executed = Some(sub_dag.index);
    }
}

/// What validators compare: one commit's index, leader and certificates, hashed.
fn commit_hash(sub_dag: &CommittedSubDag) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&sub_dag.index.to_le_bytes());
    hasher.update(sub_dag.leader.digest.as_bytes());
    for certificate in &sub_dag.certificates {
        hasher.update(certificate.digest().as_bytes());
    }
    *hasher.finalize().as_bytes()
}

/// The submission time (µs since start) and sequence number a client wrote into a transaction.
fn tx_stamp(tx: &[u8]) -> Option<(u64, u64)> {
    let time = u64::from_le_bytes(tx.get(0..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(tx.get(8..16)?.try_into().ok()?);
    Some((time, seq))
}

// ------------------------------------------------------------------------------------------
// Clients.

#[derive(Debug, Default)]
struct ClientReport {
    /// Transactions handed to the validator (whole run / measurement window).
    sent_txs: u64,
    sent_txs_window: u64,
    /// Transactions refused because the client channel was full.
    backpressured_txs: u64,
    cpu_s: f64,
}

struct Client {
    rate_per_s: f64,
    tx_size: usize,
    interval: Duration,
    clock: Clock,
    warmup_us: u64,
    end_us: u64,
    to_validator: Sender<Vec<Transaction>>,
}

impl Client {
    fn run(self) -> ClientReport {
        let mut report = ClientReport::default();
        let mut created = 0u64;
        let mut next = Instant::now();
        let filler: Vec<u8> = (0..self.tx_size).map(|i| (i * 31 + 7) as u8).collect();
        loop {
            next += self.interval;
            let now = Instant::now();
            if next > now {
                thread::sleep(next - now);
            } else {
                // Late (starved of CPU): the next burst catches up, no need to spin.
                next = now;
            }
            let now_us = self.clock.now_us();
            if now_us >= self.end_us {
                break;
            }
            // Catch up on the schedule: the rate holds even when a burst comes late.
            let due = (self.rate_per_s * now_us as f64 / 1e6) as u64;
            let n = due.saturating_sub(created) as usize;
            if n == 0 {
                continue;
            }
            let mut buffer = BytesMut::with_capacity(n * self.tx_size);
            for k in 0..n as u64 {
                buffer.put_u64_le(now_us);
                buffer.put_u64_le(created + k);
                buffer.put_slice(&filler[16..]);
            }
            let buffer = buffer.freeze();
            let txs: Vec<Transaction> = (0..n)
                .map(|k| buffer.slice(k * self.tx_size..(k + 1) * self.tx_size))
                .collect();
            created += n as u64;
            match self.to_validator.try_send(txs) {
                Ok(()) => {
                    report.sent_txs += n as u64;
                    if now_us >= self.warmup_us {
                        report.sent_txs_window += n as u64;
                    }
                }
                Err(TrySendError::Full(_)) => report.backpressured_txs += n as u64,
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
        report.cpu_s = thread_cpu_seconds().unwrap_or(0.0);
        report
    }
}

// ------------------------------------------------------------------------------------------
// Process statistics (Linux /proc).

/// User + system CPU time of the calling thread, from /proc/thread-self/stat.
fn thread_cpu_seconds() -> Option<f64> {
    cpu_seconds_of("/proc/thread-self/stat")
}

fn cpu_seconds_of(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

/// Peak resident set size in MiB (VmHWM).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

// ------------------------------------------------------------------------------------------
// Main.

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn percentile_ms(sorted_us: &[u64], pct: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() - 1) as f64 * pct / 100.0).round() as usize;
    sorted_us[i] as f64 / 1000.0
}

fn main() -> Result<()> {
    let args = Args::parse();
    let n = args.validators;
    if n == 0 {
        bail!("--validators must be at least 1");
    }
    if args.tx_size < 16 {
        bail!("--tx-size must be at least 16 bytes (submission time and sequence number)");
    }
    if args.seconds <= 0.0 || args.sample_every == 0 {
        bail!("--seconds and --sample-every must be positive");
    }
    let warmup_s = args.warmup.unwrap_or((args.seconds * 0.1).max(1.0));
    if warmup_s >= args.seconds {
        bail!(
            "the warm-up ({warmup_s} s) must be shorter than the run ({} s)",
            args.seconds
        );
    }

    let defaults = CoreConfig::default();
    let config = CoreConfig {
        header_payload_bytes_max: args.header_bytes,
        max_header_delay_ms: args.max_header_delay_ms,
        leader_timeout_ms: args.leader_timeout_ms.unwrap_or(defaults.leader_timeout_ms),
        ..defaults
    };
    let authorities = (0..n)
        .map(|i| Authority {
            public_key: KeyPair::from_seed(i as u64).public(),
            stake: 1,
        })
        .collect();
    let committee = Committee::new(Epoch(0), authorities).context("building the committee")?;

    let (inbox_senders, inbox_receivers): (Vec<_>, Vec<_>) =
        (0..n).map(|_| bounded(args.inbox_messages_max)).unzip();
    let clock = Clock {
        start: Instant::now(),
    };
    let warmup_us = (warmup_s * 1e6) as u64;
    let end_us = (args.seconds * 1e6) as u64;
    let shared = Shared {
        config: config.clone(),
        committee,
        clock,
        warmup_us,
        end_us,
        sample_every: args.sample_every,
        group_inputs: args.group_inputs,
        stop: Arc::new(AtomicBool::new(false)),
        in_flight_samples: Arc::new(AtomicU64::new(0)),
        clients_drained: Arc::new(AtomicU64::new(0)),
        drain_end_us: Arc::new(AtomicU64::new(0)),
        progress_txs: Arc::new(AtomicU64::new(0)),
        progress_round: Arc::new(AtomicU64::new(0)),
    };

    // Kept until the end of the run: the redb files live in it.
    let store_dir = tempfile::tempdir().context("creating the store directory")?;
    let mut validators = Vec::with_capacity(n);
    let mut clients = Vec::with_capacity(n);
    for (i, inbox) in inbox_receivers.into_iter().enumerate() {
        let (to_validator, from_clients) = bounded(args.client_bursts_max);
        let transport = ChannelTransport {
            me: AuthorityIndex(i as u32),
            peers: inbox_senders.clone(),
            inbox,
            clients: Some(from_clients),
        };
        let shared = shared.clone();
        validators.push(match args.store {
            StoreKind::Mem => spawn_validator(i, shared, transport, MemStore::new())?,
            StoreKind::Redb => {
                let path = store_dir.path().join(format!("validator-{i}.redb"));
                let store = RedbStore::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                spawn_validator(i, shared, transport, store)?
            }
        });
        let client = Client {
            rate_per_s: args.rate as f64 / n as f64,
            tx_size: args.tx_size,
            interval: Duration::from_millis(args.burst_interval_ms.max(1)),
            clock,
            warmup_us,
            end_us,
            to_validator,
        };
        clients.push(
            thread::Builder::new()
                .name(format!("client-{i}"))
                .spawn(move || client.run())?,
        );
    }
    drop(inbox_senders);

    // Progress once a second, then stop the validators at the end of the run.
    let mut last_txs = 0;
    let mut second = 1u64;
    loop {
        let until = clock.start + Duration::from_secs(second);
        let end = clock.start + Duration::from_micros(end_us);
        let now = Instant::now();
        if until >= end {
            thread::sleep(end.saturating_duration_since(now));
            break;
        }
        thread::sleep(until.saturating_duration_since(now));
        let txs = shared.progress_txs.load(Ordering::Relaxed);
        if !args.quiet {
            eprintln!(
                "[{second:>3} s] committed {:>9} tx/s, leader round {}",
                thousands(txs - last_txs),
                shared.progress_round.load(Ordering::Relaxed)
            );
        }
        last_txs = txs;
        second += 1;
    }
    let client_reports: Vec<ClientReport> = clients
        .into_iter()
        .map(|h| h.join().expect("client thread panicked"))
        .collect();
    let drain_s = drain(&shared, n, args.drain_seconds);
    shared.stop.store(true, Ordering::Relaxed);
    let mut reports = Vec::with_capacity(n);
    for h in validators {
        reports.push(h.join().expect("validator thread panicked")?);
    }
    let wall_s = clock.start.elapsed().as_secs_f64();
    let process_cpu_s = cpu_seconds_of("/proc/self/stat").unwrap_or(0.0);
    let peak_rss = peak_rss_mb().unwrap_or(f64::NAN);

    let run = RunFacts {
        leader_timeout_ms: config.leader_timeout_ms,
        drain_s,
        warmup_s,
        wall_s,
        process_cpu_s,
        peak_rss_mb: peak_rss,
    };
    let agreement = summarize(&args, &run, &reports, &client_reports);
    drop(store_dir);
    if !agreement.agree {
        bail!("the validators' committed sequences disagree");
    }
    Ok(())
}

fn spawn_validator<S: ConsensusStore + Send + 'static>(
    index: usize,
    shared: Shared,
    transport: ChannelTransport,
    store: S,
) -> Result<thread::JoinHandle<Result<ValidatorReport>>> {
    Ok(thread::Builder::new()
        .name(format!("validator-{index}"))
        .spawn(move || Node::start(index, shared, transport, store).map(Node::run))?)
}

/// Keeps the validators running without new load until every sampled transaction committed
/// (and every client burst was taken) or `drain_seconds` passed; records the drain's end.
/// Returns how long it lasted, seconds.
fn drain(shared: &Shared, validators: usize, drain_seconds: f64) -> f64 {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(drain_seconds.max(0.0));
    while Instant::now() < deadline {
        let drained = shared.clients_drained.load(Ordering::Relaxed) == validators as u64;
        if drained && shared.in_flight_samples.load(Ordering::Relaxed) == 0 {
            break;
        }
        thread::sleep(Duration::from_millis(2));
    }
    shared
        .drain_end_us
        .store(shared.clock.now_us(), Ordering::Relaxed);
    start.elapsed().as_secs_f64()
}

/// Whether every pair of validators agrees on the common prefix of their committed sequences.
#[derive(Debug)]
struct Agreement {
    agree: bool,
    /// The length of the shortest sequence: the prefix every pair was compared on (at least).
    commits_compared: usize,
    /// The length of the longest sequence.
    commits_max: usize,
}

fn check_agreement(reports: &[ValidatorReport]) -> Agreement {
    let mut agree = true;
    for (i, a) in reports.iter().enumerate() {
        for b in &reports[i + 1..] {
            let common = a.sequence.len().min(b.sequence.len());
            agree &= a.sequence[..common] == b.sequence[..common];
        }
    }
    let lengths = reports.iter().map(|r| r.sequence.len());
    Agreement {
        agree,
        commits_compared: lengths.clone().min().unwrap_or(0),
        commits_max: lengths.max().unwrap_or(0),
    }
}

/// Facts of the whole run, beside the per-thread reports.
#[derive(Debug)]
struct RunFacts {
    leader_timeout_ms: u64,
    drain_s: f64,
    warmup_s: f64,
    wall_s: f64,
    process_cpu_s: f64,
    peak_rss_mb: f64,
}

/// Prints the summary and, as the last line, the JSON object.
fn summarize(
    args: &Args,
    run: &RunFacts,
    reports: &[ValidatorReport],
    clients: &[ClientReport],
) -> Agreement {
    let RunFacts {
        leader_timeout_ms,
        drain_s,
        warmup_s,
        wall_s,
        process_cpu_s,
        peak_rss_mb,
    } = *run;
    let window_s = args.seconds - warmup_s;
    let v0 = &reports[0];
    let committed_tps = v0.committed_txs as f64 / window_s;
    let committed_mbps = v0.committed_bytes as f64 / window_s / 1e6;
    let certificates_per_s = v0.committed_certificates as f64 / window_s;
    let mut latencies: Vec<u64> = reports
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let p50 = percentile_ms(&latencies, 50.0);
    let p99 = percentile_ms(&latencies, 99.0);
    let mean = if latencies.is_empty() {
        f64::NAN
    } else {
        latencies.iter().sum::<u64>() as f64 / latencies.len() as f64 / 1000.0
    };
    let offered_tps = clients.iter().map(|c| c.sent_txs_window).sum::<u64>() as f64 / window_s;
    let backpressured: u64 = clients.iter().map(|c| c.backpressured_txs).sum();
    let mempool_rejected: u64 = reports.iter().map(|r| r.mempool_rejected_txs).sum();
    let reproposed: u64 = reports.iter().map(|r| r.reproposed_txs).sum();
    let dropped: u64 = reports.iter().map(|r| r.dropped_messages).sum();
    let equivocations: u64 = reports.iter().map(|r| r.equivocations).sum();
    let status = v0.status.clone().expect("set at the end of the run");
    let final_round = status.highest_round.0;
    let rounds_per_s = final_round as f64 / wall_s.max(args.seconds);

    let flushes: u64 = reports.iter().map(|r| r.flushes).sum();
    let flushed_inputs: u64 = reports.iter().map(|r| r.flushed_inputs).sum();
    let in_flight_at_end: u64 = reports.iter().map(|r| r.in_flight_at_end).sum();
    let agreement = check_agreement(reports);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    let mut time = TimeSplit::default();
    for r in reports {
        for (k, c) in &r.errors {
            *errors.entry(k.clone()).or_default() += c;
        }
        for (k, c) in &r.messages_by_kind {
            *kinds.entry(k).or_default() += c;
        }
        time.add(&r.time);
    }
    let validator_cpu_s: f64 = reports.iter().map(|r| r.cpu_s).sum();
    let client_cpu_s: f64 = clients.iter().map(|c| c.cpu_s).sum();
    let bytes_out: u64 = reports.iter().map(|r| r.bytes_out).sum();
    let messages_out: u64 = reports.iter().map(|r| r.messages_out).sum();

    println!();
    println!("-----------------------------------------");
    println!(" SUMMARY:");
    println!("-----------------------------------------");
    println!(" + CONFIG:");
    println!(" Store: {}", args.store.label());
    println!(
        " Group commit: up to {} inputs per store write",
        args.group_inputs
    );
    println!(
        " Not paid: no network bandwidth or round-trip limit (in-process channels){}",
        if args.store == StoreKind::Mem {
            ", no fsync (memory store)"
        } else {
            ""
        }
    );
    println!(
        " Committee size: {} validator(s), equal stake, one thread each",
        args.validators
    );
    println!(
        " Transport: in-process bounded channels ({} messages per inbox)",
        args.inbox_messages_max
    );
    println!(
        " Input rate: {} tx/s ({} clients, bursts every {} ms)",
        thousands(args.rate),
        args.validators,
        args.burst_interval_ms
    );
    println!(" Transaction size: {} B", args.tx_size);
    println!(
        " Execution time: {} s (first {warmup_s} s are warm-up, excluded)",
        args.seconds
    );
    println!(" Header size: {} B", thousands(args.header_bytes as u64));
    println!(" Max header delay: {} ms", args.max_header_delay_ms);
    println!(" Leader timeout: {leader_timeout_ms} ms");
    println!(
        " Latency sampling: every {}th transaction",
        args.sample_every
    );
    println!();
    println!(" + RESULTS:");
    println!(" Offered load: {} tx/s", thousands(offered_tps as u64));
    println!(" Committed TPS: {} tx/s", thousands(committed_tps as u64));
    println!(" Committed BPS: {committed_mbps:.1} MB/s");
    println!(
        " Certificates: {certificates_per_s:.1} /s ({} commits in window, {} in all)",
        v0.commits, v0.commits_total
    );
    println!(
        " Commit latency: p50 {p50:.0} ms, p99 {p99:.0} ms, mean {mean:.0} ms ({} samples, {in_flight_at_end} still in flight after a {drain_s:.1} s drain, counted to its end)",
        latencies.len()
    );
    println!(
        " Rejected txs: {} (client channel full) + {} (mempool full)",
        thousands(backpressured),
        thousands(mempool_rejected)
    );
    println!(" Reproposed txs: {}", thousands(reproposed));
    println!(
        " Store writes: {} ({:.1} inputs each on average)",
        thousands(flushes),
        flushed_inputs as f64 / flushes.max(1) as f64
    );
    println!(
        " Final round: {final_round} ({rounds_per_s:.1} rounds/s), last committed {}, gc {}",
        status.last_committed_round.0, status.gc_round.0
    );
    println!(
        " Agreement: {} (every pair of full committed sequences compared; shortest {} commits, longest {})",
        agreement.agree, agreement.commits_compared, agreement.commits_max
    );
    println!(
        " Messages sent: {} ({:.1} MB), dropped on full inbox: {dropped}",
        thousands(messages_out),
        bytes_out as f64 / 1e6
    );
    println!(" Messages received: {kinds:?}");
    println!(" Equivocations: {equivocations}; errors: {errors:?}");
    println!(" Peak RSS: {peak_rss_mb:.0} MB");
    for (r, c) in reports.iter().zip(clients) {
        let st = r.status.as_ref().expect("set at the end of the run");
        println!(
            "   validator {}: client sent {} tx (refused {}), mempool took {} (refused {}), own committed {} tx, received {} msgs ({:.0} MB), proposed {}, committed {}, cpu {:.1} s (client {:.1} s)",
            r.index,
            thousands(c.sent_txs),
            thousands(c.backpressured_txs),
            thousands(r.submitted_txs),
            thousands(r.mempool_rejected_txs),
            thousands(r.own_committed_txs),
            thousands(r.messages_in),
            r.bytes_in as f64 / 1e6,
            st.proposed_round.0,
            st.last_committed_round.0,
            r.cpu_s,
            c.cpu_s
        );
    }
    println!(" CPU: {process_cpu_s:.1} s process over {wall_s:.1} s wall ({:.0}% of one core); validators {validator_cpu_s:.1} s, clients {client_cpu_s:.1} s", 100.0 * process_cpu_s / wall_s);
    let s = |ns: u64| ns as f64 / 1e9;
    println!(
        " Validator wall time (incl. waiting for a CPU): core {:.2} s, decode {:.2} s, verify {:.2} s, encode {:.2} s, send {:.2} s, commit {:.2} s, store write {:.2} s, waiting {:.2} s",
        s(time.core_ns), s(time.decode_ns), s(time.verify_ns), s(time.encode_ns), s(time.transport_ns), s(time.commit_ns), s(time.flush_ns), s(time.wait_ns)
    );
    println!("-----------------------------------------");

    let json = serde_json::json!({
        "validators": args.validators,
        "store": args.store.label(),
        "network": "none (in-process channels: no bandwidth or round-trip limit)",
        "tx_size": args.tx_size,
        "input_rate": args.rate,
        "offered_tps": offered_tps.round(),
        "seconds": args.seconds,
        "warmup_seconds": warmup_s,
        "header_bytes": args.header_bytes,
        "max_header_delay_ms": args.max_header_delay_ms,
        "leader_timeout_ms": leader_timeout_ms,
        "committed_tps": committed_tps.round(),
        "committed_mb_per_s": (committed_mbps * 100.0).round() / 100.0,
        "certificates_per_s": (certificates_per_s * 10.0).round() / 10.0,
        "p50_commit_latency_ms": (p50 * 10.0).round() / 10.0,
        "p99_commit_latency_ms": (p99 * 10.0).round() / 10.0,
        "mean_commit_latency_ms": (mean * 10.0).round() / 10.0,
        "latency_samples": latencies.len(),
        "in_flight_at_end": in_flight_at_end,
        "drain_seconds": (drain_s * 100.0).round() / 100.0,
        "rejected_txs": backpressured + mempool_rejected,
        "backpressured_txs": backpressured,
        "mempool_rejected_txs": mempool_rejected,
        "reproposed_txs": reproposed,
        "group_inputs_max": args.group_inputs,
        "store_writes": flushes,
        "inputs_per_store_write": ((flushed_inputs as f64 / flushes.max(1) as f64) * 10.0).round() / 10.0,
        "dropped_messages": dropped,
        "commits": v0.commits,
        "rounds": final_round,
        "agreement": agreement.agree,
        "commits_compared": agreement.commits_compared,
        "peak_rss_mb": peak_rss_mb.round(),
        "process_cpu_seconds": (process_cpu_s * 10.0).round() / 10.0,
    });
    println!("{json}");
    agreement
}
