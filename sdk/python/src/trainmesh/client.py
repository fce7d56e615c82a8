"""A client of a node's HTTP gateway (``/v1``), on the standard library's urllib.

Reads return the gateway's JSON (amounts are decimal strings of base units, hashes and addresses
hex). Writes are transactions signed here with the caller's :class:`~trainmesh.Key`: the gateway
dry-runs each one and refuses what would fail (a typed error, see :mod:`trainmesh.errors`); the
methods that wait follow the transaction to its receipt and raise if the ledger rejected it.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPResponse
from pathlib import Path
from typing import (
    Any,
    Dict,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Tuple,
    Union,
    cast,
    overload,
)

import blake3

from .datasets import UPLOAD_BYTES_MAX, merkle_root, shard_hash, split_shards
from .encoding import (
    AttachDataset,
    Call,
    MIN_FEE_DEFAULT,
    DatasetSpec,
    DepositForUploads,
    HyperParams,
    JobSpec,
    Metric,
    Optimizer,
    SignedTransaction,
    SubmitJob,
    Target,
    Transaction,
    canonical_model_json,
    manifest_message,
    to_ppm,
    transfer,
)
from .errors import (
    ChecksumMismatch,
    ConnectionFailed,
    GatewayError,
    JobFailed,
    NonceReplayed,
    ServerError,
    TrainmeshError,
    UnknownTransaction,
    WaitTimeout,
    WrongChain,
    error_for,
    rejection,
)
from .keys import AddressLike, Key, parse_address

Json = Dict[str, Any]
Samples = Tuple[Any, Any]

#: Base units per TRAIN.
BASE_UNITS_PER_TRAIN = 10**9
#: What a node keeps of a provider's uploads per TRAIN of its deposit for that node.
UPLOAD_BYTES_PER_TRAIN = 16 << 20
#: Job states after which nothing changes.
FINAL_STATES = ("Completed", "Exhausted", "Expired")
#: How many times a transaction whose nonce was taken meanwhile is re-signed and resent.
NONCE_RETRIES = 5


def weights_request_message(chain_id: str, job_id: int, time_ms: int) -> bytes:
    """What a job's owner signs to download its weights: ``"trainmesh/weights/v1/"``, the chain
    id, a zero byte, the job id and the request's time (ms), both u64 little-endian."""
    return (
        b"trainmesh/weights/v1/"
        + chain_id.encode()
        + b"\x00"
        + int(job_id).to_bytes(8, "little")
        + int(time_ms).to_bytes(8, "little")
    )


def upload_request_message(chain_id: str, shard_blake3: bytes, time_ms: int) -> bytes:
    """What a provider signs to upload a shard: ``"trainmesh/upload/v1/"``, the chain id, a zero
    byte, the shard's BLAKE3 and the request's time (ms, u64 little-endian)."""
    return (
        b"trainmesh/upload/v1/"
        + chain_id.encode()
        + b"\x00"
        + bytes(shard_blake3)
        + int(time_ms).to_bytes(8, "little")
    )


def _event(receipt: Mapping[str, Any], name: str) -> Optional[Json]:
    """The body of the first ``name`` event of a receipt (events are serde's externally tagged
    enum: ``{"JobSubmitted": {"job": 3, ...}}``)."""
    for e in receipt.get("events") or []:
        if isinstance(e, dict) and name in e:
            return cast(Json, e[name])
    return None


