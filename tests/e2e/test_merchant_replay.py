"""Replays and salts over HTTP: pg_salt is not a nonce (clients draw it from 1..10000), reads write
nothing, and a byte-for-byte replay of a state-changing request gets its first answer again, signed
afresh, and acts once, however much later it comes."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from greengate.clock import utcnow
from greengate.domain.card_rules import validate_card_form
from greengate.runtime import Runtime
from greengate.services import payment_flow
from greengate.store.models import Payment, Payout, RecurringProfile, Refund
from tests.e2e.test_card_storage import USER, CardShop, add_card, charge_fields, listed, new_shop
from tests.e2e.test_merchant_payouts import SUCCESS, fund, saved_payout_card
from tests.support.merchant_api import Answer, CallbackServer, Params, Shop, make_shop, send, table_counts

APPROVED = "4405645000006150"
LATER = [pytest.param(timedelta(hours=25), id="25h"), pytest.param(timedelta(days=30), id="30d")]


@pytest.fixture
async def shop(rt: Runtime, app_client: httpx.AsyncClient) -> Shop:
    return await make_shop(rt, app_client)


@pytest.fixture
async def card_shop(rt: Runtime, app_client: httpx.AsyncClient) -> CardShop:
    return await new_shop(rt, app_client)


def move_clock(rt: Runtime, delta: timedelta) -> None:
    """The gateway's Merchant API clock runs `delta` ahead from now on."""

    def later() -> datetime:
        return utcnow() + delta

    rt.clock = later


def without_signature(answer: Answer) -> Params:
    return [(name, value) for name, value in answer.params if name not in ("pg_salt", "pg_sig")]


async def replay(
    rt: Runtime,
    client: httpx.AsyncClient,
    path: str,
    params: Params,
    secret: str,
    delta: timedelta,
    *,
    script: str | None = None,
) -> tuple[Answer, Answer]:
    """Send a signed request, move the clock, send the very same bytes again: the second answer is the
    first one signed afresh, and nothing in the database changed."""
    script = script or path.rpartition("/")[2]
    rt.clock = utcnow
    first = Answer.read(await send(client, path, params), script).assert_ok(secret)
    before = await table_counts(rt)
    move_clock(rt, delta)
    again = Answer.read(await send(client, path, params), script).assert_ok(secret)
    assert await table_counts(rt) == before
    assert without_signature(again) == without_signature(first)
    assert again["pg_salt"] != first["pg_salt"]
    return first, again


async def pay(rt: Runtime, payment_id: int) -> None:
    card = validate_card_form(APPROVED, "12", "2030", "Test User", "123", date.today())
    async with rt.db.transaction() as session:
        assert (await payment_flow.submit_card(session, rt, payment_id, card, utcnow())).status == "ok"


async def count(rt: Runtime, model: Any, **where: Any) -> int:
    async with rt.db.transaction() as session:
        stmt = select(func.count()).select_from(model)
        for name, value in where.items():
            stmt = stmt.where(getattr(model, name) == value)
        return int(await session.scalar(stmt) or 0)


# --- salts from a small range ----------------------------------------------------------------------


async def test_a_client_with_salts_from_1_to_10000_never_fails(rt: Runtime, shop: Shop) -> None:
    draw = random.Random(20261203)
    salts = [str(draw.randint(1, 10000)) for _ in range(600)]
    assert len(set(salts)) < len(salts)  # the draw repeats salts, as such clients do
    salts[1] = salts[0]  # and one repeat comes straight away
    payment_ids: list[int] = []
    for n in range(150):
        fields = {"pg_amount": "100", "pg_description": f"Order {n}", "pg_order_id": f"S-{n}"}
        answer = await shop.call("init_payment.php", fields, salt=salts[n])
        answer.assert_ok(shop.secret)
        payment_ids.append(int(answer["pg_payment_id"]))
    assert len(set(payment_ids)) == 150
    for n in range(450):
        payment_id = payment_ids[n % 150]
        answer = await shop.call("get_status.php", {"pg_payment_id": str(payment_id)}, salt=salts[150 + n])
        answer.assert_ok(shop.secret)
        assert answer["pg_payment_id"] == str(payment_id)
    assert await count(rt, Payment, merchant_id=shop.merchant_id) == 150


@pytest.mark.parametrize("script", ["get_status.php", "get_status2.php", "get_status3.php", "ps_list.php"])
async def test_reads_write_nothing_and_accept_any_salt(rt: Runtime, shop: Shop, script: str) -> None:
    payment_id = await shop.init_ok(pg_order_id="READ-1")
    fields = {"pg_payment_id": str(payment_id), "pg_amount": "100"}
    if script == "ps_list.php":
        fields = {"pg_amount": "100"}
    before = await table_counts(rt)
    message = shop.message(script, fields, salt="7")
    for _ in range(3):
        (await shop.send_raw(script, message)).assert_ok(shop.secret)
    (await shop.call(script, fields, salt="7")).assert_ok(shop.secret)
    assert await table_counts(rt) == before


