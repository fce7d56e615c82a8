//! Which peers a node keeps listening to: a sans-IO policy over their offences, with the time
//! passed in.
//!
//! Only an *offence* counts against a peer: something no honest peer sends (a bad signature, a
//! malformed message, an equivocation, a blob that does not match its hash). Being ahead of us,
//! a late vote, or a message we already hold is what honest peers do while we are behind or
//! restarting; [`classify`] says which core errors are which, exhaustively, so a new error must be
//! placed on one side before the crate compiles.
//!
//! Each offence adds its weight to the peer's score, a leaky bucket that drains
//! [`PolicyConfig::decay_per_second`] points every second: an old mistake is forgiven, a steady
//! stream of junk is not. At [`PolicyConfig::ban_score`] the peer is banned for
//! [`PolicyConfig::ban_seconds`], doubled for each ban still remembered, never longer than
//! [`PolicyConfig::ban_seconds_max`]; its score starts again from zero when the ban ends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use trainmesh_dag::DagError;

/// Something no honest peer sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offence {
    /// Undecodable, oversized, or breaking a structural rule of the protocol.
    Malformed,
    /// A signature that does not verify, or one from outside the committee.
    InvalidSignature,
    /// Two headers signed for one round.
    Equivocation,
    /// A transaction that fails its signature or chain check.
    InvalidTransaction,
    /// A blob whose bytes do not match the hash asked for.
    WrongBlob,
    /// A message only validators may send, from a peer that is not one.
    NotAValidator,
}

impl Offence {
    /// Score points the offence adds.
    pub fn weight(self) -> u64 {
        match self {
            Offence::Equivocation => 100,
            Offence::InvalidSignature | Offence::WrongBlob => 25,
            Offence::Malformed | Offence::NotAValidator => 20,
            Offence::InvalidTransaction => 5,
        }
    }
}

/// Whether a core error is the sender's offence (`Some`) or a state honest peers can put us in
/// (`None`: we are behind, restarting, or short of room).
pub fn classify(e: &DagError) -> Option<Offence> {
    match e {
        DagError::Decode(_)
        | DagError::WrongEpoch { .. }
        | DagError::WrongChain { .. }
        | DagError::GenesisFromNetwork
        | DagError::ParentsBelowQuorum { .. }
        | DagError::DuplicateParent { .. }
        | DagError::VotesBelowQuorum { .. }
        | DagError::DuplicateVoter { .. }
        | DagError::TooManyItems { .. }
        | DagError::RoundOutOfRange { .. }
        | DagError::ParentMismatch { .. }
        | DagError::HeaderBeforeParents { .. } => Some(Offence::Malformed),
        DagError::UnknownAuthority(_) | DagError::InvalidSignature { .. } => {
            Some(Offence::InvalidSignature)
        }
        DagError::Equivocation { .. } => Some(Offence::Equivocation),
        // A peer ahead of us is what a restarted validator sees; a vote for a header we no
        // longer hold is what a restart on our side makes.
        // A header stamped ahead of our clock may be an honest clock's skew; a full share of
        // waiting headers is refused without blame (the quota is the defence).
        DagError::RoundTooFarAhead { .. }
        | DagError::UnexpectedVote { .. }
        | DagError::HeaderFromFuture { .. }
        | DagError::AuthorQuotaExceeded { .. } => None,
        // Our own limits or our own storage: never the sender's fault.
        DagError::MempoolFull { .. }
        | DagError::TransactionTooLarge { .. }
        | DagError::InvalidCommittee { .. }
        | DagError::Storage { .. }
        | DagError::CorruptStore { .. } => None,
    }
}

/// The bounds of the policy, each with its unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Score at which a peer is banned.
    pub ban_score: u64,
    /// Score points forgiven every second.
    pub decay_per_second: u64,
    /// Length of a first ban.
    pub ban_seconds: u64,
    /// The longest ban, however often a peer comes back to offend.
    pub ban_seconds_max: u64,
    /// Peers remembered at once (the least suspicious are forgotten first).
    pub peers_tracked_max: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            ban_score: 100,
            decay_per_second: 2,
            ban_seconds: 60,
            ban_seconds_max: 600,
            peers_tracked_max: 4_096,
        }
    }
}

/// What an offence led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded; the peer's score is now this.
    Noted { score: u64 },
    /// The peer is banned until then (disconnect it, refuse it).
    Banned { until: Instant },
}

#[derive(Clone, Debug)]
struct Record {
    /// In thousandths of a point, so that decay is exact per millisecond.
    score_milli: u64,
    updated: Instant,
    banned_until: Option<Instant>,
    /// Bans remembered (for their doubling), forgotten one ban length after the last ends.
    bans: u32,
}

