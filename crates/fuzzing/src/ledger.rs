//! A signed transaction as validators (router, ledger batch) and the gateway decode it.

use trainmesh_ledger::account_key::AccountKey;
use trainmesh_ledger::transaction::SignedTransaction;
use trainmesh_ledger::TRANSACTION_BYTES_MAX;

use crate::CHAIN_ID;

/// Decodes and checks `data`. Whatever decodes must be the canonical encoding of what it decoded
/// to (a transaction has one encoding, so one hash), and the same transaction signed by a known
/// key must pass the checks.
pub fn ledger_transaction(data: &[u8]) {
    let Ok(tx) = SignedTransaction::decode(data) else {
        return;
    };
    assert_eq!(
        tx.encode(),
        data,
        "a decoded transaction does not encode to the bytes it came from"
    );
    // The signature covers exactly the hash; a check against any chain id may only refuse.
    let _refused_or_accepted = tx.verify(CHAIN_ID);
    let signer = AccountKey::from_seed(1);
    let mut unsigned = tx.transaction;
    unsigned.chain_id = CHAIN_ID.to_string();
    unsigned.public_key = signer.public_key();
    let signed = unsigned.sign(&signer.secret());
    signed
        .verify(CHAIN_ID)
        .expect("a transaction signed by its key passes the checks");
    let encoded = signed.encode();
    match SignedTransaction::decode(&encoded) {
        Ok(again) => {
            assert_eq!(again, signed);
            assert_eq!(again.hash(), signed.hash());
        }
        // Only the size limit may refuse it (its chain id may be longer than the original's).
        Err(e) => assert!(
            encoded.len() > TRANSACTION_BYTES_MAX,
            "a transaction's own encoding is refused: {e}"
        ),
    }
}
