"""Exchange API details real clients meet: what an order shows once it can no longer be paid, batches
with ids that are not numbers, idempotency by meaning, the payout's txid, the TTL without the worker,
and unknown paths."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import update

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.store.models import ExchangeOrder
from greengate.worker.loop import Worker
from tests.conftest import OPERATOR_TOKEN
from tests.e2e.test_exchange_api import (
    CARD,
    TXID,
    an_awaiting_order,
    cancel,
    clean_db,
    complete,
    count_orders,
    expire,
    pay,
)
from tests.support.exchange import (
    WALLET,
    Client,
    check,
    create_order,
    load_order,
    make_client,
    make_direction,
    make_requisites,
)
from tests.support.servers import Receiver

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


# --- Idempotency-Key by meaning ---------------------------------------------------------------

SAME_MEANING = [
    b'{"payment_method":"card","wallet":"%s","from_amount":"9999"}',
    b'{\n  "from_amount": "9999",\n  "wallet": "%s",\n  "payment_method": "card"\n}\n',
    b'  {"wallet" : "%s" , "payment_method" : "\\u0063ard",\t"from_amount" : "9999"}',
]


async def post_create(app_client: httpx.AsyncClient, who: Client, body: bytes, key: str) -> httpx.Response:
    headers = {**who.headers, "Content-Type": "application/json", "Idempotency-Key": key}
    return await app_client.post("/api/v2/order/create", content=body, headers=headers)


async def test_same_idempotency_key_with_the_same_json_written_otherwise_returns_the_first_order(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 3)

    answers = [await post_create(app_client, who, body % WALLET.encode(), "k-1") for body in SAME_MEANING]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[1].content == answers[0].content == answers[2].content
    assert await count_orders(rt) == 1


async def test_same_idempotency_key_with_an_equal_number_written_otherwise_is_the_same_request(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 3)
    body = b'{"payment_method":"card","wallet":"%s","from_amount":%s}'

    first = await post_create(app_client, who, body % (WALLET.encode(), b"9999"), "k-2")
    second = await post_create(app_client, who, body % (WALLET.encode(), b"9999.00"), "k-2")

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.content == first.content
    assert await count_orders(rt) == 1


async def test_same_idempotency_key_with_another_meaning_is_refused(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 3)
    await post_create(app_client, who, SAME_MEANING[0] % WALLET.encode(), "k-3")
    other = b'{"payment_method":"card","wallet":"%s","from_amount":"9998"}' % WALLET.encode()

    response = await post_create(app_client, who, other, "k-3")

    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_mismatch"
    assert await count_orders(rt) == 1


# --- the payout's txid ------------------------------------------------------------------------


async def test_check_of_a_completed_order_carries_the_payout_txid(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    await pay(rt, order["order_id"])
    (payed,) = await check(app_client, who, [order["order_id"]])
    await complete(rt, order["order_id"])

    (found,) = await check(app_client, who, [order["order_id"]])

    assert "txid" not in payed
    assert (found["order_status"], found["txid"]) == ("completed", TXID)


async def test_callbacks_carry_the_txid_once_completed_and_no_requisites_once_closed(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    with Receiver() as receiver:
        who = await make_client(rt, webhook_url=receiver.url)
        await make_direction(rt)
        await make_requisites(rt, 2)
        worker = Worker(rt, name="w-details")
        first = (await create_order(app_client, who, "9999")).json()["items"][0]
        second = (await create_order(app_client, who, "5000")).json()["items"][0]
        completed, canceled = first["order_id"], second["order_id"]
        await pay(rt, completed)
        await complete(rt, completed)
        await cancel(app_client, who, [canceled])
        while await worker.run_once():
            pass
        sent = [r.json()["data"] for r in receiver.requests]

    shown = {(d["order_id"], d["order_status"]): (d["wallet_payment"], d.get("txid")) for d in sent}
    assert shown == {
        (completed, "awaiting"): (first["wallet_payment"], None),
        (completed, "payed"): (first["wallet_payment"], None),
        (completed, "completed"): ("", TXID),
        (canceled, "awaiting"): (second["wallet_payment"], None),
        (canceled, "canceled"): ("", None),
    }
    assert first["wallet_payment"] and second["wallet_payment"]


# --- the TTL with the worker down -------------------------------------------------------------
# No worker runs here: the expiry job stays queued, as it does while every worker is stopped.


async def past_its_time(rt: Runtime, order: dict[str, Any], by: timedelta = timedelta(minutes=1)) -> datetime:
    """Move the order's expiry into the past (as if its TTL had run out `by` ago); the new expiry."""
    expired = utcnow() - by
    async with rt.db.transaction() as session:
        await session.execute(
            update(ExchangeOrder).where(ExchangeOrder.id == int(order["order_id"])).values(expires_at=expired)
        )
    return expired


