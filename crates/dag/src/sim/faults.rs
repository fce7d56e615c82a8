//! The kinds of fault a run can hold, which of them a run draws from ([`Mix`]), and how each is
//! drawn from the seed ([`Plan`]).

use std::collections::BTreeSet;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::types::AuthorityIndex;

use super::config::{
    Behaviour, Crash, FutureStamp, ParentForgery, Partition, SimConfig, Straggler, SyncLie,
};

/// Rounds take about this long in the simulated network (a header delay plus a round trip); used
/// only to size faults meant to last a number of rounds.
pub const ROUND_ESTIMATE_MS: u64 = 100;

/// One kind of fault. A named scenario is one kind, always present; a random run draws each kind
/// of its mix with the probability given here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    // A faulty authority each (at most f of these in one run).
    Equivocate,
    WithholdVotes,
    InvalidSignatures,
    JunkRounds,
    Dead,
    ForgedParents,
    FutureTimestamps,
    WithheldLeaderCertificate,
    HostileSync,
    InWindowJunk,
    /// Crash and restart from the store, once or twice, before healing.
    Crash,
    /// One crash long enough that the others move more than `round_window_rounds` ahead.
    RestartBeyondWindow,
    // The network and the configuration.
    /// Loss and duplication before healing.
    Loss,
    Partition,
    /// Every clock off by up to half the skew bound, either way.
    ClockSkew,
    /// One validator whose every link is slow, for the whole run.
    SlowValidator,
    StragglerChain,
    /// A garbage collection depth of a few rounds.
    ShallowGc,
    /// A sync reply cap below one round's certificates.
    SmallReplyCap,
    /// Small bounds on pending headers, pending certificates and missing digests.
    TightBounds,
}

impl FaultKind {
    pub const ALL: [FaultKind; 20] = [
        FaultKind::Equivocate,
        FaultKind::WithholdVotes,
        FaultKind::InvalidSignatures,
        FaultKind::JunkRounds,
        FaultKind::Dead,
        FaultKind::ForgedParents,
        FaultKind::FutureTimestamps,
        FaultKind::WithheldLeaderCertificate,
        FaultKind::HostileSync,
        FaultKind::InWindowJunk,
        FaultKind::Crash,
        FaultKind::RestartBeyondWindow,
        FaultKind::Loss,
        FaultKind::Partition,
        FaultKind::ClockSkew,
        FaultKind::SlowValidator,
        FaultKind::StragglerChain,
        FaultKind::ShallowGc,
        FaultKind::SmallReplyCap,
        FaultKind::TightBounds,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Equivocate => "equivocate",
            FaultKind::WithholdVotes => "withhold_votes",
            FaultKind::InvalidSignatures => "invalid_signatures",
            FaultKind::JunkRounds => "junk_rounds",
            FaultKind::Dead => "dead",
            FaultKind::ForgedParents => "forged_parents",
            FaultKind::FutureTimestamps => "future_timestamps",
            FaultKind::WithheldLeaderCertificate => "withheld_leader_certificate",
            FaultKind::HostileSync => "hostile_sync",
            FaultKind::InWindowJunk => "in_window_junk",
            FaultKind::Crash => "crash",
            FaultKind::RestartBeyondWindow => "restart_beyond_window",
            FaultKind::Loss => "loss",
            FaultKind::Partition => "partition",
            FaultKind::ClockSkew => "clock_skew",
            FaultKind::SlowValidator => "slow_validator",
            FaultKind::StragglerChain => "straggler_chain",
            FaultKind::ShallowGc => "shallow_gc",
            FaultKind::SmallReplyCap => "small_reply_cap",
            FaultKind::TightBounds => "tight_bounds",
        }
    }

    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// What a named scenario of this kind adds so the kind has something to bite on: a small
    /// reply cap matters to a node that catches up, a shallow collection depth to commits that
    /// reach deep, after crashes and partitions.
    pub fn companions(self) -> &'static [FaultKind] {
        match self {
            FaultKind::SmallReplyCap => &[FaultKind::RestartBeyondWindow],
            FaultKind::ShallowGc => &[FaultKind::Crash, FaultKind::Partition, FaultKind::Loss],
            FaultKind::StragglerChain => &[FaultKind::ShallowGc, FaultKind::Crash],
            FaultKind::TightBounds => &[FaultKind::InWindowJunk, FaultKind::Loss],
            _ => &[],
        }
    }

    /// Whether this kind makes one authority faulty (Byzantine, or crashing).
    fn is_faulty_authority(self) -> bool {
        self <= FaultKind::RestartBeyondWindow
    }

    /// Weight among the faulty-authority kinds (crashes are the most common fault).
    fn authority_weight(self) -> u32 {
        match self {
            FaultKind::Crash => 4,
            _ => 1,
        }
    }

    /// Probability of a network or configuration kind in a random run.
    fn probability(self) -> f64 {
        match self {
            FaultKind::Loss => 0.9,
            FaultKind::Partition => 0.6,
            FaultKind::ClockSkew => 0.5,
            FaultKind::SlowValidator => 0.2,
            FaultKind::StragglerChain => 0.2,
            FaultKind::ShallowGc => 0.25,
            FaultKind::SmallReplyCap => 0.15,
            FaultKind::TightBounds => 0.15,
            _ => 0.0,
        }
    }
}

