"""Links: Core statements run on the hot paths' connections, the same on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import BigInteger, bindparam, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.store.db import table_of
from greengate.store.models import Rate

RATES = table_of(Rate)
INSERT_RATE = (
    insert(RATES)
    .values({name: bindparam(name) for name in ("source", "base", "quote", "rate", "fetched_at")})
    .returning(RATES.c.id)
)
# A literal bound by the statement itself (the 0), next to the caller's values.
COUNT = select(func.coalesce(func.count(RATES.c.id), 0).label("n")).where(
    RATES.c.source == bindparam("source")
)
BY_IDS = select(RATES.c.id, RATES.c.rate).where(
    RATES.c.id == func.any(bindparam("ids", type_=ARRAY(BigInteger)))
)
EXPANDING = select(RATES.c.id).where(RATES.c.id.in_(bindparam("ids", expanding=True)))


async def add_rate(rt: Runtime, source: str, rate: str, quote: str = "RUB") -> Any:
    async with rt.db.link() as link:
        row = await link.row(
            INSERT_RATE,
            {"source": source, "base": "BTC", "quote": quote, "rate": rate, "fetched_at": utcnow()},
        )
    assert row is not None
    return row["id"]


async def test_a_link_writes_in_a_transaction_and_reads_rows_by_name(rt: Runtime) -> None:
    first = await add_rate(rt, "links", "100.5")
    await add_rate(rt, "links", "101", quote="KZT")

    async with rt.db.link(transaction=False) as link:
        counted = await link.row(COUNT, {"source": "links"})
        none = await link.row(COUNT, {"source": "absent"})

    assert (counted is not None and counted["n"], none is not None and none["n"]) == (2, 0)
    assert first is not None


async def test_a_failing_transaction_leaves_nothing(rt: Runtime) -> None:
    with pytest.raises(RuntimeError):
        async with rt.db.link() as link:
            await link.row(
                INSERT_RATE,
                {"source": "rolled", "base": "BTC", "quote": "RUB", "rate": "1", "fetched_at": utcnow()},
            )
            raise RuntimeError("the use case fails after its insert")

    async with rt.db.link(transaction=False) as link:
        counted = await link.row(COUNT, {"source": "rolled"})
    assert counted is not None and counted["n"] == 0


async def test_links_refuse_expanding_lists_on_both_databases(rt: Runtime) -> None:
    """Statements are compiled once: a list must go in as an array (PostgreSQL), never expanded."""
    async with rt.db.read_link() as link:
        with pytest.raises(ValueError, match="expanding"):
            await link.rows(EXPANDING, {"ids": [1, 2]})


async def test_postgresql_links_bind_arrays_and_refuse_expanding_lists(rt: Runtime) -> None:
    if rt.db.dialect != "postgresql":
        pytest.skip("arrays are PostgreSQL's")
    ids = [await add_rate(rt, "arrays", "7"), await add_rate(rt, "arrays", "8", quote="KZT")]

    async with rt.db.link(transaction=False) as link:
        rows = await link.rows(BY_IDS, {"ids": ids})
        with pytest.raises(ValueError, match="expanding"):
            await link.rows(EXPANDING, {"ids": ids})

    assert sorted((r["id"], r["rate"]) for r in rows) == sorted(zip(ids, ["7", "8"], strict=True))


async def test_postgresql_links_plan_once_per_connection(rt: Runtime) -> None:
    if rt.db.dialect != "postgresql":
        pytest.skip("a PostgreSQL session setting")
    async with rt.db.link(transaction=False) as link:
        row = await link.row(select(func.current_setting("plan_cache_mode").label("mode")), {})
    assert row is not None and row["mode"] == "force_generic_plan"
