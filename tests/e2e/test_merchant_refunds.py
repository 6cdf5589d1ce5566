"""revoke.php over HTTP: full and partial refunds, the refund callback, refunds in get_status3.php,
idempotent retries, refusals in states that forbid a refund, and the operator's refund and chargeback
test buttons. Every refused request is answered signed and writes nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
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
from greengate.store.models import LedgerTransaction, OutboxMessage, PaymentEvent, Refund
from greengate.worker.loop import Worker
from tests.conftest import make_settings
from tests.support.merchant_api import Answer, CallbackServer, Shop, first, make_shop, table_counts
from tests.support.processes import greengate_env

APPROVED = "4405645000006150"
CONTACT_ISSUER = "5367654276102126"


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


async def pay(rt: Runtime, payment_id: int, number: str = APPROVED) -> str:
    card = validate_card_form(number, "12", "2030", "Test User", "123", date.today())
    async with rt.db.transaction() as session:
        return (await payment_flow.submit_card(session, rt, payment_id, card, utcnow())).status


async def paid(shop: Shop, rt: Runtime, amount: str = "100", **fields: str) -> int:
    payment_id = await shop.init_ok(pg_amount=amount, **fields)
    assert await pay(rt, payment_id) == "ok"
    return payment_id


async def revoke(shop: Shop, payment_id: int, amount: str | None = None, **fields: str) -> Answer:
    values = {"pg_payment_id": str(payment_id), **fields}
    if amount is not None:
        values["pg_refund_amount"] = amount
    return await shop.call("revoke.php", values)


async def available(rt: Runtime, shop: Shop, currency: str = "KZT") -> int:
    """The test-mode shop's available balance: its payments post to the test book."""
    async with rt.db.transaction() as session:
        return await ledger.balance(
            session, L.merchant_owner(shop.merchant_id), "available", currency, L.Book.TEST
        )


async def ledger_problems(rt: Runtime) -> list[str]:
    async with rt.db.transaction() as session:
        return await ledger.check(session)


async def drain(worker: Worker) -> None:
    for _ in range(50):
        if await worker.run_once() == 0:
            return
    raise AssertionError("the worker never became idle")


async def test_revoke_without_an_amount_refunds_everything(rt: Runtime, shop: Shop) -> None:
    payment_id = await paid(shop, rt, "150.50")

    answer = (await revoke(shop, payment_id)).assert_ok(shop.secret)

    assert answer["pg_payment_id"] == str(payment_id)
    assert (answer["pg_refund_amount"], answer["pg_revoke_amount"]) == ("150.50", "150.50")
    assert answer["pg_transaction_status"] == "revoked"
    status = await shop.status(payment_id)
    assert (status["pg_transaction_status"], status["pg_refund_amount"]) == ("revoked", "150.50")
    assert status["pg_captured"] == "1"
    status3 = await shop.status(payment_id, "get_status3.php")
    assert (status3["pg_payment_status"], status3["pg_revoke_amount"]) == ("success", "150.50")
    [(name, refund)] = status3["pg_refund_payments"]
    assert name == "pg_refund_payment"
    assert first(refund, "pg_payment_id") == answer["pg_refund_payment_id"]
    assert (first(refund, "pg_payment_status"), first(refund, "pg_amount")) == ("success", "-150.50")
    assert first(refund, "pg_payment_date")
    assert await available(rt, shop) == 0
    assert await ledger_problems(rt) == []


async def test_partial_refunds_up_to_the_paid_amount(rt: Runtime, shop: Shop) -> None:
    payment_id = await paid(shop, rt, "100")
    for amount, total in (("30", "30.00"), ("50.5", "80.50")):
        answer = (await revoke(shop, payment_id, amount)).assert_ok(shop.secret)
        assert answer["pg_revoke_amount"] == total
    before = await table_counts(rt)
    (await revoke(shop, payment_id, "19.51")).assert_error(490, shop.secret, "pg_refund_amount")
    assert await table_counts(rt) == before
    (await revoke(shop, payment_id)).assert_ok(shop.secret)  # the rest: 19.50
    before = await table_counts(rt)
    (await revoke(shop, payment_id, "0.01")).assert_error(490, shop.secret)
    assert await table_counts(rt) == before

    status3 = await shop.status(payment_id, "get_status3.php")
    amounts = [first(r, "pg_amount") for _, r in status3["pg_refund_payments"]]
    assert amounts == ["-30.00", "-50.50", "-19.50"]
    assert status3["pg_revoke_amount"] == "100.00"
    async with rt.db.transaction() as session:
        refunds = list(await session.scalars(select(Refund).where(Refund.payment_id == payment_id)))
        postings = list(
            await session.scalars(
                select(LedgerTransaction.object_id)
                .where(LedgerTransaction.object_type == "payment_refund")
                .order_by(LedgerTransaction.id)
            )
        )
    assert [r.amount for r in refunds] == [3000, 5050, 1950]
    assert postings == [f"{payment_id}:3000", f"{payment_id}:8050", f"{payment_id}:10000"]
    assert await available(rt, shop) == 0
    assert await ledger_problems(rt) == []


