"""Point reads of one statement started together: on PostgreSQL one batched statement answers them all,
with the very rows each would have read alone; on SQLite each runs on its own."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Integer, bindparam, func, literal, select, text

from greengate.runtime import Runtime
from greengate.store.db import Database, table_of
from greengate.store.models import Rate
from tests.integration.test_links import add_rate

RATES = table_of(Rate)
_NEWER = RATES.alias("newer")
# Constants of its own (the 0, the LIMIT 1), a parameter used twice, a correlated subquery.
LATEST = (
    select(
        RATES.c.id,
        RATES.c.rate,
        RATES.c.quote,
        func.coalesce(
            select(func.count(_NEWER.c.id))
            .where(_NEWER.c.source == bindparam("source"), _NEWER.c.id > RATES.c.id)
            .scalar_subquery(),
            0,
        ).label("newer"),
    )
    .where(RATES.c.source == bindparam("source"), RATES.c.quote == bindparam("quote"))
    .order_by(RATES.c.id.desc())
    .limit(1)
)
DIVIDE = select((literal(100) / bindparam("by", type_=Integer)).label("q"))


async def _alone(db: Database, params: dict[str, Any]) -> dict[str, Any] | None:
    async with db.read_link() as link:
        row = await link.row(LATEST, params)
    return None if row is None else {k: row[k] for k in ("id", "rate", "quote", "newer")}


async def test_reads_started_together_get_what_each_reads_alone(rt: Runtime) -> None:
    for source, quote, rate in [("a", "RUB", "1"), ("a", "KZT", "2"), ("b", "RUB", "4")]:
        await add_rate(rt, source, rate, quote=quote)
    asked = [
        {"source": source, "quote": quote}
        for source in ("a", "b", "absent")
        for quote in ("RUB", "KZT", "USD")
        for _ in range(3)
    ]

    together = await asyncio.gather(*(rt.db.read_row(LATEST, params) for params in asked))

    alone = [await _alone(rt.db, params) for params in asked]
    got = [None if row is None else {k: row[k] for k in ("id", "rate", "quote", "newer")} for row in together]
    assert got == alone
    assert sum(row is not None for row in got) == 9  # a/RUB, a/KZT, b/RUB three times each
    assert {row["newer"] for row in got if row is not None} == {0, 1}
    if rt.db.dialect == "postgresql":  # one statement, each row tagged with the read it answers
        assert sorted(row["batch_request"] for row in together if row is not None) == [
            i for i, row in enumerate(together) if row is not None
        ]


async def test_a_failing_batch_fails_every_read_in_it_and_the_next_batch_runs(rt: Runtime) -> None:
    results = await asyncio.gather(
        *(rt.db.read_row(DIVIDE, {"by": by}) for by in (1, 0, 4)), return_exceptions=True
    )

    if rt.db.dialect == "postgresql":
        assert all(isinstance(r, Exception) for r in results)  # division by zero, for all three
    else:  # each read alone: SQLite divides by zero as NULL
        assert [r["q"] for r in results if not isinstance(r, BaseException)] == [100, None, 25]
    after = await rt.db.read_row(DIVIDE, {"by": 5})
    assert after is not None and after["q"] == 20


async def test_a_cancelled_read_leaves_the_others_of_its_batch_answered(rt: Runtime) -> None:
    if rt.db.dialect != "postgresql":
        pytest.skip("SQLite reads each statement on its own: nothing to batch")
    reads = [asyncio.ensure_future(rt.db.read_row(DIVIDE, {"by": by})) for by in (1, 2, 5)]
    await asyncio.sleep(0)
    reads[1].cancel()

    done = await asyncio.gather(*reads, return_exceptions=True)

    assert isinstance(done[1], asyncio.CancelledError)
    answered = [row for row in (done[0], done[2]) if not isinstance(row, BaseException) and row is not None]
    assert [int(row["q"]) for row in answered] == [100, 20]


async def test_waiting_reads_hold_no_connection(rt: Runtime) -> None:
    """Hundreds of reads on a pool of two, one of them busy: the batch takes the one free connection."""
    db = Database(rt.settings.database_url, pool_size=2)
    try:
        async with db.read_link() as held:
            await held.row(DIVIDE, {"by": 1})
            rows = await asyncio.wait_for(
                asyncio.gather(*(db.read_row(DIVIDE, {"by": by}) for by in range(1, 301))), timeout=20
            )
        assert [int(row["q"]) for row in rows[:4] if row is not None] == [100, 50, 33, 25]
    finally:
        await db.dispose()


async def test_a_parameter_without_a_type_is_refused_before_any_read(rt: Runtime) -> None:
    if rt.db.dialect != "postgresql":
        pytest.skip("SQLite reads each statement on its own: nothing to batch")
    with pytest.raises(ValueError, match="needs a type"):
        await rt.db.read_row(text("SELECT :anything AS x"), {"anything": 1})
