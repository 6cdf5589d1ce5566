"""Recurring payments over HTTP: pg_recurring_start=1 leaves a profile reported in the result callback,
make_recurring_payment.php charges its card without the payer (decided by the card, without 3-D Secure),
the profile's lifetime is enforced (365), retries are one charge, and bad input writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from greengate.api.exchange.wire import wire_time
from greengate.clock import utcnow
from greengate.domain import ledger as L
from greengate.domain.card_rules import validate_card_form
from greengate.runtime import Runtime
from greengate.services import ledger, payment_flow
from greengate.services.recurring import add_months
from greengate.settings import Settings
from greengate.store.models import Payment, PaymentAttempt, RecurringProfile
from greengate.worker.loop import Worker
from tests.conftest import make_settings
from tests.support.merchant_api import Answer, CallbackServer, Shop, make_shop, table_counts

APPROVED = "4405645000006150"
THREE_DS = "5483185000000293"
PROCESSING = "5548398681700148"


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


async def drain(worker: Worker) -> None:
    for _ in range(50):
        if await worker.run_once() == 0:
            return
    raise AssertionError("the worker never became idle")


async def pay(rt: Runtime, payment_id: int, number: str = APPROVED) -> str:
    card = validate_card_form(number, "12", "2030", "Test User", "123", date.today())
    async with rt.db.transaction() as session:
        status = (await payment_flow.submit_card(session, rt, payment_id, card, utcnow())).status
    if status == "3ds":
        async with rt.db.transaction() as session:
            status = (await payment_flow.submit_3ds(session, rt, payment_id, "12345678", utcnow())).status
    return status


async def profile_of(rt: Runtime, payment_id: int) -> RecurringProfile:
    async with rt.db.transaction() as session:
        profile = await session.scalar(
            select(RecurringProfile).where(RecurringProfile.payment_id == payment_id)
        )
    assert profile is not None
    return profile


async def started(shop: Shop, rt: Runtime, number: str = APPROVED, months: str = "3", **fields: str) -> int:
    """A paid payment that started a recurring profile; returns the profile id."""
    payment_id = await shop.init_ok(pg_recurring_start="1", pg_recurring_lifetime=months, **fields)
    assert await pay(rt, payment_id, number) == "ok"
    return (await profile_of(rt, payment_id)).id


async def charge(shop: Shop, profile_id: int, amount: str = "50", **fields: str) -> Answer:
    values = {
        "pg_recurring_profile": str(profile_id),
        "pg_amount": amount,
        "pg_description": "Monthly",
        **fields,
    }
    return await shop.call("make_recurring_payment.php", values)


async def test_the_result_callback_reports_the_profile(
    rt: Runtime, shop: Shop, server: CallbackServer
) -> None:
    payment_id = await shop.init_ok(
        pg_recurring_start="1", pg_recurring_lifetime="3", pg_result_url=server.url("/shop/result.php")
    )
    before_pay = utcnow()
    assert await pay(rt, payment_id) == "ok"
    await drain(Worker(rt))

    [result] = server.received("/shop/result.php")
    profile = await profile_of(rt, payment_id)
    assert result.verifies(shop.secret)
    assert result["pg_recurring_profile_id"] == str(profile.id)
    assert result["pg_recurring_profile_expiry_date"] == wire_time(profile.expires_at)
    assert add_months(before_pay, 3) <= profile.expires_at <= add_months(utcnow(), 3)
    assert profile.card_masked == "4405-64XX-XXXX-6150"


async def test_a_payment_without_recurring_start_has_no_profile(
    rt: Runtime, shop: Shop, server: CallbackServer
) -> None:
    payment_id = await shop.init_ok(pg_result_url=server.url("/shop/result.php"))
    assert await pay(rt, payment_id) == "ok"
    await drain(Worker(rt))
    [result] = server.received()
    assert "pg_recurring_profile_id" not in result
    async with rt.db.transaction() as session:
        assert list(await session.scalars(select(RecurringProfile))) == []


@pytest.mark.parametrize("number", [APPROVED, THREE_DS])
async def test_a_recurring_charge_is_paid_by_the_stored_card_without_the_payer(
    rt: Runtime, shop: Shop, server: CallbackServer, number: str
) -> None:
    profile_id = await started(shop, rt, number)

    answer = (
        await charge(
            shop,
            profile_id,
            "49.90",
            pg_order_id="SUB-2",
            pg_result_url=server.url("/shop/result.php"),
            plan="gold",
        )
    ).assert_ok(shop.secret)

    payment_id = int(answer["pg_payment_id"])
    assert (answer["pg_transaction_status"], answer["pg_amount"], answer["pg_order_id"]) == (
        "ok",
        "49.90",
        "SUB-2",
    )
    assert answer["pg_recurring_profile_id"] == str(profile_id)
    await drain(Worker(rt))
    [result] = server.received("/shop/result.php")
    assert result.verifies(shop.secret)
    assert (result["pg_payment_id"], result["pg_result"], result["pg_amount"]) == (
        str(payment_id),
        "1",
        "49.90",
    )
    assert (result["pg_card_pan"], result["plan"]) == (
        "4405-64XX-XXXX-6150" if number == APPROVED else "5483-18XX-XXXX-0293",
        "gold",
    )
    async with rt.db.transaction() as session:
        attempts = list(
            await session.scalars(select(PaymentAttempt).where(PaymentAttempt.payment_id == payment_id))
        )
        have = await ledger.balance(
            session, L.merchant_owner(shop.merchant_id), "available", "KZT", L.Book.TEST
        )
        problems = await ledger.check(session)
    assert [(a.status, a.card_holder) for a in attempts] == [("approved", "TEST USER")]
    assert have == 10_000 + 4_990 and problems == []
    # The charge is a payment like any other: it can be refunded.
    (await shop.call("revoke.php", {"pg_payment_id": str(payment_id)})).assert_ok(shop.secret)


async def test_the_stored_card_decides_as_it_would_for_the_payer(rt: Runtime, shop: Shop) -> None:
    first_id = await shop.init_ok(pg_recurring_start="1")
    assert await pay(rt, first_id, PROCESSING) == "pending"
    async with rt.db.transaction() as session:
        await payment_flow.test_action(session, first_id, "approve", now=utcnow(), actor="operator:test")
    profile = await profile_of(rt, first_id)
    # Without pg_recurring_lifetime the profile lives twelve months.
    assert profile.expires_at > add_months(utcnow(), 11)

    answer = (await charge(shop, profile.id)).assert_ok(shop.secret)

    assert answer["pg_transaction_status"] == "pending"  # this card's payments are processed later


async def test_an_expired_profile_is_refused_with_365(rt: Runtime, shop: Shop) -> None:
    profile_id = await started(shop, rt, months="1")
    async with rt.db.transaction() as session:
        await session.execute(
            update(RecurringProfile)
            .where(RecurringProfile.id == profile_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    before = await table_counts(rt)
    answer = (await charge(shop, profile_id)).assert_error(365, shop.secret)
    assert "expired" in answer.description
    assert await table_counts(rt) == before


async def test_recurring_bad_input_is_refused_signed_and_writes_nothing(
    rt: Runtime, shop: Shop, app_client: httpx.AsyncClient
) -> None:
    profile_id = await started(shop, rt)
    other = await make_shop(rt, app_client, name="Other")
    before = await table_counts(rt)
    p = str(profile_id)
    cases: list[tuple[dict[str, str], int, str | None]] = [
        ({"pg_amount": "10", "pg_description": "x"}, 200, "pg_recurring_profile"),
        (
            {"pg_recurring_profile": "x1", "pg_amount": "10", "pg_description": "x"},
            200,
            "pg_recurring_profile",
        ),
        ({"pg_recurring_profile": p, "pg_description": "x"}, 200, "pg_amount"),
        ({"pg_recurring_profile": p, "pg_amount": "0", "pg_description": "x"}, 200, "pg_amount"),
        ({"pg_recurring_profile": p, "pg_amount": "1.234", "pg_description": "x"}, 200, "pg_amount"),
        ({"pg_recurring_profile": p, "pg_amount": "10"}, 200, "pg_description"),
        (
            {"pg_recurring_profile": p, "pg_amount": "10", "pg_description": "x", "pg_result_url": "ftp://x"},
            200,
            "pg_result_url",
        ),
        (
            {"pg_recurring_profile": p, "pg_amount": "10", "pg_description": "x", "pg_request_method": "PUT"},
            200,
            "pg_request_method",
        ),
        (
            {"pg_recurring_profile": p, "pg_amount": "10", "pg_description": "x", "pg_order_id": "o" * 51},
            200,
            "pg_order_id",
        ),
        (
            {"pg_recurring_profile": str(profile_id + 100), "pg_amount": "10", "pg_description": "x"},
            340,
            None,
        ),
    ]
    for fields, code, names in cases:
        (await shop.call("make_recurring_payment.php", fields)).assert_error(code, shop.secret, names)
    # Another merchant cannot charge this merchant's profile.
    (await charge(other, profile_id)).assert_error(340, other.secret)
    assert await table_counts(rt) == before


async def test_a_retried_charge_with_the_same_order_id_charges_once(rt: Runtime, shop: Shop) -> None:
    profile_id = await started(shop, rt)
    first = (await charge(shop, profile_id, "20", pg_order_id="M-5")).assert_ok(shop.secret)
    again = (await charge(shop, profile_id, "20", pg_order_id="M-5")).assert_ok(shop.secret)
    assert again["pg_payment_id"] == first["pg_payment_id"]
    before = await table_counts(rt)
    (await charge(shop, profile_id, "21", pg_order_id="M-5")).assert_error(200, shop.secret, "pg_order_id")
    assert await table_counts(rt) == before
    # The same with an idempotency key and no order id, by parameter or header.
    keyed = (await charge(shop, profile_id, "30", pg_idempotency_key="k-1")).assert_ok(shop.secret)
    assert (await charge(shop, profile_id, "30", pg_idempotency_key="k-1"))["pg_payment_id"] == keyed[
        "pg_payment_id"
    ]
    params = shop.message(
        "make_recurring_payment.php",
        {"pg_recurring_profile": str(profile_id), "pg_amount": "40", "pg_description": "Monthly"},
    )
    answers = []
    for _ in range(2):
        fresh = [(n, v) for n, v in params if n not in ("pg_salt", "pg_sig")]
        message = shop.message("make_recurring_payment.php", fresh)
        response = await shop.client.post(
            "/make_recurring_payment.php", data=dict(message), headers={"Idempotency-Key": "h-1"}
        )
        answers.append(Answer.read(response, "make_recurring_payment.php").assert_ok(shop.secret))
    assert answers[0]["pg_payment_id"] == answers[1]["pg_payment_id"]
    async with rt.db.transaction() as session:
        amounts = sorted(await session.scalars(select(Payment.amount)))
    assert amounts == [2_000, 3_000, 4_000, 10_000]


async def test_a_charge_on_an_expired_card_is_declined(
    rt: Runtime, shop: Shop, server: CallbackServer
) -> None:
    profile_id = await started(shop, rt)
    async with rt.db.transaction() as session:
        profile = await session.get(RecurringProfile, profile_id)
        assert profile is not None
        await session.execute(
            update(PaymentAttempt).where(PaymentAttempt.id == profile.attempt_id).values(card_exp="01/20")
        )

    answer = (await charge(shop, profile_id, pg_result_url=server.url("/shop/result.php"))).assert_ok(
        shop.secret
    )

    assert (answer["pg_transaction_status"], answer["pg_failure_code"]) == ("failed", "10005")
    await drain(Worker(rt))
    [result] = server.received("/shop/result.php")
    assert (result["pg_result"], result["pg_failure_code"]) == ("0", "10005")


async def test_an_order_id_of_an_open_payment_is_not_charged(rt: Runtime, shop: Shop) -> None:
    profile_id = await started(shop, rt)
    open_id = await shop.init_ok(pg_order_id="OPEN-1", pg_amount="50", pg_description="Monthly")
    before = await table_counts(rt)
    (await charge(shop, profile_id, "50", pg_order_id="OPEN-1")).assert_error(200, shop.secret, "pg_order_id")
    assert await table_counts(rt) == before
    assert (await shop.status(open_id))["pg_transaction_status"] == "partial"