/// Offence scores and bans of peers keyed by `K` (a libp2p `PeerId` in the node).
#[derive(Debug)]
pub struct PeerPolicy<K> {
    config: PolicyConfig,
    peers: BTreeMap<K, Record>,
}

impl<K: Ord + Clone> PeerPolicy<K> {
    pub fn new(config: PolicyConfig) -> Self {
        PeerPolicy {
            config,
            peers: BTreeMap::new(),
        }
    }

    /// Records an offence by `peer` at `now`.
    pub fn offend(&mut self, peer: &K, offence: Offence, now: Instant) -> Verdict {
        if !self.peers.contains_key(peer) {
            self.make_room(now);
            self.peers.insert(
                peer.clone(),
                Record {
                    score_milli: 0,
                    updated: now,
                    banned_until: None,
                    bans: 0,
                },
            );
        }
        let config = self.config.clone();
        let record = self.peers.get_mut(peer).expect("inserted above");
        if let Some(until) = record.banned_until.filter(|u| *u > now) {
            return Verdict::Banned { until };
        }
        decay(record, &config, now);
        record.score_milli = record
            .score_milli
            .saturating_add(offence.weight().saturating_mul(1_000));
        if record.score_milli < config.ban_score.saturating_mul(1_000) {
            return Verdict::Noted {
                score: record.score_milli / 1_000,
            };
        }
        let doubling = 1u64.checked_shl(record.bans).unwrap_or(u64::MAX);
        let seconds = config
            .ban_seconds
            .saturating_mul(doubling)
            .min(config.ban_seconds_max);
        let until = now + Duration::from_secs(seconds);
        record.bans = record.bans.saturating_add(1);
        record.banned_until = Some(until);
        record.score_milli = 0;
        record.updated = until;
        Verdict::Banned { until }
    }

    pub fn is_banned(&self, peer: &K, now: Instant) -> bool {
        self.peers
            .get(peer)
            .and_then(|r| r.banned_until)
            .is_some_and(|until| until > now)
    }

    /// The peer's score at `now` (whole points).
    pub fn score(&self, peer: &K, now: Instant) -> u64 {
        self.peers.get(peer).map_or(0, |r| {
            let mut r = r.clone();
            decay(&mut r, &self.config, now);
            r.score_milli / 1_000
        })
    }

    /// Peers remembered (offended recently, or banned, or banned not long ago).
    pub fn tracked(&self) -> usize {
        self.peers.len()
    }

    /// Forgets every peer whose score drained to zero and whose bans are long over.
    pub fn forget_forgiven(&mut self, now: Instant) {
        let config = self.config.clone();
        self.peers.retain(|_, r| {
            decay(r, &config, now);
            let memory = Duration::from_secs(config.ban_seconds_max);
            let remembered = r.banned_until.is_some_and(|u| u + memory > now);
            r.score_milli > 0 || remembered
        });
    }

    fn make_room(&mut self, now: Instant) {
        if self.peers.len() < self.config.peers_tracked_max {
            return;
        }
        self.forget_forgiven(now);
        if self.peers.len() < self.config.peers_tracked_max {
            return;
        }
        // Forget the least suspicious peer that is not banned now.
        let victim = self
            .peers
            .iter()
            .filter(|(_, r)| r.banned_until.is_none_or(|u| u <= now))
            .min_by_key(|(_, r)| r.score_milli)
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            self.peers.remove(&k);
        }
    }
}

