//! Consensus under a Byzantine authority: three honest cores (authorities 0 to 2, each on a
//! `MemStore`) exchange their own traffic while authority 3 sends what the fuzzer plans —
//! headers, votes, certificates and sync messages of any round, parents, payload and timestamp,
//! correctly signed with its key, equivocations and replays included. Every message passes
//! `Validator::verify_message` before `Core::handle_message`, as in a node; time goes forward by
//! steps the fuzzer picks, and nodes tick and restart from their stores.
//!
//! Checked all along ([`checks`]): no core panics or fails locally; every message an honest core
//! emits validates; each core's commits follow one another by index, leader round and time,
//! in (round, author) order, never commit a certificate twice, and survive a restart unchanged;
//! only the Byzantine authority is ever reported for equivocation; and, unless the plan forges
//! honest votes, honest cores agree on every commit index.

mod byzantine;
mod checks;
mod plan;

use std::collections::VecDeque;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use trainmesh_dag::encoding::{decode, encode, MESSAGE_BYTES_MAX};
use trainmesh_dag::{
    Action, AuthorityIndex, ConsensusMessage, Core, CoreConfig, DagResult, MemStore, TimestampMs,
    VerifiedMessage,
};

use self::byzantine::{Byzantine, Target, BYZANTINE};
use self::checks::Checks;
use self::plan::{Plan, Step};
use crate::dag::{committee, fresh_core, is_local_failure, key, validator, AUTHORITIES};

/// Honest messages in flight at most; more are lost.
const QUEUE_MAX: usize = 4_096;
/// Honest messages one run delivers at most: enough for about ten rounds, few enough that a run
/// takes milliseconds (most of it is signing and checking signatures).
const DELIVERIES_MAX: usize = 400;
/// How far a `Settle` round moves the clock: past the batching delay, a quarter of the leader
/// timeout.
const SETTLE_ADVANCE_MS: u64 = 250;
/// Bytes of a client transaction.
const SUBMITTED_BYTES_MAX: usize = 256;

/// What one run reached (the seed generator keeps inputs that reach far).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub steps: usize,
    pub commits: usize,
    pub byzantine_accepted: usize,
    pub byzantine_refused: usize,
    /// Honest messages delivered.
    pub deliveries: usize,
}

pub fn dag_core(data: &[u8]) {
    run(data);
}

/// Runs the plan `data` describes and returns how far it got.
pub fn run(data: &[u8]) -> Report {
    let Ok(plan) = Plan::arbitrary_take_rest(Unstructured::new(data)) else {
        return Report::default();
    };
    let mut net = Network::new(plan.forge_votes);
    for step in plan.steps {
        net.step(step);
        net.report.steps += 1;
    }
    net.report.commits = net.checks.commits();
    net.report
}

/// A message between honest nodes, validated when it was emitted.
struct Envelope {
    from: AuthorityIndex,
    to: usize,
    message: VerifiedMessage,
}

struct Network {
    now: TimestampMs,
    config: CoreConfig,
    /// Honest cores by authority index; `None` only during a restart.
    nodes: Vec<Option<Core<MemStore>>>,
    queue: VecDeque<Envelope>,
    byzantine: Byzantine,
    checks: Checks,
    report: Report,
}

impl Network {
    fn new(forge_votes: bool) -> Network {
        let now = TimestampMs(1_000);
        let honest = (AUTHORITIES - 1) as usize;
        Network {
            now,
            config: CoreConfig::default(),
            nodes: (0..honest)
                .map(|i| Some(fresh_core(AuthorityIndex(i as u32), now)))
                .collect(),
            queue: VecDeque::new(),
            byzantine: Byzantine::new(forge_votes),
            checks: Checks::new(honest, !forge_votes),
            report: Report::default(),
        }
    }

    fn node(&mut self, n: usize) -> &mut Core<MemStore> {
        self.nodes[n].as_mut().expect("present between steps")
    }

