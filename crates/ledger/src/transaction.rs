//! Signed transactions: a canonical, versioned encoding, and their stateless checks.
//!
//! Wire: `version (1) ‖ BCS(Envelope)`. The envelope names the call kind explicitly, so a kind this
//! node does not know is reported as such, and carries the call as BCS bytes. The signature is
//! ed25519 over the transaction hash: BLAKE3(`"trainmesh/tx/v1"` ‖ BCS(unsigned envelope)), which
//! covers the chain id, the key, the nonce, the fee, the expiry and the call.

use serde::{Deserialize, Serialize};
use trainmesh_contracts::{Address, Amount, Call};

use crate::error::{LedgerError, LedgerResult};

pub const TRANSACTION_VERSION: u8 = 1;
/// The largest encoded transaction.
pub const TRANSACTION_BYTES_MAX: usize = 128 * 1024;

/// What the signer agrees to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub chain_id: String,
    pub public_key: [u8; 32],
    pub nonce: u64,
    pub fee: Amount,
    /// The last batch time (ms since the epoch) at which it may execute: a signed transaction
    /// that did not commit in time is void, and mempools drop it.
    pub expires_ms: u64,
    pub call: Call,
}

/// How long clients (the nodes' wallets, the CLI, the SDK) let a transaction they sign now wait
/// to execute: its `expires_ms` is their clock's now plus this. (This crate reads no clock.)
pub const TRANSACTION_LIFETIME_DEFAULT_MS: u64 = 10 * 60_000;

#[derive(Serialize, Deserialize)]
struct UnsignedEnvelope {
    chain_id: String,
    public_key: [u8; 32],
    nonce: u64,
    fee: Amount,
    expires_ms: u64,
    kind: u32,
    call: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    unsigned: UnsignedEnvelope,
    signature: Signature64,
}

/// 64 signature bytes, as two fixed halves (serde has no 64-element arrays).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Signature64([u8; 32], [u8; 32]);

/// The call kind: the BCS variant index of [`Call`] (its first ULEB128).
fn kind_of(call_bytes: &[u8]) -> u32 {
    let mut kind: u32 = 0;
    for (i, b) in call_bytes.iter().take(5).enumerate() {
        kind |= ((b & 0x7f) as u32) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    kind
}

impl Transaction {
    pub fn sender(&self) -> Address {
        Address::from_public_key(&self.public_key)
    }

    fn unsigned(&self) -> UnsignedEnvelope {
        let call = bcs::to_bytes(&self.call).expect("calls always serialize");
        UnsignedEnvelope {
            chain_id: self.chain_id.clone(),
            public_key: self.public_key,
            nonce: self.nonce,
            fee: self.fee,
            expires_ms: self.expires_ms,
            kind: kind_of(&call),
            call,
        }
    }

    /// The transaction id and the message its signature covers.
    pub fn hash(&self) -> [u8; 32] {
        hash_unsigned(&self.unsigned())
    }

    /// Signs with a 32-byte ed25519 secret key.
    pub fn sign(self, secret: &[u8; 32]) -> SignedTransaction {
        let key = ed25519_zebra::SigningKey::from(*secret);
        let hash = self.hash();
        let sig = key.sign(&hash).to_bytes();
        SignedTransaction {
            transaction: self,
            signature: sig,
            hash,
        }
    }
}

fn hash_unsigned(u: &UnsignedEnvelope) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"trainmesh/tx/v1");
    h.update(&bcs::to_bytes(u).expect("envelopes always serialize"));
    *h.finalize().as_bytes()
}

/// A transaction with its signature (not yet checked: see [`SignedTransaction::verify`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTransaction {
    pub transaction: Transaction,
    pub signature: [u8; 64],
    hash: [u8; 32],
}

impl SignedTransaction {
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    pub fn sender(&self) -> Address {
        self.transaction.sender()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut lo = [0u8; 32];
        let mut hi = [0u8; 32];
        lo.copy_from_slice(&self.signature[..32]);
        hi.copy_from_slice(&self.signature[32..]);
        let envelope = Envelope {
            unsigned: self.transaction.unsigned(),
            signature: Signature64(lo, hi),
        };
        let mut out = vec![TRANSACTION_VERSION];
        out.extend(bcs::to_bytes(&envelope).expect("envelopes always serialize"));
        out
    }

    /// Decodes, rejecting oversized, truncated, malformed input and unknown call kinds.
    pub fn decode(bytes: &[u8]) -> LedgerResult<SignedTransaction> {
        if bytes.len() > TRANSACTION_BYTES_MAX {
            return Err(LedgerError::Oversized {
                len_bytes: bytes.len(),
                max_bytes: TRANSACTION_BYTES_MAX,
            });
        }
        let (&version, body) = bytes.split_first().ok_or(LedgerError::Empty)?;
        if version != TRANSACTION_VERSION {
            return Err(LedgerError::UnsupportedVersion {
                found: version,
                expected: TRANSACTION_VERSION,
            });
        }
        let envelope: Envelope = bcs::from_bytes(body).map_err(bcs_error)?;
        let u = envelope.unsigned;
        if u.kind >= Call::KINDS {
            return Err(LedgerError::UnknownKind { kind: u.kind });
        }
        if kind_of(&u.call) != u.kind {
            return Err(LedgerError::Malformed {
                reason: format!(
                    "declared kind {} but the call is of kind {}",
                    u.kind,
                    kind_of(&u.call)
                ),
            });
        }
        let call: Call = bcs::from_bytes(&u.call).map_err(bcs_error)?;
        let hash = hash_unsigned(&u);
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&envelope.signature.0);
        signature[32..].copy_from_slice(&envelope.signature.1);
        Ok(SignedTransaction {
            transaction: Transaction {
                chain_id: u.chain_id,
                public_key: u.public_key,
                nonce: u.nonce,
                fee: u.fee,
                expires_ms: u.expires_ms,
                call,
            },
            signature,
            hash,
        })
    }

    /// Stateless checks: the chain id and the signature.
    pub fn verify(&self, chain_id: &str) -> LedgerResult<()> {
        self.check_chain(chain_id)?;
        let vk = ed25519_zebra::VerificationKey::try_from(self.transaction.public_key)
            .map_err(|_| LedgerError::BadSignature)?;
        let sig = ed25519_zebra::Signature::from(self.signature);
        vk.verify(&sig, &self.hash)
            .map_err(|_| LedgerError::BadSignature)
    }

    pub(crate) fn check_chain(&self, chain_id: &str) -> LedgerResult<()> {
        if self.transaction.chain_id != chain_id {
            return Err(LedgerError::WrongChainId {
                expected: chain_id.into(),
                actual: self.transaction.chain_id.clone(),
            });
        }
        Ok(())
    }
}

fn bcs_error(e: bcs::Error) -> LedgerError {
    match e {
        bcs::Error::Eof => LedgerError::Truncated,
        other => LedgerError::Malformed {
            reason: other.to_string(),
        },
    }
}
