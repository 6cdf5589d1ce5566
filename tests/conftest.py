"""Shared fixtures: one database for the whole run (SQLite file, or PostgreSQL when
GREENGATE_TEST_DATABASE_URL is set), migrated once and emptied before each test that uses it."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from greengate.app import create_app
from greengate.runtime import Runtime
from greengate.settings import Settings
from greengate.store import migrate
from greengate.store.models import Base

TEST_KEYS = "t1:" + "A" * 43 + "=,t0:" + "B" * 43 + "="
OPERATOR_TOKEN = "operator-test-token"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("GREENGATE_TEST_DATABASE_URL") or (
        f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'greengate-test.db'}"
    )
    migrate.upgrade(url)
    return url


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


# Suites whose outcome does not depend on the database: pure domain code, pages in a browser, the client
# over HTTP and the documentation's samples. They run in the SQLite pass; on PostgreSQL they would only
# repeat it.
DATABASE_INDEPENDENT = ("unit", "browser", "client", "docs")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not is_postgres(os.environ.get("GREENGATE_TEST_DATABASE_URL", "")):
        return
    tests_dir = Path(__file__).parent
    skip = pytest.mark.skip(reason="database-independent: runs in the SQLite pass")
    for item in items:
        parts = Path(str(item.path)).relative_to(tests_dir).parts
        if parts and parts[0] in DATABASE_INDEPENDENT:
            item.add_marker(skip)


async def wipe(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    async with engine.begin() as conn:
        # DELETE on these small tables is far cheaper than TRUNCATE, which rewrites every file.
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(table.delete())
        if is_postgres(url):
            for table in Base.metadata.sorted_tables:
                if "id" in table.c and table.c.id.autoincrement is not False:
                    await conn.execute(
                        text(
                            "SELECT setval(seq, 1, false) FROM pg_get_serial_sequence(:t, 'id') AS seq"
                            " WHERE seq IS NOT NULL"
                        ),
                        {"t": table.name},
                    )
    await engine.dispose()


def make_settings(database_url: str, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "encryption_keys": TEST_KEYS,
        "encryption_key_file": str(tmp_path / "unused.key"),
        "public_base_url": "http://testserver",
        "operator_token": OPERATOR_TOKEN,
        "callback_allow_private": True,
        "worker_poll_seconds": 0.05,
        "fixed_rates": "RUB=3233561.44,KZT=27500000",
        "db_pool_size": 20,
        "log_json": False,
        "log_level": "WARNING",
        "callback_retry_schedule": [1, 2, 5],
        # Off by default here: a suite sends far more requests and failures from one address than a
        # client would; the throttle tests turn them on.
        "exchange_requests_per_minute": 0,
        "auth_failures_per_address": 0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)


@pytest.fixture
async def clean_db(database_url: str) -> None:
    await wipe(database_url)


@pytest.fixture
async def app_client(settings: Settings, clean_db: None) -> AsyncIterator[httpx.AsyncClient]:
    """The ASGI app with its lifespan running (no background worker), reached over httpx."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
def rt(app_client: httpx.AsyncClient) -> Runtime:
    runtime: Runtime = app_client.app.state.runtime  # type: ignore[attr-defined]
    return runtime


@pytest.fixture
def sqlite_rt(rt: Runtime) -> Runtime:
    """The runtime, for tests of the embedded database's own behaviour."""
    if rt.db.dialect != "sqlite":
        pytest.skip("the embedded database's own behaviour")
    return rt


@pytest.fixture
def free_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port
