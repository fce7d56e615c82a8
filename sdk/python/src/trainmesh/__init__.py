"""trainmesh: keys, signed transactions and a client for a node's HTTP gateway."""

from .client import Client
from .encoding import (
    TRANSACTION_VERSION,
    BcsWriter,
    SignedTransaction,
    Transaction,
    Transfer,
    transfer,
)
from .errors import (
    BadRequest,
    ConnectionFailed,
    GatewayError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
)
from .keys import Key, address_of, parse_address

__all__ = [
    "BadRequest",
    "BcsWriter",
    "Client",
    "ConnectionFailed",
    "GatewayError",
    "Key",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "SignedTransaction",
    "TRANSACTION_VERSION",
    "Transaction",
    "Transfer",
    "address_of",
    "parse_address",
    "transfer",
]
