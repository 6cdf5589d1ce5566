"""Two-step payments over HTTP: authorisation, do_capture.php (full and partial, fee at capture), the
capture callback, the automatic capture after five days, cancel.php releasing an authorisation, and
refusals in states that forbid a capture. Every refused request is answered signed and writes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from greengate.clock import utcnow
from greengate.domain import ledger as L
from greengate.domain.card_rules import validate_card_form
from greengate.runtime import Runtime
from greengate.services import ledger, payment_flow
from greengate.services.fees import set_fee
from greengate.settings import Settings
from greengate.store.models import LedgerTransaction, PaymentCapture
from greengate.worker.loop import Worker
from tests.conftest import make_settings
from tests.support.merchant_api import Answer, CallbackServer, Shop, make_shop, table_counts

APPROVED = "4405645000006150"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, callback_timeout_seconds=0.5)


@pytest.fixture
async def shop(rt: Runtime, app_client: httpx.AsyncClient) -> Shop:
    return await make_shop(rt, app_client)


@pytest.fixture
def server(shop: Shop) -> Iterator[CallbackServer]:
    with CallbackServer(shop.secret) as s:
        yield s


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


async def authorised(shop: Shop, rt: Runtime, amount: str = "100", **fields: str) -> int:
    values = {"pg_postpone_payment": "1", **fields}
    payment_id = await shop.init_ok(pg_amount=amount, **values)
    card = validate_card_form(APPROVED, "12", "2030", "Test User", "123", date.today())
    async with rt.db.transaction() as session:
        assert (await payment_flow.submit_card(session, rt, payment_id, card, utcnow())).status == "ok"
    return payment_id


async def capture(shop: Shop, payment_id: int, **fields: str) -> Answer:
    return await shop.call("do_capture.php", {"pg_payment_id": str(payment_id), **fields})


async def balance(rt: Runtime, shop: Shop, kind: str) -> int:
    async with rt.db.transaction() as session:
        return await ledger.balance(session, L.merchant_owner(shop.merchant_id), kind, "KZT", L.Book.TEST)


async def ledger_problems(rt: Runtime) -> list[str]:
    async with rt.db.transaction() as session:
        return await ledger.check(session)


async def drain(worker: Worker) -> None:
    for _ in range(50):
        if await worker.run_once() == 0:
            return
    raise AssertionError("the worker never became idle")


@pytest.mark.parametrize(
    "flag", [("pg_postpone_payment", "1"), ("pg_postpone", "1"), ("pg_auto_clearing", "0")]
)
async def test_two_step_payment_is_authorised_then_captured_in_full(
    rt: Runtime, shop: Shop, flag: tuple[str, str]
) -> None:
    async with rt.db.transaction() as session:
        await set_fee(
            session, shop.merchant_id, payment_system="*", percent="2", fixed=0, currency="KZT", now=utcnow()
        )
    payment_id = await shop.init_ok(pg_amount="250", **{flag[0]: flag[1]})
    card = validate_card_form(APPROVED, "12", "2030", "Test User", "123", date.today())
    async with rt.db.transaction() as session:
        await payment_flow.submit_card(session, rt, payment_id, card, utcnow())
    status = await shop.status(payment_id)
    assert (status["pg_transaction_status"], status["pg_captured"]) == ("ok", "0")
    assert (await shop.status(payment_id, "get_status3.php"))["pg_clearing_amount"] == "0.00"
    assert (await balance(rt, shop, "pending"), await balance(rt, shop, "available")) == (25_000, 0)

    answer = (await capture(shop, payment_id)).assert_ok(shop.secret)

    assert (answer["pg_payment_id"], answer["pg_clearing_amount"], answer["pg_captured"]) == (
        str(payment_id),
        "250.00",
        "1",
    )
    status = await shop.status(payment_id)
    assert (status["pg_transaction_status"], status["pg_captured"]) == ("ok", "1")
    assert (await shop.status(payment_id, "get_status3.php"))["pg_clearing_amount"] == "250.00"
    assert (await balance(rt, shop, "pending"), await balance(rt, shop, "available")) == (0, 24_500)
    assert await ledger_problems(rt) == []


@pytest.mark.parametrize("name", ["pg_clearing_amount", "pg_amount"])
async def test_partial_capture_charges_the_fee_on_what_was_captured(
    rt: Runtime, shop: Shop, name: str
) -> None:
    async with rt.db.transaction() as session:
        await set_fee(
            session,
            shop.merchant_id,
            payment_system="*",
            percent="1",
            fixed=100,
            currency="KZT",
            now=utcnow(),
        )
    payment_id = await authorised(shop, rt, "100")

    answer = (await capture(shop, payment_id, **{name: "60"})).assert_ok(shop.secret)

    assert (answer["pg_amount"], answer["pg_clearing_amount"]) == ("100.00", "60.00")
    # 60.00 captured, fee 1 % + 1.00 = 1.60; the other 40.00 goes back to the payer.
    assert (await balance(rt, shop, "pending"), await balance(rt, shop, "available")) == (0, 5_840)
    async with rt.db.transaction() as session:
        row = await session.scalar(select(PaymentCapture).where(PaymentCapture.payment_id == payment_id))
        reasons = list(
            await session.scalars(
                select(LedgerTransaction.reason)
                .where(LedgerTransaction.object_id == str(payment_id))
                .order_by(LedgerTransaction.id)
            )
        )
    assert row is not None and (row.amount, row.fee) == (6_000, 160)
    assert reasons == ["payment.authorized", "payment.captured"]
    # Refunds are limited to what was captured.
    before = await table_counts(rt)
    (
        await shop.call("revoke.php", {"pg_payment_id": str(payment_id), "pg_refund_amount": "60.01"})
    ).assert_error(490, shop.secret, "pg_refund_amount")
    assert await table_counts(rt) == before
    # The fee is not returned: the merchant can refund what it holds, 58.40.
    refund = (
        await shop.call("revoke.php", {"pg_payment_id": str(payment_id), "pg_refund_amount": "58.40"})
    ).assert_ok(shop.secret)
    assert refund["pg_revoke_amount"] == "58.40"
    assert await ledger_problems(rt) == []


async def test_capture_callback_goes_to_the_capture_url(
    rt: Runtime, shop: Shop, server: CallbackServer
) -> None:
    payment_id = await authorised(
        shop, rt, "300", pg_order_id="C-1", pg_capture_url=server.url("/shop/capture.php"), shop_cart="c-3"
    )
    (await capture(shop, payment_id, pg_clearing_amount="120.5")).assert_ok(shop.secret)
    await drain(Worker(rt))

    [callback] = server.received("/shop/capture.php")
    assert callback.verifies(shop.secret) and callback.script == "capture.php"
    assert (callback["pg_payment_id"], callback["pg_order_id"]) == (str(payment_id), "C-1")
    assert (callback["pg_amount"], callback["pg_clearing_amount"], callback["pg_net_amount"]) == (
        "300.00",
        "120.50",
        "120.50",
    )
    assert (callback["pg_captured"], callback["pg_result"], callback["shop_cart"]) == ("1", "1", "c-3")
    assert callback["pg_capture_date"] and callback["pg_card_pan"] == "4405-64XX-XXXX-6150"


async def test_capture_is_refused_where_the_state_forbids_it(rt: Runtime, shop: Shop) -> None:
    one_step = await shop.init_ok()
    card = validate_card_form(APPROVED, "12", "2030", "Test User", "123", date.today())
    async with rt.db.transaction() as session:
        await payment_flow.submit_card(session, rt, one_step, card, utcnow())
    unpaid = await shop.init_ok(pg_postpone_payment="1")
    captured = await authorised(shop, rt)
    (await capture(shop, captured)).assert_ok(shop.secret)
    released = await authorised(shop, rt)
    (await shop.call("cancel.php", {"pg_payment_id": str(released)})).assert_ok(shop.secret)
    too_much = await authorised(shop, rt, "100")

    before = await table_counts(rt)
    for payment_id in (one_step, unpaid, captured, released):
        (await capture(shop, payment_id)).assert_error(490, shop.secret)
    (await capture(shop, too_much, pg_amount="100.01")).assert_error(490, shop.secret, "pg_amount")
    (await capture(shop, too_much, pg_amount="abc")).assert_error(200, shop.secret, "pg_amount")
    (await capture(shop, too_much, pg_clearing_amount="0")).assert_error(
        200, shop.secret, "pg_clearing_amount"
    )
    (await shop.call("do_capture.php", {})).assert_error(200, shop.secret, "pg_payment_id")
    (await capture(shop, too_much + 1000)).assert_error(340, shop.secret)
    # A captured payment is no longer an authorisation to release.
    (await shop.call("cancel.php", {"pg_payment_id": str(captured)})).assert_error(490, shop.secret)
    assert await table_counts(rt) == before


async def test_cancel_releases_an_uncaptured_authorisation(rt: Runtime, shop: Shop) -> None:
    payment_id = await authorised(shop, rt, "100", pg_order_id="REL-1")

    (await shop.call("cancel.php", {"pg_payment_id": str(payment_id)})).assert_ok(shop.secret)

    status = await shop.status(payment_id)
    assert (status["pg_transaction_status"], status["pg_captured"]) == ("failed", "0")
    assert (await balance(rt, shop, "pending"), await balance(rt, shop, "available")) == (0, 0)
    async with rt.db.transaction() as session:
        reasons = list(
            await session.scalars(
                select(LedgerTransaction.reason)
                .where(LedgerTransaction.object_id == str(payment_id))
                .order_by(LedgerTransaction.id)
            )
        )
    assert reasons == ["payment.authorized", "payment.voided"]
    # The automatic capture finds nothing to capture; the order id is free again.
    clock = Clock()
    clock.advance(timedelta(days=5, seconds=1))
    await drain(Worker(rt, clock=clock))
    assert (await shop.status(payment_id))["pg_captured"] == "0"
    assert await shop.init_ok(pg_order_id="REL-1") != payment_id
    assert await ledger_problems(rt) == []


async def test_an_authorisation_left_alone_is_captured_after_five_days(
    rt: Runtime, shop: Shop, server: CallbackServer
) -> None:
    payment_id = await authorised(shop, rt, "80", pg_capture_url=server.url("/shop/capture.php"))
    clock = Clock()
    worker = Worker(rt, clock=clock)
    clock.advance(timedelta(days=4, hours=23))
    await drain(worker)
    assert (await shop.status(payment_id))["pg_captured"] == "0"

    clock.advance(timedelta(hours=1, seconds=1))
    await drain(worker)

    assert (await shop.status(payment_id))["pg_captured"] == "1"
    [callback] = server.received("/shop/capture.php")
    assert (callback["pg_clearing_amount"], callback["pg_captured"]) == ("80.00", "1")
    async with rt.db.transaction() as session:
        row = await session.scalar(select(PaymentCapture).where(PaymentCapture.payment_id == payment_id))
    assert row is not None and (row.amount, row.actor) == (8_000, "worker")
    assert await balance(rt, shop, "available") == 8_000
    assert await ledger_problems(rt) == []


async def test_a_retried_capture_with_the_same_key_captures_once(rt: Runtime, shop: Shop) -> None:
    payment_id = await authorised(shop, rt, "100")
    first = (await capture(shop, payment_id, pg_amount="70", pg_idempotency_key="cap-1")).assert_ok(
        shop.secret
    )
    again = (await capture(shop, payment_id, pg_amount="70", pg_idempotency_key="cap-1")).assert_ok(
        shop.secret
    )
    assert again.params[:-2] == first.params[:-2]  # the same answer, freshly salted and signed
    # Without the key a second capture is refused: the payment is captured.
    (await capture(shop, payment_id, pg_amount="70")).assert_error(490, shop.secret)
    async with rt.db.transaction() as session:
        rows = list(await session.scalars(select(PaymentCapture)))
    assert [r.amount for r in rows] == [7_000]


async def test_captures_racing_cancels_have_exactly_one_winner(rt: Runtime, shop: Shop) -> None:
    payment_id = await authorised(shop, rt, "100")
    calls = [capture(shop, payment_id) for _ in range(10)] + [
        shop.call("cancel.php", {"pg_payment_id": str(payment_id)}) for _ in range(10)
    ]

    answers = list(await asyncio.gather(*calls))

    won = [i for i, a in enumerate(answers) if a.status == "ok"]
    assert len(won) == 1, [a.params for a in answers]
    for answer in answers:
        if answer.status == "error":
            answer.assert_error(490, shop.secret)
    captured = won[0] < 10
    status = await shop.status(payment_id)
    assert (status["pg_transaction_status"], status["pg_captured"]) == (
        ("ok", "1") if captured else ("failed", "0")
    )
    assert await balance(rt, shop, "pending") == 0
    assert await balance(rt, shop, "available") == (10_000 if captured else 0)
    assert await ledger_problems(rt) == []
