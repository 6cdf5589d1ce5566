"""The client package against a real gateway: `greengate serve` in its own process on the test
database, arranged through the services in this process (merchants, payments paid by a test card).

greengate-client is a separate package in client/; the suite imports it from its source tree (its one
extra dependency, standardwebhooks, comes with the test extra), so the README's test command needs no
second install. `pip install ./client` is exercised by .ci/client-examples.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CLIENT_ROOT = Path(__file__).resolve().parents[2] / "client"
if str(CLIENT_ROOT) not in sys.path:
    sys.path.insert(0, str(CLIENT_ROOT))

from tests.conftest import OPERATOR_TOKEN  # noqa: E402
from tests.support.processes import GreengateProcess, Processes  # noqa: E402

FIXED_RATES = "RUB=3233561.44,KZT=27500000"


@dataclass
class Gateway:
    url: str
    process: GreengateProcess


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def gateway(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One running gateway (server and worker) per test module; tests empty the database between them."""
    processes = Processes(database_url, tmp_path_factory.mktemp("gateway"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = processes.env(
        public_base_url=url,
        fixed_rates=FIXED_RATES,
        operator_token=OPERATOR_TOKEN,
        callback_timeout_seconds="2",
    )
    try:
        process = processes.start("serve", "--host", "127.0.0.1", "--port", str(port), env=env)
        process.wait_http(f"{url}/healthz", timeout=60.0)
        yield Gateway(url, process)
    finally:
        processes.close()
