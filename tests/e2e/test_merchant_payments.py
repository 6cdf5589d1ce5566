"""Merchant API payment acceptance over real HTTP: init, order ids and idempotency, statuses as a payment
moves (driven through the payment flow and the operator's test actions), cancel, ps_list, test mode."""

from __future__ import annotations

import hashlib
import re
from datetime import date
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from greengate.clock import utcnow
from greengate.domain.card_rules import validate_card_form
from greengate.domain.errors import DomainError
from greengate.runtime import Runtime
from greengate.services import payment_flow
from greengate.store.models import Payment
from tests.support.merchant_api import Shop, make_shop, query_string, set_merchant, table_counts

APPROVED = "4405645000006150"
APPROVED_MASKED = "4405-64XX-XXXX-6150"
THREE_DS = "5483185000000293"
PROCESSING = "5548398681700148"
CONTACT_ISSUER = "5367654276102126"
REAL_CARD = "4111111111111111"  # Luhn-valid, not a test card
CREATE_DATE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


@pytest.fixture
async def shop(rt: Runtime, app_client: httpx.AsyncClient) -> Shop:
    return await make_shop(rt, app_client)


async def pay_card(rt: Runtime, payment_id: int, number: str, holder: str = "TEST USER") -> str:
    card = validate_card_form(number, "12", "2030", holder, "123", date.today())
    async with rt.db.transaction() as session:
        return (await payment_flow.submit_card(session, rt, payment_id, card, utcnow())).status


async def act(rt: Runtime, payment_id: int, action: str, code: int | None = None) -> str:
    async with rt.db.transaction() as session:
        payment = await payment_flow.test_action(
            session, payment_id, action, now=utcnow(), actor="operator:test", code=code
        )
        return payment.status


def approval_codes(payment_id: int) -> tuple[str, str]:
    """As docs/test-cards.md describes them."""
    digest = hashlib.sha256(f"payment:{payment_id}".encode()).digest()
    return (
        f"{int.from_bytes(digest[:8], 'big') % 10**6:06d}",
        f"{int.from_bytes(digest[8:16], 'big') % 10**12:012d}",
    )


def unsigned(params: list) -> list:
    return [(name, value) for name, value in params if name not in ("pg_salt", "pg_sig")]


async def transaction_status(shop: Shop, payment_id: int, script: str = "get_status2.php") -> str:
    return str((await shop.status(payment_id, script))["pg_transaction_status"])


async def test_init_answer_and_hosted_page(rt: Runtime, shop: Shop, app_client: httpx.AsyncClient) -> None:
    answer = (await shop.init(pg_amount="250", pg_order_id="P-1")).assert_ok(shop.secret)
    payment_id = int(answer["pg_payment_id"])
    assert answer["pg_redirect_url_type"] == "need data"
    url = urlsplit(answer["pg_redirect_url"])
    assert (url.scheme, url.netloc) == ("http", "testserver")
    assert re.fullmatch(r"/pay/[A-Za-z0-9_-]{20,}", url.path), url.path
    page = await app_client.get(answer["pg_redirect_url"])
    assert page.status_code == 200, page.text[:300]
    assert "text/html" in page.headers["content-type"]
    assert (await app_client.get("/pay/not-a-token")).status_code == 404
    # The id is the payment's; the redirect URL does not expose it.
    async with rt.db.transaction() as session:
        payment = await session.get(Payment, payment_id)
        assert payment is not None and url.path == f"/pay/{payment.access_token}"
        assert (payment.amount, payment.order_id, payment.status) == (25000, "P-1", "new")


