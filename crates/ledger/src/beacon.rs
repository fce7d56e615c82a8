//! The randomness beacon: what seeds every draw the ledger makes (trainers, evaluator panels,
//! audit samples).
//!
//! Each validator holds one share of a threshold BLS key (BLS12-381, signatures in G1). Once its
//! consensus has committed index `k`, it signs `(chain id, k)` with its share and proposes that
//! partial signature as an entry of its own next header ([`BeaconShare`], tagged
//! [`BEACON_SHARE_TAG`] so that it never decodes as a transaction). Commit `k` executes once the
//! committed stream after it holds `threshold` valid shares for `k`, from distinct validators;
//! its seed is the hash of the combined signature.
//!
//! Why nobody can steer it:
//! - the combined signature is unique: any `threshold` valid shares give the same one, so which
//!   shares a node happens to combine changes nothing, and every node derives the same seed;
//! - no coalition below the threshold can make it (the genesis sets the threshold above the
//!   most validators whose stake stays under the validity threshold);
//! - no honest validator signs `k` before its consensus committed `k`, so everything commit `k`
//!   orders — every payload, the leader's choice of parents, its timestamp — is fixed before
//!   the value exists. A leader that grinds its payload changes the batch, never its seed.
//!
//! Shares are attributed to the author of the certificate that carries them: a validator can only
//! spoil its own share. Only the first share of each (commit, author) counts, so a faulty author
//! costs at most one pairing check per commit. Checking is lazy: the first `threshold` shares are
//! combined and the result checked once (one pairing); only if it fails is each share checked.
//!
//! Layout:
//! - [`BeaconShare`]: one validator's partial signature of a commit, and its payload encoding
//! - [`BeaconKey`]: the public side (from the genesis): checks shares and combines them
//! - [`BeaconSecret`]: a validator's share; [`deal`] makes the shares of a genesis
//! - [`BeaconGate`]: holds committed batches, in order, until each one's seed is known

use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroU16;

use bytes::Bytes;
use fastcrypto::groups::bls12381::{G1Element, G2Element, Scalar};
use fastcrypto::groups::GroupElement;
use fastcrypto::serde_helpers::ToFromByteArray;
use fastcrypto::traits::AllowedRng;
use fastcrypto_tbls::polynomial::{Poly, PublicPoly};
use fastcrypto_tbls::tbls::ThresholdBls;
use fastcrypto_tbls::types::ThresholdBls12381MinSig as Tbls;
use trainmesh_contracts::{BeaconSetup, TimestampMs};

use crate::error::{LedgerError, LedgerResult};
use crate::ledger::Batch;

/// The first byte of a beacon share in a payload (a transaction starts with its version, 1).
pub const BEACON_SHARE_TAG: u8 = 0xB1;
/// Bytes of an encoded share: tag, commit index, compressed G1 point.
pub const BEACON_SHARE_BYTES: usize = 1 + 8 + 48;

const MESSAGE_DOMAIN: &[u8] = b"trainmesh/beacon/v1";
const SEED_DOMAIN: &str = "trainmesh/beacon/seed/v1";

fn invalid(reason: impl Into<String>) -> LedgerError {
    LedgerError::InvalidBeacon {
        reason: reason.into(),
    }
}

/// One validator's partial signature of a commit index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeaconShare {
    pub commit: u64,
    pub signature: [u8; 48],
}

impl BeaconShare {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BEACON_SHARE_BYTES);
        out.push(BEACON_SHARE_TAG);
        out.extend_from_slice(&self.commit.to_le_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Whether a payload entry claims to be a share (then it is never a transaction).
    pub fn is_share(entry: &[u8]) -> bool {
        entry.first() == Some(&BEACON_SHARE_TAG)
    }

    /// Decodes a payload entry; `None` unless it is exactly a tagged share.
    pub fn decode(entry: &[u8]) -> Option<BeaconShare> {
        if entry.len() != BEACON_SHARE_BYTES || !BeaconShare::is_share(entry) {
            return None;
        }
        let commit = u64::from_le_bytes(entry[1..9].try_into().expect("8 bytes"));
        let signature = entry[9..].try_into().expect("48 bytes");
        Some(BeaconShare { commit, signature })
    }
}

