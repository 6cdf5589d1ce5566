"""The embedded database's durability: every commit synced, no transaction acknowledged before it is on
disk, and simultaneous transactions failing alone."""

from __future__ import annotations

import asyncio
import sqlite3

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.store.models import Rate


def file_of(rt: Runtime) -> str:
    return rt.db.url.split("///", 1)[1]


def committed_sources(rt: Runtime) -> set[str]:
    """What another connection, of another library, finds on disk: only committed rows."""
    with sqlite3.connect(file_of(rt)) as conn:
        return {source for (source,) in conn.execute("SELECT source FROM rates")}


async def add(rt: Runtime, source: str, *, fail: bool = False) -> None:
    async with rt.db.transaction() as session:
        session.add(Rate(source=source, base="BTC", quote="RUB", rate="1", fetched_at=utcnow()))
        await session.flush()
        if fail:
            raise RuntimeError("the use case fails after its insert")


async def test_connections_sync_every_commit(sqlite_rt: Runtime) -> None:
    async with sqlite_rt.db.engine.connect() as conn:
        level = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
    assert level == 2  # FULL


async def test_a_transaction_returns_only_once_committed(sqlite_rt: Runtime) -> None:
    for n in range(5):
        await add(sqlite_rt, f"seq-{n}")
        assert f"seq-{n}" in committed_sources(sqlite_rt)


async def test_simultaneous_transactions_fail_alone(sqlite_rt: Runtime) -> None:
    outcomes = await asyncio.gather(
        *(add(sqlite_rt, f"mixed-{n}", fail=n % 3 == 0) for n in range(12)), return_exceptions=True
    )

    failed = {n for n, outcome in enumerate(outcomes) if isinstance(outcome, RuntimeError)}
    assert failed == {0, 3, 6, 9}
    kept = {s for s in committed_sources(sqlite_rt) if s.startswith("mixed-")}
    assert kept == {f"mixed-{n}" for n in range(12) if n not in failed}
