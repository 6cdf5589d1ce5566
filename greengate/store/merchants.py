"""Core statements for merchants on the request pipelines.

A script reads its merchant by one statement, and what it needs besides (a stored answer, the payment
a status asks for, ...) by outer joins on that same statement: one round trip, whatever the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Select, bindparam, select
from sqlalchemy.orm import make_transient_to_detached

from greengate.store.db import table_of
from greengate.store.links import Row
from greengate.store.models import Merchant

MERCHANTS = table_of(Merchant)
_KEYS = tuple(c.key for c in MERCHANTS.c)
_LABELS = tuple(f"merchant_{key}" for key in _KEYS)


@dataclass(frozen=True)
class Joined:
    """What a script reads beside its merchant: a table outer-joined on a condition (which names
    `MERCHANTS.c.id` and the script's bound values), and the labelled columns it contributes."""

    target: FromClause
    on: ColumnElement[bool]
    columns: tuple[ColumnElement[Any], ...]


def merchant_statement(*joined: Joined, also: tuple[ColumnElement[Any], ...] = ()) -> Select[Any]:
    """The merchant with `:merchant_id` (its columns labelled `merchant_<name>`), the joined columns and
    `also`: a row whenever the merchant exists, the joined columns null where nothing matches."""
    columns = [c.label(label) for c, label in zip(MERCHANTS.c, _LABELS, strict=True)]
    source: FromClause = MERCHANTS
    for j in joined:
        source = source.outerjoin(j.target, j.on)
    return (
        select(*columns, *(column for j in joined for column in j.columns), *also)
        .select_from(source)
        .where(MERCHANTS.c.id == bindparam("merchant_id"))
    )


MERCHANT = merchant_statement()

# Detached merchants as last read, by id, each with the row it was made of: making one costs more
# than the statement that reads it. Never attached to a session, so a process's requests share them.
_MERCHANTS_READ: dict[int, tuple[tuple[Any, ...], Merchant]] = {}
_MAX_MERCHANTS_KEPT = 4096


def merchant_from(row: Row) -> Merchant:
    """The merchant a `merchant_statement` row holds, handed over as a detached object (what the
    pipeline and its handlers read of it, without a session's identity map and unit of work)."""
    values = tuple(row[label] for label in _LABELS)
    merchant_id = row["merchant_id"]
    kept = _MERCHANTS_READ.get(merchant_id)
    if kept is not None and kept[0] == values:
        return kept[1]
    merchant = Merchant(**dict(zip(_KEYS, values, strict=True)))
    make_transient_to_detached(merchant)
    if len(_MERCHANTS_READ) >= _MAX_MERCHANTS_KEPT:
        _MERCHANTS_READ.clear()
    _MERCHANTS_READ[merchant_id] = (values, merchant)
    return merchant
