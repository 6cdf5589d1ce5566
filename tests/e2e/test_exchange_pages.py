"""Public exchange pages: the payer's order page behind fast_link, and the /rates.xml export."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import ROUND_UP, Decimal
from typing import Any
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element

import httpx
import pytest
from defusedxml.ElementTree import fromstring

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.services.exchange_orders import confirm_paid, expire_order
from greengate.services.requisites import set_requisite_active
from greengate.store.models import Rate
from tests.support.exchange import (
    Client,
    create_order,
    empty_tables,
    exact_json,
    load_order,
    make_client,
    make_direction,
    make_requisites,
)

CARD = "2200700100000000"
CARD_GROUPED = "2200 7001 0000 0000"
DO_NOT_PAY = "Do not transfer money for this order."


@pytest.fixture
async def clean_db(database_url: str) -> None:
    """The suite's cleanup, done with DELETE instead of TRUNCATE (much faster on PostgreSQL)."""
    await empty_tables(database_url)


async def create_ok(app_client: httpx.AsyncClient, who: Client, amount: str = "9999") -> dict[str, Any]:
    response = await create_order(app_client, who, amount)
    assert response.status_code == 200, response.text
    order: dict[str, Any] = response.json()["items"][0]
    return order


async def open_page(
    app_client: httpx.AsyncClient, order: dict[str, Any], accept_language: str = "en"
) -> httpx.Response:
    return await app_client.get(
        urlsplit(order["fast_link"]).path, headers={"Accept-Language": accept_language}
    )


async def awaiting_order(
    app_client: httpx.AsyncClient, rt: Runtime, **direction: Any
) -> tuple[Client, dict[str, Any]]:
    who = await make_client(rt)
    await make_direction(rt, **direction)
    await make_requisites(rt, 1)
    order = await create_ok(app_client, who)
    assert order["order_status"] == "awaiting"
    return who, order


def element_text(html: str, attribute: str) -> str:
    match = re.search(rf"<[^>]*\b{attribute}\b[^>]*>([^<]*)<", html)
    assert match is not None, f"no element with {attribute}"
    return match.group(1).strip()


def countdown_seconds(html: str) -> int:
    match = re.search(r'id="countdown"[^>]*data-remaining="(\d+)"', html)
    assert match is not None, "no countdown"
    return int(match.group(1))


# --- the payer's order page -------------------------------------------------------------------


