//! Newtypes for the quantities consensus talks about.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A DAG round. Round 0 holds the genesis certificates.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Round(pub u64);

impl Round {
    pub const GENESIS: Round = Round(0);
    /// The highest round a message from the network may carry: far beyond any real run (a round
    /// a millisecond for 146 million years), and far enough below `u64::MAX` that round
    /// arithmetic on a validated round never overflows.
    pub const MAX: Round = Round(1 << 62);

    /// The next round, saturating at `u64::MAX` (rounds from the wire are at most [`Round::MAX`],
    /// so this saturates only on a value no message can carry).
    pub fn next(self) -> Round {
        Round(self.0.saturating_add(1))
    }

    /// The previous round, saturating at genesis.
    pub fn prev(self) -> Round {
        Round(self.0.saturating_sub(1))
    }

    pub fn is_even(self) -> bool {
        self.0.is_multiple_of(2)
    }

    pub fn saturating_sub(self, rounds: u64) -> Round {
        Round(self.0.saturating_sub(rounds))
    }

    pub fn saturating_add(self, rounds: u64) -> Round {
        Round(self.0.saturating_add(rounds))
    }
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// A committee epoch. Messages of another epoch are rejected.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

/// Position of an authority in the committee (sorted by public key).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct AuthorityIndex(pub u32);

impl AuthorityIndex {
    pub fn as_usize(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for AuthorityIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A, B, C, ... for the first 26 authorities: reads like the papers' figures.
        if self.0 < 26 {
            write!(f, "{}", (b'A' + self.0 as u8) as char)
        } else {
            write!(f, "#{}", self.0)
        }
    }
}

/// Voting power of an authority.
pub type Stake = u64;

/// Milliseconds on the driver's clock. The core never reads a clock: time is an input.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct TimestampMs(pub u64);

impl TimestampMs {
    pub fn saturating_add_ms(self, ms: u64) -> TimestampMs {
        TimestampMs(self.0.saturating_add(ms))
    }

    pub fn saturating_sub(self, other: TimestampMs) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

/// A 32-byte BLAKE3 digest.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A transaction as consensus sees it: opaque bytes, shared rather than copied.
pub type Transaction = bytes::Bytes;
