"""The SDK without a network: shards, Merkle roots, the numpy models, weights files, the SSE
parser, errors, and the client against a small local HTTP server that plays the gateway."""

from __future__ import annotations

import json
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import blake3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
import numpy as np
import pytest

from trainmesh import (
    BadRequest,
    ChecksumMismatch,
    Client,
    Conflict,
    DepositForUploads,
    InsufficientBalance,
    InvalidSignature,
    Forbidden,
    InvalidSpec,
    JobFailed,
    MIN_FEE_DEFAULT,
    Key,
    Model,
    NonceReplayed,
    NotFound,
    PaymentRequired,
    ShardError,
    SpecError,
    SubmitJob,
    TransactionRejected,
    UnknownTransaction,
    WaitTimeout,
    WrongChain,
    decode_shard,
    encode_shard,
    load_digits,
    load_weights,
    merkle_root,
    ppm_of,
    split_shards,
)
from trainmesh.client import _parse_sse
from trainmesh.errors import error_for, rejection
from trainmesh.model import Conv, det_exp, det_sigmoid, det_tanh, fma

MLP = {"kind": "mlp", "input": 64, "classes": 10, "hidden": [{"units": 64, "activation": "relu"}]}
CNN = {
    "kind": "cnn",
    "input": {"channels": 1, "height": 8, "width": 8},
    "classes": 10,
    "conv": [
        {"filters": 4, "kernel": 3, "activation": "tanh"},
        {"filters": 3, "kernel": 2, "activation": "relu"},
    ],
    "hidden": [{"units": 16, "activation": "sigmoid"}],
}


# --- shards -------------------------------------------------------------------------------------


def test_shard_bytes_are_the_engines_format() -> None:
    x = np.array([[0.0, 0.5, 1.0], [0.25, 0.75, 0.125]], dtype=np.float32)
    y = np.array([0, 1])
    data = encode_shard(x, y, 2)
    # magic, then samples, features, classes as u32 LE, then f32 LE row-major, then u8 labels:
    # the layout of `Samples::encode_shard` in crates/gpu/src/dataset.rs, written out by hand.
    expected = b"TMSHARD1" + struct.pack("<III", 2, 3, 2)
    expected += struct.pack("<6f", 0.0, 0.5, 1.0, 0.25, 0.75, 0.125) + bytes([0, 1])
    assert data == expected
    assert len(data) == 20 + 6 * 4 + 2
    back = decode_shard(data, blake3.blake3(data).digest())
    assert back.classes == 2 and back.features == 3 and len(back) == 2
    np.testing.assert_array_equal(back.x, x)
    np.testing.assert_array_equal(back.y, y)


def test_digits_shards_round_trip() -> None:
    x, y = load_digits()
    assert x.shape == (1797, 64) and y.shape == (1797,)
    assert x.dtype == np.float32 and float(x.max()) == 1.0 and set(np.unique(y)) == set(range(10))
    shards = split_shards(x, y, 10, 256)
    assert len(shards) == 8  # 7 × 256 + 5
    assert [len(s) for s in shards[:-1]] == [20 + 256 * 64 * 4 + 256] * 7
    back = [decode_shard(s) for s in shards]
    np.testing.assert_array_equal(np.concatenate([b.x for b in back]), x)
    np.testing.assert_array_equal(np.concatenate([b.y for b in back]), y)


def test_bad_samples_and_bytes_are_refused() -> None:
    ok_x, ok_y = np.zeros((2, 3)), np.array([0, 1])
    with pytest.raises(ShardError, match=r"\[0, 1\]"):
        encode_shard(ok_x + 2, ok_y, 2)
    with pytest.raises(ShardError, match="labels"):
        encode_shard(ok_x, np.array([0, 2]), 2)
    with pytest.raises(ShardError, match="classes"):
        encode_shard(ok_x, ok_y, 1)
    with pytest.raises(ShardError, match="2-D"):
        encode_shard(np.zeros(3), ok_y, 2)
    data = encode_shard(ok_x, ok_y, 2)
    with pytest.raises(ShardError, match="hashes to"):
        decode_shard(data, "00" * 32)
    with pytest.raises(ShardError, match="bytes"):
        decode_shard(data[:-1])
    with pytest.raises(ShardError, match="magic"):
        decode_shard(b"TMSHARD2" + data[8:])
    hostile = bytearray(data)
    hostile[8:16] = struct.pack("<II", 0xFFFFFFFF, 0xFFFFFFFF)
    with pytest.raises(ShardError):
        decode_shard(bytes(hostile))


