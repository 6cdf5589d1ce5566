"""Card storage in a real browser: the payer saves a card on the card page (3-D Secure included),
the shop lists it through the API and charges it with card/init, then card/pay or card/direct."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
import pytest

from greengate.api.merchant.codec import parse_xml
from greengate.domain.params import Params, first
from greengate.domain.signature import new_salt, verify, with_signature

if TYPE_CHECKING:
    from tests.browser.conftest import Gateway, MerchantSite

pytestmark = pytest.mark.slow

THREE_DS = "5483185000000293"
APPROVED = "4405645000006150"
USER = "browser-user"


class CardApi:
    """The shop's server-side card storage calls, signed with its secret."""

    def __init__(self, gateway: Gateway, site: MerchantSite) -> None:
        self.gateway, self.site = gateway, site

    def signed(self, script: str, params: Params) -> Params:
        message = [("pg_merchant_id", str(self.site.merchant_id)), *params]
        return with_signature(script, message, self.site.secret, new_salt())

    def path(self, endpoint: str) -> str:
        return f"{self.gateway.url}/v1/merchant/{self.site.merchant_id}/{endpoint}"

    def call(self, endpoint: str, params: Params) -> Params:
        script = endpoint.rpartition("/")[2]
        response = httpx.post(self.path(endpoint), data=dict(self.signed(script, params)), timeout=10)
        answer = parse_xml(response.text)
        assert verify(script, answer, self.site.secret), response.text
        assert first(answer, "pg_status") == "ok", answer
        return answer

    def add(self, **extra: str) -> str:
        fields = {
            "pg_user_id": USER,
            "pg_post_link": self.site.url("result.php") + "?kind=card",
            "pg_back_link": self.site.url("cards.php"),
            "pg_language": "en",
            **extra,
        }
        answer = self.call("cardstorage/add", list(fields.items()))
        return first(answer, "pg_redirect_url") or ""

    def cards(self) -> list[dict[str, str]]:
        answer = self.call("cardstorage/list", [("pg_user_id", USER)])
        return [
            {n: str(v) for n, v in value}
            for name, value in answer
            if name == "card" and isinstance(value, list)
        ]

    def init(self, card_id: str, order_id: str) -> str:
        answer = self.call(
            "card/init",
            [
                ("pg_user_id", USER),
                ("pg_card_id", card_id),
                ("pg_amount", "1990"),
                ("pg_description", "Refill"),
                ("pg_order_id", order_id),
                ("pg_success_url", self.site.url("success.php")),
                ("pg_language", "en"),
            ],
        )
        return first(answer, "pg_payment_id") or ""

    def pay_link(self, payment_id: str) -> str:
        return f"{self.path('card/pay')}?{urlencode(self.signed('pay', [('pg_payment_id', payment_id)]))}"


@pytest.fixture
def card_api(gateway: Gateway, shop: MerchantSite) -> CardApi:
    return CardApi(gateway, shop)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.console_errors = errors
    try:
        yield page
    finally:
        context.close()


def fill_card(page: Any, number: str, *, cvc: str = "318") -> None:
    page.fill("#number", number)
    page.fill("#exp", "11/29")
    page.fill("#cvc", cvc)
    page.fill("#holder", "Aigerim Sadykova")


def card_results(shop: MerchantSite, count: int) -> list[Any]:
    shop.wait_for("result.php", count=count)
    return [r for r in shop.calls("result.php") if first(r.params, "kind") == "card"]


def test_card_with_3ds_saved_on_the_page_listed_and_paid_with_card_pay(
    page: Any, shop: MerchantSite, card_api: CardApi, screenshots: Path
) -> None:
    page.goto(card_api.add(pg_order_id="save-1"))
    assert page.locator("#card-form").is_visible()
    assert "Save a card" in page.inner_text("h1")
    fill_card(page, THREE_DS)
    page.screenshot(path=str(screenshots / "card-storage-form.png"), full_page=True)
    page.click("[data-submit]")

    page.wait_for_selector('[data-form="3ds"]')
    assert "5483-18XX-XXXX-0293" in page.inner_text("main")
    page.fill("#password", "12345678")
    page.click("[data-submit]")

    page.wait_for_selector('[data-result="success"]')
    assert page.inner_text("[data-card]") == "5483-18XX-XXXX-0293"
    page.screenshot(path=str(screenshots / "card-storage-saved.png"), full_page=True)
    [callback] = card_results(shop, 1)
    assert callback.signed and first(callback.params, "pg_status") == "success"
    page.click("#return-link")
    page.wait_for_selector('[data-shop-page="cards.php"]')
    assert page.inner_text("[data-signature]") == "signature valid"

    [saved] = card_api.cards()
    assert saved["pg_card_hash"] == "5483-18XX-XXXX-0293"
    assert saved["pg_card_id"] == first(callback.params, "pg_card_id")

    payment_id = card_api.init(saved["pg_card_id"], "refill-1")
    page.goto(card_api.pay_link(payment_id))
    page.wait_for_selector('[data-form="3ds"]')
    page.fill("#password", "12345678")
    page.click("[data-submit]")
    page.wait_for_selector('[data-result="success"]')
    assert page.console_errors == []


def test_card_page_works_without_javascript_and_the_card_pays_server_to_server(
    browser: Any, shop: MerchantSite, card_api: CardApi
) -> None:
    context = browser.new_context(java_script_enabled=False, locale="ru-RU")
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(card_api.add(pg_language="ru"))
        assert "Привязка карты" in page.inner_text("h1")
        fill_card(page, APPROVED, cvc="1")
        page.click("[data-submit]")
        page.wait_for_selector('[data-error-for="cvc"]')  # the form comes back with the field's error
        fill_card(page, APPROVED)
        page.click("[data-submit]")
        page.wait_for_selector('[data-result="success"]')
        assert "Карта привязана" in page.inner_text("h1")
    finally:
        context.close()
    card_results(shop, 1)

    [saved] = [c for c in card_api.cards() if c["pg_card_hash"] == "4405-64XX-XXXX-6150"]
    payment_id = card_api.init(saved["pg_card_id"], "direct-1")
    answer = card_api.call("card/direct", [("pg_payment_id", payment_id)])
    assert first(answer, "pg_payment_status") == "success"
