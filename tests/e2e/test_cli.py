"""The `greengate` console script run as an operator would, against the test database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.services.exchange_orders import confirm_paid
from greengate.store.models import AuditEvent, ExchangeOrder
from tests.support.exchange import Client, check, create_order, make_client, make_direction, make_requisites
from tests.support.processes import greengate_env

SCRIPT = Path(sys.executable).parent / "greengate"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "greengate.cli"]
CREATE_DIRECTION = [
    *("direction", "create", "--payment-method", "card", "--currency", "RUB"),
    *("--min", "300", "--max", "150000000", "--commission", "17", "--ttl", "30"),
]
TXID = "0e3e2357e806b6cdb1f70b54c3a3a17b6714ee1f0e68bebb44a74b1efd512098"


class Cli:
    def __init__(self, database_url: str, workdir: Path) -> None:
        self.env = greengate_env(database_url)
        self.workdir = workdir

    async def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [*COMMAND, *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )

    async def ok(self, *args: str) -> str:
        result = await self.run(*args)
        assert result.returncode == 0, f"greengate {' '.join(args)}: {result.stdout}{result.stderr}"
        return result.stdout

    async def json(self, *args: str) -> Any:
        return json.loads(await self.ok(*args, "--json"))

    async def fails(self, *args: str) -> str:
        result = await self.run(*args)
        assert result.returncode == 1, f"greengate {' '.join(args)}: {result.stdout}{result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        return result.stderr


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    return Cli(database_url, tmp_path)


async def test_migrate_is_idempotent(cli: Cli, app_client: httpx.AsyncClient) -> None:
    assert "migrations applied" in await cli.ok("migrate")
    assert "migrations applied" in await cli.ok("migrate")
    ready = await app_client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"


async def test_operator_sets_up_a_client_and_drives_an_order(
    cli: Cli, app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    creds, direction, first = await asyncio.gather(
        cli.json("merchant", "create", "--name", "Exchange office X"),
        cli.json(*CREATE_DIRECTION),
        cli.json("requisite", "add", "--payment-method", "card", "--number", "2200 7001 2345 6789"),
    )
    (second,) = await make_requisites(rt, 1)  # 2200700100000000, after the first in allocation order
    assert set(creds) >= {"merchant_id", "secret_key", "api_secret", "webhook_secret"}
    assert isinstance(creds["merchant_id"], int) and creds["api_secret"]
    who = Client(creds["merchant_id"], creds["api_secret"], creds["webhook_secret"])
    wrong = await app_client.get("/api/v2/directions", headers={"Api-Secret": creds["api_secret"] + "x"})
    assert wrong.status_code == 401
    assert direction["payment_method"] == "card" and direction["status"] == 1
    assert (direction["comission_percent"], direction["min_amount"], direction["order_ttl"]) == (
        "17",
        "300",
        30,
    )
    assert first["active"] and first["number"] != "2200700123456789"  # shown masked

    listed, updated, disabled = await asyncio.gather(
        cli.json("direction", "list"),
        cli.json("direction", "update", str(direction["id"]), "--commission", "17.9", "--max", "5000"),
        cli.ok("requisite", "disable", str(first["id"])),
    )
    assert [d["id"] for d in listed] == [direction["id"]]
    assert (updated["comission_percent"], updated["max_amount"], updated["status"]) == ("17.9", "5000", 1)
    assert f"requisite {first['id']} disabled" in disabled
    directions = await app_client.get("/api/v2/directions", headers=who.headers)
    assert directions.status_code == 200, directions.text
    (wire,) = directions.json()
    assert (wire["id"], wire["max_amount"], wire["comission_percent"]) == (direction["id"], 5000, 17.9)

    requisites, response = await asyncio.gather(
        cli.json("requisite", "list"), create_order(app_client, who, "1000")
    )
    listed_requisites = {r["id"]: r["active"] for r in requisites}
    assert listed_requisites == {second: True, first["id"]: False}
    assert response.status_code == 200, response.text
    order = response.json()["items"][0]
    assert order["wallet_payment"] == "2200700100000000"  # the disabled card is never handed out
    order_id = order["order_id"]

    assert f"order {order_id}: payed" in await cli.ok("order", "confirm-paid", order_id)
    assert (await check(app_client, who, [order_id]))[0]["order_status"] == "payed"
    assert f"order {order_id}: completed" in await cli.ok("order", "complete", order_id, "--txid", TXID)
    assert (await check(app_client, who, [order_id]))[0]["order_status"] == "completed"
    async with rt.db.transaction() as session:
        row = await session.get(ExchangeOrder, int(order_id))
        actions = list(await session.scalars(select(AuditEvent.action)))
    assert row is not None and row.txid == TXID and row.paid_amount == 100000
    assert {"merchant.create", "requisite.add", "requisite.disable", "direction.update"} <= set(actions)


async def test_domain_errors_exit_1_with_a_readable_message(
    cli: Cli, app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 2)
    payed, awaiting = [(await create_order(app_client, who)).json()["items"][0]["order_id"] for _ in range(2)]
    async with rt.db.transaction() as session:
        await confirm_paid(session, rt, int(payed), now=utcnow(), actor="test")

    unknown, bad_txid, twice, bad_port = await asyncio.gather(
        cli.fails("order", "confirm-paid", "987654321"),
        cli.fails("order", "complete", payed, "--txid", "not-a-txid"),
        cli.fails("order", "confirm-paid", payed),
        cli.fails(
            "merchant", "update", str(who.merchant_id), "--webhook-url", "https://example.com:99999/cb"
        ),
    )

    assert unknown.startswith("error: ") and "order 987654321 not found" in unknown
    assert bad_txid.startswith("error: ") and "(invalid_txid)" in bad_txid
    assert "payed" in twice and "(illegal_transition)" in twice
    assert bad_port.startswith("error: ") and "(invalid_url)" in bad_port
    orders = await check(app_client, who, [payed, awaiting])
    assert [o["order_status"] for o in orders] == ["payed", "awaiting"]
    async with rt.db.transaction() as session:
        row = await session.get(ExchangeOrder, int(payed))
    assert row is not None and row.txid is None
