"""Order checks, the Exchange API's most frequent read.

On PostgreSQL the checks a process receives in the same turn of its event loop are read by one
statement: each request's (client digest, order id) pairs go in as arrays, and every row comes back
tagged with the request it answers, holding only that client's orders. A statement's fixed costs (a
round trip, the driver's and the server's work per statement) are then paid once per batch instead of
once per request. Each request still reads one snapshot, taken when its batch runs. SQLite (one process,
no network) reads each check on its own.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable

from sqlalchemy import and_, bindparam, select, text

from greengate.security.encryption import Keyring
from greengate.services.exchange_orders import WIRE_COLUMNS, with_numbers
from greengate.services.merchants import ACTIVE_SECRET_OWNER, api_secret_digest
from greengate.store.db import Database, table_of
from greengate.store.links import Row
from greengate.store.models import ExchangeOrder, Merchant, Requisite

_ORDERS = table_of(ExchangeOrder)
# SQLite: one check, one statement. The client by its API secret's digest, and its orders among the
# ids; the client's own row, with null order columns, when none of the ids is theirs.
_ONE_CHECK = (
    select(Merchant.id.label("client_id"), *(_ORDERS.c[name] for name in WIRE_COLUMNS), Requisite.number_enc)
    .select_from(Merchant)
    .outerjoin(
        _ORDERS,
        and_(_ORDERS.c.merchant_id == Merchant.id, _ORDERS.c.id.in_(bindparam("ids", expanding=True))),
    )
    .outerjoin(Requisite, Requisite.id == _ORDERS.c.requisite_id)
    .where(ACTIVE_SECRET_OWNER)
    .order_by(_ORDERS.c.id)
)

_ORDER_COLUMNS = ", ".join(f"o.{name}" for name in WIRE_COLUMNS)
# A row per (request, id) pair whose client is active, with the order when it is that client's.
_BATCH = text(  # the f-string only spells out the model's column names
    f"""
    SELECT w.request, m.id AS client_id, {_ORDER_COLUMNS}, r.number_enc
    FROM unnest(CAST(:requests AS INTEGER[]), CAST(:digests AS VARCHAR[]), CAST(:ids AS BIGINT[]))
         AS w(request, digest, order_id)
    JOIN merchants m ON m.api_secret_hash = w.digest AND m.active IS true
    LEFT JOIN exchange_orders o ON o.id = w.order_id AND o.merchant_id = m.id
    LEFT JOIN requisites r ON r.id = o.requisite_id
    """  # noqa: S608
)
Found = list[tuple[Row, str]]


class _Lookup:
    __slots__ = ("digest", "future", "ids")

    def __init__(self, digest: str, ids: list[int], future: asyncio.Future[list[Row] | None]) -> None:
        self.digest, self.ids, self.future = digest, ids, future


class CoalescedChecks:
    """Collects a database's lookups of one event-loop turn and reads them with one statement. It holds
    the database only while a batch is under way (it is kept per database, weakly)."""

    def __init__(self) -> None:
        self.pending: list[_Lookup] = []
        self.running: set[asyncio.Task[None]] = set()

    async def lookup(self, db: Database, digest: str, ids: list[int]) -> list[Row] | None:
        """The rows of the client's orders among the ids; None when no active client has the digest."""
        loop = asyncio.get_running_loop()
        if not self.pending:
            loop.call_soon(self._flush, db)
        entry = _Lookup(digest, ids, loop.create_future())
        self.pending.append(entry)
        return await entry.future

    def _flush(self, db: Database) -> None:
        batch, self.pending = self.pending, []
        task = asyncio.get_running_loop().create_task(self._read(db, batch))
        self.running.add(task)  # a reference until it ends
        task.add_done_callback(self.running.discard)

    async def _read(self, db: Database, batch: list[_Lookup]) -> None:
        requests: list[int] = []
        digests: list[str] = []
        ids: list[int | None] = []
        for index, entry in enumerate(batch):
            for order_id in entry.ids or (None,):
                requests.append(index)
                digests.append(entry.digest)
                ids.append(order_id)
        try:
            async with db.read_link() as link:
                rows = await link.rows(_BATCH, {"requests": requests, "digests": digests, "ids": ids})
        except Exception as exc:  # every waiter learns of it; none is left hanging
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc)
            return
        except BaseException:
            for entry in batch:
                entry.future.cancel()
            raise
        answers: list[list[Row] | None] = [None] * len(batch)
        for row in rows:
            found = answers[row["request"]]
            if found is None:
                found = answers[row["request"]] = []
            found.append(row)
        for entry, answer in zip(batch, answers, strict=True):
            if not entry.future.done():  # a request whose client left is cancelled
                entry.future.set_result(answer)


_coalescers: weakref.WeakKeyDictionary[Database, CoalescedChecks] = weakref.WeakKeyDictionary()


async def find_client_orders(
    db: Database, keyring: Keyring, api_secret: str, ids: Iterable[int]
) -> Found | None:
    """The orders among the ids that belong to the active client holding this API secret, by id, each
    with its card's number ("" without one); None when no active client holds the secret."""
    wanted = sorted(set(ids))
    digest = api_secret_digest(api_secret)
    if digest is None:
        return None
    if db.dialect != "postgresql":
        async with db.read_link() as link:
            rows = await link.rows(_ONE_CHECK, {"api_secret_hash": digest, "ids": wanted})
        return with_numbers(keyring, rows) if rows else None
    coalescer = _coalescers.get(db)
    if coalescer is None:
        coalescer = _coalescers[db] = CoalescedChecks()
    batched = await coalescer.lookup(db, digest, wanted)
    if batched is None:
        return None
    return with_numbers(keyring, sorted((r for r in batched if r["id"] is not None), key=lambda r: r["id"]))