fn message(chain_id: &str, commit: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(MESSAGE_DOMAIN.len() + chain_id.len() + 16);
    m.extend_from_slice(MESSAGE_DOMAIN);
    m.extend_from_slice(&(chain_id.len() as u64).to_le_bytes());
    m.extend_from_slice(chain_id.as_bytes());
    m.extend_from_slice(&commit.to_le_bytes());
    m
}

fn share_index(position: usize) -> LedgerResult<NonZeroU16> {
    u16::try_from(position + 1)
        .ok()
        .and_then(NonZeroU16::new)
        .ok_or_else(|| invalid(format!("validator position {position} has no share index")))
}

/// The beacon's public side: the commitments to the sharing polynomial.
#[derive(Clone, Debug)]
pub struct BeaconKey {
    chain_id: String,
    threshold: u16,
    validators: usize,
    public: PublicPoly<G2Element>,
}

impl BeaconKey {
    /// Parses and checks a genesis' beacon for `validators` validators.
    pub fn new(setup: &BeaconSetup, chain_id: &str, validators: usize) -> LedgerResult<BeaconKey> {
        if setup.threshold == 0 || setup.threshold as usize > validators {
            return Err(invalid(format!(
                "threshold {} for {validators} validators",
                setup.threshold
            )));
        }
        if setup.public.len() != setup.threshold as usize {
            return Err(invalid(format!(
                "{} commitments for threshold {}",
                setup.public.len(),
                setup.threshold
            )));
        }
        let mut points = Vec::with_capacity(setup.public.len());
        for (i, h) in setup.public.iter().enumerate() {
            let bytes: [u8; 96] = hex::decode(h)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| invalid(format!("commitment {i} is not 96 bytes of hex")))?;
            let point = G2Element::from_byte_array(&bytes)
                .map_err(|_| invalid(format!("commitment {i} is not a point of G2")))?;
            if point == G2Element::zero() {
                return Err(invalid(format!("commitment {i} is the identity")));
            }
            points.push(point);
        }
        Ok(BeaconKey {
            chain_id: chain_id.to_string(),
            threshold: setup.threshold,
            validators,
            public: Poly::from(points),
        })
    }

    pub fn threshold(&self) -> u16 {
        self.threshold
    }

    /// Whether a validator's share signs `commit` truly (one pairing check).
    pub fn verify_share(&self, position: usize, share: &BeaconShare) -> bool {
        let (Ok(index), Ok(value)) = (
            share_index(position),
            G1Element::from_byte_array(&share.signature),
        ) else {
            return false;
        };
        Tbls::partial_verify(
            &self.public,
            &message(&self.chain_id, share.commit),
            &fastcrypto_tbls::types::IndexedValue { index, value },
        )
        .is_ok()
    }

    /// The beacon value of `commit` from shares by validator position, if `threshold` of them are
    /// valid: the seed (a hash of the unique combined signature). Checks the combination of the
    /// first `threshold` once; only if that fails each share, dropping the invalid ones from
    /// `shares` so that they are never checked again.
    pub fn combine(&self, commit: u64, shares: &mut BTreeMap<usize, [u8; 48]>) -> Option<[u8; 32]> {
        let msg = message(&self.chain_id, commit);
        let t = self.threshold as usize;
        for attempt in 0..2 {
            if shares.len() < t {
                return None;
            }
            let mut partials = Vec::with_capacity(t);
            let mut malformed = Vec::new();
            for (&position, bytes) in shares.iter() {
                match (share_index(position), G1Element::from_byte_array(bytes)) {
                    (Ok(index), Ok(value)) => {
                        partials.push(fastcrypto_tbls::types::IndexedValue { index, value })
                    }
                    _ => malformed.push(position),
                }
            }
            if !malformed.is_empty() {
                for p in malformed {
                    shares.remove(&p);
                }
                continue;
            }
            if let Ok(signature) = Tbls::aggregate(self.threshold, partials.iter().take(t)) {
                if Tbls::verify(self.public.c0(), &msg, &signature).is_ok() {
                    let bytes = signature.to_byte_array();
                    return Some(blake3::derive_key(SEED_DOMAIN, &bytes));
                }
            }
            if attempt == 1 {
                break;
            }
            // Some share among the first `t` is bad: check each, keep the good ones.
            shares.retain(|&position, bytes| {
                self.verify_share(
                    position,
                    &BeaconShare {
                        commit,
                        signature: *bytes,
                    },
                )
            });
        }
        None
    }
}

/// A validator's share of the beacon key.
#[derive(Clone)]
pub struct BeaconSecret {
    position: usize,
    chain_id: String,
    share: fastcrypto_tbls::types::Share,
}

