//! A seeded, deterministic simulator: many cores on one thread, virtual time, a network that
//! delays (with a long tail), drops, duplicates, reorders and partitions, crashes and restarts
//! from the store, per-node clocks, and Byzantine authorities that sign whatever they like.
//!
//! Every message goes through the real encoding and validation. The same seed gives the same run,
//! event for event; every failure names its seed and the command that replays it.
//!
//! Layout:
//! - [`config`]: [`SimConfig`], the Byzantine [`Behaviour`]s and the network faults;
//! - [`faults`]: the [`FaultKind`]s, the [`Mix`] a random run draws from, and how each kind is
//!   drawn from the seed (also a named scenario each: [`SimConfig::scenario`]);
//! - `network`: delays, loss, partitions, slow links, stragglers;
//! - `byzantine`: what each behaviour does to a faulty node's traffic — equivocation, forged
//!   parent references, far-future timestamps, withheld certificates, lying / silent / oversized
//!   sync replies and absurd sync requests, junk headers in and beyond the round window;
//! - `invariants`: what every honest log must satisfy.
//!
//! Clocks: node `i` reads `CLOCK_ORIGIN_MS + virtual time + offset_i`; honest offsets stay within
//! `±max_clock_skew_ms / 2`.
//!
//! Invariants, on every honest log (crashed-and-restarted nodes included, across restarts):
//! - agreement: any two honest logs are byte-identical up to the shorter one (encoded
//!   `CommittedSubDag`s);
//! - commit indices are consecutive from 0, and a certificate is committed at most once;
//! - causality: a certificate commits after its parents (or they are below the leader's
//!   collection floor), and every parent reference names the author and round of the
//!   certificate whose digest it carries;
//! - one certificate per slot across all honest nodes; each commit ends with its leader;
//! - commit timestamps never decrease, are at most the highest honest clock plus
//!   `max_clock_skew_ms`, and at least the lowest honest clock when the first honest header of the
//!   leader's parent round was proposed (no honest parent of the leader is older than that);
//! - identical replay of the committed sequence after every restart;
//! - liveness as a rate: with at most f faulty authorities, every honest running node commits at
//!   least [`SimConfig::min_commit_rate_per_s`] after healing (or after its last restart) plus
//!   [`SimConfig::catch_up_grace_ms`]; the rates are in [`SimReport`].
//!
//! A core that panics fails the run like a broken invariant.

mod byzantine;
pub mod config;
pub mod faults;
mod invariants;
mod network;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::committee::Committee;
use crate::core::{Action, Core};
use crate::encoding::{decode, encode, MESSAGE_BYTES_MAX};
use crate::error::DagError;
use crate::messages::{CommittedSubDag, ConsensusMessage};
use crate::store::MemStore;
use crate::test_dag::TestCommittee;
use crate::types::{AuthorityIndex, Round, TimestampMs};
use crate::validation::{Validator, VerifiedMessage};

pub use config::{
    Behaviour, Crash, FutureStamp, Latency, ParentForgery, Partition, SimConfig, Straggler,
    SyncLie, DEFAULT_DURATION_MS,
};
pub use faults::{FaultKind, Mix};

use byzantine::ByzantineState;
use invariants::Checker;

thread_local! {
    /// The virtual time of the event being handled, for the report of a panic.
    static NOW_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Virtual time 0 on every clock, before the node's offset: far enough from 0 that a slow clock
/// never goes negative.
pub const CLOCK_ORIGIN_MS: u64 = 1_000_000_000;

/// What a run produced, for reports and assertions.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub seed: u64,
    pub commits_per_node: BTreeMap<AuthorityIndex, u64>,
    pub commits_after_heal: BTreeMap<AuthorityIndex, u64>,
    /// Commits per simulated second of each honest running node over its measured window
    /// (after healing or its last restart, plus the catch-up grace).
    pub commit_rate_after_heal: BTreeMap<AuthorityIndex, f64>,
    /// The rate every such node owes ([`SimConfig::min_commit_rate_per_s`]).
    pub min_commit_rate_per_s: f64,
    /// Whether liveness was owed (at most f faulty authorities).
    pub liveness_checked: bool,
    pub committed_transactions: usize,
    pub highest_round: Round,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub messages_rejected: u64,
    pub equivocations_detected: BTreeSet<AuthorityIndex>,
    pub restarts: u64,
    /// Headers a faulty node signed by hand (forged parents, future stamps, junk).
    pub forged_headers: u64,
    /// Of those, the ones honest votes certified.
    pub forged_certified: u64,
}

