//! The one error type of the crate: each variant names the rule that was broken.

use crate::hash::Hash32;

/// Everything a caller of `trainmesh-gpu` can anticipate going wrong: malformed or hostile input
/// (shards, specs, checkpoints), missing files, a GPU that is lost or absent.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("shard hash mismatch: expected {expected}, got {actual}")]
    ShardHashMismatch { expected: Hash32, actual: Hash32 },
    #[error("shard is malformed: {reason}")]
    ShardMalformed { reason: String },
    #[error("shard is truncated: need {expected_bytes} bytes, have {actual_bytes}")]
    ShardTruncated {
        expected_bytes: usize,
        actual_bytes: usize,
    },
    #[error("dataset import failed: {reason}")]
    ImportMalformed { reason: String },
    #[error("model spec is malformed: {reason}")]
    SpecMalformed { reason: String },
    #[error("model spec exceeds a bound: {what} = {actual}, at most {max}")]
    SpecTooLarge {
        what: &'static str,
        actual: u64,
        max: u64,
    },
    #[error("data does not fit the model: {reason}")]
    ShapeMismatch { reason: String },
    #[error("hyper-parameters are invalid: {reason}")]
    HyperParamsInvalid { reason: String },
    #[error("checkpoint is malformed: {reason}")]
    CheckpointMalformed { reason: String },
    #[error("checkpoint hash mismatch: expected {expected}, got {actual}")]
    CheckpointHashMismatch { expected: Hash32, actual: Hash32 },
    #[error("work result is malformed: {reason}")]
    ResultMalformed { reason: String },
    #[error("no GPU adapter: {reason}")]
    NoAdapter { reason: String },
    #[error("GPU device failed: {reason}")]
    DeviceFailed { reason: String },
    #[error("out of time: {what} did not finish within its budget of {budget_ms} ms")]
    OutOfTime { what: &'static str, budget_ms: u64 },
    #[error("io error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl GpuError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        GpuError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