def test_merkle_root_shape() -> None:
    def leaf(h: bytes) -> bytes:
        return blake3.blake3(b"trainmesh.merkle.leaf.v1" + h).digest()

    def node(a: bytes, b: bytes) -> bytes:
        return blake3.blake3(b"trainmesh.merkle.node.v1" + a + b).digest()

    hs = [blake3.blake3(bytes([i])).digest() for i in range(3)]
    assert merkle_root([]) == blake3.blake3(b"trainmesh.merkle.empty.v1").digest()
    assert merkle_root(hs[:1]) == leaf(hs[0])
    # Three leaves: the odd one is promoted unchanged.
    assert merkle_root(hs) == node(node(leaf(hs[0]), leaf(hs[1])), leaf(hs[2]))
    assert merkle_root([h.hex() for h in hs]) == merkle_root(hs)
    assert merkle_root(hs[::-1]) != merkle_root(hs)


# --- the model ----------------------------------------------------------------------------------


def random_params(model: Model, seed: int) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.3, size=s).astype(np.float32) for s in model.param_shapes()]


def test_spec_resolution_matches_the_engine() -> None:
    m = Model(MLP)
    assert m.param_shapes() == [(64, 64), (64,), (64, 10), (10,)]
    assert m.param_count() == 64 * 64 + 64 + 64 * 10 + 10
    c = Model(json.dumps(CNN))
    assert c.param_shapes() == [
        (4, 1, 3, 3),
        (4,),
        (3, 4, 2, 2),
        (3,),
        (75, 16),
        (16,),
        (16, 10),
        (10,),
    ]
    assert Model({"kind": "logistic", "input": 64, "classes": 10}).param_shapes() == [
        (64, 10),
        (10,),
    ]
    for bad in [
        {"kind": "transformer", "input": 64, "classes": 10},
        {"kind": "logistic", "input": 64},
        {"kind": "logistic", "input": 64, "classes": 10, "extra": 1},
        {"kind": "logistic", "input": 0, "classes": 10},
        {"kind": "logistic", "input": 64, "classes": 1},
        {"kind": "mlp", "input": 64, "classes": 10, "hidden": [{"units": 8, "activation": "gelu"}]},
        {**CNN, "input": {"channels": 1, "height": 2, "width": 2}},
        {**CNN, "conv": []},
        {
            "kind": "mlp",
            "input": 4096,
            "classes": 10,
            "hidden": [{"units": 4096, "activation": "relu"}],
        },
    ]:
        with pytest.raises(SpecError):
            Model(bad)


def naive_forward(model: Model, params: List[np.ndarray], x: np.ndarray) -> np.ndarray:
    """The forward pass written independently, in float64 loops over the definitions."""
    h = x.astype(np.float64)
    act: Dict[Optional[str], Callable[[np.ndarray], np.ndarray]] = {
        "relu": lambda v: np.maximum(v, 0),
        "tanh": np.tanh,
        "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
        None: lambda v: v,
    }
    for i, layer in enumerate(model.layers):
        w, b = params[2 * i].astype(np.float64), params[2 * i + 1].astype(np.float64)
        if isinstance(layer, Conv):
            n = h.shape[0]
            img = h.reshape(n, layer.channels, layer.height, layer.width)
            oh, ow = layer.out_height, layer.out_width
            out = np.zeros((n, layer.filters, oh, ow))
            for s in range(n):
                for f in range(layer.filters):
                    for yy in range(oh):
                        for xx in range(ow):
                            patch = img[s, :, yy : yy + layer.kernel, xx : xx + layer.kernel]
                            out[s, f, yy, xx] = b[f] + np.sum(patch * w[f])
            h = out.reshape(n, -1)
        else:
            h = h @ w + b
        h = act[layer.activation](h)
    return h


