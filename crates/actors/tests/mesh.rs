//! Four validators, each a node with its own libp2p swarm on loopback and its own redb data,
//! agree on the ledger; a transfer submitted through a follower (a node with no role) commits;
//! a follower started late syncs from the committee and reaches the same state roots; validators
//! prune the commits their ledgers executed, keeping the configured retention.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use trainmesh_actors::coordinator::PRUNE_EVERY_COMMITS;
use trainmesh_actors::ledger::{LedgerAdvanced, Subscribe};
use trainmesh_actors::mesh_config::MeshConfig;
use trainmesh_actors::node::{self, LocalConsensusConfig, NodeHandle, NodeSpec};
use trainmesh_contracts::{
    Address, Amount, Call, Genesis, GenesisAccount, GenesisValidator, Hash32, Params,
};
use trainmesh_dag::ConsensusParams;

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

/// Records every (height → root) a node's ledger reaches.
struct Roots(Arc<Mutex<BTreeMap<u64, [u8; 32]>>>);

impl Actor for Roots {
    type Context = Context<Self>;
}

impl Handler<LedgerAdvanced> for Roots {
    type Result = ();
    fn handle(&mut self, m: LedgerAdvanced, _: &mut Context<Self>) {
        self.0.lock().unwrap().insert(m.height, m.state_root);
    }
}

fn watch(n: &NodeHandle) -> Arc<Mutex<BTreeMap<u64, [u8; 32]>>> {
    let roots = Arc::new(Mutex::new(BTreeMap::new()));
    let r = Roots(roots.clone()).start();
    n.ledger_actor.do_send(Subscribe(r.recipient()));
    roots
}

