"""Exchange API over HTTP: directions, create, check, cancel, the order lifecycle and the service pages."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from greengate.app import create_app
from greengate.clock import utcnow
from greengate.domain.errors import IllegalTransition
from greengate.domain.exchange import OrderStatus
from greengate.runtime import Runtime
from greengate.services import exchange_orders
from greengate.services.exchange_orders import (
    complete_order,
    confirm_paid,
    expire_order,
    lock_order,
    transition,
)
from greengate.services.merchants import (
    MerchantApiSettings,
    get_merchant,
    rotate_credentials,
    update_merchant_settings,
)
from greengate.services.requisites import set_requisite_active
from greengate.store.migrate import head_revision
from greengate.store.models import ExchangeOrder, Rate
from tests.conftest import make_settings
from tests.support.exchange import (
    TESTNET_WALLET,
    WALLET,
    Client,
    check,
    create_order,
    empty_tables,
    exact_json,
    load_order,
    make_client,
    make_direction,
    make_requisites,
)

CARD = "2200700100000000"
SECOND_CARD = "2200700100000001"
OTHER_WALLET = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
TXID = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
WIRE_TIME = "%Y-%m-%d %H:%M:%S"
SPEC_DIRECTION_FIELDS = (
    "id",
    "status",
    "order_ttl",
    "min_amount",
    "max_amount",
    "comission_percent",
    "fullname",
    "current_course",
)


@pytest.fixture
async def clean_db(database_url: str) -> None:
    """The suite's cleanup, done with DELETE instead of TRUNCATE (much faster on PostgreSQL)."""
    await empty_tables(database_url)


async def create_ok(
    app_client: httpx.AsyncClient, who: Client, amount: Any = "9999", **kw: Any
) -> dict[str, Any]:
    response = await create_order(app_client, who, amount, **kw)
    assert response.status_code == 200, response.text
    order: dict[str, Any] = response.json()["items"][0]
    return order


async def cancel(app_client: httpx.AsyncClient, who: Client, ids: Any) -> dict[str, Any]:
    response = await app_client.post("/api/v2/order/cancel", json={"order_id": ids}, headers=who.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == "true"
    data: dict[str, Any] = body["data"]
    return data


async def status_of(app_client: httpx.AsyncClient, who: Client, order_id: str) -> str:
    (order,) = await check(app_client, who, [order_id])
    status: str = order["order_status"]
    return status


async def count_orders(rt: Runtime) -> int:
    async with rt.db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(ExchangeOrder)) or 0)


async def pay(rt: Runtime, order_id: str) -> None:
    async with rt.db.transaction() as session:
        await confirm_paid(session, rt, int(order_id), now=utcnow(), actor="operator:test")


async def complete(rt: Runtime, order_id: str) -> None:
    async with rt.db.transaction() as session:
        await complete_order(session, rt, int(order_id), txid=TXID, now=utcnow(), actor="operator:test")


async def expire(rt: Runtime, order_id: str, now: datetime) -> bool:
    async with rt.db.transaction() as session:
        return await expire_order(session, rt, int(order_id), now)


async def an_awaiting_order(app_client: httpx.AsyncClient, rt: Runtime) -> tuple[Client, dict[str, Any]]:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)
    order = await create_ok(app_client, who)
    assert order["order_status"] == "awaiting"
    return who, order


def wire_datetime(text: str) -> datetime:
    return datetime.strptime(text, WIRE_TIME).replace(tzinfo=UTC)


# --- GET /api/v2/directions -------------------------------------------------------------------


