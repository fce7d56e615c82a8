"""The SDK against a running devnet: a real transfer, and the gateway's refusals as typed errors.

Runs the `trainmesh` binary from $TRAINMESH_BIN (default: target/debug/trainmesh, built with
`cargo build -p trainmesh` when missing)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

import pytest

from trainmesh import BadRequest, Client, GatewayError, Key, NotFound, transfer

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


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    data = tmp_path_factory.mktemp("devnet")
    port = free_port()
    log = open(data / "devnet.log", "wb")
    proc = subprocess.Popen(
        [str(binary()), "devnet", "--gateway", f"127.0.0.1:{port}", "--data-dir", str(data / "nodes")],
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