/// A broken invariant, with the seed and the command to replay it.
#[derive(Clone, Debug)]
pub struct SimFailure {
    pub seed: u64,
    pub nodes: usize,
    pub config: String,
    pub replay_env: String,
    /// The broken invariant first (`agreement: ...`, `liveness: ...`, `panicked: ...`).
    pub reason: String,
    /// Virtual time of the failure.
    pub at_ms: u64,
}

impl SimFailure {
    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        if self.replay_env.is_empty() {
            return format!(
                "rerun the test that built this configuration (seed={}, nodes={})",
                self.seed, self.nodes
            );
        }
        format!(
            "{} cargo test -p trainmesh-dag --test simulation replay -- --nocapture",
            self.replay_env
        )
    }
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulation failed (seed={} nodes={}) at {}ms: {}\n  config: {}\n  replay: {}",
            self.seed,
            self.nodes,
            self.at_ms,
            self.reason,
            self.config,
            self.replay_command()
        )
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Deliver {
        from: AuthorityIndex,
        to: AuthorityIndex,
        bytes: Bytes,
    },
    Tick(AuthorityIndex),
    Crash(AuthorityIndex, u64),
    Restart(AuthorityIndex),
    Load,
}

struct Node {
    core: Option<Core<MemStore>>,
    /// The store of a crashed node, kept for its restart.
    parked_store: Option<MemStore>,
    validator: Validator,
    next_tick: Option<u64>,
    next_tx: u64,
    last_restart_ms: Option<u64>,
}

/// The simulator.
pub struct Simulator {
    config: SimConfig,
    committee: TestCommittee,
    rng: ChaCha8Rng,
    now_ms: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    sequence: u64,
    nodes: Vec<Node>,
    byzantine: BTreeMap<AuthorityIndex, ByzantineState>,
    checker: Checker,
    report: SimReport,
    failure: Option<(u64, String)>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Simulator({})", self.config.describe())
    }
}

impl Simulator {
    pub fn new(config: SimConfig) -> Simulator {
        let committee = TestCommittee::new(config.nodes);
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let nodes = (0..config.nodes)
            .map(|_| Node {
                core: None,
                parked_store: Some(MemStore::new()),
                validator: Validator::new(committee.committee().clone(), config.core.clone()),
                next_tick: None,
                next_tx: 0,
                last_restart_ms: None,
            })
            .collect();
        let byzantine = config
            .byzantine
            .keys()
            .map(|a| (*a, ByzantineState::default()))
            .collect();
        let report = SimReport {
            seed: config.seed,
            min_commit_rate_per_s: config.min_commit_rate_per_s(),
            ..SimReport::default()
        };
        Simulator {
            checker: Checker::new(&config),
            config,
            committee,
            rng,
            now_ms: 0,
            queue: BinaryHeap::new(),
            sequence: 0,
            nodes,
            byzantine,
            report,
            failure: None,
        }
    }

    fn committee(&self) -> &Committee {
        self.committee.committee()
    }

    fn is_honest(&self, node: AuthorityIndex) -> bool {
        !self.config.byzantine.contains_key(&node)
    }

    /// What `node`'s clock reads now.
    fn clock(&self, node: AuthorityIndex) -> TimestampMs {
        let offset = self
            .config
            .clock_offsets_ms
            .get(&node)
            .copied()
            .unwrap_or(0);
        TimestampMs(CLOCK_ORIGIN_MS.saturating_add_signed(offset) + self.now_ms)
    }

    /// The virtual time at which `node`'s clock reads `at`.
    fn virtual_time(&self, node: AuthorityIndex, at: TimestampMs) -> u64 {
        let offset = self
            .config
            .clock_offsets_ms
            .get(&node)
            .copied()
            .unwrap_or(0);
        at.0.saturating_sub(CLOCK_ORIGIN_MS.saturating_add_signed(offset))
    }

