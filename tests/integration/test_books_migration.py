"""The migration to two books, from a database at the revision before it holding test and live
payments and a test payout: the test movements land in the test book, the live ones stay, every
account's sums are recomputed, and the check is clean."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from greengate.domain.ledger import Book
from greengate.services import ledger
from greengate.store import migrate
from greengate.store.db import Database
from tests.conftest import is_postgres

BEFORE = "0007"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
async def empty_url(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A database of its own, empty: a file beside the test's, or a fresh PostgreSQL database."""
    if not is_postgres(database_url):
        yield f"sqlite+aiosqlite:///{tmp_path / 'before-books.db'}"
        return
    url = make_url(database_url)
    name = f"{url.database}_books_migration"
    admin = create_async_engine(
        url.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


async def _payment(conn: object, payment_id: int, amount: int, testing: bool) -> None:
    await conn.execute(  # type: ignore[attr-defined]
        text(
            "INSERT INTO payments (id, merchant_id, open_order, status, version, amount, currency,"
            " description, testing, language, request_method, success_url_method, failure_url_method,"
            " state_url_method, two_step, captured, recurring_start, extra_params, access_token,"
            " require_3ds, refunded_amount, result_sent, expires_at, created_at, updated_at, fee_amount)"
            " VALUES (:id, 1, :t, 'ok', 1, :amount, 'KZT', 'goods', :testing, 'ru', 'POST', 'GET', 'GET',"
            " 'GET', :f, :f, :f, '[]', :token, :f, 0, :t, :now, :now, :now, 0)"
        ),
        {
            "id": payment_id,
            "amount": amount,
            "testing": testing,
            "t": True,
            "f": False,
            "token": f"token-{payment_id}",
            "now": NOW,
        },
    )


async def _seed(engine: AsyncEngine) -> None:
    """What a gateway at 0007 holds: one merchant with test and live payments, a partial refund of a
    test payment, a test payout reserved, and the single book those movements were posted to."""
    accounts = {
        1: ("merchant:1", "available"),
        2: ("gateway", "acquirer_clearing"),
        3: ("merchant:1", "reserved"),
    }
    # transaction id -> (reason, object type, object id, [(account, debit, credit)])
    movements = {
        1: ("payment.succeeded", "payment", "1", [(2, 10_000, 0), (1, 0, 10_000)]),
        2: ("payment.succeeded", "payment", "2", [(2, 30_000, 0), (1, 0, 30_000)]),
        3: ("payment.refunded", "payment_refund", "1:4000", [(1, 4_000, 0), (2, 0, 4_000)]),
        4: ("payout.reserved", "payout", "1", [(1, 3_000, 0), (3, 0, 3_000)]),
        5: ("payment.refunded", "payment_refund", "2:500", [(1, 500, 0), (2, 0, 500)]),
    }
    sums = {acc: [0, 0] for acc in accounts}
    for _, _, _, legs in movements.values():
        for acc, d, c in legs:
            sums[acc][0] += d
            sums[acc][1] += c
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO merchants (id, name, mode, active, created_at, updated_at)"
                " VALUES (1, 'Shop', 'live', :t, :now, :now)"
            ),
            {"t": True, "now": NOW},
        )
        await _payment(conn, 1, 10_000, True)
        await _payment(conn, 2, 30_000, False)
        await conn.execute(
            text(
                "INSERT INTO payouts (id, merchant_id, kind, order_id, status, version, amount, currency,"
                " description, testing, language, request_method, access_token, request_hash,"
                " first_answer, extra_params, expires_at, created_at, updated_at)"
                " VALUES (1, 1, 'reg2nonreg', 'PO-1', 'new', 1, 3000, 'KZT', 'prize', :t, 'ru', 'POST',"
                " 'payout-token', 'hash', '[]', '[]', :now, :now, :now)"
            ),
            {"t": True, "now": NOW},
        )
        for acc, (owner, kind) in accounts.items():
            await conn.execute(
                text(
                    "INSERT INTO ledger_accounts (id, owner, kind, currency, debits_posted, credits_posted,"
                    " debits_pending, credits_pending, version, created_at, updated_at)"
                    " VALUES (:id, :owner, :kind, 'KZT', :d, :c, 0, 0, 1, :now, :now)"
                ),
                {"id": acc, "owner": owner, "kind": kind, "d": sums[acc][0], "c": sums[acc][1], "now": NOW},
            )
        entry = 0
        for tx_id, (reason, otype, oid, legs) in movements.items():
            await conn.execute(
                text(
                    "INSERT INTO ledger_transactions (id, reason, object_type, object_id, created_at)"
                    " VALUES (:id, :reason, :otype, :oid, :now)"
                ),
                {"id": tx_id, "reason": reason, "otype": otype, "oid": oid, "now": NOW},
            )
            for acc, d, c in legs:
                entry += 1
                await conn.execute(
                    text(
                        "INSERT INTO ledger_entries (id, transaction_id, account_id, debit, credit, currency,"
                        " created_at) VALUES (:id, :tx, :acc, :d, :c, 'KZT', :now)"
                    ),
                    {"id": entry, "tx": tx_id, "acc": acc, "d": d, "c": c, "now": NOW},
                )
        if engine.dialect.name == "postgresql":  # the rows above were given their ids
            for table in (
                "merchants",
                "payments",
                "payouts",
                *(f"ledger_{t}" for t in ("accounts", "transactions", "entries")),
            ):
                await conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                        f" (SELECT MAX(id) FROM {table}))"
                    )
                )


async def test_migration_moves_test_payments_entries_to_the_test_book(empty_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, empty_url, BEFORE)
    engine = create_async_engine(empty_url, poolclass=NullPool)
    try:
        await _seed(engine)
    finally:
        await engine.dispose()

    await asyncio.to_thread(migrate.upgrade, empty_url)

    db = Database(empty_url)
    try:
        async with db.transaction() as session:
            got = {(b.book, b.owner, b.kind): b.balance for b in await ledger.balances(session)}
            problems = await ledger.check(session)
            moved = await session.scalar(text("SELECT COUNT(*) FROM ledger_transactions"))
    finally:
        await db.dispose()
    assert problems == []
    assert moved == 5
    assert got == {
        (Book.TEST.value, "merchant:1", "available"): 10_000 - 4_000 - 3_000,
        (Book.TEST.value, "merchant:1", "reserved"): 3_000,
        (Book.TEST.value, "gateway", "acquirer_clearing"): 10_000 - 4_000,
        (Book.LIVE.value, "merchant:1", "available"): 30_000 - 500,
        (Book.LIVE.value, "merchant:1", "reserved"): 0,
        (Book.LIVE.value, "gateway", "acquirer_clearing"): 30_000 - 500,
    }
