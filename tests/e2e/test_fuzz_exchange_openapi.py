"""Schemathesis against the Exchange API's own OpenAPI document, over real HTTP to a `greengate
serve` process: whatever the generated request, no 5xx, and a refused request writes nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from greengate.app import create_app
from greengate.settings import Settings
from greengate.store.models import Base
from tests.support.exchange import empty_tables
from tests.support.processes import GREENGATE, Processes

# The document the gateway serves at /openapi.json, restricted to the Exchange API.
schema = schemathesis.openapi.from_dict(create_app(Settings(log_json=False)).openapi()).include(
    path_regex="^/api/v2/"
)
TRIED = {"exchange openapi": 0}


@dataclass
class Server:
    url: str
    api_secret: str
    database_url: str


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    import socket

    asyncio.run(empty_tables(database_url))
    workdir = tmp_path_factory.mktemp("schemathesis")
    procs = Processes(database_url, workdir)
    created = subprocess.run(
        [*GREENGATE, "merchant", "create", "--name", "Fuzz", "--json"],
        env=procs.env(),
        cwd=workdir,
        capture_output=True,
        check=True,
    )
    api_secret = json.loads(created.stdout)["api_secret"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Throttles off: the fuzzer sends far more bad secrets than the per-address allowance.
    env = procs.env(auth_failures_per_address="0", exchange_requests_per_minute="0")
    procs.serve(port, "--no-worker", env=env)
    try:
        yield Server(f"http://127.0.0.1:{port}", api_secret, database_url)
    finally:
        procs.close()


async def _counts(url: str) -> dict[str, int]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return {
                t.name: int((await conn.execute(select(func.count()).select_from(t))).scalar_one())
                for t in Base.metadata.sorted_tables
                if t.name != "throttle_counters"
            }
    finally:
        await engine.dispose()


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_exchange_api_never_answers_5xx_nor_writes_on_refusal(
    case: schemathesis.Case, server: Server
) -> None:
    TRIED["exchange openapi"] += 1
    before = asyncio.run(_counts(server.database_url))
    headers = dict(case.headers or {})
    headers.setdefault("Api-Secret", server.api_secret)
    response = case.call(base_url=server.url, headers=headers, timeout=30)
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert asyncio.run(_counts(server.database_url)) == before, (case.method, case.path)
