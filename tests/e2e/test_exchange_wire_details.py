"""Exchange API details real clients meet: what an order shows once it can no longer be paid, batches
with ids that are not numbers, idempotency by meaning, the payout's txid, the TTL without the worker,
and unknown paths."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.worker.loop import Worker
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