async def test_order_page_shows_the_requisite_number(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    _, order = await awaiting_order(app_client, rt)

    response = await open_page(app_client, order)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert element_text(response.text, "data-requisite").replace(" ", "") == CARD


async def test_order_page_shows_the_exact_amount_to_pay(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who = await make_client(rt)
    await make_direction(rt, unique_amounts=True, unique_amount_span=5)
    await make_requisites(rt, 1)
    await create_ok(app_client, who, "9999")
    shifted = await create_ok(app_client, who, "9999")
    assert shifted["amount_payable"] == "9999.01"

    response = await open_page(app_client, shifted)

    assert element_text(response.text, "data-amount") == "9999.01 RUB"
    assert "Transfer exactly <strong>9999.01 RUB</strong>" in response.text


async def test_order_page_shows_an_inline_svg_qr_code(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    _, order = await awaiting_order(app_client, rt)

    response = await open_page(app_client, order)

    qr = re.search(r'<div class="qr"[^>]*>(.*?)</div>', response.text, re.S)
    assert qr is not None
    assert qr.group(1).lstrip().startswith("<svg")
    assert "<path" in qr.group(1)
    assert "<img" not in qr.group(1)


async def test_order_page_counts_down_to_expiry(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    _, order = await awaiting_order(app_client, rt, order_ttl=20)

    response = await open_page(app_client, order)

    assert 20 * 60 - 30 <= countdown_seconds(response.text) <= 20 * 60
    assert f"(until {order['expires_at']} UTC)" in response.text


async def test_order_page_is_not_cached(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    _, order = await awaiting_order(app_client, rt)

    response = await open_page(app_client, order)

    assert response.headers["cache-control"] == "no-store"


async def test_order_page_for_unknown_token_is_not_found(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    await awaiting_order(app_client, rt)

    response = await app_client.get("/pay/order/no-such-token-at-all", headers={"Accept-Language": "en"})

    assert response.status_code == 404
    assert "Order not found" in response.text


async def test_order_page_for_overlong_token_is_not_found(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    response = await app_client.get("/pay/order/" + "x" * 500)

    assert response.status_code == 404


async def test_canceled_order_page_says_not_to_pay_and_hides_the_requisite(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await awaiting_order(app_client, rt)
    canceled = await app_client.post(
        "/api/v2/order/cancel", json={"order_id": order["order_id"]}, headers=who.headers
    )
    assert canceled.json()["data"]["cancel"][0]["order_status"] == "canceled"

    response = await open_page(app_client, order)

    assert response.status_code == 200
    assert DO_NOT_PAY in response.text
    assert CARD_GROUPED not in response.text
    assert CARD not in response.text
    assert "<svg" not in response.text
    assert 'id="countdown"' not in response.text


async def test_autocanceled_order_page_says_not_to_pay_and_hides_the_requisite(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    _, order = await awaiting_order(app_client, rt)
    row = await load_order(rt, order["order_id"])
    async with rt.db.transaction() as session:
        assert await expire_order(session, rt, row.id, row.expires_at + timedelta(seconds=1))

    response = await open_page(app_client, order)

    assert DO_NOT_PAY in response.text
    assert CARD_GROUPED not in response.text
    assert "<svg" not in response.text


async def test_payed_order_page_confirms_payment_and_hides_the_requisite(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    _, order = await awaiting_order(app_client, rt)
    async with rt.db.transaction() as session:
        await confirm_paid(session, rt, int(order["order_id"]), now=utcnow(), actor="operator:test")

    response = await open_page(app_client, order)

    assert "Payment received" in response.text
    assert CARD_GROUPED not in response.text
    assert 'id="countdown"' not in response.text


async def test_unconfirmed_order_page_waits_for_requisites_without_a_qr_code(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    order = await create_ok(app_client, who)
    assert order["order_status"] == "unconfirmed"

    response = await open_page(app_client, order)

    assert "Waiting for payment details" in response.text
    assert "<svg" not in response.text
    assert element_text(response.text, "data-amount") == "9999 RUB"
    assert countdown_seconds(response.text) > 0


# --- /rates.xml -------------------------------------------------------------------------------


async def rates(app_client: httpx.AsyncClient) -> dict[str, dict[str, str]]:
    response = await app_client.get("/rates.xml")
    assert response.status_code == 200
    root: Element = fromstring(response.content)
    assert root.tag == "rates"
    items: dict[str, dict[str, str]] = {}
    for item in root.findall("item"):
        fields = {child.tag: (child.text or "") for child in item}
        assert fields["from"] not in items, "one item per direction"
        items[fields["from"]] = fields
    return items


async def add_rate(rt: Runtime, age: timedelta, rate: str = "3300000.50") -> None:
    async with rt.db.transaction() as session:
        session.add(Rate(source="binance", base="BTC", quote="RUB", rate=rate, fetched_at=utcnow() - age))


async def test_rates_xml_lists_each_enabled_direction_with_requisites(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    await make_direction(rt)
    await make_requisites(rt, 1)
    await make_direction(
        rt, "kzt", "KZT", min_amount="1000", max_amount="5000000", commission_percent="10", reserve_btc="1.5"
    )
    await make_requisites(rt, 1, payment_method="kzt")

    items = await rates(app_client)

    assert items == {
        "CARDRUB": {
            "from": "CARDRUB",
            "to": "BTC",
            "in": "3895857.16",
            "out": "1",
            "amount": "0.00000000",
            "minamount": "300 RUB",
            "maxamount": "150000000 RUB",
            "param": "manual",
        },
        "CARDKZT": {
            "from": "CARDKZT",
            "to": "BTC",
            "in": "30555555.56",
            "out": "1",
            "amount": "1.50000000",
            "minamount": "1000 KZT",
            "maxamount": "5000000 KZT",
            "param": "manual",
        },
    }


async def test_rates_xml_is_served_as_xml(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/rates.xml")

    assert response.headers["content-type"].startswith("application/xml")
    assert response.text.startswith('<?xml version="1.0" encoding="utf-8"?>')


async def test_rates_xml_with_no_directions_is_an_empty_rates_element(app_client: httpx.AsyncClient) -> None:
    assert await rates(app_client) == {}


async def test_rates_xml_agrees_with_directions_on_limits_and_course(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt, min_amount="500.50", max_amount="200000", commission_percent="17.9")
    await make_requisites(rt, 1)

    (direction,) = exact_json(await app_client.get("/api/v2/directions", headers=who.headers))
    item = (await rates(app_client))["CARDRUB"]

    assert item["minamount"] == f"{direction['min_amount']} RUB"
    assert item["maxamount"] == f"{direction['max_amount']} RUB"
    keep = 1 - Decimal(direction["comission_percent"]) / 100
    expected_in = (Decimal(direction["current_course"]) / keep).quantize(Decimal("0.01"), rounding=ROUND_UP)
    assert Decimal(item["in"]) == expected_in


async def test_rates_xml_leaves_out_a_disabled_direction(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    await make_direction(rt)
    await make_requisites(rt, 1)
    await make_direction(rt, "kzt", "KZT", status=0)
    await make_requisites(rt, 1, payment_method="kzt")

    assert set(await rates(app_client)) == {"CARDRUB"}


async def test_rates_xml_leaves_out_a_direction_without_requisites(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    await make_direction(rt)
    await make_requisites(rt, 1)
    await make_direction(rt, "kzt", "KZT")

    assert set(await rates(app_client)) == {"CARDRUB"}


async def test_rates_xml_leaves_out_a_direction_whose_requisites_are_all_disabled(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    await make_direction(rt)
    await make_requisites(rt, 1)
    await make_direction(rt, "kzt", "KZT")
    (kzt_requisite,) = await make_requisites(rt, 1, payment_method="kzt")
    async with rt.db.transaction() as session:
        await set_requisite_active(session, kzt_requisite, False, now=utcnow())

    assert set(await rates(app_client)) == {"CARDRUB"}


async def test_rates_xml_leaves_out_a_direction_with_a_stale_rate(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    await make_direction(rt, "kzt", "KZT")
    await make_requisites(rt, 1, payment_method="kzt")
    await make_direction(rt, "phone", "RUB", rate_source="binance")
    await make_requisites(rt, 1, payment_method="phone")
    await add_rate(rt, timedelta(seconds=rt.settings.rate_max_age_seconds + 30))

    assert set(await rates(app_client)) == {"CARDKZT"}


async def test_rates_xml_leaves_out_a_direction_with_no_market_rate(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    await make_direction(rt, "kzt", "KZT")
    await make_requisites(rt, 1, payment_method="kzt")
    await make_direction(rt, "phone", "RUB", rate_source="binance")
    await make_requisites(rt, 1, payment_method="phone")

    assert set(await rates(app_client)) == {"CARDKZT"}


async def test_rates_xml_lists_a_market_rate_direction_while_its_rate_is_fresh(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    await make_direction(rt, "phone", "RUB", rate_source="binance", commission_percent="0")
    await make_requisites(rt, 1, payment_method="phone")
    await add_rate(rt, timedelta(seconds=10))

    items = await rates(app_client)

    assert set(items) == {"PHONERUB"}
    assert items["PHONERUB"]["in"] == "3300000.50"


# --- the order page's language ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept_language", "lang", "status_text"),
    [
        ("kk-KZ,kk;q=0.9,ru;q=0.8", "kk", "Уақыт біткенше төмендегі нақты соманы осы деректерге аударыңыз."),
        ("de-DE,en;q=0.7,ru;q=0.3", "en", "Transfer exactly the amount below to these details"),
        ("ru-RU", "ru", "Переведите точную сумму ниже на эти реквизиты"),
        ("", "ru", "Переведите точную сумму ниже на эти реквизиты"),
        ("fr-FR,de;q=0.8", "ru", "Переведите точную сумму ниже на эти реквизиты"),
    ],
)
async def test_order_page_speaks_the_browsers_language(
    app_client: httpx.AsyncClient, rt: Runtime, accept_language: str, lang: str, status_text: str
) -> None:
    _, order = await awaiting_order(app_client, rt)

    response = await open_page(app_client, order, accept_language)

    assert f'<html lang="{lang}">' in response.text
    assert status_text in response.text


async def test_lang_parameter_overrides_accept_language_on_the_order_page(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    _, order = await awaiting_order(app_client, rt)
    path = urlsplit(order["fast_link"]).path

    response = await app_client.get(f"{path}?lang=kk", headers={"Accept-Language": "en-US,en"})

    assert '<html lang="kk">' in response.text
    assert "Дәл <strong>9999 RUB</strong> аударыңыз" in response.text
    assert "Қалған уақыт" in response.text
    assert 'href="?lang=ru"' in response.text and 'href="?lang=en"' in response.text


async def test_canceled_order_page_says_not_to_pay_in_kazakh(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await awaiting_order(app_client, rt)
    await app_client.post("/api/v2/order/cancel", json={"order_id": [order["order_id"]]}, headers=who.headers)

    response = await open_page(app_client, order, "kk")

    assert "Бұл өтінім бойынша ақша аудармаңыз." in response.text
    assert CARD not in response.text


async def test_unknown_order_page_speaks_the_browsers_language(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/pay/order/no-such-token", headers={"Accept-Language": "ru"})

    assert response.status_code == 404
    assert "Заявка не найдена" in response.text
