"""Incoming transfers to requisites (POST /api/v2/internal/transfers) and how they reach orders."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from greengate.clock import utcnow
from greengate.domain.errors import BusinessRuleViolation
from greengate.runtime import Runtime
from greengate.services.exchange_orders import expire_order
from greengate.services.transfers import match_transfer
from greengate.store.models import IncomingTransfer, OrderEvent
from tests.conftest import OPERATOR_TOKEN
from tests.support.exchange import (
    Client,
    check,
    create_order,
    empty_tables,
    load_order,
    make_client,
    make_direction,
    make_requisites,
)

CARD = "2200700100000000"
UNKNOWN_CARD = "4276380012345678"
TRANSFERS = "/api/v2/internal/transfers"


@pytest.fixture
async def clean_db(database_url: str) -> None:
    """The suite's cleanup, done with DELETE instead of TRUNCATE (much faster on PostgreSQL)."""
    await empty_tables(database_url)


async def post_transfer(
    app_client: httpx.AsyncClient,
    amount: str,
    *,
    requisite: str = CARD,
    currency: str = "RUB",
    external_id: str | None = None,
    token: str | None = OPERATOR_TOKEN,
) -> httpx.Response:
    data: dict[str, Any] = {"requisite": requisite, "amount": amount, "currency": currency}
    if external_id is not None:
        data["external_id"] = external_id
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return await app_client.post(TRANSFERS, json=data, headers=headers)


async def transfer_ok(app_client: httpx.AsyncClient, amount: str, **kw: Any) -> dict[str, Any]:
    response = await post_transfer(app_client, amount, **kw)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def create_ok(app_client: httpx.AsyncClient, who: Client, amount: str) -> dict[str, Any]:
    response = await create_order(app_client, who, amount)
    assert response.status_code == 200, response.text
    order: dict[str, Any] = response.json()["items"][0]
    return order


async def seen(app_client: httpx.AsyncClient, who: Client, order: dict[str, Any]) -> dict[str, Any]:
    (current,) = await check(app_client, who, [order["order_id"]])
    return current


async def count(rt: Runtime, *where: Any, model: Any = IncomingTransfer) -> int:
    async with rt.db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def awaiting(
    app_client: httpx.AsyncClient, rt: Runtime, *amounts: str, **direction: Any
) -> tuple[Client, list[dict[str, Any]]]:
    """A client with one awaiting order per amount, all on the one card requisite."""
    who = await make_client(rt)
    await make_direction(rt, **direction)
    await make_requisites(rt, 1)
    orders = [await create_ok(app_client, who, amount) for amount in amounts]
    assert [(o["order_status"], o["wallet_payment"]) for o in orders] == [("awaiting", CARD)] * len(amounts)
    return who, orders


