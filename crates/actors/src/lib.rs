//! The trainmesh mesh: the libp2p transport and the actix actors that run the pure cores
//! (consensus, ledger, training, verification) of a node.
//!
//! Layout:
//! - [`network`]: the libp2p swarm (TCP + noise + yamux, identify, Kademlia, gossipsub,
//!   request-response) behind bounded command and event channels; penalties for junk
//! - [`wire`]: the node-to-node messages (a channel byte, then consensus or mesh messages)
//! - [`consensus`]: the committee's peer book and the node clock
//! - [`coordinator`]: the Coordinator actor, a shell around the DAG core
//! - [`ledger`]: the Ledger actor: executes commits (validators) or syncs them from the
//!   committee (followers), and announces every new height
//! - [`router`]: the Router actor: network events to the actors they are for
//! - [`blobs`]: content-addressed blobs served and fetched (checkpoints, chains, shards)
//! - [`wallet`]: a node's account: nonces, signing, submission to a mempool
//! - [`work`]: what trainers and evaluators share (jobs, datasets, checkpoints)
//! - [`trainer`], [`evaluator`], [`provider`]: the worker roles
//! - [`metrics`]: the Prometheus metrics every actor records
//! - [`node`]: one node, its roles wired together

pub mod blobs;
pub mod consensus;
pub mod coordinator;
pub mod evaluator;
pub mod ledger;
pub mod metrics;
pub mod network;
pub mod node;
pub mod provider;
pub mod router;
pub mod trainer;
pub mod wallet;
pub mod wire;
pub mod work;
