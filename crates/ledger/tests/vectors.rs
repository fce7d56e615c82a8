//! Shared test vectors for signed transactions: the Python SDK (`sdk/python/tests`) checks the
//! same file, so both encoders agree byte for byte. ed25519 signatures are deterministic, so the
//! expected encodings are stable; `TRAINMESH_WRITE_VECTORS=1` rewrites them from this encoder.
//!
//! A vector's call is a transfer (`to`, `amount`) or any `Call` in its JSON form (`call`), which
//! must also be exactly what serde writes for it, so the SDK's JSON forms stay in step too.

use std::path::PathBuf;

use serde_json::Value;
use trainmesh_ledger::contracts::calls::Call;
use trainmesh_ledger::contracts::{Address, Amount};
use trainmesh_ledger::{SignedTransaction, Transaction};

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sdk/python/tests/vectors.json")
}

fn bytes32(v: &Value, field: &str) -> [u8; 32] {
    let text = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string"));
    hex::decode(text)
        .unwrap_or_else(|e| panic!("{field} is hex: {e}"))
        .try_into()
        .unwrap_or_else(|_| panic!("{field} is 32 bytes"))
}

fn amount(v: &Value, field: &str) -> Amount {
    let text = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string"));
    Amount(text.parse().unwrap_or_else(|e| panic!("{field}: {e}")))
}

/// The call of a vector: its JSON form (`call`), or a transfer (`to`, `amount`).
fn call(v: &Value) -> Call {
    let name = v["name"].as_str().unwrap_or("?");
    match v.get("call") {
        Some(json) => {
            let call: Call = serde_json::from_value(json.clone())
                .unwrap_or_else(|e| panic!("{name}: call does not parse: {e}"));
            let written = serde_json::to_value(&call).expect("calls serialize");
            assert_eq!(&written, json, "{name}: the call's JSON is not serde's");
            call
        }
        None => Call::Transfer {
            to: Address(bytes32(v, "to")),
            amount: amount(v, "amount"),
        },
    }
}

/// The signed transaction a vector's inputs describe.
fn build(v: &Value) -> SignedTransaction {
    let secret = bytes32(v, "secret");
    let public_key: [u8; 32] =
        ed25519_zebra::VerificationKey::from(&ed25519_zebra::SigningKey::from(secret)).into();
    Transaction {
        chain_id: v["chain_id"].as_str().expect("chain_id").to_string(),
        public_key,
        nonce: v["nonce"].as_u64().expect("nonce is a u64"),
        fee: amount(v, "fee"),
        expires_ms: v["expires_ms"].as_u64().expect("expires_ms is a u64"),
        call: call(v),
    }
    .sign(&secret)
}

fn expected(signed: &SignedTransaction) -> [(&'static str, String); 5] {
    [
        ("public_key", hex::encode(signed.transaction.public_key)),
        ("sender", hex::encode(signed.sender().0)),
        ("tx_hash", hex::encode(signed.hash())),
        ("signature", hex::encode(signed.signature)),
        ("encoded", hex::encode(signed.encode())),
    ]
}

#[test]
fn signed_transactions_match_the_shared_vectors() {
    let text = std::fs::read_to_string(path()).expect("reading the vectors");
    let mut doc: Value = serde_json::from_str(&text).expect("vectors are JSON");
    let write = std::env::var_os("TRAINMESH_WRITE_VECTORS").is_some();
    let vectors = doc["vectors"].as_array_mut().expect("a vectors array");
    assert!(vectors.len() >= 3, "a few vectors");
    let kinds: Vec<&str> = vectors.iter().map(|v| call(v).name()).collect();
    for kind in ["transfer", "submit_job", "attach_dataset"] {
        assert!(kinds.contains(&kind), "no {kind} vector");
    }
    for v in vectors.iter_mut() {
        let name = v["name"].as_str().unwrap_or("?").to_string();
        let signed = build(v);
        for (field, value) in expected(&signed) {
            if write {
                v[field] = Value::String(value);
            } else {
                assert_eq!(v[field].as_str(), Some(value.as_str()), "{name}: {field}");
            }
        }
        // The encoding decodes back to the same transaction, and verifies on its chain.
        let decoded = SignedTransaction::decode(&signed.encode()).expect("decodes");
        assert_eq!(decoded, signed, "{name}: round trip");
        decoded
            .verify(&signed.transaction.chain_id)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    if write {
        let out = serde_json::to_string_pretty(&doc).expect("serializes") + "\n";
        std::fs::write(path(), out).expect("writing the vectors");
    }
}
