"""Upgrading as docs/deploy.md says: `greengate migrate` takes a database made by earlier migrations
to this version's head, keeps its rows, and a second run changes nothing."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from greengate.store import migrate


def greengate(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GREENGATE_DATABASE_URL": url, "GREENGATE_LOG_JSON": "false"}
    return subprocess.run(
        [sys.executable, "-m", "greengate.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def revision(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return str(db.execute("SELECT version_num FROM alembic_version").fetchone()[0])


@pytest.mark.parametrize("start", ["0001"])
def test_migrate_upgrades_an_older_database_to_head_and_keeps_its_rows(tmp_path: Path, start: str) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    migrate.upgrade(url, start)
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO merchants (id, name, mode, active, created_at, updated_at)"
            " VALUES (7, 'Kept shop', 'test', 1, '2026-11-01 10:00:00', '2026-11-01 10:00:00')"
        )

    first = greengate(url, "migrate")
    second = greengate(url, "migrate")

    assert first.returncode == 0, first.stderr[-2000:]
    assert revision(path) == migrate.head_revision(url)
    assert second.returncode == 0 and revision(path) == migrate.head_revision(url)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM merchants WHERE id = 7").fetchone() == ("Kept shop",)