async def test_merchant_defaults_apply_when_parameters_are_absent(rt: Runtime, shop: Shop) -> None:
    await set_merchant(
        rt,
        shop.merchant_id,
        result_url="https://shop.example.kz/pay/result.php",
        check_url="https://shop.example.kz/pay/check.php",
        success_url="https://shop.example.kz/ok",
        request_method="XML",
        check_enabled=True,
    )
    defaults_id = await shop.init_ok()
    explicit_id = await shop.init_ok(
        pg_result_url="https://other.example.kz/r.php",
        pg_check_url="https://other.example.kz/c.php",
        pg_request_method="GET",
    )
    async with rt.db.transaction() as session:
        defaults = await session.get(Payment, defaults_id)
        explicit = await session.get(Payment, explicit_id)
    assert defaults is not None and explicit is not None
    assert defaults.result_url == "https://shop.example.kz/pay/result.php"
    assert defaults.check_url == "https://shop.example.kz/pay/check.php"
    assert defaults.success_url == "https://shop.example.kz/ok"
    assert defaults.request_method == "XML"
    assert (explicit.result_url, explicit.check_url, explicit.request_method) == (
        "https://other.example.kz/r.php",
        "https://other.example.kz/c.php",
        "GET",
    )
    # Without check_enabled the merchant's check URL is not used by default.
    await set_merchant(rt, shop.merchant_id, check_enabled=False)
    unchecked_id = await shop.init_ok()
    async with rt.db.transaction() as session:
        unchecked = await session.get(Payment, unchecked_id)
    assert unchecked is not None and unchecked.check_url is None


async def test_order_id_is_one_open_payment(rt: Runtime, shop: Shop) -> None:
    first_id = await shop.init_ok(pg_order_id="ORD-1", pg_amount="100")
    # The same request signed anew (fresh salt) is the same payment.
    assert await shop.init_ok(pg_order_id="ORD-1", pg_amount="100") == first_id
    before = await table_counts(rt)
    (await shop.init(pg_order_id="ORD-1", pg_amount="200")).assert_error(200, shop.secret, "pg_amount")
    assert await table_counts(rt) == before
    # Paid: the order id stays taken; the identical request still names the same payment.
    assert await pay_card(rt, first_id, APPROVED) == "ok"
    assert await shop.init_ok(pg_order_id="ORD-1", pg_amount="100") == first_id
    (await shop.init(pg_order_id="ORD-1", pg_amount="300")).assert_error(200, shop.secret, "pg_order_id")

    # A failed payment frees its order id; status by order id then reports the newest payment.
    failed_id = await shop.init_ok(pg_order_id="ORD-2")
    assert await pay_card(rt, failed_id, CONTACT_ISSUER) == "failed"
    retry_id = await shop.init_ok(pg_order_id="ORD-2", pg_amount="150")
    assert retry_id != failed_id
    by_order = await shop.status(pg_order_id="ORD-2")
    assert (by_order["pg_payment_id"], by_order["pg_transaction_status"]) == (str(retry_id), "partial")
    # Canceled and expired payments free it too.
    (await shop.call("cancel.php", {"pg_payment_id": retry_id})).assert_ok(shop.secret)
    expired_id = await shop.init_ok(pg_order_id="ORD-2")
    assert await act(rt, expired_id, "expire") == "expired"
    assert await shop.init_ok(pg_order_id="ORD-2") not in (failed_id, retry_id, expired_id)


async def test_idempotency_key(rt: Runtime, shop: Shop) -> None:
    payment_id = await shop.init_ok(pg_idempotency_key="key-1", pg_amount="100")
    assert await shop.init_ok(pg_idempotency_key="key-1", pg_amount="100") == payment_id
    before = await table_counts(rt)
    answer = await shop.init(pg_idempotency_key="key-1", pg_amount="101")
    assert answer.status == "error" and answer.verifies(shop.secret), answer.params
    assert "idempotency" in answer.description.lower()
    assert await table_counts(rt) == before
    # Still the same payment after it moved on.
    assert await pay_card(rt, payment_id, APPROVED) == "ok"
    assert await shop.init_ok(pg_idempotency_key="key-1", pg_amount="100") == payment_id
    assert await shop.init_ok(pg_idempotency_key="key-2", pg_amount="100") != payment_id
    async with rt.db.transaction() as session:
        count = len(list(await session.scalars(select(Payment.id))))
    assert count == 2


