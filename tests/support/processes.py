"""Starting and stopping `greengate` subprocesses against the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import TEST_KEYS

GREENGATE = [sys.executable, "-m", "greengate.cli"]


def greengate_env(database_url: str, **overrides: str) -> dict[str, str]:
    """The parent's environment without any GREENGATE_* variable, plus the test configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENGATE_")}
    env.update(
        {
            "GREENGATE_DATABASE_URL": database_url,
            "GREENGATE_ENCRYPTION_KEYS": TEST_KEYS,
            "GREENGATE_CALLBACK_ALLOW_PRIVATE": "true",
            "GREENGATE_WORKER_POLL_SECONDS": "0.1",
            "GREENGATE_CALLBACK_RETRY_SCHEDULE": "[1,1,1,1,1]",
            "GREENGATE_LOG_LEVEL": "WARNING",
            "GREENGATE_LOG_JSON": "false",
        }
    )
    env.update({f"GREENGATE_{k.upper()}": v for k, v in overrides.items()})
    return env


class GreengateProcess:
    """One `greengate ...` command in its own process group; output goes to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], workdir: Path, name: str) -> None:
        self.args = args
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*GREENGATE, *args],
            env=env,
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_http(self, url: str, timeout: float = 60.0) -> httpx.Response:
        """Poll `url` until it answers 200; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if not self.running():
                raise AssertionError(
                    f"greengate {' '.join(self.args)} exited with {self.proc.returncode}:\n{self.output()}"
                )
            try:
                response = httpx.get(url, timeout=2.0)
                if response.status_code == 200:
                    return response
                last = response.status_code
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"{url} not ready within {timeout}s (last: {last!r}):\n{self.output()}")

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM the command (as an operator would) and wait; SIGKILL if it does not stop in time."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)

    def group_alive(self) -> bool:
        """Whether any process of the command's group (children it spawned) is still running."""
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown code runs."""
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def reap(self) -> None:
        # Children (server processes, a spawned worker) share the group; none may outlive the test.
        self._signal_group(signal.SIGKILL)
        self._log.close()


class Processes:
    """Starts greengate processes for one test and kills every one of them at teardown."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        self.database_url = database_url
        self.workdir = workdir
        self.started: list[GreengateProcess] = []

    def env(self, **overrides: str) -> dict[str, str]:
        return greengate_env(self.database_url, **overrides)

    def start(self, *args: str, env: dict[str, str] | None = None) -> GreengateProcess:
        name = f"{len(self.started):02d}-{args[0]}"
        proc = GreengateProcess(list(args), env or self.env(), self.workdir, name)
        self.started.append(proc)
        return proc

    def serve(self, port: int, *extra: str, env: dict[str, str] | None = None) -> GreengateProcess:
        proc = self.start("serve", "--host", "127.0.0.1", "--port", str(port), *extra, env=env)
        proc.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60.0)
        return proc

    def close(self) -> None:
        for proc in self.started:
            if proc.running():
                proc.kill()
            proc.reap()
