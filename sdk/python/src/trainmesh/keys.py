"""ed25519 keys and the addresses derived from them."""

from __future__ import annotations

import os
from typing import Union

import blake3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ADDRESS_DOMAIN = b"trainmesh/address/v1"
DEVNET_KEY_DOMAIN = "trainmesh/devnet-key/"

AddressLike = Union[str, bytes]


def address_of(public_key: bytes) -> bytes:
    """The account address of a public key: BLAKE3("trainmesh/address/v1" ‖ public key)."""
    if len(public_key) != 32:
        raise ValueError(f"a public key is 32 bytes, found {len(public_key)}")
    return blake3.blake3(ADDRESS_DOMAIN + public_key).digest()


def parse_address(address: AddressLike) -> bytes:
    """32 address bytes from bytes or hex (an optional 0x prefix is accepted)."""
    if isinstance(address, str):
        text = address[2:] if address.startswith("0x") else address
        try:
            raw = bytes.fromhex(text)
        except ValueError as e:
            raise ValueError(f"address is not hex: {address!r}") from e
    else:
        raw = bytes(address)
    if len(raw) != 32:
        raise ValueError(f"an address is 32 bytes, found {len(raw)}")
    return raw


class Key:
    """An ed25519 signing key (32-byte secret), as the node's key files hold."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError(f"a secret key is 32 bytes, found {len(secret)}")
        self._secret = bytes(secret)
        self._private = Ed25519PrivateKey.from_private_bytes(self._secret)
        self._public = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def from_secret(cls, secret: bytes) -> "Key":
        return cls(secret)

    @classmethod
    def from_hex(cls, text: str) -> "Key":
        """From a key file's contents: 64 hex characters."""
        return cls(bytes.fromhex(text.strip()))

    @classmethod
    def generate(cls) -> "Key":
        return cls(os.urandom(32))

    @classmethod
    def devnet(cls, label: str) -> "Key":
        """A devnet's derived key (e.g. "researcher"); anyone can derive it, devnets only."""
        return cls(blake3.blake3((DEVNET_KEY_DOMAIN + label).encode()).digest())

    @property
    def secret(self) -> bytes:
        return self._secret

    @property
    def public_key(self) -> bytes:
        return self._public

    @property
    def address(self) -> bytes:
        return address_of(self._public)

    @property
    def address_hex(self) -> str:
        return self.address.hex()

    def sign(self, message: bytes) -> bytes:
        """A 64-byte ed25519 signature (deterministic)."""
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"Key(address={self.address_hex})"
