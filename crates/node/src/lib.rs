//! The parts of the node that check what clients send, as a library: the binary's gateway uses
//! them, and so do the fuzz targets (`crates/fuzzing`), which feed them arbitrary bodies.
//!
//! Layout:
//! - [`submission`] — the body of `POST /v1/transactions` and its stateless checks
//! - [`uploads`] — dataset shards and manifests uploaded through the gateway

pub mod submission;
pub mod uploads;