    fn schedule(&mut self, at_ms: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse((at_ms, self.sequence, event)));
    }

    fn fail(&mut self, reason: String) {
        if self.failure.is_none() {
            self.failure = Some((self.now_ms, reason));
        }
    }

    /// Runs to the end and checks every invariant.
    pub fn run(mut self) -> Result<SimReport, SimFailure> {
        for i in 0..self.config.nodes as u32 {
            let node = AuthorityIndex(i);
            if self.config.byzantine.get(&node) != Some(&Behaviour::Dead) {
                self.start(node);
            }
        }
        for c in self.config.crashes.clone() {
            self.schedule(c.at_ms, Event::Crash(c.node, c.down_ms));
        }
        self.schedule(0, Event::Load);
        while let Some(Reverse((at, _, event))) = self.queue.pop() {
            if at > self.config.duration_ms || self.failure.is_some() {
                break;
            }
            self.now_ms = at;
            NOW_MS.with(|n| n.set(at));
            self.handle(event);
        }
        self.now_ms = self.config.duration_ms;
        if self.failure.is_none() {
            if let Err(reason) = self.check_final() {
                self.fail(reason);
            }
        }
        match self.failure.take() {
            Some((at_ms, reason)) => Err(SimFailure {
                seed: self.config.seed,
                nodes: self.config.nodes,
                config: self.config.describe(),
                replay_env: self.config.replay_env.clone(),
                reason,
                at_ms,
            }),
            None => Ok(self.report),
        }
    }

    fn check_final(&mut self) -> Result<(), String> {
        self.checker.check_agreement()?;
        let running: BTreeMap<AuthorityIndex, Option<u64>> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.core.is_some())
            .map(|(i, n)| (AuthorityIndex(i as u32), n.last_restart_ms))
            .collect();
        self.checker
            .check_liveness(&self.config, &running, &mut self.report)?;
        for (i, n) in self.nodes.iter().enumerate() {
            let a = AuthorityIndex(i as u32);
            self.report
                .commits_per_node
                .insert(a, self.checker.commits(a));
            self.report
                .commits_after_heal
                .insert(a, self.checker.commits_since(a, self.config.heal_at_ms));
            if let Some(core) = &n.core {
                self.report.highest_round =
                    self.report.highest_round.max(core.status().highest_round);
            }
        }
        Ok(())
    }

    fn start(&mut self, node: AuthorityIndex) {
        let store = self.nodes[node.as_usize()]
            .parked_store
            .take()
            .expect("a stopped node has its store");
        let key = self.committee.key_copy(node);
        let now = self.clock(node);
        let result = Core::new(
            self.config.core.clone(),
            self.committee().clone(),
            node,
            key,
            store,
            now,
        );
        match result {
            Ok((core, actions)) => {
                // Identical replay: the restarted core re-emits exactly what it committed before.
                let replay = match core.committed_from(0) {
                    Ok(r) => r,
                    Err(e) => {
                        return self
                            .fail(format!("replay: {node} cannot replay after restart: {e}"))
                    }
                };
                let replayed: Vec<Vec<u8>> = replay.iter().map(encode).collect();
                if let Err(reason) = self.checker.check_replay(node, &replayed) {
                    return self.fail(reason);
                }
                self.nodes[node.as_usize()].core = Some(core);
                self.nodes[node.as_usize()].next_tick = None;
                self.carry_out(node, actions);
            }
            Err(e) => self.fail(format!("start: {node} failed to start: {e}")),
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, bytes } => self.deliver(from, to, bytes),
            Event::Tick(node) => {
                let now = self.clock(node);
                let n = &mut self.nodes[node.as_usize()];
                if n.next_tick != Some(self.now_ms) {
                    return;
                }
                n.next_tick = None;
                let Some(core) = n.core.as_mut() else { return };
                match core.tick(now) {
                    Ok(actions) => self.carry_out(node, actions),
                    Err(e) => self.fail(format!("tick: {node} tick failed: {e}")),
                }
            }
            Event::Crash(node, down_ms) => {
                if let Some(core) = self.nodes[node.as_usize()].core.take() {
                    self.nodes[node.as_usize()].parked_store = Some(core.into_store());
                    self.schedule(self.now_ms + down_ms, Event::Restart(node));
                }
            }
            Event::Restart(node) => {
                self.report.restarts += 1;
                self.nodes[node.as_usize()].last_restart_ms = Some(self.now_ms);
                self.start(node);
            }
            Event::Load => self.load(),
        }
    }

    fn load(&mut self) {
        for i in 0..self.config.nodes {
            let node = AuthorityIndex(i as u32);
            let n = &mut self.nodes[i];
            let Some(core) = n.core.as_mut() else {
                continue;
            };
            let txs: Vec<Bytes> = (0..self.config.transactions_per_interval)
                .map(|_| {
                    n.next_tx += 1;
                    Bytes::from(format!("tx/{node}/{}", n.next_tx))
                })
                .collect();
            // A full mempool refuses the batch whole; the load simply goes on next interval.
            let _ = core.submit_transactions(txs);
            self.schedule_tick(node);
        }
        self.schedule(self.now_ms + self.config.load_interval_ms, Event::Load);
    }

    fn deliver(&mut self, from: AuthorityIndex, to: AuthorityIndex, bytes: Bytes) {
        if self.nodes[to.as_usize()].core.is_none() {
            self.report.messages_dropped += 1;
            return;
        }
        self.report.messages_delivered += 1;
        let message = match decode::<ConsensusMessage>(&bytes, MESSAGE_BYTES_MAX) {
            Ok(m) => m,
            Err(_) => {
                self.report.messages_rejected += 1;
                return;
            }
        };
        self.checker.observe(&message);
        if self.intercept(to, &message) {
            return;
        }
        let verified = match self.nodes[to.as_usize()].validator.verify_message(message) {
            Ok(v) => v,
            Err(_) => {
                self.report.messages_rejected += 1;
                return;
            }
        };
        self.feed(from, to, verified);
    }

    /// Hands a verified message to a node's core and carries out what it answers.
    fn feed(&mut self, from: AuthorityIndex, to: AuthorityIndex, message: VerifiedMessage) {
        let now = self.clock(to);
        let Some(core) = self.nodes[to.as_usize()].core.as_mut() else {
            return;
        };
        match core.handle_message(from, message, now) {
            Ok(actions) => self.carry_out(to, actions),
            Err(DagError::Storage { reason }) => {
                self.fail(format!("storage: {to} storage failed: {reason}"))
            }
            Err(_) => {
                self.report.messages_rejected += 1;
                self.schedule_tick(to);
            }
        }
    }

    fn schedule_tick(&mut self, node: AuthorityIndex) {
        let now = self.now_ms;
        let Some(core) = self.nodes[node.as_usize()].core.as_ref() else {
            return;
        };
        let at = self.virtual_time(node, core.next_deadline()).max(now + 1);
        let n = &mut self.nodes[node.as_usize()];
        if n.next_tick.is_none_or(|t| t > at || t < now) {
            n.next_tick = Some(at);
            self.schedule(at, Event::Tick(node));
        }
    }

    fn others(&self, node: AuthorityIndex) -> Vec<AuthorityIndex> {
        self.committee().indices().filter(|a| *a != node).collect()
    }

    fn carry_out(&mut self, node: AuthorityIndex, actions: Vec<Action>) {
        let behaviour = self.config.byzantine.get(&node).copied();
        for action in actions {
            match action {
                Action::Broadcast(message) => {
                    let targets = self.others(node);
                    self.emit(node, behaviour, targets, message);
                }
                Action::Send { to, message } => self.emit(node, behaviour, vec![to], message),
                Action::Commit(sub_dag) => self.on_commit(node, sub_dag),
                Action::EquivocationDetected(evidence) => {
                    if !evidence.verify(self.committee()) {
                        self.fail(format!(
                            "evidence: {node} reported evidence that does not verify"
                        ));
                    }
                    let culprit = evidence.first.author();
                    if self.is_honest(culprit) {
                        self.fail(format!(
                            "evidence: honest {culprit} was caught equivocating"
                        ));
                    }
                    self.report.equivocations_detected.insert(culprit);
                }
                Action::ReproposePayload(transactions) => {
                    if let Some(core) = self.nodes[node.as_usize()].core.as_mut() {
                        // A full mempool drops them, as the node's own mempool would.
                        let _ = core.submit_transactions(transactions);
                    }
                }
            }
        }
        self.schedule_tick(node);
    }

    /// Sends what a core asked to send: as is from an honest node, through its behaviour from a
    /// faulty one.
    fn emit(
        &mut self,
        node: AuthorityIndex,
        behaviour: Option<Behaviour>,
        targets: Vec<AuthorityIndex>,
        message: ConsensusMessage,
    ) {
        match behaviour {
            Some(b) => self.emit_byzantine(node, b, targets, message),
            None => {
                if let ConsensusMessage::Header(h) = &message {
                    if h.author() == node {
                        self.checker.header_proposed(h.round(), self.now_ms);
                    }
                }
                self.send_message(node, &targets, &message);
            }
        }
    }

    fn on_commit(&mut self, node: AuthorityIndex, sub_dag: CommittedSubDag) {
        let honest = self.is_honest(node);
        if honest {
            self.report.committed_transactions += sub_dag.transactions().count();
        }
        let high = self.highest_honest_clock();
        if let Err(reason) =
            self.checker
                .on_commit(node, honest, &sub_dag, self.now_ms, high, &self.config)
        {
            self.fail(reason);
        }
    }

    /// The highest honest clock now.
    fn highest_honest_clock(&self) -> TimestampMs {
        let clocks = self.config.honest().map(|a| self.clock(a));
        clocks.max().unwrap_or_default()
    }
}

/// Runs one simulation; a panic inside it (a core's, say) is a failure of the run.
pub fn run(config: SimConfig) -> Result<SimReport, SimFailure> {
    let failure = |reason: String| SimFailure {
        seed: config.seed,
        nodes: config.nodes,
        config: config.describe(),
        replay_env: config.replay_env.clone(),
        reason,
        at_ms: NOW_MS.with(|n| n.get()),
    };
    NOW_MS.with(|n| n.set(0));
    match catch_unwind(AssertUnwindSafe(|| Simulator::new(config.clone()).run())) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".to_string());
            Err(failure(format!("panicked: {message}")))
        }
    }
}
