"""The SDK against a running devnet: a real transfer; a researcher's whole path (attach the digits
as uploaded shards, submit a job, follow it to completion, download the certified weights and
measure them in numpy: the same count of correct held-out predictions the network certified);
and the gateway's refusals as typed errors.

Runs the `trainmesh` binary from $TRAINMESH_BIN (default: target/debug/trainmesh, built with
`cargo build -p trainmesh` when missing)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar, Union

import numpy as np
import pytest

from trainmesh import (
    BASE_UNITS_PER_TRAIN,
    BadRequest,
    Client,
    GatewayError,
    InsufficientBalance,
    InvalidSignature,
    InvalidSpec,
    Key,
    Model,
    NotFound,
    SignedTransaction,
    SubmitJob,
    Transaction,
    Transfer,
    UnknownTransaction,
    WrongChain,
    checkpoint_metadata,
    load_digits,
    load_weights,
    ppm_of,
    sign_call,
    transfer,
)

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")


def binary() -> Path:
    env = os.environ.get("TRAINMESH_BIN")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    path = target / "debug" / "trainmesh"
    if not path.exists():
        subprocess.run(["cargo", "build", "-p", "trainmesh"], cwd=REPO, check=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Optional[T]], timeout_s: float) -> T:
    """Polls `check` until it returns something other than None, or fails after the deadline."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            found = check()
            if found is not None:
                return found
        except GatewayError as e:  # not up yet, or a transient refusal
            last = e
        time.sleep(0.1)
    pytest.fail(f"{what}: nothing after {timeout_s} s (last: {last})")


