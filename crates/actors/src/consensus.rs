//! The committee on the network, and the node clock.
//!
//! A validator's libp2p identity is its consensus key, so every authority's peer id follows from
//! the committee. Consensus messages go point to point to each authority (the DAG is all-to-all).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use trainmesh_dag::{AuthorityIndex, Committee, TimestampMs};

use crate::network::{self, NetworkError};

/// Milliseconds since the Unix epoch: the node's clock, read here and passed into the core.
pub fn now() -> TimestampMs {
    TimestampMs(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}

/// Maps authorities to peers and back.
#[derive(Clone, Debug)]
pub struct PeerBook {
    peers: Vec<PeerId>,
    authorities: BTreeMap<PeerId, AuthorityIndex>,
}

impl PeerBook {
    pub fn new(committee: &Committee) -> Result<PeerBook, NetworkError> {
        let mut peers = Vec::new();
        let mut authorities = BTreeMap::new();
        for (i, a) in committee.authorities() {
            let p = network::peer_id(&a.public_key.0)?;
            peers.push(p);
            authorities.insert(p, i);
        }
        Ok(PeerBook { peers, authorities })
    }

    pub fn peer(&self, a: AuthorityIndex) -> PeerId {
        self.peers[a.as_usize()]
    }

    pub fn authority(&self, p: &PeerId) -> Option<AuthorityIndex> {
        self.authorities.get(p).copied()
    }
}