async def test_the_same_salt_with_other_parameters_is_another_request(shop: Shop) -> None:
    one = await shop.call("init_payment.php", {"pg_amount": "100", "pg_description": "a"}, salt="42")
    two = await shop.call("init_payment.php", {"pg_amount": "200", "pg_description": "b"}, salt="42")
    assert one.assert_ok(shop.secret)["pg_payment_id"] != two.assert_ok(shop.secret)["pg_payment_id"]


# --- replays of state-changing scripts ---------------------------------------------------------------


@pytest.mark.parametrize("delta", LATER)
@pytest.mark.parametrize("transport", ["form", "json"])
async def test_replayed_init_payment_is_one_payment(
    rt: Runtime, shop: Shop, delta: timedelta, transport: str
) -> None:
    message = shop.message("init_payment.php", {"pg_amount": "100", "pg_description": "once"})
    first = Answer.read(await send(shop.client, "/init_payment.php", message, transport), "init_payment.php")
    first.assert_ok(shop.secret)
    move_clock(rt, delta)
    again = Answer.read(await send(shop.client, "/init_payment.php", message, transport), "init_payment.php")
    assert again.assert_ok(shop.secret)["pg_payment_id"] == first["pg_payment_id"]
    assert await count(rt, Payment, merchant_id=shop.merchant_id) == 1


@pytest.mark.parametrize("delta", LATER)
async def test_a_reloaded_payment_link_shows_the_same_payment(
    rt: Runtime, shop: Shop, delta: timedelta
) -> None:
    message = shop.message("payment.php", {"pg_amount": "100", "pg_description": "link"})
    link = f"/payment.php?{httpx.QueryParams(message)}"
    first = await shop.client.get(link)
    assert first.status_code == 303, first.text
    before = await table_counts(rt)
    move_clock(rt, delta)
    for _ in range(2):
        again = await shop.client.get(link)
        assert again.status_code == 303, again.text
        assert again.headers["location"] == first.headers["location"]
    assert await table_counts(rt) == before
    page = await shop.client.get(first.headers["location"])
    assert page.status_code == 200


@pytest.mark.parametrize("delta", LATER)
async def test_replayed_cancel_answers_as_the_first_time(rt: Runtime, shop: Shop, delta: timedelta) -> None:
    payment_id = await shop.init_ok()
    message = shop.message("cancel.php", {"pg_payment_id": str(payment_id)})
    await replay(rt, shop.client, "/cancel.php", message, shop.secret, delta)


@pytest.mark.parametrize("delta", LATER)
async def test_replayed_revoke_refunds_once(rt: Runtime, shop: Shop, delta: timedelta) -> None:
    payment_id = await shop.init_ok(pg_amount="100")
    await pay(rt, payment_id)
    message = shop.message("revoke.php", {"pg_payment_id": str(payment_id), "pg_refund_amount": "10"})
    await replay(rt, shop.client, "/revoke.php", message, shop.secret, delta)
    assert await count(rt, Refund, payment_id=payment_id) == 1
    async with rt.db.transaction() as session:
        payment = await session.get(Payment, payment_id)
        assert payment is not None and payment.refunded_amount == 1000


@pytest.mark.parametrize("delta", LATER)
async def test_replayed_capture_captures_once(rt: Runtime, shop: Shop, delta: timedelta) -> None:
    payment_id = await shop.init_ok(pg_amount="100", pg_postpone_payment="1")
    await pay(rt, payment_id)
    message = shop.message("do_capture.php", {"pg_payment_id": str(payment_id), "pg_clearing_amount": "60"})
    first, _ = await replay(rt, shop.client, "/do_capture.php", message, shop.secret, delta)
    assert first["pg_clearing_amount"] == "60.00"


@pytest.mark.parametrize("delta", LATER)
async def test_replayed_recurring_charge_charges_once(rt: Runtime, shop: Shop, delta: timedelta) -> None:
    first_payment = await shop.init_ok(pg_recurring_start="1", pg_recurring_lifetime="3")
    await pay(rt, first_payment)
    async with rt.db.transaction() as session:
        profile = await session.scalar(
            select(RecurringProfile).where(RecurringProfile.payment_id == first_payment)
        )
        assert profile is not None
    fields = {"pg_recurring_profile": str(profile.id), "pg_amount": "50", "pg_description": "Monthly"}
    message = shop.message("make_recurring_payment.php", fields)
    await replay(rt, shop.client, "/make_recurring_payment.php", message, shop.secret, delta)
    assert await count(rt, Payment, merchant_id=shop.merchant_id) == 2


