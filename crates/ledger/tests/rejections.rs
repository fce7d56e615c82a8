//! Every way a transaction is refused: a distinct, typed error, and a state root that did not move.

mod common;

use bytes::Bytes;
use common::{genesis, Net, CHAIN};
use trainmesh_ledger::contracts::calls::Call;
use trainmesh_ledger::contracts::{accounts, Amount, ContractError, MemState, Params};
use trainmesh_ledger::transaction::TRANSACTION_VERSION;
use trainmesh_ledger::{
    AccountKey, LedgerError, SignedTransaction, Transaction, TRANSACTION_BYTES_MAX,
};

fn setup() -> (Net, AccountKey, AccountKey) {
    let alice = AccountKey::from_seed(1);
    let bob = AccountKey::from_seed(2);
    let g = genesis(&[(&alice, 100), (&bob, 5)], &[&alice], Params::default());
    (Net::new(&g), alice, bob)
}

fn transfer(to: &AccountKey, train: u64) -> Call {
    Call::Transfer {
        to: to.address(),
        amount: Amount::from_train(train),
    }
}

/// Runs `tx` alone in a batch; asserts it is refused with `code` and the root stays.
fn refused(net: &mut Net, tx: Vec<u8>, code: &str) -> String {
    let root = net.ledger.state_root();
    let entries = net.ledger.entries().unwrap();
    let out = net.batch(vec![Bytes::from(tx)], 1_000);
    let rejection = out.receipts[0].outcome.clone().expect_err("refused");
    assert_eq!(rejection.code, code, "{}", rejection.message);
    assert_eq!(net.ledger.state_root(), root, "{code}: the root moved");
    assert_eq!(
        net.ledger.entries().unwrap(),
        entries,
        "{code}: the state changed"
    );
    rejection.message
}

#[test]
fn wrong_chain_id() {
    let (mut net, alice, bob) = setup();
    let tx = alice
        .sign("another-chain", 0, Amount(10), transfer(&bob, 1))
        .encode();
    let m = refused(&mut net, tx, "wrong_chain_id");
    assert!(m.contains("another-chain"));
}

#[test]
fn bad_signature() {
    let (mut net, alice, bob) = setup();
    let mut tx = alice.sign(CHAIN, 0, Amount(10), transfer(&bob, 1)).encode();
    let last = tx.len() - 1;
    tx[last] ^= 0x01;
    refused(&mut net, tx, "bad_signature");
    // Signed by bob's key but claiming alice's public key.
    let forged = Transaction {
        chain_id: CHAIN.into(),
        public_key: alice.public_key(),
        nonce: 0,
        fee: Amount(10),
        call: transfer(&bob, 50),
    }
    .sign(&bob.secret());
    refused(&mut net, forged.encode(), "bad_signature");
}

#[test]
fn replayed_and_skipped_nonces() {
    let (mut net, alice, bob) = setup();
    let first = alice.sign(CHAIN, 0, Amount(10), transfer(&bob, 1)).encode();
    let out = net.batch(vec![Bytes::from(first.clone())], 1_000);
    assert!(out.receipts[0].outcome.is_ok());
    refused(&mut net, first, "nonce_replayed");
    let skipped = alice.sign(CHAIN, 5, Amount(10), transfer(&bob, 1)).encode();
    refused(&mut net, skipped, "nonce_skipped");
}

#[test]
fn insufficient_balance_for_the_fee_and_for_the_call() {
    let (mut net, alice, bob) = setup();
    let fee_too_big = bob
        .sign(CHAIN, 0, Amount::from_train(6), transfer(&alice, 1))
        .encode();
    refused(&mut net, fee_too_big, "insufficient_balance");
    let too_much = bob.sign(CHAIN, 0, Amount(10), transfer(&alice, 6)).encode();
    let m = refused(&mut net, too_much, "insufficient_balance");
    assert!(m.contains("available"), "{m}");
    // The nonce was not consumed: the same nonce works for a valid transfer.
    let ok = bob.sign(CHAIN, 0, Amount(10), transfer(&alice, 1)).encode();
    assert!(net.batch(vec![Bytes::from(ok)], 1_000).receipts[0]
        .outcome
        .is_ok());
}

#[test]
fn overflow_is_refused_by_checked_arithmetic() {
    // No reachable state lets a balance overflow (every holding is part of a supply that fits in
    // u128), so the check is exercised on a state built by hand.
    let mut state = MemState::default();
    let rich = AccountKey::from_seed(9).address();
    accounts::credit(&mut state, &rich, Amount(u128::MAX - 5)).unwrap();
    let before = state.clone();
    assert_eq!(
        accounts::credit(&mut state, &rich, Amount(6)),
        Err(ContractError::Overflow)
    );
    assert_eq!(state, before);
    assert_eq!(
        LedgerError::from(ContractError::Overflow).code(),
        "overflow"
    );
}

