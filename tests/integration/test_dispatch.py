"""The lean dispatch: both APIs' scripts served from one table, everything else left to the framework."""

from __future__ import annotations

import httpx

from greengate.api.dispatch import Answer, Incoming, Scripts, read_body
from greengate.runtime import Runtime
from greengate.store.models import Merchant
from tests.support.merchant_api import make_shop


async def _nothing(rt: Runtime, request: Incoming) -> Answer:
    return Answer(200, b"", b"text/plain")


def test_a_templated_path_gives_its_segment_and_exact_paths_win() -> None:
    scripts = Scripts()
    scripts.add("/v1/merchant/{merchant_id}/cardstorage/list", ["POST"], _nothing)
    scripts.add("/init_payment.php", ["GET", "POST"], _nothing)

    found = scripts.match("/v1/merchant/42/cardstorage/list")
    assert found is not None and found[1] == {"merchant_id": "42"}
    assert found[0].path == "/v1/merchant/{merchant_id}/cardstorage/list"
    assert scripts.match("/v1/merchant//cardstorage/list") is None
    assert scripts.match("/v1/merchant/4/2/cardstorage/list") is None
    assert scripts.match("/init_payment.php/") is None
    exact = scripts.match("/init_payment.php")
    assert exact is not None and exact[1] == {}


async def test_a_body_over_the_limit_is_not_read_to_its_end() -> None:
    pulled = 0

    async def receive() -> dict[str, object]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": pulled < 10_000}

    assert await read_body(receive, 4096) is None
    assert pulled == 5


async def test_order_endpoints_leave_other_methods_and_paths_to_the_app(
    app_client: httpx.AsyncClient,
) -> None:
    # GET on an endpoint path and a neighbouring path are the framework's: 405 and 404 as usual.
    wrong_method = await app_client.get("/api/v2/order/check")
    neighbour = await app_client.post("/api/v2/order/checks", json={})

    assert wrong_method.status_code == 405
    assert (neighbour.status_code, neighbour.json()["code"]) == (404, "not_found")


async def test_scripts_answer_with_access_metrics_and_request_id(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    shop = await make_shop(rt, app_client)
    exchange = await app_client.post("/api/v2/order/check", json={"order_id": ["1"]})
    merchant = await app_client.post(
        f"/v1/merchant/{shop.merchant_id}/cardstorage/list", data={"pg_user_id": "u1"}
    )
    metrics = (await app_client.get("/metrics")).text

    assert (exchange.status_code, exchange.json()["code"]) == (401, "missing_api_secret")
    assert exchange.headers["x-request-id"] and merchant.headers["x-request-id"]
    assert merchant.headers["content-type"] == "text/xml; charset=utf-8"
    assert b"<pg_error_code>" in merchant.content
    assert 'route="/api/v2/order/check",status="401"' in metrics
    assert 'route="/v1/merchant/{merchant_id}/cardstorage/list",status="200"' in metrics


async def test_order_endpoints_refuse_an_oversized_body_before_reading_it(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    big = b"x" * (rt.settings.max_request_bytes + 1)
    response = await app_client.post(
        "/api/v2/order/create",
        content=big,
        headers={"Api-Secret": "gg_x", "Content-Type": "application/json"},
    )
    assert (response.status_code, response.json()["code"]) == (413, "payload_too_large")


async def test_a_merchant_script_under_another_method_answers_in_the_protocols_shape(
    app_client: httpx.AsyncClient,
) -> None:
    response = await app_client.put("/get_status2.php", content=b"pg_merchant_id=1")

    assert response.status_code == 200
    assert b"<pg_error_code>600</pg_error_code>" in response.content


async def test_a_merchant_changed_after_a_call_is_read_afresh(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    shop = await make_shop(rt, app_client)
    payment_id = await shop.init_ok(pg_order_id="A1")
    (await shop.status(payment_id)).assert_ok(shop.secret)

    async with rt.db.transaction() as session:
        merchant = await session.get(Merchant, shop.merchant_id)
        assert merchant is not None
        merchant.active = False
    refused = await shop.call("get_status2.php", {"pg_payment_id": str(payment_id)})

    refused.assert_error(110, shop.secret)
