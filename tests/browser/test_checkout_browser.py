"""The payer's side in a real browser: a running greengate with its worker, the merchant's site
answering callbacks, Chromium filling in the hosted pages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from greengate.domain.params import first

if TYPE_CHECKING:
    from tests.browser.conftest import MerchantApi, MerchantSite

pytestmark = pytest.mark.slow

PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
DESKTOP = {"viewport": {"width": 1100, "height": 900}}


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(**DESKTOP, locale="en-US")
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


def fill_card(
    page: Any, number: str, *, exp: str = "11/29", holder: str = "Aigerim Sadykova", cvc: str = "318"
) -> None:
    page.fill("#number", number)
    page.fill("#exp", exp)
    page.fill("#cvc", cvc)
    page.fill("#holder", holder)


def shot(page: Any, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def wait_for_result(page: Any, result: str) -> None:
    """The processing page refreshes itself until the payment settles."""
    page.wait_for_selector(f'[data-result="{result}"]', timeout=20_000)


@pytest.mark.parametrize("request_method", ["GET", "POST", "XML"])
def test_card_with_3ds_check_and_result_then_back_to_the_shop(
    page: Any, shop: MerchantSite, merchant_api: MerchantApi, screenshots: Path, request_method: str
) -> None:
    payment_id, redirect_url = merchant_api.init_payment(
        check_url=shop.url("check.php"),
        result_url=shop.url("result.php"),
        request_method=request_method,
        language="en",
        testing_mode="1",
    )

    page.goto(redirect_url)
    assert page.locator("#card-form").is_visible()
    assert "4,990.00" in page.inner_text("[data-amount]")
    countdown = page.inner_text("#countdown")
    # The countdown ticks: the inline script runs under the page's Content-Security-Policy nonce.
    page.wait_for_function(
        "(before) => document.getElementById('countdown').textContent !== before", arg=countdown
    )
    fill_card(page, "5483185000000293")
    if request_method == "GET":
        shot(page, screenshots, "card-form")
    page.click("[data-submit]")

    page.wait_for_selector("#tds-form")
    assert "Test mode: test password 12345678" in page.inner_text("[data-test-hint]")
    if request_method == "GET":
        shot(page, screenshots, "3ds")
    page.fill("#password", "12345678")
    page.click("[data-submit]")

    wait_for_result(page, "success")
    assert "Payment successful" in page.inner_text("h1")
    if request_method == "GET":
        shot(page, screenshots, "success")

    [check] = shop.wait_for("check.php")
    [result] = shop.wait_for("result.php")
    expected_http = "GET" if request_method == "GET" else "POST"
    for callback in (check, result):
        assert callback.method == expected_http
        assert callback.signed
        assert first(callback.params, "pg_payment_id") == str(payment_id)
        assert first(callback.params, "pg_card_pan") == "5483-18XX-XXXX-0293"
    assert first(result.params, "pg_result") == "1"
    assert first(result.params, "pg_can_reject") == "1"

    page.click("#return-link")
    page.wait_for_url(re.compile(r".*/shop/success\.php\?.*"))
    assert page.inner_text("[data-signature]") == "signature valid"
    [landing] = shop.calls("success.php")
    assert landing.method == "GET" and landing.signed
    assert first(landing.params, "pg_payment_id") == str(payment_id)
    assert first(merchant_api.status(payment_id), "pg_transaction_status") == "ok"
    assert page.console_errors == []


def test_declined_card_shows_the_failure_page(
    page: Any, shop: MerchantSite, merchant_api: MerchantApi, screenshots: Path
) -> None:
    payment_id, redirect_url = merchant_api.init_payment(language="ru", result_url=shop.url("result.php"))

    page.goto(redirect_url)
    fill_card(page, "4916109830832246")
    page.click("[data-submit]")

    wait_for_result(page, "failure")
    assert page.inner_text("h1") == "Оплата не прошла"
    assert page.inner_text("[data-failure-code]") == "10002"
    assert page.inner_text("[data-failure-description]") == "Недостаточно средств"
    shot(page, screenshots, "failure")

    page.click("#return-link")
    page.wait_for_url(re.compile(r".*/shop/failure\.php\?.*"))
    [landing] = shop.calls("failure.php")
    assert landing.signed
    assert first(landing.params, "pg_error_code") == "10002"
    [result] = shop.wait_for("result.php")
    assert first(result.params, "pg_result") == "0"
    assert first(merchant_api.status(payment_id), "pg_transaction_status") == "failed"


def test_invalid_card_data_is_shown_next_to_the_field(
    page: Any, merchant_api: MerchantApi, screenshots: Path
) -> None:
    payment_id, redirect_url = merchant_api.init_payment(language="kk")

    page.goto(redirect_url)
    fill_card(page, "4405645000006151")
    page.click("[data-submit]")

    page.wait_for_selector('[data-error-for="number"]')
    assert page.inner_text('[data-error-for="number"]') == "Карта нөмірі қате"
    assert page.input_value("#number") == "" and page.input_value("#cvc") == ""
    assert page.input_value("#holder") == "Aigerim Sadykova" and page.input_value("#exp") == "11/29"
    shot(page, screenshots, "card-form-error")
    assert first(merchant_api.status(payment_id), "pg_transaction_status") == "partial"


def test_mobile_commerce_with_otp(
    page: Any, shop: MerchantSite, merchant_api: MerchantApi, screenshots: Path
) -> None:
    payment_id, redirect_url = merchant_api.init_payment(language="en", result_url=shop.url("result.php"))

    page.goto(redirect_url)
    page.click('[data-method="phone"]')
    page.fill("#phone", "+7 701 777 77 77")
    page.click("[data-submit]")

    page.wait_for_selector("#otp-form")
    page.fill("#code", "123456")
    page.click("[data-submit]")
    page.wait_for_selector("[data-otp-wrong]")
    assert "Attempts left: 2" in page.inner_text("[data-otp-wrong]")
    shot(page, screenshots, "otp")
    page.fill("#code", "111111")
    page.click("[data-submit]")

    wait_for_result(page, "success")
    [result] = shop.wait_for("result.php")
    assert first(result.params, "pg_payment_system") == "MOBILE_COMMERCE"
    assert first(merchant_api.status(payment_id), "pg_transaction_status") == "ok"


def test_autopost_return_submits_itself(page: Any, shop: MerchantSite, merchant_api: MerchantApi) -> None:
    payment_id, redirect_url = merchant_api.init_payment(success_url_method="AUTOPOST", language="en")

    page.goto(redirect_url)
    fill_card(page, "4405645000006150")
    page.click("[data-submit]")

    page.wait_for_url(re.compile(r".*/shop/success\.php$"))
    assert page.inner_text("[data-signature]") == "signature valid"
    [landing] = shop.calls("success.php")
    assert landing.method == "POST" and landing.signed
    assert [name for name, _ in landing.params] == ["pg_order_id", "pg_payment_id", "pg_salt", "pg_sig"]
    assert first(landing.params, "pg_payment_id") == str(payment_id)


def test_everything_works_without_javascript(
    browser: Any, shop: MerchantSite, merchant_api: MerchantApi, screenshots: Path
) -> None:
    context = browser.new_context(**DESKTOP, java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        payment_id, redirect_url = merchant_api.init_payment(
            language="en", check_url=shop.url("check.php"), success_url_method="AUTOGET"
        )
        page.goto(redirect_url)
        assert re.fullmatch(r"\d+:\d\d:\d\d", page.inner_text("#countdown"))
        assert "Pay before" in page.inner_text("[data-expires-at]")
        fill_card(page, "5483185000000293")
        page.click("[data-submit]")
        page.fill("#password", "12345678")
        page.click("[data-submit]")
        # The check keeps the payment processing for a moment; the page refreshes by itself.
        wait_for_result(page, "success")
        assert page.locator("noscript").count() == 1
        shot(page, screenshots, "success-no-js")
        page.click("#return-link")
        page.wait_for_url(re.compile(r".*/shop/success\.php\?.*"))
        [landing] = shop.calls("success.php")
        assert landing.signed
        assert first(merchant_api.status(payment_id), "pg_transaction_status") == "ok"
    finally:
        context.close()


def test_card_form_fits_a_phone_screen(browser: Any, merchant_api: MerchantApi, screenshots: Path) -> None:
    context = browser.new_context(**PHONE)
    page = context.new_page()
    try:
        _, redirect_url = merchant_api.init_payment(
            language="ru", description="Заказ № 1042: две зелёные кружки и чайник с длинным названием"
        )
        page.goto(redirect_url)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert page.locator("[data-submit]").bounding_box()["width"] > 300
        shot(page, screenshots, "card-form-phone")
    finally:
        context.close()


@pytest.mark.parametrize(("method", "javascript"), [("GET", False), ("POST", True)])
def test_timeout_after_payment_takes_the_payer_back_without_a_click(
    browser: Any, shop: MerchantSite, merchant_api: MerchantApi, method: str, javascript: bool
) -> None:
    context = browser.new_context(**DESKTOP, java_script_enabled=javascript)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        payment_id, redirect_url = merchant_api.init_payment(
            language="en", success_url_method=method, timeout_after_payment="1"
        )
        page.goto(redirect_url)
        fill_card(page, "4405645000006150")
        page.click("[data-submit]")
        page.wait_for_url(re.compile(r".*/shop/success\.php(\?.*)?$"))
        [landing] = shop.calls("success.php")
        assert landing.method == method and landing.signed
        assert first(landing.params, "pg_payment_id") == str(payment_id)
    finally:
        context.close()