@pytest.mark.parametrize("method", ["GET", "POST", "XML"])
async def test_refund_callback_goes_to_the_refund_url(
    rt: Runtime, shop: Shop, server: CallbackServer, method: str
) -> None:
    payment_id = await paid(
        shop,
        rt,
        "200",
        pg_order_id="R-1",
        pg_request_method=method,
        pg_refund_url=server.url("/shop/refund.php"),
        shop_cart="c-9",
    )
    refund_id = (await revoke(shop, payment_id, "75")).assert_ok(shop.secret)["pg_refund_payment_id"]
    (await revoke(shop, payment_id, "25")).assert_ok(shop.secret)
    await drain(Worker(rt))

    callback, second = sorted(server.received("/shop/refund.php"), key=lambda c: c["pg_refund_payment_id"])
    # Each reports the refunded total as of its own refund.
    assert (second["pg_refund_amount"], second["pg_revoke_amount"]) == ("25.00", "100.00")
    assert callback.verifies(shop.secret) and callback.script == "refund.php"
    assert (callback["pg_payment_id"], callback["pg_order_id"]) == (str(payment_id), "R-1")
    assert (callback["pg_amount"], callback["pg_refund_amount"], callback["pg_revoke_amount"]) == (
        "200.00",
        "75.00",
        "75.00",
    )
    assert (callback["pg_refund_payment_id"], callback["pg_refund_type"]) == (refund_id, "refund")
    assert (callback["pg_result"], callback["pg_captured"], callback["shop_cart"]) == ("1", "1", "c-9")
    assert callback["pg_card_pan"] == "4405-64XX-XXXX-6150" and callback["pg_refund_date"]


async def test_refund_callback_is_retried_until_delivered(
    rt: Runtime, shop: Shop, server: CallbackServer
) -> None:
    server.answer("/shop/refund.php", "500", "ok")
    payment_id = await paid(shop, rt, pg_refund_url=server.url("/shop/refund.php"))
    (await revoke(shop, payment_id)).assert_ok(shop.secret)
    worker = Worker(rt)
    await drain(worker)
    assert len(server.received()) == 1
    # The retry schedule in tests starts at 1 s.
    worker.clock = lambda: utcnow() + timedelta(seconds=2)
    await drain(worker)
    deliveries = server.received("/shop/refund.php")
    assert len(deliveries) == 2 and deliveries[0]["pg_salt"] != deliveries[1]["pg_salt"]
    assert all(c.verifies(shop.secret) for c in deliveries)


async def test_revoke_is_refused_where_the_state_forbids_it(rt: Runtime, shop: Shop) -> None:
    unpaid = await shop.init_ok()
    failed = await shop.init_ok()
    assert await pay(rt, failed, CONTACT_ISSUER) == "failed"
    authorised = await shop.init_ok(pg_postpone_payment="1")
    assert await pay(rt, authorised) == "ok"
    before = await table_counts(rt)
    for payment_id in (unpaid, failed, authorised):
        (await revoke(shop, payment_id)).assert_error(490, shop.secret)
    assert await table_counts(rt) == before
    assert (await shop.status(unpaid))["pg_transaction_status"] == "partial"


async def test_revoke_bad_input_is_refused_signed_and_writes_nothing(
    rt: Runtime, shop: Shop, app_client: httpx.AsyncClient
) -> None:
    payment_id = await paid(shop, rt)
    other = await make_shop(rt, app_client, name="Other")
    before = await table_counts(rt)
    cases: list[tuple[dict[str, str], int, str | None]] = [
        ({}, 200, "pg_payment_id"),
        ({"pg_payment_id": "abc"}, 200, "pg_payment_id"),
        ({"pg_payment_id": str(payment_id), "pg_refund_amount": "ten"}, 200, "pg_refund_amount"),
        ({"pg_payment_id": str(payment_id), "pg_refund_amount": "0"}, 200, "pg_refund_amount"),
        ({"pg_payment_id": str(payment_id), "pg_refund_amount": "-5"}, 200, "pg_refund_amount"),
        ({"pg_payment_id": str(payment_id), "pg_refund_amount": "1.001"}, 200, "pg_refund_amount"),
        ({"pg_payment_id": str(payment_id + 1000)}, 340, None),
    ]
    for fields, code, names in cases:
        (await shop.call("revoke.php", fields)).assert_error(code, shop.secret, names)
    # Another merchant's payment does not exist for this one.
    (await other.call("revoke.php", {"pg_payment_id": str(payment_id)})).assert_error(340, other.secret)
    # A wrong signature.
    message = shop.message("revoke.php", {"pg_payment_id": str(payment_id)})
    tampered = [(n, "0" * 32 if n == "pg_sig" else v) for n, v in message]
    (await shop.send_raw("revoke.php", tampered)).assert_error(100, shop.secret)
    assert await table_counts(rt) == before
    assert (await shop.status(payment_id))["pg_transaction_status"] == "ok"


