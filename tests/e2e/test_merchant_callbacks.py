"""Check and result callbacks delivered by the worker to a real shop server, with each request method and
each kind of answer (ok, rejected, error, HTTP 500, timeout, garbage, unsigned)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from greengate.clock import utcnow
from greengate.domain.card_rules import validate_card_form
from greengate.runtime import Runtime
from greengate.services import payment_flow
from greengate.settings import Settings
from greengate.store.models import DeliveryAttempt, OutboxMessage
from greengate.worker.loop import Worker
from tests.conftest import make_settings
from tests.support.merchant_api import Callback, CallbackServer, Shop, make_shop

APPROVED = "4405645000006150"
CONTACT_ISSUER = "5367654276102126"
DESCRIPTION = "Заказ №5 — «Чай»"
CALLBACK_TIMEOUT = 0.5
CHECK_FIELDS = {
    "pg_payment_id",
    "pg_order_id",
    "pg_amount",
    "pg_currency",
    "pg_net_amount",
    "pg_ps_amount",
    "pg_ps_full_amount",
    "pg_ps_currency",
    "pg_payment_system",
    "pg_description",
    "pg_user_phone",
    "pg_user_contact_email",
    "pg_testing_mode",
    "pg_card_pan",
    "pg_card_exp",
    "pg_card_owner",
    "pg_card_brand",
    "pg_salt",
    "pg_sig",
}
RESULT_FIELDS = CHECK_FIELDS | {
    "pg_result",
    "pg_payment_date",
    "pg_can_reject",
    "pg_need_phone_notification",
    "pg_need_email_notification",
    "pg_captured",
    "pg_auth_code",
}
SHOP_PARAMS = {"shop_cart": "c-77", "Customer": "Иван"}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, callback_timeout_seconds=CALLBACK_TIMEOUT)


@pytest.fixture
async def shop(rt: Runtime, app_client: httpx.AsyncClient) -> Shop:
    return await make_shop(rt, app_client)


@pytest.fixture
def server(shop: Shop) -> Iterator[CallbackServer]:
    with CallbackServer(shop.secret, slow_seconds=CALLBACK_TIMEOUT * 3) as s:
        yield s


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def drain(worker: Worker) -> int:
    total = 0
    for _ in range(50):
        claimed = await worker.run_once()
        if claimed == 0:
            return total
        total += claimed
    raise AssertionError("the worker never became idle")


async def pay(rt: Runtime, payment_id: int, number: str = APPROVED) -> str:
    card = validate_card_form(number, "12", "2030", "Test User", "123", date.today())
    async with rt.db.transaction() as session:
        return (await payment_flow.submit_card(session, rt, payment_id, card, utcnow())).status


async def attempts(rt: Runtime, kind: str) -> list[DeliveryAttempt]:
    async with rt.db.transaction() as session:
        rows = await session.scalars(
            select(DeliveryAttempt)
            .join(OutboxMessage, OutboxMessage.id == DeliveryAttempt.outbox_id)
            .where(OutboxMessage.kind == kind)
            .order_by(DeliveryAttempt.id)
        )
        return list(rows)


def auth_code(payment_id: int) -> str:
    digest = hashlib.sha256(f"payment:{payment_id}".encode()).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 10**6:06d}"


async def init(
    shop: Shop, server: CallbackServer, method: str = "POST", check: str | None = None, **fields: str | None
) -> int:
    values = {
        "pg_amount": "1500.5",
        "pg_description": DESCRIPTION,
        "pg_order_id": "CB-1",
        "pg_request_method": method,
        "pg_result_url": server.url("/shop/result.php"),
        "pg_user_phone": "77011234567",
        "pg_user_contact_email": "buyer@example.kz",
        **SHOP_PARAMS,
        **fields,
    }
    if check is not None:
        values["pg_check_url"] = server.url(check)
    return await shop.init_ok(**values)


def assert_transport(callback: Callback, method: str) -> None:
    if method == "GET":
        assert callback.method == "GET" and callback.body == b"" and "pg_sig" in dict(callback.query)
    elif method == "POST":
        assert callback.method == "POST" and callback.pg_xml is None and "pg_sig" in dict(callback.form)
        assert callback.raw_query == ""
    else:
        assert callback.method == "POST" and [n for n, _ in callback.form] == ["pg_xml"]
        assert callback.pg_xml is not None and "pg_sig" in dict(callback.pg_xml)


@pytest.mark.parametrize("method", ["GET", "POST", "XML"])
async def test_check_then_result_with_every_field(
    rt: Runtime, shop: Shop, server: CallbackServer, method: str
) -> None:
    payment_id = await init(shop, server, method, check="/shop/check.php")
    assert await pay(rt, payment_id) == "check"
    assert server.received() == []
    assert (await shop.status(payment_id))["pg_transaction_status"] == "pending"
    await drain(Worker(rt))

    check, result = server.received()
    assert (check.path, result.path) == ("/shop/check.php", "/shop/result.php")
    for callback, fields in ((check, CHECK_FIELDS), (result, RESULT_FIELDS)):
        assert_transport(callback, method)
        assert callback.verifies(shop.secret), f"{callback.path} does not verify with {callback.script!r}"
        assert fields <= callback.names, fields - callback.names
        assert {n: callback[n] for n in SHOP_PARAMS} == SHOP_PARAMS
        assert callback["pg_payment_id"] == str(payment_id) and callback["pg_order_id"] == "CB-1"
        assert (callback["pg_amount"], callback["pg_currency"]) == ("1500.50", "KZT")
        assert (callback["pg_ps_amount"], callback["pg_ps_currency"]) == ("1500.50", "KZT")
        assert callback["pg_description"] == DESCRIPTION and callback["pg_payment_system"] == "BANKCARD"
        assert (callback["pg_user_phone"], callback["pg_user_contact_email"]) == (
            "77011234567",
            "buyer@example.kz",
        )
        assert (callback["pg_card_pan"], callback["pg_card_exp"]) == ("4405-64XX-XXXX-6150", "12/30")
        assert (callback["pg_card_owner"], callback["pg_card_brand"]) == ("TEST USER", "VI")
        assert callback["pg_testing_mode"] == "1"
    assert "pg_result" not in check and "pg_can_reject" not in check
    assert (result["pg_result"], result["pg_can_reject"], result["pg_captured"]) == ("1", "1", "1")
    assert result["pg_auth_code"] == auth_code(payment_id)
    assert "pg_failure_code" not in result
    assert check["pg_salt"] != result["pg_salt"]
    status = await shop.status(payment_id)
    assert (status["pg_transaction_status"], status["pg_can_reject"]) == ("ok", "0")
    assert [a.succeeded for a in await attempts(rt, "merchant.check")] == [True]
    [delivery] = await attempts(rt, "merchant.result")
    assert (delivery.succeeded, delivery.status_code, delivery.attempt) == (True, 200, 1)
    assert "pg_sig" in delivery.request_body and "<pg_status>ok</pg_status>" in delivery.response_body


async def test_callback_url_ending_in_slash_has_an_empty_script_name(
    rt: Runtime, shop: Shop, server: CallbackServer
) -> None:
    payment_id = await init(shop, server, "GET", check="/shop/check/", pg_result_url=server.url("/shop/"))
    await pay(rt, payment_id)
    await drain(Worker(rt))
    check, result = server.received()
    for callback in (check, result):
        assert callback.script == ""
        assert callback.verifies(shop.secret)
    assert (await shop.status(payment_id))["pg_transaction_status"] == "ok"


async def test_check_rejected_fails_the_payment(rt: Runtime, shop: Shop, server: CallbackServer) -> None:
    server.answer("/shop/check.php", "rejected")
    payment_id = await init(shop, server, "XML", check="/shop/check.php")
    await pay(rt, payment_id)
    await drain(Worker(rt))
    check, result = server.received()
    assert check.path == "/shop/check.php"
    assert (result["pg_result"], result["pg_can_reject"], result["pg_failure_code"]) == ("0", "0", "400")
    assert result["pg_failure_description"]
    status = await shop.status(payment_id)
    assert (status["pg_transaction_status"], status["pg_failure_code"]) == ("failed", "400")


@pytest.mark.parametrize("mode", ["500", "slow", "unsigned", "garbage", "wrong_salt", "error"])
async def test_check_without_a_valid_answer_is_a_refusal(
    rt: Runtime, shop: Shop, server: CallbackServer, mode: str
) -> None:
    server.answer("/shop/check.php", mode)
    payment_id = await init(shop, server, "POST", check="/shop/check.php")
    await pay(rt, payment_id)
    clock = Clock()
    worker = Worker(rt, clock=clock)
    await drain(worker)
    clock.advance(600)
    await drain(worker)  # a check is asked once
    status = await shop.status(payment_id)
    assert (status["pg_transaction_status"], status["pg_failure_code"]) == ("failed", "400")
    assert [c.path for c in server.received()] == ["/shop/check.php", "/shop/result.php"]
    [delivery] = await attempts(rt, "merchant.check")
    assert not delivery.succeeded and delivery.error
    if mode == "slow":
        assert delivery.error == "timeout"
    async with rt.db.transaction() as session:
        row = await session.scalar(select(OutboxMessage).where(OutboxMessage.kind == "merchant.check"))
    assert row is not None and row.status == "dead"


async def test_result_retried_on_schedule_with_can_reject_0(
    rt: Runtime, shop: Shop, server: CallbackServer
) -> None:
    server.answer("/shop/result.php", "500", "garbage", "ok")
    payment_id = await init(shop, server)
    await pay(rt, payment_id)
    clock = Clock()
    worker = Worker(rt, clock=clock)
    await drain(worker)
    assert len(server.received()) == 1
    clock.advance(0.5)
    await drain(worker)
    assert len(server.received()) == 1  # not due before the schedule's first step (1 s)
    clock.advance(0.6)
    await drain(worker)
    clock.advance(2.1)
    await drain(worker)
    deliveries = server.received()
    assert [c["pg_can_reject"] for c in deliveries] == ["1", "0", "0"]
    assert all(c.verifies(shop.secret) and c["pg_result"] == "1" for c in deliveries)
    assert len({c["pg_salt"] for c in deliveries}) == 3
    rows = await attempts(rt, "merchant.result")
    assert [(a.attempt, a.status_code, a.succeeded) for a in rows] == [
        (1, 500, False),
        (2, 200, False),
        (3, 200, True),
    ]
    assert "unparseable" in (rows[1].error or "")
    status = await shop.status(payment_id)
    assert (status["pg_transaction_status"], status["pg_can_reject"]) == ("ok", "0")


async def test_result_gives_up_after_the_schedule(rt: Runtime, shop: Shop, server: CallbackServer) -> None:
    server.answer("/shop/result.php", "500")
    payment_id = await init(shop, server)
    await pay(rt, payment_id)
    clock = Clock()
    worker = Worker(rt, clock=clock)
    for step in (0, 1, 2, 5, 60):
        clock.advance(step + 0.01)
        await drain(worker)
    assert len(server.received()) == 4  # the first try and one per step of [1, 2, 5]
    async with rt.db.transaction() as session:
        row = await session.scalar(select(OutboxMessage).where(OutboxMessage.kind == "merchant.result"))
    assert row is not None and (row.status, row.attempts) == ("dead", 4)
    assert (await shop.status(payment_id))["pg_transaction_status"] == "ok"


async def test_result_rejected_on_first_delivery_revokes(
    rt: Runtime, shop: Shop, server: CallbackServer
) -> None:
    server.answer("/shop/result.php", "rejected")
    payment_id = await init(shop, server, "GET")
    await pay(rt, payment_id)
    await drain(Worker(rt))
    [result] = server.received()
    assert result["pg_can_reject"] == "1"
    status = await shop.status(payment_id)
    assert (status["pg_transaction_status"], status["pg_refund_amount"]) == ("revoked", "1500.50")
    assert (await shop.status(payment_id, "get_status3.php"))["pg_revoke_amount"] == "1500.50"


async def test_result_rejected_on_a_retry_is_not_a_refund(
    rt: Runtime, shop: Shop, server: CallbackServer
) -> None:
    server.answer("/shop/result.php", "unsigned", "rejected")
    payment_id = await init(shop, server)
    await pay(rt, payment_id)
    clock = Clock()
    worker = Worker(rt, clock=clock)
    await drain(worker)
    clock.advance(1.1)
    await drain(worker)
    assert [c["pg_can_reject"] for c in server.received()] == ["1", "0"]
    assert (await shop.status(payment_id))["pg_transaction_status"] == "ok"
    rows = await attempts(rt, "merchant.result")
    assert [a.succeeded for a in rows] == [False, True]
    assert "signature" in (rows[0].error or "")


async def test_declined_payment_result(rt: Runtime, shop: Shop, server: CallbackServer) -> None:
    payment_id = await init(shop, server, "XML")
    assert await pay(rt, payment_id, CONTACT_ISSUER) == "failed"
    await drain(Worker(rt))
    [result] = server.received()
    assert result.verifies(shop.secret)
    assert (result["pg_result"], result["pg_can_reject"]) == ("0", "0")
    assert (result["pg_failure_code"], result["pg_card_pan"]) == ("10001", "5367-65XX-XXXX-2126")
    assert result["pg_failure_description"] and result["pg_auth_code"] == ""


async def test_mobile_commerce_result(rt: Runtime, shop: Shop, server: CallbackServer) -> None:
    payment_id = await init(shop, server, "POST", pg_user_phone=None)
    async with rt.db.transaction() as session:
        await payment_flow.submit_phone(session, rt, payment_id, "+77057777777", utcnow())
    async with rt.db.transaction() as session:
        await payment_flow.submit_otp(session, rt, payment_id, "555555", utcnow())
    await drain(Worker(rt))
    [result] = server.received()
    assert result.verifies(shop.secret)
    assert (result["pg_payment_system"], result["pg_user_phone"], result["pg_card_pan"]) == (
        "MOBILE_COMMERCE",
        "77057777777",
        "",
    )
    assert result["pg_result"] == "1" and result["pg_auth_code"] == auth_code(payment_id)


async def test_loopback_target_is_refused_without_allow_private(
    rt: Runtime, shop: Shop, server: CallbackServer, database_url: str, tmp_path: Path
) -> None:
    payment_id = await init(shop, server, pg_result_url=server.url("/shop/result.php", host="localhost"))
    await pay(rt, payment_id)
    strict = Runtime.create(make_settings(database_url, tmp_path, callback_allow_private=False))
    try:
        await drain(Worker(strict))
    finally:
        await strict.close()
    assert server.received() == []
    [delivery] = await attempts(rt, "merchant.result")
    assert not delivery.succeeded and delivery.status_code is None
    assert "refused target" in (delivery.error or "")
    # The same row delivers once the target is allowed (the operator's choice in tests).
    async with rt.db.transaction() as session:
        row = await session.scalar(select(OutboxMessage).where(OutboxMessage.kind == "merchant.result"))
        assert row is not None and row.status == "pending"
        row.due_at = utcnow()
    await drain(Worker(rt))
    [result] = server.received()
    assert result["pg_can_reject"] == "0" and result.verifies(shop.secret)


@pytest.mark.parametrize("method", ["GET", "POST", "XML"])
async def test_callback_url_with_its_own_query(
    rt: Runtime, shop: Shop, server: CallbackServer, method: str
) -> None:
    """The shop's URL parameters reach it with the message and are signed with it (script: result.php)."""
    payment_id = await init(shop, server, method, pg_result_url=server.url("/shop/result.php?shop=7&lang=kk"))
    await pay(rt, payment_id)
    await drain(Worker(rt))
    [result] = server.received()
    assert result.script == "result.php"
    assert (result["shop"], result["lang"]) == ("7", "kk")
    assert result.verifies(shop.secret)
    assert dict(result.query)["shop"] == "7"
    assert (await shop.status(payment_id))["pg_can_reject"] == "0"  # delivered


