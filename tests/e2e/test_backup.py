"""`greengate backup` of a live gateway under load, and `greengate restore` of it elsewhere."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
from pathlib import Path

import httpx
from sqlalchemy import func, select

from greengate.runtime import Runtime
from greengate.services import merchants
from greengate.settings import Settings
from greengate.store.models import ExchangeOrder, Merchant, Payment
from tests.e2e.test_cli import COMMAND
from tests.e2e.test_serve import WALLET, free_ports
from tests.support.merchant_api import first, parse_xml_message, signed
from tests.support.processes import Processes, greengate_env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def embedded_env(db: Path) -> dict[str, str]:
    env = greengate_env(f"sqlite+aiosqlite:///{db}")
    del env["GREENGATE_ENCRYPTION_KEYS"]
    return env


async def test_backup_of_a_live_gateway_restores_every_order_payment_and_secret(tmp_path: Path) -> None:
    live_dir, safe_dir, new_dir = tmp_path / "live", tmp_path / "safe", tmp_path / "new"
    for d in (live_dir, safe_dir, new_dir):
        d.mkdir()
    live = live_dir / "greengate.db"
    env = embedded_env(live)
    procs = Processes(f"sqlite+aiosqlite:///{live}", tmp_path)
    try:
        (port,) = free_ports(1)
        await asyncio.to_thread(procs.serve, port, "--demo", env=env)
        demo = json.loads(live.with_suffix(".demo.json").read_text())["merchant"]
        api_secret, merchant_id, secret_key = demo["api_secret"], demo["merchant_id"], demo["secret_key"]
        acknowledged: list[tuple[str, str]] = []  # (kind, id) the gateway confirmed
        stop = asyncio.Event()

        async def load(client: httpx.AsyncClient, worker: int) -> None:
            n = 0
            while not stop.is_set() and n < 400:
                n += 1
                order = await client.post(
                    "/api/v2/order/create",
                    headers={"Api-Secret": api_secret},
                    json={"payment_method": "card", "wallet": WALLET, "from_amount": str(1000 + n)},
                )
                if order.status_code == 200:
                    acknowledged.append(("order", order.json()["items"][0]["order_id"]))
                params = [
                    ("pg_amount", "100"),
                    ("pg_description", "Tea"),
                    ("pg_merchant_id", str(merchant_id)),
                    ("pg_order_id", f"W{worker}-{n}"),
                ]
                answer = await client.post(
                    "/init_payment.php", data=dict(signed("init_payment.php", params, secret_key))
                )
                if (
                    answer.status_code == 200
                    and first(parse_xml_message(answer.content), "pg_status") == "ok"
                ):
                    acknowledged.append(
                        ("payment", first(parse_xml_message(answer.content), "pg_payment_id"))
                    )

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            loaders = [asyncio.create_task(load(client, w)) for w in range(4)]
            while len(acknowledged) < 40:
                await asyncio.sleep(0.05)
            before = list(acknowledged)
            backup = await asyncio.to_thread(run, ["backup", str(safe_dir / "gg.db")], env, tmp_path)
            during = len(acknowledged) - len(before)
            stop.set()
            await asyncio.gather(*loaders)
        assert backup.returncode == 0, backup.stderr
        assert during > 0  # the gateway kept writing while the copy was taken
    finally:
        procs.close()

    for f in (safe_dir / "gg.db", safe_dir / "gg.db.keys"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert (safe_dir / "gg.db.keys").read_text() == live.with_suffix(".key").read_text()

    target = new_dir / "restored.db"
    restored_env = embedded_env(target)
    result = await asyncio.to_thread(run, ["restore", str(safe_dir / "gg.db")], restored_env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert target.with_suffix(".key").read_text() == live.with_suffix(".key").read_text()
    again = await asyncio.to_thread(run, ["restore", str(safe_dir / "gg.db")], restored_env, tmp_path)
    assert again.returncode == 1 and "--replace" in again.stderr

    procs = Processes(f"sqlite+aiosqlite:///{target}", tmp_path)
    try:
        (port,) = free_ports(1)
        await asyncio.to_thread(procs.serve, port, env=restored_env)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            assert (await client.get("/readyz")).status_code == 200
            order_ids = [i for kind, i in before if kind == "order"]
            items = []
            for start in range(0, len(order_ids), 20):
                checked = await client.post(
                    "/api/v2/order/check",
                    headers={"Api-Secret": api_secret},
                    json={"order_id": order_ids[start : start + 20]},
                )
                assert checked.status_code == 200, checked.text
                items += checked.json()["data"]["orders"]
            assert sorted(o["order_id"] for o in items) == sorted(order_ids)
            cards = [o["wallet_payment"] for o in items if o["order_status"] == "awaiting"]
            assert cards and all(c.startswith("2200700") for c in cards)  # requisites decrypt
            for payment_id in [i for kind, i in before if kind == "payment"]:
                params = [("pg_merchant_id", str(merchant_id)), ("pg_payment_id", payment_id)]
                status = await client.post(
                    "/get_status2.php", data=dict(signed("get_status2.php", params, secret_key))
                )
                message = parse_xml_message(status.content)
                assert first(message, "pg_status") == "ok", status.text
    finally:
        procs.close()

    # Every secret in the copy reads with the copied keys.
    rt = Runtime.create(Settings(database_url=f"sqlite+aiosqlite:///{target}"))
    try:
        async with rt.db.transaction() as session:
            for m in await session.scalars(select(Merchant)):
                assert merchants.secret_key(rt.keyring, m)
                assert merchants.webhook_secret(rt.keyring, m)
            assert await session.scalar(select(func.count()).select_from(ExchangeOrder)) >= len(
                [k for k, _ in before if k == "order"]
            )
            assert await session.scalar(select(func.count()).select_from(Payment)) >= len(
                [k for k, _ in before if k == "payment"]
            )
    finally:
        await rt.close()
