//! The libp2p transport: TCP + noise + yamux, identify, Kademlia (to find known peers), gossipsub
//! for broadcasts (content-hash message ids, validated before they are forwarded) and
//! request-response for messages to one peer. Every message and queue is bounded.
//!
//! The swarm runs in its own task, an [`EventLoop`]; callers send it bounded [`NetworkCommand`]s
//! and read its [`NetworkEvent`]s from an [`InboundReceiver`], a queue bounded in bytes and fair
//! between peers, so the consensus driver never touches libp2p. Which peers it listens to is a
//! [`PeerPolicy`] (offences decay, bans are bounded); how many connections it takes is libp2p's
//! connection limits, both from the node's [`MeshConfig`].

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::prelude::*;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{DialError, ListenError, NetworkBehaviour, SwarmEvent};
use libp2p::{
    connection_limits, identify, identity, kad, noise, tcp, yamux, Multiaddr, PeerId,
    StreamProtocol, Swarm,
};
use tokio::sync::mpsc;

use crate::frame::DirectCodec;
use crate::inbound::{inbound, InboundReceiver, InboundSender};
use crate::mesh_config::MeshConfig;
use crate::metrics::NodeMetrics;
use crate::reputation::{Offence, PeerPolicy, Verdict};

/// The largest message on the wire (a header with a full payload, a sync response).
pub const MESSAGE_BYTES_MAX: usize = trainmesh_dag::encoding::MESSAGE_BYTES_MAX;
/// Commands waiting for the swarm task.
pub const COMMAND_QUEUE_MAX: usize = 1_024;

const DIRECT_PROTOCOL: &str = "/trainmesh/direct/1";

/// Decides whether a broadcast may be delivered and forwarded (checks signatures, epochs...).
pub type Validate = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid network key: {0}")]
    Key(String),
    #[error("transport: {0}")]
    Transport(String),
    #[error("listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
}

/// What the consumer asks of the network.
#[derive(Debug, Clone)]
pub enum NetworkCommand {
    /// Publish to every peer on `topic`.
    Broadcast { topic: String, bytes: Bytes },
    /// Send to one peer (found through Kademlia when its address is not known yet).
    SendTo { peer: PeerId, bytes: Bytes },
    /// `peer` sent something no honest peer sends; the [`PeerPolicy`] decides when that is
    /// enough to disconnect and refuse it for a while.
    Penalize {
        peer: PeerId,
        offence: Offence,
        reason: String,
    },
}

/// What the network reports.
#[derive(Debug, Clone)]
pub enum NetworkEvent {
    Listening(Multiaddr),
    Connected(PeerId),
    Disconnected(PeerId),
    /// A message from `from` (broadcast or direct), already size-checked.
    Message {
        from: PeerId,
        bytes: Bytes,
    },
}

/// How one node joins the mesh.
#[derive(Clone)]
pub struct NetworkConfig {
    /// The node's ed25519 secret key (the same key a validator signs headers with).
    pub secret_key: [u8; 32],
    pub listen: Multiaddr,
    /// Known peers to dial first.
    pub bootstrap: Vec<(PeerId, Multiaddr)>,
    /// Gossip topics to join.
    pub topics: Vec<String>,
    /// Checks broadcasts before they are delivered and forwarded.
    pub validate: Validate,
    /// Connection limits, the inbound queue's bound, the offence policy.
    pub mesh: MeshConfig,
    pub metrics: NodeMetrics,
}

impl std::fmt::Debug for NetworkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkConfig")
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("topics", &self.topics)
            .finish()
    }
}

/// The libp2p identity of an ed25519 secret key.
pub fn keypair(secret: &[u8; 32]) -> Result<identity::Keypair, NetworkError> {
    identity::Keypair::ed25519_from_bytes(*secret).map_err(|e| NetworkError::Key(e.to_string()))
}

/// The peer id of an ed25519 public key (a validator's consensus key).
pub fn peer_id(public_key: &[u8; 32]) -> Result<PeerId, NetworkError> {
    let pk = identity::ed25519::PublicKey::try_from_bytes(public_key)
        .map_err(|e| NetworkError::Key(e.to_string()))?;
    Ok(PeerId::from_public_key(&identity::PublicKey::from(pk)))
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    /// First, so that a connection it denies is never seen by the others (libp2p's advice).
    limits: connection_limits::Behaviour,
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    direct: request_response::Behaviour<DirectCodec>,
}

