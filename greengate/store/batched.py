"""Point reads batched per event-loop turn, on PostgreSQL.

A read of one statement that many requests make at once (a payment's status, an order check) costs
mostly what is paid per statement: a round trip, and the driver's and the server's fixed work. The
reads of one statement that a process starts in the same turn of its event loop are sent together
as one statement: their values go in as arrays, the statement runs once per request as a LATERAL
subquery over them, and every row comes back tagged with the request it answers. Each request still
reads one snapshot, taken when its batch runs.

A request waiting for its batch holds no connection: the batch takes one from the pool when it runs,
so waiters can never starve the batch that would answer them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy.sql import Executable
from sqlalchemy.types import NullType

from greengate.store.links import AsyncpgPool, Row

# At most this many requests' reads in one statement; more wait for the next batch of that turn.
MAX_BATCH = 256
_PLACEHOLDER = re.compile(r"\$(\d+)\b")


class BatchForm:
    """A statement's batched form, built once: the statement's own parameters become the columns of
    an `unnest` of arrays (one element per request), its constants stay scalar parameters."""

    __slots__ = ("constants", "names", "sql", "stmt")

    def __init__(self, stmt: Executable, pool: AsyncpgPool) -> None:
        self.stmt = stmt  # kept alive: forms are cached by the statement's id
        compiled = pool.statements.get(stmt)
        names = compiled.names
        self.constants = [compiled.constants[n] for n in names if n in compiled.constants]
        self.names = tuple(n for n in names if n not in compiled.constants)
        full = stmt.compile(dialect=pool.statements.dialect)  # type: ignore[attr-defined]
        arrays = ["$1::INTEGER[]"]
        columns = ["batch_request"]
        renamed: dict[int, str] = {}
        scalars = 1 + len(self.names)
        for number, name in enumerate(names, start=1):
            if name in compiled.constants:
                scalars += 1
                renamed[number] = f"${scalars}"
                continue
            bind_type = full.binds[name].type
            if isinstance(bind_type, NullType):
                raise ValueError(f"a batched read's parameter :{name} needs a type")
            cast = full.render_bind_cast(bind_type, bind_type.dialect_impl(full.dialect), "")
            arrays.append(f"${len(arrays) + 1}{cast}[]")
            columns.append(f"p{number}")
            renamed[number] = f"batch.p{number}"
        inner = _PLACEHOLDER.sub(lambda m: renamed[int(m.group(1))], compiled.sql)
        self.sql = (
            f"SELECT batch.batch_request, read.* FROM unnest({', '.join(arrays)}) "  # noqa: S608
            f"AS batch({', '.join(columns)}) CROSS JOIN LATERAL ({inner}) AS read"
        )

    def args(self, reads: list[_Read]) -> list[Any]:
        arrays: list[list[Any]] = [list(range(len(reads)))]
        arrays += [[read.params[name] for read in reads] for name in self.names]
        return [*arrays, *self.constants]


class _Read:
    __slots__ = ("future", "params")

    def __init__(self, params: Mapping[str, Any], future: asyncio.Future[Row | None]) -> None:
        self.params, self.future = params, future


class BatchedReads:
    """One pool's batched reads: `row` is a point read of one statement, answered with its batch."""

    def __init__(self, pool: AsyncpgPool) -> None:
        self.pool = pool
        self._forms: dict[int, BatchForm] = {}
        self._pending: dict[int, list[_Read]] = {}
        self._running: set[asyncio.Task[None]] = set()

    def form(self, stmt: Executable) -> BatchForm:
        found = self._forms.get(id(stmt))
        if found is None:
            found = self._forms[id(stmt)] = BatchForm(stmt, self.pool)
        return found

    async def row(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None:
        """The statement's first row for `params` (None when it has none), read with the other reads
        of the same statement started in this turn of the event loop."""
        self.form(stmt)  # built (and checked) before the batch needs it
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._flush)
        read = _Read(params, loop.create_future())
        self._pending.setdefault(id(stmt), []).append(read)
        return await read.future

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        loop = asyncio.get_running_loop()
        for key, reads in pending.items():
            form = self._forms[key]
            for start in range(0, len(reads), MAX_BATCH):
                task = loop.create_task(self._read(form, reads[start : start + MAX_BATCH]))
                self._running.add(task)  # a reference until it ends
                task.add_done_callback(self._running.discard)

    async def _read(self, form: BatchForm, reads: list[_Read]) -> None:
        try:
            async with self.pool.connection(transaction=False) as conn:
                rows = await conn.fetch(form.sql, *form.args(reads))
        except Exception as exc:  # every waiter learns of it; none is left hanging
            for read in reads:
                if not read.future.done():
                    read.future.set_exception(exc)
            return
        except BaseException:
            for read in reads:
                read.future.cancel()
            raise
        answers: list[Row | None] = [None] * len(reads)
        for row in rows:
            index = row["batch_request"]
            if answers[index] is None:
                answers[index] = row
        for read, answer in zip(reads, answers, strict=True):
            if not read.future.done():  # a request whose client left is cancelled
                read.future.set_result(answer)
