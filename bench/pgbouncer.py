"""A PgBouncer in transaction pooling mode in front of a local PostgreSQL, in its own directory.

Standard library only: the benchmarks and the cluster test start one the same way.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

SEARCH = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def find_pgbouncer(install: bool = True) -> tuple[str | None, str]:
    """The pgbouncer executable, installing Debian's package when missing and allowed; else None and
    why it is not available."""
    found = shutil.which("pgbouncer") or next((p for p in SEARCH if Path(p).exists()), None)
    if found:
        return found, ""
    if not install:
        return None, "pgbouncer is not installed"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "pgbouncer is not installed and cannot be installed here (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", "pgbouncer"]
    done = subprocess.run(command, env=env, capture_output=True, timeout=600)
    if done.returncode != 0:  # stale package lists: refresh them once
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(command, env=env, capture_output=True, timeout=600)
    found = shutil.which("pgbouncer") or next((p for p in SEARCH if Path(p).exists()), None)
    if found:
        return found, ""
    return None, f"apt-get install pgbouncer failed: {done.stderr.decode(errors='replace')[-300:]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgBouncer:
    """`pgbouncer` started on a free port for the database of `database_url`, transaction pooling.

    `pool_size` is the number of PostgreSQL connections it keeps per user and database: every client
    connection of every gateway process shares them."""

    def __init__(
        self,
        executable: str,
        database_url: str,
        workdir: Path,
        *,
        pool_size: int = 20,
        max_clients: int = 1000,
    ) -> None:
        parts = urlsplit(database_url)
        self.scheme = parts.scheme
        self.user = unquote(parts.username or "postgres")
        self.dbname = parts.path.lstrip("/")
        self.port = _free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        # Running as root, pgbouncer drops to an ordinary user, which then still reads these files.
        workdir.chmod(0o755)
        users = workdir / "users.txt"
        users.write_text(f'"{self.user}" ""\n')
        users.chmod(0o644)
        server = [
            f"host={parts.hostname or '127.0.0.1'}",
            f"port={parts.port or 5432}",
            f"dbname={self.dbname}",
        ]
        server.append(f"user={self.user}")
        if parts.password:
            server.append(f"password={unquote(parts.password)}")
        ini = workdir / "pgbouncer.ini"
        lines = [
            "[databases]",
            f"{self.dbname} = {' '.join(server)}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {users}",
            "pool_mode = transaction",
            f"default_pool_size = {pool_size}",
            f"max_client_conn = {max_clients}",
            "server_lifetime = 600",
            "log_connections = 0",
            "log_disconnections = 0",
        ]
        if os.geteuid() == 0:
            lines.append("user = postgres")
        ini.write_text("\n".join(lines) + "\n")
        ini.chmod(0o644)
        self.log_path = workdir / "pgbouncer.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [executable, str(ini)], stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_listening()

    @property
    def url(self) -> str:
        """The database URL through PgBouncer (no password: PgBouncer holds it)."""
        return urlunsplit((self.scheme, f"{self.user}@127.0.0.1:{self.port}", f"/{self.dbname}", "", ""))

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def _wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer not listening within {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
