"""The encoder agrees with the Rust ledger on the shared vectors (crates/ledger/tests/vectors.rs
checks the same file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trainmesh import BcsWriter, Key, Transaction, Transfer, call_from_json, sign_call, transfer

VECTORS: List[Dict[str, Any]] = json.loads((Path(__file__).parent / "vectors.json").read_text())[
    "vectors"
]


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_signed_transaction_matches_vector(v: Dict[str, Any]) -> None:
    key = Key.from_secret(bytes.fromhex(v["secret"]))
    assert key.public_key.hex() == v["public_key"]
    assert key.address_hex == v["sender"]

    if "call" in v:
        call = call_from_json(v["call"])
        assert call.to_json() == v["call"]  # the JSON form is the nodes' (serde's) form
        signed = sign_call(key, v["chain_id"], v["nonce"], call, int(v["fee"]), v["expires_ms"])
    else:
        signed = transfer(
            key,
            v["chain_id"],
            v["nonce"],
            v["to"],
            int(v["amount"]),
            int(v["fee"]),
            v["expires_ms"],
        )
    assert signed.tx_hash.hex() == v["tx_hash"]
    assert signed.signature.hex() == v["signature"]
    assert signed.hex() == v["encoded"]

    # The signature verifies over the hash with the sender's key.
    Ed25519PublicKey.from_public_bytes(key.public_key).verify(signed.signature, signed.tx_hash)


def test_vectors_cover_the_edges() -> None:
    assert len(VECTORS) >= 3
    assert any(len(v["chain_id"]) > 127 for v in VECTORS)  # a two-byte ULEB128 length
    assert any(int(v.get("amount", 0)) == (1 << 128) - 1 for v in VECTORS)
    assert any(v["nonce"] == (1 << 64) - 1 for v in VECTORS)
    kinds = {next(iter(v["call"])) for v in VECTORS if "call" in v}
    assert {"SubmitJob", "AttachDataset"} <= kinds
    jobs = [v["call"]["SubmitJob"]["spec"] for v in VECTORS if "SubmitJob" in v.get("call", {})]
    assert any(len(j["model"]) > 127 for j in jobs)
    assert {j["hyper"]["optimizer"] for j in jobs} == {"Sgd", "Adam"}
    assert {j["target"]["metric"] for j in jobs} == {"Accuracy", "Loss"}
    assert any(int(j["budget"]) == (1 << 128) - 1 for j in jobs)
    sets = [
        v["call"]["AttachDataset"]["spec"] for v in VECTORS if "AttachDataset" in v.get("call", {})
    ]
    assert any(len(d["shard_sizes"]) > 127 for d in sets)
    assert any(not d["licence"].isascii() for d in sets)


def test_bcs_writer_basics() -> None:
    assert BcsWriter().uleb128(0).finish() == b"\x00"
    assert BcsWriter().uleb128(127).finish() == b"\x7f"
    assert BcsWriter().uleb128(128).finish() == b"\x80\x01"
    assert BcsWriter().uleb128(300).finish() == b"\xac\x02"
    assert BcsWriter().u64(1).finish() == b"\x01" + b"\x00" * 7
    assert BcsWriter().string("ab").finish() == b"\x02ab"
    with pytest.raises(ValueError):
        BcsWriter().u128(1 << 128)
    with pytest.raises(ValueError):
        BcsWriter().u64(-1)


def test_signing_with_another_key_is_refused() -> None:
    a, b = Key.generate(), Key.generate()
    tx = Transaction("c", a.public_key, 0, 0, Transfer.of(b.address, 1))
    with pytest.raises(ValueError):
        tx.sign(b)


def test_devnet_key_is_the_nodes_derivation() -> None:
    researcher = next(v for v in VECTORS if v["chain_id"] == "trainmesh-devnet")
    assert Key.devnet("researcher").secret.hex() == researcher["secret"]
