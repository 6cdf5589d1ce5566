"""Test money and live money over real HTTP: a merchant that collected test payments and is switched
to live cannot pay out that money for real; its test payouts still draw on it, and live payments fund
live payouts. Every refused request writes nothing."""

from __future__ import annotations

from datetime import date
from urllib.parse import urlsplit

import httpx

from greengate.clock import utcnow
from greengate.domain import ledger as L
from greengate.domain.card_rules import validate_card_form
from greengate.runtime import Runtime
from greengate.services import amount_caps, ledger, payment_flow
from greengate.services.merchants import create_merchant
from tests.support.console import flash_of, signed_in
from tests.support.merchant_api import Answer, Shop, set_merchant, signed, table_counts

TEST_CARD = "4405645000006150"  # the sandbox approves it
REAL_CARD = "4111111111111111"  # a live card: the manual acquirer waits for the operator


async def _merchant(rt: Runtime, client: httpx.AsyncClient) -> tuple[Shop, str]:
    async with rt.db.transaction() as session:
        merchant, creds = await create_merchant(
            session, rt.keyring, name="Books shop", mode="test", now=utcnow()
        )
    return Shop(client, merchant.id, creds.secret_key), creds.payout_secret


async def _pay_on_hosted_page(client: httpx.AsyncClient, shop: Shop, amount: str, order: str) -> Answer:
    answer = (await shop.init(pg_amount=amount, pg_order_id=order, pg_description="goods")).assert_ok(
        shop.secret
    )
    path = urlsplit(answer["pg_redirect_url"]).path
    form = {"number": TEST_CARD, "exp": "12/30", "holder": "Ivan Petrov", "cvc": "123"}
    response = await client.post(f"{path}/card", data=form)
    assert response.status_code == 303, response.text
    return answer


async def _reg2nonreg(shop: Shop, payout_secret: str, amount: str, order: str, **extra: str) -> Answer:
    fields = {
        "pg_merchant_id": str(shop.merchant_id),
        "pg_amount": amount,
        "pg_order_id": order,
        "pg_description": "prize",
        **extra,
    }
    params = signed("reg2nonreg", list(fields.items()), payout_secret)
    response = await shop.client.post("/api/reg2nonreg", data=dict(params))
    return Answer.read(response, "reg2nonreg")


async def _available(rt: Runtime, merchant_id: int, book: L.Book) -> int:
    async with rt.db.transaction() as session:
        return await ledger.balance(session, L.merchant_owner(merchant_id), "available", "KZT", book)


async def test_test_money_never_funds_a_live_payout(rt: Runtime, app_client: httpx.AsyncClient) -> None:
    shop, payout_secret = await _merchant(rt, app_client)
    for n in range(3):
        answer = await _pay_on_hosted_page(app_client, shop, "400", f"T-{n}")
        status = await shop.status(int(answer["pg_payment_id"]))
        assert (status["pg_transaction_status"], status["pg_testing_mode"]) == ("ok", "1")
    assert await _available(rt, shop.merchant_id, L.Book.TEST) == 120_000
    assert await _available(rt, shop.merchant_id, L.Book.LIVE) == 0

    await set_merchant(rt, shop.merchant_id, mode="live")  # moves no money between the books
    assert await _available(rt, shop.merchant_id, L.Book.TEST) == 120_000
    assert await _available(rt, shop.merchant_id, L.Book.LIVE) == 0

    before = await table_counts(rt)
    refused = await _reg2nonreg(shop, payout_secret, "500", "PO-live")
    refused.assert_error(600, payout_secret, names="live")
    assert "live balance" in refused.description and "0.00 KZT" in refused.description
    assert await table_counts(rt) == before  # nothing written

    test_payout = await _reg2nonreg(shop, payout_secret, "500", "PO-test", pg_testing_mode="1")
    test_payout.assert_ok(payout_secret)
    assert await _available(rt, shop.merchant_id, L.Book.TEST) == 70_000

    # A live payment, approved by the operator after the manual acquirer took the card.
    answer = (await shop.init(pg_amount="900", pg_order_id="L-1", pg_description="goods")).assert_ok(
        shop.secret
    )
    live_id = int(answer["pg_payment_id"])
    card = validate_card_form(REAL_CARD, "12", "2030", "Ivan Petrov", "123", date.today())
    async with rt.db.transaction() as session:
        assert (await payment_flow.submit_card(session, rt, live_id, card, utcnow())).status == "pending"
    async with rt.db.transaction() as session:
        await payment_flow.test_action(session, live_id, "approve", now=utcnow(), actor="operator:test")
    assert (await shop.status(live_id))["pg_testing_mode"] == "0"
    assert await _available(rt, shop.merchant_id, L.Book.LIVE) == 90_000

    live_payout = await _reg2nonreg(shop, payout_secret, "500", "PO-live-2")
    live_payout.assert_ok(payout_secret)
    assert await _available(rt, shop.merchant_id, L.Book.LIVE) == 40_000
    assert await _available(rt, shop.merchant_id, L.Book.TEST) == 70_000
    too_much = await _reg2nonreg(shop, payout_secret, "401", "PO-live-3")
    too_much.assert_error(600, payout_secret, names="live")
    async with rt.db.transaction() as session:
        assert await ledger.check(session) == []