@pytest.mark.parametrize("delta", LATER)
async def test_replayed_reg2nonreg_pays_out_once(rt: Runtime, card_shop: CardShop, delta: timedelta) -> None:
    await fund(rt, card_shop.merchant_id, 1_000_000)
    fields = {"pg_amount": "1500", "pg_order_id": "PO-1", "pg_user_id": "u-1", "pg_description": "Prize"}
    message = card_shop.message("reg2nonreg", fields, payout=True)
    await replay(rt, card_shop.client, "/api/reg2nonreg", message, card_shop.payout_secret, delta)
    assert await count(rt, Payout, merchant_id=card_shop.merchant_id) == 1


@pytest.mark.parametrize("delta", LATER)
async def test_replayed_reg2reg_pays_out_once(rt: Runtime, card_shop: CardShop, delta: timedelta) -> None:
    await fund(rt, card_shop.merchant_id, 1_000_000)
    card = await saved_payout_card(rt, card_shop.merchant_id, "u-1", SUCCESS)
    fields = {
        "pg_amount": "2500",
        "pg_order_id": "R-1",
        "pg_user_id": "u-1",
        "pg_card_id": str(card.id),
        "pg_description": "Cashback",
    }
    message = card_shop.message("reg2reg", fields, payout=True)
    await replay(rt, card_shop.client, "/api/reg2reg", message, card_shop.payout_secret, delta)
    assert await count(rt, Payout, merchant_id=card_shop.merchant_id) == 1


@pytest.mark.parametrize("delta", LATER)
@pytest.mark.parametrize("endpoint", ["cardstorage/add", "cardstorage/add2", "cardstoragepayout/add"])
async def test_replayed_card_add_opens_one_card_page(
    rt: Runtime, card_shop: CardShop, delta: timedelta, endpoint: str
) -> None:
    payout = endpoint.startswith("cardstoragepayout")
    fields = {
        "pg_user_id": USER,
        "pg_post_link": "https://shop.example/card.php",
        "pg_back_link": "https://shop.example/back.php",
    }
    message = card_shop.message(endpoint.rpartition("/")[2], fields, payout=payout)
    secret = card_shop.payout_secret if payout else card_shop.secret
    await replay(rt, card_shop.client, card_shop.path(endpoint), message, secret, delta)


async def saved_card(card_shop: CardShop) -> str:
    with CallbackServer(card_shop.secret) as server:
        await add_card(card_shop, server, APPROVED)
    return (await listed(card_shop))[-1]["pg_card_id"]


@pytest.mark.parametrize("delta", LATER)
async def test_replayed_card_remove_answers_as_the_first_time(
    rt: Runtime, card_shop: CardShop, delta: timedelta
) -> None:
    card_id = await saved_card(card_shop)
    message = card_shop.message("remove", {"pg_user_id": USER, "pg_card_id": card_id})
    await replay(rt, card_shop.client, card_shop.path("cardstorage/remove"), message, card_shop.secret, delta)


@pytest.mark.parametrize("delta", LATER)
async def test_replayed_card_charges_act_once(rt: Runtime, card_shop: CardShop, delta: timedelta) -> None:
    card_id = await saved_card(card_shop)
    init = card_shop.message("init", charge_fields(card_id))
    first, _ = await replay(rt, card_shop.client, card_shop.path("card/init"), init, card_shop.secret, delta)
    payment_id = str(first["pg_payment_id"])
    direct = card_shop.message("direct", {"pg_payment_id": payment_id})
    await replay(rt, card_shop.client, card_shop.path("card/direct"), direct, card_shop.secret, delta)
    assert await count(rt, Payment, merchant_id=card_shop.merchant_id) == 2  # the card check, the charge


@pytest.mark.parametrize("delta", LATER)
async def test_a_reloaded_card_pay_link_shows_the_same_page(
    rt: Runtime, card_shop: CardShop, delta: timedelta
) -> None:
    card_id = await saved_card(card_shop)
    init = await card_shop.ok("card/init", charge_fields(card_id))
    message = card_shop.message("pay", {"pg_payment_id": str(init["pg_payment_id"])})
    link = f"{card_shop.path('card/pay')}?{httpx.QueryParams(message)}"
    first = await card_shop.client.get(link)
    assert first.status_code == 303, first.text
    before = await table_counts(rt)
    move_clock(rt, delta)
    again = await card_shop.client.get(link)
    assert again.status_code == 303 and again.headers["location"] == first.headers["location"]
    assert await table_counts(rt) == before
