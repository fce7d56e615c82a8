//! A light client checks one account against the state root alone.

mod common;

use common::{genesis, Net};
use trainmesh_ledger::contracts::calls::Call;
use trainmesh_ledger::contracts::{accounts::Account, keys, Amount, Params};
use trainmesh_ledger::AccountKey;

#[test]
fn an_account_is_proven_against_the_root() {
    let alice = AccountKey::from_seed(1);
    let bob = AccountKey::from_seed(2);
    let nobody = AccountKey::from_seed(3);
    let mut net = Net::new(&genesis(
        &[(&alice, 100), (&bob, 5)],
        &[],
        Params::default(),
    ));
    net.ok(
        &alice,
        Call::Transfer {
            to: bob.address(),
            amount: Amount::from_train(7),
        },
    );
    let root = net.ledger.state_root();

    let proof = net.ledger.prove(&keys::account(&bob.address())).unwrap();
    assert!(proof.verify(root));
    let account: Account = bcs::from_bytes(proof.value.as_ref().unwrap()).unwrap();
    assert_eq!(account.balance, Amount::from_train(12));

    // A tampered value, or an old root, does not verify.
    let mut forged = proof;
    let mut richer = account.clone();
    richer.balance = Amount::from_train(1_000_000);
    forged.value = Some(bcs::to_bytes(&richer).unwrap());
    assert!(!forged.verify(root));

    // Absence is provable too.
    let absent = net.ledger.prove(&keys::account(&nobody.address())).unwrap();
    assert!(absent.value.is_none());
    assert!(absent.verify(root));

    // After another batch the old proof no longer matches the new root.
    let old = net.ledger.prove(&keys::account(&bob.address())).unwrap();
    net.ok(
        &alice,
        Call::Transfer {
            to: bob.address(),
            amount: Amount::from_train(1),
        },
    );
    assert!(!old.verify(net.ledger.state_root()));
    assert!(old.verify(root));
}

#[test]
fn proofs_hold_after_deletions() {
    use trainmesh_ledger::contracts::workers::{Capability, Role};
    let w = AccountKey::from_seed(11);
    let mut net = Net::new(&genesis(&[(&w, 1_000)], &[], Params::default()));
    let (peer_id, peer_signature) = w.peer_binding(&w.secret());
    net.ok(
        &w,
        Call::RegisterWorker {
            role: Role::Trainer,
            bond: Amount::from_train(200),
            capability: Capability::default(),
            peer_id,
            peer_signature,
        },
    );
    let key = keys::worker(&w.address());
    let root = net.ledger.state_root();
    let present = net.ledger.prove(&key).unwrap();
    assert!(present.value.is_some() && present.verify(root));
    // Deregistering deletes the record: the tree takes the general (deleting) path.
    net.ok(&w, Call::DeregisterWorker);
    let root = net.ledger.state_root();
    let gone = net.ledger.prove(&key).unwrap();
    assert!(gone.value.is_none());
    assert!(gone.verify(root));
    assert!(!present.verify(root));
    let account = net.ledger.prove(&keys::account(&w.address())).unwrap();
    assert!(account.verify(root));
    // And the tree keeps working on the fast path afterwards.
    net.ok(
        &w,
        Call::Bond {
            amount: Amount::from_train(1),
        },
    );
    assert!(net
        .ledger
        .prove(&keys::account(&w.address()))
        .unwrap()
        .verify(net.ledger.state_root()));
}

/// The tree as stored (read back after every restart, with no node in memory) is the tree kept
/// in memory: same roots, and every key proven against them, through new keys (leaves split and
/// move down), deletions (leaves move up) and plain value updates.
#[test]
fn the_tree_read_back_from_disk_is_the_tree_in_memory() {
    use bytes::Bytes;
    use trainmesh_ledger::contracts::workers::{Capability, Role};
    use trainmesh_ledger::contracts::TimestampMs;
    use trainmesh_ledger::{Batch, Ledger};

    let senders: Vec<AccountKey> = (0..24).map(|i| AccountKey::from_seed(100 + i)).collect();
    let funded: Vec<(&AccountKey, u64)> = senders.iter().map(|k| (k, 10_000)).collect();
    let g = genesis(&funded, &[], Params::default());
    let mut nonces = vec![0u64; senders.len()];
    let mut batches = Vec::new();
    for b in 0..12u64 {
        let mut txs = Vec::new();
        for (i, key) in senders.iter().enumerate() {
            let call = match (b + i as u64) % 4 {
                // A new account: a new leaf.
                0 => Call::Transfer {
                    to: AccountKey::from_seed(10_000 + b * 100 + i as u64).address(),
                    amount: Amount::from_train(1),
                },
                1 => {
                    let (peer_id, peer_signature) = key.peer_binding(&key.secret());
                    Call::RegisterWorker {
                        role: Role::Trainer,
                        bond: Amount::from_train(200),
                        capability: Capability::default(),
                        peer_id,
                        peer_signature,
                    }
                }
                // Deletes the worker record registered the batch before.
                2 if b > 0 => Call::DeregisterWorker,
                _ => Call::Transfer {
                    to: senders[(i + 1) % senders.len()].address(),
                    amount: Amount(5),
                },
            };
            txs.push(Bytes::from(
                key.sign(common::CHAIN, nonces[i], common::FEE, call)
                    .encode(),
            ));
            nonces[i] += 1;
        }
        batches.push(Batch {
            index: b,
            timestamp: TimestampMs(2_000_000 + 1_000 * b),
            seed: *blake3::hash(&b.to_le_bytes()).as_bytes(),
            transactions: txs,
        });
    }

    let warm_dir = tempfile::tempdir().unwrap();
    let mut warm = Ledger::open(warm_dir.path().join("l.redb")).unwrap();
    warm.init(&g).unwrap();
    let cold_dir = tempfile::tempdir().unwrap();
    let cold_path = cold_dir.path().join("l.redb");
    {
        let mut cold = Ledger::open(&cold_path).unwrap();
        cold.init(&g).unwrap();
    }
    let strangers: Vec<_> = (0..5).map(|i| AccountKey::from_seed(900 + i)).collect();
    for batch in &batches {
        let out = warm.execute(batch).unwrap();
        assert_eq!(out.accepted(), senders.len(), "{:?}", out.receipts);
        let mut cold = Ledger::open(&cold_path).unwrap();
        assert_eq!(cold.execute(batch).unwrap().state_root, out.state_root);
        drop(cold);
        let cold = Ledger::open(&cold_path).unwrap();
        let root = cold.state_root();
        assert_eq!(root, warm.state_root());
        for (key, value) in cold.entries().unwrap() {
            for ledger in [&cold, &warm] {
                let proof = ledger.prove(&key).unwrap();
                assert_eq!(proof.value.as_ref(), Some(&value));
                assert!(proof.verify(root));
            }
        }
        for s in &strangers {
            let proof = cold.prove(&keys::account(&s.address())).unwrap();
            assert!(proof.value.is_none() && proof.verify(root));
        }
    }
}
