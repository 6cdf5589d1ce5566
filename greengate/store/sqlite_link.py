"""Core statements on SQLite at the driver's cost: the embedded database's `Link`.

A statement is compiled once for the engine's SQLite dialect; each execution applies the types' own
bind and result processors (what SQLAlchemy applies), so rows written or read here are the rows the
ORM sessions write and read on the same file. Statements run on the event loop's thread: an indexed
statement takes microseconds, less than a hop to a thread and back. Only the durable `COMMIT` (an
fsync) runs on a thread of its own, so that the loop serves other requests meanwhile.

Write transactions queue on the engine's `WriteLock`, with the ORM sessions', and all of them run on
one connection: the lock lets one transaction at a time use it. Reads of one statement run on another
connection, each on its own (autocommit), outside the queue; the loop runs one at a time, so one
connection serves them all. Other processes on the file are waited for with asyncio sleeps, never
inside SQLite's busy handler, which would block the loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler

from greengate.store.links import Link, Row
from greengate.store.write_lock import BUSY_TIMEOUT_MS, WriteLock

# Measured under 16 connections: with a 1 ms switch interval a create holds the write lock about half
# as long as with the default 5 ms; committing on the loop's thread instead blocks every request for
# the fsync and did no better.
COMMIT_SWITCH_INTERVAL = 0.001
# SQLite's own busy handler's sleeps between tries, in ms; the last one repeats.
_BACKOFF_MS = (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100)


def _busy(exc: sqlite3.OperationalError) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY


async def _retry_busy(run: Callable[[], Any]) -> Any:
    """`run()`, tried again after a sleep while another process holds the lock it needs, for as long
    as SQLite's busy timeout would; then its "database is locked" is raised."""
    waited = tries = 0
    while True:
        try:
            return run()
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or waited >= BUSY_TIMEOUT_MS:
                raise
        delay = min(_BACKOFF_MS[min(tries, len(_BACKOFF_MS) - 1)], BUSY_TIMEOUT_MS - waited)
        await asyncio.sleep(delay / 1000)
        waited, tries = waited + delay, tries + 1


