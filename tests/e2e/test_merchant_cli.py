"""The operator's `greengate merchant` and `greengate payment action` commands, run as processes against
the test database, with their effect read back through the Merchant API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import httpx
import pytest

from greengate.clock import utcnow
from greengate.domain.card_rules import validate_card_form
from greengate.runtime import Runtime
from greengate.services import payment_flow
from greengate.store.models import Payment
from tests.support.merchant_api import Shop, make_shop
from tests.support.processes import greengate_env

SCRIPT = Path(sys.executable).parent / "greengate"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "greengate.cli"]


async def greengate(database_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [*COMMAND, *args],
        env=greengate_env(database_url),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def ok(database_url: str, cwd: Path, *args: str) -> str:
    result = await greengate(database_url, cwd, *args)
    assert result.returncode == 0, f"greengate {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture
async def shop(rt: Runtime, app_client: httpx.AsyncClient) -> Shop:
    return await make_shop(rt, app_client)


async def test_payment_action_commands(rt: Runtime, shop: Shop, database_url: str, tmp_path: Path) -> None:
    approve, decline, three_ds, expire = [await shop.init_ok() for _ in range(4)]
    outputs = await asyncio.gather(
        ok(database_url, tmp_path, "payment", "action", str(approve), "approve"),
        ok(database_url, tmp_path, "payment", "action", str(decline), "decline", "--code", "10005"),
        ok(database_url, tmp_path, "payment", "action", str(three_ds), "require-3ds"),
        ok(database_url, tmp_path, "payment", "action", str(expire), "expire"),
    )
    assert [line.strip() for line in outputs] == [
        f"test payment {approve}: ok",
        f"test payment {decline}: failed",
        f"test payment {three_ds}: new",
        f"test payment {expire}: expired",
    ]
    approved = await shop.status(approve)
    assert (approved["pg_transaction_status"], approved["pg_can_reject"]) == ("ok", "1")
    declined = await shop.status(decline)
    assert (declined["pg_transaction_status"], declined["pg_failure_code"]) == ("failed", "10005")
    assert (await shop.status(expire))["pg_transaction_status"] == "incomplete"
    # require-3ds: the next card, even one without 3-D Secure, goes through the 3-D Secure page.
    assert (await shop.status(three_ds))["pg_transaction_status"] == "partial"
    card = validate_card_form("4405645000006150", "12", "30", "TEST USER", "123", date.today())
    async with rt.db.transaction() as session:
        assert (await payment_flow.submit_card(session, rt, three_ds, card, utcnow())).status == "3ds"

    # Refusals exit 1 with the reason and change nothing.
    refusals = await asyncio.gather(
        greengate(database_url, tmp_path, "payment", "action", str(approve), "expire"),
        greengate(database_url, tmp_path, "payment", "action", "987654", "approve"),
    )
    for result, reason in zip(refusals, ("state_forbids", "not found"), strict=True):
        assert result.returncode == 1, result
        assert reason in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert (await shop.status(approve))["pg_transaction_status"] == "ok"


async def test_merchant_create_and_update(
    rt: Runtime, app_client: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    created = json.loads(
        await ok(database_url, tmp_path, "merchant", "create", "--name", "CLI shop", "--json")
    )
    assert {"merchant_id", "secret_key", "payout_secret", "api_secret", "webhook_secret"} <= created.keys()
    assert len({created["secret_key"], created["payout_secret"]}) == 2
    shop = Shop(app_client, int(created["merchant_id"]), created["secret_key"])
    before_id = await shop.init_ok()
    assert (await shop.status(before_id))["pg_testing_mode"] == "1"

    await ok(
        database_url,
        tmp_path,
        *("merchant", "update", str(shop.merchant_id), "--mode", "live"),
        *("--result-url", "https://shop.example.kz/pay/result.php"),
        *("--check-url", "https://shop.example.kz/pay/check.php"),
        *("--request-method", "XML", "--check-enabled"),
    )
    live_id = await shop.init_ok()
    assert (await shop.status(live_id))["pg_testing_mode"] == "0"
    async with rt.db.transaction() as session:
        payment = await session.get(Payment, live_id)
    assert payment is not None
    assert (payment.result_url, payment.check_url, payment.request_method, payment.testing) == (
        "https://shop.example.kz/pay/result.php",
        "https://shop.example.kz/pay/check.php",
        "XML",
        False,
    )

    # Bad values are refused as a whole: the valid option given with them is not applied either.
    bad_mode, bad_method = await asyncio.gather(
        greengate(
            database_url,
            tmp_path,
            *("merchant", "update", str(shop.merchant_id), "--mode", "x"),
            *("--result-url", "https://changed.example.kz/r.php"),
        ),
        greengate(
            database_url,
            tmp_path,
            *("merchant", "update", str(shop.merchant_id), "--request-method", "PUT", "--mode", "test"),
        ),
    )
    assert bad_mode.returncode == 1 and "mode" in bad_mode.stderr, bad_mode
    assert bad_method.returncode == 1 and "request method" in bad_method.stderr, bad_method
    async with rt.db.transaction() as session:
        unchanged = await session.get(Payment, await shop.init_ok())
    assert unchanged is not None and (unchanged.testing, unchanged.result_url) == (
        False,
        "https://shop.example.kz/pay/result.php",
    )
    await ok(database_url, tmp_path, "merchant", "update", str(shop.merchant_id), "--inactive")
    (await shop.init()).assert_error(110, shop.secret)
