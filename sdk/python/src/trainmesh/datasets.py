"""Datasets as the network holds them: shards in the engine's format, content-addressed by BLAKE3,
committed to by a Merkle root (crates/gpu/src/dataset.rs and hash.rs).

Shard format, version 1 (integers little-endian)::

    magic     8 bytes "TMSHARD1"
    samples   u32
    features  u32
    classes   u32
    x         samples × features f32, row-major, each in [0, 1]
    y         samples u8, each < classes
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import blake3
import numpy as np
import numpy.typing as npt

SHARD_MAGIC = b"TMSHARD1"
SHARD_HEADER_BYTES = 8 + 4 * 3
#: What the gateway accepts per uploaded shard.
UPLOAD_BYTES_MAX = 4 << 20
FEATURES_MAX = 1 << 20
CLASSES_MAX = 256

_LEAF_TAG = b"trainmesh.merkle.leaf.v1"
_NODE_TAG = b"trainmesh.merkle.node.v1"
_EMPTY_TAG = b"trainmesh.merkle.empty.v1"

Features = npt.NDArray[np.float32]
Labels = npt.NDArray[np.uint8]
ArrayLike = npt.ArrayLike


class ShardError(ValueError):
    """Samples that cannot be a shard, or bytes that are not one."""


@dataclass(frozen=True)
class Shard:
    """Samples in memory: ``x`` is ``samples × features`` float32, ``y`` uint8 labels."""

    x: Features
    y: Labels
    classes: int

    @property
    def features(self) -> int:
        return int(self.x.shape[1])

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def encode(self) -> bytes:
        """The shard's bytes (what is uploaded, hashed and served)."""
        return encode_shard(self.x, self.y, self.classes)


def check_samples(x: ArrayLike, y: ArrayLike, classes: int) -> Tuple[Features, Labels]:
    """``(x, y)`` as the engine accepts them: x float32 of shape ``(n, features)`` with every value
    in [0, 1], y integer labels in ``0..classes``; raises :class:`ShardError` otherwise."""
    xa = np.asarray(x)
    ya = np.asarray(y)
    if xa.ndim != 2:
        raise ShardError(f"x must be 2-D (samples × features), found shape {xa.shape}")
    if ya.ndim != 1 or ya.shape[0] != xa.shape[0]:
        raise ShardError(f"y must be 1-D with one label per row of x: {ya.shape} for {xa.shape}")
    if not 1 <= xa.shape[1] <= FEATURES_MAX:
        raise ShardError(f"features = {xa.shape[1]}, must be in 1..={FEATURES_MAX}")
    if not 2 <= classes <= CLASSES_MAX:
        raise ShardError(f"classes = {classes}, must be in 2..={CLASSES_MAX}")
    if not (np.issubdtype(xa.dtype, np.floating) or np.issubdtype(xa.dtype, np.integer)):
        raise ShardError(f"x must be numeric, found {xa.dtype}")
    x32 = np.ascontiguousarray(xa, dtype=np.float32)
    if x32.size and not (np.all(x32 >= 0.0) and np.all(x32 <= 1.0)):
        raise ShardError("every feature value must be in [0, 1] (scale the data first)")
    if not np.issubdtype(ya.dtype, np.integer):
        if ya.size and not np.all(np.mod(ya, 1) == 0):
            raise ShardError("labels must be whole numbers")
    if ya.size and (ya.min() < 0 or ya.max() >= classes):
        raise ShardError(f"labels must be in 0..{classes}, found {ya.min()}..={ya.max()}")
    return x32, ya.astype(np.uint8)


def encode_shard(x: ArrayLike, y: ArrayLike, classes: int) -> bytes:
    """Encodes samples as one shard (checked first, see :func:`check_samples`)."""
    x32, y8 = check_samples(x, y, classes)
    n, features = x32.shape
    header = SHARD_MAGIC + struct.pack("<III", n, features, classes)
    return header + x32.astype("<f4", copy=False).tobytes() + y8.tobytes()


