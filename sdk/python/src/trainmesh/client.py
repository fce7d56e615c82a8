"""A client of a node's HTTP gateway (``/v1``), on the standard library's urllib."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Union, cast

from .encoding import SignedTransaction, transfer
from .errors import ConnectionFailed, GatewayError, error_for
from .keys import AddressLike, Key, parse_address

Json = Dict[str, Any]


class Client:
    """``Client("http://127.0.0.1:8080")``: reads state and submits signed transactions."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._chain_id: Optional[str] = None

    # --- HTTP ------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Optional[Json] = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
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

    def _object(self, path: str) -> Json:
        return cast(Json, self._request("GET", path))

    def _list(self, path: str) -> List[Json]:
        return cast(List[Json], self._request("GET", path))

    # --- reads -----------------------------------------------------------------------------

    def status(self) -> Json:
        """Chain id, height, state root and consensus progress."""
        return self._object("/v1/status")

    def chain_id(self) -> str:
        """The node's chain id (fetched once)."""
        if self._chain_id is None:
            self._chain_id = str(self.status()["chain_id"])
        return self._chain_id

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

    # --- writes ----------------------------------------------------------------------------

    def submit(self, signed: Union[bytes, SignedTransaction]) -> str:
        """Submits a signed transaction (its encoding, or the object); returns its hash (hex).
        Acceptance means the mempool took it: it executes once consensus commits it."""
        raw = signed.encode() if isinstance(signed, SignedTransaction) else bytes(signed)
        return self.submit_hex(raw.hex())

    def submit_hex(self, transaction_hex: str) -> str:
        reply = self._request("POST", "/v1/transactions", {"transaction": transaction_hex})
        if not isinstance(reply, dict) or "tx_hash" not in reply:
            raise GatewayError("bad_reply", f"unexpected reply: {reply!r}")
        return str(reply["tx_hash"])

    def transfer(
        self,
        key: Key,
        to: AddressLike,
        amount: int,
        fee: int = 0,
        nonce: Optional[int] = None,
        chain_id: Optional[str] = None,
    ) -> str:
        """Signs and submits a transfer of ``amount`` base units (1 TRAIN = 10⁹); the nonce is
        read from the sender's account and the chain id from ``/v1/status`` unless given."""
        if nonce is None:
            nonce = self.nonce(key.address)
        if chain_id is None:
            chain_id = self.chain_id()
        return self.submit(transfer(key, chain_id, nonce, to, amount, fee))
