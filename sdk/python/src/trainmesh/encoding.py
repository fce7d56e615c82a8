"""The canonical transaction encoding (BCS) and its hash, as the Rust ledger defines them.

Wire: ``version (1) ‖ BCS(Envelope{unsigned, signature})`` where ``unsigned`` is
``UnsignedEnvelope{chain_id, public_key, nonce, fee, expires_ms, kind, call}``; ``call`` is the BCS of the
call and ``kind`` its variant index. The transaction hash is
``BLAKE3("trainmesh/tx/v1" ‖ BCS(unsigned))`` and the signature is ed25519 over that hash.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import blake3

from .keys import AddressLike, Key, parse_address

TRANSACTION_VERSION = 1
TX_DOMAIN = b"trainmesh/tx/v1"

def manifest_message(shards_root: bytes, heldout_root: bytes) -> bytes:
    """What a provider signs when it asks a node to serve its uploaded shards
    (``datasets::manifest_message``): a domain tag and both Merkle roots."""
    return b"trainmesh/manifest/v1/" + bytes(shards_root) + bytes(heldout_root)


#: The ledger's default minimum fee (0.001 TRAIN); governance may change it: ``Client`` reads the
#: chain's current one (``Client.min_fee()``).
MIN_FEE_DEFAULT = 1_000_000

U64_MAX = (1 << 64) - 1
U128_MAX = (1 << 128) - 1

# Variant indices of the Rust `Call` enum (crates/contracts/src/calls.rs).
KIND_TRANSFER = 0
KIND_ATTACH_DATASET = 8
KIND_SUBMIT_JOB = 9
KIND_DEPOSIT_FOR_UPLOADS = 18

#: Metrics and rates on the ledger are parts per million.
PPM = 1_000_000


class BcsWriter:
    """A minimal BCS writer: what transactions need."""

    def __init__(self) -> None:
        self._out = bytearray()

    def uleb128(self, value: int) -> "BcsWriter":
        if value < 0 or value > 0xFFFFFFFF:
            raise ValueError(f"ULEB128 value out of range: {value}")
        while True:
            byte = value & 0x7F
            value >>= 7
            if value:
                self._out.append(byte | 0x80)
            else:
                self._out.append(byte)
                return self

    def _uint(self, value: int, size: int) -> "BcsWriter":
        if value < 0 or value >= 1 << (8 * size):
            raise ValueError(f"u{8 * size} out of range: {value}")
        self._out += value.to_bytes(size, "little")
        return self

    def u8(self, value: int) -> "BcsWriter":
        return self._uint(value, 1)

    def u32(self, value: int) -> "BcsWriter":
        return self._uint(value, 4)

    def u64(self, value: int) -> "BcsWriter":
        return self._uint(value, 8)

    def u128(self, value: int) -> "BcsWriter":
        return self._uint(value, 16)

    def fixed(self, data: bytes, size: int) -> "BcsWriter":
        """A fixed-size array: the raw bytes."""
        if len(data) != size:
            raise ValueError(f"expected {size} bytes, found {len(data)}")
        self._out += data
        return self

    def byte_vector(self, data: bytes) -> "BcsWriter":
        """A Vec<u8>: ULEB128 length, then the bytes."""
        self.uleb128(len(data))
        self._out += data
        return self

    def string(self, text: str) -> "BcsWriter":
        return self.byte_vector(text.encode("utf-8"))

    def variant(self, index: int) -> "BcsWriter":
        return self.uleb128(index)

    def finish(self) -> bytes:
        return bytes(self._out)


def to_ppm(value: float) -> int:
    """``value`` × 10⁶, rounded half away from zero (as the nodes round measurements)."""
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a non-negative finite number: {value!r}")
    return int(math.floor(value * PPM + 0.5))


def _hash32(value: Union[str, bytes], what: str) -> bytes:
    if isinstance(value, str):
        raw = bytes.fromhex(value[2:] if value.startswith("0x") else value)
    else:
        raw = bytes(value)
    if len(raw) != 32:
        raise ValueError(f"{what} is 32 bytes, found {len(raw)}")
    return raw


@dataclass(frozen=True)
class Transfer:
    """``Call::Transfer { to, amount }``: moves ``amount`` base units (1 TRAIN = 10⁹)."""

    to: bytes
    amount: int

    KIND = KIND_TRANSFER

    @classmethod
    def of(cls, to: AddressLike, amount: int) -> "Transfer":
        return cls(parse_address(to), amount)

    def encode(self) -> bytes:
        return BcsWriter().variant(self.KIND).fixed(self.to, 32).u128(self.amount).finish()

    def to_json(self) -> Dict[str, Any]:
        """The call as the nodes write it in JSON (serde's externally tagged enum)."""
        return {"Transfer": {"to": self.to.hex(), "amount": str(self.amount)}}


@dataclass(frozen=True)
class DepositForUploads:
    """``Call::DepositForUploads { node, amount }``: ``amount`` base units of the sender's
    balance held as its deposit for uploads to the node of peer id ``node`` (the node keeps
    16 MiB per TRAIN of it; it comes back once a dataset the sender attached there is used)."""

    node: str
    amount: int

    KIND = KIND_DEPOSIT_FOR_UPLOADS

    def encode(self) -> bytes:
        return BcsWriter().variant(self.KIND).string(self.node).u128(self.amount).finish()

    def to_json(self) -> Dict[str, Any]:
        return {"DepositForUploads": {"node": self.node, "amount": str(self.amount)}}


class Optimizer(IntEnum):
    """``jobs::Optimizer``; the value is its BCS variant index."""

    SGD = 0
    ADAM = 1
    #: AdamW with the network's language-model schedule (warm-up, cosine decay, clipping).
    ADAMW = 2

    @property
    def json_name(self) -> str:
        return {Optimizer.SGD: "Sgd", Optimizer.ADAM: "Adam", Optimizer.ADAMW: "AdamW"}[self]

    @classmethod
    def parse(cls, value: Union[str, "Optimizer"]) -> "Optimizer":
        """From ``"adam"``/``"adamw"``/``"sgd"`` (any case) or a member."""
        if isinstance(value, Optimizer):
            return value
        try:
            return cls[value.upper()]
        except KeyError:
            raise ValueError(f"unknown optimizer {value!r}: sgd, adam or adamw") from None


class Metric(IntEnum):
    """``jobs::Metric``: what the target is judged on (held-out accuracy or loss)."""

    ACCURACY = 0
    LOSS = 1

    @property
    def json_name(self) -> str:
        return "Accuracy" if self is Metric.ACCURACY else "Loss"

    @classmethod
    def parse(cls, value: Union[str, "Metric"]) -> "Metric":
        if isinstance(value, Metric):
            return value
        try:
            return cls[value.upper()]
        except KeyError:
            raise ValueError(f"unknown metric {value!r}: accuracy or loss") from None


@dataclass(frozen=True)
class HyperParams:
    """``jobs::HyperParams``; the learning rate is in parts per million (3,000 = 0.003)."""

    optimizer: Optimizer
    learning_rate_ppm: int
    batch_size: int
    total_steps: int
    steps_per_unit: int
    seed: int

    def write(self, w: BcsWriter) -> None:
        w.variant(int(self.optimizer)).u32(self.learning_rate_ppm).u32(self.batch_size)
        w.u64(self.total_steps).u64(self.steps_per_unit).u64(self.seed)

    def to_json(self) -> Dict[str, Any]:
        return {
            "optimizer": self.optimizer.json_name,
            "learning_rate_ppm": self.learning_rate_ppm,
            "batch_size": self.batch_size,
            "total_steps": self.total_steps,
            "steps_per_unit": self.steps_per_unit,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> "HyperParams":
        return cls(
            Optimizer.parse(str(j["optimizer"])),
            int(j["learning_rate_ppm"]),
            int(j["batch_size"]),
            int(j["total_steps"]),
            int(j["steps_per_unit"]),
            int(j["seed"]),
        )


@dataclass(frozen=True)
class Target:
    """``jobs::Target``: reached when held-out accuracy ≥ or loss ≤ ``threshold_ppm`` / 10⁶."""

    metric: Metric
    threshold_ppm: int

    def write(self, w: BcsWriter) -> None:
        w.variant(int(self.metric)).u32(self.threshold_ppm)

    def to_json(self) -> Dict[str, Any]:
        return {"metric": self.metric.json_name, "threshold_ppm": self.threshold_ppm}

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> "Target":
        return cls(Metric.parse(str(j["metric"])), int(j["threshold_ppm"]))


@dataclass(frozen=True)
class JobSpec:
    """``jobs::JobSpec``: what a researcher asks the network to train, and pays for.

    ``model`` is the model spec's JSON text (crates/gpu/src/spec.rs); ``budget`` is in base units
    and is escrowed at submission; ``deadline_ms`` is a Unix time in milliseconds."""

    model: str
    dataset: int
    hyper: HyperParams
    target: Target
    budget: int
    deadline_ms: int
    tier: int = 1
    min_memory_mb: int = 0

    def write(self, w: BcsWriter) -> None:
        w.string(self.model).u64(self.dataset)
        self.hyper.write(w)
        self.target.write(w)
        w.u128(self.budget).u64(self.deadline_ms).u8(self.tier).u64(self.min_memory_mb)

    def units(self) -> int:
        """Work units the job is cut into: ⌈total_steps / steps_per_unit⌉."""
        return -(-self.hyper.total_steps // self.hyper.steps_per_unit)

    def to_json(self) -> Dict[str, Any]:
        """The spec as the nodes write it in JSON (e.g. inside ``GET /v1/jobs/{id}``)."""
        return {
            "model": self.model,
            "dataset": self.dataset,
            "hyper": self.hyper.to_json(),
            "target": self.target.to_json(),
            "budget": str(self.budget),
            "deadline": self.deadline_ms,
            "tier": self.tier,
            "min_memory_mb": self.min_memory_mb,
        }

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> "JobSpec":
        return cls(
            str(j["model"]),
            int(j["dataset"]),
            HyperParams.from_json(j["hyper"]),
            Target.from_json(j["target"]),
            int(j["budget"]),
            int(j["deadline"]),
            int(j["tier"]),
            int(j["min_memory_mb"]),
        )


@dataclass(frozen=True)
class DatasetSpec:
    """``datasets::DatasetSpec``: a dataset committed to by the Merkle roots of its shards.

    ``shard_sizes`` are the byte lengths of the training shards, in order; ``heldout_samples`` the
    number of held-out samples; ``peer_id`` the libp2p id of the node that serves the shards, and
    ``peer_signature`` that node's signature binding these roots to the provider (the manifest
    upload's reply carries it)."""

    name: str
    shards_root: bytes
    shard_sizes: Tuple[int, ...]
    heldout_root: bytes
    heldout_samples: int
    licence: str
    price_per_use: int
    peer_id: str
    peer_signature: bytes = b""

    def write(self, w: BcsWriter) -> None:
        w.string(self.name).fixed(self.shards_root, 32).uleb128(len(self.shard_sizes))
        for size in self.shard_sizes:
            w.u64(size)
        w.fixed(self.heldout_root, 32).u64(self.heldout_samples).string(self.licence)
        w.u128(self.price_per_use).string(self.peer_id).byte_vector(self.peer_signature)

    def to_json(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "shards_root": self.shards_root.hex(),
            "shard_sizes": list(self.shard_sizes),
            "heldout_root": self.heldout_root.hex(),
            "heldout_samples": self.heldout_samples,
            "licence": self.licence,
            "price_per_use": str(self.price_per_use),
            "peer_id": self.peer_id,
            "peer_signature": list(self.peer_signature),
        }

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> "DatasetSpec":
        return cls(
            str(j["name"]),
            _hash32(j["shards_root"], "shards_root"),
            tuple(int(s) for s in j["shard_sizes"]),
            _hash32(j["heldout_root"], "heldout_root"),
            int(j["heldout_samples"]),
            str(j["licence"]),
            int(j["price_per_use"]),
            str(j["peer_id"]),
            bytes(int(b) for b in j["peer_signature"]),
        )


@dataclass(frozen=True)
class AttachDataset:
    """``Call::AttachDataset { spec }``: registers a dataset; its id comes in the
    ``DatasetAttached`` event of the receipt."""

    spec: DatasetSpec

    KIND = KIND_ATTACH_DATASET

    def encode(self) -> bytes:
        w = BcsWriter().variant(self.KIND)
        self.spec.write(w)
        return w.finish()

    def to_json(self) -> Dict[str, Any]:
        return {"AttachDataset": {"spec": self.spec.to_json()}}


@dataclass(frozen=True)
class SubmitJob:
    """``Call::SubmitJob { spec }``: escrows the budget and opens the job; its id comes in the
    ``JobSubmitted`` event of the receipt."""

    spec: JobSpec

    KIND = KIND_SUBMIT_JOB

    def encode(self) -> bytes:
        w = BcsWriter().variant(self.KIND)
        self.spec.write(w)
        return w.finish()

    def to_json(self) -> Dict[str, Any]:
        return {"SubmitJob": {"spec": self.spec.to_json()}}


Call = Union[Transfer, AttachDataset, SubmitJob, DepositForUploads]


def call_from_json(j: Mapping[str, Any]) -> Call:
    """A call from its JSON form: ``{"Transfer": {...}}``, ``{"SubmitJob": {"spec": ...}}``, ..."""
    if len(j) != 1:
        raise ValueError(f"a call is one variant, found {sorted(j)}")
    ((name, body),) = j.items()
    if name == "Transfer":
        return Transfer.of(str(body["to"]), int(body["amount"]))
    if name == "AttachDataset":
        return AttachDataset(DatasetSpec.from_json(body["spec"]))
    if name == "SubmitJob":
        return SubmitJob(JobSpec.from_json(body["spec"]))
    if name == "DepositForUploads":
        return DepositForUploads(str(body["node"]), int(body["amount"]))
    raise ValueError(f"the SDK does not encode {name!r} calls")


def canonical_model_json(model: Union[str, Mapping[str, Any]]) -> str:
    """A model spec as JSON text: a string is taken as is, a dict is written compactly."""
    if isinstance(model, str):
        return model
    return json.dumps(model, separators=(",", ":"))


#: How long a transaction signed now may wait to execute, unless its signer says otherwise.
TRANSACTION_LIFETIME_DEFAULT_MS = 10 * 60_000


def default_expiry_ms() -> int:
    """``now + TRANSACTION_LIFETIME_DEFAULT_MS``, in ms since the epoch by the wall clock."""
    return int(time.time() * 1000) + TRANSACTION_LIFETIME_DEFAULT_MS


@dataclass(frozen=True)
class Transaction:
    """What the signer agrees to. ``call`` is a call object with ``KIND`` and ``encode()``;
    ``expires_ms`` is the last batch time at which it may execute (by default ten minutes from
    now): after it the transaction is void."""

    chain_id: str
    public_key: bytes
    nonce: int
    fee: int
    call: Call
    expires_ms: int = field(default_factory=default_expiry_ms)

    def unsigned_bytes(self) -> bytes:
        """BCS(UnsignedEnvelope)."""
        return (
            BcsWriter()
            .string(self.chain_id)
            .fixed(self.public_key, 32)
            .u64(self.nonce)
            .u128(self.fee)
            .u64(self.expires_ms)
            .u32(self.call.KIND)
            .byte_vector(self.call.encode())
            .finish()
        )

    def hash(self) -> bytes:
        """The transaction id and the message its signature covers."""
        return blake3.blake3(TX_DOMAIN + self.unsigned_bytes()).digest()

    def sign(self, key: Key) -> "SignedTransaction":
        if key.public_key != self.public_key:
            raise ValueError("the key does not match the transaction's public key")
        digest = self.hash()
        return SignedTransaction(self, key.sign(digest), digest)


@dataclass(frozen=True)
class SignedTransaction:
    transaction: Transaction
    signature: bytes
    tx_hash: bytes

    def encode(self) -> bytes:
        """The wire encoding the gateway accepts (hex-encoded) at POST /v1/transactions."""
        if len(self.signature) != 64:
            raise ValueError("a signature is 64 bytes")
        # Envelope{unsigned, signature: Signature64([u8; 32], [u8; 32])}: 64 raw bytes.
        return bytes([TRANSACTION_VERSION]) + self.transaction.unsigned_bytes() + self.signature

    def hex(self) -> str:
        return self.encode().hex()


def transfer(
    key: Key,
    chain_id: str,
    nonce: int,
    to: AddressLike,
    amount: int,
    fee: int = MIN_FEE_DEFAULT,
    expires_ms: Optional[int] = None,
) -> SignedTransaction:
    """A signed transfer of ``amount`` base units from ``key``'s account to ``to``."""
    return sign_call(key, chain_id, nonce, Transfer.of(to, amount), fee, expires_ms)


def sign_call(
    key: Key,
    chain_id: str,
    nonce: int,
    call: Call,
    fee: int = MIN_FEE_DEFAULT,
    expires_ms: Optional[int] = None,
) -> SignedTransaction:
    """``call`` signed by ``key`` at ``nonce`` on ``chain_id``, valid until ``expires_ms`` (by
    default ten minutes from now)."""
    expiry = default_expiry_ms() if expires_ms is None else expires_ms
    return Transaction(chain_id, key.public_key, nonce, fee, call, expiry).sign(key)
