"""Core statements for merchants on the request pipelines."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import make_transient_to_detached

from greengate.store.db import table_of
from greengate.store.links import Link
from greengate.store.models import Merchant

_MERCHANTS = table_of(Merchant)
_MERCHANT_BY_ID = select(_MERCHANTS).where(_MERCHANTS.c.id == bindparam("id"))


# Detached merchants as last read, by id, each with the row it was made of: making one costs more
# than the statement that reads it. Never attached to a session, so a process's requests share them.
_MERCHANTS_READ: dict[int, tuple[tuple[Any, ...], Merchant]] = {}
_MAX_MERCHANTS_KEPT = 4096


async def find_merchant(link: Link, merchant_id: int) -> Merchant | None:
    """The merchant, read by one Core statement and handed over as a detached object: what the
    pipeline and its handlers read of it, without a session's identity map and unit of work."""
    row = await link.row(_MERCHANT_BY_ID, {"id": merchant_id})
    if row is None:
        return None
    values = tuple(row.values())
    kept = _MERCHANTS_READ.get(merchant_id)
    if kept is not None and kept[0] == values:
        return kept[1]
    merchant = Merchant(**dict(row))
    make_transient_to_detached(merchant)
    if len(_MERCHANTS_READ) >= _MAX_MERCHANTS_KEPT:
        _MERCHANTS_READ.clear()
    _MERCHANTS_READ[merchant_id] = (values, merchant)
    return merchant