impl std::fmt::Debug for BeaconSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeaconSecret")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl BeaconSecret {
    /// The share of the validator at `position`, checked against the public key: a share that
    /// is not this validator's is refused.
    pub fn new(key: &BeaconKey, position: usize, secret: &[u8; 32]) -> LedgerResult<BeaconSecret> {
        if position >= key.validators {
            return Err(invalid(format!(
                "position {position} of {} validators",
                key.validators
            )));
        }
        let index = share_index(position)?;
        let value = Scalar::from_byte_array(secret)
            .map_err(|_| invalid("the beacon share is not a scalar"))?;
        if key.public.eval(index).value != G2Element::generator() * value {
            return Err(invalid(format!(
                "the beacon share is not the one dealt to validator {position}"
            )));
        }
        Ok(BeaconSecret {
            position,
            chain_id: key.chain_id.clone(),
            share: fastcrypto_tbls::types::Share { index, value },
        })
    }

    pub fn position(&self) -> usize {
        self.position
    }

    pub fn sign(&self, commit: u64) -> BeaconShare {
        let partial = Tbls::partial_sign(&self.share, &message(&self.chain_id, commit));
        BeaconShare {
            commit,
            signature: partial.value.to_byte_array(),
        }
    }
}

/// Deals a beacon for `validators` validators with threshold `threshold`: the public setup and
/// each validator's secret share, by position. Whoever deals knows the whole key; a network
/// whose validators do not all trust one dealer runs a distributed key generation instead.
pub fn deal<R: AllowedRng>(
    validators: usize,
    threshold: u16,
    rng: &mut R,
) -> LedgerResult<(BeaconSetup, Vec<[u8; 32]>)> {
    if threshold == 0 || threshold as usize > validators {
        return Err(invalid(format!(
            "threshold {threshold} for {validators} validators"
        )));
    }
    let private = Poly::<Scalar>::rand(threshold - 1, rng);
    let public: PublicPoly<G2Element> = private.commit();
    let setup = BeaconSetup {
        threshold,
        public: public
            .as_vec()
            .iter()
            .map(|p| hex::encode(p.to_byte_array()))
            .collect(),
    };
    let shares = (0..validators)
        .map(|p| Ok(private.eval(share_index(p)?).value.to_byte_array()))
        .collect::<LedgerResult<_>>()?;
    Ok((setup, shares))
}

/// A committed sub-DAG before its seed is known: its transactions, and the beacon shares its
/// certificates carried, each with the position of the validator that authored it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingBatch {
    pub index: u64,
    pub timestamp: TimestampMs,
    pub transactions: Vec<Bytes>,
    pub shares: Vec<(u32, BeaconShare)>,
}

/// Holds committed batches, in order, until the shares committed after each make its seed.
#[derive(Debug)]
pub struct BeaconGate {
    key: BeaconKey,
    /// The index of `waiting[0]`: the next batch to execute.
    next: u64,
    waiting: VecDeque<PendingBatch>,
    /// Shares of the waiting batches, by commit index, then validator position (the first each
    /// validator proposed).
    shares: BTreeMap<u64, BTreeMap<usize, [u8; 48]>>,
}

impl BeaconGate {
    /// A gate whose next batch to execute is `next` (the ledger's next index).
    pub fn new(key: BeaconKey, next: u64) -> BeaconGate {
        BeaconGate {
            key,
            next,
            waiting: VecDeque::new(),
            shares: BTreeMap::new(),
        }
    }

    /// Batches committed but not yet executable.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The index the next pushed batch must have.
    pub fn expected(&self) -> u64 {
        self.next + self.waiting.len() as u64
    }

