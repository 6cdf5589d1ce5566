"""Exchange API details real clients meet: what an order shows once it can no longer be paid, batches
with ids that are not numbers, idempotency by meaning, the payout's txid, the TTL without the worker,
and unknown paths."""

from __future__ import annotations

from datetime import timedelta

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
