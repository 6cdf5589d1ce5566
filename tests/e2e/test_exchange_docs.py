"""docs/exchange-api/ shows what the server answers: every error example is one the server gives, and
every order, cancel and transfer example has the fields and values the server writes."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.store.models import ExchangeOrder
from tests.conftest import OPERATOR_TOKEN
from tests.e2e.test_exchange_api import complete, pay
from tests.support.exchange import WALLET, make_client, make_direction, make_requisites

DOCS = Path(__file__).resolve().parents[2] / "docs" / "exchange-api"
ORDER = {"payment_method": "card", "wallet": WALLET, "from_amount": "9999"}


def documented() -> list[tuple[str, Any]]:
    """Every JSON example of the pages, with the page it is on."""
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for block in re.findall(r"```json\n(.*?)```", page.read_text(), flags=re.S):
            found.append((page.name, json.loads(block)))
    return found


async def tour_of_answers(app_client: httpx.AsyncClient, rt: Runtime) -> list[Any]:
    """What the server answers to the requests the pages show, in their order."""
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 2)
    answers: list[httpx.Response] = []
    post = app_client.post
    auth, json_type = who.headers, {"Content-Type": "application/json"}
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    keyed = {**auth, "Idempotency-Key": "order-42"}
    first = await post("/api/v2/order/create", json=ORDER, headers=keyed)
    answers.append(first)
    answers.append(await post("/api/v2/order/create", json={**ORDER, "from_amount": "5000"}, headers=keyed))
    for changed in (
        {"from_amount": "100"},
        {"wallet": "bc1qnotanaddress"},
        {"payment_method": "sbp"},
        {"from_amount": "10.123"},
    ):
        answers.append(await post("/api/v2/order/create", json={**ORDER, **changed}, headers=auth))
    bodies = [b'{"payment_method":', b'{"payment_method":"card","wallet":"x","from_amount":1e3}']
    for body in bodies:
        answers.append(await post("/api/v2/order/create", content=body, headers={**auth, **json_type}))
    answers.append(await post("/api/v2/order/create", content=b"a=1", headers=auth))
    answers.append(await post("/api/v2/order/create", json=ORDER))
    answers.append(await post("/api/v2/order/create", json=ORDER, headers={"Api-Secret": "gg_wrong"}))
    second = await post("/api/v2/order/create", json={**ORDER, "from_amount": "5000"}, headers=auth)
    third = await post("/api/v2/order/create", json={**ORDER, "from_amount": "7000"}, headers=auth)
    answers += [second, third]
    ids = [r.json()["items"][0]["order_id"] for r in (first, second, third)]
    answers.append(await post("/api/v2/order/check", json={"order_id": [ids[0], "abc", "999"]}, headers=auth))
    await pay(rt, ids[0])
    cancel = {"order_id": [ids[0], ids[1], "999", "abc"]}
    answers.append(await post("/api/v2/order/cancel", json=cancel, headers=auth))
    await complete(rt, ids[0])
    answers.append(await post("/api/v2/order/check", json={"order_id": ids[:2]}, headers=auth))
    async with rt.db.transaction() as session:
        past = utcnow() - timedelta(minutes=1)
        await session.execute(
            update(ExchangeOrder).where(ExchangeOrder.id == int(ids[2])).values(expires_at=past)
        )
    answers.append(await post("/api/v2/order/check", json={"order_id": ids[2]}, headers=auth))
    transfer = {"requisite": third.json()["items"][0]["wallet_payment"], "amount": "7000", "currency": "RUB"}
    answers.append(await post("/api/v2/internal/transfers", json=transfer, headers=operator))
    fourth = await post("/api/v2/order/create", json={**ORDER, "from_amount": "8000"}, headers=auth)
    paid = {"requisite": fourth.json()["items"][0]["wallet_payment"], "amount": "8000", "currency": "RUB"}
    answers.append(await post("/api/v2/internal/transfers", json=paid, headers=operator))
    answers.append(
        await post("/api/v2/internal/transfers", json={**paid, "amount": "1234.50"}, headers=operator)
    )
    answers.append(
        await post("/api/v2/internal/transfers", json=paid, headers={"Authorization": "Bearer no"})
    )
    many = {"order_id": [str(i) for i in range(501)]}
    answers.append(await post("/api/v2/order/check", json=many, headers=auth))
    answers.append(await post("/api/v2/order/check", json={}, headers=auth))
    answers.append(await app_client.get("/api/v1/order/check"))
    answers.append(await post("/api/v2/order/check/", json={"order_id": ["1"]}, headers=auth))
    answers.append(await app_client.get("/api/v2/order/check", headers=auth))
    answers.append(await app_client.get("/api/v2/directions"))
    answers.append(await app_client.get("/api/v2/directions", headers=auth))
    return [r.json() for r in answers]


def orders_in(answer: Any) -> list[dict[str, Any]]:
    if isinstance(answer, dict) and "items" in answer:
        return list(answer["items"])
    if isinstance(answer, dict) and "orders" in answer.get("data", {}):
        return list(answer["data"]["orders"])
    if isinstance(answer, dict) and answer.get("type") == "order.status_changed":
        return [answer["data"]]
    return []


def stable_values(order: dict[str, Any]) -> tuple[Any, ...]:
    """What an order example must show as the server does: everything but ids, times and tokens (and
    whether a card to pay to is shown, not which one)."""
    changing = {"order_id", "created_at", "updated_at", "expires_at", "fast_link", "wallet_payment", "txid"}
    return (*((k, v) for k, v in order.items() if k not in changing), bool(order.get("wallet_payment")))


async def test_every_example_of_the_exchange_api_pages_is_what_the_server_answers(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    answers = await tour_of_answers(app_client, rt)
    errors = {
        (a["error"], a["code"]) for a in answers if isinstance(a, dict) and a.get("response") == "error"
    }
    order_shapes = {(o["order_status"], tuple(o)) for a in answers for o in orders_in(a)}
    order_values = {stable_values(o) for a in answers for o in orders_in(a)}
    cancels = [a["data"] for a in answers if isinstance(a, dict) and "cancel" in a.get("data", {})]
    transfers = {(a["status"], a["note"]) for a in answers if isinstance(a, dict) and "transfer_id" in a}
    directions = next(a for a in answers if isinstance(a, list))

    examples = documented()
    assert len(examples) > 20
    for page, example in examples:
        if isinstance(example, dict) and example.get("response") == "error":
            assert (example["error"], example["code"]) in errors, (page, example)
        elif isinstance(example, dict) and "transfer_id" in example:
            assert (example["status"], example["note"]) in transfers, (page, example)
        elif isinstance(example, dict) and "cancel" in example.get("data", {}):
            assert example["data"] in cancels, (page, example)
        elif isinstance(example, dict) and "payment_method" in example:
            assert set(example) == set(ORDER), page  # a create request
        elif isinstance(example, list):
            assert set(example[0]) == set(directions[0]), page
            # the card direction the tour makes is the page's first, value for value
            assert {**example[0], "id": directions[0]["id"]} == directions[0], page
        else:
            shown = orders_in(example)
            assert shown, (page, example)
            for order in shown:
                assert (order["order_status"], tuple(order)) in order_shapes, (page, order)
                assert stable_values(order) in order_values, (page, order)