/// The fault kinds a random run draws from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix(BTreeSet<FaultKind>);

impl Mix {
    pub fn all() -> Mix {
        Mix(FaultKind::ALL.into_iter().collect())
    }

    pub fn none() -> Mix {
        Mix(BTreeSet::new())
    }

    pub fn only(kind: FaultKind) -> Mix {
        Mix(BTreeSet::from([kind]))
    }

    /// Every kind but these.
    pub fn all_but(excluded: &[FaultKind]) -> Mix {
        let mut mix = Mix::all();
        for k in excluded {
            mix.0.remove(k);
        }
        mix
    }

    pub fn contains(&self, kind: FaultKind) -> bool {
        self.0.contains(&kind)
    }

    /// `all`, `all-a-b` (all but a and b), or `a+b`; [`Mix::parse`] reads it back.
    pub fn describe(&self) -> String {
        let missing: Vec<&str> = FaultKind::ALL
            .into_iter()
            .filter(|k| !self.0.contains(k))
            .map(FaultKind::name)
            .collect();
        if missing.is_empty() {
            "all".to_string()
        } else if missing.len() <= FaultKind::ALL.len() / 2 {
            format!("all-{}", missing.join("-"))
        } else if self.0.is_empty() {
            "none".to_string()
        } else {
            self.0
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join("+")
        }
    }

    pub fn parse(text: &str) -> Result<Mix, String> {
        let kind = |name: &str| {
            FaultKind::from_name(name).ok_or_else(|| format!("unknown fault kind {name:?}"))
        };
        if text == "none" {
            return Ok(Mix::none());
        }
        if let Some(rest) = text.strip_prefix("all") {
            let excluded = rest
                .split('-')
                .filter(|s| !s.is_empty())
                .map(kind)
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Mix::all_but(&excluded));
        }
        Ok(Mix(text.split('+').map(kind).collect::<Result<_, _>>()?))
    }
}

/// Draws faults into a configuration.
pub(super) struct Plan<'a> {
    config: &'a mut SimConfig,
    rng: &'a mut ChaCha8Rng,
    /// The authorities in a random order: faulty ones are taken from the front.
    order: Vec<AuthorityIndex>,
    faulty_taken: usize,
}

