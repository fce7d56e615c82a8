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
    net.ok(
        &w,
        Call::RegisterWorker {
            role: Role::Trainer,
            bond: Amount::from_train(200),
            capability: Capability::default(),
            peer_id: "p".into(),
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
