"""Errors the gateway returns: a JSON body ``{"code", "message"}`` and an HTTP status."""

from __future__ import annotations

from typing import Dict, Optional, Type


class GatewayError(Exception):
    """A gateway error: ``code`` is the gateway's stable code (e.g. ``wrong_chain_id``)."""

    def __init__(self, code: str, message: str, status: Optional[int] = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (HTTP {status})" if status else ""))
        self.code = code
        self.message = message
        self.status = status


class BadRequest(GatewayError):
    """400: a malformed or rejected request (bad hex, bad JSON, a transaction that fails its
    stateless checks: ``wrong_chain_id``, ``bad_signature``, ``malformed``, ...)."""


class NotFound(GatewayError):
    """404: no such route, job, ..."""


class PayloadTooLarge(GatewayError):
    """413: the request body is over the gateway's limit."""


class RateLimited(GatewayError):
    """429: too many requests from this client."""


class ServerError(GatewayError):
    """5xx: the node failed (``internal``) or its mempool is unavailable."""


class ConnectionFailed(GatewayError):
    """The gateway could not be reached (no HTTP response)."""


_BY_STATUS: Dict[int, Type[GatewayError]] = {
    400: BadRequest,
    404: NotFound,
    413: PayloadTooLarge,
    429: RateLimited,
}


def error_for(status: int, code: str, message: str) -> GatewayError:
    """The most specific error class for an HTTP status."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else GatewayError
    return cls(code, message, status)