async def test_refund_beyond_the_merchants_balance_is_refused(rt: Runtime, shop: Shop) -> None:
    async with rt.db.transaction() as session:
        await set_fee(
            session,
            shop.merchant_id,
            payment_system="*",
            percent="0",
            fixed=500,
            currency="KZT",
            now=utcnow(),
        )
    payment_id = await paid(shop, rt, "100")  # the merchant nets 95.00; the fee is not returned
    before = await table_counts(rt)
    answer = (await revoke(shop, payment_id)).assert_error(600, shop.secret)
    assert "available" in answer.description
    assert await table_counts(rt) == before
    (await revoke(shop, payment_id, "95")).assert_ok(shop.secret)
    assert await available(rt, shop) == 0
    assert await ledger_problems(rt) == []


@pytest.mark.parametrize("where", ["parameter", "header"])
async def test_a_retried_revoke_with_the_same_key_refunds_once(
    rt: Runtime, shop: Shop, app_client: httpx.AsyncClient, where: str
) -> None:
    payment_id = await paid(shop, rt, "100")

    async def send(amount: str, key: str = "refund-77") -> Answer:
        fields = {"pg_payment_id": str(payment_id), "pg_refund_amount": amount}
        if where == "parameter":
            return await shop.call("revoke.php", {**fields, "pg_idempotency_key": key})
        params = shop.message("revoke.php", fields)
        response = await app_client.post("/revoke.php", data=dict(params), headers={"Idempotency-Key": key})
        return Answer.read(response, "revoke.php")

    first_answer = (await send("40")).assert_ok(shop.secret)
    again = (await send("40")).assert_ok(shop.secret)
    keys = ("pg_refund_payment_id", "pg_refund_amount", "pg_revoke_amount")
    assert (
        [again[k] for k in keys]
        == [first_answer[k] for k in keys]
        == [
            first_answer["pg_refund_payment_id"],
            "40.00",
            "40.00",
        ]
    )
    before = await table_counts(rt)
    (await send("41")).assert_error(600, shop.secret)  # the key was used with another request
    assert await table_counts(rt) == before
    (await send("41", key="refund-78")).assert_ok(shop.secret)
    async with rt.db.transaction() as session:
        amounts = list(await session.scalars(select(Refund.amount).where(Refund.payment_id == payment_id)))
    assert amounts == [4000, 4100]


async def test_a_rejected_result_is_listed_as_a_refund(
    rt: Runtime, shop: Shop, server: CallbackServer
) -> None:
    server.answer("/shop/result.php", "rejected")
    payment_id = await paid(shop, rt, "80", pg_result_url=server.url("/shop/result.php"))
    await drain(Worker(rt))
    status3 = await shop.status(payment_id, "get_status3.php")
    assert [first(r, "pg_amount") for _, r in status3["pg_refund_payments"]] == ["-80.00"]
    assert (await shop.status(payment_id))["pg_transaction_status"] == "revoked"


async def fee_income(rt: Runtime, currency: str = "KZT") -> int:
    async with rt.db.transaction() as session:
        return await ledger.balance(session, L.GATEWAY, "fee_income", currency)


async def set_fixed_fee(rt: Runtime, shop: Shop, fixed: int) -> None:
    async with rt.db.transaction() as session:
        await set_fee(
            session,
            shop.merchant_id,
            payment_system="*",
            percent="0",
            fixed=fixed,
            currency="KZT",
            now=utcnow(),
        )


@pytest.mark.parametrize("earlier", [None, "300"], ids=["nothing-else", "other-balance"])
async def test_a_rejected_result_reverses_the_payment_with_its_fee(
    rt: Runtime, shop: Shop, server: CallbackServer, earlier: str | None
) -> None:
    """The fee was taken, so the merchant's available balance holds less than the payment: a rejected
    result still undoes the payment as a whole (the fee goes back) instead of failing for lack of
    balance and being retried with pg_can_reject=0."""
    await set_fixed_fee(rt, shop, 500)
    if earlier is not None:
        await paid(shop, rt, earlier)
    available_before, income_before = await available(rt, shop), await fee_income(rt)
    server.answer("/shop/result.php", "rejected")
    payment_id = await paid(
        shop,
        rt,
        "100",
        pg_result_url=server.url("/shop/result.php"),
        pg_refund_url=server.url("/shop/refund.php"),
    )
    await drain(Worker(rt))

    [result] = server.received("/shop/result.php")
    assert (result["pg_can_reject"], result["pg_net_amount"]) == ("1", "95.00")
    status = await shop.status(payment_id)
    assert (status["pg_transaction_status"], status["pg_refund_amount"]) == ("revoked", "100.00")
    [refund] = server.received("/shop/refund.php")
    assert (refund["pg_refund_amount"], refund["pg_refund_type"]) == ("100.00", "refund")
    assert await available(rt, shop) == available_before
    assert await fee_income(rt) == income_before
    assert await ledger_problems(rt) == []