@contextlib.contextmanager
def running_devnet(data: Path, *extra: str) -> Iterator[Client]:
    """A devnet (`trainmesh devnet EXTRA…`) with its data under `data`, its gateway on a free port;
    stopped with SIGINT at the end. Yields a client once the gateway answers."""
    port = free_port()
    log = open(data / "devnet.log", "wb")
    proc = subprocess.Popen(
        [
            str(binary()),
            "devnet",
            *extra,
            "--gateway",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(data / "nodes"),
            # The devnet gives up when its own demo job has not finished by then; these tests
            # run a second job beside it.
            "--timeout-s",
            "3600",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    c = Client(f"http://127.0.0.1:{port}", timeout=5.0)
    try:

        def up() -> Optional[str]:
            if proc.poll() is not None:
                pytest.fail(f"the devnet exited with {proc.returncode}; see {data / 'devnet.log'}")
            return c.chain_id()

        wait_for("the gateway's /v1/status", up, 120.0)
        yield c
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with running_devnet(tmp_path_factory.mktemp("devnet")) as c:
        yield c


def test_status_and_reads(client: Client) -> None:
    status = client.status()
    assert status["chain_id"] == "trainmesh-devnet"
    assert isinstance(client.jobs(), list)
    with pytest.raises(NotFound) as e:
        client.job(999_999)
    assert e.value.code == "not_found" and e.value.status == 404
    with pytest.raises(BadRequest) as bad:
        client._request("GET", "/v1/accounts/not-an-address")
    assert bad.value.code == "bad_address"


def test_researcher_transfer_arrives(client: Client) -> None:
    researcher = Key.devnet("researcher")
    # The devnet's own researcher wallet submits a job at nonce 0 first: wait for it to commit,
    # so this transfer's nonce is not contended.
    wait_for("the demo job's commit", lambda: client.nonce(researcher.address) or None, 120.0)

    to = Key.generate()
    assert client.balance(to.address) == 0
    amount = 1_234_567_890
    tx_hash = client.transfer(researcher, to.address, amount)
    assert len(bytes.fromhex(tx_hash)) == 32

    def arrived() -> Optional[int]:
        b = client.balance(to.address)
        return b if b > 0 else None

    assert wait_for("the transfer's balance", arrived, 120.0) == amount


def test_wrong_chain_id_is_refused(client: Client) -> None:
    researcher = Key.devnet("researcher")
    with pytest.raises(BadRequest) as e:
        client.transfer(researcher, Key.generate().address, 1, nonce=0, chain_id="not-this-chain")
    assert e.value.code == "wrong_chain_id"
    assert e.value.status == 400
    assert "not-this-chain" in e.value.message


def test_bad_signature_is_refused(client: Client) -> None:
    researcher = Key.devnet("researcher")
    signed = transfer(researcher, client.chain_id(), 0, Key.generate().address, 1)
    raw = bytearray(signed.encode())
    raw[-1] ^= 1  # flip a bit of the signature
    with pytest.raises(BadRequest) as e:
        client.submit(bytes(raw))
    assert e.value.code == "bad_signature"


def test_malformed_hex_is_refused(client: Client) -> None:
    with pytest.raises(BadRequest) as e:
        client.submit_hex("zz-not-hex")
    assert e.value.code == "bad_encoding"
    with pytest.raises(BadRequest) as t:
        client.submit(b"\x01\x05")
    assert t.value.code == "truncated"


# --- a researcher's path -------------------------------------------------------------------------

MLP = {"kind": "mlp", "input": 64, "classes": 10, "hidden": [{"units": 64, "activation": "relu"}]}
SPLIT_SEED = 20_240_611
HELDOUT_FRACTION = 0.2


@pytest.fixture(scope="module")
def funded(client: Client) -> Key:
    """A fresh key holding 2,000 TRAIN from the devnet's researcher (so these tests never contend
    with the researcher's own demo job for nonces)."""
    researcher = Key.devnet("researcher")
    # Let the demo job (the researcher's nonce 0) commit first, so it is not the one displaced.
    wait_for("the demo job's commit", lambda: client.nonce(researcher.address) or None, 120.0)
    key = Key.generate()
    receipt = client.execute(researcher, Transfer.of(key.address, 2_000 * BASE_UNITS_PER_TRAIN))
    assert receipt["status"] == "executed"
    assert client.balance(key.address) == 2_000 * BASE_UNITS_PER_TRAIN
    return key


@pytest.fixture(scope="module")
def digits() -> Tuple[Tuple[Any, Any], Tuple[Any, Any]]:
    """The bundled digits split into train and held-out with a seeded RNG."""
    x, y = load_digits()
    print(f"digits split with numpy seed {SPLIT_SEED}")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    cut = int(round(len(y) * HELDOUT_FRACTION))
    held, train = order[:cut], order[cut:]
    return (x[train], y[train]), (x[held], y[held])


@pytest.fixture(scope="module")
def dataset(client: Client, funded: Key, digits: Tuple[Tuple[Any, Any], Tuple[Any, Any]]) -> int:
    train, heldout = digits
    dataset_id = client.attach_dataset(
        funded,
        train,
        heldout,
        name="uci-digits-8x8 (sdk test)",
        licence="CC BY 4.0",
        price_per_use=BASE_UNITS_PER_TRAIN // 10,
        samples_per_shard=256,
    )
    return dataset_id


def test_attached_dataset_is_on_the_ledger(
    client: Client, funded: Key, dataset: int, digits: Tuple[Tuple[Any, Any], Tuple[Any, Any]]
) -> None:
    d = client.dataset(dataset)
    assert d["provider"] == funded.address_hex
    spec = d["spec"]
    assert spec["name"] == "uci-digits-8x8 (sdk test)"
    assert spec["heldout_samples"] == len(digits[1][1])
    assert len(spec["shard_sizes"]) == -(-len(digits[0][1]) // 256)
    assert any(x["id"] == dataset for x in client.datasets())
    with pytest.raises(NotFound):
        client.dataset(999_999)


def test_job_trains_to_the_certified_accuracy(
    client: Client,
    funded: Key,
    dataset: int,
    digits: Tuple[Tuple[Any, Any], Tuple[Any, Any]],
    tmp_path: Path,
) -> None:
    before = client.balance(funded.address)
    budget = 400 * BASE_UNITS_PER_TRAIN
    job_id = client.submit_job(
        funded,
        MLP,
        dataset,
        optimizer="adam",
        learning_rate=0.003,
        batch_size=32,
        total_steps=704,
        steps_per_unit=176,
        seed=42,
        target_accuracy=0.9,
        budget=budget,
        deadline_s=3600,
        tier=1,
    )
    submitted = client.job(job_id)["job"]
    assert submitted["owner"] == funded.address_hex and submitted["units_total"] == 4
    # Escrowed, and the submission's fee paid (the chain's minimum, the client's default).
    assert client.balance(funded.address) == before - budget - client.min_fee()

    final = client.wait(job_id, progress=True, timeout=1800)
    job = final["job"]
    assert job["state"] == "Completed"
    certified = job["latest_metric_ppm"]
    assert isinstance(certified, int) and certified >= 900_000

    path = client.download(job_id, tmp_path, funded, expected=job["latest_checkpoint"])
    meta = checkpoint_metadata(path)
    assert meta["step"] == job["units_done"] * 176
    weights = load_weights(path)
    assert sorted(k for k in weights if k.startswith("param.")) == [
        "param.000",
        "param.001",
        "param.002",
        "param.003",
    ]
    x_held, y_held = digits[1]
    correct = Model(MLP).correct(weights, x_held, y_held)
    print(
        f"job {job_id}: {correct} of {len(y_held)} held-out digits correct; certified {certified}"
    )
    # The evaluators' measurement, reproduced: same forward pass, same held-out split.
    assert ppm_of(correct, len(y_held)) == certified
    assert round(certified * len(y_held) / 1e6) == correct


def test_job_refusals_are_typed(client: Client, funded: Key, dataset: int) -> None:
    chain = client.chain_id()
    spec = Client.job_spec(MLP, dataset, budget=BASE_UNITS_PER_TRAIN)
    nonce = client.nonce(funded.address)

    # Signed by another key than the sender's.
    tx = Transaction(chain, funded.public_key, nonce, 0, SubmitJob(spec))
    forged = SignedTransaction(tx, Key.generate().sign(tx.hash()), tx.hash())
    with pytest.raises(InvalidSignature) as e:
        client.submit(forged)
    assert e.value.code == "bad_signature" and e.value.status == 400

    # A flipped bit of the sender's own signature.
    raw = bytearray(sign_call(funded, chain, nonce, SubmitJob(spec)).encode())
    raw[-1] ^= 1
    with pytest.raises(InvalidSignature):
        client.submit(bytes(raw))

    with pytest.raises(WrongChain):
        client.submit(sign_call(funded, "another-chain", nonce, SubmitJob(spec)))

    # A budget over the balance: refused at the dry run, nothing escrowed.
    balance = client.balance(funded.address)
    with pytest.raises(InsufficientBalance) as poor:
        client.submit_job(funded, MLP, dataset, budget=balance + 1)
    assert poor.value.code == "insufficient_balance" and poor.value.status == 402

    # Model specs the engine refuses.
    budget = 100 * BASE_UNITS_PER_TRAIN  # enough for the dataset's price
    bad_models: List[Union[str, Dict[str, Any]]] = [
        {"kind": "mlp", "input": 64, "classes": 10},  # no hidden list
        {"kind": "transformer", "input": 64, "classes": 10},
        {"kind": "mlp", "input": 64, "classes": 10, "hidden": [{"units": 8, "activation": "gelu"}]},
        "not json",
    ]
    for bad in bad_models:
        with pytest.raises(InvalidSpec) as spec_err:
            client.submit_job(funded, bad, dataset, budget=budget)
        assert spec_err.value.code == "bad_spec" and spec_err.value.status == 400

    # A job spec the contracts refuse (no steps).
    with pytest.raises(InvalidSpec):
        client.submit_job(funded, MLP, dataset, budget=budget, total_steps=0)

    with pytest.raises(BadRequest) as unknown:
        client.submit_job(funded, MLP, 999_999, budget=budget)
    assert unknown.value.code == "unknown_dataset"

    assert client.balance(funded.address) == balance
    assert client.nonce(funded.address) == nonce


def test_unknown_receipts_and_jobs(client: Client) -> None:
    with pytest.raises(UnknownTransaction) as e:
        client.receipt("00" * 32)
    assert e.value.status == 404
    with pytest.raises(NotFound):
        next(client.events(999_999))
