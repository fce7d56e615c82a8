//! Every bound of a node's network layer, in one struct with its defaults (the `[mesh]` section
//! of `node.toml`; `docs/design/mesh.md` says what each defends against).

use serde::{Deserialize, Serialize};

use crate::reputation::PolicyConfig;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshConfig {
    /// Established connections with any one peer (two lets simultaneous dials both succeed).
    pub max_established_per_peer: u32,
    /// Established incoming connections, all peers together.
    pub max_established_incoming: u32,
    /// Incoming connections still in their handshake.
    pub max_pending_incoming: u32,
    /// Outgoing connections still being dialled.
    pub max_pending_outgoing: u32,
    /// Bytes of received messages waiting for the router, all peers together; a peer over its
    /// fair share loses its newest messages first.
    pub inbound_bytes_max: usize,
    /// Sync served to one peer (ledger batches and DAG certificates together): bytes per second.
    pub sync_bytes_per_second: u64,
    /// ... and the burst a peer may draw at once.
    pub sync_burst_bytes: u64,
    /// What one sync request costs at least, even if the answer is empty: bounds a peer's
    /// requests per second to `sync_bytes_per_second / sync_request_cost_bytes`.
    pub sync_request_cost_bytes: u64,
    /// Executed commits a validator keeps in its DAG store for followers to sync from; older
    /// ones are pruned. A follower further behind than this cannot catch up from validators.
    pub retain_commits: u64,
    /// Offences, their decay, and bans.
    pub peers: PolicyConfig,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            max_established_per_peer: 2,
            max_established_incoming: 256,
            max_pending_incoming: 64,
            max_pending_outgoing: 64,
            inbound_bytes_max: 64 * 1024 * 1024,
            sync_bytes_per_second: 8 * 1024 * 1024,
            sync_burst_bytes: 32 * 1024 * 1024,
            sync_request_cost_bytes: 16 * 1024,
            retain_commits: 50_000,
            peers: PolicyConfig::default(),
        }
    }
}

impl MeshConfig {
    /// libp2p's connection limits from this config.
    pub fn connection_limits(&self) -> libp2p::connection_limits::ConnectionLimits {
        libp2p::connection_limits::ConnectionLimits::default()
            .with_max_established_per_peer(Some(self.max_established_per_peer))
            .with_max_established_incoming(Some(self.max_established_incoming))
            .with_max_pending_incoming(Some(self.max_pending_incoming))
            .with_max_pending_outgoing(Some(self.max_pending_outgoing))
    }
}