async def test_status_follows_the_payment(rt: Runtime, shop: Shop) -> None:
    payment_id = await shop.init_ok(pg_order_id="ST-1", pg_amount="1500.5", pg_currency="USD")
    for script in ("get_status.php", "get_status2.php"):
        by_id = await shop.status(payment_id, script)
        by_order = await shop.status(script=script, pg_order_id="ST-1")
        assert unsigned(by_id.params) == unsigned(by_order.params)
        assert by_id["pg_payment_id"] == str(payment_id) and by_id["pg_order_id"] == "ST-1"
        assert by_id["pg_transaction_status"] == "partial"
        assert (by_id["pg_amount"], by_id["pg_currency"]) == ("1500.50", "USD")
        assert by_id["pg_testing_mode"] == "1" and by_id["pg_captured"] == "0"
        assert CREATE_DATE.fullmatch(by_id["pg_create_date"])
        assert by_id.get("pg_failure_code") is None

    assert await pay_card(rt, payment_id, PROCESSING) == "pending"
    status = await shop.status(payment_id)
    assert status["pg_transaction_status"] == "pending"
    assert status["pg_card_pan"] == "5548-39XX-XXXX-0148"
    assert status["pg_payment_system"] == "BANKCARD"
    assert await act(rt, payment_id, "approve") == "ok"
    status = await shop.status(payment_id, "get_status.php")
    assert (status["pg_transaction_status"], status["pg_captured"], status["pg_can_reject"]) == (
        "ok",
        "1",
        "1",
    )
    async with rt.db.transaction() as session:
        assert await payment_flow.refund_rejected_result(session, payment_id, reason="test", now=utcnow())
    status = await shop.status(payment_id)
    assert (status["pg_transaction_status"], status["pg_refund_amount"]) == ("revoked", "1500.50")

    declined_id = await shop.init_ok()
    assert await pay_card(rt, declined_id, CONTACT_ISSUER) == "failed"
    status = await shop.status(declined_id)
    assert status["pg_transaction_status"] == "failed"
    assert status["pg_failure_code"] == "10001" and status["pg_failure_description"]
    assert status["pg_card_pan"] == "5367-65XX-XXXX-2126"

    operator_id = await shop.init_ok()
    assert await act(rt, operator_id, "decline", code=10007) == "failed"
    assert (await shop.status(operator_id))["pg_failure_code"] == "10007"

    expired_id = await shop.init_ok()
    assert await act(rt, expired_id, "expire") == "expired"
    assert await transaction_status(shop, expired_id) == "incomplete"

    approved_id = await shop.init_ok()
    assert await pay_card(rt, approved_id, APPROVED) == "ok"
    status = await shop.status(approved_id, "get_status.php")
    assert (status["pg_transaction_status"], status["pg_card_pan"]) == ("ok", APPROVED_MASKED)


async def test_three_ds_and_operator_required_three_ds(rt: Runtime, shop: Shop) -> None:
    payment_id = await shop.init_ok()
    assert await pay_card(rt, payment_id, THREE_DS) == "3ds"
    assert await transaction_status(shop, payment_id) == "partial"
    async with rt.db.transaction() as session:
        await payment_flow.submit_3ds(session, rt, payment_id, "12345678", utcnow())
    assert await transaction_status(shop, payment_id) == "ok"

    wrong_id = await shop.init_ok()
    assert await pay_card(rt, wrong_id, THREE_DS) == "3ds"
    async with rt.db.transaction() as session:
        await payment_flow.submit_3ds(session, rt, wrong_id, "00000000", utcnow())
    assert (await shop.status(wrong_id))["pg_failure_code"] == "10004"

    forced_id = await shop.init_ok()
    assert await act(rt, forced_id, "require-3ds") == "new"
    assert await pay_card(rt, forced_id, APPROVED) == "3ds"


async def test_get_status3_fields(rt: Runtime, shop: Shop) -> None:
    card_id = await shop.init_ok(pg_order_id="S3-1", pg_amount="99.99")
    status = await shop.status(card_id, "get_status3.php")
    assert (status["pg_payment_status"], status["pg_payment_method"]) == ("waiting", "")
    assert await pay_card(rt, card_id, APPROVED, holder="Ivan Petrov") == "ok"
    status = await shop.status(card_id, "get_status3.php")
    auth_code, rrn = approval_codes(card_id)
    assert status["pg_payment_status"] == "success"
    assert status["pg_payment_method"] == "bankcard"
    assert (status["pg_auth_code"], status["pg_reference"]) == (auth_code, rrn)
    assert (status["pg_card_pan"], status["pg_card_name"]) == (APPROVED_MASKED, "IVAN PETROV")
    assert (status["pg_amount"], status["pg_clearing_amount"], status["pg_revoke_amount"]) == (
        "99.99",
        "99.99",
        "0.00",
    )
    assert CREATE_DATE.fullmatch(status["pg_payment_date"])
    assert "pg_refund_payments" in status

    phone_id = await shop.init_ok()
    async with rt.db.transaction() as session:
        await payment_flow.submit_phone(session, rt, phone_id, "+7 (701) 777-77-77", utcnow())
    assert (await shop.status(phone_id, "get_status3.php"))["pg_payment_status"] == "waiting"
    async with rt.db.transaction() as session:
        await payment_flow.submit_otp(session, rt, phone_id, "111111", utcnow())
    status = await shop.status(phone_id, "get_status3.php")
    assert (status["pg_payment_status"], status["pg_payment_method"]) == ("success", "mobile_commerce")
    assert (await shop.status(phone_id))["pg_payment_system"] == "MOBILE_COMMERCE"

    pending_id = await shop.init_ok()
    assert await pay_card(rt, pending_id, PROCESSING) == "pending"
    assert (await shop.status(pending_id, "get_status3.php"))["pg_payment_status"] == "process"

    declined_id = await shop.init_ok()
    assert await pay_card(rt, declined_id, CONTACT_ISSUER) == "failed"
    status = await shop.status(declined_id, "get_status3.php")
    assert (status["pg_payment_status"], status["pg_failure_code"]) == ("error", "10001")


