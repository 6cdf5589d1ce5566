"""Backups of the embedded database: a consistent copy taken with SQLite's online backup API while the
gateway runs, with the keyring beside it, and the way back."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path


class BackupError(Exception):
    pass


@dataclass(frozen=True)
class BackupFiles:
    database: Path
    keys: Path

    @classmethod
    def at(cls, path: Path) -> BackupFiles:
        return cls(path, path.with_name(path.name + ".keys"))


def _private_copy_target(path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return tmp


def write_private(path: Path, text: str) -> None:
    """Write `path` whole with mode 0600, through a temporary file renamed over it."""
    tmp = _private_copy_target(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def copy_database(source: Path, target: Path, *, pages_per_step: int = 1024) -> None:
    """Copy one SQLite database into another file with the online backup API: the copy is the
    database as of one moment, while writers go on (each step holds the read lock briefly)."""
    tmp = _private_copy_target(target)
    try:
        src = sqlite3.connect(source, timeout=30)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst, pages=pages_per_step)
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                (check,) = dst.execute("PRAGMA integrity_check").fetchone()
                if check != "ok":
                    raise BackupError(f"the copy failed its integrity check: {check}")
            finally:
                dst.close()
        finally:
            src.close()
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def backup(database: Path, keyring_spec: str, target: Path) -> BackupFiles:
    """Write `target` (the database) and `target.keys` (the keyring that reads it), both 0600."""
    if not database.exists():
        raise BackupError(f"there is no database at {database}")
    files = BackupFiles.at(target)
    copy_database(database, files.database)
    write_private(files.keys, keyring_spec.strip() + "\n")
    return files


def restore(source: Path, database: Path, *, replace: bool) -> BackupFiles:
    """Copy a backup into place as `database`; returns the backup's files (its keys are the caller's to
    install). Refuses to overwrite an existing database unless `replace`."""
    files = BackupFiles.at(source)
    if not files.database.exists():
        raise BackupError(f"there is no backup at {files.database}")
    if not files.keys.exists():
        raise BackupError(f"the backup's keyring {files.keys} is missing: it is needed to read the backup")
    if database.exists() and database.stat().st_size > 0 and not replace:
        raise BackupError(f"{database} exists: stop the gateway and pass --replace to overwrite it")
    for suffix in ("-wal", "-shm"):
        database.with_name(database.name + suffix).unlink(missing_ok=True)
    copy_database(files.database, database)
    return files
