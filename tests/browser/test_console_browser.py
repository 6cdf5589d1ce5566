"""The operator console in a real browser: a running greengate with its worker, Chromium signing in
and working through the pages (plain forms, no JavaScript), screenshots of the main pages."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
from sqlalchemy import select

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.services.admin_users import create_admin
from greengate.settings import Settings
from greengate.store.models import ExchangeOrder, OutboxMessage
from tests.browser.conftest import run_async
from tests.support.exchange import WALLET, make_client, make_direction, make_requisites
from tests.support.merchant_api import CallbackServer, make_shop

if TYPE_CHECKING:
    from tests.browser.conftest import Gateway

pytestmark = pytest.mark.slow
T = TypeVar("T")
PASSWORD = "correct horse battery"
DESKTOP = {"viewport": {"width": 1280, "height": 900}}
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
TXID = "b" * 64


def with_runtime(settings: Settings, work: Callable[[Runtime], Awaitable[T]]) -> T:
    async def main() -> T:
        rt = Runtime.create(settings)
        try:
            return await work(rt)
        finally:
            await rt.close()

    return run_async(main)


def add_admin(gateway: Gateway, role: str) -> str:
    email = f"{role}-{time.monotonic_ns()}@example.com"

    async def work(rt: Runtime) -> None:
        async with rt.db.transaction() as session:
            await create_admin(session, email=email, password=PASSWORD, role=role, now=utcnow())

    with_runtime(gateway.settings, work)
    return email


@pytest.fixture
def context_factory(browser: Any) -> Iterator[Callable[..., Any]]:
    contexts: list[Any] = []

    def make(**options: Any) -> Any:
        context = browser.new_context(**(options or DESKTOP), locale="en-US")
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(context_factory: Callable[..., Any]) -> Any:
    return context_factory()


def sign_in(page: Any, gateway: Gateway, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{gateway.url}/admin/")
    page.fill("#email", email)
    page.fill("#password", password)
    click(page, "button[type=submit]")


def click(page: Any, selector: str) -> None:
    """Click, then wait until htmx has sent the request and swapped the answer in (the console's links
    and forms are boosted: no page load for Playwright to wait on)."""
    page.click(selector)
    page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')")


def shot(page: Any, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"console-{name}.png"), full_page=True)


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.2)


def test_sign_in_and_lockout(page: Any, gateway: Gateway, screenshots: Path) -> None:
    email = add_admin(gateway, "admin")
    page.goto(f"{gateway.url}/admin/payments")
    assert "/admin/login" in page.url
    shot(page, screenshots, "login")
    for _ in range(5):
        sign_in(page, gateway, email, "wrong password!")
    error = page.inner_text("[data-login-error]")
    assert "locked from your address until" in error
    shot(page, screenshots, "login-locked")

    sign_in(page, gateway, email)

    assert "locked from your address until" in page.inner_text("[data-login-error]")
    other = add_admin(gateway, "admin")
    sign_in(page, gateway, other)
    page.goto(f"{gateway.url}/admin/users")
    assert page.locator("[data-locked]").count() >= 1
    shot(page, screenshots, "users")


def test_sign_in_lands_on_the_page_asked_for_and_sign_out(page: Any, gateway: Gateway) -> None:
    email = add_admin(gateway, "viewer")
    page.goto(f"{gateway.url}/admin/ledger")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    click(page, "button[type=submit]")
    assert page.url.endswith("/admin/ledger")

    click(page, "[data-logout]")

    assert "/admin/login" in page.url
    page.goto(f"{gateway.url}/admin/ledger")
    assert "/admin/login" in page.url


def test_a_form_with_a_tampered_csrf_token_is_refused(page: Any, gateway: Gateway) -> None:
    sign_in(page, gateway, add_admin(gateway, "admin"))
    page.goto(f"{gateway.url}/admin/merchants/new")
    page.fill("#name", "Forged Shop")
    page.eval_on_selector("input[name=csrf_token] >> nth=1", "el => el.value = 'forged'")

    with page.expect_navigation():
        click(page, "[data-merchant-form] button[type=submit]")

    assert page.locator("[data-forbidden]").is_visible()
    assert "security token" in page.inner_text("[data-forbidden]")
    page.goto(f"{gateway.url}/admin/merchants?q=Forged")
    assert page.locator("[data-merchant-row]").count() == 0


def test_each_roles_limits(context_factory: Callable[..., Any], gateway: Gateway) -> None:
    viewer = context_factory()
    sign_in(viewer, gateway, add_admin(gateway, "viewer"))
    viewer.goto(f"{gateway.url}/admin/merchants")
    assert viewer.locator("[data-new-merchant]").count() == 0
    viewer.goto(f"{gateway.url}/admin/merchants/new")
    assert viewer.locator("[data-forbidden]").is_visible()
    viewer.goto(f"{gateway.url}/admin/requisites")
    assert viewer.locator("[data-requisite-form]").count() == 0

    operator = context_factory()
    sign_in(operator, gateway, add_admin(gateway, "operator"))
    operator.goto(f"{gateway.url}/admin/requisites")
    assert operator.locator("[data-requisite-form]").is_visible()
    assert operator.locator("[data-nav=users]").count() == 0
    operator.goto(f"{gateway.url}/admin/users")
    assert operator.locator("[data-forbidden]").is_visible()

    admin = context_factory()
    sign_in(admin, gateway, add_admin(gateway, "admin"))
    admin.goto(f"{gateway.url}/admin/users")
    assert admin.locator("[data-nav=users]").is_visible()


def test_creating_a_merchant_shows_its_secret_once(page: Any, gateway: Gateway, screenshots: Path) -> None:
    sign_in(page, gateway, add_admin(gateway, "admin"))
    page.goto(f"{gateway.url}/admin/merchants")
    click(page, "[data-new-merchant]")
    page.fill("#name", "Green Mugs Shop")
    click(page, "[data-merchant-form] button[type=submit]")

    secret = page.inner_text("[data-secret=secret_key]")
    api_secret = page.inner_text("[data-secret=api_secret]")
    assert len(secret) >= 16 and len(api_secret) >= 32
    assert page.locator("[data-shown-once]").is_visible()
    shot(page, screenshots, "merchant-secrets")

    click(page, "[data-continue]")
    assert secret not in page.content() and api_secret not in page.content()
    shot(page, screenshots, "merchant")
    page.goto(f"{gateway.url}/admin/merchants")
    shot(page, screenshots, "merchants")


def _shop_and_server(gateway: Gateway, name: str) -> tuple[Any, CallbackServer]:
    async def work(rt: Runtime) -> Any:
        return await make_shop(rt, httpx.AsyncClient(base_url=gateway.url), name=name)

    shop = with_runtime(gateway.settings, work)
    return shop, CallbackServer(shop.secret).start()


def _init_payment(gateway: Gateway, shop: Any, server: CallbackServer, order_id: str) -> int:
    async def work(rt: Runtime) -> int:
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            shop.client = client
            return int(
                await shop.init_ok(
                    pg_amount="2500",
                    pg_currency="KZT",
                    pg_order_id=order_id,
                    pg_description="Three green mugs",
                    pg_result_url=server.url("/shop/result.php"),
                )
            )

    return with_runtime(gateway.settings, work)


def _callback_status(gateway: Gateway, payment_id: int) -> str | None:
    async def work(rt: Runtime) -> str | None:
        async with rt.db.transaction() as session:
            return await session.scalar(
                select(OutboxMessage.status).where(
                    OutboxMessage.aggregate == f"payment:{payment_id}", OutboxMessage.target_url.is_not(None)
                )
            )

    return with_runtime(gateway.settings, work)


def test_test_button_drives_a_payment_to_ok_and_the_callback_is_delivered(
    context_factory: Callable[..., Any], gateway: Gateway, screenshots: Path
) -> None:
    shop, server = _shop_and_server(gateway, "Button Shop")
    try:
        payment_id = _init_payment(gateway, shop, server, "BTN-1")
        page = context_factory()
        sign_in(page, gateway, add_admin(gateway, "operator"))
        page.goto(f"{gateway.url}/admin/payments")
        click(page, f"[data-payment='{payment_id}'] a >> nth=0")
        assert page.inner_text("[data-payment-status]") == "new"

        click(page, "[data-action=test-approve]")

        assert "approve → ok" in page.inner_text("[data-flash]")
        wait_until(lambda: len(server.received("/shop/result.php")) == 1)
        [callback] = server.received("/shop/result.php")
        assert callback.get("pg_result") == "1" and callback.verifies(shop.secret)
        wait_until(lambda: _callback_status(gateway, payment_id) == "done")
        page.reload()
        assert page.locator("[data-callback-status=done]").count() == 1
        assert page.locator("[data-delivery]").count() == 1
        shot(page, screenshots, "payment")
        page.goto(f"{gateway.url}/admin/payments")
        shot(page, screenshots, "payments")

        phone = context_factory(**PHONE)
        sign_in(phone, gateway, add_admin(gateway, "viewer"))
        phone.goto(f"{gateway.url}/admin/payments/{payment_id}")
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390 + 1, f"page is {width}px wide on a 390px phone"
        shot(phone, screenshots, "payment-phone")
        phone.goto(f"{gateway.url}/admin/")
        shot(phone, screenshots, "dashboard-phone")
    finally:
        server.stop()


def test_redelivering_a_failed_callback(page: Any, gateway: Gateway, screenshots: Path) -> None:
    shop, server = _shop_and_server(gateway, "Flaky Shop")
    server.answer("/shop/result.php", "500")
    try:
        payment_id = _init_payment(gateway, shop, server, "FLAKY-1")
        sign_in(page, gateway, add_admin(gateway, "operator"))
        page.goto(f"{gateway.url}/admin/payments/{payment_id}")
        click(page, "[data-action=test-approve]")
        # The test retry schedule is 1, 2 and 5 s: four failed attempts, then the callback is dead.
        wait_until(lambda: _callback_status(gateway, payment_id) == "dead", timeout=40)
        server.answer("/shop/result.php", "ok")
        page.goto(f"{gateway.url}/admin/callbacks?status=dead")
        row = page.locator("[data-callback-status=dead]").first
        row.locator("input[type=checkbox]").check()
        shot(page, screenshots, "callbacks-dead")

        click(page, "[data-action=redeliver-selected]")

        assert "1 callback(s) queued" in page.inner_text("[data-flash]")
        wait_until(lambda: _callback_status(gateway, payment_id) == "done")
        assert len(server.received("/shop/result.php")) == 5
        page.goto(f"{gateway.url}/admin/callbacks")
        shot(page, screenshots, "callbacks")
        click(page, "[data-callback-status=done] a >> nth=0")
        assert page.locator("[data-attempt]").count() == 5
        shot(page, screenshots, "callback")
    finally:
        server.stop()


def _order(gateway: Gateway) -> int:
    async def work(rt: Runtime) -> int:
        async with rt.db.transaction() as session:
            existing = await session.scalar(select(ExchangeOrder.id).limit(1))
        if existing is None:
            await make_direction(rt, payment_method="card")
            await make_requisites(rt, 2)
        client = await make_client(rt)
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post(
                "/api/v2/order/create",
                json={"payment_method": "card", "wallet": WALLET, "from_amount": "9999"},
                headers=client.headers,
            )
        assert response.status_code == 200, response.text
        return int(response.json()["items"][0]["order_id"])

    return with_runtime(gateway.settings, work)


def test_confirming_and_completing_an_exchange_order(page: Any, gateway: Gateway, screenshots: Path) -> None:
    order_id = _order(gateway)
    sign_in(page, gateway, add_admin(gateway, "operator"))
    page.goto(f"{gateway.url}/admin/orders?status=awaiting")
    click(page, f"[data-order='{order_id}'] a >> nth=0")
    assert page.inner_text("[data-order-status]") == "awaiting"
    shot(page, screenshots, "order-awaiting")

    click(page, "[data-action=confirm-paid]")
    assert page.inner_text("[data-order-status]") == "payed"
    page.fill("#c-txid", TXID)
    click(page, "[data-action=complete]")

    assert page.inner_text("[data-order-status]") == "completed"
    assert page.inner_text("[data-txid]") == TXID
    assert page.locator("[data-event=completed]").count() == 1
    shot(page, screenshots, "order-completed")
    page.goto(f"{gateway.url}/admin/orders")
    shot(page, screenshots, "orders")
    page.goto(f"{gateway.url}/admin/requisites")
    shot(page, screenshots, "requisites")
    page.goto(f"{gateway.url}/admin/directions")
    shot(page, screenshots, "directions")


def test_ledger_and_dashboard_pages(page: Any, gateway: Gateway, screenshots: Path) -> None:
    sign_in(page, gateway, add_admin(gateway, "viewer"))

    page.goto(f"{gateway.url}/admin/ledger")

    assert page.locator("[data-ledger-check-book=live][data-ledger-check=ok]").is_visible()
    assert page.locator("[data-ledger-check-book=test][data-ledger-check=ok]").is_visible()
    assert page.locator("[data-book-heading=test]").inner_text().startswith("Test book")
    shot(page, screenshots, "ledger")
    page.goto(f"{gateway.url}/admin/")
    assert page.locator("[data-dashboard=payments]").is_visible()
    assert re.search(r"\d", page.inner_text("[data-backlog]"))
    shot(page, screenshots, "dashboard")
    page.goto(f"{gateway.url}/admin/audit")
    shot(page, screenshots, "audit")


def test_links_and_forms_swap_the_page_in_place_within_the_csp(page: Any, gateway: Gateway) -> None:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    sign_in(page, gateway, add_admin(gateway, "viewer"))
    page.wait_for_function("() => window.htmx !== undefined")
    page.evaluate("() => { window.sameDocument = true }")

    click(page, "[data-nav=ledger]")
    assert page.url.endswith("/admin/ledger")
    assert page.locator("[data-ledger-check-book=live][data-ledger-check=ok]").is_visible()
    click(page, "[data-nav=payments]")
    click(page, ".filters button[type=submit]")

    assert "/admin/payments" in page.url
    assert page.evaluate("() => window.sameDocument") is True  # no page load in between
    assert errors == []  # nothing refused by the Content-Security-Policy
