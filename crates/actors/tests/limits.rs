//! libp2p's connection limits, from the node's mesh config: a node that takes one incoming
//! connection refuses a second peer, and takes it once the first is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use trainmesh_actors::inbound::InboundReceiver;
use trainmesh_actors::mesh_config::MeshConfig;
use trainmesh_actors::metrics::NodeMetrics;
use trainmesh_actors::network::{self, NetworkCommand, NetworkConfig, NetworkEvent};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn addr(port: u16) -> libp2p::Multiaddr {
    format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
}

fn secret(label: &str) -> [u8; 32] {
    *blake3::hash(label.as_bytes()).as_bytes()
}

fn peer(secret: &[u8; 32]) -> PeerId {
    network::keypair(secret).unwrap().public().to_peer_id()
}

type Node = (tokio::sync::mpsc::Sender<NetworkCommand>, InboundReceiver);

fn start(
    label: &str,
    port: u16,
    bootstrap: Vec<(PeerId, libp2p::Multiaddr)>,
    mesh: MeshConfig,
    metrics: NodeMetrics,
) -> Node {
    network::spawn(NetworkConfig {
        secret_key: secret(label),
        listen: addr(port),
        bootstrap,
        topics: vec![],
        validate: Arc::new(|_| true),
        mesh,
        metrics,
    })
    .unwrap()
}

/// Waits until `events` yields `Connected(peer)`; panics on `Connected(refused)`.
async fn wait_connected(events: &InboundReceiver, peer: PeerId, refused: Option<PeerId>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {peer} to connect");
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(NetworkEvent::Connected(p))) if p == peer => return,
            Ok(Some(NetworkEvent::Connected(p))) => {
                assert_ne!(Some(p), refused, "a connection over the limit was taken")
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("the network stopped"),
            Err(_) => panic!("timed out waiting for {peer} to connect"),
        }
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_incoming_limit_is_refused() {
    let metrics = NodeMetrics::new();
    let port = free_port();
    let a = peer(&secret("a"));
    let mesh = MeshConfig {
        max_established_incoming: 1,
        ..MeshConfig::default()
    };
    let (_a_net, a_events) = start("a", port, vec![], mesh, metrics.clone());
    let to_a = vec![(a, addr(port))];
    let (b_net, _b_events) = start(
        "b",
        free_port(),
        to_a.clone(),
        MeshConfig::default(),
        NodeMetrics::new(),
    );
    wait_connected(&a_events, peer(&secret("b")), None).await;
    // Refusals until now were b's own second dial, if any; from here only c dials a.
    let before = metrics.connections_refused.get();
    let c = peer(&secret("c"));
    let (_c_net, _c_events) = start(
        "c",
        free_port(),
        to_a,
        MeshConfig::default(),
        NodeMetrics::new(),
    );
    wait_for("a to refuse c", || {
        metrics.connections_refused.get() > before
    })
    .await;
    // b leaves: c (which dials its bootstrap peers again every 2 s) is taken.
    drop(b_net);
    wait_connected(&a_events, c, None).await;
}
