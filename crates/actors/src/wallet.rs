//! A node's own account: signs its transactions with the next nonce and hands them to a
//! validator's mempool (the local Coordinator, or validators over the network, one after another
//! on retries).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix::Recipient;
use bytes::Bytes;
use libp2p::PeerId;
use tokio::sync::mpsc;
use trainmesh_contracts::{Address, Amount, Call};
use trainmesh_ledger::transaction::Transaction;

use crate::coordinator::{first_refusal, SubmitTransactions};
use crate::ledger::SharedLedger;
use crate::network::NetworkCommand;
use crate::wire::MeshMessage;
use trainmesh_ledger::admission::{Refusal, Source};

/// Where signed transactions go.
#[derive(Clone, Debug)]
pub enum Submitter {
    /// This node is a validator: straight into its mempool.
    Local(Recipient<SubmitTransactions>),
    /// Over the network to the validators' peers, rotating on every send.
    Remote {
        net: mpsc::Sender<NetworkCommand>,
        validators: Vec<PeerId>,
        next: Arc<AtomicUsize>,
    },
}

impl Submitter {
    /// Hands `txs` to a mempool. A local one answers for each (the first refusal is returned);
    /// a remote one is only reached, so refusals there show as transactions that never commit.
    pub async fn submit(&self, txs: Vec<Vec<u8>>) -> Result<(), Refusal> {
        let unavailable = |e: String| Refusal {
            code: "mempool_unavailable",
            message: e,
        };
        match self {
            Submitter::Local(r) => {
                let answers = r
                    .send(SubmitTransactions(
                        txs.into_iter().map(Bytes::from).collect(),
                        Source::Local,
                    ))
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                first_refusal(&answers)
            }
            Submitter::Remote {
                net,
                validators,
                next,
            } => {
                if validators.is_empty() {
                    return Err(unavailable("no validator to submit to".into()));
                }
                let i = next.fetch_add(1, Ordering::Relaxed) % validators.len();
                net.send(NetworkCommand::SendTo {
                    peer: validators[i],
                    bytes: MeshMessage::Transactions(txs).encode(),
                })
                .await
                .map_err(|e| unavailable(e.to_string()))
            }
        }
    }
}

#[derive(Clone)]
pub struct Wallet {
    secret: [u8; 32],
    public: [u8; 32],
    pub address: Address,
    chain_id: String,
    next_nonce: Arc<Mutex<u64>>,
    submitter: Submitter,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Wallet {
    /// A secret derived from this account's key for `domain` (BLAKE3 keyed by the secret): what
    /// only this node can compute, e.g. the salt of an attestation commitment.
    pub fn derive(&self, domain: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.secret, domain).as_bytes()
    }

    pub fn new(secret: [u8; 32], chain_id: String, submitter: Submitter) -> Wallet {
        let public = ed25519_zebra::VerificationKey::from(&ed25519_zebra::SigningKey::from(secret));
        let public: [u8; 32] = public.into();
        Wallet {
            secret,
            public,
            address: Address::from_public_key(&public),
            chain_id,
            next_nonce: Arc::new(Mutex::new(0)),
            submitter,
        }
    }

    /// Where this wallet's transactions go (the gateway forwards users' transactions there too).
    pub fn submitter(&self) -> &Submitter {
        &self.submitter
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// Signs `call` with the ledger's next nonce for this account, without sending it. A caller
    /// that must not risk two copies committing (a job submission, say) sends these same bytes
    /// again while they do not show, instead of signing the call anew: one nonce, at most one
    /// commit, and no copy takes a nonce a later transaction needs.
    pub fn sign_next(
        &self,
        ledger: &SharedLedger,
        call: Call,
    ) -> Result<trainmesh_ledger::SignedTransaction, String> {
        let (nonce, fee) = {
            let l = ledger.read().expect("ledger lock");
            let nonce = l.account(&self.address).map_err(|e| e.to_string())?.nonce;
            (nonce, min_fee(&l)?)
        };
        Ok(self.sign(nonce, fee, call))
    }

    /// Signed at the chain's minimum fee, valid for the default lifetime from now.
    fn sign(&self, nonce: u64, fee: Amount, call: Call) -> trainmesh_ledger::SignedTransaction {
        Transaction {
            chain_id: self.chain_id.clone(),
            public_key: self.public,
            nonce,
            fee,
            expires_ms: expiry_ms(),
            call,
        }
        .sign(&self.secret)
    }

    /// Signs `call` with the next nonce and submits it. With `resync`, the nonce restarts from
    /// the ledger's (after a transaction was lost); otherwise it continues after the last one
    /// sent. Returns the transaction hash.
    pub async fn send(
        &self,
        ledger: &SharedLedger,
        call: Call,
        resync: bool,
    ) -> Result<[u8; 32], String> {
        let (on_ledger, fee) = {
            let l = ledger.read().expect("ledger lock");
            let nonce = l.account(&self.address).map_err(|e| e.to_string())?.nonce;
            (nonce, min_fee(&l)?)
        };
        let nonce = {
            let mut n = self.next_nonce.lock().expect("nonce lock");
            let nonce = if resync { on_ledger } else { on_ledger.max(*n) };
            *n = nonce + 1;
            nonce
        };
        let tx = self.sign(nonce, fee, call);
        let hash = tx.hash();
        self.submitter
            .submit(vec![tx.encode()])
            .await
            .map_err(|r| r.to_string())?;
        Ok(hash)
    }
}

/// The fee every transaction of a node offers: the chain's minimum, read from its parameters.
fn min_fee(ledger: &trainmesh_ledger::Ledger) -> Result<Amount, String> {
    ledger
        .read::<trainmesh_contracts::Params>(trainmesh_contracts::keys::PARAMS)
        .map_err(|e| e.to_string())?
        .map(|p| p.min_fee)
        .ok_or_else(|| "the ledger has no parameters yet".to_string())
}

/// When a transaction signed now expires: the wall clock plus the default lifetime.
pub fn expiry_ms() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    now.saturating_add(trainmesh_ledger::transaction::TRANSACTION_LIFETIME_DEFAULT_MS)
}