async def test_exact_transfer_pays_the_order_and_is_matched(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, (order,) = await awaiting(app_client, rt, "9999")

    body = await transfer_ok(app_client, "9999", external_id="bank-1")

    assert body["status"] == "matched"
    assert body["order_id"] == order["order_id"]
    assert isinstance(body["transfer_id"], int)
    assert (await seen(app_client, who, order))["order_status"] == "payed"


async def test_exact_transfer_records_the_paid_amount_and_keeps_the_receivable(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, (order,) = await awaiting(app_client, rt, "9999")

    await transfer_ok(app_client, "9999")

    assert (await seen(app_client, who, order))["amount_receivable"] == "0.00256657"
    assert (await load_order(rt, order["order_id"])).paid_amount == 999900


async def test_same_external_id_twice_is_one_transfer_and_pays_once(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, (order,) = await awaiting(app_client, rt, "9999")
    first = await transfer_ok(app_client, "9999", external_id="bank-42")

    second = await transfer_ok(app_client, "9999", external_id="bank-42")

    assert second == first
    assert await count(rt) == 1
    assert await count(rt, OrderEvent.to_status == "payed", model=OrderEvent) == 1
    assert (await seen(app_client, who, order))["order_status"] == "payed"


async def test_transfers_without_external_id_are_each_recorded(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    await awaiting(app_client, rt, "9999")
    first = await transfer_ok(app_client, "9999")

    second = await transfer_ok(app_client, "9999")

    assert (first["status"], second["status"]) == ("matched", "unmatched")
    assert second["transfer_id"] != first["transfer_id"]
    assert await count(rt) == 2
    assert await count(rt, OrderEvent.to_status == "payed", model=OrderEvent) == 1


async def test_transfer_to_unknown_requisite_is_unmatched(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who, (order,) = await awaiting(app_client, rt, "9999")

    body = await transfer_ok(app_client, "9999", requisite=UNKNOWN_CARD)

    assert (body["status"], body["order_id"]) == ("unmatched", None)
    assert await count(rt, IncomingTransfer.status == "unmatched") == 1
    assert (await seen(app_client, who, order))["order_status"] == "awaiting"


async def test_transfer_to_requisite_without_open_orders_is_unmatched(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    await make_direction(rt)
    await make_requisites(rt, 1)

    body = await transfer_ok(app_client, "9999")

    assert (body["status"], body["order_id"]) == ("unmatched", None)


async def test_amount_matching_none_of_several_open_orders_is_unmatched(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, orders = await awaiting(app_client, rt, "9999", "5000")

    body = await transfer_ok(app_client, "7000")

    assert (body["status"], body["order_id"]) == ("unmatched", None)
    assert [(await seen(app_client, who, o))["order_status"] for o in orders] == ["awaiting", "awaiting"]


async def test_other_amount_for_the_only_open_order_is_held_for_review(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, (order,) = await awaiting(app_client, rt, "9999")

    body = await transfer_ok(app_client, "7000")

    assert (body["status"], body["order_id"]) == ("review", order["order_id"])
    assert (await seen(app_client, who, order))["order_status"] == "awaiting"


async def test_transfer_in_another_currency_does_not_pay_the_order(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, (order,) = await awaiting(app_client, rt, "9999")

    body = await transfer_ok(app_client, "9999", currency="KZT")

    assert body["status"] == "unmatched"
    assert (await seen(app_client, who, order))["order_status"] == "awaiting"


async def test_transfer_of_a_unique_amount_pays_exactly_that_order(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, orders = await awaiting(
        app_client, rt, "9999", "9999", "9999", unique_amounts=True, unique_amount_span=5
    )
    assert [o["amount_payable"] for o in orders] == ["9999", "9999.01", "9999.02"]

    body = await transfer_ok(app_client, "9999.01")

    assert (body["status"], body["order_id"]) == ("matched", orders[1]["order_id"])
    assert [(await seen(app_client, who, o))["order_status"] for o in orders] == [
        "awaiting",
        "payed",
        "awaiting",
    ]


async def test_underpayment_within_tolerance_is_matched_and_repriced(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, (order,) = await awaiting(app_client, rt, "9999", underpay_tolerance_percent="1")

    body = await transfer_ok(app_client, "9950")

    assert (body["status"], body["order_id"]) == ("matched", order["order_id"])
    current = await seen(app_client, who, order)
    assert (current["order_status"], current["amount_receivable"]) == ("payed", "0.00255399")
    assert (await load_order(rt, order["order_id"])).paid_amount == 995000


async def test_underpayment_of_exactly_the_tolerance_is_matched(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, (order,) = await awaiting(app_client, rt, "9999", underpay_tolerance_percent="1")

    body = await transfer_ok(app_client, "9899.01")

    assert body["status"] == "matched"
    assert (await seen(app_client, who, order))["order_status"] == "payed"


async def test_underpayment_outside_tolerance_is_held_for_review_and_order_stays_awaiting(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, (order,) = await awaiting(app_client, rt, "9999", underpay_tolerance_percent="1")

    body = await transfer_ok(app_client, "9899")

    assert (body["status"], body["order_id"]) == ("review", order["order_id"])
    current = await seen(app_client, who, order)
    assert (current["order_status"], current["amount_receivable"]) == ("awaiting", "0.00256657")
    assert (await load_order(rt, order["order_id"])).paid_amount is None


async def test_overpayment_is_held_for_review_even_with_a_tolerance(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, (order,) = await awaiting(app_client, rt, "9999", underpay_tolerance_percent="1")

    body = await transfer_ok(app_client, "10000")

    assert (body["status"], body["order_id"]) == ("review", order["order_id"])
    assert (await seen(app_client, who, order))["order_status"] == "awaiting"


async def test_late_payment_for_autocanceled_order_is_held_for_review_with_that_order(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, (order,) = await awaiting(app_client, rt, "9999")
    row = await load_order(rt, order["order_id"])
    async with rt.db.transaction() as session:
        assert await expire_order(session, rt, row.id, row.expires_at + timedelta(seconds=1))

    body = await transfer_ok(app_client, "9999")

    assert (body["status"], body["order_id"]) == ("review", order["order_id"])
    assert "autocanceled" in body["note"]
    assert (await seen(app_client, who, order))["order_status"] == "autocanceled"


async def test_late_payment_names_the_closed_order_even_when_another_order_is_open(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, (late,) = await awaiting(app_client, rt, "9999")
    row = await load_order(rt, late["order_id"])
    async with rt.db.transaction() as session:
        assert await expire_order(session, rt, row.id, row.expires_at + timedelta(seconds=1))
    other = await create_ok(app_client, who, "5000")
    assert (other["order_status"], other["wallet_payment"]) == ("awaiting", CARD)

    body = await transfer_ok(app_client, "9999")

    assert (body["status"], body["order_id"]) == ("review", late["order_id"])
    assert "autocanceled" in body["note"]
    assert (await seen(app_client, who, other))["order_status"] == "awaiting"


async def test_late_payment_for_canceled_order_is_held_for_review_with_that_order(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, (order,) = await awaiting(app_client, rt, "9999")
    canceled = await app_client.post(
        "/api/v2/order/cancel", json={"order_id": order["order_id"]}, headers=who.headers
    )
    assert canceled.status_code == 200

    body = await transfer_ok(app_client, "9999")

    assert (body["status"], body["order_id"]) == ("review", order["order_id"])
    assert (await seen(app_client, who, order))["order_status"] == "canceled"


async def test_paid_order_frees_its_requisite_for_a_waiting_order(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, _ = await awaiting(app_client, rt, "9999")
    waiting = await create_ok(app_client, who, "9999")
    assert waiting["order_status"] == "unconfirmed"

    await transfer_ok(app_client, "9999")

    current = await seen(app_client, who, waiting)
    assert (current["order_status"], current["wallet_payment"]) == ("awaiting", CARD)


@pytest.mark.parametrize("token", [None, "", "wrong-token"], ids=["missing", "empty", "wrong"])
async def test_transfer_without_the_operator_token_is_refused_and_not_recorded(
    app_client: httpx.AsyncClient, rt: Runtime, token: str | None
) -> None:
    who, (order,) = await awaiting(app_client, rt, "9999")

    response = await post_transfer(app_client, "9999", token=token)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_operator_token"
    assert await count(rt) == 0
    assert (await seen(app_client, who, order))["order_status"] == "awaiting"


async def test_api_secret_is_not_accepted_as_operator_token(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, _ = await awaiting(app_client, rt, "9999")

    response = await app_client.post(
        TRANSFERS, json={"requisite": CARD, "amount": "9999", "currency": "RUB"}, headers=who.headers
    )

    assert response.status_code == 401
    assert await count(rt) == 0


async def test_operator_matches_an_unmatched_transfer_to_an_order(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, (target, other) = await awaiting(app_client, rt, "9999", "5000")
    unmatched = await transfer_ok(app_client, "7000")
    assert unmatched["status"] == "unmatched"

    async with rt.db.transaction() as session:
        row = await match_transfer(
            session, rt, unmatched["transfer_id"], int(target["order_id"]), utcnow(), "operator:test"
        )
        matched = (row.status, row.order_id)

    assert matched == ("matched", int(target["order_id"]))
    current = await seen(app_client, who, target)
    assert (current["order_status"], current["amount_receivable"]) == ("payed", "0.00179678")
    assert (await seen(app_client, who, other))["order_status"] == "awaiting"


async def test_operator_cannot_match_a_transfer_twice(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    who, (_, other) = await awaiting(app_client, rt, "9999", "5000")
    matched = await transfer_ok(app_client, "9999")
    assert matched["status"] == "matched"

    with pytest.raises(BusinessRuleViolation):
        async with rt.db.transaction() as session:
            await match_transfer(session, rt, matched["transfer_id"], int(other["order_id"]), utcnow(), "op")

    assert (await seen(app_client, who, other))["order_status"] == "awaiting"
