//! What a simulated run looks like: the committee, the network, the faults and the Byzantine
//! behaviours, all drawn from one seed.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::CoreConfig;
use crate::types::AuthorityIndex;

use super::faults::{FaultKind, Mix, Plan};

/// How a Byzantine authority misbehaves. Every behaviour signs with the authority's real key: it
/// can sign anything, so the honest nodes must reject what is wrong rather than what is unsigned.
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
    /// Signs headers whose parent references do not match the certificates they name.
    ForgedParents(ParentForgery),
    /// Stamps its headers far in the future (`created_at`), which a leader's commit may inherit.
    FutureTimestamps(FutureStamp),
    /// Sends its own certificates (summaries) to only some of its peers.
    WithholdCertificate,
    /// Answers sync requests with lies, or not at all, or too much; asks absurd ones.
    HostileSync(SyncLie),
    /// Sends properly signed headers of rounds inside the round window with made-up parents, many
    /// per round, to fill the peers' pending headers and missing certificates.
    InWindowJunk,
}

/// How [`Behaviour::ForgedParents`] lies about parents (the validator checks that references are
/// of `round - 1`, one per author, a quorum of them; not that they name those certificates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParentForgery {
    /// Every reference keeps its author but carries one and the same digest.
    ReuseDigest,
    /// The digests are rotated among the authors: each reference names another author's
    /// certificate.
    SwapAuthors,
    /// Each reference carries the digest of its author's certificate two rounds older.
    StaleRound,
}

/// What [`Behaviour::FutureTimestamps`] stamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FutureStamp {
    /// `created_at = u64::MAX`.
    Max,
    /// `created_at = now + 10 days`.
    TenDays,
}

/// What [`Behaviour::HostileSync`] does with sync traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncLie {
    /// Answers with certificates of other rounds than the ones asked.
    OtherRounds,
    /// Answers with the asked certificates, their header signatures replaced by garbage (the
    /// votes still prove the header digest).
    ForgedSignatures,
    /// Never answers.
    Withhold,
    /// Answers with one more certificate than the reply cap.
    Oversized,
    /// Asks for the rounds after `u64::MAX`.
    HugeAfterRound,
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

/// While it lasts, everything that carries `node`'s headers or certificates to a victim (from
/// anyone: broadcasts, summaries, sync replies) arrives `delay_ms` late: more than
/// `gc_depth_rounds` rounds, so the victims see `node`'s chain long after the others linked it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Straggler {
    pub node: AuthorityIndex,
    pub victims: Vec<AuthorityIndex>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub delay_ms: u64,
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
    /// The faults this run was drawn from (part of its replay command).
    pub mix: Mix,
    /// Set when the run is one named scenario (one fault kind, always present).
    pub scenario: Option<FaultKind>,
    /// The environment of the `replay` test that rebuilds this configuration (empty for a
    /// configuration built by hand: rerun its own test).
    pub replay_env: String,
    pub byzantine: BTreeMap<AuthorityIndex, Behaviour>,
    pub crashes: Vec<Crash>,
    pub partitions: Vec<Partition>,
    pub stragglers: Vec<Straggler>,
    pub latency: Latency,
    /// Extra delay on every link to and from these nodes, for the whole run.
    pub slow_nodes: BTreeMap<AuthorityIndex, u64>,
    /// Each node's clock is virtual time + its offset (honest offsets stay within
    /// `±max_clock_skew_ms / 2`, so any two honest clocks differ by at most the bound).
    pub clock_offsets_ms: BTreeMap<AuthorityIndex, i64>,
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
}

/// The run's duration when none is given.
pub const DEFAULT_DURATION_MS: u64 = 16_000;

impl SimConfig {
    /// A quiet network: no faults, small delays.
    pub fn calm(seed: u64, nodes: usize) -> SimConfig {
        SimConfig {
            seed,
            nodes,
            mix: Mix::none(),
            scenario: None,
            replay_env: String::new(),
            byzantine: BTreeMap::new(),
            crashes: Vec::new(),
            partitions: Vec::new(),
            stragglers: Vec::new(),
            latency: Latency {
                base_ms: 10,
                jitter_ms: 40,
                tail_probability: 0.0,
                tail_ms: 0,
            },
            slow_nodes: BTreeMap::new(),
            clock_offsets_ms: BTreeMap::new(),
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
        }
    }

    /// Every fault kind, each with its own probability, drawn from the seed, over
    /// [`DEFAULT_DURATION_MS`].
    pub fn random(seed: u64, nodes: usize) -> SimConfig {
        SimConfig::draw(seed, nodes, &Mix::all(), DEFAULT_DURATION_MS)
    }

