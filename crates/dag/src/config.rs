//! Parameters of the core: timing and every bound, each with its unit last.

use serde::{Deserialize, Serialize};

use crate::encoding::MESSAGE_BYTES_MAX;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreConfig {
    /// A header is proposed as soon as this much payload is waiting (and parents are ready).
    pub header_payload_bytes_max: usize,
    /// Transactions in one header.
    pub header_transactions_max: usize,
    /// One transaction.
    pub transaction_bytes_max: usize,
    /// A header is proposed at the latest this long after the previous one, even if not full.
    pub max_header_delay_ms: u64,
    /// Bullshark's partially synchronous wait for the leader, or for votes on it.
    pub leader_timeout_ms: u64,
    /// A header stamped more than this ahead of the receiver's clock gets no vote until the
    /// receiver's clock catches up (the author sends it again); a bound on how far one author can
    /// move the commit clock forward.
    pub max_clock_skew_ms: u64,
    /// Our header, or our last certificate, is sent again when the round has not moved this long.
    pub resend_interval_ms: u64,
    /// Rounds kept below the last committed leader; older vertices are collected.
    pub gc_depth_rounds: u64,
    /// Headers and certificates further than this above our highest round are refused.
    pub round_window_rounds: u64,
    /// Transactions waiting to be proposed.
    pub mempool_bytes_max: usize,
    /// Certificates waiting for their parents.
    pub pending_certificates_max: usize,
    /// Headers waiting for their parents before we vote.
    pub pending_headers_max: usize,
    /// Headers of one author waiting for their parents: one author's junk fills only its share.
    pub pending_headers_per_author_max: usize,
    /// Digests tracked as missing at once.
    pub missing_certificates_max: usize,
    /// Digests in one certificates request.
    pub sync_digests_max: usize,
    /// Certificates in one sync response.
    pub sync_response_certificates_max: usize,
    /// Encoded size of one sync response.
    pub sync_response_bytes_max: usize,
    /// Rounds in one rounds response.
    pub sync_rounds_max: u64,
    /// A request unanswered this long goes to the next peer.
    pub sync_retry_ms: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            header_payload_bytes_max: 500_000,
            header_transactions_max: 20_000,
            transaction_bytes_max: 256 * 1024,
            max_header_delay_ms: 100,
            leader_timeout_ms: 1_000,
            max_clock_skew_ms: 2_000,
            resend_interval_ms: 1_000,
            gc_depth_rounds: 50,
            round_window_rounds: 200,
            mempool_bytes_max: 64 * 1024 * 1024,
            pending_certificates_max: 4_096,
            pending_headers_max: 1_024,
            pending_headers_per_author_max: 16,
            missing_certificates_max: 4_096,
            sync_digests_max: 512,
            sync_response_certificates_max: 1_000,
            sync_response_bytes_max: MESSAGE_BYTES_MAX / 2,
            sync_rounds_max: 20,
            sync_retry_ms: 500,
        }
    }
}

/// The part of a [`CoreConfig`] every validator must share, because it decides which headers are
/// valid (their size bounds), which vertices a commit holds (the garbage-collection depth), which
/// far-ahead vertices are refused (the round window) and the shape of the DAG the commit rule
/// reads (the leader timeout). A network fixes it in its genesis; a node never sets it locally.
/// Values are `u64` so the encoding is the same on every platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusParams {
    pub header_payload_bytes_max: u64,
    pub header_transactions_max: u64,
    pub transaction_bytes_max: u64,
    pub leader_timeout_ms: u64,
    pub gc_depth_rounds: u64,
    pub round_window_rounds: u64,
}

impl Default for ConsensusParams {
    fn default() -> Self {
        CoreConfig::default().consensus()
    }
}

impl CoreConfig {
    /// The consensus-critical part of this configuration.
    pub fn consensus(&self) -> ConsensusParams {
        ConsensusParams {
            header_payload_bytes_max: self.header_payload_bytes_max as u64,
            header_transactions_max: self.header_transactions_max as u64,
            transaction_bytes_max: self.transaction_bytes_max as u64,
            leader_timeout_ms: self.leader_timeout_ms,
            gc_depth_rounds: self.gc_depth_rounds,
            round_window_rounds: self.round_window_rounds,
        }
    }

    /// This configuration with its consensus-critical part replaced by `p`.
    pub fn with_consensus(self, p: &ConsensusParams) -> CoreConfig {
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        CoreConfig {
            header_payload_bytes_max: size(p.header_payload_bytes_max),
            header_transactions_max: size(p.header_transactions_max),
            transaction_bytes_max: size(p.transaction_bytes_max),
            leader_timeout_ms: p.leader_timeout_ms,
            gc_depth_rounds: p.gc_depth_rounds,
            round_window_rounds: p.round_window_rounds,
            ..self
        }
    }
}
