//! Ed25519 keys and signatures (fastcrypto), with domain-separated signing.
//!
//! Every signed message is `domain || digest`, so a signature on a header can never be replayed as
//! a vote and the other way round.

use std::fmt;

use fastcrypto::ed25519::{Ed25519KeyPair, Ed25519PrivateKey, Ed25519PublicKey, Ed25519Signature};
use fastcrypto::traits::{KeyPair as _, Signer as _, ToFromBytes, VerifyingKey as _};
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::types::Digest;

/// What a signature is about; part of the signed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningDomain {
    Header,
    Vote,
}

impl SigningDomain {
    fn tag(self) -> &'static [u8] {
        match self {
            SigningDomain::Header => b"trainmesh/dag/header/v1",
            SigningDomain::Vote => b"trainmesh/dag/vote/v1",
        }
    }

    fn message(self, digest: &Digest) -> Vec<u8> {
        let tag = self.tag();
        let mut msg = Vec::with_capacity(tag.len() + 32);
        msg.extend_from_slice(tag);
        msg.extend_from_slice(digest.as_bytes());
        msg
    }
}

/// A 32-byte ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: String = self.0[..6].iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "pk:{hex}")
    }
}

/// A public key parsed once (point decompression is not free) for repeated verification.
#[derive(Clone)]
pub struct VerifyingKey(Ed25519PublicKey);

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({:?})", self.0)
    }
}

impl VerifyingKey {
    pub fn from_public_key(pk: &PublicKey) -> Option<VerifyingKey> {
        Ed25519PublicKey::from_bytes(&pk.0).ok().map(VerifyingKey)
    }

    pub fn verify(&self, domain: SigningDomain, digest: &Digest, signature: &Signature) -> bool {
        let Ok(sig) = Ed25519Signature::from_bytes(&signature.0) else {
            return false;
        };
        self.0.verify(&domain.message(digest), &sig).is_ok()
    }
}

/// Checks many signatures over one message at once (a certificate's votes). The random
/// coefficients of batch verification come from a ChaCha20 stream seeded with a hash of the whole
/// batch: deterministic, no OS randomness, and unknown until every signature is fixed.
/// ed25519-consensus follows ZIP-215, so the batch accepts exactly what one-by-one checks accept.
pub fn verify_batch(
    domain: SigningDomain,
    digest: &Digest,
    signed: &[(PublicKey, Signature)],
) -> bool {
    use rand::SeedableRng;
    let message = domain.message(digest);
    let mut batch = ed25519_consensus::batch::Verifier::new();
    let mut seed = blake3::Hasher::new();
    seed.update(b"trainmesh/dag/batch-verify/v1");
    seed.update(&message);
    for (pk, sig) in signed {
        batch.queue((
            ed25519_consensus::VerificationKeyBytes::from(pk.0),
            ed25519_consensus::Signature::from(sig.0),
            &message[..],
        ));
        seed.update(&pk.0);
        seed.update(&sig.0);
    }
    let rng = rand_chacha::ChaCha20Rng::from_seed(*seed.finalize().as_bytes());
    batch.verify(rng).is_ok()
}

/// A 64-byte ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: String = self.0[..6].iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "sig:{hex}")
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A fixed-size tuple: no length prefix, one canonical form.
        let mut tuple = serializer.serialize_tuple(64)?;
        for byte in &self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SignatureVisitor;
        impl<'de> Visitor<'de> for SignatureVisitor {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Signature, A::Error> {
                let mut bytes = [0u8; 64];
                for (i, byte) in bytes.iter_mut().enumerate() {
                    *byte = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(bytes))
            }
        }
        deserializer.deserialize_tuple(64, SignatureVisitor)
    }
}

/// An authority's signing key.
pub struct KeyPair {
    inner: Ed25519KeyPair,
    secret: [u8; 32],
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({:?})", self.public())
    }
}

impl KeyPair {
    /// A key pair from 32 secret bytes (a key file, or a seed in tests and simulations).
    pub fn from_secret_bytes(secret: &[u8; 32]) -> KeyPair {
        let private = Ed25519PrivateKey::from_bytes(secret)
            .expect("every 32-byte string is a valid ed25519 secret key");
        KeyPair {
            inner: Ed25519KeyPair::from(private),
            secret: *secret,
        }
    }

    /// A deterministic key pair for tests, simulations and benchmarks.
    pub fn from_seed(seed: u64) -> KeyPair {
        let mut secret = [0u8; 32];
        secret.copy_from_slice(
            blake3::hash(&[b"trainmesh/test-key/".as_slice(), &seed.to_le_bytes()].concat())
                .as_bytes(),
        );
        KeyPair::from_secret_bytes(&secret)
    }

    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret
    }

    pub fn public(&self) -> PublicKey {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.inner.public().as_bytes());
        PublicKey(out)
    }

    pub fn sign(&self, domain: SigningDomain, digest: &Digest) -> Signature {
        let sig = self.inner.sign(&domain.message(digest));
        let mut out = [0u8; 64];
        out.copy_from_slice(sig.as_bytes());
        Signature(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_domain_separated() {
        let key = KeyPair::from_seed(7);
        let vk = VerifyingKey::from_public_key(&key.public()).unwrap();
        let digest = Digest([3; 32]);
        let sig = key.sign(SigningDomain::Header, &digest);
        assert!(vk.verify(SigningDomain::Header, &digest, &sig));
        assert!(!vk.verify(SigningDomain::Vote, &digest, &sig));
        assert!(!vk.verify(SigningDomain::Header, &Digest([4; 32]), &sig));
        let mut bad = sig;
        bad.0[10] ^= 1;
        assert!(!vk.verify(SigningDomain::Header, &digest, &bad));
    }

    #[test]
    fn batch_verification_agrees_with_single_checks() {
        let digest = Digest([5; 32]);
        let keys: Vec<KeyPair> = (0..7).map(KeyPair::from_seed).collect();
        let mut signed: Vec<(PublicKey, Signature)> = keys
            .iter()
            .map(|k| (k.public(), k.sign(SigningDomain::Vote, &digest)))
            .collect();
        assert!(verify_batch(SigningDomain::Vote, &digest, &signed));
        assert!(!verify_batch(SigningDomain::Header, &digest, &signed));
        signed[3].1 .0[0] ^= 1;
        assert!(!verify_batch(SigningDomain::Vote, &digest, &signed));
        signed[3].1 = keys[2].sign(SigningDomain::Vote, &digest);
        assert!(!verify_batch(SigningDomain::Vote, &digest, &signed));
    }

    #[test]
    fn secret_round_trips() {
        let key = KeyPair::from_seed(1);
        let again = KeyPair::from_secret_bytes(&key.secret_bytes());
        assert_eq!(key.public(), again.public());
    }
}
