"""The SDK against what the engine itself wrote (crates/gpu/tests/sdk_vectors.rs): shard bytes, Merkle
roots, and briefly trained checkpoints of a logistic, an MLP (tanh, sigmoid) and a CNN, whose
logits the numpy model must reproduce bit for bit, and whose correct predictions it must count
the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import blake3
import numpy as np
import pytest

from trainmesh import (
    Model,
    Transformer,
    checkpoint_metadata,
    encode_shard,
    load_digits,
    load_weights,
    merkle_root,
)

HERE = Path(__file__).parent
VECTORS: Dict[str, Any] = json.loads((HERE / "engine_vectors.json").read_text())
MODELS: List[Dict[str, Any]] = VECTORS["models"]


def test_shards_hash_as_the_engines() -> None:
    x, y = load_digits()
    digits10, tiny = VECTORS["shards"]
    shard = encode_shard(x[:10], y[:10], 10)
    assert len(shard) == digits10["bytes"]
    assert blake3.blake3(shard).hexdigest() == digits10["blake3"]
    small = encode_shard([[0.0, 0.5, 1.0], [0.25, 0.75, 0.125]], [0, 1], 2)
    assert len(small) == tiny["bytes"] and blake3.blake3(small).hexdigest() == tiny["blake3"]


def test_merkle_roots_are_the_engines() -> None:
    leaves = [blake3.blake3(i.to_bytes(4, "little")).digest() for i in range(6)]
    roots = VECTORS["merkle"]["roots"]
    assert len(roots) == 7
    for r in roots:
        assert merkle_root(leaves[: r["leaves"]]).hex() == r["root"], r["leaves"]


@pytest.mark.parametrize("v", MODELS, ids=[m["name"] for m in MODELS])
def test_numpy_model_is_the_executor_bit_for_bit(v: Dict[str, Any]) -> None:
    path = HERE / v["checkpoint"]
    assert blake3.blake3(path.read_bytes()).hexdigest() == v["blake3"]
    assert checkpoint_metadata(path)["step"] == v["step"]
    weights = load_weights(path)
    assert any(k.startswith("state.") for k in weights)  # Adam's moments ride along
    model = Model(v["spec"])
    x, y = load_digits()
    n = v["logit_rows"]
    bits = model.logits(weights, x[:n]).reshape(-1).view(np.uint32)
    assert [f"{b:08x}" for b in bits] == v["logits_f32_bits"]
    assert model.correct(weights, x, y) == v["correct"]
    # numpy's own matrix products land within float error, not necessarily on the same bits.
    fast = model.logits(weights, x[:n], exact=False).reshape(-1)
    expected = np.array([int(b, 16) for b in v["logits_f32_bits"]], dtype=np.uint32)
    np.testing.assert_allclose(fast, expected.view(np.float32), rtol=1e-4, atol=1e-4)


TRANSFORMERS: List[Dict[str, Any]] = VECTORS["transformers"]


@pytest.mark.parametrize("v", TRANSFORMERS, ids=[m["name"] for m in TRANSFORMERS])
def test_numpy_transformer_is_the_executor_bit_for_bit(v: Dict[str, Any]) -> None:
    path = HERE / v["checkpoint"]
    assert blake3.blake3(path.read_bytes()).hexdigest() == v["blake3"]
    assert checkpoint_metadata(path)["step"] == v["step"]
    weights = load_weights(path)
    model = Model(v["spec"])
    assert isinstance(model, Transformer)
    seqs = np.array(v["inputs"]).reshape(2, -1)
    bits = model.logits(weights, seqs).reshape(-1).view(np.uint32)
    assert [f"{b:08x}" for b in bits] == v["logits_f32_bits"]
    # The fast path is close, not exact.
    fast = model.logits(weights, seqs, exact=False)
    assert np.allclose(fast, model.logits(weights, seqs), atol=1e-4)
    # The loss over the text's windows, as the engine measures it (float64 sums here).
    ids = list(v["text"].encode())
    assert abs(model.loss(weights, ids, exact=False) - v["loss"]) < 1e-4
    # Trained on the text, it continues it.
    prompt = "It is a truth universally"
    out = model.generate_text(weights, prompt, 12)
    assert len(out.encode()) <= 12 and out, out
