//! The trainmesh mesh: the libp2p transport and the drivers that run the pure cores over it.
//!
//! Layout:
//! - [`network`]: the libp2p swarm (TCP + noise + yamux, identify, Kademlia, gossipsub,
//!   request-response) behind bounded command and event channels
//! - [`consensus`]: the consensus driver: a DAG `Core` fed from the network, its timer, its actions

pub mod consensus;
pub mod network;
