"""Request limits and failed-authentication throttles, counted in the database: per Exchange API
client (429 + Retry-After), per address for wrong Api-Secret, pg_sig and console passwords, and a
console lockout per (account, address) that an outsider cannot turn against a real admin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from defusedxml import ElementTree
from sqlalchemy import select, update

from greengate.app import create_app
from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.store.models import AuditEvent, Merchant, ThrottleCounter
from greengate.worker.loop import Worker
from tests.conftest import make_settings
from tests.support.console import ConsoleClient, make_admin
from tests.support.exchange import make_client
from tests.support.merchant_api import make_shop, send

LIMITS = {"exchange_requests_per_minute": 1000, "auth_failures_per_address": 3}


@asynccontextmanager
async def gateway(
    database_url: str, tmp_path: Path, address: str = "203.0.113.7", **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway process's app, reached from `address`."""
    app = create_app(make_settings(database_url, tmp_path, **{**LIMITS, **overrides}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def runtime(client: httpx.AsyncClient) -> Runtime:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return rt


async def audit_actions(rt: Runtime) -> list[str]:
    async with rt.db.transaction() as session:
        return list(await session.scalars(select(AuditEvent.action)))


async def test_a_client_past_its_own_limit_gets_429_with_retry_after_on_every_worker(
    database_url: str, tmp_path: Path, clean_db: None
) -> None:
    # Two apps on one database stand for two worker processes (or two nodes on PostgreSQL).
    async with gateway(database_url, tmp_path) as one, gateway(database_url, tmp_path) as two:
        busy = await make_client(runtime(one), "Busy")
        calm = await make_client(runtime(one), "Calm")
        async with runtime(one).db.transaction() as session:
            await session.execute(
                update(Merchant).where(Merchant.id == busy.merchant_id).values(exchange_requests_per_minute=4)
            )
        statuses = []
        for worker in (one, two, one, two, one, two):
            statuses.append((await worker.get("/api/v2/directions", headers=busy.headers)).status_code)
        refused = await two.get("/api/v2/directions", headers=busy.headers)
        other = await one.get("/api/v2/directions", headers=calm.headers)
        actions = await audit_actions(runtime(one))
    assert statuses == [200, 200, 200, 200, 429, 429]
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert other.status_code == 200
    assert actions.count("throttle.engaged") == 1


async def test_wrong_api_secrets_from_an_address_are_throttled_before_authentication(
    database_url: str, tmp_path: Path, clean_db: None
) -> None:
    async with (
        gateway(database_url, tmp_path) as guesser,
        gateway(database_url, tmp_path, "198.51.100.2") as other,
    ):
        client = await make_client(runtime(guesser))
        guesses = [
            (await guesser.get("/api/v2/directions", headers={"Api-Secret": f"guess-{n}"})).status_code
            for n in range(3)
        ]
        # Even the right secret is refused from that address for the rest of the window...
        refused = await guesser.post("/api/v2/order/check", headers=client.headers, json={"order_id": ["1"]})
        # ...while the client from its own address is served.
        served = await other.get("/api/v2/directions", headers=client.headers)
        actions = await audit_actions(runtime(guesser))
        metrics = (await guesser.get("/metrics")).text
    assert guesses == [401, 401, 401]
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert served.status_code == 200
    assert "throttle.engaged" in actions
    assert 'greengate_throttles_engaged_total{scope="auth_fail_exchange"}' in metrics


async def test_wrong_pg_sig_from_an_address_is_throttled_in_xml(
    database_url: str, tmp_path: Path, clean_db: None
) -> None:
    async with gateway(database_url, tmp_path) as http:
        shop = await make_shop(runtime(http), http)
        message = [
            (n, "0" * 32 if n == "pg_sig" else v)
            for n, v in shop.message("init_payment.php", {"pg_amount": "100", "pg_description": "x"})
        ]
        codes = []
        for _ in range(3):
            answer = await send(http, "/init_payment.php", message)
            codes.append(
                (answer.status_code, ElementTree.fromstring(answer.content).findtext("pg_error_code"))
            )
        good = shop.message("init_payment.php", {"pg_amount": "100", "pg_description": "x"})
        refused = await send(http, "/init_payment.php", good)
    assert codes == [(200, "100")] * 3
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    root = ElementTree.fromstring(refused.content)
    assert root.findtext("pg_status") == "error"
    assert "too many failed signatures" in (root.findtext("pg_error_description") or "")


async def test_an_outsider_cannot_lock_a_real_admin_out_of_the_console(
    database_url: str, tmp_path: Path, clean_db: None
) -> None:
    async with (
        gateway(database_url, tmp_path, auth_failures_per_address=100) as outsider_http,
        gateway(database_url, tmp_path, "192.0.2.10") as admin_http,
    ):
        await make_admin(runtime(outsider_http), "boss@example.com")
        outsider = ConsoleClient(outsider_http)
        answers = [
            (await outsider.login("boss@example.com", "not the password")).status_code for _ in range(5)
        ]
        still_locked = await outsider.login("boss@example.com")
        admin = await ConsoleClient(admin_http).login("boss@example.com")
        actions = await audit_actions(runtime(admin_http))
    assert answers == [401, 401, 401, 401, 423]
    assert still_locked.status_code == 423
    assert admin.status_code == 303
    assert "admin.locked" in actions


async def test_wrong_console_passwords_from_an_address_are_throttled_across_accounts(
    database_url: str, tmp_path: Path, clean_db: None
) -> None:
    async with gateway(database_url, tmp_path) as http:
        for n in range(3):
            await make_admin(runtime(http), f"user{n}@example.com")
        console = ConsoleClient(http)
        answers = [(await console.login(f"user{n}@example.com", "wrong guess")).status_code for n in range(3)]
        refused = await console.login("user0@example.com")
    assert answers == [401, 401, 401]
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "Too many failed sign-ins" in refused.text


@pytest.mark.parametrize("limit", [0])
async def test_a_zero_limit_means_no_limit(
    database_url: str, tmp_path: Path, clean_db: None, limit: int
) -> None:
    async with gateway(database_url, tmp_path, exchange_requests_per_minute=limit) as http:
        client = await make_client(runtime(http))
        statuses = {
            (await http.get("/api/v2/directions", headers=client.headers)).status_code for _ in range(20)
        }
    assert statuses == {200}


async def test_the_worker_forgets_windows_long_past(
    database_url: str, tmp_path: Path, clean_db: None
) -> None:
    async with gateway(database_url, tmp_path) as http:
        rt = runtime(http)
        now = int(utcnow().timestamp())
        async with rt.db.transaction() as session:
            for subject, start in (("old", now - 90_000), ("new", now - 60)):
                session.add(
                    ThrottleCounter(scope="auth_fail_exchange", subject=subject, window_start=start, hits=1)
                )
        await Worker(rt).housekeeping()
        async with rt.db.transaction() as session:
            left = list(await session.scalars(select(ThrottleCounter.subject)))
    assert left == ["new"]


async def test_a_client_requests_counted_in_a_process_reach_the_database_by_its_shutdown(
    database_url: str, tmp_path: Path, clean_db: None
) -> None:
    async with gateway(database_url, tmp_path) as http:
        client = await make_client(runtime(http))
        statuses = {
            (await http.get("/api/v2/directions", headers=client.headers)).status_code for _ in range(30)
        }
    async with gateway(database_url, tmp_path) as http:
        async with runtime(http).db.transaction() as session:
            hits = list(await session.scalars(select(ThrottleCounter.hits)))
    assert statuses == {200}
    assert sum(hits) == 30