#[test]
fn unknown_kind_oversized_truncated_and_malformed_bytes() {
    let (mut net, alice, bob) = setup();
    let good = alice.sign(CHAIN, 0, Amount(10), transfer(&bob, 1)).encode();
    // Every truncation is refused (as truncated or malformed), never a panic.
    for len in 0..good.len() {
        let r = SignedTransaction::decode(&good[..len]).unwrap_err();
        assert!(
            matches!(
                r,
                LedgerError::Truncated | LedgerError::Malformed { .. } | LedgerError::Empty
            ),
            "{len}: {r:?}"
        );
    }
    refused(&mut net, good[..good.len() / 2].to_vec(), "truncated");
    refused(&mut net, vec![], "empty");
    let mut wrong_version = good.clone();
    wrong_version[0] = TRANSACTION_VERSION + 1;
    refused(&mut net, wrong_version, "unsupported_version");
    refused(
        &mut net,
        vec![TRANSACTION_VERSION; TRANSACTION_BYTES_MAX + 1],
        "oversized",
    );
    let mut trailing = good.clone();
    trailing.push(0);
    refused(&mut net, trailing, "malformed");
    // An unknown call kind: the envelope's kind field after chain id, key, nonce and fee.
    let kind_at = 1 + 1 + CHAIN.len() + 32 + 8 + 16;
    let mut unknown = good.clone();
    unknown[kind_at] = 200;
    unknown[kind_at + 1] = 1; // ULEB128: 200 | 1 << 7
    let r = SignedTransaction::decode(&unknown);
    assert!(
        matches!(
            r,
            Err(LedgerError::UnknownKind { .. }) | Err(LedgerError::Malformed { .. })
        ),
        "{r:?}"
    );
    let mut unknown = good;
    unknown[kind_at] = 99;
    assert_eq!(
        SignedTransaction::decode(&unknown).unwrap_err(),
        LedgerError::UnknownKind { kind: 99 }
    );
    refused(&mut net, unknown, "unknown_kind");
}

#[test]
fn contract_rule_violations_leave_no_trace() {
    let (mut net, alice, bob) = setup();
    // Unbonding more than the free stake, withdrawing nothing, voting on nothing.
    let cases = [
        (
            Call::Unbond {
                amount: Amount::from_train(1),
            },
            "insufficient free stake",
        ),
        (Call::Withdraw, "nothing to withdraw"),
        (
            Call::Vote {
                proposal: trainmesh_ledger::contracts::ProposalId(7),
                approve: true,
            },
            "unknown proposal",
        ),
        (
            Call::Bond {
                amount: Amount::ZERO,
            },
            "amount is zero",
        ),
    ];
    for (call, needle) in cases {
        let tx = bob.sign(CHAIN, 0, Amount(10), call).encode();
        let m = refused(&mut net, tx, "contract_error");
        assert!(m.contains(needle), "{m}");
    }
    // A transfer to oneself of more than one has.
    let tx = alice
        .sign(CHAIN, 0, Amount(10), transfer(&alice, 1_000))
        .encode();
    refused(&mut net, tx, "insufficient_balance");
}

#[test]
fn batches_in_order_only() {
    let (mut net, _, _) = setup();
    let b = |index| trainmesh_ledger::Batch {
        index,
        timestamp: trainmesh_ledger::contracts::TimestampMs(2_000_000),
        seed: [0; 32],
        transactions: vec![],
    };
    assert_eq!(
        net.ledger.execute(&b(1)).unwrap_err(),
        LedgerError::BatchOutOfOrder {
            expected: 0,
            actual: 1
        }
    );
    net.ledger.execute(&b(0)).unwrap();
    assert_eq!(
        net.ledger.execute(&b(0)).unwrap_err(),
        LedgerError::BatchAlreadyExecuted { index: 0 }
    );
}

#[test]
fn a_dry_run_says_what_execution_would_and_writes_nothing() {
    let (mut net, alice, bob) = setup();
    let root = net.ledger.state_root();
    let entries = net.ledger.entries().unwrap();
    let sim = |net: &Net, tx: SignedTransaction| net.ledger.simulate(tx);

    // Fine: the events execution would emit.
    let ok = sim(&net, alice.sign(CHAIN, 0, Amount(10), transfer(&bob, 1))).unwrap();
    assert!(!ok.is_empty());
    // A nonce ahead of the account's is taken as is (earlier ones may be in flight).
    assert!(sim(&net, alice.sign(CHAIN, 3, Amount(10), transfer(&bob, 1))).is_ok());
    // More than the balance.
    let e = sim(&net, bob.sign(CHAIN, 0, Amount(10), transfer(&alice, 6))).unwrap_err();
    assert_eq!(e.code(), "insufficient_balance", "{e}");
    // A contract's own refusal.
    let e = sim(
        &net,
        bob.sign(
            CHAIN,
            0,
            Amount(10),
            Call::Bond {
                amount: Amount::ZERO,
            },
        ),
    )
    .unwrap_err();
    assert!(matches!(e, LedgerError::Contract(_)), "{e}");
    assert_eq!(net.ledger.state_root(), root);
    assert_eq!(net.ledger.entries().unwrap(), entries, "a dry run wrote");

    // After a real execution, the used nonce is refused.
    let first = alice.sign(CHAIN, 0, Amount(10), transfer(&bob, 1));
    assert!(
        net.batch(vec![Bytes::from(first.encode())], 1_000).receipts[0]
            .outcome
            .is_ok()
    );
    let e = sim(&net, first).unwrap_err();
    assert_eq!(e.code(), "nonce_replayed");
}
