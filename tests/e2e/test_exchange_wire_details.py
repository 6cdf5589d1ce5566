"""Exchange API details real clients meet: what an order shows once it can no longer be paid, batches
with ids that are not numbers, idempotency by meaning, the payout's txid, the TTL without the worker,
and unknown paths."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from greengate.clock import utcnow
from greengate.runtime import Runtime
from tests.e2e.test_exchange_api import (
    CARD,
    an_awaiting_order,
    cancel,
    clean_db,
    complete,
    expire,
    pay,
)
from tests.support.exchange import check

__all__ = ["clean_db"]  # the faster cleanup of the exchange tests


# --- wallet_payment ---------------------------------------------------------------------------


async def test_check_shows_no_requisites_for_a_canceled_order(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    await cancel(app_client, who, [order["order_id"]])

    (found,) = await check(app_client, who, [order["order_id"]])

    assert (found["order_status"], found["wallet_payment"]) == ("canceled", "")


async def test_check_shows_no_requisites_for_an_autocanceled_order(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    assert await expire(rt, order["order_id"], utcnow() + timedelta(hours=1))

    (found,) = await check(app_client, who, [order["order_id"]])

    assert (found["order_status"], found["wallet_payment"]) == ("autocanceled", "")


async def test_check_shows_no_requisites_for_a_completed_order(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    await pay(rt, order["order_id"])
    await complete(rt, order["order_id"])

    (found,) = await check(app_client, who, [order["order_id"]])

    assert (found["order_status"], found["wallet_payment"]) == ("completed", "")


async def test_check_keeps_the_requisites_of_a_payed_order(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    await pay(rt, order["order_id"])

    (found,) = await check(app_client, who, [order["order_id"]])

    assert (found["order_status"], found["wallet_payment"]) == ("payed", CARD)


# --- ids that are not numbers -----------------------------------------------------------------

NOT_NUMBERS: list[Any] = ["abc", "12a", "", "-1", -1, 1.5, True, None, {"id": "1"}, ["1"], "１２", "9" * 19]


async def test_check_leaves_out_ids_that_are_not_numbers_and_answers_the_others(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)

    response = await app_client.post(
        "/api/v2/order/check", json={"order_id": [*NOT_NUMBERS, order["order_id"]]}, headers=who.headers
    )

    assert response.status_code == 200, response.text
    assert [o["order_id"] for o in response.json()["data"]["orders"]] == [order["order_id"]]


async def test_check_of_a_single_id_that_is_not_a_number_finds_nothing(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, _ = await an_awaiting_order(app_client, rt)

    response = await app_client.post("/api/v2/order/check", json={"order_id": "abc"}, headers=who.headers)

    assert (response.status_code, response.json()) == (200, {"result": "true", "data": {"orders": []}})


async def test_cancel_lists_ids_that_are_not_numbers_as_failed_and_cancels_the_others(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)

    data = await cancel(app_client, who, [order["order_id"], "abc", 1.5, {"id": "1"}])

    assert data["cancel"] == [{"order_id": order["order_id"], "order_status": "canceled"}]
    assert data["failed"] == [
        {"order_id": given, "order_status": "", "error": "order not found"}
        for given in ("abc", "1.5", '{"id":"1"}')
    ]