async def test_a_rejected_result_after_the_money_left_is_recorded_not_retried(
    rt: Runtime, shop: Shop, server: CallbackServer
) -> None:
    await set_fixed_fee(rt, shop, 500)
    server.answer("/shop/result.php", "rejected")
    payment_id = await paid(shop, rt, "100", pg_result_url=server.url("/shop/result.php"))
    async with rt.db.transaction() as session:  # the merchant pays out 90 of its 95 before the result
        draft = L.payout_reserved(shop.merchant_id, 9_000, "KZT", book=L.Book.TEST)
        await ledger.post(session, draft, object_type="payout", object_id="elsewhere", now=utcnow())
    await drain(Worker(rt))

    assert len(server.received("/shop/result.php")) == 1  # delivered: the answer is not asked again
    assert (await shop.status(payment_id))["pg_transaction_status"] == "ok"
    async with rt.db.transaction() as session:
        notes = list(
            await session.scalars(select(PaymentEvent.note).where(PaymentEvent.payment_id == payment_id))
        )
        rows = list(
            await session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "merchant.result"))
        )
    assert any("not refunded" in note and "available" in note for note in notes), notes
    assert [row.status for row in rows] == ["done"]
    assert await available(rt, shop) == 500
    assert await ledger_problems(rt) == []


async def test_a_chargeback_returns_the_fee_with_the_payment(rt: Runtime, shop: Shop) -> None:
    await set_fixed_fee(rt, shop, 500)
    payment_id = await paid(shop, rt, "100")  # the merchant nets 95.00
    async with rt.db.transaction() as session:
        payment = await payment_flow.test_action(
            session, payment_id, "chargeback", now=utcnow(), actor="operator:test"
        )
        assert (payment.status, payment.refunded_amount) == ("revoked", 10_000)
    assert (await available(rt, shop), await fee_income(rt)) == (0, 0)
    assert await ledger_problems(rt) == []


async def test_refund_and_chargeback_test_buttons(rt: Runtime, shop: Shop, server: CallbackServer) -> None:
    refunded = await paid(shop, rt, "60", pg_refund_url=server.url("/shop/refund.php"))
    charged_back = await paid(shop, rt, "40", pg_refund_url=server.url("/shop/refund.php"))
    for payment_id, action in ((refunded, "refund"), (charged_back, "chargeback")):
        async with rt.db.transaction() as session:
            payment = await payment_flow.test_action(
                session, payment_id, action, now=utcnow(), actor="operator:test"
            )
            assert payment.status == "revoked"
    await drain(Worker(rt))
    callbacks = {c["pg_payment_id"]: c for c in server.received("/shop/refund.php")}
    assert (callbacks[str(refunded)]["pg_refund_type"], callbacks[str(refunded)]["pg_refund_amount"]) == (
        "refund",
        "60.00",
    )
    assert callbacks[str(charged_back)]["pg_refund_type"] == "chargeback"
    status3 = await shop.status(charged_back, "get_status3.php")
    [(_, refund)] = status3["pg_refund_payments"]
    assert (first(refund, "pg_amount"), first(refund, "pg_refund_type")) == ("-40.00", "chargeback")
    # Nothing is left to refund: the button is refused like revoke.php.
    with pytest.raises(Exception, match="refunded in full"):
        async with rt.db.transaction() as session:
            await payment_flow.test_action(session, refunded, "refund", now=utcnow(), actor="operator:test")
    assert await available(rt, shop) == 0
    assert await ledger_problems(rt) == []


async def test_payment_action_command_refunds(
    rt: Runtime, shop: Shop, database_url: str, tmp_path: Path
) -> None:
    payment_id = await paid(shop, rt, "30")
    command = [sys.executable, "-m", "greengate.cli", "payment", "action", str(payment_id), "refund"]
    result = await asyncio.to_thread(
        subprocess.run,
        command,
        env=greengate_env(database_url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"test payment {payment_id}: revoked"
    assert (await shop.status(payment_id))["pg_refund_amount"] == "30.00"
