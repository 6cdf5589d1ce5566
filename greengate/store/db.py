"""Engine and transactions. One transaction per use case; services never commit."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

from sqlalchemy import Table, event, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm.attributes import set_committed_value

from greengate.store.links import AsyncpgPool, Link, SqlAlchemyLink


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


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (the driver's implicit BEGIN is DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # An acknowledged write must survive a power cut: FULL syncs the WAL at every commit. Group
        # commit (`SqliteWriter`) makes that one sync per group of transactions, not one per request.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # SQLite has one writer: taking the write lock at BEGIN serialises read-modify-write
        # transactions the way row locks do on PostgreSQL, and avoids deadlock-prone lock upgrades.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


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


class SqliteWriter:
    """One connection that runs every transaction of a process on SQLite, committing them a group at a
    time.

    SQLite has one writer at a time anyway; queueing transactions on an asyncio lock instead of on
    the file lock's sleep-and-retry removes the wait's jitter, and one durable commit (one sync of the
    WAL) then covers every transaction that ran while the previous group's were queued. Each
    transaction runs in a savepoint of the group's, so a failure rolls back that transaction only, and
    none of them returns before the group's commit is on disk: nothing is acknowledged that a crash
    or power cut could take back.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._lock = asyncio.Lock()
        self._conn: AsyncConnection | None = None
        self._group: asyncio.Future[None] | None = None  # the open group's commit

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[AsyncConnection]:
        """The writer's connection for one transaction, inside a savepoint of the open group; on a clean
        exit, waits until the group is committed."""
        async with self._lock:
            conn = await self._open_group()
            group = self._group
            assert group is not None
            async with conn.begin_nested():
                yield conn
        # shield: one caller giving up must not cancel the commit the others wait for
        await asyncio.shield(group)

    async def _open_group(self) -> AsyncConnection:
        if self._conn is None:
            self._conn = await self.engine.connect()
        if self._group is None:
            await self._conn.begin()  # BEGIN IMMEDIATE (the "begin" listener): the file's write lock
            self._group = asyncio.get_running_loop().create_future()
            # The commit queues on the lock behind the transactions already waiting, which join this
            # group; those arriving later queue behind the commit and form the next one.
            asyncio.create_task(self._commit(self._group))  # noqa: RUF006 - awaited through the group
        return self._conn

    async def _commit(self, group: asyncio.Future[None]) -> None:
        async with self._lock:
            conn, self._group = self._conn, None
            assert conn is not None
            try:
                await conn.commit()
            except BaseException as exc:
                # The group is lost as a whole; start the next one on a fresh connection.
                self._conn = None
                await _discard(conn)
                group.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                group.set_result(None)

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await _discard(self._conn)
                self._conn = None


async def _discard(conn: AsyncConnection) -> None:
    try:
        await conn.rollback()
    finally:
        await conn.close()


class Database:
    def __init__(self, url: str, *, pool_size: int = 20, pooler: str = "none") -> None:
        self.url = url
        self.pooler = pooler
        self.engine = create_engine(url, pool_size=pool_size, pooler=pooler)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self.dialect = self.engine.dialect.name
        self._driver_pool = (
            AsyncpgPool(url, self.engine.dialect, pool_size, pooled=pooler == PGBOUNCER)
            if self.dialect == "postgresql"
            else None
        )
        self._writer = SqliteWriter(self.engine) if self.dialect == "sqlite" else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction, committed once at the end, rolled back on error."""
        if self._writer is None:
            async with self.sessions() as session, session.begin():
                yield session
            return
        async with self._writer.unit() as conn:
            session = self.sessions(bind=conn, join_transaction_mode="create_savepoint")
            try:
                async with session.begin():
                    yield session
            finally:
                await session.close()

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
        assert self._writer is not None
        async with self._writer.unit() as conn:
            yield SqlAlchemyLink(conn)

    async def dispose(self) -> None:
        if self._driver_pool is not None:
            await self._driver_pool.close()
        if self._writer is not None:
            await self._writer.close()
        await self.engine.dispose()