async def post_transfer(app_client: httpx.AsyncClient, amount: str, **extra: str) -> dict[str, Any]:
    response = await app_client.post(
        "/api/v2/internal/transfers",
        json={"requisite": CARD, "amount": amount, "currency": "RUB", **extra},
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_check_reports_an_order_past_its_time_autocanceled_before_the_sweep(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    await past_its_time(rt, order)

    (found,) = await check(app_client, who, [order["order_id"]])

    assert (found["order_status"], found["wallet_payment"]) == ("autocanceled", "")
    assert (await load_order(rt, order["order_id"])).status == "awaiting"  # the sweep has not run


async def test_payer_page_of_an_order_past_its_time_says_not_to_pay_before_the_sweep(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    _, order = await an_awaiting_order(app_client, rt)
    await past_its_time(rt, order)

    response = await app_client.get(urlsplit(order["fast_link"]).path, params={"lang": "en"})

    assert response.status_code == 200
    assert "The time to pay has run out. Do not transfer money for this order." in response.text
    assert CARD not in response.text.replace(" ", "")
    assert 'id="countdown"' not in response.text


async def test_exact_transfer_after_the_time_ran_out_is_held_as_a_late_payment(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    await past_its_time(rt, order)

    transfer = await post_transfer(app_client, "9999")

    assert (transfer["status"], transfer["order_id"]) == ("review", order["order_id"])
    assert transfer["note"] == "late payment for autocanceled order"
    (found,) = await check(app_client, who, [order["order_id"]])
    assert found["order_status"] == "autocanceled"
    assert (await load_order(rt, order["order_id"])).status == "autocanceled"


async def test_exact_transfer_received_in_time_but_reported_late_pays_the_order(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    expired = await past_its_time(rt, order)
    in_time = (expired - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")

    transfer = await post_transfer(app_client, "9999", received_at=in_time)

    assert transfer["status"] == "matched"
    (found,) = await check(app_client, who, [order["order_id"]])
    assert found["order_status"] == "payed"


async def test_cancel_of_an_order_past_its_time_reports_it_autocanceled(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who, order = await an_awaiting_order(app_client, rt)
    await past_its_time(rt, order)

    data = await cancel(app_client, who, [order["order_id"]])

    assert data == {
        "cancel": [],
        "failed": [
            {
                "order_id": order["order_id"],
                "order_status": "autocanceled",
                "error": "order can no longer be canceled",
            }
        ],
    }


# --- unknown paths under /api/ ----------------------------------------------------------------

ERROR_KEYS = {"response", "result", "error", "code"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v2/nothing"),
        ("POST", "/api/v1/order/check"),
        ("POST", "/api/v3/order/create"),
        ("GET", "/api/"),
        ("GET", "/api"),
        ("PUT", "/api/v2/order/missing/deeper"),
        ("DELETE", "/api/anything"),
    ],
)
async def test_unknown_path_under_api_is_not_found_in_the_error_shape(
    app_client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await app_client.request(method, path, headers={"Content-Type": "application/json"})

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert (body["response"], body["result"], body["code"]) == ("error", "false", "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v2/directions/"),
        ("POST", "/api/v2/order/create/"),
        ("POST", "/api/v2/order/check/"),
        ("POST", "/api/v2/order/cancel/"),
        ("POST", "/api/v2/internal/transfers/"),
    ],
)
async def test_trailing_slash_is_not_found_in_the_error_shape_not_a_redirect(
    app_client: httpx.AsyncClient, rt: Runtime, method: str, path: str
) -> None:
    who = await make_client(rt)

    response = await app_client.request(method, path, json={"order_id": ["1"]}, headers=who.headers)

    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.json()["code"] == "not_found"
    assert "trailing slash" in response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v2/order/create"),
        ("GET", "/api/v2/order/check"),
        ("DELETE", "/api/v2/order/cancel"),
        ("POST", "/api/v2/directions"),
    ],
)
async def test_known_path_with_another_method_is_refused_in_the_error_shape(
    app_client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await app_client.request(method, path)

    assert response.status_code == 405
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["code"] == "method_not_allowed"
