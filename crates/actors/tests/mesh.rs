//! Four validators, each a node with its own libp2p swarm on loopback and its own redb data,
//! agree on the ledger; a transfer submitted through a follower (a node with no role) commits;
//! a follower started late syncs from the committee and reaches the same state roots.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use trainmesh_actors::ledger::{LedgerAdvanced, Subscribe};
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

#[test]
fn validators_agree_and_followers_sync() {
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    });
    system.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let n = 4;
        let accounts: Vec<[u8; 32]> = (0..n).map(|i| secret(&format!("account-{i}"))).collect();
        let consensus: Vec<[u8; 32]> = (0..n).map(|i| secret(&format!("consensus-{i}"))).collect();
        let alice = secret("alice");
        let bob = Address::from_public_key(&node::public_key(&secret("bob")));
        let genesis = Genesis {
            chain_id: "mesh-test".into(),
            genesis_time_ms: 0,
            accounts: vec![GenesisAccount {
                address: Address::from_public_key(&node::public_key(&alice)),
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
        };
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let bootstrap: Vec<_> = (0..n)
            .map(|i| {
                (
                    trainmesh_actors::network::peer_id(&node::public_key(&consensus[i])).unwrap(),
                    addr(ports[i]),
                )
            })
            .collect();
        let spec = |name: String, account: [u8; 32], port: u16| NodeSpec {
            data_dir: dir.path().join(&name),
            name,
            genesis: genesis.clone(),
            account_secret: account,
            consensus_secret: None,
            listen: addr(port),
            bootstrap: bootstrap.clone(),
            trainer: None,
            evaluator: None,
            provider: None,
            local_consensus: LocalConsensusConfig::default(),
        };
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut s = spec(format!("validator-{i}"), accounts[i], ports[i]);
            s.consensus_secret = Some(consensus[i]);
            nodes.push(node::start(s).unwrap());
        }
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
