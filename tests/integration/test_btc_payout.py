"""Completing payed orders by sending BTC through a (local, emulated) bitcoind JSON-RPC wallet."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from greengate.app import create_app
from greengate.clock import utcnow
from greengate.domain.errors import DomainError
from greengate.runtime import Runtime
from greengate.services.btc_payouts import pay_out_order
from greengate.services.exchange_orders import confirm_paid
from greengate.store.models import BtcPayoutSend, ExchangeOrder, OrderEvent
from tests.conftest import make_settings
from tests.support.exchange import WALLET, check, create_order, make_client, make_direction, make_requisites
from tests.support.servers import LocalServer, Recorded, Reply

TXID = "6f2c1b3a9d8e7f60514233241506f7e8d9c0b1a2f3e4d5c6b7a8998877665544"


class Bitcoind:
    """Answers `sendtoaddress` the way bitcoind does: a txid, or an RPC error with HTTP 500."""

    def __init__(self) -> None:
        self.balance = Decimal("1.5")
        self.server = LocalServer(self.respond)

    def respond(self, request: Recorded) -> Reply:
        call = json.loads(request.body, parse_float=Decimal)
        if call["method"] != "sendtoaddress":
            return Reply.json({"result": None, "error": {"code": -32601, "message": "Method not found"}}, 404)
        if call["params"]["amount"] > self.balance:
            error = {"code": -6, "message": "Insufficient funds"}
            return Reply.json({"result": None, "error": error, "id": call["id"]}, status=500)
        self.balance -= call["params"]["amount"]
        return Reply.json({"result": TXID, "error": None, "id": call["id"]})

    @property
    def calls(self) -> list[Recorded]:
        return self.server.received()


@pytest.fixture
def bitcoind() -> Iterator[Bitcoind]:
    node = Bitcoind()
    with node.server:
        yield node


@asynccontextmanager
async def start_app(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            c.app = app  # type: ignore[attr-defined]
            yield c


@pytest.fixture
async def client(
    database_url: str, tmp_path: Path, clean_db: None, bitcoind: Bitcoind
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        database_url,
        tmp_path,
        btc_payout_backend="bitcoin_core",
        bitcoin_rpc_url=bitcoind.server.url,
        bitcoin_rpc_user="gateway",
        bitcoin_rpc_password="s3cret",
        bitcoin_rpc_wallet="payouts",
    )
    async with start_app(settings) as c:
        yield c


@pytest.fixture
async def manual_client(
    database_url: str, tmp_path: Path, clean_db: None
) -> AsyncIterator[httpx.AsyncClient]:
    async with start_app(make_settings(database_url, tmp_path, btc_payout_backend="manual")) as c:
        yield c


def runtime(client: httpx.AsyncClient) -> Runtime:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return rt


async def orders(client: httpx.AsyncClient, n: int, *, pay: bool = True) -> tuple[Any, list[int]]:
    rt = runtime(client)
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, n)
    ids = []
    for _ in range(n):
        response = await create_order(client, who, "9999")
        assert response.status_code == 200, response.text
        ids.append(int(response.json()["items"][0]["order_id"]))
    if pay:
        async with rt.db.transaction() as session:
            for order_id in ids:
                await confirm_paid(session, rt, order_id, now=utcnow(), actor="test")
    return who, ids


async def test_payout_sends_the_exact_amount_and_completes_the_order(
    client: httpx.AsyncClient, bitcoind: Bitcoind
) -> None:
    rt = runtime(client)
    who, (order_id,) = await orders(client, 1)

    outcome = await pay_out_order(rt, order_id, actor="operator:test")

    assert outcome == f"completed txid={TXID}"
    (call,) = bitcoind.calls
    assert call.method == "POST" and call.path == "/wallet/payouts"
    assert call.headers["authorization"] == "Basic " + base64.b64encode(b"gateway:s3cret").decode()
    assert b'"amount":0.00256657' in call.body  # an exact JSON number, 8 decimals, never a float
    params = json.loads(call.body, parse_float=Decimal)["params"]
    assert params["address"] == WALLET
    assert params["amount"] == Decimal("0.00256657")
    assert str(order_id) in params["comment"]
    (order,) = await check(client, who, [order_id])
    assert order["order_status"] == "completed"
    async with rt.db.transaction() as session:
        row = await session.get(ExchangeOrder, order_id)
        event = await session.scalar(
            select(OrderEvent).where(OrderEvent.order_id == order_id, OrderEvent.to_status == "completed")
        )
    assert row is not None and row.txid == TXID and row.completed_at is not None
    assert event is not None and event.actor == "operator:test" and TXID in event.note

    # A second payout of the same order is refused without calling the node again.
    with pytest.raises(DomainError) as second:
        await pay_out_order(rt, order_id, actor="operator:test")
    assert second.value.code == "not_payable"
    assert len(bitcoind.calls) == 1


async def test_insufficient_funds_leaves_the_order_payed(
    client: httpx.AsyncClient, bitcoind: Bitcoind
) -> None:
    rt = runtime(client)
    who, (order_id,) = await orders(client, 1)
    bitcoind.balance = Decimal("0.001")

    with pytest.raises(DomainError) as failed:
        await pay_out_order(rt, order_id, actor="operator:test")

    assert failed.value.code == "payout_insufficient_funds"
    assert "Insufficient funds" in failed.value.message
    assert len(bitcoind.calls) == 1
    (order,) = await check(client, who, [order_id])
    assert order["order_status"] == "payed"
    async with rt.db.transaction() as session:
        row = await session.get(ExchangeOrder, order_id)
    assert row is not None and row.txid is None

    bitcoind.balance = Decimal("1")  # funds arrive; the operator retries
    assert await pay_out_order(rt, order_id, actor="operator:test") == f"completed txid={TXID}"


async def test_a_lost_reply_says_the_payout_may_have_been_sent(
    database_url: str, tmp_path: Path, clean_db: None, bitcoind: Bitcoind
) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        btc_payout_backend="bitcoin_core",
        bitcoin_rpc_url=bitcoind.server.url,
        callback_timeout_seconds=0.3,
    )
    original = bitcoind.respond
    bitcoind.server.respond = lambda request: Reply(**{**vars(original(request)), "delay": 1.0})
    async with start_app(settings) as client:
        rt = runtime(client)
        who, (order_id,) = await orders(client, 1)

        with pytest.raises(DomainError) as lost:
            await pay_out_order(rt, order_id, actor="operator:test")

        assert lost.value.code == "payout_rpc_unreachable"
        assert "may have been sent" in lost.value.message
        assert len(bitcoind.calls) == 1
        assert (await check(client, who, [order_id]))[0]["order_status"] == "payed"

        # The node may have sent: another payout is refused until the operator has checked the wallet.
        with pytest.raises(DomainError) as again:
            await pay_out_order(rt, order_id, actor="operator:test")
        assert again.value.code == "payout_in_progress" and "unknown outcome" in again.value.message
        assert len(bitcoind.calls) == 1

        bitcoind.server.respond = original  # the wallet shows nothing sent; the node answers again
        outcome = await pay_out_order(rt, order_id, actor="operator:test", wallet_checked=True)
        assert outcome == f"completed txid={TXID}"
        assert len(bitcoind.calls) == 2
        async with rt.db.transaction() as session:
            send = await session.get(BtcPayoutSend, order_id)
        assert send is not None and send.state == "sent"


async def test_the_order_is_not_locked_while_the_node_is_called(
    client: httpx.AsyncClient, bitcoind: Bitcoind
) -> None:
    rt = runtime(client)
    who, (order_id,) = await orders(client, 1)
    release = threading.Event()
    original = bitcoind.respond

    def held(request: Recorded) -> Reply:
        release.wait(30)
        return original(request)

    bitcoind.server.respond = held
    first = asyncio.create_task(pay_out_order(rt, order_id, actor="operator:first"))
    try:
        await asyncio.to_thread(bitcoind.server.wait_for, lambda seen: len(seen) == 1)

        # With the node's answer outstanding, the order's row is free: a second payout reads the
        # recorded send at once and is refused, instead of queueing behind a lock held across the call.
        with pytest.raises(DomainError) as second:
            await pay_out_order(rt, order_id, actor="operator:second")
        assert second.value.code == "payout_in_progress" and "under way" in second.value.message
        assert "operator:first" in second.value.message
        assert (await check(client, who, [order_id]))[0]["order_status"] == "payed"
    finally:
        release.set()
    assert await first == f"completed txid={TXID}"
    assert len(bitcoind.calls) == 1
    assert (await check(client, who, [order_id]))[0]["order_status"] == "completed"


async def test_only_payed_orders_are_paid_out(client: httpx.AsyncClient, bitcoind: Bitcoind) -> None:
    rt = runtime(client)
    who, (order_id,) = await orders(client, 1, pay=False)

    with pytest.raises(DomainError) as refused:
        await pay_out_order(rt, order_id, actor="operator:test")
    assert refused.value.code == "not_payable" and "awaiting" in refused.value.message
    with pytest.raises(DomainError) as unknown:
        await pay_out_order(rt, 987654321, actor="operator:test")
    assert unknown.value.code == "order_not_found"

    assert bitcoind.calls == []
    assert (await check(client, who, [order_id]))[0]["order_status"] == "awaiting"


async def test_manual_backend_refuses_automatic_payouts(manual_client: httpx.AsyncClient) -> None:
    rt = runtime(manual_client)
    who, (order_id,) = await orders(manual_client, 1)

    with pytest.raises(DomainError) as manual:
        await pay_out_order(rt, order_id, actor="operator:test")

    assert manual.value.code == "manual_payout"
    assert "greengate order complete" in manual.value.message
    assert (await check(manual_client, who, [order_id]))[0]["order_status"] == "payed"
