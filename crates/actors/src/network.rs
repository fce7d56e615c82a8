//! The libp2p transport: TCP + noise + yamux, identify, Kademlia (to find known peers), gossipsub
//! for broadcasts (content-hash message ids, validated before they are forwarded) and
//! request-response for messages to one peer. Every message and queue is bounded.
//!
//! The swarm runs in its own task; callers talk to it through bounded channels of
//! [`NetworkCommand`]s and [`NetworkEvent`]s, so the consensus driver never touches libp2p.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::prelude::*;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, identity, kad, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol};
use tokio::sync::mpsc;

/// The largest message on the wire (a header with a full payload, a sync response).
pub const MESSAGE_BYTES_MAX: usize = trainmesh_dag::encoding::MESSAGE_BYTES_MAX;
/// Commands waiting for the swarm task.
pub const COMMAND_QUEUE_MAX: usize = 1_024;
/// Events waiting for the consumer; beyond it, the network drops (and counts) what arrives.
pub const EVENT_QUEUE_MAX: usize = 4_096;

const DIRECT_PROTOCOL: &str = "/trainmesh/direct/1";
/// Offences after which a peer is disconnected.
pub const PENALTY_DISCONNECT: u32 = 16;
/// How long a disconnected offender stays refused.
pub const BAN_SECONDS: u64 = 60;

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
    /// `peer` sent something malformed or hostile; after [`PENALTY_DISCONNECT`] offences it is
    /// disconnected and refused for [`BAN_SECONDS`].
    Penalize { peer: PeerId, reason: String },
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

/// Length-prefixed byte messages, refused above [`MESSAGE_BYTES_MAX`]; the response is an empty
/// acknowledgement (answers travel as messages of their own).
#[derive(Clone, Debug, Default)]
pub struct DirectCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MESSAGE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes exceeds {MESSAGE_BYTES_MAX}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "message too large",
        ));
    }
    io.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

#[async_trait]
impl request_response::Codec for DirectCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut byte = [0u8; 1];
        io.read_exact(&mut byte).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[1]).await?;
        io.close().await
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    direct: request_response::Behaviour<DirectCodec>,
}

