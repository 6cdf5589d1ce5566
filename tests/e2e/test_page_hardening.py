"""Smaller holes closed: the payer's exchange page and hosted pages' CSP, /metrics behind a token or
on its own address, and full card numbers destroyed when a payment's attempts end."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from greengate.app import create_app
from greengate.clock import utcnow
from greengate.domain.card_rules import validate_card_form
from greengate.runtime import Runtime
from greengate.services import payment_flow
from greengate.store.models import PaymentAttempt
from tests.conftest import make_settings
from tests.support.exchange import create_order, make_client, make_direction, make_requisites
from tests.support.merchant_api import make_shop
from tests.support.processes import Processes

APPROVED = "4405645000006150"
DECLINED = "4916307416334310"  # 3-D Secure that always fails


def csp(response: httpx.Response) -> dict[str, str]:
    directives = [d.strip() for d in response.headers["content-security-policy"].split(";")]
    return {d.split(" ", 1)[0]: d.partition(" ")[2] for d in directives if d}


async def test_the_payers_exchange_page_cannot_be_framed_nor_sniffed(
    rt: Runtime, app_client: httpx.AsyncClient
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)
    order = (await create_order(app_client, who)).json()["items"][0]
    page = await app_client.get(order["fast_link"].replace("http://testserver", ""))

    assert page.status_code == 200
    policy = csp(page)
    assert policy["frame-ancestors"] == "'none'"
    assert policy["default-src"] == "'none'"
    assert policy["form-action"] == "'self'"
    nonce = policy["script-src"].removeprefix("'nonce-").removesuffix("'")
    assert f'<script nonce="{nonce}">' in page.text
    assert page.headers["x-content-type-options"] == "nosniff"


async def test_hosted_payment_pages_limit_where_forms_may_post(
    rt: Runtime, app_client: httpx.AsyncClient
) -> None:
    shop = await make_shop(rt, app_client)
    answer = await shop.init(
        pg_success_url="https://shop.example/thanks?x=1", pg_success_url_method="AUTOPOST"
    )
    url = answer["pg_redirect_url"].replace("http://testserver", "")
    page = await app_client.get(url)
    assert csp(page)["form-action"] == "'self'"

    payment_id = int(answer["pg_payment_id"])
    await pay(rt, payment_id, APPROVED)
    result = await app_client.get(url)
    assert csp(result)["form-action"] == "'self' https://shop.example"


async def pay(rt: Runtime, payment_id: int, number: str) -> str:
    card = validate_card_form(number, "12", "2030", "Test User", "123", date.today())
    async with rt.db.transaction() as session:
        status = (await payment_flow.submit_card(session, rt, payment_id, card, utcnow())).status
    if status == "3ds":
        async with rt.db.transaction() as session:
            status = (await payment_flow.submit_3ds(session, rt, payment_id, "12345678", utcnow())).status
    return status


async def card_numbers(rt: Runtime, payment_id: int) -> list[str | None]:
    async with rt.db.transaction() as session:
        rows = await session.scalars(
            select(PaymentAttempt.card_enc).where(PaymentAttempt.payment_id == payment_id)
        )
        return list(rows)


async def test_a_paid_payment_keeps_no_full_card_number(rt: Runtime, app_client: httpx.AsyncClient) -> None:
    shop = await make_shop(rt, app_client)
    payment_id = await shop.init_ok()
    assert await pay(rt, payment_id, APPROVED) == "ok"
    assert await card_numbers(rt, payment_id) == [None]


async def test_a_failed_payment_keeps_no_full_card_number(rt: Runtime, app_client: httpx.AsyncClient) -> None:
    shop = await make_shop(rt, app_client)
    payment_id = await shop.init_ok()
    assert await pay(rt, payment_id, DECLINED) == "failed"
    assert await card_numbers(rt, payment_id) == [None]


async def test_a_recurring_profile_keeps_the_card_number_it_charges(
    rt: Runtime, app_client: httpx.AsyncClient
) -> None:
    shop = await make_shop(rt, app_client)
    payment_id = await shop.init_ok(pg_recurring_start="1", pg_recurring_lifetime="3")
    assert await pay(rt, payment_id, APPROVED) == "ok"
    kept = await card_numbers(rt, payment_id)
    assert len(kept) == 1 and kept[0] is not None


async def test_metrics_can_require_a_bearer_token(database_url: str, tmp_path: Path, clean_db: None) -> None:
    app = create_app(make_settings(database_url, tmp_path, metrics_token="scrape-me"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            anonymous = await http.get("/metrics")
            wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
            right = await http.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert "greengate_http_requests_total" in right.text


@pytest.fixture
def processes(database_url: str, tmp_path: Path, clean_db: None) -> Iterator[Processes]:
    procs = Processes(database_url, tmp_path)
    yield procs
    procs.close()


def another_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_metrics_can_live_on_their_own_address(processes: Processes, free_port: int) -> None:
    metrics_port = another_free_port()
    env = processes.env(metrics_address=f"127.0.0.1:{metrics_port}")
    server = await asyncio.to_thread(processes.serve, free_port, env=env)
    async with httpx.AsyncClient(timeout=10) as client:
        await client.get(f"http://127.0.0.1:{free_port}/healthz")
        public = await client.get(f"http://127.0.0.1:{free_port}/metrics")
        private = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert public.status_code == 404
    assert private.status_code == 200
    assert 'greengate_http_requests_total{method="GET",route="/healthz",status="200"}' in private.text
    await asyncio.to_thread(server.terminate, 20.0)
