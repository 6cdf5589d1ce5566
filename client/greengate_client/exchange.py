"""Exchange API (`/api/v2`): directions, creating, checking and canceling orders.

`ExchangeClient` blocks, `AsyncExchangeClient` awaits; both run the same operations (see `calls`).
"""

from __future__ import annotations

import email.utils
import json
import random
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict

from greengate_client.calls import (
    AsyncClientBase,
    AsyncDriver,
    Flow,
    Send,
    Sleep,
    SyncClientBase,
    SyncDriver,
    operation,
)
from greengate_client.errors import ExchangeApiError, ProtocolError

WIRE_TIME = "%Y-%m-%d %H:%M:%S"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def _wire_time(value: Any) -> Any:
    if isinstance(value, str):
        return datetime.strptime(value, WIRE_TIME).replace(tzinfo=UTC)
    return value


def _decimal(value: Any) -> Any:
    if isinstance(value, (int, str, Decimal)):
        return Decimal(value)
    return value


WireTime = Annotated[datetime, BeforeValidator(_wire_time)]
Amount = Annotated[Decimal, BeforeValidator(_decimal)]
OrderStatus = Literal["unconfirmed", "awaiting", "payed", "completed", "autocanceled", "canceled"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Direction(_Model):
    id: int
    status: int
    order_ttl: int
    min_amount: Amount
    max_amount: Amount
    comission_percent: Amount
    fullname: str
    current_course: Amount | None
    payment_method: str

    @property
    def enabled(self) -> bool:
        return self.status == 1


class Order(_Model):
    order_id: str
    exchange_rate: Amount
    amount_payable: Amount
    amount_receivable: Amount
    wallet_payment: str
    clients_wallet: str
    created_at: WireTime
    updated_at: WireTime
    order_status: OrderStatus
    expires_at: WireTime
    fast_link: str


class CancelItem(_Model):
    order_id: str
    order_status: str
    error: str | None = None


class CancelResult(_Model):
    canceled: list[CancelItem]
    failed: list[CancelItem]


class RetryPolicy(_Model):
    """Retries of a create: `attempts` in all, backoff `base × 2^n` (capped, with jitter) unless the
    server names a `Retry-After`."""

    attempts: int = 5
    base_seconds: float = 0.5
    max_seconds: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_seconds)
        backoff = min(self.base_seconds * 2**attempt, self.max_seconds)
        return backoff / 2 + random.uniform(0, backoff / 2)


def retry_after_seconds(response: httpx.Response, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date), or None."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def _json(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content, parse_float=Decimal)
    except ValueError:
        raise ProtocolError(f"HTTP {response.status_code}: the answer is not JSON") from None


def _raise_for_error(response: httpx.Response) -> Any:
    if response.status_code != 200 and not response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        # a proxy's or load balancer's page, not the gateway's error shape
        raise ExchangeApiError(response.status_code, "http_error", response.text[:200])
    data = _json(response)
    if response.status_code == 200:
        return data
    if isinstance(data, dict) and "code" in data:
        raise ExchangeApiError(response.status_code, str(data["code"]), str(data.get("error", "")))
    raise ExchangeApiError(response.status_code, "http_error", response.text[:200])


def _ids(ids: Iterable[str | int] | str | int) -> list[str]:
    if isinstance(ids, (str, int)):
        return [str(ids)]
    return [str(i) for i in ids]


class _ExchangeOperations:
    """The Exchange API's operations, written once for both clients."""

    retry: RetryPolicy

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Send:
        return Send(
            "POST",
            path,
            {**self._headers(), "Content-Type": "application/json", **(headers or {})},
            json.dumps(body).encode(),
        )

    def _send(self, request: Send) -> Flow[Any]:
        """The answer's JSON, after retrying network errors, 5xx, 429 and 409 (the same idempotency
        key still running) with backoff or the server's `Retry-After`. Every Exchange API call may be
        repeated safely: reads change nothing, cancel is idempotent, create carries its key."""
        attempt = 0
        while True:
            try:
                response = yield request
            except httpx.TransportError:
                if attempt + 1 >= self.retry.attempts:
                    raise
                yield Sleep(self.retry.delay(attempt, None))
                attempt += 1
                continue
            if response.status_code in RETRY_STATUSES | {409} and attempt + 1 < self.retry.attempts:
                yield Sleep(self.retry.delay(attempt, retry_after_seconds(response)))
                attempt += 1
                continue
            return _raise_for_error(response)

    @operation
    def directions(self) -> Flow[list[Direction]]:
        """Directions visible to this client, with the rate an order created now would lock."""
        data = yield from self._send(Send("GET", "/api/v2/directions", self._headers()))
        return [Direction.model_validate(item) for item in data]

    @operation
    def create_order(
        self,
        payment_method: str,
        wallet: str,
        from_amount: Decimal | str | int,
        *,
        idempotency_key: str | None = None,
    ) -> Flow[Order]:
        """Create an order. Retried on network errors, 5xx and 429 with the same `Idempotency-Key`
        (generated when none is given), so a retry never creates a second order."""
        if isinstance(from_amount, float):
            raise TypeError("from_amount must be a Decimal, str or int, never a float")
        key = idempotency_key or str(uuid.uuid4())
        request = self._post(
            "/api/v2/order/create",
            {"payment_method": payment_method, "wallet": wallet, "from_amount": str(from_amount)},
            {"Idempotency-Key": key},
        )
        data = yield from self._send(request)
        return Order.model_validate(data["items"][0])

    @operation
    def check_orders(self, ids: Iterable[str | int] | str | int) -> Flow[list[Order]]:
        """This client's orders among `ids`; unknown ids and other clients' orders are absent."""
        data = yield from self._send(self._post("/api/v2/order/check", {"order_id": _ids(ids)}))
        return [Order.model_validate(item) for item in data["data"]["orders"]]

    @operation
    def cancel_orders(self, ids: Iterable[str | int] | str | int) -> Flow[CancelResult]:
        """Cancel those of the orders still `unconfirmed` or `awaiting`; the others come back as failed."""
        data = (yield from self._send(self._post("/api/v2/order/cancel", {"order_id": _ids(ids)})))["data"]
        return CancelResult.model_validate({"canceled": data["cancel"], "failed": data["failed"]})


class ExchangeClient(_ExchangeOperations, SyncClientBase):
    """Blocking Exchange API client. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str,
        api_secret: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.api_secret = api_secret
        self.retry = retry or RetryPolicy()
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout)
        self._driver = SyncDriver(self._http)

    def _headers(self) -> dict[str, str]:
        return {"Api-Secret": self.api_secret, "Accept": "application/json"}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ExchangeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncExchangeClient(_ExchangeOperations, AsyncClientBase):
    """The same client for asyncio: every call is awaited."""

    def __init__(
        self,
        base_url: str,
        api_secret: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.api_secret = api_secret
        self.retry = retry or RetryPolicy()
        self._http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self._driver = AsyncDriver(self._http)

    def _headers(self) -> dict[str, str]:
        return {"Api-Secret": self.api_secret, "Accept": "application/json"}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncExchangeClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