/// Starts the swarm in a task; returns its command sender and event receiver.
pub fn spawn(
    config: NetworkConfig,
) -> Result<(mpsc::Sender<NetworkCommand>, mpsc::Receiver<NetworkEvent>), NetworkError> {
    let key = keypair(&config.secret_key)?;
    let local = key.public().to_peer_id();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_behaviour(|key| {
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
            let identify = identify::Behaviour::new(identify::Config::new(
                "/trainmesh/1".into(),
                key.public(),
            ));
            let mut kad = kad::Behaviour::new(local, kad::store::MemoryStore::new(local));
            // Loopback and private networks never confirm an external address: serve the DHT
            // anyway, or no peer would ever learn about this one.
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
            })
        })
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3_600)))
        .build();
    for t in &config.topics {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&IdentTopic::new(t.clone()))
            .map_err(|e| NetworkError::Transport(e.to_string()))?;
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
    let (command_tx, mut command_rx) = mpsc::channel::<NetworkCommand>(COMMAND_QUEUE_MAX);
    let (event_tx, event_rx) = mpsc::channel::<NetworkEvent>(EVENT_QUEUE_MAX);
    let validate = config.validate.clone();
    let bootstrap = config.bootstrap.clone();
    tokio::spawn(async move {
        let mut redial = tokio::time::interval(Duration::from_secs(2));
        let mut discover = tokio::time::interval(Duration::from_secs(5));
        let mut connected: BTreeSet<PeerId> = BTreeSet::new();
        let mut offences: BTreeMap<PeerId, u32> = BTreeMap::new();
        let mut banned: BTreeMap<PeerId, tokio::time::Instant> = BTreeMap::new();
        let mut looked_up: BTreeMap<PeerId, tokio::time::Instant> = BTreeMap::new();
        loop {
            tokio::select! {
                command = command_rx.recv() => {
                    let Some(command) = command else { return };
                    match command {
                        NetworkCommand::Broadcast { topic, bytes } => {
                            // No subscribed peer yet is not an error for a broadcast.
                            let _ = swarm.behaviour_mut().gossipsub.publish(IdentTopic::new(topic), bytes.to_vec());
                        }
                        NetworkCommand::SendTo { peer, bytes } => {
                            if peer == local {
                                continue;
                            }
                            if !connected.contains(&peer) {
                                // Ask the DHT where it is (at most once a second per peer);
                                // the request below dials whatever address is known by then.
                                let now = tokio::time::Instant::now();
                                let recent = looked_up.get(&peer).is_some_and(|t| now.duration_since(*t) < Duration::from_secs(1));
                                if !recent {
                                    looked_up.insert(peer, now);
                                    swarm.behaviour_mut().kad.get_closest_peers(peer);
                                }
                            }
                            swarm.behaviour_mut().direct.send_request(&peer, bytes.to_vec());
                        }
                        NetworkCommand::Penalize { peer, reason } => {
                            let n = offences.entry(peer).or_insert(0);
                            *n += 1;
                            tracing::debug!(%peer, offences = *n, %reason, "peer penalized");
                            if *n >= PENALTY_DISCONNECT {
                                tracing::warn!(%peer, %reason, "disconnecting a misbehaving peer");
                                offences.remove(&peer);
                                banned.insert(peer, tokio::time::Instant::now() + Duration::from_secs(BAN_SECONDS));
                                let _ = swarm.disconnect_peer_id(peer);
                            }
                        }
                    }
                }
                _ = discover.tick() => {
                    let _ = swarm.behaviour_mut().kad.bootstrap();
                    let now = tokio::time::Instant::now();
                    banned.retain(|_, until| *until > now);
                    looked_up.retain(|_, t| now.duration_since(*t) < Duration::from_secs(60));
                }
                _ = redial.tick() => {
                    for (peer, addr) in &bootstrap {
                        if !connected.contains(peer) {
                            let _ = swarm.dial(addr.clone());
                        }
                    }
                }
                event = swarm.select_next_some() => {
                    let out = match event {
                        SwarmEvent::NewListenAddr { address, .. } => Some(NetworkEvent::Listening(address)),
                        SwarmEvent::ConnectionEstablished { peer_id, .. } if banned.contains_key(&peer_id) => {
                            let _ = swarm.disconnect_peer_id(peer_id);
                            None
                        }
                        SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                            connected.insert(peer_id);
                            Some(NetworkEvent::Connected(peer_id))
                        }
                        SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                            connected.remove(&peer_id);
                            Some(NetworkEvent::Disconnected(peer_id))
                        }
                        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                            propagation_source,
                            message_id,
                            message,
                        })) => {
                            let ok = message.data.len() <= MESSAGE_BYTES_MAX && validate(&message.data);
                            let acceptance = if ok { MessageAcceptance::Accept } else { MessageAcceptance::Reject };
                            let _ = swarm.behaviour_mut().gossipsub.report_message_validation_result(
                                &message_id,
                                &propagation_source,
                                acceptance,
                            );
                            ok.then(|| NetworkEvent::Message {
                                from: message.source.unwrap_or(propagation_source),
                                bytes: Bytes::from(message.data),
                            })
                        }
                        SwarmEvent::Behaviour(BehaviourEvent::Direct(request_response::Event::Message {
                            peer,
                            message: request_response::Message::Request { request, channel, .. },
                            ..
                        })) => {
                            let _ = swarm.behaviour_mut().direct.send_response(channel, ());
                            (!banned.contains_key(&peer)).then(|| NetworkEvent::Message { from: peer, bytes: Bytes::from(request) })
                        }
                        SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                            for addr in info.listen_addrs {
                                swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                            }
                            None
                        }
                        _ => None,
                    };
                    if let Some(out) = out {
                        // A full queue drops the event: consensus re-requests what it misses.
                        let _ = event_tx.try_send(out);
                    }
                }
            }
        }
    });
    Ok((command_tx, event_rx))
}
