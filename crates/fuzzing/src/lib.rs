//! The bodies of trainmesh's fuzz targets: one function per decoder a peer or a client can reach,
//! each taking arbitrary bytes and calling the very functions the node calls on them.
//!
//! The cargo-fuzz package (`fuzz/`, nightly, libFuzzer) wraps each function in a target of the
//! same name; the stable test `tests/corpus.rs` replays the committed seed corpus
//! (`fuzz/corpus/<target>/`) and every recorded crash (`fuzz/regressions/<target>/`) through the
//! same functions, so CI checks them on every `cargo test --workspace`.
//!
//! A target returns normally on any input that is refused with an error; it panics only when the
//! code under test panics or breaks a property the target states (an encoding that does not
//! round-trip, a commit index that skips, an honest message that fails validation).
//!
//! Layout:
//! - [`dag`]: a consensus message as the coordinator receives it (decode, validate, core)
//! - [`dag_core`]: four authorities, one Byzantine, driven by a structured plan
//! - [`mesh`]: a frame from a peer, as the router splits and decodes it
//! - [`ledger`]: a signed transaction
//! - [`gpu`]: a dataset shard, a model spec, a checkpoint
//! - [`blob`]: a fetched blob against the hash it was asked for
//! - [`gateway`]: the gateway's JSON bodies (transaction submission, dataset manifest)
//! - [`seeds`]: the generator of the seed corpus

pub mod blob;
pub mod dag;
pub mod dag_core;
pub mod gateway;
pub mod gpu;
pub mod ledger;
pub mod mesh;
pub mod seeds;

pub use blob::blob;
pub use dag::dag_message;
pub use dag_core::dag_core;
pub use gateway::{gateway_manifest, gateway_submit};
pub use gpu::{checkpoint, model_spec, shard};
pub use ledger::ledger_transaction;
pub use mesh::mesh_frame;

/// The chain id transactions are checked against.
pub const CHAIN_ID: &str = "trainmesh-fuzz";

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target by name: the names of `fuzz/fuzz_targets/*.rs` and of the corpus folders.
pub const TARGETS: &[(&str, Target)] = &[
    ("dag_message", dag_message),
    ("dag_core", dag_core),
    ("mesh_frame", mesh_frame),
    ("ledger_transaction", ledger_transaction),
    ("blob", blob),
    ("shard", shard),
    ("model_spec", model_spec),
    ("checkpoint", checkpoint),
    ("gateway_submit", gateway_submit),
    ("gateway_manifest", gateway_manifest),
];
