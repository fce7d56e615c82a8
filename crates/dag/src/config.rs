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
