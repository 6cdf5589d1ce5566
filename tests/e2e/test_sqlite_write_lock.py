"""The embedded database's in-process write queue: taken at a transaction's first statement, released at
its end however it ends, and never making a request wait on code that holds a context open."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.store.models import ExchangeOrder, Rate
from greengate.store.write_lock import WriteLock
from tests.support.exchange import create_order, make_client, make_direction, make_requisites

# Long enough for any request here, far below the 10 s a transaction may wait for the lock.
PROMPT = 5.0


def write_lock(rt: Runtime) -> WriteLock:
    lock = rt.db.write_lock
    assert lock is not None
    return lock


def rate(source: str) -> Rate:
    return Rate(source=source, base="BTC", quote="RUB", rate="1", fetched_at=utcnow())


async def rate_sources(rt: Runtime) -> set[str]:
    async with rt.db.transaction() as session:
        return set((await session.scalars(select(Rate.source))).all())


async def test_request_writes_while_a_transaction_context_is_open_without_statements(
    app_client: httpx.AsyncClient, sqlite_rt: Runtime
) -> None:
    who = await make_client(sqlite_rt)
    await make_direction(sqlite_rt)
    await make_requisites(sqlite_rt, 1)

    async with sqlite_rt.db.transaction() as session:
        # The context is open but has run nothing: it holds no lock, so the request's write goes ahead.
        response = await asyncio.wait_for(create_order(app_client, who, "9999"), PROMPT)
        assert not write_lock(sqlite_rt).held
        session.add(rate("held-context"))

    assert response.status_code == 200, response.text
    async with sqlite_rt.db.transaction() as session:
        orders = (await session.scalars(select(ExchangeOrder.id))).all()
    assert len(orders) == 1
    assert "held-context" in await rate_sources(sqlite_rt)


async def test_rolled_back_transaction_releases_the_lock(sqlite_rt: Runtime) -> None:
    with pytest.raises(RuntimeError):
        async with sqlite_rt.db.transaction() as session:
            session.add(rate("rolled-back"))
            await session.flush()
            assert write_lock(sqlite_rt).held
            raise RuntimeError("the use case fails after its insert")

    assert not write_lock(sqlite_rt).held
    async with sqlite_rt.db.transaction() as session:
        session.add(rate("after-rollback"))
    assert await rate_sources(sqlite_rt) == {"after-rollback"}


async def test_cancelled_transaction_releases_the_lock(sqlite_rt: Runtime) -> None:
    inside = asyncio.Event()

    async def stalled() -> None:
        async with sqlite_rt.db.transaction() as session:
            session.add(rate("cancelled"))
            await session.flush()
            inside.set()
            await asyncio.sleep(3600)  # a client that went away: the request's task is cancelled

    task = asyncio.create_task(stalled())
    await inside.wait()
    waiting = asyncio.create_task(rate_sources(sqlite_rt))
    await asyncio.sleep(0.05)
    assert not waiting.done()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.wait_for(waiting, PROMPT) == set()
    assert not write_lock(sqlite_rt).held


async def test_queued_transactions_each_commit_in_turn(sqlite_rt: Runtime) -> None:
    async def add(n: int) -> None:
        async with sqlite_rt.db.transaction() as session:
            session.add(rate(f"queued-{n}"))
            await session.flush()
            await asyncio.sleep(0)  # let the others queue behind this one

    await asyncio.wait_for(asyncio.gather(*(add(n) for n in range(30))), PROMPT)

    assert await rate_sources(sqlite_rt) == {f"queued-{n}" for n in range(30)}
    assert not write_lock(sqlite_rt).held


async def test_transaction_waiting_on_one_the_same_task_holds_fails_as_locked(
    sqlite_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write_lock(sqlite_rt), "timeout", 0.2)
    async with sqlite_rt.db.transaction() as outer:
        outer.add(rate("outer"))
        await outer.flush()
        with pytest.raises(OperationalError, match="database is locked"):
            async with sqlite_rt.db.transaction() as inner:
                inner.add(rate("inner"))
                await inner.flush()

    assert not write_lock(sqlite_rt).held
    assert await rate_sources(sqlite_rt) == {"outer"}
