"""The Merchant API client against a running gateway: every script by a typed call, answers verified,
pg_error_code raised, every transport, and payments, payouts and saved cards driven end to end."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from itertools import count
from urllib.parse import urlsplit

import httpx
import pytest
from greengate_client import AsyncMerchantClient, MerchantApiError, MerchantClient, SignatureError
from greengate_client.merchant import PaymentInit
from greengate_client.wire import TRANSPORTS
from sqlalchemy import select

from greengate.clock import utcnow
from greengate.domain import ledger as ledger_domain
from greengate.domain.card_rules import validate_card_form
from greengate.runtime import Runtime
from greengate.services import ledger, payment_flow
from greengate.services.merchants import create_merchant
from greengate.store.models import RecurringProfile
from tests.client.conftest import Gateway

APPROVED = "4405645000006150"
DECLINED = "5367654276102126"
PAYOUT_CARD = "4671593866478252"
_funding = count(1)


class Shop:
    def __init__(self, merchant_id: int, secret: str, payout_secret: str) -> None:
        self.merchant_id = merchant_id
        self.secret = secret
        self.payout_secret = payout_secret


@pytest.fixture
async def shop(rt: Runtime) -> Shop:
    async with rt.db.transaction() as session:
        _, creds = await create_merchant(session, rt.keyring, name="Client shop", mode="test", now=utcnow())
    return Shop(creds.merchant_id, creds.secret_key, creds.payout_secret)


@pytest.fixture
def client(gateway: Gateway, shop: Shop) -> Iterator[MerchantClient]:
    with MerchantClient(gateway.url, shop.merchant_id, shop.secret, payout_secret=shop.payout_secret) as c:
        yield c


async def pay(rt: Runtime, payment_id: int, number: str = APPROVED) -> str:
    card = validate_card_form(number, "12", "2030", "Test User", "123", date.today())
    async with rt.db.transaction() as session:
        status = (await payment_flow.submit_card(session, rt, payment_id, card, utcnow())).status
    if status == "3ds":
        async with rt.db.transaction() as session:
            status = (await payment_flow.submit_3ds(session, rt, payment_id, "12345678", utcnow())).status
    return str(status)


async def fund(rt: Runtime, merchant_id: int, amount: int, currency: str = "KZT") -> None:
    """Test money for the test-mode shop: its payouts draw on the test book."""
    async with rt.db.transaction() as session:
        await ledger.post(
            session,
            ledger_domain.payment_succeeded(merchant_id, amount, currency, 0, book=ledger_domain.Book.TEST),
            object_type="test_funding",
            object_id=f"{merchant_id}:{next(_funding)}",
            now=utcnow(),
        )


def fill_card_page(page_url: str, number: str) -> None:
    """The payer on the card page: the form is posted and the page answers with the outcome."""
    path = urlsplit(page_url).path
    base = page_url[: page_url.index(path)]
    with httpx.Client(base_url=base) as browser:
        answer = browser.post(
            f"{path}/card", data={"number": number, "exp": "12/30", "holder": "Ivan Petrov", "cvc": "739"}
        )
        assert answer.status_code == 303, answer.text
        page = browser.get(answer.headers["location"])
    assert re.search(r'data-result="([a-z-]+)"', page.text), page.text


# --- payments --------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_init_and_status_by_every_transport(
    gateway: Gateway, shop: Shop, rt: Runtime, transport: str
) -> None:
    with MerchantClient(gateway.url, shop.merchant_id, shop.secret, transport=transport) as client:  # type: ignore[arg-type]
        init = client.init_payment(
            Decimal("1500.50"),
            "Оплата заказа №1 — «Кофе»",
            order_id=f"A-{transport}",
            currency="KZT",
            extra={"cart": {"items": ["tea", "coffee"]}, "note": "gift & wrap"},
        )
        assert isinstance(init, PaymentInit)
        assert init.redirect_url.startswith(gateway.url)
        assert init.redirect_url_type == "need data"
        status = client.get_status2(init.payment_id)
        assert status.transaction_status == "partial"
        assert status.amount == Decimal("1500.50")
        assert status.order_id == f"A-{transport}"
        assert client.get_status(order_id=f"A-{transport}").payment_id == init.payment_id


async def test_a_paid_payment_is_reported_refunded_in_parts(client: MerchantClient, rt: Runtime) -> None:
    init = client.init_payment("100", "Order 7", order_id="7")
    assert await pay(rt, init.payment_id) == "ok"
    status = client.get_status2(init.payment_id)
    assert (status.transaction_status, status.captured, status.card_pan) == (
        "ok",
        True,
        "4405-64XX-XXXX-6150",
    )
    assert status.create_date is not None

    first = client.revoke(init.payment_id, Decimal("30"))
    assert (first.refund_amount, first.revoke_amount) == (Decimal("30.00"), Decimal("30.00"))
    rest = client.revoke(init.payment_id)
    assert rest.revoke_amount == Decimal("100.00")
    assert rest.transaction_status == "revoked"

    rich = client.get_status3(init.payment_id)
    assert rich.payment_status == "success"
    assert rich.revoke_amount == Decimal("100.00")
    assert [r.amount for r in rich.refunds] == [Decimal("-30.00"), Decimal("-70.00")]
    assert rich.payment_date is not None and rich.payment_date.tzinfo is not None

    with pytest.raises(MerchantApiError) as nothing_left:
        client.revoke(init.payment_id, "1")
    assert nothing_left.value.code == 490


async def test_two_step_payment_is_captured_and_an_unpaid_one_canceled(
    client: MerchantClient, rt: Runtime
) -> None:
    held = client.init_payment("200", "Hold", postpone_payment=1)
    assert await pay(rt, held.payment_id) == "ok"
    assert client.get_status2(held.payment_id).captured is False
    captured = client.do_capture(held.payment_id, Decimal("150"))
    assert (captured.clearing_amount, captured.captured) == (Decimal("150.00"), True)

    unpaid = client.init_payment("50", "Never paid")
    assert client.cancel(unpaid.payment_id).payment_id == unpaid.payment_id
    assert client.get_status2(unpaid.payment_id).transaction_status == "failed"


async def test_recurring_charge_and_payment_systems(client: MerchantClient, rt: Runtime) -> None:
    first = client.init_payment("100", "Subscription", recurring_start=1, recurring_lifetime=3)
    assert await pay(rt, first.payment_id) == "ok"
    async with rt.db.transaction() as session:
        profile = await session.scalar(
            select(RecurringProfile).where(RecurringProfile.payment_id == first.payment_id)
        )
    assert profile is not None
    charge = client.make_recurring_payment(profile.id, "50", "Monthly", order_id="m-2")
    assert charge.transaction_status == "ok"
    assert charge.recurring_profile_id == str(profile.id)
    assert charge.amount == Decimal("50.00")

    systems = client.ps_list("100", "KZT")
    assert {s.name for s in systems} == {"BANKCARD", "MOBILE_COMMERCE"}
    assert all(s.amount_to_pay == Decimal("100.00") for s in systems)


def test_protocol_errors_become_exceptions_with_the_code(client: MerchantClient, gateway: Gateway) -> None:
    with pytest.raises(MerchantApiError) as unknown:
        client.get_status2(999999)
    assert unknown.value.code == 340
    with pytest.raises(MerchantApiError) as missing:
        client.init_payment("0", "zero")
    assert missing.value.code == 200 and "pg_amount" in missing.value.description
    with (
        MerchantClient(gateway.url, 99999999, "whatever") as stranger,
        pytest.raises(MerchantApiError) as who,
    ):
        stranger.ps_list("10")
    assert who.value.code == 101


def test_an_answer_signed_with_another_secret_is_refused(gateway: Gateway, shop: Shop) -> None:
    # The gateway refuses the request (code 100) and signs its answer with the real secret: the
    # client, holding a wrong one, cannot verify that answer and says so.
    with MerchantClient(gateway.url, shop.merchant_id, "wrong-secret") as impostor:
        with pytest.raises(SignatureError):
            impostor.get_status2(1)


def test_the_shop_s_own_parameters_must_not_claim_the_pg_prefix(client: MerchantClient) -> None:
    with pytest.raises(ValueError):
        client.init_payment("10", "x", extra={"pg_unknown": "1"})


async def test_async_client_runs_the_same_calls(gateway: Gateway, shop: Shop, rt: Runtime) -> None:
    async with AsyncMerchantClient(gateway.url, shop.merchant_id, shop.secret, transport="json") as client:
        init = await client.init_payment("75", "Async order", order_id="as-1")
        assert await pay(rt, init.payment_id) == "ok"
        assert (await client.get_status3(init.payment_id)).payment_status == "success"
        assert (await client.revoke(init.payment_id)).transaction_status == "revoked"


def test_payment_url_opens_the_hosted_page(client: MerchantClient, gateway: Gateway) -> None:
    link = client.payment_url(gateway.url, "10", "Link order", order_id="link-1")
    answer = httpx.get(link)
    assert answer.status_code in (302, 303), answer.text
    assert "/pay/" in answer.headers["location"]
    assert client.get_status(order_id="link-1").transaction_status == "partial"


# --- saved cards -----------------------------------------------------------------------------------


async def test_a_saved_card_pays_directly_and_by_the_payer_s_link(
    client: MerchantClient, gateway: Gateway, rt: Runtime
) -> None:
    page = client.add_card("user-1", "http://127.0.0.1:9/card.php", "https://shop.example/back")
    assert page.type == "init"
    fill_card_page(page.redirect_url, APPROVED)
    [card] = client.list_cards("user-1")
    assert card.card_hash == "4405-64XX-XXXX-6150"
    assert card.card_token

    direct = client.card_init("120", "c-1", "user-1", "Saved card order", card_id=card.card_id)
    paid = client.card_direct(direct.payment_id)
    assert paid.payment_status == "success"
    assert paid.card_token == card.card_token

    present = client.card_init("80", "c-2", "user-1", "With the payer", card_token=card.card_token)
    link = client.card_pay_url(gateway.url, present.payment_id)
    answer = httpx.get(link)
    assert answer.status_code == 303, answer.text
    assert client.get_status3(present.payment_id).payment_status == "success"

    removed = client.remove_card("user-1", card_id=card.card_id)
    assert removed.deleted_at is not None
    assert client.list_cards("user-1") == []
    with pytest.raises(MerchantApiError):
        client.card_init("10", "c-3", "user-1", "Dead card", card_id=card.card_id)


# --- payouts ---------------------------------------------------------------------------------------


async def test_payouts_to_a_new_and_to_a_saved_card(client: MerchantClient, shop: Shop, rt: Runtime) -> None:
    await fund(rt, shop.merchant_id, 1_000_000)
    hosted = client.payout_to_new_card("100", "po-1", "user-9", "Winnings", post_link="http://127.0.0.1:9/p")
    assert hosted.redirect_url
    waiting = client.payout_status(hosted.payment_id)
    assert waiting.transaction_status == "partial"

    page = client.add_card("user-9", "http://127.0.0.1:9/card.php", "https://shop.example/b", payout=True)
    fill_card_page(page.redirect_url, PAYOUT_CARD)
    [card] = client.list_cards("user-9", payout=True)
    payout = client.payout_to_saved_card("250", "po-2", "user-9", "Cashback", card_id=card.card_id)
    assert payout.status == "ok"
    assert payout.payment_amount == Decimal("250.00")
    assert payout.balance is not None and payout.balance < Decimal("10000")
    done = client.payout_status(order_id="po-2")
    assert done.payment_status == "success"

    with pytest.raises(MerchantApiError) as poor:
        client.payout_to_saved_card("99999", "po-3", "user-9", "Too much", card_id=card.card_id)
    assert poor.value.code
    without_secret = MerchantClient("http://127.0.0.1:9", shop.merchant_id, shop.secret)
    with pytest.raises(ValueError):
        without_secret.payout_status(1)
