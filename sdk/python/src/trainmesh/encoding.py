"""The canonical transaction encoding (BCS) and its hash, as the Rust ledger defines them.

Wire: ``version (1) ‖ BCS(Envelope{unsigned, signature})`` where ``unsigned`` is
``UnsignedEnvelope{chain_id, public_key, nonce, fee, kind, call}``; ``call`` is the BCS of the
call and ``kind`` its variant index. The transaction hash is
``BLAKE3("trainmesh/tx/v1" ‖ BCS(unsigned))`` and the signature is ed25519 over that hash.
"""

from __future__ import annotations

from dataclasses import dataclass

import blake3

from .keys import AddressLike, Key, parse_address

TRANSACTION_VERSION = 1
TX_DOMAIN = b"trainmesh/tx/v1"

U64_MAX = (1 << 64) - 1
U128_MAX = (1 << 128) - 1

# Variant indices of the Rust `Call` enum (crates/contracts/src/calls.rs).
KIND_TRANSFER = 0


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


@dataclass(frozen=True)
class Transaction:
    """What the signer agrees to. ``call`` is a call object with ``KIND`` and ``encode()``."""

    chain_id: str
    public_key: bytes
    nonce: int
    fee: int
    call: Transfer

    def unsigned_bytes(self) -> bytes:
        """BCS(UnsignedEnvelope)."""
        return (
            BcsWriter()
            .string(self.chain_id)
            .fixed(self.public_key, 32)
            .u64(self.nonce)
            .u128(self.fee)
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
    key: Key, chain_id: str, nonce: int, to: AddressLike, amount: int, fee: int = 0
) -> SignedTransaction:
    """A signed transfer of ``amount`` base units from ``key``'s account to ``to``."""
    return Transaction(chain_id, key.public_key, nonce, fee, Transfer.of(to, amount)).sign(key)
