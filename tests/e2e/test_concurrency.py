"""Concurrent requests against one database: allocation, cancel/pay races and idempotency keys."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from greengate.clock import utcnow
from greengate.domain.errors import DomainError
from greengate.runtime import Runtime
from greengate.services.exchange_orders import confirm_paid
from greengate.store.models import ExchangeOrder, OrderEvent
from tests.conftest import is_postgres
from tests.support.exchange import WALLET, Client, create_order, make_client, make_direction, make_requisites
from tests.support.processes import Processes

N = 50


async def create_many(client: httpx.AsyncClient, who: Client, n: int = N) -> list[dict[str, Any]]:
    responses = await asyncio.gather(*(create_order(client, who, "9999") for _ in range(n)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    return [r.json()["items"][0] for r in responses]


async def open_pairs(rt: Runtime) -> list[tuple[int | None, int]]:
    async with rt.db.transaction() as session:
        rows = await session.execute(
            select(ExchangeOrder.requisite_id, ExchangeOrder.amount_payable).where(
                ExchangeOrder.status == "awaiting"
            )
        )
        return [(r[0], r[1]) for r in rows]


async def status_counts(rt: Runtime) -> Counter[str]:
    async with rt.db.transaction() as session:
        return Counter(await session.scalars(select(ExchangeOrder.status)))


def assert_exclusive_allocation(orders: list[dict[str, Any]], requisites: int) -> None:
    awaiting = [o for o in orders if o["order_status"] == "awaiting"]
    unconfirmed = [o for o in orders if o["order_status"] == "unconfirmed"]
    assert len(awaiting) == requisites
    assert len(unconfirmed) == len(orders) - requisites
    assert len({o["wallet_payment"] for o in awaiting}) == requisites
    assert all(o["wallet_payment"] == "" for o in unconfirmed)
    assert len({o["order_id"] for o in orders}) == len(orders)


async def test_simultaneous_creates_never_share_a_requisite(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    requisites = await make_requisites(rt, 10)

    orders = await create_many(app_client, who)

    assert_exclusive_allocation(orders, 10)
    pairs = await open_pairs(rt)
    assert len(pairs) == 10 and len(set(pairs)) == 10
    assert {r for r, _ in pairs} == set(requisites)
    assert await status_counts(rt) == {"awaiting": 10, "unconfirmed": N - 10}


async def test_unique_amounts_let_every_simultaneous_order_be_matched(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt, unique_amounts=True, unique_amount_span=10)
    await make_requisites(rt, 10)

    orders = await create_many(app_client, who)

    assert all(o["order_status"] == "awaiting" for o in orders)
    wire_pairs = [(o["wallet_payment"], o["amount_payable"]) for o in orders]
    assert len(set(wire_pairs)) == N
    pairs = await open_pairs(rt)
    assert len(pairs) == N and len(set(pairs)) == N
    assert all(999900 <= amount <= 999910 for _, amount in pairs)
    # The receivable is priced on what the customer actually pays.
    by_amount = {o["amount_payable"]: o["amount_receivable"] for o in orders}
    assert by_amount["9999"] == "0.00256657"
    assert all(by_amount[a] >= by_amount["9999"] for a in by_amount)


async def test_cancels_racing_a_payment_have_exactly_one_winner(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)
    response = await create_order(app_client, who)
    order_id = response.json()["items"][0]["order_id"]

    async def cancel() -> httpx.Response:
        return await app_client.post("/api/v2/order/cancel", json={"order_id": order_id}, headers=who.headers)

    async def pay() -> str:
        async with rt.db.transaction() as session:
            order = await confirm_paid(session, rt, int(order_id), now=utcnow(), actor="test")
            return order.status

    tasks: list[Any] = [cancel() for _ in range(10)] + [pay()] + [cancel() for _ in range(10)]
    results = await asyncio.gather(*tasks, return_exceptions=True)

    cancel_results = [r for r in results if isinstance(r, httpx.Response)]
    assert all(r.status_code == 200 for r in cancel_results), [r.text for r in cancel_results]
    won_cancels = sum(len(r.json()["data"]["cancel"]) for r in cancel_results)
    pay_result = results[10]
    paid = pay_result == "payed"
    if not paid:  # refused: the order had moved on (or, without a row lock, its version had)
        assert isinstance(pay_result, DomainError), pay_result
        assert pay_result.code in ("illegal_transition", "concurrent_update"), pay_result
    assert won_cancels + int(paid) == 1
    final = "payed" if paid else "canceled"
    for r in cancel_results:
        data = r.json()["data"]
        for item in data["cancel"] + data["failed"]:
            assert item["order_status"] == final
    async with rt.db.transaction() as session:
        events = list(await session.scalars(select(OrderEvent).where(OrderEvent.order_id == int(order_id))))
        order = await session.get(ExchangeOrder, int(order_id))
    assert [(e.from_status, e.to_status) for e in events] == [(None, "awaiting"), ("awaiting", final)]
    assert order is not None and order.status == final and order.version == 2


async def test_one_idempotency_key_creates_one_order(
    app_client: httpx.AsyncClient, rt: Runtime, database_url: str
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 3)
    key = {"Idempotency-Key": "create-7f3a"}

    responses = await asyncio.gather(*(create_order(app_client, who, "9999", headers=key) for _ in range(10)))

    ok = [r for r in responses if r.status_code == 200]
    busy = [r for r in responses if r.status_code == 409]
    assert ok and len(ok) + len(busy) == 10, [r.text for r in responses]
    assert len({r.content for r in ok}) == 1
    for r in busy:
        assert r.json()["code"] == "idempotency_in_progress"
    if not is_postgres(database_url):
        assert not busy  # SQLite's single writer serialises them: every repeat gets the stored response
    assert await status_counts(rt) == {"awaiting": 1}
    # Afterwards every repeat gets the first response.
    again = await create_order(app_client, who, "9999", headers=key)
    assert again.status_code == 200 and again.content == ok[0].content
    other = await create_order(app_client, who, "10000", headers=key)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_mismatch"


@pytest.fixture
def processes(database_url: str, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(database_url, tmp_path)
    yield procs
    procs.close()


async def test_simultaneous_creates_across_server_processes(
    app_client: httpx.AsyncClient, rt: Runtime, processes: Processes, free_port: int, tmp_path: Path
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 10)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = processes.env()
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    await asyncio.to_thread(processes.serve, free_port, "--workers", "2", "--no-worker", env=env)

    limits = httpx.Limits(max_connections=N)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{free_port}", limits=limits, timeout=30
    ) as client:
        orders = await create_many(client, who)
        assert (await client.get("/api/v2/directions", headers=who.headers)).status_code == 200

    assert_exclusive_allocation(orders, 10)
    assert all(o["clients_wallet"] == WALLET for o in orders)
    pairs = await open_pairs(rt)
    assert len(pairs) == 10 and len(set(pairs)) == 10
    assert await status_counts(rt) == {"awaiting": 10, "unconfirmed": N - 10}
