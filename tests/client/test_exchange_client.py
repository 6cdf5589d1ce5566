"""The Exchange API client (sync and async) against a running gateway: every call, typed answers,
wire errors as exceptions, and creates retried safely through a proxy that loses answers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from greengate_client import (
    AsyncExchangeClient,
    ExchangeApiError,
    ExchangeClient,
    Order,
    RetryPolicy,
)
from greengate_client.calls import Send, Sleep
from greengate_client.exchange import _ExchangeOperations, retry_after_seconds
from sqlalchemy import func, select

from greengate.runtime import Runtime
from greengate.store.models import ExchangeOrder
from tests.client.conftest import Gateway
from tests.support.exchange import WALLET, Client, make_client, make_direction, make_requisites

FAST = RetryPolicy(attempts=4, base_seconds=0.01, max_seconds=0.05)


@pytest.fixture
async def office(rt: Runtime) -> Client:
    await make_direction(rt)
    await make_requisites(rt, 3)
    return await make_client(rt)


@pytest.fixture
def client(gateway: Gateway, office: Client) -> Iterator[ExchangeClient]:
    with ExchangeClient(gateway.url, office.api_secret, retry=FAST) as c:
        yield c


async def orders_in_db(rt: Runtime) -> int:
    async with rt.db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(ExchangeOrder)) or 0)


def test_directions_are_typed_with_exact_decimals(client: ExchangeClient) -> None:
    [direction] = client.directions()
    assert direction.payment_method == "card"
    assert direction.enabled
    assert direction.min_amount == Decimal("300")
    assert direction.comission_percent == Decimal("17")
    assert direction.current_course == Decimal("3233561.44")
    assert isinstance(direction.current_course, Decimal)


def test_create_check_and_cancel_an_order(client: ExchangeClient) -> None:
    order = client.create_order("card", WALLET, Decimal("9999"))
    assert isinstance(order, Order)
    assert order.order_status == "awaiting"
    assert order.amount_payable == Decimal("9999")
    assert order.amount_receivable == Decimal("0.00256657")
    assert order.exchange_rate == Decimal("3233561.44")
    assert order.created_at.tzinfo is UTC
    assert order.expires_at > order.created_at
    assert order.wallet_payment.startswith("22007001")

    [checked] = client.check_orders([order.order_id, "999999"])
    assert checked.order_id == order.order_id
    assert checked.order_status == "awaiting"

    result = client.cancel_orders(order.order_id)
    assert [(c.order_id, c.order_status) for c in result.canceled] == [(order.order_id, "canceled")]
    assert result.failed == []
    again = client.cancel_orders([order.order_id])
    assert [(f.order_id, f.order_status) for f in again.failed] == [(order.order_id, "canceled")]
    assert again.failed[0].error


async def test_async_client_makes_the_same_calls(gateway: Gateway, office: Client) -> None:
    async with AsyncExchangeClient(gateway.url, office.api_secret, retry=FAST) as client:
        [direction] = await client.directions()
        order = await client.create_order(direction.payment_method, WALLET, "5000", idempotency_key="a-1")
        assert order.amount_payable == Decimal("5000")
        assert [o.order_id for o in await client.check_orders([order.order_id])] == [order.order_id]
        result = await client.cancel_orders([int(order.order_id)])
        assert [c.order_status for c in result.canceled] == ["canceled"]


def test_a_given_idempotency_key_returns_the_first_order(client: ExchangeClient, rt: Runtime) -> None:
    first = client.create_order("card", WALLET, "9999", idempotency_key="order-42")
    second = client.create_order("card", WALLET, "9999", idempotency_key="order-42")
    assert second == first
    with pytest.raises(ExchangeApiError) as refused:
        client.create_order("card", WALLET, "10000", idempotency_key="order-42")
    assert refused.value.status == 422
    assert refused.value.code == "idempotency_mismatch"


def test_wire_errors_carry_code_error_and_status(gateway: Gateway, client: ExchangeClient) -> None:
    with pytest.raises(ExchangeApiError) as bad_wallet:
        client.create_order("card", "not-a-wallet", "9999")
    assert bad_wallet.value.status == 422
    assert bad_wallet.value.code == "invalid_wallet"
    assert "wallet" in bad_wallet.value.error

    with pytest.raises(ExchangeApiError) as too_small:
        client.create_order("card", WALLET, "1")
    assert (too_small.value.status, too_small.value.code) == (422, "amount_out_of_range")

    with ExchangeClient(gateway.url, "gg_wrong") as stranger, pytest.raises(ExchangeApiError) as denied:
        stranger.directions()
    assert (denied.value.status, denied.value.code) == (401, "invalid_api_secret")


def test_floats_are_refused_before_anything_is_sent(client: ExchangeClient) -> None:
    with pytest.raises(TypeError):
        client.create_order("card", WALLET, 99.99)  # type: ignore[arg-type]


# --- retries ---------------------------------------------------------------------------------------


class Proxy:
    """Forwards requests to the gateway; `fault(n, path)` decides what happens to the n-th request to a
    path: None forwards it, "drop" forwards it and then closes the connection without an answer (the
    gateway acted, the client never hears), an int answers that status without forwarding."""

    def __init__(self, target: str, fault: Callable[[int, str], Any]) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        proxy = self
        counts: dict[str, int] = {}
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                skip = ("host", "content-length")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                with lock:
                    counts[self.path] = counts.get(self.path, 0) + 1
                    n = counts[self.path]
                    proxy.seen.append((self.path, {k.lower(): v for k, v in headers.items()}))
                action = fault(n, self.path)
                if isinstance(action, int):
                    payload = b'{"response":"error","result":"false","error":"busy","code":"busy"}'
                    self.send_response(action)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = httpx.request(self.command, target + self.path, headers=headers, content=body)
                if action == "drop":
                    self.close_connection = True
                    return
                self.send_response(upstream.status_code)
                self.send_header("Content-Type", upstream.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> Proxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


CREATE = "/api/v2/order/create"


async def test_a_create_whose_answer_is_lost_is_retried_into_the_same_order(
    gateway: Gateway, office: Client, rt: Runtime
) -> None:
    def drop_first_create(n: int, path: str) -> Any:
        return "drop" if path == CREATE and n == 1 else None

    with Proxy(gateway.url, drop_first_create) as proxy:
        with ExchangeClient(proxy.url, office.api_secret, retry=FAST) as client:
            order = client.create_order("card", WALLET, "9999")
            [checked] = client.check_orders([order.order_id])
    creates = [headers for path, headers in proxy.seen if path == CREATE]
    assert len(creates) == 2
    assert creates[0]["idempotency-key"] == creates[1]["idempotency-key"]
    assert len(creates[0]["idempotency-key"]) >= 32
    assert checked.order_id == order.order_id
    assert await orders_in_db(rt) == 1


async def test_async_create_retries_after_5xx_and_429(gateway: Gateway, office: Client, rt: Runtime) -> None:
    def busy_twice(n: int, path: str) -> Any:
        return {1: 503, 2: 429}.get(n) if path == CREATE else None

    with Proxy(gateway.url, busy_twice) as proxy:
        async with AsyncExchangeClient(proxy.url, office.api_secret, retry=FAST) as client:
            order = await client.create_order("card", WALLET, "9999", idempotency_key="k-503")
    assert [p for p, _ in proxy.seen].count(CREATE) == 3
    assert order.order_status == "awaiting"
    assert await orders_in_db(rt) == 1


def test_reads_and_cancels_are_retried_after_a_lost_answer(gateway: Gateway, office: Client) -> None:
    def drop_first(n: int, path: str) -> Any:
        return "drop" if n == 1 else None

    with Proxy(gateway.url, drop_first) as proxy:
        with ExchangeClient(proxy.url, office.api_secret, retry=FAST) as client:
            [direction] = client.directions()
            order = client.create_order(direction.payment_method, WALLET, "9999")
            [checked] = client.check_orders([order.order_id])
            result = client.cancel_orders([order.order_id])
    assert checked.order_status == "awaiting"
    # the first cancel went through though its answer was lost; the retry finds the order canceled
    assert [(f.order_id, f.order_status) for f in result.failed] == [(order.order_id, "canceled")]
    assert [p for p, _ in proxy.seen] == [
        path
        for path in ("/api/v2/directions", CREATE, "/api/v2/order/check", "/api/v2/order/cancel")
        for _ in "12"
    ]


def test_retries_stop_after_the_policy_s_attempts(gateway: Gateway, office: Client) -> None:
    with Proxy(gateway.url, lambda n, path: 503) as proxy:
        with ExchangeClient(proxy.url, office.api_secret, retry=FAST) as client:
            with pytest.raises(ExchangeApiError) as failed:
                client.create_order("card", WALLET, "9999")
    assert failed.value.status == 503
    assert len(proxy.seen) == FAST.attempts


def test_retry_after_is_honoured_and_backoff_grows() -> None:
    policy = RetryPolicy(attempts=3, base_seconds=1.0, max_seconds=60.0)
    flow = ExchangeClient.create_order.flow(_Bare(policy), "card", WALLET, "9999")
    request = next(flow)
    assert isinstance(request, Send)
    key = request.headers["Idempotency-Key"]
    busy = httpx.Response(429, headers={"Retry-After": "7"}, json={"code": "rate_limited", "error": "x"})
    assert flow.send(busy) == Sleep(7.0)
    assert flow.send(None).headers["Idempotency-Key"] == key
    pause = flow.throw(httpx.ConnectError("refused"))
    assert isinstance(pause, Sleep) and 1.0 <= pause.seconds <= 2.0  # base × 2, half of it jitter
    assert flow.send(None) == request
    with pytest.raises(httpx.ConnectError):
        flow.throw(httpx.ConnectError("still refused"))


def test_a_non_json_error_page_still_raises_with_the_status() -> None:
    flow = ExchangeClient.directions.flow(_Bare(RetryPolicy(attempts=1)))
    next(flow)
    page = httpx.Response(502, headers={"Content-Type": "text/html"}, content=b"<html>Bad gateway</html>")
    with pytest.raises(ExchangeApiError) as failed:
        flow.send(page)
    assert (failed.value.status, failed.value.code) == (502, "http_error")
    assert "Bad gateway" in failed.value.error


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
    dated = httpx.Response(503, headers={"Retry-After": "Thu, 03 Dec 2026 12:00:30 GMT"})
    assert retry_after_seconds(dated, now) == 30.0
    assert retry_after_seconds(httpx.Response(503, headers={"Retry-After": "soon"}), now) is None


class _Bare(_ExchangeOperations):
    """The operations without a driver, to step a create's flow by hand."""

    def __init__(self, retry: RetryPolicy) -> None:
        self.retry = retry

    def _headers(self) -> dict[str, str]:
        return {"Api-Secret": "s"}