    /// Takes the next committed batch (one already taken is ignored; one beyond the next is an
    /// error: batches come in order) and returns every batch now executable, in order, with its
    /// seed.
    pub fn push(&mut self, batch: PendingBatch) -> LedgerResult<Vec<Batch>> {
        let expected = self.expected();
        if batch.index < expected {
            return Ok(Vec::new());
        }
        if batch.index > expected {
            return Err(invalid(format!(
                "batch {} arrived while {expected} was expected",
                batch.index
            )));
        }
        for (author, share) in &batch.shares {
            // A share signs a commit before the one carrying it; only waiting commits matter.
            if share.commit < self.next || share.commit >= batch.index {
                continue;
            }
            let position = *author as usize;
            if position >= self.key.validators {
                continue;
            }
            self.shares
                .entry(share.commit)
                .or_default()
                .entry(position)
                .or_insert(share.signature);
        }
        self.waiting.push_back(batch);
        let mut ready = Vec::new();
        while let Some(front) = self.waiting.front() {
            let index = front.index;
            let Some(seed) = self
                .shares
                .get_mut(&index)
                .and_then(|s| self.key.combine(index, s))
            else {
                break;
            };
            let b = self.waiting.pop_front().expect("front exists");
            self.shares.remove(&index);
            self.next += 1;
            ready.push(Batch {
                index: b.index,
                timestamp: b.timestamp,
                seed,
                transactions: b.transactions,
            });
        }
        Ok(ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn setup(n: usize, t: u16, seed: u64) -> (BeaconKey, Vec<BeaconSecret>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (setup, secrets) = deal(n, t, &mut rng).unwrap();
        let key = BeaconKey::new(&setup, "test-chain", n).unwrap();
        let secrets = secrets
            .iter()
            .enumerate()
            .map(|(p, s)| BeaconSecret::new(&key, p, s).unwrap())
            .collect();
        (key, secrets)
    }

    #[test]
    fn shares_round_trip_and_nothing_else_decodes() {
        let s = BeaconShare {
            commit: 77,
            signature: [9; 48],
        };
        assert_eq!(BeaconShare::decode(&s.encode()), Some(s));
        let mut long = s.encode();
        long.push(0);
        assert_eq!(BeaconShare::decode(&long), None);
        assert_eq!(BeaconShare::decode(&s.encode()[..20]), None);
        assert!(!BeaconShare::is_share(&[1, 2, 3]));
    }

    #[test]
    fn any_threshold_of_valid_shares_gives_one_seed() {
        let (key, secrets) = setup(4, 2, 1);
        let sign_at = |commit: u64, ps: &[usize]| -> BTreeMap<usize, [u8; 48]> {
            ps.iter()
                .map(|&p| (p, secrets[p].sign(commit).signature))
                .collect()
        };
        let sign = |ps: &[usize]| sign_at(5, ps);
        let a = key.combine(5, &mut sign(&[0, 1])).unwrap();
        let b = key.combine(5, &mut sign(&[2, 3])).unwrap();
        let c = key.combine(5, &mut sign(&[1, 2, 3])).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_ne!(a, key.combine(6, &mut sign_at(6, &[0, 1])).unwrap());
        assert_eq!(
            key.combine(5, &mut sign(&[3])),
            None,
            "one share is below the threshold"
        );
    }

    #[test]
    fn a_bad_share_is_dropped_and_the_seed_is_unchanged() {
        let (key, secrets) = setup(4, 2, 2);
        let honest: BTreeMap<usize, [u8; 48]> = [
            (1, secrets[1].sign(3).signature),
            (2, secrets[2].sign(3).signature),
        ]
        .into();
        let expected = key.combine(3, &mut honest.clone()).unwrap();
        // Validator 0 proposes its share of another commit, posing as commit 3's.
        let mut shares = honest.clone();
        shares.insert(0, secrets[0].sign(4).signature);
        assert_eq!(key.combine(3, &mut shares), Some(expected));
        assert!(!shares.contains_key(&0), "the bad share is dropped");
        // Garbage bytes are dropped too.
        let mut shares = honest;
        shares.insert(0, [0xFF; 48]);
        assert_eq!(key.combine(3, &mut shares), Some(expected));
        // One valid share and one bad one are not enough.
        let mut shares: BTreeMap<usize, [u8; 48]> =
            [(0, [7; 48]), (3, secrets[3].sign(3).signature)].into();
        assert_eq!(key.combine(3, &mut shares), None);
        assert_eq!(shares.len(), 1);
    }

    #[test]
    fn a_share_not_dealt_to_the_validator_is_refused() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (setup, secrets) = deal(4, 2, &mut rng).unwrap();
        let key = BeaconKey::new(&setup, "c", 4).unwrap();
        assert!(BeaconSecret::new(&key, 1, &secrets[1]).is_ok());
        assert!(BeaconSecret::new(&key, 0, &secrets[1]).is_err());
        assert!(BeaconSecret::new(&key, 4, &secrets[1]).is_err());
        let mut bad = setup.clone();
        bad.public[1] = "00".repeat(96);
        assert!(BeaconKey::new(&bad, "c", 4).is_err());
        bad.public.pop();
        assert!(BeaconKey::new(&bad, "c", 4).is_err());
    }

    fn pending(index: u64, payload: &[&[u8]], shares: Vec<(u32, BeaconShare)>) -> PendingBatch {
        PendingBatch {
            index,
            timestamp: TimestampMs(1_000 + index),
            transactions: payload.iter().map(|p| Bytes::copy_from_slice(p)).collect(),
            shares,
        }
    }

    /// The attack: the leader of commit 0 tries payloads (and timestamps) until the draw suits
    /// it. The seed of commit 0 is the same whatever commit 0 holds.
    #[test]
    fn a_leader_grinding_its_payload_cannot_change_the_seed() {
        let (key, secrets) = setup(4, 2, 4);
        let mut seeds = Vec::new();
        for attempt in 0..8u8 {
            let mut gate = BeaconGate::new(key.clone(), 0);
            let mut first = pending(0, &[&[1, attempt], &[attempt; 3]], vec![]);
            first.timestamp = TimestampMs(500 + attempt as u64);
            assert!(gate.push(first).unwrap().is_empty(), "no shares yet");
            let shares = vec![(1, secrets[1].sign(0)), (3, secrets[3].sign(0))];
            let ready = gate.push(pending(1, &[], shares)).unwrap();
            assert_eq!(ready.len(), 1);
            assert_eq!(ready[0].transactions.len(), 2);
            seeds.push(ready[0].seed);
        }
        assert!(seeds.windows(2).all(|w| w[0] == w[1]), "{seeds:?}");
    }

    #[test]
    fn a_batch_waits_for_threshold_shares_from_distinct_validators() {
        let (key, secrets) = setup(4, 2, 5);
        let mut gate = BeaconGate::new(key, 0);
        assert!(gate.push(pending(0, &[b"a"], vec![])).unwrap().is_empty());
        // A share for commit 1 inside commit 1 itself could not have been made honestly: ignored.
        let early = vec![(0, secrets[0].sign(0)), (2, secrets[2].sign(1))];
        assert!(gate.push(pending(1, &[b"b"], early)).unwrap().is_empty());
        // Validator 0 again (a second share of one validator adds nothing), and an author out of
        // the committee.
        let again = vec![(0, secrets[0].sign(0)), (9, secrets[1].sign(0))];
        assert!(gate.push(pending(2, &[], again)).unwrap().is_empty());
        assert_eq!(gate.waiting(), 3);
        // Validator 1 completes commit 0; validators 0 and 1 complete commit 1.
        let more = vec![
            (1, secrets[1].sign(0)),
            (0, secrets[0].sign(1)),
            (1, secrets[1].sign(1)),
        ];
        let ready = gate.push(pending(3, &[], more)).unwrap();
        assert_eq!(
            ready.iter().map(|b| b.index).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_ne!(ready[0].seed, ready[1].seed);
        assert_eq!(gate.expected(), 4);
        // Out of order is an error; a repeat is ignored.
        assert!(gate.push(pending(9, &[], vec![])).is_err());
        assert!(gate.push(pending(2, &[], vec![])).unwrap().is_empty());
    }

    /// A faulty validator proposes a bad share first: its share for that commit is lost, the
    /// commit still executes with two honest shares, and the seed is the one without it.
    #[test]
    fn a_faulty_share_delays_nothing_beyond_the_honest_shares() {
        let (key, secrets) = setup(4, 2, 6);
        let mut reference = BeaconGate::new(key.clone(), 0);
        reference.push(pending(0, &[], vec![])).unwrap();
        let honest = vec![(2, secrets[2].sign(0)), (3, secrets[3].sign(0))];
        let expected = reference.push(pending(1, &[], honest.clone())).unwrap()[0].seed;

        let mut gate = BeaconGate::new(key, 0);
        gate.push(pending(0, &[], vec![])).unwrap();
        let forged = BeaconShare {
            commit: 0,
            signature: secrets[0].sign(7).signature,
        };
        let mut shares = vec![(0, forged), (0, secrets[0].sign(0))];
        shares.push(honest[0]);
        assert!(gate.push(pending(1, &[], shares)).unwrap().is_empty());
        let ready = gate.push(pending(2, &[], vec![honest[1]])).unwrap();
        assert_eq!(ready[0].seed, expected);
    }
}
