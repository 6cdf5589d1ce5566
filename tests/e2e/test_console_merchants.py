"""Console merchant management over HTTP: create with secrets shown once, settings, mode, disable,
rotation, fees, every change audited."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from sqlalchemy import select

from greengate.runtime import Runtime
from greengate.services.merchants import authenticate_api_secret, secret_key
from greengate.store.models import AuditEvent, Merchant, MerchantFee
from tests.support.console import ConsoleClient, flash_of, signed_in


@pytest.fixture
async def admin(app_client: httpx.AsyncClient, rt: Runtime) -> ConsoleClient:
    return await signed_in(app_client, rt, "admin")


def secret_on(html: str, name: str) -> str:
    found = re.search(rf'data-secret="{name}">([^<]+)<', html)
    assert found, f"{name} not on the page"
    return found.group(1)


async def merchant_of(rt: Runtime, merchant_id: int) -> Merchant:
    async with rt.db.transaction() as session:
        merchant = await session.get(Merchant, merchant_id)
    assert merchant is not None
    return merchant


async def create(admin: ConsoleClient, name: str = "Green Mugs") -> tuple[int, str]:
    response = await admin.post("/admin/merchants", {"name": name, "mode": "test"})
    assert response.status_code == 200, response.text
    merchant_id = int(re.search(r"data-merchant-id>(\d+)<", response.text).group(1))  # type: ignore[union-attr]
    return merchant_id, response.text


async def test_creating_a_merchant_shows_its_working_secrets_once(admin: ConsoleClient, rt: Runtime) -> None:
    merchant_id, page = await create(admin)

    assert "no-store" in (await admin.get("/admin/merchants")).headers["cache-control"]
    merchant = await merchant_of(rt, merchant_id)
    assert merchant.mode == "test" and merchant.active
    assert secret_key(rt.keyring, merchant) == secret_on(page, "secret_key")
    async with rt.db.transaction() as session:
        found = await authenticate_api_secret(session, secret_on(page, "api_secret"))
    assert found is not None and found.id == merchant_id
    detail = await admin.get(f"/admin/merchants/{merchant_id}")
    assert secret_on(page, "secret_key") not in detail.text
    assert secret_on(page, "api_secret") not in detail.text


async def test_merchant_list_is_paginated_and_filtered(admin: ConsoleClient) -> None:
    for i in range(52):
        await admin.post("/admin/merchants", {"name": f"Shop {i:02d}", "mode": "test"})

    first = await admin.get("/admin/merchants")
    second = await admin.get("/admin/merchants", page="2")
    found = await admin.get("/admin/merchants", q="Shop 07")

    assert first.text.count("data-merchant-row=") == 50 and "data-page-next" in first.text
    assert second.text.count("data-merchant-row=") == 2 and "data-page-prev" in second.text
    assert found.text.count("data-merchant-row=") == 1


async def test_settings_are_saved_and_audited_with_before_and_after(
    admin: ConsoleClient, rt: Runtime
) -> None:
    merchant_id, _ = await create(admin)

    response = await admin.post(
        f"/admin/merchants/{merchant_id}/settings",
        {
            "result_url": "http://127.0.0.1:9/shop/result.php",
            "check_url": "",
            "request_method": "GET",
            "check_enabled": "1",
            "webhook_url": "http://127.0.0.1:9/hook",
            "default_wallet": "",
        },
    )

    assert response.status_code == 303
    merchant = await merchant_of(rt, merchant_id)
    assert merchant.result_url == "http://127.0.0.1:9/shop/result.php"
    assert merchant.request_method == "GET" and merchant.check_enabled
    assert merchant.webhook_url == "http://127.0.0.1:9/hook"
    assert "ok: Merchant" in flash_of((await admin.get(f"/admin/merchants/{merchant_id}")).text)
    async with rt.db.transaction() as session:
        event = await session.scalar(
            select(AuditEvent).where(AuditEvent.action == "merchant.update").order_by(AuditEvent.id).limit(1)
        )
    assert event is not None and event.actor.startswith("admin:admin-")
    assert json.loads(event.before or "{}")["result_url"] is None
    assert json.loads(event.after or "{}")["result_url"] == "http://127.0.0.1:9/shop/result.php"


async def test_a_bad_callback_url_is_refused_with_a_message(admin: ConsoleClient, rt: Runtime) -> None:
    merchant_id, _ = await create(admin)

    await admin.post(
        f"/admin/merchants/{merchant_id}/settings", {"result_url": "ftp://nowhere", "request_method": "POST"}
    )

    page = await admin.get(f"/admin/merchants/{merchant_id}")
    assert flash_of(page.text).startswith("error:")
    assert (await merchant_of(rt, merchant_id)).result_url is None


async def test_switching_mode_and_disabling(admin: ConsoleClient, rt: Runtime) -> None:
    merchant_id, _ = await create(admin)

    await admin.post(f"/admin/merchants/{merchant_id}/mode", {"mode": "live"})
    await admin.post(f"/admin/merchants/{merchant_id}/active", {"active": "0"})

    merchant = await merchant_of(rt, merchant_id)
    assert merchant.mode == "live" and not merchant.active


async def test_rotating_secrets_shows_new_ones_and_the_old_api_secret_stops_working(
    admin: ConsoleClient, rt: Runtime
) -> None:
    merchant_id, page = await create(admin)
    old_api_secret = secret_on(page, "api_secret")

    rotated = await admin.post(f"/admin/merchants/{merchant_id}/rotate")

    assert rotated.status_code == 200 and "data-shown-once" in rotated.text
    new_api_secret = secret_on(rotated.text, "api_secret")
    assert new_api_secret != old_api_secret
    async with rt.db.transaction() as session:
        assert await authenticate_api_secret(session, old_api_secret) is None
        assert await authenticate_api_secret(session, new_api_secret) is not None
    assert secret_key(rt.keyring, await merchant_of(rt, merchant_id)) == secret_on(rotated.text, "secret_key")


async def test_setting_a_fee(admin: ConsoleClient, rt: Runtime) -> None:
    merchant_id, _ = await create(admin)

    await admin.post(
        f"/admin/merchants/{merchant_id}/fees",
        {"payment_system": "BANKCARD", "currency": "KZT", "percent": "2.5", "fixed": "10"},
    )

    async with rt.db.transaction() as session:
        fee = await session.scalar(select(MerchantFee).where(MerchantFee.merchant_id == merchant_id))
    assert fee is not None and (fee.percent, fee.fixed, fee.currency) == ("2.5", 1000, "KZT")
    assert 'data-fee="BANKCARD-KZT"' in (await admin.get(f"/admin/merchants/{merchant_id}")).text


async def test_audit_page_lists_the_changes(admin: ConsoleClient) -> None:
    merchant_id, _ = await create(admin)
    await admin.post(f"/admin/merchants/{merchant_id}/mode", {"mode": "live"})

    page = await admin.get("/admin/audit", object_type="merchant", object_id=str(merchant_id))

    assert 'data-audit="merchant.create"' in page.text
    assert 'data-audit="merchant.update"' in page.text
    assert "&#34;mode&#34;: &#34;live&#34;" in page.text or '"mode": "live"' in page.text