async def test_unknown_and_foreign_payments_are_340(
    rt: Runtime, shop: Shop, app_client: httpx.AsyncClient
) -> None:
    other = await make_shop(rt, app_client, name="Other shop")
    foreign_id = await other.init_ok(pg_order_id="THEIRS")
    before = await table_counts(rt)
    for script in ("get_status.php", "get_status2.php", "get_status3.php", "cancel.php"):
        for fields in (
            {"pg_payment_id": str(foreign_id)},
            {"pg_order_id": "THEIRS"},
            {"pg_payment_id": "987654"},
        ):
            (await shop.call(script, fields)).assert_error(340, shop.secret)
    (await shop.call("get_status2.php", {})).assert_error(200, shop.secret, "pg_payment_id")
    (await shop.call("get_status2.php", {"pg_payment_id": "x1"})).assert_error(
        200, shop.secret, "pg_payment_id"
    )
    assert await table_counts(rt) == before
    assert await transaction_status(other, foreign_id) == "partial"


async def test_cancel(rt: Runtime, shop: Shop) -> None:
    new_id = await shop.init_ok(pg_order_id="C-1")
    answer = (await shop.call("cancel.php", {"pg_payment_id": new_id})).assert_ok(shop.secret)
    assert answer["pg_payment_id"] == str(new_id)
    status = await shop.status(new_id)
    assert (status["pg_transaction_status"], status["pg_failure_code"]) == ("failed", "400")
    (await shop.call("cancel.php", {"pg_payment_id": new_id})).assert_error(490, shop.secret)

    by_order_id = await shop.init_ok(pg_order_id="C-2")
    (await shop.call("cancel.php", {"pg_order_id": "C-2"})).assert_ok(shop.secret)
    assert await transaction_status(shop, by_order_id) == "failed"

    paid_id = await shop.init_ok()
    assert await pay_card(rt, paid_id, APPROVED) == "ok"
    before = await table_counts(rt)
    (await shop.call("cancel.php", {"pg_payment_id": paid_id})).assert_error(490, shop.secret)
    assert await table_counts(rt) == before
    assert await transaction_status(shop, paid_id) == "ok"


async def test_ps_list(shop: Shop) -> None:
    answer = (await shop.call("ps_list.php", {"pg_amount": "150.5", "pg_currency": "KZT"})).assert_ok(
        shop.secret
    )
    systems = [dict(value) for name, value in answer.params if name == "pg_payment_system"]
    assert [s["pg_name"] for s in systems] == ["BANKCARD", "MOBILE_COMMERCE"]
    assert all(s["pg_amount_to_pay"] == "150.50" and s["pg_amount_to_pay_currency"] == "KZT" for s in systems)
    assert all(s["pg_description"] for s in systems)
    (await shop.call("ps_list.php", {"pg_currency": "KZT"})).assert_error(200, shop.secret, "pg_amount")
    (await shop.call("ps_list.php", {"pg_amount": "1", "pg_currency": "ABC"})).assert_error(
        200, shop.secret, "pg_currency"
    )


