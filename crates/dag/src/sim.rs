//! A seeded, deterministic simulator: many cores on one thread, virtual time, and a network that
//! delays (with a long tail), drops, duplicates, reorders and partitions, with crashes and
//! restarts from the store and Byzantine authorities.
//!
//! Every message goes through the real encoding and validation. The same seed gives the same run,
//! event for event. After each run the invariants are checked: agreement, no double commit,
//! causality, one certificate per slot, liveness after healing, identical replay after restart.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::committee::Committee;
use crate::config::CoreConfig;
use crate::core::{Action, Core};
use crate::encoding::{decode, encode, MESSAGE_BYTES_MAX};
use crate::messages::{CertificateRef, CommittedSubDag, ConsensusMessage, Header, SignedHeader};
use crate::store::MemStore;
use crate::test_dag::TestCommittee;
use crate::types::{AuthorityIndex, Digest, Round, TimestampMs};
use crate::validation::Validator;

/// How a faulty authority misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Signs two different headers per round and shows each to half of the committee.
    Equivocate,
    /// Never sends votes.
    WithholdVotes,
    /// Corrupts the signature of half of its headers and votes.
    InvalidSignatures,
    /// Also sends properly signed headers of far-future rounds, and garbage bytes.
    JunkRounds,
    /// Never starts.
    Dead,
}

/// One crash, and the restart from the store that follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crash {
    pub node: AuthorityIndex,
    pub at_ms: u64,
    pub down_ms: u64,
}

/// A network partition: messages between different groups are lost while it lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub start_ms: u64,
    pub end_ms: u64,
    pub groups: Vec<Vec<AuthorityIndex>>,
}

/// Message delays: `base + uniform(jitter)`, and with `tail_probability` an extra uniform delay
/// up to `tail_ms` (the long tail).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    pub base_ms: u64,
    pub jitter_ms: u64,
    pub tail_probability: f64,
    pub tail_ms: u64,
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub byzantine: BTreeMap<AuthorityIndex, Behaviour>,
    pub crashes: Vec<Crash>,
    pub partitions: Vec<Partition>,
    pub latency: Latency,
    /// Loss and duplication apply until `heal_at_ms`.
    pub drop_probability: f64,
    pub duplicate_probability: f64,
    /// From here on the network is synchronous-ish: no loss, no partition, no new crash.
    pub heal_at_ms: u64,
    pub duration_ms: u64,
    /// Every honest running node submits this many transactions every `load_interval_ms`.
    pub transactions_per_interval: usize,
    pub load_interval_ms: u64,
    pub core: CoreConfig,
    /// Commits every honest node must make after healing.
    pub commits_after_heal_min: u64,
}

impl SimConfig {
    /// A quiet network: no faults, small delays.
    pub fn calm(seed: u64, nodes: usize) -> SimConfig {
        SimConfig {
            seed,
            nodes,
            byzantine: BTreeMap::new(),
            crashes: Vec::new(),
            partitions: Vec::new(),
            latency: Latency {
                base_ms: 10,
                jitter_ms: 40,
                tail_probability: 0.0,
                tail_ms: 0,
            },
            drop_probability: 0.0,
            duplicate_probability: 0.0,
            heal_at_ms: 0,
            duration_ms: 10_000,
            transactions_per_interval: 3,
            load_interval_ms: 100,
            core: CoreConfig {
                max_header_delay_ms: 50,
                leader_timeout_ms: 500,
                resend_interval_ms: 600,
                sync_retry_ms: 300,
                gc_depth_rounds: 20,
                round_window_rounds: 100,
                ..CoreConfig::default()
            },
            commits_after_heal_min: 3,
        }
    }

