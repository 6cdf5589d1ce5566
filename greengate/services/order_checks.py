"""Order checks, the Exchange API's most frequent read.

Each id is one point read: the active client holding the API secret, and its order with that id (the
client's row alone when the id is not theirs; no row when no active client holds the secret). The
reads go through `Database.read_row`, so on PostgreSQL the reads of every check a process receives in
the same turn of its event loop are one statement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from sqlalchemy import BigInteger, and_, bindparam, select

from greengate.security.encryption import Keyring
from greengate.services.exchange_orders import WIRE_COLUMNS, with_numbers
from greengate.services.merchants import ACTIVE_SECRET_OWNER, api_secret_digest
from greengate.store.db import Database, table_of
from greengate.store.links import Row
from greengate.store.models import ExchangeOrder, Merchant, Requisite

_ORDERS = table_of(ExchangeOrder)
_CHECK = (
    select(Merchant.id.label("client_id"), *(_ORDERS.c[name] for name in WIRE_COLUMNS), Requisite.number_enc)
    .select_from(Merchant)
    .outerjoin(
        _ORDERS,
        and_(
            _ORDERS.c.merchant_id == Merchant.id,
            _ORDERS.c.id == bindparam("order_id", type_=BigInteger),
        ),
    )
    .outerjoin(Requisite, Requisite.id == _ORDERS.c.requisite_id)
    .where(ACTIVE_SECRET_OWNER)
)
Found = list[tuple[Row, str]]


async def find_client_orders(
    db: Database, keyring: Keyring, api_secret: str, ids: Iterable[int]
) -> Found | None:
    """The orders among the ids that belong to the active client holding this API secret, by id, each
    with its card's number ("" without one); None when no active client holds the secret."""
    digest = api_secret_digest(api_secret)
    if digest is None:
        return None
    wanted: list[int | None] = [*sorted(set(ids))] or [None]
    rows = await asyncio.gather(
        *(db.read_row(_CHECK, {"api_secret_hash": digest, "order_id": order_id}) for order_id in wanted)
    )
    if any(row is None for row in rows):
        return None
    return with_numbers(keyring, (row for row in rows if row is not None))
