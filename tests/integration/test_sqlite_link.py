"""The embedded database's link: rows as the ORM sessions read and write them, writers queued with the
sessions', and other processes on the file waited for without blocking the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import make_url

from greengate.runtime import Runtime
from greengate.store import sqlite_link
from greengate.store.db import column_values, table_of
from greengate.store.links import as_link
from greengate.store.models import Requisite

REQUISITES = table_of(Requisite)
# Leaves out bank, holder and active: their defaults are the columns' own.
INSERT = insert(REQUISITES).values(
    {
        name: bindparam(name)
        for name in ("payment_method", "number_enc", "number_masked", "number_digest", "daily_limit")
    }
    | {"created_at": bindparam("created_at"), "updated_at": bindparam("updated_at")}
)
BY_DIGEST = select(REQUISITES).where(REQUISITES.c.number_digest == bindparam("digest"))
BOTH = ("by-link", "by-session")
# An instant east of UTC, with microseconds: stored as UTC, read back aware.
AT = datetime(2026, 3, 1, 4, 5, 6, 789012, tzinfo=timezone(timedelta(hours=5)))


def values(digest: str) -> dict[str, object]:
    return {
        "payment_method": "card",
        "number_enc": "enc",
        "number_masked": "4111 **** 1111",
        "number_digest": digest,
        "daily_limit": 10**15,
        "created_at": AT,
        "updated_at": AT,
    }


def holder_of_the_file(rt: Runtime) -> sqlite3.Connection:
    """Another process's connection: it takes the file's write lock past the process's own queue."""
    conn = sqlite3.connect(str(make_url(rt.db.url).database), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


async def test_link_and_session_read_each_others_rows_alike(sqlite_rt: Runtime) -> None:
    async with sqlite_rt.db.link() as link:
        await link.execute(INSERT, values("by-link"))
    async with sqlite_rt.db.transaction() as session:
        session.add(Requisite(**values("by-session"), active=False, bank="Bank"))

    async with sqlite_rt.db.transaction() as session:
        by_link = (await session.scalars(select(Requisite).filter_by(number_digest="by-link"))).one()
        by_session = (await session.scalars(select(Requisite).filter_by(number_digest="by-session"))).one()
        through_session = [
            await as_link(session).row(BY_DIGEST, {"digest": d}) for d in ("by-link", "by-session")
        ]
    async with sqlite_rt.db.read_link() as link:
        through_link = [await link.row(BY_DIGEST, {"digest": d}) for d in BOTH]

    assert (by_link.created_at, by_link.active, by_link.bank, by_link.daily_limit) == (AT, True, "", 10**15)
    assert by_link.created_at.tzinfo == UTC
    assert (by_session.active, by_session.bank) == (False, "Bank")
    assert [dict(r or {}) for r in through_link] == [dict(r or {}) for r in through_session]
    assert through_link == [column_values(by_link), column_values(by_session)]


async def test_link_transactions_queue_with_sessions(sqlite_rt: Runtime) -> None:
    lock = sqlite_rt.db.write_lock
    assert lock is not None

    async def link_write() -> None:
        async with sqlite_rt.db.link() as link:
            await link.execute(INSERT, values("queued-link"))

    async with sqlite_rt.db.transaction() as session:
        session.add(Requisite(**values("queued-session")))
        await session.flush()
        task = asyncio.create_task(link_write())
        await asyncio.sleep(0.05)
        assert not task.done() and lock.held
        # A read of one statement does not queue: it sees the last commit.
        async with sqlite_rt.db.read_link() as reader:
            assert await asyncio.wait_for(reader.row(BY_DIGEST, {"digest": "queued-session"}), 1) is None
    await asyncio.wait_for(task, 5)

    assert not lock.held
    async with sqlite_rt.db.read_link() as reader:
        rows = [await reader.row(BY_DIGEST, {"digest": d}) for d in ("queued-session", "queued-link")]
    assert all(rows)


async def test_link_waits_for_another_process_without_blocking_the_loop(sqlite_rt: Runtime) -> None:
    other = holder_of_the_file(sqlite_rt)
    try:
        task = asyncio.create_task(write_one(sqlite_rt, "after-other"))
        began = time.monotonic()
        await asyncio.sleep(0.1)
        assert time.monotonic() - began < 0.5  # the loop kept turning
        assert not task.done()
    finally:
        other.execute("COMMIT")
        other.close()
    await asyncio.wait_for(task, 5)
    assert sqlite_rt.db.write_lock is not None and not sqlite_rt.db.write_lock.held


async def test_link_fails_as_locked_when_another_process_keeps_the_file(
    sqlite_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_link, "BUSY_TIMEOUT_MS", 100)
    other = holder_of_the_file(sqlite_rt)
    try:
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            await write_one(sqlite_rt, "never")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert sqlite_rt.db.write_lock is not None and not sqlite_rt.db.write_lock.held
    await write_one(sqlite_rt, "after-timeout")


async def write_one(rt: Runtime, digest: str) -> None:
    async with rt.db.link() as link:
        await link.execute(INSERT, values(digest))
