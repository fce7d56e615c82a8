//! The trainmesh mesh: the libp2p transport and the actix actors that run the pure cores
//! (consensus, ledger, training, verification) of a node.
//!
//! Layout:
//! - [`network`]: the libp2p swarm (TCP + noise + yamux, identify, Kademlia, gossipsub,
//!   request-response, connection limits) as an event loop behind a bounded command channel
//! - [`frame`]: length-prefixed frames on a stream, read as the bytes arrive
//! - [`inbound`]: the inbound queue, bounded in bytes and fair between peers
//! - [`reputation`]: which peers to listen to: offences that decay, bounded bans (sans-IO)
//! - [`rate`]: token buckets per peer (sans-IO)
//! - [`mesh_config`]: every bound of the network layer, the `[mesh]` section of a node's config
//! - [`wire`]: the node-to-node messages (a channel byte, then consensus or mesh messages)
//! - [`consensus`]: the committee's peer book and the node clock
//! - [`coordinator`]: the Coordinator actor, a shell around the DAG core
//! - [`ledger`]: the Ledger actor: executes commits (validators) or syncs them from the
//!   committee (followers), and announces every new height
//! - [`router`]: the Router actor: network events to the actors they are for, with
//!   back-pressure
//! - [`sync_server`]: the SyncServer actor: bounded, rate-limited pages of commits and
//!   certificates, read from the DAG store off the consensus thread
//! - [`blobs`]: content-addressed blobs served and fetched (checkpoints, chains, shards)
//! - [`wallet`]: a node's account: nonces, signing, submission to a mempool
//! - [`work`]: what trainers and evaluators share (jobs, datasets, checkpoints)
//! - [`trainer`], [`evaluator`], [`provider`]: the worker roles
//! - [`dispute`]: every node's part in disputes: the trainer's defence, the challenger's answers,
//!   the validators' referee
//! - [`metrics`]: the Prometheus metrics every actor records
//! - [`node`]: one node, its roles wired together

pub mod blobs;
pub mod consensus;
pub mod coordinator;
pub mod dispute;
pub mod evaluator;
pub mod frame;
pub mod inbound;
pub mod ledger;
pub mod mesh_config;
pub mod metrics;
pub mod network;
pub mod node;
pub mod provider;
pub mod rate;
pub mod reputation;
pub mod router;
pub mod sync_server;
pub mod trainer;
pub mod wallet;
pub mod wire;
pub mod work;
