"""Each example in client/examples runs against a running gateway, as a user would run it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.services.merchants import create_merchant
from tests.client.conftest import CLIENT_ROOT, Gateway, _free_port
from tests.client.test_merchant_client import pay
from tests.support.exchange import make_direction, make_requisites

EXAMPLES = CLIENT_ROOT / "examples"


@pytest.fixture
async def credentials(rt: Runtime, gateway: Gateway) -> dict[str, str]:
    await make_direction(rt)
    await make_requisites(rt, 2)
    async with rt.db.transaction() as session:
        _, creds = await create_merchant(session, rt.keyring, name="Example", mode="test", now=utcnow())
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENGATE_")}
    return {
        **env,
        "PYTHONPATH": str(CLIENT_ROOT),
        "GREENGATE_URL": gateway.url,
        "GREENGATE_API_SECRET": creds.api_secret,
        "GREENGATE_MERCHANT_ID": str(creds.merchant_id),
        "GREENGATE_SECRET_KEY": creds.secret_key,
    }


def run(example: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / example)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_exchange_example(credentials: dict[str, str]) -> None:
    out = run("exchange_order.py", credentials)
    order_id = re.search(r"^order (\d+): pay exactly 9999 to 22007001", out, re.M)
    assert order_id, out
    assert f"order {order_id.group(1)} is awaiting" in out
    assert f"canceled: ['{order_id.group(1)}']" in out
    assert "refused as expected: HTTP 422 invalid_wallet" in out


def test_merchant_payment_example(credentials: dict[str, str]) -> None:
    out = run("merchant_payment.py", credentials)
    assert re.search(r"^payment \d+: send the payer to http://127\.0\.0\.1:\d+/pay/", out, re.M), out
    assert "status partial, 1500.50 KZT" in out
    assert "payment system BANKCARD" in out
    assert "canceled; now error" in out
    assert "refused as expected: pg_error_code 340" in out


async def test_callbacks_example_answers_the_gateway_s_callbacks(
    credentials: dict[str, str], rt: Runtime, tmp_path: Path
) -> None:
    port = _free_port()
    log = (tmp_path / "callbacks.log").open("w+")
    shop = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "merchant_callbacks.py"), str(port)],
        env=credentials,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        payment_id = int(_wait_line(tmp_path / "callbacks.log", r"^payment (\d+): pay it at").group(1))
        _wait_line(tmp_path / "callbacks.log", r"^listening on")
        assert await pay(rt, payment_id) == "check"
        _wait_line(tmp_path / "callbacks.log", rf"^verified check\.php callback for payment {payment_id}$")
        _wait_line(tmp_path / "callbacks.log", rf"^verified result\.php callback for payment {payment_id}$")
    finally:
        shop.send_signal(signal.SIGTERM)
        shop.wait(timeout=10)
        log.close()


def _wait_line(path: Path, pattern: str, timeout: float = 60.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, path.read_text(), re.M)
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not in the example's output:\n{path.read_text()}")
        time.sleep(0.05)


def test_the_client_stands_alone() -> None:
    """It imports nothing of greengate and declares only httpx, pydantic and standardwebhooks."""
    import tomllib

    modules = sorted(p.stem for p in (CLIENT_ROOT / "greengate_client").glob("*.py"))
    code = (
        "import sys; sys.modules['greengate'] = None\n"
        + "".join(f"import greengate_client.{m}\n" for m in modules if m != "__init__")
        + "print(sorted(m for m, v in sys.modules.items() if v and m.split('.')[0] == 'greengate'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PYTHONPATH": str(CLIENT_ROOT)},
        capture_output=True,
        text=True,
        cwd=CLIENT_ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    project = tomllib.loads((CLIENT_ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "greengate-client"
    names = {re.split(r"[<>=\[ ]", dep)[0] for dep in project["dependencies"]}
    assert names == {"httpx", "pydantic", "standardwebhooks"}