class _Compiled:
    """A statement's SQLite text, its parameters' order and processors, its columns' keys and result
    processors, compiled once."""

    __slots__ = ("binds", "constants", "keys", "names", "results", "sql", "stmt")

    def __init__(self, stmt: Executable, compiled: SQLCompiler, dialect: Dialect) -> None:
        self.stmt = stmt  # kept alive: the cache is keyed by its id
        self.sql = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        # A name's processor is one callable: only expanding parameters, refused here, have several.
        processors: Mapping[str, Callable[[Any], Any]] = compiled._bind_processors  # type: ignore[assignment]
        self.binds = [(i, processors[name]) for i, name in enumerate(self.names) if name in processors]
        # Literals the statement binds itself, and the columns' scalar defaults an INSERT leaves out.
        self.constants = {
            name: bind.value
            for name, bind in compiled.binds.items()
            if name in self.names and bind.value is not None and not bind.required
        }
        for column in (*compiled.insert_prefetch, *compiled.update_prefetch):
            default = column.default
            if default is None or not default.is_scalar:  # type: ignore[attr-defined]
                raise ValueError(f"a link's statement must set {column.key}: its default is not a value")
            self.constants.setdefault(column.key, default.arg)  # type: ignore[attr-defined]
        columns = compiled._result_columns
        self.keys: tuple[str, ...] | None = tuple(c.keyname for c in columns) or None
        self.results = [
            (i, p)
            for i, c in enumerate(columns)
            if (p := c.type._cached_result_processor(dialect, None)) is not None
        ]

    def bound(self, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL text and its positional arguments for `params`."""
        if self.constants:
            params = {**self.constants, **params}
        args = [params[name] for name in self.names]
        for i, process in self.binds:
            args[i] = process(args[i])
        return self.sql, args

    def rows(self, cursor: sqlite3.Cursor) -> list[Row]:
        found = cursor.fetchall()
        if not found:
            return []
        keys = self.keys
        if keys is None or len(keys) != len(cursor.description):
            # A text() statement's own columns, untyped: read as the driver gives them.
            keys = tuple(d[0] for d in cursor.description)
            return [dict(zip(keys, row, strict=True)) for row in found]
        if not self.results:
            return [dict(zip(keys, row, strict=True)) for row in found]
        out: list[Row] = []
        for row in found:
            values = list(row)
            for i, process in self.results:
                values[i] = process(values[i])
            out.append(dict(zip(keys, values, strict=True)))
        return out


class SqliteStatements:
    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._by_id: dict[int, _Compiled] = {}

    def get(self, stmt: Executable) -> _Compiled:
        found = self._by_id.get(id(stmt))
        if found is None:
            compiled = stmt.compile(dialect=self.dialect)  # type: ignore[attr-defined]
            if compiled.post_compile_params:  # as on PostgreSQL (`links.StatementCache`)
                raise ValueError("a link's statements take no expanding parameters: use = ANY(array)")
            found = self._by_id[id(stmt)] = _Compiled(stmt, compiled, self.dialect)
        return found


class SqliteLink:
    """A write transaction on the writers' connection, begun at its first statement under the write
    lock; or (`file.read_link`) each statement on its own on the readers' connection."""

    dialect = "sqlite"

    def __init__(self, file: SqliteFile, conn: sqlite3.Connection, *, writes: bool) -> None:
        self.file = file
        self.conn = conn
        self.writes = writes
        self.began = False
        self._savepoints = 0

    async def _run(self, stmt: Executable, params: Mapping[str, Any]) -> list[Row]:
        c = self.file.statements.get(stmt)
        sql, args = c.bound(params)
        if self.writes:
            if not self.began:
                await self.begin()
            return c.rows(self.conn.execute(sql, args))
        return c.rows(await _retry_busy(lambda: self.conn.execute(sql, args)))  # type: ignore[no-any-return]

    async def rows(self, stmt: Executable, params: Mapping[str, Any]) -> Sequence[Row]:
        return await self._run(stmt, params)

    async def row(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None:
        found = await self._run(stmt, params)
        return found[0] if found else None

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None:
        await self._run(stmt, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[object]:
        """A savepoint in the link's transaction: its statements are undone together on error."""
        if not self.writes:
            raise TypeError("a read link runs each statement on its own; use Database.link")
        if not self.began:
            await self.begin()
        self._savepoints += 1
        name = f"sp_{self._savepoints}"
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            raise
        self.conn.execute(f"RELEASE {name}")

    async def begin(self) -> None:
        lock = self.file.write_lock
        await lock.take(self)
        try:
            await _retry_busy(lambda: self.conn.execute("BEGIN IMMEDIATE"))
        except BaseException:
            lock.release(self)
            raise
        self.began = True

    async def end(self, *, commit: bool) -> None:
        if not self.began:
            return
        self.began = False
        if not commit:
            try:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
            finally:
                self.file.write_lock.release(self)
            return
        done = self.file.commit(self.conn)
        # Released once the COMMIT has returned, even if this task is cancelled while it waits: the
        # connection is not the next transaction's before.
        done.add_done_callback(lambda _: self.file.write_lock.release(self))
        await asyncio.shield(done)


def _commit(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SqliteFile:
    """The database file's own connections for links: the writers' and the readers'."""

    def __init__(self, url: str, dialect: Dialect, write_lock: WriteLock, pragmas: Sequence[str]) -> None:
        args, kwargs = dialect.create_connect_args(make_url(url))
        # Waits for other processes are asyncio sleeps (`_retry_busy`), not the busy handler's.
        options = {**kwargs, "isolation_level": None, "timeout": 0}
        self.connect = partial(sqlite3.connect, *args, **options)
        self.statements = SqliteStatements(dialect)
        self.write_lock = write_lock
        self.pragmas = pragmas
        self._connections: dict[str, sqlite3.Connection] = {}
        self._committer: ThreadPoolExecutor | None = None

    async def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = self.connect()
        try:
            for pragma in self.pragmas:
                await _retry_busy(lambda p=pragma: conn.execute(p))  # type: ignore[misc]
        except BaseException:
            conn.close()
            raise
        return conn

    async def _connection(self, role: str) -> sqlite3.Connection:
        """The writers' or the readers' connection, opened at first use."""
        conn = self._connections.get(role)
        if conn is None:
            conn = await self._connect()
            if role in self._connections:  # another task opened it meanwhile
                conn.close()
            else:
                self._connections[role] = conn
        return self._connections[role]

    @asynccontextmanager
    async def link(self) -> AsyncIterator[Link]:
        link = SqliteLink(self, await self._connection("writer"), writes=True)
        try:
            yield link
        except BaseException:
            await link.end(commit=False)
            raise
        await link.end(commit=True)

    @asynccontextmanager
    async def read_link(self) -> AsyncIterator[Link]:
        yield SqliteLink(self, await self._connection("reader"), writes=False)

    def commit(self, conn: sqlite3.Connection) -> asyncio.Future[None]:
        if self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-commit")
            # The commit's thread needs the GIL to start and to return: with the loop busy it waits
            # for the switch interval (5 ms by default) each time, the write lock held all along.
            sys.setswitchinterval(min(sys.getswitchinterval(), COMMIT_SWITCH_INTERVAL))
        return asyncio.get_running_loop().run_in_executor(self._committer, _commit, conn)

    async def close(self) -> None:
        if self._committer is not None:
            self._committer.shutdown(wait=True)
            self._committer = None
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()