    /// Faults drawn from the seed: up to f faulty authorities (Byzantine or crashing), loss,
    /// duplication, long-tail delays and a partition, all before `heal_at_ms`.
    pub fn random(seed: u64, nodes: usize) -> SimConfig {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005e_ed0f_fa17);
        let mut config = SimConfig::calm(seed, nodes);
        let f = (nodes - 1) / 3;
        let duration_ms = if nodes > 16 { 9_000 } else { 16_000 };
        let heal_at_ms = duration_ms / 2;
        config.duration_ms = duration_ms;
        config.heal_at_ms = heal_at_ms;
        config.latency = Latency {
            base_ms: rng.gen_range(5..30),
            jitter_ms: rng.gen_range(10..80),
            tail_probability: rng.gen_range(0.0..0.05),
            tail_ms: rng.gen_range(200..2_000),
        };
        config.drop_probability = rng.gen_range(0.0..0.1);
        config.duplicate_probability = rng.gen_range(0.0..0.05);
        let mut order: Vec<u32> = (0..nodes as u32).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.gen_range(0..=i));
        }
        let faulty = rng.gen_range(0..=f);
        let behaviours = [
            Behaviour::Equivocate,
            Behaviour::WithholdVotes,
            Behaviour::InvalidSignatures,
            Behaviour::JunkRounds,
            Behaviour::Dead,
        ];
        for &node in order.iter().take(faulty) {
            let node = AuthorityIndex(node);
            if rng.gen_bool(0.4) {
                // Crash and restart, possibly twice.
                for _ in 0..rng.gen_range(1..=2) {
                    config.crashes.push(Crash {
                        node,
                        at_ms: rng.gen_range(500..heal_at_ms),
                        down_ms: rng.gen_range(100..3_000),
                    });
                }
            } else {
                let b = behaviours[rng.gen_range(0..behaviours.len())];
                config.byzantine.insert(node, b);
            }
        }
        // Restarts must come after the previous one of the same node.
        config.crashes.sort_by_key(|c| (c.node, c.at_ms));
        let mut last_up: BTreeMap<AuthorityIndex, u64> = BTreeMap::new();
        for c in &mut config.crashes {
            let up = last_up.entry(c.node).or_insert(0);
            c.at_ms = c.at_ms.max(*up + 1);
            *up = c.at_ms + c.down_ms;
        }
        if rng.gen_bool(0.6) {
            let start_ms = rng.gen_range(0..heal_at_ms / 2);
            let end_ms = rng.gen_range(start_ms + 200..heal_at_ms);
            let split = rng.gen_range(1..nodes);
            config.partitions.push(Partition {
                start_ms,
                end_ms,
                groups: vec![
                    order[..split].iter().map(|&i| AuthorityIndex(i)).collect(),
                    order[split..].iter().map(|&i| AuthorityIndex(i)).collect(),
                ],
            });
        }
        config
    }

    fn describe(&self) -> String {
        format!(
            "seed={} nodes={} byzantine={:?} crashes={:?} partitions={:?} latency={:?} drop={:.3} dup={:.3} heal_at={}ms duration={}ms",
            self.seed,
            self.nodes,
            self.byzantine,
            self.crashes,
            self.partitions,
            self.latency,
            self.drop_probability,
            self.duplicate_probability,
            self.heal_at_ms,
            self.duration_ms
        )
    }
}

/// What a run produced, for reports and assertions.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub seed: u64,
    pub commits_per_node: BTreeMap<AuthorityIndex, u64>,
    pub commits_after_heal: BTreeMap<AuthorityIndex, u64>,
    pub committed_transactions: usize,
    pub highest_round: Round,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub messages_rejected: u64,
    pub equivocations_detected: BTreeSet<AuthorityIndex>,
    pub restarts: u64,
}

