"""BTC payouts through a Bitcoin Core wallet over JSON-RPC (``sendtoaddress``).

Amounts travel as exact JSON numbers: the request body is built by :func:`dumps_json`, which writes
a ``Decimal`` with ``format(value, "f")`` (e.g. ``0.00256657``) instead of going through float, and
replies are parsed with ``parse_float=Decimal`` (``getblockchaininfo`` contains non-integer numbers).
"""

from __future__ import annotations

import itertools
import json
import re
from decimal import Decimal
from typing import Any, TypeAlias
from urllib.parse import quote

import httpx

from greengate.payouts.btc import (
    BtcPayoutRequest,
    BtcPayoutResult,
    PayoutError,
    sat_to_btc,
)

JsonValue: TypeAlias = "bool | int | str | Decimal | list[JsonValue] | dict[str, JsonValue] | None"

# Bitcoin Core RPC error codes (src/rpc/protocol.h).
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_WALLET_INSUFFICIENT_FUNDS = -6
RPC_WALLET_UNLOCK_NEEDED = -13
RPC_WALLET_PASSPHRASE_INCORRECT = -14
RPC_IN_WARMUP = -28

# Since v24 every transaction-building failure of sendtoaddress is reported as -6, so besides a
# low balance it also covers e.g. "amount too small to pay the fee"; none of them is retryable.
_RPC_ERROR_CODES: dict[int, str] = {
    RPC_WALLET_INSUFFICIENT_FUNDS: "insufficient_funds",
    RPC_INVALID_ADDRESS_OR_KEY: "invalid_address",
    RPC_WALLET_UNLOCK_NEEDED: "wallet_locked",
    RPC_WALLET_PASSPHRASE_INCORRECT: "wallet_locked",
}
# The node refused the call before executing it; the same call can succeed later.
_RETRYABLE_RPC_CODES = frozenset({RPC_IN_WARMUP})

_TXID = re.compile(r"[0-9a-fA-F]{64}")
# Largest confirmation target bitcoind's fee estimator accepts.
_MAX_CONF_TARGET = 1008


