//! What `POST /v1/transactions` accepts: a JSON body holding a signed transaction in hex, and the
//! checks that need no ledger state (hex, the transaction's encoding, its chain id and signature,
//! and the model spec of a job). The dry run against the ledger comes after, in the gateway.

use trainmesh_contracts::Call;
use trainmesh_gpu::error::GpuError;
use trainmesh_gpu::spec::{Model, ModelSpec};
use trainmesh_ledger::transaction::SignedTransaction;
use trainmesh_ledger::LedgerError;

/// The body of `POST /v1/transactions`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// The signed transaction's canonical encoding, hex.
    pub transaction: String,
}

/// A submission that passed the stateless checks.
#[derive(Clone, Debug)]
pub struct Submission {
    /// The canonical encoding, as it goes to the mempool.
    pub bytes: Vec<u8>,
    pub transaction: SignedTransaction,
    /// The model of a `SubmitJob`, parsed and within the engine's bounds.
    pub model: Option<Model>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmissionError {
    #[error("transaction is not hex: {0}")]
    NotHex(#[from] hex::FromHexError),
    /// Undecodable, of another chain, or badly signed.
    #[error(transparent)]
    Transaction(#[from] LedgerError),
    #[error("model spec: {0}")]
    BadSpec(GpuError),
}

impl SubmissionError {
    /// (HTTP status, stable code).
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            SubmissionError::NotHex(_) => (400, "bad_encoding"),
            SubmissionError::Transaction(e) => (400, e.code()),
            SubmissionError::BadSpec(_) => (400, "bad_spec"),
        }
    }
}

/// Decodes the body's transaction and checks it for `chain_id`.
pub fn check_submission(body: &SubmitBody, chain_id: &str) -> Result<Submission, SubmissionError> {
    let bytes = hex::decode(body.transaction.trim())?;
    let transaction = SignedTransaction::decode(&bytes)?;
    transaction.verify(chain_id)?;
    let model = match &transaction.transaction.call {
        Call::SubmitJob { spec } => {
            Some(ModelSpec::from_json(spec.model.as_bytes()).map_err(SubmissionError::BadSpec)?)
        }
        _ => None,
    };
    Ok(Submission {
        bytes,
        transaction,
        model,
    })
}
