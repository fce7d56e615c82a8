"""Errors: what the gateway refuses (a JSON body ``{"code", "message"}`` and an HTTP status), what
the ledger rejects when it executes a transaction (a receipt with an error code), and what the SDK
itself detects (a job that failed, a wait that timed out, a corrupted download).

A gateway error maps to a class by its code first (``bad_signature`` → :class:`InvalidSignature`),
then by its HTTP status (400 → :class:`BadRequest`). A transaction the ledger executed and rejected
raises a :class:`TransactionRejected` that is also the class of its code, so
``except InsufficientBalance`` catches the dry run's refusal and the receipt's rejection alike.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple, Type


class TrainmeshError(Exception):
    """The base of every error the SDK raises."""


class GatewayError(TrainmeshError):
    """A gateway error: ``code`` is the gateway's stable code (e.g. ``wrong_chain_id``)."""

    def __init__(self, code: str, message: str, status: Optional[int] = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (HTTP {status})" if status else ""))
        self.code = code
        self.message = message
        self.status = status


class BadRequest(GatewayError):
    """400: a malformed or rejected request (bad hex, bad JSON, a transaction that fails its
    stateless checks: ``wrong_chain_id``, ``bad_signature``, ``malformed``, ...)."""


class InvalidSignature(BadRequest):
    """``bad_signature``: the signature does not verify against the sender's key."""


class WrongChain(BadRequest):
    """``wrong_chain_id``: the transaction was signed for another chain."""


class FeeTooLow(BadRequest):
    """``fee_too_low``: the fee is below the chain's minimum (``Client.min_fee()``)."""


class Expired(BadRequest):
    """``expired``: the transaction's expiry passed before it could execute; sign it anew."""


class InvalidSpec(BadRequest):
    """``bad_spec``: the GPU engine refuses the job's model spec, or the contracts refuse the job
    or dataset spec (zero budget, deadline passed, no shards, ...)."""


class InvalidShard(BadRequest):
    """``bad_shard`` / ``bad_manifest``: an uploaded shard or manifest does not decode or check."""


class PaymentRequired(GatewayError):
    """402: the sender cannot pay."""


class InsufficientBalance(PaymentRequired):
    """``insufficient_balance``: the sender cannot pay the fee, amount, budget or bond."""


class Unauthorized(GatewayError):
    """401: the request must be signed (``signature_required``), its signature does not check
    (``bad_signature``) or it was signed too long ago (``stale_request``)."""


class Forbidden(GatewayError):
    """403: signed by an account that may not have it (``not_owner``: a job's weights go to its
    owner)."""


class NotFound(GatewayError):
    """404: no such route, job, dataset, ..."""


class UnknownTransaction(NotFound):
    """``unknown_transaction``: no receipt for this hash (not executed yet, or never)."""


class UnknownShard(NotFound):
    """``unknown_shard``: a manifest names a shard this node does not hold."""


class Conflict(GatewayError):
    """409: the request conflicts with the current state."""


class NonceReplayed(Conflict):
    """``nonce_replayed``: the account already used this nonce."""


class NoWeightsYet(Conflict):
    """``no_weights_yet``: no unit of the job is certified yet."""


class PayloadTooLarge(GatewayError):
    """413: the request body is over the gateway's limit."""


class RateLimited(GatewayError):
    """429: too many requests from this client."""


class ServerError(GatewayError):
    """5xx: the node failed (``internal``), its mempool is unavailable, storage is full, ..."""


class ConnectionFailed(GatewayError):
    """The gateway could not be reached (no HTTP response)."""


class TransactionRejected(GatewayError):
    """The ledger executed the transaction and rejected it: its receipt carries the error's
    ``code`` (instances are also of the code's class, e.g. :class:`InsufficientBalance`)."""

    def __init__(
        self,
        code: str,
        message: str,
        tx_hash: str = "",
        height: Optional[int] = None,
        receipt: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(code, message, None)
        self.tx_hash = tx_hash
        self.height = height
        self.receipt: Dict[str, Any] = dict(receipt or {})

    def __str__(self) -> str:
        where = f" at height {self.height}" if self.height is not None else ""
        return f"transaction {self.tx_hash[:16]} rejected{where}: {self.code}: {self.message}"


class JobFailed(TrainmeshError):
    """The job ended in a state other than completed (``Exhausted``: every step ran without
    reaching the target; ``Expired``: the deadline passed). ``body`` is the final job."""

    def __init__(self, job_id: int, state: str, body: Mapping[str, Any]) -> None:
        job = body.get("job", {})
        metric = job.get("latest_metric_ppm")
        super().__init__(
            f"job {job_id} ended {state.lower()}: {job.get('units_done')} of "
            f"{job.get('units_total')} units certified, held-out metric "
            + (f"{metric / 1e6:.4f}" if isinstance(metric, int) else "none")
        )
        self.job_id = job_id
        self.state = state
        self.body: Dict[str, Any] = dict(body)


class WaitTimeout(TrainmeshError, TimeoutError):
    """A wait (for a receipt, a job) passed its deadline."""


class ChecksumMismatch(TrainmeshError):
    """Downloaded or uploaded bytes do not hash to what the network committed to."""


_BY_CODE: Dict[str, Type[GatewayError]] = {
    "bad_signature": InvalidSignature,
    "wrong_chain_id": WrongChain,
    "bad_spec": InvalidSpec,
    "bad_shard": InvalidShard,
    "bad_manifest": InvalidShard,
    "insufficient_balance": InsufficientBalance,
    "unknown_transaction": UnknownTransaction,
    "unknown_shard": UnknownShard,
    "nonce_replayed": NonceReplayed,
    "fee_too_low": FeeTooLow,
    "expired": Expired,
    "no_weights_yet": NoWeightsYet,
    "body_too_large": PayloadTooLarge,
    "rate_limited": RateLimited,
    "not_found": NotFound,
}

_BY_STATUS: Dict[int, Type[GatewayError]] = {
    400: BadRequest,
    401: Unauthorized,
    402: PaymentRequired,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
}


def error_for(status: int, code: str, message: str) -> GatewayError:
    """The most specific error class for a gateway error: by code, then by HTTP status."""
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else GatewayError
    return cls(code, message, status)


_REJECTED: Dict[Type[GatewayError], Type[TransactionRejected]] = {}


def _rejected_class(base: Type[GatewayError]) -> Type[TransactionRejected]:
    cls = _REJECTED.get(base)
    if cls is None:
        bases: Tuple[type, ...] = (TransactionRejected, base)
        cls = type(f"{base.__name__}Rejected", bases, {"__module__": __name__})
        _REJECTED[base] = cls
    return cls


def rejection(receipt: Mapping[str, Any]) -> TransactionRejected:
    """The error of a rejected receipt (``{"status": "rejected", "error": {"code", ...}}``)."""
    err = receipt.get("error") or {}
    code = str(err.get("code", "rejected"))
    message = str(err.get("message", ""))
    base = _BY_CODE.get(code)
    cls = _rejected_class(base) if base is not None else TransactionRejected
    height = receipt.get("height")
    return cls(
        code,
        message,
        str(receipt.get("tx_hash", "")),
        int(height) if isinstance(height, int) else None,
        receipt,
    )