class Client:
    """``Client("http://127.0.0.1:8080", chain_id="trainmesh-testnet")``: reads state and submits
    signed transactions.

    Transactions are signed for one chain: ``chain_id`` when given (a gateway that reports another
    is refused with :class:`WrongChain` before anything is signed), else the first chain id the
    gateway reports, pinned for the client's life — a gateway cannot later make it sign for
    another network."""

    def __init__(self, url: str, timeout: float = 10.0, chain_id: Optional[str] = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._expected_chain: Optional[str] = chain_id
        self._chain_id: Optional[str] = None

    # --- HTTP ------------------------------------------------------------------------------

    def _open(
        self,
        method: str,
        path: str,
        data: Optional[bytes] = None,
        content_type: Optional[str] = None,
        accept: str = "application/json",
        timeout: Optional[float] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> HTTPResponse:
        """Sends a request; a gateway error becomes its typed exception."""
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", accept)
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        if content_type is not None:
            req.add_header("Content-Type", content_type)
        try:
            return cast(
                HTTPResponse,
                urllib.request.urlopen(req, timeout=self.timeout if timeout is None else timeout),
            )
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                err = json.loads(raw)
                code, message = str(err["code"]), str(err["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", raw.decode("utf-8", "replace") or str(e.reason)
            raise error_for(e.code, code, message) from None
        except (urllib.error.URLError, OSError) as e:
            raise ConnectionFailed("unreachable", f"{self.url}: {e}") from None

    def _request(self, method: str, path: str, body: Optional[Json] = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        ctype = "application/json" if data is not None else None
        try:
            with self._open(method, path, data, ctype) as resp:
                return json.loads(resp.read() or b"null")
        except OSError as e:  # the connection broke while reading
            raise ConnectionFailed("unreachable", f"{self.url}: {e}") from None

    def _object(self, path: str) -> Json:
        return cast(Json, self._request("GET", path))

    def _list(self, path: str) -> List[Json]:
        return cast(List[Json], self._request("GET", path))

    # --- reads -----------------------------------------------------------------------------

    def status(self) -> Json:
        """Chain id, height, state root and consensus progress."""
        return self._object("/v1/status")

    def chain_id(self) -> str:
        """The chain this client signs for: the node's chain id, fetched once and checked against
        the one the client was given."""
        if self._chain_id is None:
            reported = str(self.status()["chain_id"])
            if self._expected_chain is not None and reported != self._expected_chain:
                raise WrongChain(
                    "wrong_chain_id",
                    f"the gateway serves chain {reported!r}, this client signs for "
                    f"{self._expected_chain!r}",
                )
            self._chain_id = reported
        return self._chain_id

    def height(self) -> int:
        """The ledger height: batches executed so far."""
        return int(self.status()["height"])

    def min_fee(self) -> int:
        """The least fee (base units) a transaction may offer now. It is charged once the
        nonce and expiry checks pass, even when the call then fails."""
        reported = self.status().get("min_fee")
        return MIN_FEE_DEFAULT if reported is None else int(reported)

    def _fee(self, fee: Optional[int]) -> int:
        return self.min_fee() if fee is None else int(fee)

    def jobs(self) -> List[Json]:
        return self._list("/v1/jobs")

    def job(self, job_id: int) -> Json:
        """``{"job": ..., "units": [...]}``; raises NotFound for an unknown id."""
        return self._object(f"/v1/jobs/{int(job_id)}")

    def account(self, address: AddressLike) -> Json:
        """``{"address", "account": {"balance", "nonce", "stake", ...}}``; amounts are decimal
        strings of base units."""
        return self._object(f"/v1/accounts/{parse_address(address).hex()}")

    def balance(self, address: AddressLike) -> int:
        return int(self.account(address)["account"]["balance"])

    def nonce(self, address: AddressLike) -> int:
        """The nonce the account's next transaction must carry."""
        return int(self.account(address)["account"]["nonce"])

    def workers(self) -> List[Json]:
        return self._list("/v1/workers")

    def datasets(self) -> List[Json]:
        return self._list("/v1/datasets")

    def dataset(self, dataset_id: int) -> Json:
        """One attached dataset (``{"id", "provider", "spec", ...}``); NotFound if unknown."""
        return self._object(f"/v1/datasets/{int(dataset_id)}")

    # --- transactions ----------------------------------------------------------------------

    def submit(self, signed: Union[bytes, SignedTransaction]) -> str:
        """Submits a signed transaction (its encoding, or the object); returns its hash (hex).
        Acceptance means the dry run passed and the mempool took it: it executes once consensus
        commits it (see :meth:`wait_for_receipt`)."""
        raw = signed.encode() if isinstance(signed, SignedTransaction) else bytes(signed)
        return self.submit_hex(raw.hex())

    def submit_hex(self, transaction_hex: str) -> str:
        reply = self._request("POST", "/v1/transactions", {"transaction": transaction_hex})
        if not isinstance(reply, dict) or "tx_hash" not in reply:
            raise GatewayError("bad_reply", f"unexpected reply: {reply!r}")
        return str(reply["tx_hash"])

    def receipt(self, tx_hash: str, since: Optional[int] = None) -> Json:
        """The receipt of an executed transaction: ``{"tx_hash", "height", "status":
        "executed"|"rejected", "events", "error"}``, looking at heights ≥ ``since`` (default: the
        gateway's recent window). Raises UnknownTransaction while it has not executed."""
        query = f"?since={int(since)}" if since is not None else ""
        return self._object(f"/v1/transactions/{tx_hash}{query}")

    def wait_for_receipt(
        self,
        tx_hash: str,
        timeout: float = 120.0,
        since: Optional[int] = None,
        check: bool = True,
        poll_interval: float = 0.25,
    ) -> Json:
        """Polls :meth:`receipt` until the transaction executed; with ``check`` a rejected receipt
        raises its error (a :class:`TransactionRejected` of the code's class). Raises
        :class:`WaitTimeout` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = self.receipt(tx_hash, since)
            except (UnknownTransaction, ConnectionFailed, ServerError):
                r = None
            if r is not None:
                if check and r.get("status") != "executed":
                    raise rejection(r)
                return r
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"transaction {tx_hash} not executed after {timeout:g} s")
            time.sleep(poll_interval)

    def execute(
        self,
        key: Key,
        call: Call,
        fee: Optional[int] = None,
        nonce: Optional[int] = None,
        timeout: float = 120.0,
    ) -> Json:
        """Signs ``call``, submits it and waits for its receipt, which it returns; raises the
        gateway's refusal or the receipt's rejection. Without an explicit ``nonce`` it reads the
        account's and, when another transaction took that nonce first (``nonce_replayed``, at
        the dry run or at execution), re-signs with the next one and resends."""
        chain_id = self.chain_id()
        paid = self._fee(fee)
        tries = 1 if nonce is not None else NONCE_RETRIES
        for attempt in range(tries):
            n = self.nonce(key.address) if nonce is None else nonce
            signed = Transaction(chain_id, key.public_key, n, paid, call).sign(key)
            since = self.height()
            try:
                tx_hash = self.submit(signed)
                return self.wait_for_receipt(tx_hash, timeout, since=since)
            except NonceReplayed:
                if attempt + 1 >= tries:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def transfer(
        self,
        key: Key,
        to: AddressLike,
        amount: int,
        fee: Optional[int] = None,
        nonce: Optional[int] = None,
        chain_id: Optional[str] = None,
    ) -> str:
        """Signs and submits a transfer of ``amount`` base units (1 TRAIN = 10⁹); the nonce is
        read from the sender's account and the chain id from ``/v1/status`` unless given.
        Returns the hash without waiting (see :meth:`wait_for_receipt`)."""
        if nonce is None:
            nonce = self.nonce(key.address)
        if chain_id is None:
            chain_id = self.chain_id()
        return self.submit(transfer(key, chain_id, nonce, to, amount, self._fee(fee)))

    # --- jobs ------------------------------------------------------------------------------

    @staticmethod
    def job_spec(
        model: Union[str, Mapping[str, Any]],
        dataset: int,
        *,
        optimizer: Union[str, Optimizer] = "adam",
        learning_rate: float = 0.003,
        batch_size: int = 32,
        total_steps: int = 704,
        steps_per_unit: int = 176,
        seed: int = 42,
        target_accuracy: Optional[float] = None,
        target_loss: Optional[float] = None,
        budget: int = 400 * BASE_UNITS_PER_TRAIN,
        deadline_s: float = 30 * 60,
        tier: int = 1,
        min_memory_mb: int = 0,
    ) -> JobSpec:
        """The :class:`JobSpec` that :meth:`submit_job` signs (same arguments). Without a target
        the job aims at 95 % held-out accuracy; the deadline is ``deadline_s`` from now."""
        if target_accuracy is not None and target_loss is not None:
            raise ValueError("give target_accuracy or target_loss, not both")
        if target_loss is not None:
            target = Target(Metric.LOSS, to_ppm(target_loss))
        else:
            acc = 0.95 if target_accuracy is None else target_accuracy
            if not 0.0 <= acc <= 1.0:
                raise ValueError(f"target_accuracy = {acc}, must be in [0, 1]")
            target = Target(Metric.ACCURACY, to_ppm(acc))
        return JobSpec(
            model=canonical_model_json(model),
            dataset=int(dataset),
            hyper=HyperParams(
                Optimizer.parse(optimizer),
                to_ppm(learning_rate),
                batch_size,
                total_steps,
                steps_per_unit,
                seed,
            ),
            target=target,
            budget=int(budget),
            deadline_ms=int((time.time() + deadline_s) * 1000),
            tier=tier,
            min_memory_mb=min_memory_mb,
        )

    @overload
    def submit_job(
        self,
        key: Key,
        model: Union[str, Mapping[str, Any]],
        dataset: int,
        *,
        wait_for_id: Literal[True] = ...,
        **spec: Any,
    ) -> int: ...

    @overload
    def submit_job(
        self,
        key: Key,
        model: Union[str, Mapping[str, Any]],
        dataset: int,
        *,
        wait_for_id: Literal[False],
        **spec: Any,
    ) -> str: ...

    def submit_job(
        self,
        key: Key,
        model: Union[str, Mapping[str, Any]],
        dataset: int,
        *,
        wait_for_id: bool = True,
        fee: Optional[int] = None,
        nonce: Optional[int] = None,
        timeout: float = 120.0,
        **spec: Any,
    ) -> Union[int, str]:
        """Submits a training job signed by ``key``, who pays ``budget`` (base units) into
        escrow, and returns the job id once the transaction executed (with ``wait_for_id=False``:
        the transaction hash, at once).

        ``model`` is a model spec (dict or JSON text, see :class:`trainmesh.Model`); ``dataset``
        an attached dataset's id. Keyword arguments: ``optimizer`` ("adam" or "sgd"),
        ``learning_rate``, ``batch_size``, ``total_steps``, ``steps_per_unit`` (steps per work
        unit), ``seed``, ``target_accuracy`` (default 0.95) or ``target_loss``, ``budget``,
        ``deadline_s`` (from now), ``tier`` (0: the metric is recomputed, 1: checkpoint-chain
        segments are also re-executed, 2: disputes), ``min_memory_mb``.

        Raises what the gateway refuses (InvalidSpec, InsufficientBalance, InvalidSignature, ...)
        or the receipt's rejection."""
        job = self.job_spec(model, dataset, **spec)
        if not wait_for_id:
            n = self.nonce(key.address) if nonce is None else nonce
            tx = Transaction(self.chain_id(), key.public_key, n, self._fee(fee), SubmitJob(job))
            return self.submit(tx.sign(key))
        receipt = self.execute(key, SubmitJob(job), fee=fee, nonce=nonce, timeout=timeout)
        submitted = _event(receipt, "JobSubmitted")
        if submitted is None:
            raise TrainmeshError(f"no JobSubmitted event in the receipt: {receipt!r}")
        return int(submitted["job"])

    def events(self, job_id: int, read_timeout: float = 30.0) -> Iterator[Tuple[str, Json]]:
        """The job's Server-Sent Events, as ``(event, data)``: ``"job"`` with
        ``{"height", "job", "units"}`` now and on every change, then ``"end"`` with the same body
        once the job is no longer running, after which the stream (and the iteration) ends.
        ``read_timeout`` bounds the wait for each line (the gateway sends a keep-alive every
        15 s)."""
        for event, data in self._stream(job_id, read_timeout):
            if event != ":":
                yield event, data

    def _stream(self, job_id: int, read_timeout: float) -> Iterator[Tuple[str, Json]]:
        """The events, and ``(":", {})`` for each comment (keep-alive)."""
        path = f"/v1/jobs/{int(job_id)}/events"
        with self._open("GET", path, accept="text/event-stream", timeout=read_timeout) as resp:
            try:
                yield from _parse_sse(resp)
            except OSError as e:  # a read timed out, or the connection broke
                raise ConnectionFailed("stream_broken", f"{self.url}{path}: {e}") from None

    def wait(
        self,
        job_id: int,
        progress: bool = True,
        timeout: float = 3600.0,
        poll_interval: float = 1.0,
    ) -> Json:
        """Follows the job until it finishes and returns its final body (``{"job", "units"}``):
        from the event stream, or by polling :meth:`job` when the stream is unavailable or
        breaks. With ``progress`` a bar shows certified units of the total and the certified
        held-out metric. Raises :class:`JobFailed` if the job ends ``Exhausted`` or ``Expired``
        and :class:`WaitTimeout` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        bar = _Progress(job_id) if progress else None
        try:
            body = self._follow(job_id, deadline, bar, poll_interval)
        finally:
            if bar is not None:
                bar.close()
        state = str(body["job"]["state"])
        if state != "Completed":
            raise JobFailed(int(job_id), state, body)
        return body

    def _follow(
        self,
        job_id: int,
        deadline: float,
        bar: Optional["_Progress"],
        poll_interval: float,
    ) -> Json:
        def seen(body: Json) -> bool:
            if bar is not None:
                bar.update(body)
            return str(body["job"]["state"]) in FINAL_STATES

        streaming = True
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"job {job_id} still running after the wait's deadline")
            if streaming:
                # A closed stream, a broken one or one the node cannot open: poll from here on.
                streaming = False
                try:
                    for event, data in self._stream(job_id, min(30.0, remaining)):
                        if event in ("job", "end") and "job" in data and seen(data):
                            return data
                        if event == "end" or time.monotonic() >= deadline:
                            break
                except (ConnectionFailed, ServerError, OSError, ValueError):
                    pass
                continue
            body = self.job(job_id)
            if seen(body):
                return body
            time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))

    def download(
        self,
        job_id: int,
        path: Union[str, Path],
        key: Key,
        expected: Optional[str] = None,
        timeout: float = 120.0,
    ) -> Path:
        """Downloads the job's latest certified checkpoint (safetensors) to ``path`` (a file, or a
        directory to put ``job-<id>.safetensors`` in), after checking its BLAKE3 against the hash
        the ledger certified (the ``X-Checkpoint-Blake3`` header, and ``expected`` when given);
        raises :class:`ChecksumMismatch` otherwise. Returns the file's path.

        The gateway serves a job's weights to its owner: the request is signed with ``key``
        (:func:`weights_request_message`), and another key is refused (:class:`Forbidden`)."""
        now = int(time.time() * 1000)
        message = weights_request_message(self.chain_id(), int(job_id), now)
        signed = {
            "X-Trainmesh-Key": key.public_key.hex(),
            "X-Trainmesh-Time": str(now),
            "X-Trainmesh-Signature": key.sign(message).hex(),
        }
        with self._open(
            "GET",
            f"/v1/jobs/{int(job_id)}/weights",
            accept="application/octet-stream",
            timeout=timeout,
            headers=signed,
        ) as resp:
            certified = (resp.headers.get("X-Checkpoint-Blake3") or "").strip().lower()
            data = resp.read()
        actual = blake3.blake3(data).hexdigest()
        if not certified:
            raise ChecksumMismatch("the gateway sent no X-Checkpoint-Blake3 header")
        if actual != certified:
            raise ChecksumMismatch(f"checkpoint hashes to {actual}, certified {certified}")
        if expected is not None and actual != expected.lower():
            raise ChecksumMismatch(f"checkpoint hashes to {actual}, expected {expected}")
        out = Path(path)
        if out.is_dir():
            out = out / f"job-{int(job_id)}.safetensors"
        tmp = out.with_name(out.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, out)
        return out

    # --- datasets --------------------------------------------------------------------------

    def upload_shard(self, shard: bytes, split: str, key: Key) -> Json:
        """Uploads one shard's bytes to this node (``split``: "train" or "heldout"), signed by
        the provider's ``key``: the node keeps at most what the provider's balance allows, and
        deletes what no attached dataset uses within a day. Returns ``{"blake3", "bytes",
        "samples", "features", "classes", "split"}``."""
        if split not in ("train", "heldout"):
            raise ValueError(f"split is train or heldout, not {split!r}")
        if len(shard) > UPLOAD_BYTES_MAX:
            raise ValueError(f"a shard of {len(shard)} bytes is over the upload limit")
        now = int(time.time() * 1000)
        digest = blake3.blake3(bytes(shard)).digest()
        message = upload_request_message(self.chain_id(), digest, now)
        with self._open(
            "POST",
            "/v1/datasets/shards?" + urllib.parse.urlencode({"split": split}),
            data=shard,
            content_type="application/octet-stream",
            headers={
                "X-Trainmesh-Key": key.public_key.hex(),
                "X-Trainmesh-Time": str(now),
                "X-Trainmesh-Signature": key.sign(message).hex(),
            },
        ) as resp:
            return cast(Json, json.loads(resp.read()))

    def post_manifest(
        self,
        key: Key,
        name: str,
        features: int,
        classes: int,
        train: List[str],
        heldout: List[str],
    ) -> Json:
        """Stores a manifest over shards uploaded to this node, signed by the provider's
        ``key`` (the node serves them for that provider, and for no other); returns what the
        provider signs into AttachDataset: ``{"shards_root", "heldout_root", "shard_sizes",
        "heldout_samples", "peer_id", "peer_signature"}``."""
        message = manifest_message(merkle_root(train), merkle_root(heldout))
        body = {
            "name": name,
            "features": features,
            "classes": classes,
            "train": train,
            "heldout": heldout,
            "provider": key.public_key.hex(),
            "signature": key.sign(message).hex(),
        }
        return cast(Json, self._request("POST", "/v1/datasets/manifests", body))

    def attach_dataset(
        self,
        key: Key,
        train: Samples,
        heldout: Samples,
        *,
        name: str,
        classes: Optional[int] = None,
        licence: str = "",
        price_per_use: int = 0,
        samples_per_shard: int = 256,
        fee: Optional[int] = None,
        nonce: Optional[int] = None,
        timeout: float = 120.0,
    ) -> int:
        """Attaches a dataset provided by ``key``: ``train`` and ``heldout`` are ``(x, y)`` with
        x of shape ``samples × features``, values in [0, 1], and integer labels. The samples are
        cut into shards (``samples_per_shard``), uploaded to this node, which serves them to the
        network (the held-out split to evaluators only), committed to by a manifest, and signed
        into AttachDataset with ``price_per_use`` (base units per certified unit). Returns the
        dataset id once the transaction executed."""
        (xt, yt), (xh, yh) = train, heldout
        if classes is None:
            import numpy as np

            classes = max(2, int(max(np.max(yt), np.max(yh))) + 1)
        train_shards = split_shards(xt, yt, classes, samples_per_shard)
        heldout_shards = split_shards(xh, yh, classes, samples_per_shard)
        features = int(_rows_width(xt))
        if int(_rows_width(xh)) != features:
            raise ValueError("train and held-out samples have different widths")
        # The node keeps what this provider's deposit for it allows: deposit for these uploads
        # (it comes back once the dataset is used: ``reclaim_upload_deposit``).
        node = str(self.status()["peer_id"])
        total = sum(len(s) for s in train_shards) + sum(len(s) for s in heldout_shards)
        deposit = -(-(total + UPLOAD_BYTES_MAX) // UPLOAD_BYTES_PER_TRAIN) * BASE_UNITS_PER_TRAIN
        self.execute(key, DepositForUploads(node, deposit), fee=fee, nonce=nonce, timeout=timeout)
        hashes: Dict[str, List[str]] = {"train": [], "heldout": []}
        for split, shards in (("train", train_shards), ("heldout", heldout_shards)):
            for shard in shards:
                reply = self.upload_shard(shard, split, key)
                local = shard_hash(shard)
                if str(reply.get("blake3", "")).lower() != local:
                    raise ChecksumMismatch(
                        f"the node stored a {split} shard as {reply.get('blake3')}, it hashes "
                        f"to {local}"
                    )
                hashes[split].append(local)
        m = self.post_manifest(key, name, features, classes, hashes["train"], hashes["heldout"])
        # What is signed is checked against what was uploaded, not taken on the node's word.
        shards_root = merkle_root(hashes["train"])
        heldout_root = merkle_root(hashes["heldout"])
        sizes = tuple(len(s) for s in train_shards)
        heldout_samples = int(len(yh))
        mismatch = [
            what
            for what, ours, theirs in (
                ("shards_root", shards_root.hex(), str(m.get("shards_root", "")).lower()),
                ("heldout_root", heldout_root.hex(), str(m.get("heldout_root", "")).lower()),
                ("shard_sizes", list(sizes), [int(s) for s in m.get("shard_sizes", [])]),
                ("heldout_samples", heldout_samples, int(m.get("heldout_samples", -1))),
            )
            if ours != theirs
        ]
        if mismatch:
            raise ChecksumMismatch(f"the manifest reply disagrees on {', '.join(mismatch)}: {m}")
        spec = DatasetSpec(
            name=name,
            shards_root=shards_root,
            shard_sizes=sizes,
            heldout_root=heldout_root,
            heldout_samples=heldout_samples,
            licence=licence,
            price_per_use=int(price_per_use),
            peer_id=str(m["peer_id"]),
            peer_signature=bytes.fromhex(str(m.get("peer_signature", ""))),
        )
        after = None if nonce is None else nonce + 1
        receipt = self.execute(key, AttachDataset(spec), fee=fee, nonce=after, timeout=timeout)
        attached = _event(receipt, "DatasetAttached")
        if attached is None:
            raise TrainmeshError(f"no DatasetAttached event in the receipt: {receipt!r}")
        return int(attached["dataset"])


def _rows_width(x: Any) -> int:
    import numpy as np

    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"x must be 2-D (samples × features), found shape {a.shape}")
    return int(a.shape[1])


def _parse_sse(lines: Any) -> Iterator[Tuple[str, Json]]:
    """Server-Sent Events from a byte-line iterable: ``event:``/``data:`` fields, dispatched at a
    blank line, the data parsed as JSON; each comment (``:``) as ``(":", {})``."""
    event, data = "message", []  # type: Tuple[str, List[str]]
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n") if isinstance(raw, bytes) else raw.rstrip("\r\n")
        if not line:
            if data:
                yield event, cast(Json, json.loads("\n".join(data)))
            event, data = "message", []
            continue
        if line.startswith(":"):
            yield ":", {}
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
    if data:
        yield event, cast(Json, json.loads("\n".join(data)))


class _Progress:
    """A tqdm bar over a job's units: certified / total, with the held-out metric (opened at the
    first update, once the total is known)."""

    def __init__(self, job_id: int) -> None:
        self._job_id = job_id
        self._bar: Any = None

    def update(self, body: Mapping[str, Any]) -> None:
        job = body["job"]
        total = int(job.get("units_total") or 0)
        if self._bar is None:
            from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]

            self._bar = tqdm(
                total=total, desc=f"job {self._job_id}", unit="unit", dynamic_ncols=True
            )
        elif self._bar.total != total:
            self._bar.total = total
        self._bar.n = int(job.get("units_done") or 0)
        metric = job.get("latest_metric_ppm")
        kind = str(job.get("spec", {}).get("target", {}).get("metric", "Accuracy")).lower()
        post = {"state": str(job.get("state", "?")).lower()}
        units = body.get("units") or []
        if units:
            last = units[-1]
            post["unit"] = (
                f"{last.get('id', {}).get('index', '?')} {str(last.get('state', '')).lower()}"
            )
            trace = (last.get("result") or {}).get("loss_trace_ppm") or []
            if trace:
                post["loss"] = f"{trace[-1] / 1e6:.4f}"
        post[f"held-out {kind}"] = f"{metric / 1e6:.4f}" if isinstance(metric, int) else "-"
        self._bar.set_postfix(post, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