async fn wait_for(what: &str, deadline: Instant, mut f: impl FnMut() -> bool) {
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A devnet of `n` validators (labels `consensus-i`, accounts `account-i`) with alice funded.
struct Testnet {
    genesis: Genesis,
    accounts: Vec<[u8; 32]>,
    consensus: Vec<[u8; 32]>,
    beacon: Vec<[u8; 32]>,
    ports: Vec<u16>,
    bootstrap: Vec<(libp2p::PeerId, libp2p::Multiaddr)>,
}

impl Testnet {
    fn new(n: usize) -> Testnet {
        let accounts: Vec<[u8; 32]> = (0..n).map(|i| secret(&format!("account-{i}"))).collect();
        let consensus: Vec<[u8; 32]> = (0..n).map(|i| secret(&format!("consensus-{i}"))).collect();
        let mut genesis = Genesis {
            chain_id: "mesh-test".into(),
            genesis_time_ms: 0,
            accounts: vec![GenesisAccount {
                address: Address::from_public_key(&node::public_key(&secret("alice"))),
                balance: Amount::from_train(100),
            }],
            validators: (0..n)
                .map(|i| GenesisValidator {
                    address: Address::from_public_key(&node::public_key(&accounts[i])),
                    consensus_key: Hash32(node::public_key(&consensus[i])),
                    stake: Amount::from_train(1_000),
                })
                .collect(),
            params: Params::default(),
            consensus: ConsensusParams {
                leader_timeout_ms: 500,
                ..ConsensusParams::default()
            },
            beacon: None,
        };
        let threshold = trainmesh_dag::beacon_threshold(&genesis.consensus_stakes()).unwrap();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(n as u64);
        let (setup, beacon) = trainmesh_ledger::beacon::deal(n, threshold, &mut rng).unwrap();
        genesis.beacon = Some(setup);
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let bootstrap = (0..n)
            .map(|i| {
                (
                    trainmesh_actors::network::peer_id(&node::public_key(&consensus[i])).unwrap(),
                    addr(ports[i]),
                )
            })
            .collect();
        Testnet {
            genesis,
            accounts,
            consensus,
            beacon,
            ports,
            bootstrap,
        }
    }

    fn spec(&self, dir: &std::path::Path, name: String, account: [u8; 32], port: u16) -> NodeSpec {
        NodeSpec {
            data_dir: dir.join(&name),
            name,
            genesis: self.genesis.clone(),
            account_secret: account,
            consensus_secret: None,
            beacon_secret: None,
            listen: addr(port),
            bootstrap: self.bootstrap.clone(),
            trainer: None,
            train_device: None,
            evaluator: None,
            equivocate: false,
            provider: None,
            local_consensus: LocalConsensusConfig::default(),
            mesh: MeshConfig::default(),
        }
    }

    fn validators(&self, dir: &std::path::Path, mesh: &MeshConfig) -> Vec<NodeHandle> {
        (0..self.ports.len())
            .map(|i| {
                let mut s = self.spec(
                    dir,
                    format!("validator-{i}"),
                    self.accounts[i],
                    self.ports[i],
                );
                s.consensus_secret = Some(self.consensus[i]);
                s.beacon_secret = Some(self.beacon[i]);
                s.mesh = mesh.clone();
                node::start(s).unwrap()
            })
            .collect()
    }
}

fn runtime() -> actix::SystemRunner {
    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

#[test]
fn validators_agree_and_followers_sync() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let net = Testnet::new(4);
        let alice = secret("alice");
        let bob = Address::from_public_key(&node::public_key(&secret("bob")));
        let spec =
            |name: String, account: [u8; 32], port: u16| net.spec(dir.path(), name, account, port);
        let nodes = net.validators(dir.path(), &MeshConfig::default());
        let roots: Vec<_> = nodes.iter().map(watch).collect();
        let client = node::start(spec("client".into(), alice, free_port())).unwrap();
        let client_roots = watch(&client);
        let deadline = Instant::now() + Duration::from_secs(120);

        // The client syncs, then sends a transfer through the network.
        wait_for("the client to sync", deadline, || {
            client.ledger.read().unwrap().height() >= 3
        })
        .await;
        client
            .wallet
            .send(
                &client.ledger,
                Call::Transfer {
                    to: bob,
                    amount: Amount::from_train(7),
                },
                false,
            )
            .await
            .unwrap();
        for v in nodes.iter().chain([&client]) {
            wait_for("the transfer on every ledger", deadline, || {
                v.ledger.read().unwrap().account(&bob).unwrap().balance == Amount::from_train(7)
            })
            .await;
        }

        // A follower started late catches up from the committee.
        let late = node::start(spec("late".into(), secret("late"), free_port())).unwrap();
        let late_roots = watch(&late);
        let target = nodes[0].ledger.read().unwrap().height() + 5;
        for r in roots.iter().chain([&client_roots, &late_roots]) {
            wait_for("every node past the target height", deadline, || {
                r.lock().unwrap().range(target..).next().is_some()
            })
            .await;
        }
        assert_eq!(
            late.ledger.read().unwrap().account(&bob).unwrap().balance,
            Amount::from_train(7)
        );
        // Same root at every height two nodes both reached.
        let reference = roots[0].lock().unwrap().clone();
        let mut compared = 0;
        for r in roots.iter().chain([&client_roots, &late_roots]) {
            for (h, root) in r.lock().unwrap().iter() {
                if let Some(expected) = reference.get(h) {
                    assert_eq!(root, expected, "state roots differ at height {h}");
                    compared += 1;
                }
            }
        }
        assert!(compared > 20, "only {compared} roots compared");
        for node in nodes.into_iter().chain([client, late]) {
            node.stop();
        }
    });
}

#[test]
fn validators_prune_executed_commits_keeping_the_retention() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let net = Testnet::new(4);
        let retain = 16;
        let mesh = MeshConfig {
            retain_commits: retain,
            ..MeshConfig::default()
        };
        let nodes = net.validators(dir.path(), &mesh);
        let deadline = Instant::now() + Duration::from_secs(120);
        // Pruning starts once the retention plus one step of commits were executed.
        let target = retain + 2 * PRUNE_EVERY_COMMITS;
        for v in &nodes {
            wait_for("every validator past the target index", deadline, || {
                v.ledger.read().unwrap().next_index() >= target
            })
            .await;
        }
        for v in &nodes {
            let dag = v.dag.as_ref().expect("a validator's DAG store");
            // The gauge is set after each prune is written, so it never runs ahead of the store.
            let reported = v.metrics.retained_from.get() as u64;
            let next = v.ledger.read().unwrap().next_index();
            let first = dag.first_commit_index().unwrap().expect("commits kept");
            assert!(
                first >= PRUNE_EVERY_COMMITS,
                "{}: nothing pruned (first {first})",
                v.name
            );
            // Every executed commit of the retention is still there to serve.
            assert!(
                next.saturating_sub(first) >= retain,
                "{}: kept from {first}, next {next}",
                v.name
            );
            assert!(
                reported >= PRUNE_EVERY_COMMITS && reported <= first,
                "{}: gauge {reported}, first {first}",
                v.name
            );
        }
        for node in nodes {
            node.stop();
        }
    });
}
