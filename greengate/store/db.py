"""Engine and transactions. One transaction per use case; services never commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

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


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, pool_size: int = 20) -> AsyncEngine:
    if is_sqlite(url):
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size)
        _configure_sqlite(engine)
        return engine
    # No overflow: an overflow connection is closed as soon as it is returned, so under load each burst
    # would start a PostgreSQL backend, authenticate it and re-prepare every statement on it.
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=0, pool_pre_ping=False, pool_recycle=1800
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (the driver's implicit BEGIN is DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
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
    def __init__(self, url: str, *, pool_size: int = 20) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self.dialect = self.engine.dialect.name
        # Shares the engine's pool; the isolation level is set on the connection at checkout.
        self._autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction, committed once at the end, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def single_statement(self) -> AsyncIterator[AsyncConnection]:
        """A connection for a read-only use case that runs one Core statement, without an ORM session.
        On PostgreSQL it runs without BEGIN and COMMIT (a statement is atomic and reads one snapshot
        on its own): two round trips fewer. SQLite keeps its ordinary transaction."""
        if self.dialect != "postgresql":
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._autocommit_engine.connect() as conn:
            yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()