/// Starts the swarm in a task; returns its command sender and the inbound queue's receiver.
pub fn spawn(
    config: NetworkConfig,
) -> Result<(mpsc::Sender<NetworkCommand>, InboundReceiver), NetworkError> {
    let swarm = build_swarm(&config)?;
    let (command_tx, command_rx) = mpsc::channel::<NetworkCommand>(COMMAND_QUEUE_MAX);
    let (inbound_tx, inbound_rx) = inbound(config.mesh.inbound_bytes_max);
    let event_loop = EventLoop {
        swarm,
        commands: command_rx,
        inbound: inbound_tx,
        validate: config.validate.clone(),
        bootstrap: config.bootstrap.clone(),
        policy: PeerPolicy::new(config.mesh.peers.clone()),
        connected: BTreeSet::new(),
        looked_up: BTreeMap::new(),
        metrics: config.metrics.clone(),
    };
    tokio::spawn(event_loop.run());
    Ok((command_tx, inbound_rx))
}

fn transport_error<E: std::fmt::Display>(e: E) -> NetworkError {
    NetworkError::Transport(e.to_string())
}

fn build_swarm(config: &NetworkConfig) -> Result<Swarm<Behaviour>, NetworkError> {
    let key = keypair(&config.secret_key)?;
    let limits = config.mesh.connection_limits();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(transport_error)?
        .with_behaviour(|key| behaviour(key, limits))
        .map_err(transport_error)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3_600)))
        .build();
    for t in &config.topics {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&IdentTopic::new(t.clone()))
            .map_err(transport_error)?;
    }
    swarm
        .listen_on(config.listen.clone())
        .map_err(|e| NetworkError::Listen {
            addr: config.listen.clone(),
            reason: e.to_string(),
        })?;
    for (peer, addr) in &config.bootstrap {
        swarm.behaviour_mut().kad.add_address(peer, addr.clone());
        swarm.add_peer_address(*peer, addr.clone());
        let _ = swarm.dial(addr.clone());
    }
    Ok(swarm)
}

fn behaviour(
    key: &identity::Keypair,
    limits: connection_limits::ConnectionLimits,
) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let local = key.public().to_peer_id();
    let gossip_config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(MESSAGE_BYTES_MAX)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .heartbeat_interval(Duration::from_millis(500))
        .message_id_fn(|m: &gossipsub::Message| {
            MessageId::from(blake3::hash(&m.data).as_bytes().to_vec())
        })
        .build()
        .map_err(|e| io::Error::other(e.to_string()))?;
    let gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossip_config,
    )
    .map_err(io::Error::other)?;
    let identify =
        identify::Behaviour::new(identify::Config::new("/trainmesh/1".into(), key.public()));
    let mut kad = kad::Behaviour::new(local, kad::store::MemoryStore::new(local));
    // Loopback and private networks never confirm an external address: serve the DHT anyway,
    // or no peer would ever learn about this one.
    kad.set_mode(Some(kad::Mode::Server));
    let direct = request_response::Behaviour::with_codec(
        DirectCodec,
        [(StreamProtocol::new(DIRECT_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(10))
            .with_max_concurrent_streams(256),
    );
    Ok(Behaviour {
        gossipsub,
        identify,
        kad,
        direct,
        limits: connection_limits::Behaviour::new(limits),
    })
}

/// The swarm's task: commands in, events out, the peer policy applied to both.
struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<NetworkCommand>,
    inbound: InboundSender,
    validate: Validate,
    bootstrap: Vec<(PeerId, Multiaddr)>,
    policy: PeerPolicy<PeerId>,
    connected: BTreeSet<PeerId>,
    /// When each unconnected peer was last looked up in the DHT.
    looked_up: BTreeMap<PeerId, Instant>,
    metrics: NodeMetrics,
}