async def test_directions_list_each_direction_with_spec_fields_and_numbers(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    card = await make_direction(rt)
    kzt = await make_direction(
        rt,
        "kzt",
        "KZT",
        min_amount="1000",
        max_amount="5000000.50",
        commission_percent="17.9",
        order_ttl=15,
        fullname="Банковская карта KZT на Bitcoin BTC",
    )

    response = await app_client.get("/api/v2/directions", headers=who.headers)

    assert response.status_code == 200, response.text
    items = exact_json(response)
    assert [{k: item[k] for k in SPEC_DIRECTION_FIELDS} for item in items] == [
        {
            "id": card,
            "status": 1,
            "order_ttl": 30,
            "min_amount": 300,
            "max_amount": 150000000,
            "comission_percent": 17,
            "fullname": "Банковская карта RUB на Bitcoin BTC",
            "current_course": Decimal("3233561.44"),
        },
        {
            "id": kzt,
            "status": 1,
            "order_ttl": 15,
            "min_amount": 1000,
            "max_amount": Decimal("5000000.5"),
            "comission_percent": Decimal("17.9"),
            "fullname": "Банковская карта KZT на Bitcoin BTC",
            "current_course": Decimal("27500000"),
        },
    ]


async def test_directions_amounts_and_commission_are_json_numbers_not_strings(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt, min_amount="300.50", commission_percent="17.5")

    (item,) = exact_json(await app_client.get("/api/v2/directions", headers=who.headers))

    numbers = {k: item[k] for k in ("min_amount", "max_amount", "comission_percent", "current_course")}
    assert numbers == {
        "min_amount": Decimal("300.5"),
        "max_amount": 150000000,
        "comission_percent": Decimal("17.5"),
        "current_course": Decimal("3233561.44"),
    }
    assert not any(isinstance(value, str) for value in numbers.values())


async def test_directions_current_course_is_the_rate_an_order_locks(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt, rate_source="fixed:3239886.8")
    await make_requisites(rt, 1)

    course = exact_json(await app_client.get("/api/v2/directions", headers=who.headers))[0]["current_course"]
    order = await create_ok(app_client, who)

    assert course == Decimal("3239886.80")
    assert Decimal(order["exchange_rate"]) == course


async def test_directions_show_disabled_direction_with_status_0(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    disabled = await make_direction(rt, "kzt", "KZT", status=0)

    items = (await app_client.get("/api/v2/directions", headers=who.headers)).json()

    assert {item["id"]: item["status"] for item in items}[disabled] == 0
    assert len(items) == 2


async def test_directions_still_list_a_direction_whose_market_rate_is_unavailable(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    direction = await make_direction(rt, rate_source="binance")

    response = await app_client.get("/api/v2/directions", headers=who.headers)

    assert response.status_code == 200
    (item,) = response.json()
    assert item["id"] == direction
    assert item["current_course"] is None


# --- POST /api/v2/order/create ----------------------------------------------------------------


async def test_create_with_free_requisite_is_awaiting_on_that_requisite(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)

    response = await create_order(app_client, who, "9999")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response"] == "success"
    (order,) = body["items"]
    assert re.fullmatch(r"[1-9][0-9]*", order["order_id"])
    assert order["order_status"] == "awaiting"
    assert order["wallet_payment"] == CARD
    assert order["amount_payable"] == "9999"
    assert order["clients_wallet"] == WALLET
    assert order["fast_link"].startswith("http://testserver/pay/order/")


async def test_create_writes_utc_wire_timestamps_and_expiry_order_ttl_later(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt, order_ttl=15)
    await make_requisites(rt, 1)
    before = utcnow().replace(microsecond=0)

    order = await create_ok(app_client, who)

    created = wire_datetime(order["created_at"])
    assert before <= created <= utcnow()
    assert order["updated_at"] == order["created_at"]
    assert wire_datetime(order["expires_at"]) - created == timedelta(minutes=15)


async def test_create_when_no_requisite_is_free_is_unconfirmed_without_requisites(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)
    await create_ok(app_client, who, "9999")

    order = await create_ok(app_client, who, "9999")

    assert order["order_status"] == "unconfirmed"
    assert order["wallet_payment"] == ""
    assert order["amount_payable"] == "9999"
    assert order["amount_receivable"] == "0.00256657"


async def test_create_without_any_requisite_is_unconfirmed(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)

    order = await create_ok(app_client, who)

    assert (order["order_status"], order["wallet_payment"]) == ("unconfirmed", "")


async def test_unconfirmed_order_gets_the_requisite_when_the_order_on_it_is_canceled(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)
    first = await create_ok(app_client, who, "9999")
    waiting = await create_ok(app_client, who, "9999")
    assert waiting["order_status"] == "unconfirmed"

    await cancel(app_client, who, [first["order_id"]])

    (order,) = await check(app_client, who, [waiting["order_id"]])
    assert order["order_status"] == "awaiting"
    assert order["wallet_payment"] == CARD
    assert order["amount_payable"] == "9999"


async def test_create_prices_spec_example_at_default_rate(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)

    order = await create_ok(app_client, who, "9999")

    assert (order["exchange_rate"], order["amount_receivable"]) == ("3233561.44", "0.00256657")


async def test_create_prices_spec_example_at_pinned_direction_rate(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt, rate_source="fixed:3239886.8")
    await make_requisites(rt, 1)

    order = await create_ok(app_client, who, "9999")

    assert Decimal(order["exchange_rate"]) == Decimal("3239886.8")
    assert order["amount_receivable"] == "0.00256156"


async def test_create_accepts_integer_from_amount(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)

    order = await create_ok(app_client, who, 9999)

    assert (order["amount_payable"], order["amount_receivable"]) == ("9999", "0.00256657")


async def test_create_shows_fractional_amount_with_two_decimals(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)

    order = await create_ok(app_client, who, "1000.5")

    assert (order["amount_payable"], order["amount_receivable"]) == ("1000.50", "0.00025681")


async def test_a_slowly_arriving_request_body_does_not_hold_up_other_orders(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 2)
    rest_of_body = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"payment_method": "card", '
        await rest_of_body.wait()
        yield f'"wallet": "{WALLET}", "from_amount": "9999"}}'.encode()

    slow = asyncio.create_task(
        app_client.post(
            "/api/v2/order/create",
            content=slow_body(),
            headers={"Content-Type": "application/json", **who.headers},
        )
    )
    await asyncio.sleep(0.1)  # the slow request is now waiting for the rest of its body
    try:
        other = await asyncio.wait_for(create_order(app_client, who, "5000"), timeout=5)
    finally:
        rest_of_body.set()
        slow_response = await slow

    assert other.status_code == 200, other.text
    assert slow_response.status_code == 200, slow_response.text


# --- POST /api/v2/order/check -----------------------------------------------------------------


async def test_check_returns_the_order_as_create_returned_it(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)

    response = await app_client.post(
        "/api/v2/order/check", json={"order_id": [order["order_id"]]}, headers=who.headers
    )

    assert response.status_code == 200
    assert response.json() == {"result": "true", "data": {"orders": [order]}}


async def test_check_leaves_out_another_clients_order(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who, mine = await an_awaiting_order(app_client, rt)
    other = await make_client(rt, "Other office")
    theirs = await create_ok(app_client, other, "5000")

    orders = await check(app_client, who, [mine["order_id"], theirs["order_id"]])

    assert [o["order_id"] for o in orders] == [mine["order_id"]]


async def test_check_of_only_another_clients_order_is_empty(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    _, order = await an_awaiting_order(app_client, rt)
    other = await make_client(rt, "Other office")

    assert await check(app_client, other, [order["order_id"]]) == []


async def test_check_leaves_out_unknown_ids(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    unknown = str(int(order["order_id"]) + 1000)

    orders = await check(app_client, who, [unknown, order["order_id"], "0"])

    assert [o["order_id"] for o in orders] == [order["order_id"]]


async def test_check_accepts_a_single_string_id(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who, order = await an_awaiting_order(app_client, rt)

    orders = await check(app_client, who, order["order_id"])

    assert [o["order_id"] for o in orders] == [order["order_id"]]


async def test_check_accepts_a_single_integer_id(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who, order = await an_awaiting_order(app_client, rt)

    orders = await check(app_client, who, int(order["order_id"]))

    assert [o["order_id"] for o in orders] == [order["order_id"]]


async def test_check_accepts_a_list_of_string_and_integer_ids(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, first = await an_awaiting_order(app_client, rt)
    second = await create_ok(app_client, who, "5000")

    orders = await check(app_client, who, [first["order_id"], int(second["order_id"])])

    assert sorted(o["order_id"] for o in orders) == sorted([first["order_id"], second["order_id"]])


async def test_check_of_an_empty_list_returns_no_orders(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who, _ = await an_awaiting_order(app_client, rt)

    assert await check(app_client, who, []) == []


async def test_check_refuses_a_disabled_client_at_once(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    async with rt.db.transaction() as session:
        merchant = await get_merchant(session, who.merchant_id)
        await update_merchant_settings(
            session, merchant, MerchantApiSettings(active=False), now=utcnow(), allow_private_callbacks=True
        )

    response = await app_client.post(
        "/api/v2/order/check", json={"order_id": [order["order_id"]]}, headers=who.headers
    )

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_secret"


async def test_check_refuses_a_rotated_secret_at_once(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    async with rt.db.transaction() as session:
        merchant = await get_merchant(session, who.merchant_id)
        creds = await rotate_credentials(session, rt.keyring, merchant, now=utcnow())

    body = {"order_id": [order["order_id"]]}
    old = await app_client.post("/api/v2/order/check", json=body, headers=who.headers)
    new = await app_client.post("/api/v2/order/check", json=body, headers={"Api-Secret": creds.api_secret})

    assert (old.status_code, old.json()["code"]) == (401, "invalid_api_secret")
    assert new.status_code == 200
    assert new.json()["data"]["orders"] == [order]


async def test_check_with_a_wrong_secret_and_a_bad_body_is_unauthorized(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    await an_awaiting_order(app_client, rt)

    response = await app_client.post(
        "/api/v2/order/check", json={"order_id": "x"}, headers={"Api-Secret": "gg_wrong"}
    )

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_secret"


async def test_check_with_a_right_secret_and_a_bad_body_is_invalid(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, _ = await an_awaiting_order(app_client, rt)

    response = await app_client.post("/api/v2/order/check", json={"order_ids": ["1"]}, headers=who.headers)

    assert response.status_code == 400
    assert response.json()["code"] == "missing_field"


async def test_check_gives_each_order_its_own_card(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 2)
    first = await create_ok(app_client, who, "9999")
    second = await create_ok(app_client, who, "9999")

    orders = await check(app_client, who, [first["order_id"], second["order_id"]])

    assert orders == [first, second]
    assert {o["wallet_payment"] for o in orders} == {CARD, SECOND_CARD}


# --- POST /api/v2/order/cancel ----------------------------------------------------------------


async def test_cancel_awaiting_order_cancels_it(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who, order = await an_awaiting_order(app_client, rt)

    data = await cancel(app_client, who, [order["order_id"]])

    assert data == {"cancel": [{"order_id": order["order_id"], "order_status": "canceled"}], "failed": []}
    assert await status_of(app_client, who, order["order_id"]) == "canceled"


async def test_cancel_unconfirmed_order_cancels_it(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    order = await create_ok(app_client, who)
    assert order["order_status"] == "unconfirmed"

    data = await cancel(app_client, who, order["order_id"])

    assert data == {"cancel": [{"order_id": order["order_id"], "order_status": "canceled"}], "failed": []}
    assert await status_of(app_client, who, order["order_id"]) == "canceled"


async def test_cancel_payed_order_fails_and_keeps_it_payed(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    await pay(rt, order["order_id"])

    data = await cancel(app_client, who, [order["order_id"]])

    assert data == {
        "cancel": [],
        "failed": [
            {
                "order_id": order["order_id"],
                "order_status": "payed",
                "error": "order can no longer be canceled",
            }
        ],
    }
    assert await status_of(app_client, who, order["order_id"]) == "payed"


async def test_cancel_completed_order_fails_and_keeps_it_completed(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    await pay(rt, order["order_id"])
    await complete(rt, order["order_id"])

    data = await cancel(app_client, who, [order["order_id"]])

    assert data["cancel"] == []
    assert data["failed"] == [
        {
            "order_id": order["order_id"],
            "order_status": "completed",
            "error": "order can no longer be canceled",
        }
    ]
    assert await status_of(app_client, who, order["order_id"]) == "completed"


async def test_cancel_reports_canceled_and_failed_orders_of_one_request(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, payed = await an_awaiting_order(app_client, rt)
    await pay(rt, payed["order_id"])
    open_order = await create_ok(app_client, who, "5000")

    data = await cancel(app_client, who, [payed["order_id"], open_order["order_id"]])

    assert data["cancel"] == [{"order_id": open_order["order_id"], "order_status": "canceled"}]
    assert [f["order_id"] for f in data["failed"]] == [payed["order_id"]]


async def test_cancel_of_another_clients_order_reports_it_not_found_and_leaves_it(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    owner, order = await an_awaiting_order(app_client, rt)
    other = await make_client(rt, "Other office")

    data = await cancel(app_client, other, [order["order_id"]])

    assert data == {
        "cancel": [],
        "failed": [{"order_id": order["order_id"], "order_status": "", "error": "order not found"}],
    }
    assert await status_of(app_client, owner, order["order_id"]) == "awaiting"


async def test_cancel_of_unknown_id_reports_it_failed_as_not_found(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    unknown = str(int(order["order_id"]) + 1000)

    data = await cancel(app_client, who, [unknown])

    assert data == {
        "cancel": [],
        "failed": [{"order_id": unknown, "order_status": "", "error": "order not found"}],
    }


async def test_canceled_order_frees_its_requisite_for_the_same_amount(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    await cancel(app_client, who, [order["order_id"]])

    again = await create_ok(app_client, who, "9999")

    assert (again["order_status"], again["wallet_payment"]) == ("awaiting", CARD)


# --- status transitions -----------------------------------------------------------------------


async def test_confirm_paid_moves_awaiting_order_to_payed(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who, order = await an_awaiting_order(app_client, rt)

    await pay(rt, order["order_id"])

    assert await status_of(app_client, who, order["order_id"]) == "payed"
    row = await load_order(rt, order["order_id"])
    assert row.paid_amount == 999900
    assert row.paid_at is not None


async def test_complete_order_moves_payed_order_to_completed_with_txid(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    await pay(rt, order["order_id"])

    await complete(rt, order["order_id"])

    assert await status_of(app_client, who, order["order_id"]) == "completed"
    row = await load_order(rt, order["order_id"])
    assert row.txid == TXID
    assert row.completed_at is not None


async def test_status_change_updates_updated_at_but_not_created_at(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    later = utcnow() + timedelta(minutes=5)

    async with rt.db.transaction() as session:
        await confirm_paid(session, rt, int(order["order_id"]), now=later, actor="operator:test")

    (seen,) = await check(app_client, who, [order["order_id"]])
    assert seen["created_at"] == order["created_at"]
    assert seen["updated_at"] == later.strftime(WIRE_TIME)


async def test_expire_order_autocancels_awaiting_order_past_expiry(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    after_expiry = wire_datetime(order["expires_at"]) + timedelta(seconds=1)

    expired = await expire(rt, order["order_id"], after_expiry)

    assert expired is True
    assert await status_of(app_client, who, order["order_id"]) == "autocanceled"


async def test_expire_order_autocancels_unconfirmed_order_past_expiry(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    order = await create_ok(app_client, who)
    assert order["order_status"] == "unconfirmed"

    expired = await expire(rt, order["order_id"], wire_datetime(order["expires_at"]) + timedelta(seconds=1))

    assert expired is True
    assert await status_of(app_client, who, order["order_id"]) == "autocanceled"


async def test_expire_order_before_expiry_leaves_order_awaiting(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    before_expiry = wire_datetime(order["expires_at"]) - timedelta(seconds=5)

    expired = await expire(rt, order["order_id"], before_expiry)

    assert expired is False
    assert await status_of(app_client, who, order["order_id"]) == "awaiting"


async def test_autocanceled_order_frees_its_requisite_for_a_waiting_order(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    waiting = await create_ok(app_client, who, "9999")
    assert waiting["order_status"] == "unconfirmed"
    # The waiting order was created later, so it is still open at the first one's expiry.
    await expire(rt, order["order_id"], (await load_order(rt, order["order_id"])).expires_at)

    (seen,) = await check(app_client, who, [waiting["order_id"]])

    assert (seen["order_status"], seen["wallet_payment"]) == ("awaiting", CARD)


async def test_completed_order_cannot_move_to_canceled(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    await pay(rt, order["order_id"])
    await complete(rt, order["order_id"])

    with pytest.raises(IllegalTransition):
        async with rt.db.transaction() as session:
            row = await lock_order(session, int(order["order_id"]))
            await transition(session, rt, row, OrderStatus.CANCELED, actor="operator:test", now=utcnow())

    assert await status_of(app_client, who, order["order_id"]) == "completed"


async def test_canceled_order_cannot_be_confirmed_paid(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    await cancel(app_client, who, [order["order_id"]])

    with pytest.raises(IllegalTransition):
        await pay(rt, order["order_id"])

    assert await status_of(app_client, who, order["order_id"]) == "canceled"
    assert (await load_order(rt, order["order_id"])).paid_amount is None


async def test_awaiting_order_cannot_be_completed_before_payment(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)

    with pytest.raises(IllegalTransition):
        await complete(rt, order["order_id"])

    assert await status_of(app_client, who, order["order_id"]) == "awaiting"
    assert (await load_order(rt, order["order_id"])).txid is None


async def test_expire_order_leaves_payed_order_payed(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    await pay(rt, order["order_id"])

    expired = await expire(rt, order["order_id"], wire_datetime(order["expires_at"]) + timedelta(hours=1))

    assert expired is False
    assert await status_of(app_client, who, order["order_id"]) == "payed"


# --- Idempotency-Key --------------------------------------------------------------------------


async def test_same_idempotency_key_and_body_returns_identical_response_and_one_order(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 2)
    key = {"Idempotency-Key": "create-7f3a"}
    first = await create_order(app_client, who, "9999", headers=key)

    second = await create_order(app_client, who, "9999", headers=key)

    assert first.status_code == second.status_code == 200
    assert second.content == first.content
    assert await count_orders(rt) == 1


async def test_same_idempotency_key_with_different_body_is_refused(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 2)
    key = {"Idempotency-Key": "create-7f3a"}
    await create_order(app_client, who, "9999", headers=key)

    response = await create_order(app_client, who, "5000", headers=key)

    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_mismatch"
    assert await count_orders(rt) == 1


async def test_different_clients_may_use_the_same_idempotency_key(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    first_client = await make_client(rt)
    second_client = await make_client(rt, "Other office")
    await make_direction(rt)
    await make_requisites(rt, 2)
    key = {"Idempotency-Key": "shared-key"}

    first = await create_order(app_client, first_client, "9999", headers=key)
    second = await create_order(app_client, second_client, "9999", headers=key)

    assert first.status_code == second.status_code == 200
    assert first.json()["items"][0]["order_id"] != second.json()["items"][0]["order_id"]
    assert await count_orders(rt) == 2


async def test_requests_without_idempotency_key_create_separate_orders(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 2)

    await create_ok(app_client, who, "9999")
    await create_ok(app_client, who, "9999")

    assert await count_orders(rt) == 2


# --- default wallet ---------------------------------------------------------------------------


async def test_empty_wallet_uses_the_clients_default_wallet(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt, default_wallet=OTHER_WALLET)
    await make_direction(rt)
    await make_requisites(rt, 1)

    order = await create_ok(app_client, who, "9999", wallet="")

    assert order["clients_wallet"] == OTHER_WALLET


async def test_explicit_wallet_wins_over_the_default_wallet(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt, default_wallet=OTHER_WALLET)
    await make_direction(rt)
    await make_requisites(rt, 1)

    order = await create_ok(app_client, who, "9999", wallet=WALLET)

    assert order["clients_wallet"] == WALLET


async def test_empty_wallet_without_default_is_refused(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)

    response = await create_order(app_client, who, "9999", wallet="")

    assert response.status_code == 422
    assert response.json()["code"] == "no_default_wallet"
    assert await count_orders(rt) == 0


# --- requisite allocation: unique amounts, limits, disabled requisites ------------------------


async def test_unique_amounts_move_payable_so_same_amount_orders_share_a_requisite(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt, rate_source="fixed:100000", unique_amounts=True, unique_amount_span=5)
    await make_requisites(rt, 1)

    orders = [await create_ok(app_client, who, "9999") for _ in range(3)]

    assert [
        (o["order_status"], o["wallet_payment"], o["amount_payable"], o["amount_receivable"]) for o in orders
    ] == [
        ("awaiting", CARD, "9999", "0.08299170"),
        ("awaiting", CARD, "9999.01", "0.08299178"),
        ("awaiting", CARD, "9999.02", "0.08299186"),
    ]


async def test_unique_amounts_beyond_the_span_leave_the_order_unconfirmed(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt, unique_amounts=True, unique_amount_span=1)
    await make_requisites(rt, 1)
    await create_ok(app_client, who, "9999")
    await create_ok(app_client, who, "9999")

    third = await create_ok(app_client, who, "9999")

    assert (third["order_status"], third["wallet_payment"], third["amount_payable"]) == (
        "unconfirmed",
        "",
        "9999",
    )


async def test_unique_amounts_prefer_the_exact_amount_on_another_requisite(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt, unique_amounts=True, unique_amount_span=5)
    await make_requisites(rt, 2)
    first = await create_ok(app_client, who, "9999")

    second = await create_ok(app_client, who, "9999")

    assert {first["wallet_payment"], second["wallet_payment"]} == {CARD, SECOND_CARD}
    assert second["amount_payable"] == "9999"


async def test_without_unique_amounts_same_amount_on_busy_requisite_is_unconfirmed(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)
    await create_ok(app_client, who, "9999")

    second = await create_ok(app_client, who, "9999")

    assert (second["order_status"], second["wallet_payment"]) == ("unconfirmed", "")


async def test_without_unique_amounts_different_amount_gets_the_busy_requisite(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)
    await create_ok(app_client, who, "9999")

    second = await create_ok(app_client, who, "5000")

    assert (second["order_status"], second["wallet_payment"], second["amount_payable"]) == (
        "awaiting",
        CARD,
        "5000",
    )


async def test_same_amount_goes_to_the_second_requisite_when_the_first_is_busy(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 2)
    first = await create_ok(app_client, who, "9999")

    second = await create_ok(app_client, who, "9999")

    assert {first["wallet_payment"], second["wallet_payment"]} == {CARD, SECOND_CARD}
    assert second["order_status"] == "awaiting"


async def test_turnover_limit_refuses_an_order_that_would_exceed_it(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1, turnover_limit=1_000_000)
    await create_ok(app_client, who, "6000")

    over = await create_ok(app_client, who, "5000")

    assert (over["order_status"], over["wallet_payment"]) == ("unconfirmed", "")


async def test_turnover_limit_allows_orders_up_to_it_exactly(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1, turnover_limit=1_000_000)
    await create_ok(app_client, who, "6000")

    exact = await create_ok(app_client, who, "4000")

    assert (exact["order_status"], exact["wallet_payment"]) == ("awaiting", CARD)


async def test_turnover_limit_refuses_a_single_order_above_it(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1, turnover_limit=999_800)

    order = await create_ok(app_client, who, "9999")

    assert order["order_status"] == "unconfirmed"


async def test_canceled_orders_do_not_count_towards_turnover(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1, turnover_limit=1_000_000)
    first = await create_ok(app_client, who, "6000")
    await cancel(app_client, who, [first["order_id"]])

    order = await create_ok(app_client, who, "9000")

    assert (order["order_status"], order["wallet_payment"]) == ("awaiting", CARD)


async def test_daily_limit_refuses_an_order_that_would_exceed_it(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1, daily_limit=1_000_000)
    await create_ok(app_client, who, "6000")

    over = await create_ok(app_client, who, "5000")

    assert (over["order_status"], over["wallet_payment"]) == ("unconfirmed", "")


async def test_daily_limit_ignores_orders_created_before_today(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1, daily_limit=1_000_000)
    yesterday = await create_ok(app_client, who, "6000")
    async with rt.db.transaction() as session:
        await session.execute(
            update(ExchangeOrder)
            .where(ExchangeOrder.id == int(yesterday["order_id"]))
            .values(created_at=utcnow() - timedelta(days=1, hours=1))
        )

    today = await create_ok(app_client, who, "5000")

    assert (today["order_status"], today["wallet_payment"]) == ("awaiting", CARD)


async def test_disabled_requisite_is_never_assigned(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    first, _ = await make_requisites(rt, 2)
    async with rt.db.transaction() as session:
        await set_requisite_active(session, first, False, now=utcnow())

    orders = [await create_ok(app_client, who, "9999") for _ in range(2)]

    assert [(o["order_status"], o["wallet_payment"]) for o in orders] == [
        ("awaiting", SECOND_CARD),
        ("unconfirmed", ""),
    ]


async def test_only_requisite_disabled_leaves_order_unconfirmed(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    (only,) = await make_requisites(rt, 1)
    async with rt.db.transaction() as session:
        await set_requisite_active(session, only, False, now=utcnow())

    order = await create_ok(app_client, who, "9999")

    assert (order["order_status"], order["wallet_payment"]) == ("unconfirmed", "")


# --- market rates -----------------------------------------------------------------------------


async def add_rate(rt: Runtime, rate: str, fetched_at: datetime) -> None:
    async with rt.db.transaction() as session:
        session.add(Rate(source="binance", base="BTC", quote="RUB", rate=rate, fetched_at=fetched_at))


async def test_create_with_market_rate_not_cached_is_rate_unavailable(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt, rate_source="binance")
    await make_requisites(rt, 1)

    response = await create_order(app_client, who, "9999")

    assert response.status_code == 503
    body = response.json()
    assert (body["response"], body["result"], body["code"]) == ("error", "false", "rate_unavailable")
    assert await count_orders(rt) == 0


async def test_create_with_stale_cached_market_rate_is_rate_unavailable(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt, rate_source="binance")
    await make_requisites(rt, 1)
    await add_rate(rt, "3300000.50", utcnow() - timedelta(seconds=rt.settings.rate_max_age_seconds + 30))

    response = await create_order(app_client, who, "9999")

    assert response.status_code == 503
    assert response.json()["code"] == "rate_unavailable"
    assert await count_orders(rt) == 0


async def test_create_locks_a_fresh_cached_market_rate(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who = await make_client(rt)
    await make_direction(rt, rate_source="binance")
    await make_requisites(rt, 1)
    await add_rate(rt, "3300000.50", utcnow() - timedelta(seconds=10))

    order = await create_ok(app_client, who, "9999")

    assert (order["exchange_rate"], order["amount_receivable"]) == ("3300000.50", "0.00251489")


# --- BTC network ------------------------------------------------------------------------------


async def test_testnet_wallet_is_refused_on_mainnet(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)

    response = await create_order(app_client, who, "9999", wallet=TESTNET_WALLET)

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_wallet"
    assert await count_orders(rt) == 0


@asynccontextmanager
async def running_app(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def test_testnet_wallet_is_accepted_on_a_testnet_gateway(
    database_url: str, tmp_path: Path, clean_db: None
) -> None:
    settings = make_settings(database_url, tmp_path, btc_network="testnet")
    async with running_app(settings) as client:
        rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        who = await make_client(rt)
        await make_direction(rt)
        await make_requisites(rt, 1)

        response = await create_order(client, who, "9999", wallet=TESTNET_WALLET)

    assert response.status_code == 200, response.text
    assert response.json()["items"][0]["clients_wallet"] == TESTNET_WALLET


async def test_mainnet_wallet_is_refused_on_a_testnet_gateway(
    database_url: str, tmp_path: Path, clean_db: None
) -> None:
    settings = make_settings(database_url, tmp_path, btc_network="testnet")
    async with running_app(settings) as client:
        rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        who = await make_client(rt)
        await make_direction(rt)
        await make_requisites(rt, 1)

        response = await create_order(client, who, "9999", wallet=WALLET)

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_wallet"


# --- docs, health, readiness, metrics ---------------------------------------------------------


async def test_openapi_lists_the_four_exchange_endpoints(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/openapi.json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "get" in paths["/api/v2/directions"]
    assert "post" in paths["/api/v2/order/create"]
    assert "post" in paths["/api/v2/order/check"]
    assert "post" in paths["/api/v2/order/cancel"]


async def test_openapi_documents_the_create_request_body(app_client: httpx.AsyncClient) -> None:
    spec = (await app_client.get("/openapi.json")).json()

    body = spec["paths"]["/api/v2/order/create"]["post"]["requestBody"]["content"]["application/json"]

    assert set(body["schema"]["properties"]) == {"payment_method", "wallet", "from_amount"}


async def test_docs_page_loads_the_openapi_document(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/docs")

    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert "/openapi.json" in response.text


async def test_healthz_is_ok(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_reports_the_current_migration_revision(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    response = await app_client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "migrations": head_revision(rt.settings.database_url)}
    assert response.json()["migrations"]


async def test_metrics_count_http_requests_by_route_and_status(app_client: httpx.AsyncClient) -> None:
    await app_client.get("/healthz")

    response = await app_client.get("/metrics")

    assert response.status_code == 200
    assert "greengate_http_requests_total" in response.text
    assert 'greengate_http_requests_total{method="GET",route="/healthz",status="200"}' in response.text


async def test_consecutive_orders_take_the_cards_in_turn(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 3)

    cards = [
        (await create_ok(app_client, who, amount))["wallet_payment"] for amount in ("1000", "2000", "3000")
    ]
    fourth = await create_ok(app_client, who, "4000")

    assert len(set(cards)) == 3
    assert fourth["wallet_payment"] == cards[0]


async def test_a_stale_guess_of_the_direction_currency_does_not_change_the_allocation(
    app_client: httpx.AsyncClient, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    who = await make_client(rt)
    await make_direction(rt, unique_amounts=True, unique_amount_span=5)
    await make_requisites(rt, 1)
    await create_ok(app_client, who, "9999")
    # The amount is parsed in the last currency seen for the method before the direction is read: a
    # wrong one (8 decimals instead of 2) must not make the taken amount look free.
    monkeypatch.setitem(exchange_orders._currency_of, "card", "BTC")

    second = await create_ok(app_client, who, "9999")

    assert (second["wallet_payment"], second["amount_payable"]) == (CARD, "9999.01")
    assert exchange_orders._currency_of["card"] == "RUB"


async def test_simultaneous_checks_of_several_clients_each_see_their_own_orders(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    # On PostgreSQL simultaneous checks are read by one statement: its rows must go back to the right
    # request, and a client never sees another's order nor passes with a wrong secret.
    alice, bob = await make_client(rt, "Alice"), await make_client(rt, "Bob")
    await make_direction(rt, unique_amounts=True)
    await make_requisites(rt, 2)
    mine = {who.api_secret: (await create_ok(app_client, who, "1000"))["order_id"] for who in (alice, bob)}
    both = sorted(mine.values(), key=int)

    async def ask(secret: str, ids: list[str]) -> httpx.Response:
        return await app_client.post(
            "/api/v2/order/check", json={"order_id": ids}, headers={"Api-Secret": secret}
        )

    calls = [(who.api_secret, ids) for who in (alice, bob) for ids in (both, [], both[::-1])] * 5
    calls += [("gg_not_a_client", both)] * 5
    answers = await asyncio.gather(*(ask(secret, ids) for secret, ids in calls))

    for (secret, ids), answer in zip(calls, answers, strict=True):
        if secret not in mine:
            assert (answer.status_code, answer.json()["code"]) == (401, "invalid_api_secret")
            continue
        assert answer.status_code == 200, answer.text
        seen = [o["order_id"] for o in answer.json()["data"]["orders"]]
        assert seen == ([mine[secret]] if ids else [])