/// A broken invariant, with the seed to replay it.
#[derive(Clone, Debug)]
pub struct SimFailure {
    pub seed: u64,
    pub config: String,
    pub reason: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulation failed: {}\n  config: {}\n  replay: DAG_SIM_SEED={} cargo test -p trainmesh-dag --test simulation replay -- --nocapture",
            self.reason, self.config, self.seed
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
    /// Every committed sub-DAG, encoded, in order.
    log: Vec<Vec<u8>>,
    log_after_heal: u64,
    next_tick: Option<u64>,
    next_tx: u64,
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
    report: SimReport,
    /// Every committed certificate by slot, over all honest nodes.
    slots: BTreeMap<(Round, AuthorityIndex), Digest>,
    failure: Option<String>,
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
                log: Vec::new(),
                log_after_heal: 0,
                next_tick: None,
                next_tx: 0,
            })
            .collect();
        let report = SimReport {
            seed: config.seed,
            ..SimReport::default()
        };
        Simulator {
            config,
            committee,
            rng,
            now_ms: 0,
            queue: BinaryHeap::new(),
            sequence: 0,
            nodes,
            report,
            slots: BTreeMap::new(),
            failure: None,
        }
    }

    fn committee(&self) -> &Committee {
        self.committee.committee()
    }

    fn is_honest(&self, node: AuthorityIndex) -> bool {
        !self.config.byzantine.contains_key(&node)
    }

    fn schedule(&mut self, at_ms: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse((at_ms, self.sequence, event)));
    }

    fn fail(&mut self, reason: String) {
        if self.failure.is_none() {
            self.failure = Some(reason);
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
            self.handle(event);
        }
        self.check_final();
        match self.failure.take() {
            Some(reason) => Err(SimFailure {
                seed: self.config.seed,
                config: self.config.describe(),
                reason,
            }),
            None => {
                for (i, n) in self.nodes.iter().enumerate() {
                    let a = AuthorityIndex(i as u32);
                    self.report.commits_per_node.insert(a, n.log.len() as u64);
                    self.report.commits_after_heal.insert(a, n.log_after_heal);
                    if let Some(core) = &n.core {
                        self.report.highest_round =
                            self.report.highest_round.max(core.status().highest_round);
                    }
                }
                Ok(self.report)
            }
        }
    }

    fn start(&mut self, node: AuthorityIndex) {
        let store = self.nodes[node.as_usize()]
            .parked_store
            .take()
            .expect("a stopped node has its store");
        let key = self.committee.key_copy(node);
        let result = Core::new(
            self.config.core.clone(),
            self.committee().clone(),
            node,
            key,
            store,
            TimestampMs(self.now_ms),
        );
        match result {
            Ok((core, actions)) => {
                // Identical replay: the restarted core re-emits exactly what it committed before.
                let replay = match core.committed_from(0) {
                    Ok(r) => r,
                    Err(e) => return self.fail(format!("{node} cannot replay after restart: {e}")),
                };
                let log = &self.nodes[node.as_usize()].log;
                let replayed: Vec<Vec<u8>> = replay.iter().map(encode).collect();
                if replayed != *log {
                    return self.fail(format!(
                        "{node} replayed {} commits after restart, different from the {} it had",
                        replayed.len(),
                        log.len()
                    ));
                }
                self.nodes[node.as_usize()].core = Some(core);
                self.nodes[node.as_usize()].next_tick = None;
                self.carry_out(node, actions);
            }
            Err(e) => self.fail(format!("{node} failed to start: {e}")),
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, bytes } => self.deliver(from, to, bytes),
            Event::Tick(node) => {
                let n = &mut self.nodes[node.as_usize()];
                if n.next_tick != Some(self.now_ms) {
                    return;
                }
                n.next_tick = None;
                let Some(core) = n.core.as_mut() else { return };
                match core.tick(TimestampMs(self.now_ms)) {
                    Ok(actions) => self.carry_out(node, actions),
                    Err(e) => self.fail(format!("{node} tick failed: {e}")),
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
                self.start(node);
            }
            Event::Load => {
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
                    let _ = core.submit_transactions(txs);
                    self.schedule_tick(node);
                }
                self.schedule(self.now_ms + self.config.load_interval_ms, Event::Load);
            }
        }
    }

    fn deliver(&mut self, from: AuthorityIndex, to: AuthorityIndex, bytes: Bytes) {
        let now = TimestampMs(self.now_ms);
        let n = &mut self.nodes[to.as_usize()];
        let Some(core) = n.core.as_mut() else {
            self.report.messages_dropped += 1;
            return;
        };
        self.report.messages_delivered += 1;
        let message = match decode::<ConsensusMessage>(&bytes, MESSAGE_BYTES_MAX) {
            Ok(m) => m,
            Err(_) => {
                self.report.messages_rejected += 1;
                return;
            }
        };
        let verified = match n.validator.verify_message(message) {
            Ok(v) => v,
            Err(_) => {
                self.report.messages_rejected += 1;
                return;
            }
        };
        match core.handle_message(from, verified, now) {
            Ok(actions) => self.carry_out(to, actions),
            Err(crate::error::DagError::Storage { reason }) => {
                self.fail(format!("{to} storage failed: {reason}"))
            }
            Err(_) => {
                self.report.messages_rejected += 1;
                self.schedule_tick(to);
            }
        }
    }

    fn schedule_tick(&mut self, node: AuthorityIndex) {
        let now = self.now_ms;
        let n = &mut self.nodes[node.as_usize()];
        let Some(core) = n.core.as_ref() else { return };
        let at = core.next_deadline().0.max(now + 1);
        if n.next_tick.is_none_or(|t| t > at || t < now) {
            n.next_tick = Some(at);
            self.schedule(at, Event::Tick(node));
        }
    }

    fn partitioned(&self, a: AuthorityIndex, b: AuthorityIndex) -> bool {
        self.config.partitions.iter().any(|p| {
            self.now_ms >= p.start_ms
                && self.now_ms < p.end_ms
                && p.groups.iter().any(|g| g.contains(&a) != g.contains(&b))
        })
    }

    fn send(&mut self, from: AuthorityIndex, to: AuthorityIndex, bytes: Bytes) {
        if from == to {
            return;
        }
        let before_heal = self.now_ms < self.config.heal_at_ms;
        if self.partitioned(from, to)
            || (before_heal && self.rng.gen_bool(self.config.drop_probability))
        {
            self.report.messages_dropped += 1;
            return;
        }
        let copies = if before_heal && self.rng.gen_bool(self.config.duplicate_probability) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let l = self.config.latency;
            let mut delay = l.base_ms + self.rng.gen_range(0..=l.jitter_ms);
            if self.rng.gen_bool(l.tail_probability) {
                delay += self.rng.gen_range(0..=l.tail_ms);
            }
            self.schedule(
                self.now_ms + delay,
                Event::Deliver {
                    from,
                    to,
                    bytes: bytes.clone(),
                },
            );
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
                    let message = self.corrupt(behaviour, message);
                    if let (Some(Behaviour::Equivocate), ConsensusMessage::Header(h)) =
                        (behaviour, &message)
                    {
                        self.equivocate(node, h.clone());
                        continue;
                    }
                    if let (Some(Behaviour::JunkRounds), ConsensusMessage::Header(h)) =
                        (behaviour, &message)
                    {
                        self.send_junk(node, h);
                    }
                    let bytes = Bytes::from(encode(&message));
                    for to in self.others(node) {
                        self.send(node, to, bytes.clone());
                    }
                }
                Action::Send { to, message } => {
                    if behaviour == Some(Behaviour::WithholdVotes)
                        && matches!(message, ConsensusMessage::Vote(_))
                    {
                        continue;
                    }
                    let message = self.corrupt(behaviour, message);
                    self.send(node, to, Bytes::from(encode(&message)));
                }
                Action::Commit(sub_dag) => self.on_commit(node, sub_dag),
                Action::EquivocationDetected(evidence) => {
                    if !evidence.verify(self.committee()) {
                        self.fail(format!("{node} reported evidence that does not verify"));
                    }
                    let culprit = evidence.first.author();
                    if self.is_honest(culprit) {
                        self.fail(format!("honest {culprit} was caught equivocating"));
                    }
                    self.report.equivocations_detected.insert(culprit);
                }
                Action::ReproposePayload(transactions) => {
                    if let Some(core) = self.nodes[node.as_usize()].core.as_mut() {
                        let _ = core.submit_transactions(transactions);
                    }
                }
            }
        }
        self.schedule_tick(node);
    }

    fn corrupt(
        &mut self,
        behaviour: Option<Behaviour>,
        message: ConsensusMessage,
    ) -> ConsensusMessage {
        if behaviour != Some(Behaviour::InvalidSignatures) || !self.rng.gen_bool(0.5) {
            return message;
        }
        match message {
            ConsensusMessage::Header(h) => {
                let mut sig = *h.signature();
                sig.0[5] ^= 0x40;
                ConsensusMessage::Header(SignedHeader::with_signature(h.header().clone(), sig))
            }
            ConsensusMessage::Vote(mut v) => {
                v.signature.0[9] ^= 0x01;
                ConsensusMessage::Vote(v)
            }
            other => other,
        }
    }

    /// Signs a second header for the same round and splits the committee between the two; one
    /// honest node sees both.
    fn equivocate(&mut self, node: AuthorityIndex, header: SignedHeader) {
        let mut twin: Header = header.header().clone();
        twin.payload
            .push(Bytes::from(format!("twin/{node}/{}", header.round().0)));
        let twin = SignedHeader::new(twin, self.committee.key(node));
        let others = self.others(node);
        let half = others.len() / 2;
        let first = Bytes::from(encode(&ConsensusMessage::Header(header)));
        let second = Bytes::from(encode(&ConsensusMessage::Header(twin)));
        for (i, to) in others.iter().enumerate() {
            let bytes = if i < half {
                first.clone()
            } else {
                second.clone()
            };
            self.send(node, *to, bytes);
        }
        self.send(node, others[0], second);
    }

    /// A properly signed header far in the future, with made-up parents, and garbage bytes.
    fn send_junk(&mut self, node: AuthorityIndex, header: &SignedHeader) {
        let round = Round(header.round().0 + 100_000);
        let parents = self
            .committee()
            .indices()
            .map(|author| CertificateRef {
                author,
                round: round.prev(),
                digest: Digest([author.0 as u8; 32]),
            })
            .collect();
        let junk = Header {
            epoch: header.epoch(),
            round,
            author: node,
            created_at: header.header().created_at,
            parents,
            payload: vec![],
        };
        let junk = SignedHeader::new(junk, self.committee.key(node));
        let bytes = Bytes::from(encode(&ConsensusMessage::Header(junk)));
        let garbage: Vec<u8> = (0..self.rng.gen_range(0..200))
            .map(|_| self.rng.gen())
            .collect();
        for to in self.others(node) {
            self.send(node, to, bytes.clone());
            self.send(node, to, Bytes::from(garbage.clone()));
        }
    }

    fn on_commit(&mut self, node: AuthorityIndex, sub_dag: CommittedSubDag) {
        let honest = self.is_honest(node);
        let n = &self.nodes[node.as_usize()];
        if sub_dag.index != n.log.len() as u64 {
            return self.fail(format!(
                "{node} committed index {} after {} commits",
                sub_dag.index,
                n.log.len()
            ));
        }
        if honest {
            // One certificate per slot, across all honest nodes.
            for c in &sub_dag.certificates {
                let slot = (c.round(), c.author());
                if let Some(d) = self.slots.insert(slot, c.digest()) {
                    if d != c.digest() {
                        return self.fail(format!(
                            "two certificates committed for slot {}{}: {d} and {}",
                            slot.1,
                            slot.0 .0,
                            c.digest()
                        ));
                    }
                }
            }
            self.report.committed_transactions += sub_dag.transactions().count();
        }
        let encoded = encode(&sub_dag);
        let after_heal = self.now_ms >= self.config.heal_at_ms;
        let n = &mut self.nodes[node.as_usize()];
        n.log.push(encoded);
        if after_heal {
            n.log_after_heal += 1;
        }
    }

    /// Agreement, no double commit, causality and liveness over the final logs.
    fn check_final(&mut self) {
        if self.failure.is_some() {
            return;
        }
        let honest: Vec<usize> = (0..self.config.nodes)
            .filter(|&i| self.is_honest(AuthorityIndex(i as u32)))
            .collect();
        // Agreement: every honest log is a prefix of the longest one.
        let longest = honest
            .iter()
            .max_by_key(|&&i| self.nodes[i].log.len())
            .copied();
        if let Some(l) = longest {
            for &i in &honest {
                let (a, b) = (&self.nodes[i].log, &self.nodes[l].log);
                if let Some(k) = (0..a.len()).find(|&k| a[k] != b[k]) {
                    return self.fail(format!(
                        "agreement: {} and {} differ at commit {k}",
                        AuthorityIndex(i as u32),
                        AuthorityIndex(l as u32)
                    ));
                }
            }
        }
        // No double commit and causality, on the longest honest log.
        if let Some(l) = longest {
            let mut committed: BTreeSet<Digest> = BTreeSet::new();
            for (k, bytes) in self.nodes[l].log.iter().enumerate() {
                let sub_dag: CommittedSubDag = match decode(bytes, usize::MAX) {
                    Ok(s) => s,
                    Err(e) => return self.fail(format!("commit {k} does not decode: {e}")),
                };
                let gc_floor = sub_dag
                    .leader
                    .round
                    .saturating_sub(self.config.core.gc_depth_rounds);
                for c in &sub_dag.certificates {
                    for p in c.parents() {
                        if p.round > Round::GENESIS
                            && p.round >= gc_floor
                            && !committed.contains(&p.digest)
                        {
                            return self.fail(format!(
                                "causality: commit {k} holds {}{} before its parent {}{}",
                                c.author(),
                                c.round().0,
                                p.author,
                                p.round.0
                            ));
                        }
                    }
                    if !committed.insert(c.digest()) {
                        return self.fail(format!(
                            "double commit of {}{} at commit {k}",
                            c.author(),
                            c.round().0
                        ));
                    }
                }
                if sub_dag.certificates.last().map(|c| c.digest()) != Some(sub_dag.leader.digest) {
                    return self.fail(format!("commit {k} does not end with its leader"));
                }
            }
        }
        // Liveness after healing, with at most f faulty.
        let f = (self.config.nodes - 1) / 3;
        let crashed: BTreeSet<AuthorityIndex> =
            self.config.crashes.iter().map(|c| c.node).collect();
        let faulty: BTreeSet<AuthorityIndex> = self
            .config
            .byzantine
            .keys()
            .copied()
            .chain(crashed.iter().copied())
            .collect();
        if faulty.len() <= f {
            for &i in &honest {
                let n = &self.nodes[i];
                if n.core.is_some() && n.log_after_heal < self.config.commits_after_heal_min {
                    return self.fail(format!(
                        "liveness: {} made {} commits after healing (at least {} expected)",
                        AuthorityIndex(i as u32),
                        n.log_after_heal,
                        self.config.commits_after_heal_min
                    ));
                }
            }
        }
    }
}

/// Runs one simulation.
pub fn run(config: SimConfig) -> Result<SimReport, SimFailure> {
    Simulator::new(config).run()
}