fn decay(record: &mut Record, config: &PolicyConfig, now: Instant) {
    let elapsed_ms = now.saturating_duration_since(record.updated).as_millis() as u64;
    // Thousandths of a point per millisecond = points per second.
    record.score_milli = record
        .score_milli
        .saturating_sub(elapsed_ms.saturating_mul(config.decay_per_second));
    record.updated = record.updated.max(now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use trainmesh_dag::{AuthorityIndex, DecodeError, Round};

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    fn ahead() -> DagError {
        DagError::RoundTooFarAhead {
            round: Round(450),
            ours: Round(12),
            window_rounds: 200,
        }
    }

    fn junk() -> DagError {
        DagError::Decode(DecodeError::Malformed {
            reason: "truncated".into(),
        })
    }

    /// What the coordinator does with a core error: penalize offences only.
    fn on_error(p: &mut PeerPolicy<u32>, peer: u32, e: &DagError, now: Instant) -> bool {
        if let Some(o) = classify(e) {
            p.offend(&peer, o, now);
        }
        p.is_banned(&peer, now)
    }

    #[test]
    fn a_peer_that_is_merely_ahead_is_never_banned() {
        let mut p = PeerPolicy::new(PolicyConfig::default());
        let start = Instant::now();
        // A restarted validator 400 rounds behind sees every message of every peer refused as
        // too far ahead, a thousand a second, for ten minutes.
        for i in 0..600_000 {
            assert!(
                !on_error(&mut p, 1, &ahead(), at(start, i)),
                "banned at {i} ms"
            );
        }
        let late_vote = DagError::UnexpectedVote {
            voter: AuthorityIndex(1),
            expected: None,
            actual: Default::default(),
        };
        assert!(!on_error(&mut p, 1, &late_vote, at(start, 600_001)));
        assert_eq!(p.score(&1, at(start, 600_001)), 0);
        assert_eq!(p.tracked(), 0);
    }

    #[test]
    fn a_junk_sending_peer_is_banned_and_others_are_not() {
        let mut p = PeerPolicy::new(PolicyConfig::default());
        let start = Instant::now();
        let mut banned_at = None;
        for i in 0..100 {
            let now = at(start, i * 10);
            on_error(&mut p, 7, &ahead(), now);
            if on_error(&mut p, 9, &junk(), now) && banned_at.is_none() {
                banned_at = Some(i);
            }
        }
        // Six malformed messages in 50 ms reach the ban score (five, less 50 ms of decay, do not).
        assert_eq!(banned_at, Some(5));
        assert!(!p.is_banned(&7, at(start, 1_000)));
        // Banned for a minute, then let in again with a clean score.
        assert!(p.is_banned(&9, at(start, 60_049)));
        assert!(!p.is_banned(&9, at(start, 60_050)));
        assert_eq!(p.score(&9, at(start, 60_050)), 0);
    }

    #[test]
    fn a_past_offender_recovers() {
        let mut p = PeerPolicy::new(PolicyConfig::default());
        let start = Instant::now();
        // One malformed message every 11 s drains faster than it fills (2 points/s): never
        // banned, however long it goes on.
        for i in 0..1_000 {
            let now = at(start, i * 11_000);
            assert!(!on_error(&mut p, 3, &junk(), now), "banned at offence {i}");
        }
        let last = at(start, 999 * 11_000);
        assert_eq!(p.score(&3, last), 20);
        // Quiet for ten seconds: forgiven and forgotten.
        assert_eq!(p.score(&3, last + Duration::from_secs(10)), 0);
        p.forget_forgiven(last + Duration::from_secs(10));
        assert_eq!(p.tracked(), 0);
        // Four offences at once are not yet a ban; after 40 s of quiet, four more are not either.
        for _ in 0..4 {
            on_error(&mut p, 3, &junk(), last + Duration::from_secs(20));
        }
        for _ in 0..4 {
            on_error(&mut p, 3, &junk(), last + Duration::from_secs(60));
        }
        assert!(!p.is_banned(&3, last + Duration::from_secs(60)));
    }

    #[test]
    fn repeated_bans_double_and_stay_bounded() {
        let mut p = PeerPolicy::new(PolicyConfig::default());
        let mut now = Instant::now();
        let mut lengths = Vec::new();
        for _ in 0..8 {
            let until = loop {
                if let Verdict::Banned { until } = p.offend(&5, Offence::Equivocation, now) {
                    break until;
                }
            };
            lengths.push((until - now).as_secs());
            // Offending while banned changes nothing.
            let during = until - Duration::from_secs(1);
            assert_eq!(
                p.offend(&5, Offence::Malformed, during),
                Verdict::Banned { until }
            );
            now = until;
        }
        assert_eq!(lengths, vec![60, 120, 240, 480, 600, 600, 600, 600]);
        assert!(!p.is_banned(&5, now));
    }

    #[test]
    fn tracked_peers_are_bounded() {
        let mut p = PeerPolicy::new(PolicyConfig {
            peers_tracked_max: 8,
            ..PolicyConfig::default()
        });
        let now = Instant::now();
        for peer in 0..100u32 {
            p.offend(&peer, Offence::InvalidTransaction, now);
        }
        assert_eq!(p.tracked(), 8);
    }

    #[test]
    fn offences_and_honest_states_are_told_apart() {
        let sig = DagError::InvalidSignature {
            signer: AuthorityIndex(2),
            what: "header",
        };
        assert_eq!(classify(&sig), Some(Offence::InvalidSignature));
        assert_eq!(classify(&junk()), Some(Offence::Malformed));
        assert_eq!(classify(&ahead()), None);
        let full = DagError::MempoolFull {
            len_bytes: 1,
            max_bytes: 1,
        };
        assert_eq!(classify(&full), None);
    }
}
