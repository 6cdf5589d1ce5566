"""The payout recipient's page in a real browser: a running greengate with its worker, a merchant
that is owed money and asks for an api/reg2nonreg payout, Chromium entering the card."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest

from greengate.api.merchant.codec import parse_xml
from greengate.clock import utcnow
from greengate.domain import ledger as ledger_domain
from greengate.domain.params import Params, first
from greengate.domain.signature import new_salt, verify, with_signature
from greengate.runtime import Runtime
from greengate.services import ledger, payouts
from greengate.services.merchants import create_merchant
from tests.browser.conftest import Gateway, MerchantSite, run_async

pytestmark = pytest.mark.slow
FUNDS = 5_000_000
_orders = count(1)


async def _payout_merchant(gateway: Gateway) -> tuple[int, str]:
    """A test merchant with 50 000.00 KZT available; returns its id and payout secret."""
    rt = Runtime.create(gateway.settings)
    try:
        async with rt.db.transaction() as session:
            merchant, creds = await create_merchant(
                session, rt.keyring, name="Prize Fund", mode="test", now=utcnow()
            )
            await ledger.post(
                session,
                ledger_domain.payment_succeeded(merchant.id, FUNDS, "KZT", 0, book=ledger_domain.Book.TEST),
                object_type="test_funding",
                object_id=str(merchant.id),
                now=utcnow(),
            )
        return merchant.id, creds.payout_secret
    finally:
        await rt.close()


@pytest.fixture
def recipient_shop(gateway: Gateway) -> Iterator[MerchantSite]:
    merchant_id, payout_secret = run_async(lambda: _payout_merchant(gateway))
    site = MerchantSite(merchant_id, payout_secret)  # answers callbacks signed with the payout secret
    site.start()
    try:
        yield site
    finally:
        site.stop()


def reg2nonreg(gateway: Gateway, site: MerchantSite, **extra: str) -> tuple[int, str]:
    params: Params = [
        ("pg_merchant_id", str(site.merchant_id)),
        ("pg_amount", "12500"),
        ("pg_order_id", f"prize-{next(_orders)}"),
        ("pg_user_id", "winner-1"),
        ("pg_description", "Prize for the quiz"),
        ("pg_post_link", site.url("result.php")),
        ("pg_back_link", site.url("back.php")),
        *extra.items(),
    ]
    message = with_signature("reg2nonreg", params, site.secret, new_salt())
    response = httpx.post(f"{gateway.url}/api/reg2nonreg", data=dict(message), timeout=10)
    answer = parse_xml(response.text)
    assert verify("reg2nonreg", answer, site.secret) and first(answer, "pg_status") == "ok", answer
    return int(first(answer, "pg_payment_id") or 0), first(answer, "pg_redirect_url") or ""


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.console_errors = errors
    try:
        yield page
    finally:
        context.close()


def test_recipient_enters_a_card_and_receives_the_payout(
    page: Any, gateway: Gateway, recipient_shop: MerchantSite, screenshots: Path
) -> None:
    payout_id, url = reg2nonreg(gateway, recipient_shop, pg_language="en")
    page.goto(url)
    assert "Receive a payout" in page.inner_text("h1")
    assert "12,500.00" in page.inner_text("[data-amount]")
    assert "4671593866478252" in page.inner_text("[data-test-hint]")
    page.screenshot(path=str(screenshots / "payout-card.png"), full_page=True)

    page.fill("#number", "4671 5938 6647 8253")  # one digit off: Luhn fails, nothing is sent
    page.click("[data-submit]")
    assert page.inner_text('[data-error-for="number"]') == "The card number is not valid"
    assert all("400" in text for text in page.console_errors)  # the form came back with HTTP 400
    page.console_errors.clear()
    page.fill("#number", "4671 5938 6647 8252")
    page.click("[data-submit]")

    page.wait_for_selector('[data-result="success"]')
    assert "The money has been sent" in page.inner_text("h1")
    assert page.inner_text("[data-card]") == "4671-59XX-XXXX-8252"
    [callback] = recipient_shop.wait_for("result.php")
    assert callback.signed and first(callback.params, "pg_payment_id") == str(payout_id)
    assert first(callback.params, "pg_status") == "ok"
    page.click("#return-link")
    page.wait_for_url("**/shop/back.php")
    assert page.console_errors == []


async def _resolve(gateway: Gateway, payout_id: int) -> None:
    """The operator's `resolve` test button on a processing payout."""
    rt = Runtime.create(gateway.settings)
    try:
        async with rt.db.transaction() as session:
            await payouts.test_action(
                session, payout_id, "resolve", now=utcnow(), actor="operator:test", rt=rt
            )
    finally:
        await rt.close()


def test_processing_payout_page_refreshes_itself_without_javascript(
    browser: Any, gateway: Gateway, recipient_shop: MerchantSite
) -> None:
    context = browser.new_context(java_script_enabled=False, locale="ru-RU")
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        payout_id, url = reg2nonreg(gateway, recipient_shop)
        page.goto(url)
        assert "Получение выплаты" in page.inner_text("h1")
        page.fill("#number", "4532676596620704")  # processing, then error 10001
        page.click("[data-submit]")
        page.wait_for_selector('[data-result="processing"]')
        assert "Выплата обрабатывается" in page.inner_text("h1")
        # Nothing ends it by itself: the operator resolves it; the meta refresh shows the outcome.
        page.wait_for_timeout(1_500)
        assert page.query_selector('[data-result="processing"]') is not None
        run_async(lambda: _resolve(gateway, payout_id))
        page.wait_for_selector('[data-result="failure"]', timeout=30_000)
        assert page.inner_text("[data-failure-code]") == "10001"
        [callback] = recipient_shop.wait_for("result.php")
        assert first(callback.params, "pg_status") == "error"
        assert first(callback.params, "pg_payment_id") == str(payout_id)
        page.goto(url + "?lang=kk")
        assert "Аударым орындалмады" in page.inner_text("h1")
    finally:
        context.close()
