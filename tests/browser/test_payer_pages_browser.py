"""Payer pages in Chromium: the exchange order page in the browser's language, and a declined
payment page that tells the payer what to do when the shop left no way back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from greengate.domain.params import first
from greengate.runtime import Runtime
from tests.browser.conftest import run_async
from tests.support.exchange import WALLET, make_client, make_direction, make_requisites

if TYPE_CHECKING:
    from tests.browser.conftest import Gateway, MerchantApi

pytestmark = pytest.mark.slow
DECLINED = "4916109830832246"


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    contexts: list[Any] = []

    def make(locale: str) -> Any:
        context = browser.new_context(locale=locale, viewport={"width": 390, "height": 844})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    yield make
    for context in contexts:
        context.close()


def fast_link(gateway: Gateway) -> str:
    async def work() -> str:
        rt = Runtime.create(gateway.settings)
        try:
            who = await make_client(rt)
            await make_direction(rt)
            await make_requisites(rt, 1)
        finally:
            await rt.close()
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            response = await client.post(
                "/api/v2/order/create",
                headers=who.headers,
                json={"payment_method": "card", "wallet": WALLET, "from_amount": "9999"},
            )
        link: str = response.json()["items"][0]["fast_link"]
        return link

    return run_async(work)


def test_order_page_follows_the_browser_language_and_switches_on_request(
    gateway: Gateway, new_page: Any
) -> None:
    link = fast_link(gateway)
    page = new_page("kk-KZ")

    page.goto(link)

    assert page.get_attribute("html", "lang") == "kk"
    assert "Уақыт біткенше" in page.inner_text("[data-status]")
    assert page.inner_text("[data-amount]") == "9999 RUB"
    page.click("nav.languages a[hreflang=en]")
    page.wait_for_selector("html[lang=en]")
    assert "Transfer exactly the amount below" in page.inner_text("[data-status]")
    assert page.locator("#countdown").is_visible()


def test_declined_page_without_return_urls_says_to_close_it(new_page: Any, merchant_api: MerchantApi) -> None:
    answer = merchant_api.call(
        "init_payment.php",
        [
            ("pg_amount", "990"),
            ("pg_currency", "KZT"),
            ("pg_description", "Tea"),
            ("pg_order_id", f"close-{time.monotonic_ns()}"),
            ("pg_language", "en"),
        ],
    )
    page = new_page("en-US")
    page.goto(first(answer, "pg_redirect_url") or "")
    page.fill("#number", DECLINED)
    page.fill("#exp", "11/29")
    page.fill("#cvc", "318")
    page.fill("#holder", "Aigerim Sadykova")
    page.click("[data-submit]")

    page.wait_for_selector('[data-result="failure"]', timeout=20_000)
    assert page.locator("#return-link").count() == 0
    note = page.locator("[data-close-page]")
    assert note.is_visible()
    assert "Close this page and go back to the shop." in note.inner_text()