@pytest.mark.parametrize("spec", [MLP, CNN, {"kind": "logistic", "input": 64, "classes": 10}])
def test_forward_pass_matches_the_definition(spec: Dict[str, Any]) -> None:
    model = Model(spec)
    params = random_params(model, 1)
    x = np.random.default_rng(2).random((7, 64), dtype=np.float32)
    want = naive_forward(model, params, x)
    exact = model.logits(params, x)
    fast = model.logits(params, x, exact=False)
    assert exact.dtype == np.float32 and exact.shape == (7, 10)
    np.testing.assert_allclose(exact, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fast, want, rtol=1e-4, atol=1e-5)
    assert list(model.predict(params, x)) == list(np.argmax(want, axis=1))


def test_exact_dense_sums_in_the_executors_order() -> None:
    # 1e8 + 1 − 1e8 in float32 is 0 summed left to right, 1 in any wider or reordered sum.
    model = Model({"kind": "logistic", "input": 3, "classes": 2})
    w = np.array([[1e8, 0.0], [1.0, 0.0], [-1e8, 0.0]], dtype=np.float32)
    b = np.zeros(2, dtype=np.float32)
    z = model.logits([w, b], np.ones((1, 3), dtype=np.float32))
    assert z[0, 0] == 0.0


def test_fma_rounds_once() -> None:
    a = np.array([1 + 2**-12, 3.0, -(2**-30)], dtype=np.float32)
    c = np.array([-1.0, -1.0, 1.0], dtype=np.float32)
    b = np.array([1 + 2**-12, 1 / 3, 2**-30], dtype=np.float32)
    got = fma(a, b, c)
    # (1 + 2⁻¹²)² − 1 = 2⁻¹¹ + 2⁻²⁴ exactly, which rounding the product first loses.
    assert got[0] == np.float32(2**-11 + 2**-24) and a[0] * b[0] + c[0] != got[0]
    assert got[1] == np.float32(3.0 * float(np.float32(1 / 3)) - 1.0)
    assert got[2] == np.float32(1.0)


def test_deterministic_functions() -> None:
    v = np.linspace(-30, 30, 2001, dtype=np.float32)
    np.testing.assert_allclose(det_exp(v), np.exp(v.astype(np.float64)), rtol=3e-7)
    np.testing.assert_allclose(det_tanh(v), np.tanh(v.astype(np.float64)), atol=2e-7)
    np.testing.assert_allclose(det_sigmoid(v), 1 / (1 + np.exp(-v.astype(np.float64))), atol=2e-7)
    assert det_exp(np.array([-200.0], dtype=np.float32))[0] >= 0.0
    assert np.isfinite(det_exp(np.array([500.0], dtype=np.float32))[0])


def test_accuracy_and_ppm_rounding() -> None:
    model = Model({"kind": "logistic", "input": 2, "classes": 2})
    w = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    params = [w, np.zeros(2, dtype=np.float32)]
    x = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)
    assert model.correct(params, x, [0, 1, 1]) == 2
    assert model.accuracy_ppm(params, x, [0, 1, 1]) == 666_667
    assert ppm_of(1, 8) == 125_000 and ppm_of(1, 3) == 333_333 and ppm_of(360, 360) == 1_000_000
    # Ties go to the first class, as the executor's argmax.
    assert list(model.predict(params, np.array([[0.5, 0.5]]))) == [0]
    with pytest.raises(ValueError, match="shape"):
        model.logits(params, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="tensors"):
        model.logits(params[:1], x)


def test_weights_file_round_trip(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    model = Model(MLP)
    params = random_params(model, 3)
    tensors = {f"param.{i:03}": p for i, p in enumerate(params)}
    tensors.update({f"state.{i:03}": np.zeros_like(p) for i, p in enumerate(params)})
    meta = {"trainmesh": json.dumps({"format": 1, "model": "00" * 32, "step": 176})}
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path), metadata=meta)
    loaded = load_weights(path)
    assert sorted(loaded) == sorted(tensors)
    x = np.random.default_rng(4).random((5, 64), dtype=np.float32)
    np.testing.assert_array_equal(model.logits(loaded, x), model.logits(params, x))
    from trainmesh import checkpoint_metadata

    assert checkpoint_metadata(path)["step"] == 176
    try:
        import torch  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install torch"):
            load_weights(path, framework="pt")
    else:
        pt = load_weights(path, framework="pt")
        np.testing.assert_array_equal(model.logits(pt, x), model.logits(params, x))
    with pytest.raises(ValueError, match="framework"):
        load_weights(path, framework="jax")


