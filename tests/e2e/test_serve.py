"""`greengate serve` as a new user runs it: links that follow the served address, demo data made once,
and a warning when listening on every interface without a public URL."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.merchant_api import first, parse_xml_message, signed
from tests.support.processes import Processes, greengate_env

WALLET = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Processes, dict[str, str], Path]]:
    db = tmp_path / "data" / "greengate.db"
    db.parent.mkdir()
    url = f"sqlite+aiosqlite:///{db}"
    env = greengate_env(url)
    del env["GREENGATE_ENCRYPTION_KEYS"]
    procs = Processes(url, tmp_path)
    yield procs, env, db
    procs.close()


async def test_links_follow_the_served_port_and_demo_data_is_made_once(
    embedded: tuple[Processes, dict[str, str], Path],
) -> None:
    procs, env, db = embedded
    port, other_port = free_ports(2)
    server = await asyncio.to_thread(procs.serve, port, "--demo", env=env)
    creds_file = db.with_suffix(".demo.json")
    assert stat.S_IMODE(creds_file.stat().st_mode) == 0o600
    demo = json.loads(creds_file.read_text())
    output = server.output()
    assert demo["merchant"]["api_secret"] in output
    assert f"on http://127.0.0.1:{port}" in output and f"links handed out: http://127.0.0.1:{port}" in output
    base = f"http://127.0.0.1:{port}"
    api_secret = demo["merchant"]["api_secret"]

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        order = await client.post(
            "/api/v2/order/create",
            headers={"Api-Secret": api_secret},
            json={"payment_method": "card", "wallet": WALLET, "from_amount": "9999"},
        )
        assert order.status_code == 200, order.text
        fast_link = order.json()["items"][0]["fast_link"]
        assert fast_link.startswith(f"{base}/pay/order/")
        assert (await client.get(fast_link)).status_code == 200

        merchant_id, secret = demo["merchant"]["merchant_id"], demo["merchant"]["secret_key"]
        params = [
            ("pg_amount", "100"),
            ("pg_description", "Tea"),
            ("pg_merchant_id", str(merchant_id)),
            ("pg_order_id", "A-1"),
        ]
        answer = await client.post("/init_payment.php", data=dict(signed("init_payment.php", params, secret)))
        assert answer.status_code == 200, answer.text
        redirect = first(parse_xml_message(answer.content), "pg_redirect_url")
        assert redirect.startswith(f"{base}/pay/")
        assert (await client.get(redirect)).status_code == 200
    await asyncio.to_thread(server.terminate)

    again = await asyncio.to_thread(procs.serve, other_port, "--demo", env=env)
    assert f"Demo data exists already; its credentials are in {creds_file}" in again.output()
    assert api_secret not in again.output()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{other_port}", timeout=30) as client:
        directions = await client.get("/api/v2/directions", headers={"Api-Secret": api_secret})
        assert directions.status_code == 200, directions.text  # the first start's secret still works
        order = await client.post(
            "/api/v2/order/create",
            headers={"Api-Secret": api_secret},
            json={"payment_method": "card", "wallet": WALLET, "from_amount": "9999"},
        )
        assert order.json()["items"][0]["fast_link"].startswith(f"http://127.0.0.1:{other_port}/pay/order/")
    assert json.loads(creds_file.read_text()) == demo


async def test_every_interface_without_a_public_url_warns_and_shows_a_usable_address(
    embedded: tuple[Processes, dict[str, str], Path],
) -> None:
    procs, env, _ = embedded
    (port,) = free_ports(1)
    server = procs.start("serve", "--host", "0.0.0.0", "--port", str(port), env=env)
    await asyncio.to_thread(server.wait_http, f"http://127.0.0.1:{port}/healthz", 60.0)
    output = server.output()
    assert "warning: listening on every interface but GREENGATE_PUBLIC_BASE_URL is not set" in output
    assert f"on http://127.0.0.1:{port}" in output and "0.0.0.0" not in output.split("warning")[0]

    public = dict(env, GREENGATE_PUBLIC_BASE_URL="https://pay.example.com")
    (port,) = free_ports(1)
    quiet = procs.start("serve", "--host", "0.0.0.0", "--port", str(port), env=public)
    await asyncio.to_thread(quiet.wait_http, f"http://127.0.0.1:{port}/healthz", 60.0)
    assert "warning" not in quiet.output()
    assert "links handed out: https://pay.example.com" in quiet.output()
