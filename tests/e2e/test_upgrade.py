"""A database made and filled by the previous release's migrations (head 0007), upgraded by
`greengate migrate`, then used by this version."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from greengate.app import create_app
from greengate.runtime import Runtime
from greengate.services.merchants import get_merchant, secret_key
from greengate.store import migrate
from greengate.store.models import EncryptionKey
from tests.conftest import make_settings
from tests.e2e.test_cli import COMMAND
from tests.support.exchange import create_order, make_client, make_direction, make_requisites
from tests.support.merchant_api import first, parse_xml_message, signed
from tests.support.processes import greengate_env

PREVIOUS_HEAD = "0007"


@pytest.fixture(params=["sqlite", "postgresql"])
async def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'previous.db'}"
        return
    test_url = os.environ.get("GREENGATE_TEST_DATABASE_URL", "")
    if not test_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL (GREENGATE_TEST_DATABASE_URL)")
    name = f"{make_url(test_url).database}_upgrade"
    admin = create_async_engine(test_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(test_url).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def test_a_database_of_the_previous_release_upgrades_and_works(
    old_database: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(migrate.upgrade, old_database, PREVIOUS_HEAD)
    settings = make_settings(old_database, tmp_path)
    rt = Runtime.create(settings)  # the data as the previous release wrote it: no keys recorded
    try:
        who = await make_client(rt, "Shop of the previous release")
        await make_direction(rt)
        await make_requisites(rt, 2)
    finally:
        await rt.close()

    env = greengate_env(old_database)
    refused = await asyncio.to_thread(
        subprocess.run, [*COMMAND, "merchant", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1 and "run `greengate migrate`" in refused.stderr
    upgraded = await asyncio.to_thread(
        subprocess.run, [*COMMAND, "migrate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert upgraded.returncode == 0, upgraded.stderr
    status = await asyncio.to_thread(
        subprocess.run, [*COMMAND, "keys", "status"], env=env, capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0, status.stdout + status.stderr

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["migrations"] == migrate.head_revision(
                old_database
            )
            order = await create_order(client, who)
            assert order.status_code == 200, order.text
            assert order.json()["items"][0]["wallet_payment"].startswith("22007001")  # old requisite reads
            rt = app.state.runtime
            async with rt.db.transaction() as session:
                secret = secret_key(rt.keyring, await get_merchant(session, who.merchant_id))
                recorded = set(await session.scalars(select(EncryptionKey.kid)))
            assert recorded == {"t1"}  # adopted from the data the previous release wrote
            params = [
                ("pg_amount", "100"),
                ("pg_description", "Tea"),
                ("pg_merchant_id", str(who.merchant_id)),
                ("pg_order_id", "U-1"),
            ]
            answer = await client.post(
                "/init_payment.php", data=dict(signed("init_payment.php", params, secret))
            )
            assert first(parse_xml_message(answer.content), "pg_status") == "ok", answer.text
