//! Newtypes of the ledger's domain: addresses, amounts, ids, time.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ContractError;

/// Hex strings in human-readable formats (JSON), raw bytes in the canonical one.
macro_rules! hex_serde {
    ($name:ident, $what:literal) => {
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&hex::encode(self.0))
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    let bytes = hex::decode(s.trim_start_matches("0x"))
                        .map_err(|_| serde::de::Error::custom(concat!($what, " is not hex")))?;
                    let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
                        serde::de::Error::custom(concat!($what, " is not 32 bytes"))
                    })?;
                    Ok($name(bytes))
                } else {
                    <[u8; 32]>::deserialize(d).map($name)
                }
            }
        }
    };
}

/// An account address: BLAKE3 of a domain tag and the account's ed25519 public key. Hex in JSON,
/// 32 raw bytes in the canonical encoding.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 32]);

hex_serde!(Address, "address");

impl Address {
    pub fn from_public_key(public_key: &[u8; 32]) -> Address {
        let mut h = blake3::Hasher::new();
        h.update(b"trainmesh/address/v1");
        h.update(public_key);
        Address(*h.finalize().as_bytes())
    }

    /// The address of a module's own account (e.g. a job's escrow); no key can sign for it.
    pub fn module(name: &str) -> Address {
        let mut h = blake3::Hasher::new();
        h.update(b"trainmesh/module-address/v1");
        h.update(name.as_bytes());
        Address(*h.finalize().as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Result<Address, ContractError> {
        let bytes =
            hex::decode(s.trim_start_matches("0x")).map_err(|_| ContractError::Invalid {
                what: "address",
                reason: "not hex".into(),
            })?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| ContractError::Invalid {
            what: "address",
            reason: "not 32 bytes".into(),
        })?;
        Ok(Address(bytes))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

/// An amount of TRAIN in base units (1 TRAIN = 10⁹ units). All arithmetic is checked. In JSON a
/// decimal string of base units (exact beyond 2⁵³), in the canonical encoding a u128.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub u128);

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.0.to_string())
        } else {
            s.serialize_u128(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse::<u128>().map(Amount).map_err(|_| {
                serde::de::Error::custom(format!(
                    "amount {s:?} is not a whole number of base units"
                ))
            })
        } else {
            u128::deserialize(d).map(Amount)
        }
    }
}

/// Base units per TRAIN.
pub const UNITS_PER_TRAIN: u128 = 1_000_000_000;

/// Basis points: 10,000 = 100 %.
pub const BPS_DENOMINATOR: u128 = 10_000;

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub fn from_train(train: u64) -> Amount {
        Amount(train as u128 * UNITS_PER_TRAIN)
    }

    pub fn checked_add(self, other: Amount) -> Result<Amount, ContractError> {
        self.0
            .checked_add(other.0)
            .map(Amount)
            .ok_or(ContractError::Overflow)
    }

    pub fn checked_sub(self, other: Amount) -> Result<Amount, ContractError> {
        self.0
            .checked_sub(other.0)
            .map(Amount)
            .ok_or(ContractError::Underflow)
    }

    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount(self.0.saturating_sub(other.0))
    }

    pub fn checked_mul(self, n: u128) -> Result<Amount, ContractError> {
        self.0
            .checked_mul(n)
            .map(Amount)
            .ok_or(ContractError::Overflow)
    }

    /// `self × bps / 10,000`, rounded down.
    pub fn mul_bps(self, bps: u32) -> Amount {
        // (a × b) / d without overflow: split a into quotient and remainder by d.
        let (q, r) = (self.0 / BPS_DENOMINATOR, self.0 % BPS_DENOMINATOR);
        Amount(q * bps as u128 + r * bps as u128 / BPS_DENOMINATOR)
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn min(self, other: Amount) -> Amount {
        Amount(self.0.min(other.0))
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / UNITS_PER_TRAIN;
        let frac = self.0 % UNITS_PER_TRAIN;
        if frac == 0 {
            write!(f, "{whole} TRAIN")
        } else {
            let frac = format!("{frac:09}");
            write!(f, "{whole}.{} TRAIN", frac.trim_end_matches('0'))
        }
    }
}

/// Milliseconds: the commit timestamp of the batch being executed.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct TimestampMs(pub u64);

impl TimestampMs {
    pub fn saturating_add_ms(self, ms: u64) -> TimestampMs {
        TimestampMs(self.0.saturating_add(ms))
    }
}

macro_rules! id_type {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(
            Clone,
            Copy,
            Debug,
            Default,
            PartialEq,
            Eq,
            PartialOrd,
            Ord,
            Hash,
            Serialize,
            Deserialize,
        )]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    JobId,
    "A training job, numbered from 1 in submission order."
);
id_type!(DatasetId, "An attached dataset, numbered from 1.");
id_type!(ProposalId, "A governance proposal, numbered from 1.");

/// A work unit: the `index`-th segment of a job's steps.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct UnitId {
    pub job: JobId,
    pub index: u32,
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.job, self.index)
    }
}

/// A 32-byte content hash (checkpoints, shards, Merkle roots). Hex in JSON.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash32(pub [u8; 32]);

hex_serde!(Hash32, "hash");

impl Hash32 {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &hex::encode(self.0)[..12])
    }
}

/// The execution context of a batch: contracts read time and randomness only from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// Number of batches executed before this one.
    pub height: u64,
    /// The commit's timestamp.
    pub time: TimestampMs,
    /// The commit's randomness (derived from the committed leader).
    pub seed: [u8; 32],
}
