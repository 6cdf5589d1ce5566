"""Engine and transactions. One transaction per use case; services never commit."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

from sqlalchemy import Table, event, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql import Executable

from greengate.store.batched import BatchedReads
from greengate.store.links import AsyncpgPool, Link, Row
from greengate.store.sqlite_link import SqliteFile
from greengate.store.write_lock import BUSY_TIMEOUT_MS, queue_writers, write_lock_of


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists: SQLite then opens it (an empty file is an
    empty database) and gives its -wal and -shm files the same mode. A missing folder is left for
    SQLite to report when it connects."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except (FileExistsError, FileNotFoundError):
        pass


PGBOUNCER = "pgbouncer"


def _unique_statement_name() -> str:
    return f"__greengate_{uuid4().hex}__"


def pooler_connect_args(pooler: str) -> dict[str, Any]:
    """asyncpg options for SQLAlchemy when a transaction-pooling PgBouncer sits before PostgreSQL.

    The server connection may change between transactions, so nothing prepared is cached across them
    (neither by SQLAlchemy nor by asyncpg itself, which prepares `executemany`'s statements), and each
    statement is prepared under a name of its own: one left behind on a server connection by another
    client cannot clash with it."""
    if pooler != PGBOUNCER:
        return {}
    return {
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _unique_statement_name,
        "statement_cache_size": 0,
    }


def create_engine(url: str, *, pool_size: int = 20, pooler: str = "none") -> AsyncEngine:
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            create_private_file(Path(database))
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size)
        _configure_sqlite(engine)
        return engine
    # No overflow: an overflow connection is closed as soon as it is returned, so under load each burst
    # would start a PostgreSQL backend, authenticate it and re-prepare every statement on it.
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args=pooler_connect_args(pooler),
    )


# Every connection's settings. An acknowledged write must survive a power cut: FULL syncs the WAL at
# every commit.
SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON")


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (the driver's implicit BEGIN is DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()

    # SQLite has one writer: taking the write lock at BEGIN serialises read-modify-write transactions
    # the way row locks do on PostgreSQL, and avoids deadlock-prone lock upgrades. The process's own
    # transactions queue for it on an asyncio lock rather than in SQLite's sleeping busy handler.
    queue_writers(engine)


def table_of(model: type[DeclarativeBase]) -> Table:
    """A mapped class's table, typed as a table: for Core statements that skip the ORM on hot paths."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


def column_values(row: DeclarativeBase) -> dict[str, Any]:
    """A mapped object's column values by column name, as a Core row of its table would hold them."""
    return {c.key: getattr(row, c.key) for c in table_of(type(row)).columns}


async def update_versioned(session: AsyncSession, row: Any, values: dict[str, Any]) -> bool:
    """Write `values` (the next `version` among them) to `row` only if its version is still the one
    read, and mirror them on the object; False when another transaction changed the row first."""
    model = type(row)
    result = await session.execute(
        update(model)
        .where(model.id == row.id, model.version == row.version)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    for key, value in values.items():
        set_committed_value(row, key, value)
    return True


def dialect_name(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


class Database:
    def __init__(self, url: str, *, pool_size: int = 20, pooler: str = "none") -> None:
        self.url = url
        self.pooler = pooler
        self.engine = create_engine(url, pool_size=pool_size, pooler=pooler)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self.dialect = self.engine.dialect.name
        self.write_lock = write_lock_of(self.engine)
        self._file = (
            SqliteFile(url, self.engine.dialect, self.write_lock, SQLITE_PRAGMAS)
            if self.write_lock is not None
            else None
        )
        self._driver_pool = (
            AsyncpgPool(url, self.engine.dialect, pool_size, pooled=pooler == PGBOUNCER)
            if self.dialect == "postgresql"
            else None
        )
        self._batched = None if self._driver_pool is None else BatchedReads(self._driver_pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction, committed once at the end, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def link(self, *, transaction: bool = True) -> AsyncIterator[Link]:
        """A `Link` for a hot path's Core statements, in one transaction. `transaction=False` is for a
        use case of one statement: on PostgreSQL it then runs without BEGIN and COMMIT (a statement is
        atomic and reads one snapshot on its own), two round trips fewer; SQLite, and PostgreSQL behind
        PgBouncer, keep the transaction."""
        if self._driver_pool is not None:
            async with self._driver_pool.link(transaction=transaction) as link:
                yield link
            return
        assert self._file is not None
        async with self._file.link() as link:
            yield link

    @asynccontextmanager
    async def read_link(self) -> AsyncIterator[Link]:
        """A `Link` for a read of one statement: it runs on its own, without BEGIN and COMMIT, and on
        SQLite outside the writers' queue."""
        if self._driver_pool is not None:
            async with self._driver_pool.link(transaction=False) as link:
                yield link
            return
        assert self._file is not None
        async with self._file.read_link() as link:
            yield link

    async def read_row(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None:
        """The first row of a read of one statement, as `read_link` reads it; on PostgreSQL batched
        with the same statement's reads of this turn of the event loop (`store.batched`)."""
        if self._batched is not None:
            return await self._batched.row(stmt, params)
        async with self.read_link() as link:
            return await link.row(stmt, params)

    async def dispose(self) -> None:
        if self._file is not None:
            await self._file.close()
        if self._driver_pool is not None:
            await self._driver_pool.close()
        await self.engine.dispose()
