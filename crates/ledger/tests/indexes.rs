//! The ledger's read indexes: a transaction's receipt by hash, an account's payments and slashes
//! by height. The gateway reads through them instead of scanning heights.

mod common;

use bytes::Bytes;
use common::{genesis, Net, CHAIN, FEE};
use trainmesh_ledger::contracts::calls::Call;
use trainmesh_ledger::contracts::{Amount, Params};
use trainmesh_ledger::AccountKey;

fn transfer(to: &AccountKey, units: u128) -> Call {
    Call::Transfer {
        to: to.address(),
        amount: Amount(units),
    }
}

#[test]
fn a_receipt_is_found_by_hash_and_a_replay_does_not_hide_it() {
    let alice = AccountKey::from_seed(1);
    let bob = AccountKey::from_seed(2);
    let mut net = Net::new(&genesis(&[(&alice, 100)], &[&alice], Params::default()));
    // Sent before its predecessor: refused free at height 1.
    let second = alice.sign(CHAIN, 1, FEE, transfer(&bob, 2));
    net.batch(vec![Bytes::from(second.encode())], 1_000);
    assert_eq!(net.ledger.tx_height(&second.hash()).unwrap(), Some(1));
    // Its predecessor, then it again: it executes at height 3 and the index follows it.
    let first = alice.sign(CHAIN, 0, FEE, transfer(&bob, 1));
    net.batch(vec![Bytes::from(first.encode())], 1_000);
    let out = net.batch(vec![Bytes::from(second.encode())], 1_000);
    assert!(out.receipts[0].outcome.is_ok());
    assert_eq!(net.ledger.tx_height(&second.hash()).unwrap(), Some(3));
    // Replayed later (refused free): the index keeps the receipt that charged.
    net.batch(vec![Bytes::from(second.encode())], 1_000);
    assert_eq!(net.ledger.tx_height(&second.hash()).unwrap(), Some(3));
    assert_eq!(net.ledger.tx_height(&first.hash()).unwrap(), Some(2));
    assert_eq!(net.ledger.tx_height(&[9; 32]).unwrap(), None);
}

#[test]
fn an_accounts_payments_are_indexed_by_height_newest_first() {
    let alice = AccountKey::from_seed(1);
    let validator = AccountKey::from_seed(3);
    let mut net = Net::new(&genesis(&[(&alice, 100)], &[&validator], Params::default()));
    // Every batch with a fee pays the validator its share at the batch's end.
    for nonce in 0..5 {
        let tx = net.signed(&alice, nonce, transfer(&validator, 1));
        net.batch(vec![tx], 1_000);
        net.batch(vec![], 1_000);
    }
    let top = net.ledger.height();
    let all = net
        .ledger
        .account_heights(&validator.address(), top, 100)
        .unwrap();
    assert_eq!(all, vec![9, 7, 5, 3, 1]);
    assert_eq!(
        net.ledger
            .account_heights(&validator.address(), 6, 2)
            .unwrap(),
        vec![5, 3]
    );
    // Alice was never paid.
    assert!(net
        .ledger
        .account_heights(&alice.address(), top, 100)
        .unwrap()
        .is_empty());
}
