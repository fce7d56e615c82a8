//! Four validators, each with its own libp2p swarm on loopback and its own redb store, reach the
//! same committed sequence.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use trainmesh_actors::consensus::{self, PeerBook};
use trainmesh_actors::network::{self, NetworkConfig};
use trainmesh_dag::encoding::encode;
use trainmesh_dag::test_dag::TestCommittee;
use trainmesh_dag::{AuthorityIndex, CommittedSubDag, Core, CoreConfig, RedbStore, Validator};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_agree_over_loopback() {
    let n = 4;
    let tc = TestCommittee::new(n);
    let peers = PeerBook::new(tc.committee()).unwrap();
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let addr = |i: usize| format!("/ip4/127.0.0.1/tcp/{}", ports[i]).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = CoreConfig {
        max_header_delay_ms: 100,
        leader_timeout_ms: 500,
        ..CoreConfig::default()
    };
    let mut commit_rx = Vec::new();
    let mut submit_tx = Vec::new();
    for i in 0..n {
        let me = AuthorityIndex(i as u32);
        let key = tc.key_copy(me);
        let (net_tx, net_rx) = network::spawn(NetworkConfig {
            secret_key: key.secret_bytes(),
            listen: addr(i),
            bootstrap: (0..n)
                .filter(|j| *j != i)
                .map(|j| (peers.peer(AuthorityIndex(j as u32)), addr(j)))
                .collect(),
            topics: vec![],
            validate: Arc::new(|_| true),
        })
        .unwrap();
        let store = RedbStore::open(dir.path().join(format!("dag-{i}.redb"))).unwrap();
        let (core, startup) = Core::new(
            config.clone(),
            tc.committee().clone(),
            me,
            key,
            store,
            consensus::now(),
        )
        .unwrap();
        let validator = Validator::new(tc.committee().clone(), config.clone());
        let (stx, srx) = mpsc::channel(consensus::SUBMIT_QUEUE_MAX);
        let (ctx, crx) = mpsc::channel(consensus::COMMIT_QUEUE_MAX);
        let peers = peers.clone();
        tokio::spawn(async move {
            consensus::run(core, startup, validator, peers, net_tx, net_rx, srx, ctx, 0)
                .await
                .unwrap()
        });
        submit_tx.push(stx);
        commit_rx.push(crx);
    }
    for (i, s) in submit_tx.iter().enumerate() {
        let txs = (0..50)
            .map(|k| Bytes::from(format!("tx/{i}/{k}")))
            .collect();
        s.send(txs).await.unwrap();
    }
    // Wait, with a deadline, until every validator committed 6 sub-DAGs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut logs: Vec<Vec<CommittedSubDag>> = vec![Vec::new(); n];
    for (i, rx) in commit_rx.iter_mut().enumerate() {
        while logs[i].len() < 6 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => logs[i].push(s),
                Ok(None) => panic!("validator {i} stopped"),
                Err(_) => panic!(
                    "validator {i} made {} commits before the deadline",
                    logs[i].len()
                ),
            }
        }
    }
    let first: Vec<Vec<u8>> = logs[0][..6].iter().map(encode).collect();
    for (i, l) in logs.iter().enumerate() {
        let mine: Vec<Vec<u8>> = l[..6].iter().map(encode).collect();
        assert_eq!(mine, first, "validator {i} disagrees");
    }
    let committed: usize = logs[0].iter().map(|s| s.transactions().count()).sum();
    assert!(committed > 0, "transactions were committed");
}