# --- errors and the event stream ----------------------------------------------------------------


def test_errors_map_by_code_then_status() -> None:
    assert type(error_for(400, "bad_signature", "")) is InvalidSignature
    assert type(error_for(400, "wrong_chain_id", "")) is WrongChain
    assert type(error_for(400, "bad_spec", "")) is InvalidSpec
    assert type(error_for(402, "insufficient_balance", "")) is InsufficientBalance
    assert type(error_for(409, "nonce_replayed", "")) is NonceReplayed
    assert type(error_for(404, "unknown_transaction", "")) is UnknownTransaction
    assert type(error_for(402, "something_new", "")) is PaymentRequired
    assert type(error_for(409, "something_new", "")) is Conflict
    assert type(error_for(400, "unknown_dataset", "")) is BadRequest
    # The classes stay under the status classes the first SDK had.
    assert isinstance(error_for(400, "bad_signature", ""), BadRequest)
    assert isinstance(error_for(404, "unknown_transaction", ""), NotFound)


def test_rejected_receipts_raise_their_codes_class() -> None:
    r = {
        "tx_hash": "ab" * 32,
        "height": 12,
        "status": "rejected",
        "events": None,
        "error": {"code": "insufficient_balance", "message": "10 available, 20 required"},
    }
    e = rejection(r)
    assert isinstance(e, TransactionRejected) and isinstance(e, InsufficientBalance)
    assert e.code == "insufficient_balance" and e.height == 12 and e.tx_hash == "ab" * 32
    assert "rejected at height 12" in str(e)
    other = rejection({**r, "error": {"code": "job_not_open", "message": "m"}})
    assert type(other) is TransactionRejected and other.code == "job_not_open"


def test_sse_parsing() -> None:
    stream = [
        b"event: job\n",
        b'data: {"height": 3,\n',
        b'data:  "job": {"state": "Running"}}\n',
        b"\n",
        b": keep-alive\n",
        b"\n",
        b"event: end\r\n",
        b'data: {"job": {"state": "Completed"}}\r\n',
        b"\r\n",
    ]
    got = [e for e in _parse_sse(stream) if e[0] != ":"]
    assert got == [
        ("job", {"height": 3, "job": {"state": "Running"}}),
        ("end", {"job": {"state": "Completed"}}),
    ]


# --- the client against a local stand-in for the gateway ----------------------------------------