    /// Faults of the kinds in `mix` drawn from the seed (each with its probability), at most f
    /// faulty authorities, every fault over before `heal_at_ms = duration / 2`.
    pub fn draw(seed: u64, nodes: usize, mix: &Mix, duration_ms: u64) -> SimConfig {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005e_ed0f_fa17);
        let mut config = SimConfig::calm(seed, nodes);
        config.mix = mix.clone();
        config.replay_env = format!(
            "DAG_SIM_SEED={seed} DAG_SIM_NODES={nodes} DAG_SIM_MS={duration_ms} DAG_SIM_MIX={}",
            mix.describe()
        );
        config.duration_ms = duration_ms;
        config.heal_at_ms = duration_ms / 2;
        config.latency = Latency {
            base_ms: rng.gen_range(5..30),
            jitter_ms: rng.gen_range(10..80),
            tail_probability: rng.gen_range(0.0..0.05),
            tail_ms: rng.gen_range(200..2_000),
        };
        let mut plan = Plan::new(&mut config, &mut rng);
        plan.draw(mix);
        plan.finish();
        config
    }

    /// One named fault kind, always present, with its [`FaultKind::companions`], on a network
    /// with random delays and nothing else.
    pub fn scenario(kind: FaultKind, seed: u64, nodes: usize, duration_ms: u64) -> SimConfig {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x05ce_7a71_0000);
        let mut config = SimConfig::calm(seed, nodes);
        config.mix = Mix::only(kind);
        config.scenario = Some(kind);
        config.replay_env = format!(
            "DAG_SIM_SEED={seed} DAG_SIM_NODES={nodes} DAG_SIM_MS={duration_ms} DAG_SIM_SCENARIO={}",
            kind.name()
        );
        config.duration_ms = duration_ms;
        config.heal_at_ms = duration_ms / 2;
        config.latency.base_ms = rng.gen_range(5..30);
        config.latency.jitter_ms = rng.gen_range(10..80);
        let mut plan = Plan::new(&mut config, &mut rng);
        plan.add(kind);
        for &companion in kind.companions() {
            plan.add(companion);
        }
        plan.finish();
        config
    }

    /// The authorities that follow the protocol (crashing ones included).
    pub fn honest(&self) -> impl Iterator<Item = AuthorityIndex> + '_ {
        (0..self.nodes as u32)
            .map(AuthorityIndex)
            .filter(|a| !self.byzantine.contains_key(a))
    }

    /// Byzantine or crashing: at most f of them keep liveness owed.
    pub fn faulty(&self) -> BTreeSet<AuthorityIndex> {
        self.byzantine
            .keys()
            .copied()
            .chain(self.crashes.iter().map(|c| c.node))
            .collect()
    }

    /// The least commit rate every honest running node owes after healing: one commit per four
    /// leader timeouts (a leader round and its voting round, each waiting at most one timeout,
    /// twice over for a leader that is down), each timeout stretched by the three message delays
    /// of a round (header, vote, certificate) over the slowest validator's links.
    pub fn min_commit_rate_per_s(&self) -> f64 {
        let slowest_ms = self.slow_nodes.values().copied().max().unwrap_or(0);
        let period_ms = 4 * (self.core.leader_timeout_ms + 3 * slowest_ms);
        1_000.0 / period_ms as f64
    }

    /// Time a node gets after healing, or after its last restart, to catch up before its commit
    /// rate is measured.
    pub fn catch_up_grace_ms(&self) -> u64 {
        4 * self.core.leader_timeout_ms
    }

    pub fn describe(&self) -> String {
        format!(
            "seed={} nodes={} mix={} byzantine={:?} crashes={:?} partitions={:?} stragglers={:?} slow={:?} clocks={:?} latency={:?} drop={:.3} dup={:.3} gc_depth={} window={} reply_cap={} pending_headers_max={} heal_at={}ms duration={}ms",
            self.seed,
            self.nodes,
            self.mix.describe(),
            self.byzantine,
            self.crashes,
            self.partitions,
            self.stragglers,
            self.slow_nodes,
            self.clock_offsets_ms,
            self.latency,
            self.drop_probability,
            self.duplicate_probability,
            self.core.gc_depth_rounds,
            self.core.round_window_rounds,
            self.core.sync_response_certificates_max,
            self.core.pending_headers_max,
            self.heal_at_ms,
            self.duration_ms
        )
    }
}