async def test_pg_captured_says_whether_the_money_was_taken(
    rt: Runtime, shop: Shop, server: CallbackServer
) -> None:
    """As in get_status: 1 once the payer's money is taken (a paid one-step payment, a captured two-step
    one), 0 before that and for a declined payment."""
    one_step = await init(shop, server, check="/shop/check.php")
    declined = await init(shop, server, pg_order_id="CB-2")
    two_step = await init(
        shop,
        server,
        pg_order_id="CB-3",
        pg_postpone_payment="1",
        pg_capture_url=server.url("/shop/capture.php"),
    )
    await pay(rt, one_step)
    assert await pay(rt, declined, CONTACT_ISSUER) == "failed"
    assert await pay(rt, two_step) == "ok"
    await drain(Worker(rt))

    sent = {(c.path, c["pg_payment_id"]): c["pg_captured"] for c in server.received()}
    assert sent == {
        ("/shop/check.php", str(one_step)): "0",
        ("/shop/result.php", str(one_step)): "1",
        ("/shop/result.php", str(declined)): "0",
        ("/shop/result.php", str(two_step)): "0",
    }
    for payment_id, captured in ((one_step, "1"), (declined, "0"), (two_step, "0")):
        assert (await shop.status(payment_id))["pg_captured"] == captured
    (await shop.call("do_capture.php", {"pg_payment_id": str(two_step)})).assert_ok(shop.secret)
    await drain(Worker(rt))
    [capture] = server.received("/shop/capture.php")
    assert capture["pg_captured"] == (await shop.status(two_step))["pg_captured"] == "1"
