"""Refunds racing on one payment: twenty revoke.php requests at once, through the ASGI app (each request
its own database session and transaction) and through real server processes. However they interleave,
no more than was paid is refunded, every refund is posted once, and the books stay clean.

The merchant holds more than the payment on its balance, so the ledger's balance guard alone could
not stop an over-refund: the payment's own limit has to. Refunds and payouts racing for a balance
that cannot cover them all are the balance guard's job: no more leaves than was there."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from greengate.clock import utcnow
from greengate.domain import ledger as L
from greengate.domain.card_rules import validate_card_form
from greengate.runtime import Runtime
from greengate.services import ledger, payment_flow
from greengate.services.merchants import create_merchant
from greengate.store.models import LedgerTransaction, Payment, Payout, Refund
from tests.conftest import is_postgres
from tests.support.merchant_api import Answer, Shop, make_shop, send, signed
from tests.support.processes import Processes

N = 20
APPROVED = "4405645000006150"


async def paid(shop: Shop, rt: Runtime, amount: str) -> int:
    payment_id = await shop.init_ok(pg_amount=amount)
    card = validate_card_form(APPROVED, "12", "2030", "Test User", "123", date.today())
    async with rt.db.transaction() as session:
        assert (await payment_flow.submit_card(session, rt, payment_id, card, utcnow())).status == "ok"
    return payment_id


async def revoke_all(shop: Shop, payment_id: int, amount: str | None) -> list[Answer]:
    fields = {"pg_payment_id": str(payment_id)}
    if amount is not None:
        fields["pg_refund_amount"] = amount
    return list(await asyncio.gather(*(shop.call("revoke.php", fields) for _ in range(N))))


async def assert_books(rt: Runtime, shop: Shop, payment_id: int, answers: list[Answer]) -> int:
    """The refunds the answers report are exactly the ones recorded, within what was paid; returns
    the refunded total in minor units."""
    ok = [a for a in answers if a.status == "ok"]
    for answer in answers:
        if answer.status == "ok":
            answer.assert_ok(shop.secret)
        else:
            answer.assert_error(490, shop.secret)
    async with rt.db.transaction() as session:
        payment = await session.get(Payment, payment_id)
        assert payment is not None
        refunds = list(await session.scalars(select(Refund).where(Refund.payment_id == payment_id)))
        postings = await session.scalar(
            select(func.count())
            .select_from(LedgerTransaction)
            .where(LedgerTransaction.object_type == "payment_refund")
        )
        problems = await ledger.check(session)
        balances = await ledger.balances(session, shop.merchant_id)
    total = sum(r.amount for r in refunds)
    assert total == payment.refunded_amount <= payment.amount
    assert len(refunds) == len(ok) == postings
    assert sorted(a["pg_refund_payment_id"] for a in ok) == sorted(str(r.id) for r in refunds)
    assert problems == []
    assert all(b.balance >= 0 for b in balances), balances
    return total


@pytest.fixture
async def shop(rt: Runtime, app_client: httpx.AsyncClient) -> Shop:
    return await make_shop(rt, app_client)


async def test_twenty_simultaneous_partial_revokes_never_refund_more_than_was_paid(
    rt: Runtime, shop: Shop
) -> None:
    await paid(shop, rt, "5000")  # balance beyond the payment
    payment_id = await paid(shop, rt, "1000")

    answers = await revoke_all(shop, payment_id, "75")

    assert Counter(a.status for a in answers) == {"ok": 13, "error": 7}
    assert await assert_books(rt, shop, payment_id, answers) == 97_500
    async with rt.db.transaction() as session:
        have = await ledger.balance(
            session, L.merchant_owner(shop.merchant_id), "available", "KZT", L.Book.TEST
        )
    assert have == 600_000 - 97_500


async def test_twenty_simultaneous_full_revokes_refund_once(rt: Runtime, shop: Shop) -> None:
    await paid(shop, rt, "5000")
    payment_id = await paid(shop, rt, "1000")

    answers = await revoke_all(shop, payment_id, None)

    assert Counter(a.status for a in answers) == {"ok": 1, "error": 19}
    assert await assert_books(rt, shop, payment_id, answers) == 100_000
    status = await shop.status(payment_id)
    assert (status["pg_transaction_status"], status["pg_refund_amount"]) == ("revoked", "1000.00")


@pytest.fixture
def processes(database_url: str, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(database_url, tmp_path)
    yield procs
    procs.close()


@pytest.mark.slow
async def test_simultaneous_revokes_across_server_processes(
    rt: Runtime, shop: Shop, processes: Processes, free_port: int, tmp_path: Path
) -> None:
    await paid(shop, rt, "5000")
    payment_id = await paid(shop, rt, "1000")
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = processes.env()
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    await asyncio.to_thread(processes.serve, free_port, "--workers", "2", "--no-worker", env=env)

    limits = httpx.Limits(max_connections=N)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{free_port}", limits=limits, timeout=30
    ) as client:
        remote = Shop(client, shop.merchant_id, shop.secret)
        answers = await revoke_all(remote, payment_id, "75")

    assert Counter(a.status for a in answers) == {"ok": 13, "error": 7}
    assert await assert_books(rt, shop, payment_id, answers) == 97_500


async def test_simultaneous_retries_with_one_key_refund_once(
    rt: Runtime, shop: Shop, database_url: str
) -> None:
    await paid(shop, rt, "5000")
    payment_id = await paid(shop, rt, "1000")
    fields = {"pg_payment_id": str(payment_id), "pg_refund_amount": "75", "pg_idempotency_key": "once-1"}

    answers = list(await asyncio.gather(*(shop.call("revoke.php", fields) for _ in range(N))))

    ok = [a.assert_ok(shop.secret) for a in answers if a.status == "ok"]
    busy = [a.assert_error(350, shop.secret) for a in answers if a.status == "error"]
    assert ok and len(ok) + len(busy) == N
    assert len({a["pg_refund_payment_id"] for a in ok}) == 1
    if not is_postgres(database_url):
        assert not busy  # SQLite's single writer: every repeat finds the stored answer
    async with rt.db.transaction() as session:
        amounts = list(await session.scalars(select(Refund.amount).where(Refund.payment_id == payment_id)))
        assert await ledger.check(session) == []
    assert amounts == [7_500]


async def test_parallel_revokes_and_payouts_never_take_more_than_the_balance(
    rt: Runtime, app_client: httpx.AsyncClient
) -> None:
    async with rt.db.transaction() as session:
        merchant, creds = await create_merchant(session, rt.keyring, name="Busy", mode="test", now=utcnow())
    shop = Shop(app_client, merchant.id, creds.secret_key)
    payment_ids = [await paid(shop, rt, "1000") for _ in range(4)]
    there = 400_000  # 4 000.00 available; asked for: 4 000.00 of refunds (each asked thrice) + 5 600.00

    async def payout(i: int) -> Answer:
        fields = [
            ("pg_merchant_id", str(merchant.id)),
            ("pg_amount", "700"),
            ("pg_order_id", f"RACE-{i}"),
            ("pg_user_id", "winner"),
            ("pg_description", "prize"),
        ]
        params = signed("reg2nonreg", fields, creds.payout_secret)
        return Answer.read(await send(app_client, "/api/reg2nonreg", params, "form"), "reg2nonreg")

    revokes = [shop.call("revoke.php", {"pg_payment_id": str(p)}) for p in payment_ids for _ in range(3)]
    payouts = [payout(i) for i in range(8)]
    calls = [*revokes[len(payouts) :]]
    for revoke, payout_call in zip(revokes, payouts, strict=False):  # side by side
        calls += [revoke, payout_call]
    answers = await asyncio.gather(*calls)
    refunded_ok = [a.assert_ok(shop.secret) for a in answers if a.script == "revoke.php" and a.status == "ok"]
    paid_out_ok = [
        a.assert_ok(creds.payout_secret) for a in answers if a.script == "reg2nonreg" and a.status == "ok"
    ]
    for answer in answers:
        if answer.status != "ok":
            # 490: the payment was refunded in full by a racing revoke; 600: the balance is short.
            secret = creds.payout_secret if answer.script == "reg2nonreg" else shop.secret
            assert answer.error_code in (490, 600), answer.description
            answer.assert_error(answer.error_code, secret)
    async with rt.db.transaction() as session:
        refunds = list(await session.scalars(select(Refund)))
        reserved = list(await session.scalars(select(Payout).where(Payout.status == "new")))
        all_payouts = await session.scalar(select(func.count()).select_from(Payout))
        problems = await ledger.check(session)
        balances = await ledger.balances(session, merchant.id)
        have = await ledger.balance(session, L.merchant_owner(merchant.id), "available", "KZT", L.Book.TEST)
        over = await session.scalar(
            select(func.count()).select_from(Payment).where(Payment.refunded_amount > Payment.amount)
        )
    taken = sum(r.amount for r in refunds) + sum(p.amount for p in reserved)
    assert len(refunds) == len(refunded_ok) and len(reserved) == len(paid_out_ok) == all_payouts
    assert len({r.payment_id for r in refunds}) == len(refunds) and over == 0  # no double refund
    assert 0 < taken <= there and have == there - taken
    assert have < 70_000  # nothing was refused that the balance could still cover
    assert len(refunded_ok) + len(paid_out_ok) < len(answers)  # the balance could not cover them all
    assert problems == []
    assert all(b.balance >= 0 for b in balances), balances