def decode_shard(data: bytes, expected: Optional[Union[str, bytes]] = None) -> Shard:
    """Decodes a shard's bytes, after checking their BLAKE3 against ``expected`` when given."""
    if expected is not None:
        want = bytes.fromhex(expected) if isinstance(expected, str) else bytes(expected)
        actual = blake3.blake3(data).digest()
        if actual != want:
            raise ShardError(f"shard hashes to {actual.hex()}, expected {want.hex()}")
    if len(data) < SHARD_HEADER_BYTES:
        raise ShardError(f"truncated: {len(data)} bytes, a header is {SHARD_HEADER_BYTES}")
    if data[:8] != SHARD_MAGIC:
        raise ShardError("bad magic (not a trainmesh shard, version 1)")
    n, features, classes = struct.unpack_from("<III", data, 8)
    expected_bytes = SHARD_HEADER_BYTES + n * features * 4 + n
    if len(data) != expected_bytes:
        raise ShardError(f"{len(data)} bytes, the header says {expected_bytes}")
    x_end = SHARD_HEADER_BYTES + n * features * 4
    x = np.frombuffer(data, dtype="<f4", count=n * features, offset=SHARD_HEADER_BYTES)
    y = np.frombuffer(data, dtype=np.uint8, count=n, offset=x_end)
    x32, y8 = check_samples(x.astype(np.float32).reshape(n, features), y, classes)
    return Shard(x32, y8, classes)


def shard_hash(data: bytes) -> str:
    """A shard's id: the BLAKE3 of its bytes, hex."""
    return blake3.blake3(data).hexdigest()


def split_shards(
    x: ArrayLike, y: ArrayLike, classes: int, samples_per_shard: int = 256
) -> List[bytes]:
    """Cuts samples, in order, into shards of at most ``samples_per_shard``; returns their bytes."""
    if samples_per_shard < 1:
        raise ShardError("samples_per_shard must be at least 1")
    x32, y8 = check_samples(x, y, classes)
    if len(y8) == 0:
        raise ShardError("no samples")
    out = []
    for start in range(0, len(y8), samples_per_shard):
        part = slice(start, start + samples_per_shard)
        out.append(encode_shard(x32[part], y8[part], classes))
    return out


def _leaf(h: bytes) -> bytes:
    return blake3.blake3(_LEAF_TAG + h).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return blake3.blake3(_NODE_TAG + left + right).digest()


def merkle_root(hashes: Sequence[Union[str, bytes]]) -> bytes:
    """The Merkle root over 32-byte hashes, in order: leaves and inner nodes under distinct
    domain tags, an odd node promoted unchanged, the empty list the hash of its own tag."""
    level = [_leaf(bytes.fromhex(h) if isinstance(h, str) else bytes(h)) for h in hashes]
    if not level:
        return blake3.blake3(_EMPTY_TAG).digest()
    while len(level) > 1:
        level = [
            _node(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
            for i in range(0, len(level), 2)
        ]
    return level[0]


def load_digits(path: Optional[Union[str, Path]] = None) -> Tuple[Features, Labels]:
    """The UCI 8×8 digits (1,797 samples) from the CSV the engine bundles
    (``crates/gpu/data/digits.csv.gz``; each line 64 pixels in 0..=16, then the label): x is
    pixel / 16 as float32, exactly as the nodes import it, y the digit."""
    if path is None:
        path = Path(__file__).resolve().parents[4] / "crates" / "gpu" / "data" / "digits.csv.gz"
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"{p}: no digits CSV here; pass the path of crates/gpu/data/digits.csv.gz"
        )
    raw = p.read_bytes()
    text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    table = np.loadtxt(text.decode().splitlines(), delimiter=",", dtype=np.float64, ndmin=2)
    if table.shape[1] != 65:
        raise ShardError(f"{p}: {table.shape[1]} columns, expected 65")
    x = (table[:, :64] / 16.0).astype(np.float32)
    y = table[:, 64].astype(np.uint8)
    return x, y
