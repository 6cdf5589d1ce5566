"""What the command line says when the database is not ready, and how it describes itself."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from greengate import __version__
from greengate.cli import app
from greengate.store import migrate
from tests.e2e.test_cli import COMMAND
from tests.support.processes import greengate_env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


async def test_an_empty_embedded_database_is_migrated_by_the_first_command(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    result = await asyncio.to_thread(
        run, ["merchant", "list"], greengate_env(f"sqlite+aiosqlite:///{db}"), tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "the database was empty: migrations applied"
    again = await asyncio.to_thread(
        run, ["merchant", "list"], greengate_env(f"sqlite+aiosqlite:///{db}"), tmp_path
    )
    assert again.returncode == 0 and again.stderr == ""


async def test_a_database_behind_this_version_asks_for_migrate(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    await asyncio.to_thread(migrate.upgrade, url, "0007")
    env = greengate_env(url)
    for args in (["merchant", "list"], ["worker"], ["keys", "status"]):
        line = one_line_error(await asyncio.to_thread(run, args, env, tmp_path))
        assert "is at migration 0007" in line and "run `greengate migrate`" in line
    assert (await asyncio.to_thread(run, ["migrate"], env, tmp_path)).returncode == 0
    assert (await asyncio.to_thread(run, ["merchant", "list"], env, tmp_path)).returncode == 0


async def test_an_unreachable_embedded_database_is_one_line(tmp_path: Path) -> None:
    env = greengate_env(f"sqlite+aiosqlite:///{tmp_path / 'missing-folder' / 'x.db'}")
    for args in (["merchant", "list"], ["migrate"]):
        line = one_line_error(await asyncio.to_thread(run, args, env, tmp_path))
        assert "cannot open the SQLite database" in line


async def test_a_missing_postgresql_database_is_one_line(tmp_path: Path) -> None:
    test_url = os.environ.get("GREENGATE_TEST_DATABASE_URL", "")
    if not test_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL (GREENGATE_TEST_DATABASE_URL)")
    url = make_url(test_url).set(database="greengate_no_such_database").render_as_string(hide_password=False)
    env = greengate_env(url)
    for args in (["merchant", "list"], ["migrate"], ["serve", "--port", "1"]):
        line = one_line_error(await asyncio.to_thread(run, args, env, tmp_path))
        assert (
            "'greengate_no_such_database' does not exist: create it" in line and "greengate migrate" in line
        )


async def test_version_and_one_line_help_for_every_command(tmp_path: Path) -> None:
    result = await asyncio.to_thread(run, ["--version"], greengate_env("sqlite+aiosqlite:///x.db"), tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"greengate {__version__}"
    assert __version__[0].isdigit()

    root: Any = typer.main.get_command(app)
    commands: list[tuple[str, Any]] = []
    for name, command in root.commands.items():
        commands.append((name, command))
        commands += [(f"{name} {sub}", c) for sub, c in getattr(command, "commands", {}).items()]
    assert {"keys", "keys status", "keys rotate", "backup", "restore", "ledger check"} <= {
        n for n, _ in commands
    }
    for name, command in commands:
        short = command.get_short_help_str(limit=80)
        assert short and not short.endswith("..."), f"greengate {name} has no one-line description"
        helped = CliRunner().invoke(app, [*name.split(), "--help"])
        assert helped.exit_code == 0 and "<bool>" not in helped.output, helped.output


async def test_a_database_from_a_newer_release_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "newer.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('0999')")
        conn.execute("CREATE TABLE later_table (id INTEGER)")
    env = greengate_env(f"sqlite+aiosqlite:///{db}")
    for args in (["migrate"], ["merchant", "list"], ["serve", "--port", "1"]):
        line = one_line_error(await asyncio.to_thread(run, args, env, tmp_path))
        assert "0999" in line and "newer" in line