class FakeGateway:
    """Serves canned routes: a dict from (method, path) to a function of the request body that
    returns (status, headers, body bytes)."""

    def __init__(self) -> None:
        self.routes: Dict[Tuple[str, str], Any] = {}
        self.requests: List[Tuple[str, str, bytes]] = []
        gw = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                gw.requests.append((method, self.path, body))
                fn = gw.routes.get((method, self.path))
                if fn is None:
                    status, headers, out = 404, {}, b'{"code":"not_found","message":"route"}'
                else:
                    status, headers, out = fn(body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_GET(self) -> None:  # noqa: N802
                self._serve("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def json(self, method: str, path: str, body: Any, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.routes[(method, path)] = lambda _: (status, {"Content-Type": "application/json"}, data)


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    gw = FakeGateway()
    yield gw
    gw.server.shutdown()


def job_body(state: str, done: int) -> Dict[str, Any]:
    return {
        "job": {
            "id": 7,
            "state": state,
            "units_total": 4,
            "units_done": done,
            "latest_metric_ppm": 900_000 if done else None,
            "spec": {"target": {"metric": "Accuracy", "threshold_ppm": 950_000}},
        },
        "units": [],
    }


def test_submit_job_follows_the_receipt_to_the_job_id(gateway: FakeGateway) -> None:
    key = Key.devnet("researcher")
    gateway.json("GET", "/v1/status", {"chain_id": "trainmesh-devnet", "height": 41})
    gateway.json("GET", f"/v1/accounts/{key.address_hex}", {"account": {"nonce": 3}})
    gateway.json("POST", "/v1/transactions", {"tx_hash": "cd" * 32}, status=202)
    receipt = {
        "tx_hash": "cd" * 32,
        "height": 42,
        "status": "executed",
        "events": [
            {"FeeBurned": {"payer": key.address_hex, "amount": "0"}},
            {"JobSubmitted": {"job": 7, "owner": key.address_hex, "escrow": "1", "units": 4}},
        ],
        "error": None,
    }
    gateway.json("GET", f"/v1/transactions/{'cd' * 32}?since=41", receipt)
    job = Client(gateway.url).submit_job(key, MLP, 1, budget=10**9, deadline_s=60)
    assert job == 7
    sent = json.loads(next(b for m, p, b in gateway.requests if p == "/v1/transactions"))
    raw = bytes.fromhex(sent["transaction"])
    # version, chain id (one length byte), public key, then the nonce, the fee (the chain's
    # minimum: the status reports none here, so the default), the expiry and the kind.
    at = 1 + 1 + len("trainmesh-devnet") + 32
    assert raw[at : at + 8] == (3).to_bytes(8, "little")
    assert raw[at + 8 : at + 8 + 16] == MIN_FEE_DEFAULT.to_bytes(16, "little")
    expires = int.from_bytes(raw[at + 24 : at + 32], "little")
    assert 0 < expires - time.time() * 1000 <= 10 * 60_000
    assert raw[at + 8 + 16 + 8 : at + 8 + 16 + 8 + 4] == (9).to_bytes(4, "little")
    call = SubmitJob(Client.job_spec(MLP, 1, budget=10**9)).encode()
    model = json.dumps(MLP, separators=(",", ":"))
    assert call[: 1 + 1 + len(model) + 8] in raw  # variant, the model spec, the dataset id


def test_a_rejected_receipt_raises_and_a_replayed_nonce_is_retried(gateway: FakeGateway) -> None:
    key = Key.generate()
    nonces = iter([0, 1])
    gateway.json("GET", "/v1/status", {"chain_id": "c", "height": 5})
    gateway.routes[("GET", f"/v1/accounts/{key.address_hex}")] = lambda _: (
        200,
        {},
        json.dumps({"account": {"nonce": next(nonces)}}).encode(),
    )
    hashes: List[str] = []

    def submit(body: bytes) -> Tuple[int, Dict[str, str], bytes]:
        raw = bytes.fromhex(json.loads(body)["transaction"])
        h = ("%02x" % len(hashes)) * 32
        hashes.append(h)
        if len(hashes) == 1:
            return 409, {}, b'{"code":"nonce_replayed","message":"nonce 0 used"}'
        assert raw[1 + 1 + 1 + 32] == 1  # re-signed at the next nonce
        return 202, {}, json.dumps({"tx_hash": h}).encode()

    gateway.routes[("POST", "/v1/transactions")] = submit
    rejected = {
        "tx_hash": "01" * 32,
        "height": 6,
        "status": "rejected",
        "events": None,
        "error": {"code": "bad_spec", "message": "model spec: unknown kind"},
    }
    gateway.json("GET", f"/v1/transactions/{'01' * 32}?since=5", rejected)
    with pytest.raises(InvalidSpec) as e:
        Client(gateway.url).submit_job(key, {"kind": "nope"}, 1)
    assert isinstance(e.value, TransactionRejected) and e.value.height == 6


def test_wait_for_receipt_times_out(gateway: FakeGateway) -> None:
    gateway.json(
        "GET",
        f"/v1/transactions/{'ee' * 32}",
        {"code": "unknown_transaction", "message": "not yet"},
        status=404,
    )
    with pytest.raises(WaitTimeout):
        Client(gateway.url).wait_for_receipt("ee" * 32, timeout=0.5)
    with pytest.raises(TimeoutError):  # WaitTimeout is a TimeoutError
        Client(gateway.url).wait_for_receipt("ee" * 32, timeout=0.1)


def test_wait_follows_the_stream_and_polls_when_it_breaks(gateway: FakeGateway) -> None:
    def sse(*events: Tuple[str, Dict[str, Any]]) -> bytes:
        return b"".join(
            f"event: {e}\ndata: {json.dumps(d)}\n\n".encode() + b": keep-alive\n\n"
            for e, d in events
        )

    stream = sse(("job", job_body("Running", 1)), ("end", job_body("Completed", 2)))
    gateway.routes[("GET", "/v1/jobs/7/events")] = lambda _: (
        200,
        {"Content-Type": "text/event-stream"},
        stream,
    )
    done = Client(gateway.url).wait(7, progress=True, timeout=10)
    assert done["job"]["state"] == "Completed"

    # A stream that closes early: polling takes over.
    gateway.routes[("GET", "/v1/jobs/7/events")] = lambda _: (
        200,
        {},
        sse(("job", job_body("Running", 1))),
    )
    polls = iter([job_body("Running", 2), job_body("Exhausted", 4)])
    gateway.routes[("GET", "/v1/jobs/7")] = lambda _: (200, {}, json.dumps(next(polls)).encode())
    with pytest.raises(JobFailed) as failed:
        Client(gateway.url).wait(7, progress=False, timeout=10, poll_interval=0.01)
    assert failed.value.state == "Exhausted" and "exhausted" in str(failed.value)

    # No stream at all, and a job that never ends: a timeout.
    del gateway.routes[("GET", "/v1/jobs/7/events")]
    gateway.json("GET", "/v1/jobs/7/events", {"code": "too_many_streams", "message": ""}, 503)
    gateway.json("GET", "/v1/jobs/7", job_body("Running", 1))
    with pytest.raises(WaitTimeout):
        Client(gateway.url).wait(7, progress=False, timeout=0.5, poll_interval=0.05)


def test_download_checks_the_certified_hash(gateway: FakeGateway, tmp_path: Path) -> None:
    data = b"checkpoint bytes"
    good = blake3.blake3(data).hexdigest()
    gateway.routes[("GET", "/v1/jobs/7/weights")] = lambda _: (
        200,
        {"X-Checkpoint-Blake3": good},
        data,
    )
    gateway.json("GET", "/v1/status", {"chain_id": "c", "height": 1})
    owner = Key.generate()
    out = Client(gateway.url).download(7, tmp_path, owner)
    assert out == tmp_path / "job-7.safetensors" and out.read_bytes() == data
    with pytest.raises(ChecksumMismatch):
        Client(gateway.url).download(7, tmp_path / "x", owner, expected="00" * 32)
    gateway.routes[("GET", "/v1/jobs/7/weights")] = lambda _: (
        200,
        {"X-Checkpoint-Blake3": "00" * 32},
        data,
    )
    with pytest.raises(ChecksumMismatch):
        Client(gateway.url).download(7, tmp_path / "bad.safetensors", owner)
    # A gateway that refuses the signer: its typed error.
    gateway.json("GET", "/v1/jobs/7/weights", {"code": "not_owner", "message": "no"}, 403)
    with pytest.raises(Forbidden):
        Client(gateway.url).download(7, tmp_path / "other.safetensors", owner)
    assert not (tmp_path / "bad.safetensors").exists()


def test_attach_dataset_checks_what_the_node_says(gateway: FakeGateway) -> None:
    key = Key.generate()
    x, y = load_digits()
    train, held = (x[:300], y[:300]), (x[300:400], y[300:400])
    stored: Dict[str, List[str]] = {"train": [], "heldout": []}
    sizes: List[int] = []

    def upload(split: str) -> Any:
        def handle(body: bytes) -> Tuple[int, Dict[str, str], bytes]:
            shard = decode_shard(body)
            h = blake3.blake3(body).hexdigest()
            stored[split].append(h)
            if split == "train":
                sizes.append(len(body))
            reply = {"blake3": h, "bytes": len(body), "samples": len(shard), "split": split}
            return 201, {}, json.dumps(reply).encode()

        return handle

    gateway.routes[("POST", "/v1/datasets/shards?split=train")] = upload("train")
    gateway.routes[("POST", "/v1/datasets/shards?split=heldout")] = upload("heldout")

    def manifest(body: bytes) -> Tuple[int, Dict[str, str], bytes]:
        m = json.loads(body)
        assert m["features"] == 64 and m["classes"] == 10 and m["train"] == stored["train"]
        # Signed by the provider over both roots: the node serves them for it alone.
        assert m["provider"] == key.public_key.hex()
        roots = merkle_root(m["train"]) + merkle_root(m["heldout"])
        Ed25519PublicKey.from_public_bytes(key.public_key).verify(
            bytes.fromhex(m["signature"]), b"trainmesh/manifest/v1/" + roots
        )
        reply = {
            "shards_root": merkle_root(m["train"]).hex(),
            "heldout_root": merkle_root(m["heldout"]).hex(),
            "shard_sizes": sizes,
            "heldout_samples": 100,
            "peer_id": "12D3KooWpeer",
            "peer_signature": "ab" * 64,
        }
        return 201, {}, json.dumps(reply).encode()

    gateway.routes[("POST", "/v1/datasets/manifests")] = manifest
    gateway.json("GET", "/v1/status", {"chain_id": "c", "height": 1, "peer_id": "12D3KooWpeer"})
    gateway.json("GET", f"/v1/accounts/{key.address_hex}", {"account": {"nonce": 0}})
    gateway.json("POST", "/v1/transactions", {"tx_hash": "aa" * 32}, status=202)
    receipt = {
        "tx_hash": "aa" * 32,
        "height": 2,
        "status": "executed",
        "events": [{"DatasetAttached": {"dataset": 5, "provider": key.address_hex}}],
        "error": None,
    }
    gateway.json("GET", f"/v1/transactions/{'aa' * 32}?since=1", receipt)
    client = Client(gateway.url)
    got = client.attach_dataset(key, train, held, name="digits", samples_per_shard=128)
    assert got == 5
    # First a deposit for the uploads at this node, then the attachment, with the node's
    # binding in the spec as it came.
    sent_txs = [
        bytes.fromhex(json.loads(b)["transaction"])
        for m, p, b in gateway.requests
        if p == "/v1/transactions"
    ]
    assert len(sent_txs) == 2
    assert DepositForUploads("12D3KooWpeer", 1 * 10**9).encode()[:1] in sent_txs[0]
    assert b"12D3KooWpeer" in sent_txs[0]
    assert bytes([64]) + b"\xab" * 64 in sent_txs[1]
    assert len(stored["train"]) == 3 and len(stored["heldout"]) == 1
    assert sizes == [20 + 128 * (64 * 4 + 1)] * 2 + [20 + 44 * (64 * 4 + 1)]

    # A node that answers with other roots is caught before anything is signed.
    gateway.routes[("POST", "/v1/datasets/manifests")] = lambda _: (
        201,
        {},
        json.dumps(
            {
                "shards_root": "00" * 32,
                "heldout_root": "00" * 32,
                "shard_sizes": [1],
                "heldout_samples": 100,
                "peer_id": "p",
            }
        ).encode(),
    )
    sent = sum(1 for m, p, _ in gateway.requests if p == "/v1/transactions")
    with pytest.raises(ChecksumMismatch, match="shards_root"):
        client.attach_dataset(key, train, held, name="digits", samples_per_shard=128)
    # Only the deposit (before the uploads) went out; no attachment was signed.
    assert sum(1 for m, p, _ in gateway.requests if p == "/v1/transactions") == sent + 1


def test_wrong_key_for_an_explicit_nonce_is_not_retried(gateway: FakeGateway) -> None:
    gateway.json("GET", "/v1/status", {"chain_id": "c", "height": 1})
    gateway.json(
        "POST", "/v1/transactions", {"code": "nonce_replayed", "message": "used"}, status=409
    )
    with pytest.raises(NonceReplayed):
        Client(gateway.url).submit_job(Key.generate(), MLP, 1, nonce=0)
    assert sum(1 for m, p, _ in gateway.requests if p == "/v1/transactions") == 1


def test_the_client_signs_only_for_its_chain(gateway: FakeGateway) -> None:
    """A client given its chain id refuses a gateway that serves another before signing
    anything; one without keeps the first chain id it saw, whatever the gateway says later."""
    gateway.json("GET", "/v1/status", {"chain_id": "other-chain", "height": 1})
    with pytest.raises(WrongChain) as e:
        Client(gateway.url, chain_id="trainmesh-devnet").chain_id()
    assert e.value.code == "wrong_chain_id"
    assert not any(m == "POST" for m, _, _ in gateway.requests)

    pinned = Client(gateway.url)
    assert pinned.chain_id() == "other-chain"
    gateway.json("GET", "/v1/status", {"chain_id": "switched", "height": 2})
    assert pinned.chain_id() == "other-chain"
    assert Client(gateway.url, chain_id="switched").chain_id() == "switched"