async def test_test_mode_merchant_makes_only_test_payments(rt: Runtime, shop: Shop) -> None:
    payment_id = await shop.init_ok(pg_testing_mode="0")
    assert (await shop.status(payment_id))["pg_testing_mode"] == "1"
    assert await pay_card(rt, payment_id, REAL_CARD) == "failed"
    status = await shop.status(payment_id)
    assert (status["pg_transaction_status"], status["pg_failure_code"]) == ("failed", "10005")
    ok_id = await shop.init_ok(pg_testing_mode="0")
    assert await pay_card(rt, ok_id, APPROVED) == "ok"


async def test_live_mode_merchant(rt: Runtime, app_client: httpx.AsyncClient) -> None:
    live = await make_shop(rt, app_client, name="Live shop", mode="live")
    test_card_id = await live.init_ok()
    assert (await live.status(test_card_id))["pg_testing_mode"] == "0"
    assert await pay_card(rt, test_card_id, APPROVED) == "failed"
    assert (await live.status(test_card_id))["pg_failure_code"] == "10005"

    # A real card goes to the manual acquirer and waits for the operator.
    real_id = await live.init_ok()
    for action in ("approve", "decline", "expire", "require-3ds"):
        with pytest.raises(DomainError) as refused:
            await act(rt, real_id, action)
        assert refused.value.code == "action_disabled"
    assert await pay_card(rt, real_id, REAL_CARD) == "pending"
    status = await live.status(real_id)
    assert (status["pg_transaction_status"], status["pg_card_pan"]) == ("pending", "4111-11XX-XXXX-1111")
    for action in ("expire", "require-3ds"):
        with pytest.raises(DomainError) as refused:
            await act(rt, real_id, action)
        assert refused.value.code == "action_disabled"
    assert await act(rt, real_id, "approve") == "ok"
    assert await transaction_status(live, real_id) == "ok"
    with pytest.raises(DomainError) as refused:
        await act(rt, real_id, "decline")
    assert refused.value.code == "action_disabled"

    declined_id = await live.init_ok()
    assert await pay_card(rt, declined_id, REAL_CARD) == "pending"
    assert await act(rt, declined_id, "decline", code=10001) == "failed"
    assert (await live.status(declined_id))["pg_failure_code"] == "10001"

    # pg_testing_mode=1: a test payment in the sandbox, test buttons allowed.
    sandbox_id = await live.init_ok(pg_testing_mode="1")
    assert (await live.status(sandbox_id))["pg_testing_mode"] == "1"
    assert await pay_card(rt, sandbox_id, APPROVED) == "ok"
    real_in_sandbox = await live.init_ok(pg_testing_mode="1")
    assert await pay_card(rt, real_in_sandbox, REAL_CARD) == "failed"
    assert (await live.status(real_in_sandbox))["pg_failure_code"] == "10005"
    button_id = await live.init_ok(pg_testing_mode="1")
    assert await act(rt, button_id, "approve") == "ok"

    # The operator switches the mode: a test-mode merchant's payments are test payments again.
    await set_merchant(rt, live.merchant_id, mode="test")
    assert (await live.status(await live.init_ok()))["pg_testing_mode"] == "1"


async def test_payment_php_redirects_the_browser_to_the_page(
    rt: Runtime, shop: Shop, app_client: httpx.AsyncClient
) -> None:
    fields = {"pg_amount": "75", "pg_description": "browser", "pg_order_id": "B-1"}
    link = shop.message("payment.php", fields)
    response = await app_client.get(f"/payment.php?{query_string(link)}")
    assert response.status_code in (302, 303), response.text[:300]
    assert re.fullmatch(r"http://testserver/pay/[A-Za-z0-9_-]{20,}", response.headers["location"])
    assert (await app_client.get(response.headers["location"])).status_code == 200
    # The auto-submitted form of the same order: the same open payment.
    form = shop.message("payment.php", fields)
    again = await app_client.post("/payment.php", data=dict(form))
    assert again.status_code in (302, 303) and again.headers["location"] == response.headers["location"]
    # Signed for init_payment.php: refused with a page naming the error, nothing created.
    before = await table_counts(rt)
    wrong = shop.message("init_payment.php", {**fields, "pg_order_id": "B-2"})
    refused = await app_client.get(f"/payment.php?{query_string(wrong)}")
    assert refused.status_code == 400 and "text/html" in refused.headers["content-type"]
    assert "100" in refused.text
    assert await table_counts(rt) == before
