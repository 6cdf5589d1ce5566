from __future__ import annotations

import httpx

from greengate.runtime import Runtime
from tests.support.exchange import WALLET, check, create_order, make_client, make_direction, make_requisites


async def test_create_assigns_requisite_and_prices_by_spec(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)

    response = await create_order(app_client, who, "9999")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response"] == "success"
    order = body["items"][0]
    assert order["order_status"] == "awaiting"
    assert order["amount_receivable"] == "0.00256657"
    assert order["exchange_rate"] == "3233561.44"
    assert order["wallet_payment"] == "2200700100000000"
    assert order["clients_wallet"] == WALLET
    assert (await check(app_client, who, [order["order_id"]]))[0] == order
