"""SQLite's write lock, queued for inside the process.

SQLite has one writer at a time: every transaction begins with `BEGIN IMMEDIATE`, which takes the
file's write lock. A connection that finds it taken retries from SQLite's busy handler, which sleeps
between tries (1, 2, 5, 10, … up to 100 ms), so under load a writer keeps sleeping long after the lock
came free, and the waiting connections' threads keep waking to find it taken again.

Inside one process the transactions queue instead on an asyncio lock, first come first served, taken
just before `BEGIN IMMEDIATE` and released as soon as the transaction's `COMMIT` or `ROLLBACK` has
returned: the next transaction begins the moment the previous one is on disk. The lock is taken when
the transaction begins, which SQLAlchemy does at its first statement, not when a session or
transaction context opens: a context that has run nothing holds nothing. Several processes on one
file still order themselves through SQLite's own lock and busy handler.

A transaction waits for the lock as long as SQLite would wait for the file's (`BUSY_TIMEOUT_MS`), then
fails the way SQLite fails, with "database is locked": code that holds a transaction open while it
waits for another one of the same process fails as it did before, rather than waiting forever.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util.concurrency import await_, in_greenlet

# How long a transaction waits for the write lock: SQLite's busy timeout, and the queue's.
BUSY_TIMEOUT_MS = 10_000

_locks: WeakKeyDictionary[Engine, WriteLock] = WeakKeyDictionary()


class WriteLock:
    """The write lock of one engine's connections in this process, held by one DBAPI connection at a
    time, from its `BEGIN IMMEDIATE` until its transaction ends."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._holder: object | None = None
        self._held: asyncio.Lock | None = None

    def acquire(self, holder: object) -> None:
        """Wait for the lock (from SQLAlchemy's synchronous code, inside its greenlet) and give it to
        `holder`. Outside a greenlet (the engine driven synchronously) SQLite's own lock is left to
        order the writers."""
        if in_greenlet():
            await_(self.take(holder))

    async def take(self, holder: object) -> None:
        """Wait for the lock from async code (a `SqliteLink`'s transaction) and give it to `holder`."""
        lock = self._lock_of_running_loop()
        await self._wait(lock)
        self._holder, self._held = holder, lock

    def release(self, holder: object) -> None:
        """Release the lock if `holder` holds it; nothing otherwise (a transaction that never took it,
        or a second end of the same transaction)."""
        if self._holder is not None and self._holder is holder:
            lock, self._holder, self._held = self._held, None, None
            assert lock is not None
            lock.release()

    @property
    def held(self) -> bool:
        return self._holder is not None

    def _lock_of_running_loop(self) -> asyncio.Lock:
        # An asyncio lock belongs to one event loop; a new loop (a CLI command, a test) gets its own.
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._lock = loop, asyncio.Lock()
        return self._lock

    async def _wait(self, lock: asyncio.Lock) -> None:
        if not lock.locked():
            await lock.acquire()
            return
        try:
            async with asyncio.timeout(self.timeout):
                await lock.acquire()
        except TimeoutError:
            raise sqlite3.OperationalError("database is locked") from None


def queue_writers(engine: AsyncEngine, timeout: float = BUSY_TIMEOUT_MS / 1000) -> WriteLock:
    """Begin the engine's transactions with `BEGIN IMMEDIATE` under a `WriteLock`, released when the
    transaction commits or rolls back, or when its connection is closed, invalidated or returned."""
    lock = WriteLock(timeout)
    sync_engine = engine.sync_engine
    dialect: Any = sync_engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_begin(connection: Any) -> None:
        # SQLAlchemy calls this at the transaction's first statement (a session's or connection's
        # autobegin) or at an explicit begin; its errors are raised as SQLAlchemy's.
        holder = connection.dbapi_connection
        lock.acquire(holder)
        try:
            cursor = connection.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
            finally:
                cursor.close()
        except BaseException:
            lock.release(holder)
            raise

    def do_commit(connection: Any) -> None:
        try:
            commit(connection)
        finally:
            lock.release(_dbapi(connection))

    def do_rollback(connection: Any) -> None:
        try:
            rollback(connection)
        finally:
            lock.release(_dbapi(connection))

    dialect.do_begin = do_begin
    dialect.do_commit = do_commit
    dialect.do_rollback = do_rollback

    # A connection that goes away mid-transaction (a cancelled task's, an invalidated one) ends it.
    def _ended(dbapi_connection: Any, *_: Any) -> None:
        lock.release(dbapi_connection)

    for name in ("checkin", "invalidate", "soft_invalidate", "close", "close_detached"):
        event.listen(sync_engine.pool, name, _ended)
    _locks[sync_engine] = lock
    return lock


def write_lock_of(engine: AsyncEngine) -> WriteLock | None:
    """The engine's `WriteLock`; None for an engine whose writers are not queued (PostgreSQL)."""
    return _locks.get(engine.sync_engine)


def _dbapi(connection: Any) -> Any:
    """The DBAPI connection behind the pool's proxy that SQLAlchemy passes to the dialect."""
    return getattr(connection, "dbapi_connection", connection)