impl<'a> Plan<'a> {
    pub(super) fn new(config: &'a mut SimConfig, rng: &'a mut ChaCha8Rng) -> Plan<'a> {
        let mut order: Vec<AuthorityIndex> = (0..config.nodes as u32).map(AuthorityIndex).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.gen_range(0..=i));
        }
        Plan {
            config,
            rng,
            order,
            faulty_taken: 0,
        }
    }

    fn f(&self) -> usize {
        (self.config.nodes - 1) / 3
    }

    /// Up to f faulty authorities of the mix's authority kinds, then each network kind with its
    /// probability.
    pub(super) fn draw(&mut self, mix: &Mix) {
        let authority_kinds: Vec<FaultKind> = FaultKind::ALL
            .into_iter()
            .filter(|k| k.is_faulty_authority() && mix.contains(*k))
            .collect();
        let total: u32 = authority_kinds.iter().map(|k| k.authority_weight()).sum();
        if total > 0 {
            for _ in 0..self.rng.gen_range(0..=self.f()) {
                let mut pick = self.rng.gen_range(0..total);
                for &k in &authority_kinds {
                    if pick < k.authority_weight() {
                        self.add(k);
                        break;
                    }
                    pick -= k.authority_weight();
                }
            }
        }
        for kind in FaultKind::ALL {
            if !kind.is_faulty_authority()
                && mix.contains(kind)
                && self.rng.gen_bool(kind.probability())
            {
                self.add(kind);
            }
        }
    }

    /// Adds one fault of this kind (an authority kind takes the next faulty authority, if any of
    /// the f is left).
    pub(super) fn add(&mut self, kind: FaultKind) {
        if kind.is_faulty_authority() {
            if self.faulty_taken >= self.f() {
                return;
            }
            let node = self.order[self.faulty_taken];
            self.faulty_taken += 1;
            self.add_faulty(kind, node);
        } else {
            self.add_network(kind);
        }
    }

    fn add_faulty(&mut self, kind: FaultKind, node: AuthorityIndex) {
        let behaviour = match kind {
            FaultKind::Equivocate => Behaviour::Equivocate,
            FaultKind::WithholdVotes => Behaviour::WithholdVotes,
            FaultKind::InvalidSignatures => Behaviour::InvalidSignatures,
            FaultKind::JunkRounds => Behaviour::JunkRounds,
            FaultKind::Dead => Behaviour::Dead,
            FaultKind::ForgedParents => Behaviour::ForgedParents(self.pick(&[
                ParentForgery::ReuseDigest,
                ParentForgery::SwapAuthors,
                ParentForgery::StaleRound,
            ])),
            FaultKind::FutureTimestamps => {
                Behaviour::FutureTimestamps(self.pick(&[FutureStamp::Max, FutureStamp::TenDays]))
            }
            FaultKind::WithheldLeaderCertificate => Behaviour::WithholdCertificate,
            FaultKind::HostileSync => Behaviour::HostileSync(self.pick(&[
                SyncLie::OtherRounds,
                SyncLie::ForgedSignatures,
                SyncLie::Withhold,
                SyncLie::Oversized,
                SyncLie::HugeAfterRound,
            ])),
            FaultKind::InWindowJunk => Behaviour::InWindowJunk,
            FaultKind::Crash => return self.add_crashes(node),
            FaultKind::RestartBeyondWindow => return self.add_long_crash(node),
            _ => unreachable!("{kind:?} is not an authority fault"),
        };
        self.config.byzantine.insert(node, behaviour);
    }

    fn pick<T: Copy>(&mut self, options: &[T]) -> T {
        options[self.rng.gen_range(0..options.len())]
    }

    fn add_crashes(&mut self, node: AuthorityIndex) {
        let heal = self.config.heal_at_ms;
        for _ in 0..self.rng.gen_range(1..=2) {
            self.config.crashes.push(Crash {
                node,
                at_ms: self.rng.gen_range(200..heal.max(201)),
                down_ms: self.rng.gen_range(100..3_000),
            });
        }
    }

    /// Down for more than `round_window_rounds` rounds: the window shrinks to 20 rounds (and the
    /// collection depth below it) so the run stays short, and the restart counts as the healing.
    fn add_long_crash(&mut self, node: AuthorityIndex) {
        let core = &mut self.config.core;
        core.round_window_rounds = 20;
        core.gc_depth_rounds = core.gc_depth_rounds.min(10);
        let down_ms = (core.round_window_rounds + 10) * ROUND_ESTIMATE_MS;
        let at_ms = self.rng.gen_range(300..800);
        self.config.crashes.push(Crash {
            node,
            at_ms,
            down_ms,
        });
        let restart = at_ms + down_ms;
        // The restarted node needs the catch-up grace and then a few commit periods.
        let needed = restart + self.config.catch_up_grace_ms() + 4_000;
        self.config.duration_ms = self.config.duration_ms.max(needed);
        self.config.heal_at_ms = self.config.heal_at_ms.max(restart);
    }

    fn add_network(&mut self, kind: FaultKind) {
        let nodes = self.config.nodes;
        match kind {
            FaultKind::Loss => {
                self.config.drop_probability = self.rng.gen_range(0.0..0.1);
                self.config.duplicate_probability = self.rng.gen_range(0.0..0.05);
            }
            FaultKind::Partition => self.add_partition(),
            FaultKind::ClockSkew => {
                let half = (self.config.core.max_clock_skew_ms / 2) as i64;
                for i in 0..nodes as u32 {
                    let offset = self.rng.gen_range(-half..=half);
                    self.config
                        .clock_offsets_ms
                        .insert(AuthorityIndex(i), offset);
                }
            }
            FaultKind::SlowValidator => {
                let node = AuthorityIndex(self.rng.gen_range(0..nodes as u32));
                let extra = self.rng.gen_range(100..400);
                self.config.slow_nodes.insert(node, extra);
            }
            FaultKind::StragglerChain => self.add_straggler(),
            FaultKind::ShallowGc => {
                self.config.core.gc_depth_rounds = self.pick(&[2, 3, 4, 6]);
            }
            FaultKind::SmallReplyCap => {
                self.config.core.sync_response_certificates_max =
                    self.rng.gen_range((nodes / 3).max(1)..nodes);
            }
            FaultKind::TightBounds => {
                let core = &mut self.config.core;
                core.pending_headers_max = self.rng.gen_range(2 * nodes..4 * nodes);
                core.missing_certificates_max = self.rng.gen_range(4 * nodes..8 * nodes);
                core.pending_certificates_max = self.rng.gen_range(8 * nodes..16 * nodes);
            }
            _ => unreachable!("{kind:?} is an authority fault"),
        }
    }

    fn add_partition(&mut self) {
        let heal = self.config.heal_at_ms;
        let start_ms = self.rng.gen_range(0..heal / 2);
        let end_ms = self.rng.gen_range(start_ms + 200..heal.max(start_ms + 201));
        let split = self.rng.gen_range(1..self.config.nodes);
        let mut order = self.order.clone();
        let shift = self.rng.gen_range(0..order.len());
        order.rotate_left(shift);
        self.config.partitions.push(Partition {
            start_ms,
            end_ms,
            groups: vec![order[..split].to_vec(), order[split..].to_vec()],
        });
    }

    /// A node whose headers and certificates reach up to f of the others late; the delay is set
    /// in [`Plan::finish`], once the collection depth is known.
    fn add_straggler(&mut self) {
        let heal = self.config.heal_at_ms;
        let nodes = self.config.nodes as u32;
        let node = AuthorityIndex(self.rng.gen_range(0..nodes));
        let count = self.rng.gen_range(1..=self.f().max(1));
        let mut victims = Vec::new();
        while victims.len() < count {
            let v = AuthorityIndex(self.rng.gen_range(0..nodes));
            if v != node && !victims.contains(&v) {
                victims.push(v);
            }
        }
        victims.sort();
        let start_ms = self.rng.gen_range(0..heal / 2);
        let end_ms = (start_ms + self.rng.gen_range(1_000..3_000)).min(heal);
        self.config.stragglers.push(Straggler {
            node,
            victims,
            start_ms,
            end_ms,
            delay_ms: 0,
        });
    }

    /// Settles what depends on the whole draw: straggler delays beyond the collection depth,
    /// and crash times after the previous restart of the same node.
    pub(super) fn finish(self) {
        let rounds = self.config.core.gc_depth_rounds + 3;
        for s in &mut self.config.stragglers {
            s.delay_ms = rounds * ROUND_ESTIMATE_MS;
        }
        let crashes = &mut self.config.crashes;
        crashes.sort_by_key(|c| (c.node, c.at_ms));
        let mut last_up: Option<(AuthorityIndex, u64)> = None;
        for c in crashes.iter_mut() {
            if let Some((node, up)) = last_up {
                if node == c.node {
                    c.at_ms = c.at_ms.max(up + 1);
                }
            }
            last_up = Some((c.node, c.at_ms + c.down_ms));
        }
    }
}
