"""Core statements run at the driver's cost on the hot paths.

A `Link` runs SQLAlchemy Core statements and hands back rows as mappings. On PostgreSQL it is an
asyncpg connection from a pool of the database's own: each statement is compiled once to its `$n`
form and sent as a prepared statement, without SQLAlchemy's per-execution work (about three times the
driver's own cost per statement). On SQLite it is `sqlite_link.SqliteLink`, the same over sqlite3. Over
an ORM session the statements go through SQLAlchemy. Every use case is written once for both databases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, cast

import asyncpg
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import Compiled

Row = Mapping[str, Any]


class Link(Protocol):
    """One connection, inside a transaction or (PostgreSQL, `Database.link`) running each statement
    on its own."""

    dialect: str

    async def rows(self, stmt: Executable, params: Mapping[str, Any]) -> Sequence[Row]: ...

    async def row(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None: ...

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None: ...

    def transaction(self) -> AbstractAsyncContextManager[object]:
        """A transaction, or a savepoint inside the one already open: for the statements that must
        commit together when the link runs each statement on its own."""
        ...


class SqlAlchemyLink:
    """A link over an SQLAlchemy connection or session (use cases already in a session)."""

    def __init__(self, conn: AsyncConnection | AsyncSession) -> None:
        self.conn = conn
        bind = conn.get_bind() if isinstance(conn, AsyncSession) else conn
        self.dialect = bind.dialect.name

    async def rows(self, stmt: Executable, params: Mapping[str, Any]) -> Sequence[Row]:
        return cast(Sequence[Row], (await self.conn.execute(stmt, dict(params))).mappings().all())

    async def row(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None:
        return cast(Row | None, (await self.conn.execute(stmt, dict(params))).mappings().first())

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None:
        await self.conn.execute(stmt, dict(params))

    def transaction(self) -> AbstractAsyncContextManager[object]:
        return self.conn.begin_nested()


def as_link(conn: Link | AsyncSession | AsyncConnection) -> Link:
    """A link for a use case called from a session's transaction as well as from a hot path."""
    if isinstance(conn, AsyncSession | AsyncConnection):
        return SqlAlchemyLink(conn)
    return conn


class _Compiled:
    """A statement's PostgreSQL text and the order of its parameters, compiled once."""

    __slots__ = ("constants", "names", "sql", "stmt")

    def __init__(self, stmt: Executable, compiled: Compiled) -> None:
        self.stmt = stmt  # kept alive: the cache is keyed by its id
        self.sql = compiled.string
        self.names: tuple[str, ...] = tuple(getattr(compiled, "positiontup", None) or ())
        # Literals the statement binds itself (`coalesce(x, 0)`), not named by the caller.
        self.constants = {
            name: bind.value
            for name, bind in compiled.binds.items()  # type: ignore[attr-defined]
            if name in self.names and bind.value is not None and not bind.required
        }

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        if self.constants:
            params = {**self.constants, **params}
        return [params[name] for name in self.names]


class AsyncpgLink:
    dialect = "postgresql"

    def __init__(self, conn: asyncpg.Connection, statements: StatementCache) -> None:
        self.conn = conn
        self.statements = statements

    async def rows(self, stmt: Executable, params: Mapping[str, Any]) -> Sequence[Row]:
        c = self.statements.get(stmt)
        return await self.conn.fetch(c.sql, *c.args(params))  # type: ignore[no-any-return]

    async def row(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None:
        c = self.statements.get(stmt)
        return await self.conn.fetchrow(c.sql, *c.args(params))  # type: ignore[no-any-return]

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None:
        c = self.statements.get(stmt)
        await self.conn.execute(c.sql, *c.args(params))

    def transaction(self) -> AbstractAsyncContextManager[object]:
        return self.conn.transaction()


class StatementCache:
    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._by_id: dict[int, _Compiled] = {}

    def get(self, stmt: Executable) -> _Compiled:
        found = self._by_id.get(id(stmt))
        if found is None:
            compiled = stmt.compile(dialect=self.dialect)  # type: ignore[attr-defined]
            if getattr(compiled, "post_compile_params", None):
                raise ValueError("a link's statements take no expanding parameters: use = ANY(array)")
            found = self._by_id[id(stmt)] = _Compiled(stmt, compiled)
        return found


async def _no_reset(conn: asyncpg.Connection) -> None:
    # asyncpg's default reset (advisory unlocks, CLOSE ALL, UNLISTEN, RESET ALL) costs a round trip per
    # use; links set no session state, so only an unfinished transaction needs ending.
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


# The hot paths' statements are index lookups whose best plan does not depend on the values bound:
# one generic plan per connection spares planning each execution (most of a point lookup's cost).
# JIT only pays off for long analytical queries.
_SESSION = {"plan_cache_mode": "force_generic_plan", "jit": "off"}


class AsyncpgPool:
    """The database's own asyncpg connections, opened as needed up to `size`.

    `pooled` is for a transaction-pooling PgBouncer in front of PostgreSQL: the server connection
    behind a client connection may change whenever the server reports itself idle. Statements then
    go unnamed and uncached, and every link runs in a transaction: a transaction is the boundary
    PgBouncer keeps, whatever messages the driver sends within it. Session settings cannot be kept
    either (an operator sets them on the database or role instead)."""

    def __init__(self, url: str, dialect: Dialect, size: int, *, pooled: bool = False) -> None:
        self.dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.size = size
        self.pooled = pooled
        self.statements = StatementCache(dialect)
        self._pool: asyncpg.Pool | None = None

    async def _get(self) -> asyncpg.Pool:
        if self._pool is None:
            options: dict[str, Any] = (
                {"statement_cache_size": 0} if self.pooled else {"server_settings": _SESSION}
            )
            pool = await asyncpg.create_pool(
                self.dsn, min_size=0, max_size=self.size, reset=_no_reset, **options
            )
            if self._pool is None:
                self._pool = pool
            else:  # another task created it meanwhile
                await pool.close()
        return self._pool

    @asynccontextmanager
    async def connection(self, *, transaction: bool) -> AsyncIterator[asyncpg.Connection]:
        pool = await self._get()
        async with pool.acquire() as conn:
            if transaction or self.pooled:
                async with conn.transaction():
                    yield conn
            else:
                yield conn

    @asynccontextmanager
    async def link(self, *, transaction: bool) -> AsyncIterator[Link]:
        async with self.connection(transaction=transaction) as conn:
            yield AsyncpgLink(conn, self.statements)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
