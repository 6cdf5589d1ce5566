"""Real `greengate` processes: a worker catching up after downtime, a crash, a multi-process server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.services.exchange_orders import CALLBACK, EXPIRE_JOB
from greengate.store.models import ExchangeOrder, OutboxMessage
from tests.support.exchange import create_order, make_client, make_direction, make_requisites
from tests.support.processes import Processes
from tests.support.servers import Receiver, Recorded, callback_events


@pytest.fixture
def processes(database_url: str, tmp_path: Path, clean_db: None) -> Iterator[Processes]:
    procs = Processes(database_url, tmp_path)
    yield procs
    procs.close()


async def order_status(rt: Runtime, order_id: int) -> str:
    async with rt.db.transaction() as session:
        order = await session.get(ExchangeOrder, order_id, populate_existing=True)
        assert order is not None
        return order.status


async def eventually(probe: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s")
        await asyncio.sleep(0.1)


async def test_worker_started_late_expires_what_fell_due_while_it_was_down(
    processes: Processes, app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)
    response = await create_order(app_client, who)
    order_id = int(response.json()["items"][0]["order_id"])
    # Time passes while no worker runs: the order's TTL and its expiry job fall due.
    past = utcnow() - timedelta(minutes=1)
    async with rt.db.transaction() as session:
        await session.execute(
            update(ExchangeOrder).where(ExchangeOrder.id == order_id).values(expires_at=past)
        )
        moved = await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.kind == EXPIRE_JOB, OutboxMessage.aggregate == f"order:{order_id}")
            .values(due_at=past)
        )
        assert moved.rowcount == 1  # type: ignore[attr-defined]
    await asyncio.sleep(0.3)
    assert await order_status(rt, order_id) == "awaiting"  # nothing expires it without a worker

    worker = processes.start("worker")

    async def autocanceled() -> bool:
        assert worker.running(), worker.output()
        return await order_status(rt, order_id) == "autocanceled"

    await eventually(autocanceled)
    assert await asyncio.to_thread(worker.terminate) == 0, worker.output()
    async with rt.db.transaction() as session:
        job = await session.scalar(select(OutboxMessage).where(OutboxMessage.kind == EXPIRE_JOB))
    assert job is not None and job.status == "done"


async def test_callbacks_survive_a_killed_server(
    processes: Processes, app_client: httpx.AsyncClient, rt: Runtime, free_port: int
) -> None:
    n = 20
    # A slow, failing receiver: the in-process worker holds claims on undelivered rows when it dies.
    with Receiver(default=500, delay=0.1) as receiver:
        who = await make_client(rt, webhook_url=receiver.url)
        await make_direction(rt)
        await make_requisites(rt, n)
        # A claim lasts at least one delivery's deadline (a request may be under way until then):
        # both short, so the rows the dead server held come free soon.
        env = processes.env(worker_claim_timeout_seconds="2", callback_timeout_seconds="2")
        server = await asyncio.to_thread(processes.serve, free_port, env=env)  # worker runs in-process

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=10) as client:
            responses = await asyncio.gather(*(create_order(client, who) for _ in range(n)))
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        ids = {r.json()["items"][0]["order_id"] for r in responses}
        # The in-process worker is delivering (and failing) when the server dies.
        await asyncio.to_thread(receiver.server.wait_for, lambda seen: len(seen) >= 3, 10.0)
        server.kill()
        failed = len(receiver.requests)
        async with rt.db.transaction() as session:
            claimed = await session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.status == "pending", OutboxMessage.claimed_until.is_not(None))
            )
        assert claimed, "the dead server held no claims"

        receiver.delay = 0.0
        receiver.answer(200)
        processes.start("worker", env=env)

        def all_delivered(seen: list[Recorded]) -> bool:
            return {o for o, _ in callback_events(seen[failed:])} >= ids

        await asyncio.to_thread(receiver.server.wait_for, all_delivered, 15.0)

    delivered = list(callback_events(receiver.requests[failed:]))
    assert {o for o, _ in delivered} == ids
    assert {s for _, s in delivered} == {"awaiting"}
    async with rt.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(ExchangeOrder)) == n
        statuses = set(await session.scalars(select(ExchangeOrder.status)))
    assert statuses == {"awaiting"}

    async def callbacks_done() -> bool:
        async with rt.db.transaction() as session:
            rows = await session.scalars(select(OutboxMessage.status).where(OutboxMessage.kind == CALLBACK))
            return set(rows) == {"done"}

    await eventually(callbacks_done, 5.0)


async def test_every_acknowledged_order_survives_a_server_killed_under_load(
    processes: Processes, app_client: httpx.AsyncClient, rt: Runtime, free_port: int
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 5)
    server = await asyncio.to_thread(processes.serve, free_port, "--workers", "2", "--no-worker")
    acknowledged: set[int] = set()
    refused: list[int] = []

    async def keep_creating(client: httpx.AsyncClient) -> None:
        while True:
            try:
                response = await create_order(client, who)
            except httpx.HTTPError:
                return  # the server is gone
            if response.status_code != 200:
                refused.append(response.status_code)
                continue
            acknowledged.add(int(response.json()["items"][0]["order_id"]))

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=10) as client:
        creators = [asyncio.create_task(keep_creating(client)) for _ in range(12)]
        await eventually(lambda: asyncio.sleep(0, len(acknowledged) >= 60), 60.0)
        server.kill()  # SIGKILL to the whole process group, mid-request
        await asyncio.wait_for(asyncio.gather(*creators), 30)

    assert refused == []
    async with rt.db.transaction() as session:
        stored = set(await session.scalars(select(ExchangeOrder.id)))
    assert acknowledged <= stored, f"acknowledged but lost: {sorted(acknowledged - stored)}"


async def test_multi_process_server_is_healthy_ready_and_measured(
    processes: Processes, free_port: int, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = processes.env()
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    server = await asyncio.to_thread(processes.serve, free_port, "--workers", "2", env=env)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=10) as client:
        for _ in range(4):
            health = await client.get("/healthz")
            assert (health.status_code, health.json()) == (200, {"status": "ok"})
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ok" and ready.json()["migrations"]
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert 'greengate_http_requests_total{method="GET",route="/healthz",status="200"}' in metrics.text

    assert await asyncio.to_thread(server.terminate, 20.0) == 0, server.output()
    # The server processes and the worker it spawned stop with it.
    deadline = time.monotonic() + 10
    while server.group_alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not server.group_alive()
