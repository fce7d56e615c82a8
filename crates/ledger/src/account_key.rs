//! An account's ed25519 signing key, and the transactions it signs.

use std::fmt;

use trainmesh_contracts::{Address, Amount, Call};

use crate::transaction::{SignedTransaction, Transaction};

/// The secret key of an account. Its address is derived from the public key.
#[derive(Clone)]
pub struct AccountKey {
    secret: [u8; 32],
    public: [u8; 32],
}

impl fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountKey({:?})", self.address())
    }
}

impl AccountKey {
    pub fn from_secret(secret: [u8; 32]) -> AccountKey {
        let public: [u8; 32] =
            ed25519_zebra::VerificationKey::from(&ed25519_zebra::SigningKey::from(secret)).into();
        AccountKey { secret, public }
    }

    /// A deterministic key for tests, simulations and devnets.
    pub fn from_seed(seed: u64) -> AccountKey {
        let mut h = blake3::Hasher::new();
        h.update(b"trainmesh/test-account/");
        h.update(&seed.to_le_bytes());
        AccountKey::from_secret(*h.finalize().as_bytes())
    }

    pub fn secret(&self) -> [u8; 32] {
        self.secret
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    pub fn address(&self) -> Address {
        Address::from_public_key(&self.public)
    }

    /// A network identity for this account, for worker registration: the libp2p peer id of the
    /// ed25519 key `network_secret` and its signature of the account's binding message (what a
    /// node whose network key is `network_secret` registers with). A worker node without a
    /// separate network key uses its account secret.
    pub fn peer_binding(&self, network_secret: &[u8; 32]) -> (String, Vec<u8>) {
        let key = ed25519_zebra::SigningKey::from(*network_secret);
        let public: [u8; 32] = ed25519_zebra::VerificationKey::from(&key).into();
        let message = trainmesh_contracts::workers::peer_binding_message(&self.address());
        let signature: [u8; 64] = key.sign(&message).into();
        (
            trainmesh_contracts::workers::ed25519_peer_id(&public),
            signature.to_vec(),
        )
    }

    /// A dataset binding for this account: the peer id of the ed25519 key `network_secret` and
    /// its signature that it serves the dataset of these roots for this account (what a node
    /// whose network key is `network_secret` gives its provider).
    pub fn dataset_binding(
        &self,
        network_secret: &[u8; 32],
        shards_root: &trainmesh_contracts::Hash32,
        heldout_root: &trainmesh_contracts::Hash32,
    ) -> (String, Vec<u8>) {
        let key = ed25519_zebra::SigningKey::from(*network_secret);
        let public: [u8; 32] = ed25519_zebra::VerificationKey::from(&key).into();
        let message = trainmesh_contracts::datasets::binding_message(
            &self.address(),
            shards_root,
            heldout_root,
        );
        let signature: [u8; 64] = key.sign(&message).into();
        (
            trainmesh_contracts::workers::ed25519_peer_id(&public),
            signature.to_vec(),
        )
    }

    /// This account's ed25519 signature of `message` (a domain-tagged statement, never a
    /// transaction hash: those are signed by [`AccountKey::sign`]).
    pub fn sign_message(&self, message: &[u8]) -> [u8; 64] {
        ed25519_zebra::SigningKey::from(self.secret)
            .sign(message)
            .into()
    }

    /// Signs a transaction of this account that never expires: for executing batches directly
    /// (tests, benchmarks). A validator's mempool admits only transactions that expire within
    /// the hour: for the network, sign with [`AccountKey::sign_until`].
    pub fn sign(&self, chain_id: &str, nonce: u64, fee: Amount, call: Call) -> SignedTransaction {
        self.sign_until(chain_id, nonce, fee, u64::MAX, call)
    }

    /// Signs a transaction of this account that may execute up to batch time `expires_ms`.
    pub fn sign_until(
        &self,
        chain_id: &str,
        nonce: u64,
        fee: Amount,
        expires_ms: u64,
        call: Call,
    ) -> SignedTransaction {
        Transaction {
            chain_id: chain_id.into(),
            public_key: self.public,
            nonce,
            fee,
            expires_ms,
            call,
        }
        .sign(&self.secret)
    }
}