impl EventLoop {
    async fn run(mut self) {
        let mut redial = tokio::time::interval(Duration::from_secs(2));
        let mut housekeeping = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(c) => self.handle_command(c),
                    None => return,
                },
                _ = housekeeping.tick() => self.housekeeping(),
                _ = redial.tick() => self.redial(),
                event = self.swarm.select_next_some() => self.handle_event(event),
            }
        }
    }

    fn handle_command(&mut self, command: NetworkCommand) {
        match command {
            NetworkCommand::Broadcast { topic, bytes } => {
                // No subscribed peer yet is not an error for a broadcast.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(IdentTopic::new(topic), bytes.to_vec());
            }
            NetworkCommand::SendTo { peer, bytes } => self.send_to(peer, bytes),
            NetworkCommand::Penalize {
                peer,
                offence,
                reason,
            } => self.penalize(peer, offence, &reason),
        }
    }

    fn send_to(&mut self, peer: PeerId, bytes: Bytes) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        if !self.connected.contains(&peer) {
            // Ask the DHT where it is (at most once a second per peer); the request below
            // dials whatever address is known by then.
            let now = Instant::now();
            let recent = self
                .looked_up
                .get(&peer)
                .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(1));
            if !recent {
                self.looked_up.insert(peer, now);
                self.swarm.behaviour_mut().kad.get_closest_peers(peer);
            }
        }
        self.swarm.behaviour_mut().direct.send_request(&peer, bytes);
    }

    fn penalize(&mut self, peer: PeerId, offence: Offence, reason: &str) {
        self.metrics.offences.inc();
        let now = Instant::now();
        let was_banned = self.policy.is_banned(&peer, now);
        match self.policy.offend(&peer, offence, now) {
            Verdict::Noted { score } => {
                tracing::debug!(%peer, ?offence, score, %reason, "peer penalized");
            }
            Verdict::Banned { until } if !was_banned => {
                self.metrics.bans.inc();
                let seconds = until.saturating_duration_since(now).as_secs();
                tracing::warn!(%peer, ?offence, seconds, %reason, "banning a misbehaving peer");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Verdict::Banned { .. } => {}
        }
    }

    fn housekeeping(&mut self) {
        let _ = self.swarm.behaviour_mut().kad.bootstrap();
        let now = Instant::now();
        self.policy.forget_forgiven(now);
        self.looked_up
            .retain(|_, t| now.duration_since(*t) < Duration::from_secs(60));
    }

    fn redial(&mut self) {
        for (peer, addr) in &self.bootstrap {
            if !self.connected.contains(peer) && !self.policy.is_banned(peer, Instant::now()) {
                let _ = self.swarm.dial(addr.clone());
            }
        }
    }

    fn handle_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                self.inbound.control(NetworkEvent::Listening(address))
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                if self.policy.is_banned(&peer_id, Instant::now()) {
                    self.metrics.connections_refused.inc();
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                } else if self.connected.insert(peer_id) {
                    self.inbound.control(NetworkEvent::Connected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => self.on_disconnected(peer_id),
            SwarmEvent::IncomingConnectionError {
                error: ListenError::Denied { cause },
                ..
            }
            | SwarmEvent::OutgoingConnectionError {
                error: DialError::Denied { cause },
                ..
            } => {
                self.metrics.connections_refused.inc();
                tracing::debug!(%cause, "connection refused");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip(propagation_source, message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Direct(request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            })) => {
                let _ = self.swarm.behaviour_mut().direct.send_response(channel, ());
                self.deliver(peer, request);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            _ => {}
        }
    }

    fn on_disconnected(&mut self, peer: PeerId) {
        if self.connected.remove(&peer) {
            self.inbound.control(NetworkEvent::Disconnected(peer));
        }
    }

    fn on_gossip(&mut self, source: PeerId, id: MessageId, message: gossipsub::Message) {
        let ok = message.data.len() <= MESSAGE_BYTES_MAX && (self.validate)(&message.data);
        let acceptance = if ok {
            MessageAcceptance::Accept
        } else {
            MessageAcceptance::Reject
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
        if ok {
            self.deliver(message.source.unwrap_or(source), Bytes::from(message.data));
        }
    }

    /// Queues a message for the router, unless its sender is banned; the queue drops (and
    /// counts) the newest messages of whoever is over its share.
    fn deliver(&mut self, from: PeerId, bytes: Bytes) {
        if self.policy.is_banned(&from, Instant::now()) {
            return;
        }
        let (dropped, queued) = self.inbound.message(from, bytes);
        self.metrics.inbound_dropped.inc_by(dropped as u64);
        self.metrics.inbound_bytes.set(queued as i64);
    }
}