async def test_ninety_three_maximal_test_payments_are_refused_at_the_cap(
    rt: Runtime, app_client: httpx.AsyncClient
) -> None:
    attacker, _ = await _merchant(rt, app_client)
    other, _ = await _merchant(rt, app_client)
    before = await table_counts(rt)
    for n in range(93):
        refused = await attacker.init(
            pg_amount="999999999999999.99", pg_order_id=f"big-{n}", pg_description="goods"
        )
        refused.assert_error(420, attacker.secret, names="cap of 1000000000.00 KZT")
    assert await table_counts(rt) == before  # nothing written, not even a payment row
    # Other merchants' payments go on as before, and the books reconcile.
    await _pay_on_hosted_page(app_client, other, "1000000000", "at-the-cap")
    await _pay_on_hosted_page(app_client, other, "100", "small")
    assert await _available(rt, other.merchant_id, L.Book.TEST) == 100_000_010_000
    async with rt.db.transaction() as session:
        assert await ledger.check(session) == []


async def test_a_merchant_cap_below_the_gateways_is_named_in_the_refusal(
    rt: Runtime, app_client: httpx.AsyncClient
) -> None:
    shop, payout_secret = await _merchant(rt, app_client)
    async with rt.db.transaction() as session:
        await amount_caps.set_cap(session, shop.merchant_id, "KZT", 5_000_00, utcnow(), actor="operator:test")
    refused = await shop.init(pg_amount="5000.01", pg_order_id="over", pg_description="goods")
    refused.assert_error(420, shop.secret, names="the merchant's cap of 5000.00 KZT for one payment")
    await _pay_on_hosted_page(app_client, shop, "5000", "at")
    payout = await _reg2nonreg(shop, payout_secret, "5000.01", "PO-over")
    payout.assert_error(420, payout_secret, names="cap of 5000.00 KZT for one payout")


async def test_console_sets_a_merchant_cap_and_shows_both_books_labelled(
    rt: Runtime, app_client: httpx.AsyncClient
) -> None:
    shop, _ = await _merchant(rt, app_client)
    await _pay_on_hosted_page(app_client, shop, "250", "T-1")
    admin = await signed_in(app_client, rt, "admin")

    done = await admin.post(
        f"/admin/merchants/{shop.merchant_id}/caps", {"currency": "KZT", "max_amount": "700"}
    )
    assert done.status_code == 303
    page = await admin.flash(f"/admin/merchants/{shop.merchant_id}")
    assert flash_of(page) == "ok: Cap in KZT set to 700.00 KZT."
    assert 'data-cap="KZT"><td>KZT</td><td class="num">700.00 KZT</td><td>merchant</td>' in page
    assert 'data-balance="test:available:KZT"' in page and 'data-book-heading="test"' in page
    refused = await shop.init(pg_amount="700.01", pg_order_id="over", pg_description="goods")
    refused.assert_error(420, shop.secret, names="cap of 700.00 KZT")

    too_high = await admin.post(
        f"/admin/merchants/{shop.merchant_id}/caps", {"currency": "KZT", "max_amount": "1000000000.01"}
    )
    assert too_high.status_code == 303
    assert "cannot exceed the gateway's" in flash_of(
        await admin.flash(f"/admin/merchants/{shop.merchant_id}")
    )

    dashboard = (await admin.get("/admin/")).text
    assert f'data-balance="test:merchant:{shop.merchant_id}:available:KZT"' in dashboard
    assert 'data-volume="test:KZT"' in dashboard and "not real money" in dashboard
    ledger_page = (await admin.get("/admin/ledger")).text
    assert 'data-ledger-check-book="live"' in ledger_page and 'data-ledger-check-book="test"' in ledger_page