def dumps_json(value: JsonValue) -> str:
    """Serialize to JSON text, writing ``Decimal`` as an exact JSON number and refusing float."""
    if value is None or isinstance(value, bool | int | str):
        return json.dumps(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot encode non-finite number {value!r} as JSON")
        return format(value, "f")
    if isinstance(value, list):
        return "[" + ",".join(dumps_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(key)}:{dumps_json(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"cannot encode {type(value).__name__} as exact JSON")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} in JSON reply")


def _check_positive_int(name: str, value: int | None, maximum: int | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}")


class BitcoinCoreRpcPayout:
    """Sends payouts from a Bitcoin Core wallet.

    ``user``/``password``: RPC credentials (rpcauth or the cookie's ``__cookie__`` user); with no user
    the client's own auth settings apply. ``wallet``: name of the loaded wallet to pay from (calls go
    to ``/wallet/<name>``); None or "" uses the node's only loaded wallet. ``fee_rate_sat_vb`` and
    ``conf_target`` are mutually exclusive (bitcoind rejects both); neither means the wallet default.
    Timeouts come from ``client``; give ``sendtoaddress`` a generous read timeout because a timed-out
    send has an unknown outcome.
    """

    name: str = "bitcoin_core"
    automatic: bool = True

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        user: str | None,
        password: str | None,
        wallet: str | None = None,
        fee_rate_sat_vb: int | None = None,
        conf_target: int | None = None,
        subtract_fee: bool = False,
    ) -> None:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("url must be an absolute http(s) URL of the bitcoind RPC server")
        if user and password is None:
            raise ValueError("password is required when user is set")
        _check_positive_int("fee_rate_sat_vb", fee_rate_sat_vb)
        _check_positive_int("conf_target", conf_target, _MAX_CONF_TARGET)
        if fee_rate_sat_vb is not None and conf_target is not None:
            raise ValueError("fee_rate_sat_vb and conf_target are mutually exclusive")

        self._client = client
        self._node_url = url.rstrip("/") + "/"
        # Wallet names may contain spaces or slashes; bitcoind URL-decodes the path segment.
        self._wallet_url = self._node_url + "wallet/" + quote(wallet, safe="") if wallet else self._node_url
        self._auth: httpx.BasicAuth | None = httpx.BasicAuth(user, password or "") if user else None
        self._fee_rate_sat_vb = fee_rate_sat_vb
        self._conf_target = conf_target
        self._subtract_fee = subtract_fee
        self._ids = itertools.count(1)

    async def send(self, request: BtcPayoutRequest) -> BtcPayoutResult:
        # Named params (bitcoind >= 0.21 for fee_rate) so optional ones can simply be left out.
        params: dict[str, JsonValue] = {
            "address": request.address,
            "amount": sat_to_btc(request.amount_sat),
            "subtractfeefromamount": self._subtract_fee,
            "comment": f"greengate order {request.order_id}",
        }
        if self._conf_target is not None:
            params["conf_target"] = self._conf_target
        if self._fee_rate_sat_vb is not None:
            params["fee_rate"] = self._fee_rate_sat_vb
        result = await self._call(self._wallet_url, "sendtoaddress", params, idempotent=False)
        if not isinstance(result, str) or not _TXID.fullmatch(result):
            # The node reported success, so the BTC has most likely left the wallet.
            raise PayoutError(
                "rpc_bad_response",
                f"sendtoaddress for order {request.order_id} returned no valid txid: {result!r:.200}",
                outcome_unknown=True,
            )
        return BtcPayoutResult(txid=result.lower())

    async def get_network(self) -> str:
        """The node's chain: "main", "test", "testnet4", "signet" or "regtest"."""
        result = await self._call(self._node_url, "getblockchaininfo", [], idempotent=True)
        chain = result.get("chain") if isinstance(result, dict) else None
        if not isinstance(chain, str) or not chain:
            raise PayoutError("rpc_bad_response", "getblockchaininfo returned no chain")
        return chain

    async def _call(self, url: str, method: str, params: JsonValue, *, idempotent: bool) -> object:
        body = dumps_json({"jsonrpc": "1.0", "id": next(self._ids), "method": method, "params": params})
        try:
            response = await self._client.post(
                url,
                content=body.encode("ascii"),  # json.dumps escapes non-ASCII
                headers={"Content-Type": "application/json"},
                auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing was sent to the node.
            raise PayoutError(
                "rpc_unreachable", f"{method}: cannot connect to bitcoind: {exc!r}", retryable=True
            ) from exc
        except httpx.RequestError as exc:
            # The request may have been executed, and for sendtoaddress a retry could pay twice.
            raise PayoutError(
                "rpc_unreachable",
                f"{method}: no reply from bitcoind: {exc!r}",
                retryable=idempotent,
                outcome_unknown=not idempotent,
            ) from exc
        return self._parse_reply(method, response, idempotent=idempotent)

    @staticmethod
    def _parse_reply(method: str, response: httpx.Response, *, idempotent: bool) -> object:
        status = response.status_code
        if status in (401, 403):
            # bitcoind answers bad credentials with an empty 401 and disallowed IPs with 403.
            raise PayoutError("rpc_auth", f"{method}: bitcoind rejected the credentials (HTTP {status})")
        try:
            reply = json.loads(response.content, parse_float=Decimal, parse_constant=_reject_constant)
        except ValueError:
            reply = None
        # JSON-RPC 1.0 errors come with HTTP 500 (404 for unknown methods) and a JSON body.
        if isinstance(reply, dict) and reply.get("error") is not None:
            raise _rpc_error(method, reply["error"])
        if status == 200 and isinstance(reply, dict) and "result" in reply:
            return reply["result"]
        snippet = response.text[:200]
        if status == 503:
            # bitcoind's "Work queue depth exceeded": the call was rejected without running.
            raise PayoutError("rpc_error", f"{method}: bitcoind busy (HTTP 503): {snippet!r}", retryable=True)
        if 400 <= status < 500:
            raise PayoutError("rpc_error", f"{method}: HTTP {status} from bitcoind: {snippet!r}")
        raise PayoutError(
            "rpc_bad_response",
            f"{method}: unexpected reply (HTTP {status}): {snippet!r}",
            retryable=idempotent,
            outcome_unknown=not idempotent,
        )


def _rpc_error(method: str, error: object) -> PayoutError:
    if isinstance(error, dict):
        raw_code = error.get("code")
        rpc_code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
        message = str(error.get("message", ""))
    else:
        rpc_code, message = None, str(error)
    if rpc_code is None:
        code = "rpc_error"
    else:
        code = _RPC_ERROR_CODES.get(rpc_code, "rpc_error")
    return PayoutError(
        code,
        f"{method}: bitcoind error {rpc_code}: {message[:500]}",
        retryable=rpc_code in _RETRYABLE_RPC_CODES,
        rpc_code=rpc_code,
    )