    fn honest(&self, pick: u8) -> usize {
        usize::from(pick) % self.nodes.len()
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Deliver { count } => {
                for _ in 0..=count % 16 {
                    let Some(envelope) = self.queue.pop_front() else {
                        break;
                    };
                    self.deliver(envelope);
                }
            }
            Step::DeliverOne { pick } => {
                if !self.queue.is_empty() {
                    let i = usize::from(pick) % self.queue.len();
                    let envelope = self.queue.remove(i).expect("in range");
                    self.deliver(envelope);
                }
            }
            Step::Drop { pick } => {
                if !self.queue.is_empty() {
                    let i = usize::from(pick) % self.queue.len();
                    self.queue.remove(i);
                }
            }
            Step::Tick { advance_ms, node } => {
                self.now = self.now.saturating_add_ms(advance_ms.into());
                match node {
                    Some(n) => self.tick(self.honest(n)),
                    None => (0..self.nodes.len()).for_each(|n| self.tick(n)),
                }
            }
            Step::Settle { rounds } => self.settle(rounds % 4 + 1),
            Step::Submit { node, transaction } => {
                let n = self.honest(node);
                let tx = Bytes::from(plan::capped(transaction, SUBMITTED_BYTES_MAX));
                // A full mempool refuses it: the client's problem, not the core's.
                let _refused_or_accepted = self.node(n).submit_transactions(vec![tx]);
            }
            Step::Restart { node } => self.restart(self.honest(node)),
            Step::Byzantine { to, message } => {
                let n = self.honest(to);
                let target = Target {
                    core: self.nodes[n].as_ref().expect("present between steps"),
                    now: self.now,
                };
                if let Some(message) = self.byzantine.build(message, &target) {
                    self.deliver_byzantine(n, message);
                }
            }
        }
        for (n, core) in self.nodes.iter().enumerate() {
            let core = core.as_ref().expect("present between steps");
            self.checks.on_status(n, &core.status(), &self.config);
        }
    }

    fn settle(&mut self, rounds: u8) {
        for _ in 0..rounds {
            while let Some(envelope) = self.next_delivery() {
                self.deliver(envelope);
            }
            self.now = self.now.saturating_add_ms(SETTLE_ADVANCE_MS);
            (0..self.nodes.len()).for_each(|n| self.tick(n));
        }
    }

    /// The oldest queued message, while the run's delivery budget lasts.
    fn next_delivery(&mut self) -> Option<Envelope> {
        if self.report.deliveries >= DELIVERIES_MAX {
            return None;
        }
        self.queue.pop_front()
    }

    fn tick(&mut self, n: usize) {
        let now = self.now;
        let result = self.node(n).tick(now);
        self.outcome(n, result);
    }

    fn restart(&mut self, n: usize) {
        let store = self.nodes[n].take().expect("present").into_store();
        let me = AuthorityIndex(n as u32);
        let (core, actions) = Core::new(
            self.config.clone(),
            committee().clone(),
            me,
            key(me),
            store,
            self.now,
        )
        .unwrap_or_else(|e| panic!("node {n} cannot recover from its own store: {e}"));
        let recovered = core.committed_from(0).expect("an in-memory store reads");
        self.checks.on_restart(n, &recovered);
        self.nodes[n] = Some(core);
        self.carry_out(n, actions);
    }

    fn deliver(&mut self, envelope: Envelope) {
        self.report.deliveries += 1;
        let now = self.now;
        let result = self
            .node(envelope.to)
            .handle_message(envelope.from, envelope.message, now);
        self.outcome(envelope.to, result);
    }

    /// A Byzantine message travels as bytes, is validated, and reaches the core if valid.
    fn deliver_byzantine(&mut self, n: usize, message: ConsensusMessage) {
        let bytes = encode(&message);
        let decoded = decode::<ConsensusMessage>(&bytes, MESSAGE_BYTES_MAX)
            .expect("a message this harness encodes decodes");
        assert_eq!(decoded, message, "a message changed on the wire");
        match validator().verify_message(decoded) {
            Ok(verified) => {
                self.report.byzantine_accepted += 1;
                let now = self.now;
                let result = self.node(n).handle_message(BYZANTINE, verified, now);
                self.outcome(n, result);
            }
            Err(_) => self.report.byzantine_refused += 1,
        }
    }

    fn outcome(&mut self, n: usize, result: DagResult<Vec<Action>>) {
        match result {
            Ok(actions) => self.carry_out(n, actions),
            // The sender's fault (or a message the core cannot use yet): refused, nothing else.
            Err(e) => assert!(!is_local_failure(&e), "node {n} failed: {e}"),
        }
    }

    fn carry_out(&mut self, n: usize, actions: Vec<Action>) {
        let from = AuthorityIndex(n as u32);
        for action in actions {
            match action {
                Action::Broadcast(message) => {
                    let others = (0..AUTHORITIES).map(AuthorityIndex).filter(|a| *a != from);
                    self.send(from, others.collect(), message);
                }
                Action::Send { to, message } => self.send(from, vec![to], message),
                Action::Commit(sub) => self.checks.on_commit(n, &sub),
                Action::EquivocationDetected(evidence) => {
                    assert!(evidence.verify(committee()), "node {n}: false evidence");
                    assert_eq!(
                        evidence.first.author(),
                        BYZANTINE,
                        "node {n} reports an honest authority for equivocation"
                    );
                }
                Action::ReproposePayload(payload) => {
                    // As the coordinator does; a full mempool drops it.
                    let _refused_or_accepted = self.node(n).submit_transactions(payload);
                }
            }
        }
    }

    /// An honest message: it must validate; the Byzantine authority learns from it, honest
    /// recipients get it queued.
    fn send(&mut self, from: AuthorityIndex, to: Vec<AuthorityIndex>, message: ConsensusMessage) {
        let verified = validator()
            .verify_message(message.clone())
            .unwrap_or_else(|e| panic!("{from} sent a {} that fails: {e}", message.kind()));
        for to in to {
            if to == BYZANTINE {
                self.byzantine.observe(&message);
            } else if self.queue.len() < QUEUE_MAX {
                self.queue.push_back(Envelope {
                    from,
                    to: to.as_usize(),
                    message: verified.clone(),
                });
            }
        }
    }
}
