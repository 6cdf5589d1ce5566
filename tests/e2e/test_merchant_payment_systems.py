"""Codes 465, 466, 475 and 850: payment requests no ready payment system can serve are refused, signed,
with nothing written."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from greengate.runtime import Runtime
from greengate.settings import Settings
from greengate.store.models import Payment
from tests.conftest import make_settings
from tests.e2e.test_checkout_pages import (
    attempts_of,
    card,
    follow,
    form_of,
    payment_of,
    result_of,
    start_payment,
)
from tests.e2e.test_checkout_pages import make_shop as page_shop
from tests.e2e.test_merchant_recurring import charge, started
from tests.support.merchant_api import Answer, Shop, make_shop, table_counts


@pytest.fixture
def settings(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    return make_settings(database_url, tmp_path, payment_system_states=getattr(request, "param", ""))


@pytest.fixture
async def shop(rt: Runtime, app_client: httpx.AsyncClient) -> Shop:
    return await make_shop(rt, app_client)


async def payments(rt: Runtime) -> int:
    async with rt.db.transaction() as session:
        return int((await session.execute(select(func.count()).select_from(Payment))).scalar_one())


def systems(answer: Answer) -> list[str]:
    return [dict(value)["pg_name"] for name, value in answer.params if name == "pg_payment_system"]


@pytest.mark.parametrize(
    ("settings", "code", "words"),
    [
        ("BANKCARD=down", 465, "BANKCARD is unreachable"),
        ("BANKCARD=certificate_expired", 466, "certificate has expired"),
        ("bankcard=FAILING", 475, "BANKCARD is failing"),
    ],
    indirect=["settings"],
)
async def test_a_chosen_system_that_is_not_up_refuses_with_its_code(
    rt: Runtime, shop: Shop, code: int, words: str
) -> None:
    fields = {"pg_amount": "100", "pg_description": "Order", "pg_payment_system": "BANKCARD"}
    (await shop.call("init_payment.php", {**fields, "pg_order_id": "o-1"})).assert_error(
        code, shop.secret, words
    )
    # payment.php is the payer's own browser: it gets the refusal as a page.
    page = await shop.client.post("/payment.php", data=dict(shop.message("payment.php", fields)))
    assert page.status_code == 400 and f"Error {code}: payment system BANKCARD" in page.text, page.text
    assert await payments(rt) == 0
    # The other system still works, and ps_list.php lists only it.
    answer = await shop.init(pg_payment_system="MOBILE_COMMERCE", pg_order_id="o-2")
    assert answer.assert_ok(shop.secret)["pg_redirect_url_type"] == "payment system"
    listed = (await shop.call("ps_list.php", {"pg_amount": "10"})).assert_ok(shop.secret)
    assert systems(listed) == ["MOBILE_COMMERCE"]
    # Without a choice the payer may still pay by phone.
    (await shop.init()).assert_ok(shop.secret)
    assert await payments(rt) == 2


@pytest.mark.parametrize("system", ["PAYPAL", "WEBMONEY", "QIWI"])
async def test_an_unknown_system_is_850(rt: Runtime, shop: Shop, system: str) -> None:
    answer = await shop.init(pg_payment_system=system)
    answer.assert_error(850, shop.secret, "is not a payment system of this gateway")
    assert "BANKCARD, MOBILE_COMMERCE" in answer.description
    assert await payments(rt) == 0


@pytest.mark.parametrize(
    ("settings", "phone_code"),
    [
        ("BANKCARD=down,MOBILE_COMMERCE=failing", 475),
        ("BANKCARD=failing,MOBILE_COMMERCE=certificate_expired", 466),
    ],
    indirect=["settings"],
)
async def test_no_ready_system_is_850(rt: Runtime, shop: Shop, phone_code: int) -> None:
    (await shop.init()).assert_error(850, shop.secret, "no payment system is ready")
    (await shop.call("ps_list.php", {"pg_amount": "10"})).assert_error(850, shop.secret, "no payment system")
    phone = await shop.init(pg_payment_system="MOBILE_COMMERCE")
    phone.assert_error(phone_code, shop.secret, "MOBILE_COMMERCE")
    assert await payments(rt) == 0


@pytest.mark.parametrize("settings", ["BANKCARD=up, MOBILE_COMMERCE=up"], indirect=True)
async def test_all_up_lists_both(shop: Shop) -> None:
    listed = (await shop.call("ps_list.php", {"pg_amount": "10"})).assert_ok(shop.secret)
    assert systems(listed) == ["BANKCARD", "MOBILE_COMMERCE"]


@pytest.mark.parametrize("text", ["VISA=down", "BANKCARD=broken", "BANKCARD"])
def test_a_wrong_state_setting_is_refused_at_start(database_url: str, tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError, match="payment system"):
        make_settings(database_url, tmp_path, payment_system_states=text)


@pytest.mark.parametrize(("state", "code"), [("down", 465), ("certificate_expired", 466), ("failing", 475)])
async def test_a_recurring_charge_needs_the_card_system(
    rt: Runtime, shop: Shop, state: str, code: int
) -> None:
    profile_id = await started(shop, rt)
    # The operator marks the card system's connector while the gateway runs on (as after a restart).
    rt.settings.payment_system_states = f"BANKCARD={state}"
    before = await table_counts(rt)
    answer = await charge(shop, profile_id, pg_order_id="r-1")
    answer.assert_error(code, shop.secret, "payment system BANKCARD")
    assert await table_counts(rt) == before
    rt.settings.payment_system_states = ""
    (await charge(shop, profile_id, pg_order_id="r-1")).assert_ok(shop.secret)


@pytest.mark.parametrize("settings", ["BANKCARD=failing"], indirect=True)
async def test_the_page_offers_only_ready_methods_and_refuses_a_stale_card_form(
    rt: Runtime, app_client: httpx.AsyncClient
) -> None:
    shop = await page_shop(rt)
    checkout = await start_payment(app_client, shop, language="en")
    page = await app_client.get(checkout.path)
    assert form_of(page) == "phone" and 'data-method="card"' not in page.text
    # A card form from a tab opened before the connector failed: refused on the form, nothing written.
    refused = await app_client.post(f"{checkout.path}/card", data=card())
    assert refused.status_code == 400 and "This payment method is unavailable right now" in refused.text
    assert await attempts_of(rt, checkout.payment_id) == []
    assert (await payment_of(rt, checkout.payment_id)).status == "new"
    # The card system comes back: the card pays.
    rt.settings.payment_system_states = ""
    paid = await follow(app_client, await app_client.post(f"{checkout.path}/card", data=card()))
    assert result_of(paid) == "success"
