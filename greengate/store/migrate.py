"""Schema migrations through Alembic, callable from the CLI, the server start-up and tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from greengate.settings import sqlite_file
from greengate.store.db import create_private_file, pooler_connect_args

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str, pooler: str = "none") -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on a '%' in a password.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["pooler"] = pooler
    return cfg


def upgrade(url: str, revision: str = "head", *, pooler: str = "none") -> None:
    """Apply migrations; must be called where no event loop is running (Alembic runs its own)."""
    path = sqlite_file(url)
    if path is not None:
        create_private_file(path)
    command.upgrade(alembic_config(url, pooler), revision)


class DatabaseProblem(Exception):
    """The database cannot be used as it is: `code` names the case, the message says what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _state(conn: Connection) -> tuple[str | None, bool]:
    tables = [t for t in inspect(conn).get_table_names() if t != "alembic_version"]
    return MigrationContext.configure(conn).get_current_revision(), bool(tables)


async def _read_state(url: str, pooler: str) -> tuple[str | None, bool]:
    engine = create_async_engine(url, poolclass=NullPool, connect_args=pooler_connect_args(pooler))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_state)
    finally:
        await engine.dispose()


def _where(url: str) -> str:
    parsed = make_url(url)
    path = sqlite_file(url)
    if path is not None:
        return str(path)
    return f"{parsed.database or '?'} on {parsed.host or 'localhost'}:{parsed.port or 5432}"


def connect_problem(url: str, exc: BaseException) -> DatabaseProblem:
    """What an operator is told when the database cannot be reached (the driver's detail stays in logs)."""
    text = f"{type(exc).__name__}: {exc}"
    parsed = make_url(url)
    if "does not exist" in text and parsed.get_backend_name() == "postgresql":
        return DatabaseProblem(
            "database_missing",
            f"PostgreSQL database {parsed.database!r} does not exist: create it (createdb -h "
            f"{parsed.host or 'localhost'} -U {parsed.username or 'postgres'} {parsed.database}) "
            "and run `greengate migrate`",
        )
    if sqlite_file(url) is not None:
        return DatabaseProblem(
            "database_unreachable",
            f"cannot open the SQLite database {_where(url)}: check that its folder exists and is writable",
        )
    return DatabaseProblem(
        "database_unreachable",
        f"cannot connect to the database {_where(url)} ({type(exc).__name__}): check GREENGATE_DATABASE_URL "
        "and that the server is running",
    )


def probe(url: str, *, pooler: str = "none") -> tuple[str | None, bool]:
    """The database's migration revision and whether it has tables; a DatabaseProblem when it cannot
    be reached. Call where no event loop is running."""
    path = sqlite_file(url)
    if path is not None:
        if not path.parent.is_dir():
            raise connect_problem(url, FileNotFoundError(path.parent))
        create_private_file(path)
    try:
        return asyncio.run(_read_state(url, pooler))
    except Exception as exc:
        raise connect_problem(url, exc) from None


def prepare_schema(url: str, *, pooler: str = "none") -> bool:
    """Check that the database is migrated to this version's head before a command uses it. An
    embedded database with no tables is migrated here (returns True); every other gap raises a
    DatabaseProblem saying what to do. Call where no event loop is running."""
    path = sqlite_file(url)
    current, has_tables = probe(url, pooler=pooler)
    head = head_revision(url)
    if current == head:
        return False
    if current is None and not has_tables:
        if path is not None:
            upgrade(url)
            return True
        raise DatabaseProblem(
            "not_migrated", f"the database {_where(url)} has no tables yet: run `greengate migrate` first"
        )
    if current is None:
        raise DatabaseProblem(
            "not_greengate",
            f"the database {_where(url)} has tables but no greengate migration record: "
            "point GREENGATE_DATABASE_URL at a greengate database",
        )
    try:
        ScriptDirectory.from_config(alembic_config(url)).get_revision(current)
    except CommandError:
        raise DatabaseProblem(
            "schema_newer",
            f"the database {_where(url)} is at migration {current}, which this greengate does not know "
            "(a newer release migrated it): run that release",
        ) from None
    raise DatabaseProblem(
        "not_migrated",
        f"the database {_where(url)} is at migration {current} and this greengate needs {head}: "
        "back it up (docs/backups.md), then run `greengate migrate`",
    )


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
