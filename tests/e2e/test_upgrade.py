"""A database made and filled by the previous release's migrations (head 0007), upgraded by
`greengate migrate`, then used by this version."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import MetaData, select, text
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


@asynccontextmanager
async def scratch_database(kind: str, tmp_path: Path, suffix: str) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / f'{suffix}.db'}"
        return
    test_url = os.environ.get("GREENGATE_TEST_DATABASE_URL", "")
    if not test_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL (GREENGATE_TEST_DATABASE_URL)")
    name = f"{make_url(test_url).database}_{suffix}"
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


@pytest.fixture(params=["sqlite", "postgresql"])
async def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with scratch_database(request.param, tmp_path, "upgrade") as url:
        yield url


async def copy_rows(source_url: str, target_url: str) -> None:
    """Every row of `source_url` into the tables `target_url` has, with the columns it has: the data
    this version writes, as a database of the previous release's schema can hold it."""
    source = create_async_engine(source_url, poolclass=NullPool)
    target = create_async_engine(target_url, poolclass=NullPool)
    try:
        async with source.connect() as src, target.begin() as dst:
            old = MetaData()
            await dst.run_sync(old.reflect)
            new = MetaData()
            await src.run_sync(new.reflect)
            for table in old.sorted_tables:
                if table.name == "alembic_version" or table.name not in new.tables:
                    continue
                columns = [c.name for c in table.columns if c.name in new.tables[table.name].c]
                rows = (await src.execute(select(*(new.tables[table.name].c[c] for c in columns)))).mappings()
                values = [dict(row) for row in rows]
                if values:
                    await dst.execute(table.insert(), values)
                if dst.dialect.name == "postgresql" and "id" in table.c and values:
                    await dst.execute(
                        text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), :n)"),
                        {"n": max(v["id"] for v in values)},
                    )
    finally:
        await source.dispose()
        await target.dispose()


async def test_a_database_of_the_previous_release_upgrades_and_works(
    old_database: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(migrate.upgrade, old_database, PREVIOUS_HEAD)
    settings = make_settings(old_database, tmp_path)
    # The data is made by this version's services on a scratch database, then copied into the old
    # schema's columns: what the previous release wrote, with no keys recorded.
    kind = "sqlite" if old_database.startswith("sqlite") else "postgresql"
    async with scratch_database(kind, tmp_path, "upgrade_seed") as seed_url:
        await asyncio.to_thread(migrate.upgrade, seed_url)
        rt = Runtime.create(make_settings(seed_url, tmp_path))
        try:
            who = await make_client(rt, "Shop of the previous release")
            await make_direction(rt)
            await make_requisites(rt, 2)
        finally:
            await rt.close()
        await copy_rows(seed_url, old_database)

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
