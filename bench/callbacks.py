"""Callback delivery under hostile targets: how long a fast merchant's callback waits while another
merchant's endpoint dribbles its answer, and how much memory a worker process takes to deliver to an
endpoint that answers with a huge body.

    .venv/bin/python -m bench.callbacks                  # both scenarios, on a temporary SQLite file
    .venv/bin/python -m bench.callbacks --huge-mb 400 --dribble-seconds 30

The worker of scenario 1 runs in this process (`Worker.run`); the worker of scenario 2 is a real
`greengate worker` process whose peak RSS (VmHWM) is read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from greengate.app import create_app
from greengate.settings import Settings
from greengate.store import migrate
from greengate.worker.loop import Worker
from tests.conftest import TEST_KEYS
from tests.support.exchange import create_order, make_client, make_direction, make_requisites
from tests.support.servers import Receiver


class RawServer:
    """A socket server that reads a request and answers by calling `answer(connection)`."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sent = 0
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def _serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            while len(rest) < length:
                rest += conn.recv(65536)
            try:
                self.answer(self, conn)  # type: ignore[operator]
            except OSError:
                pass


def dribble(seconds: float, every: float) -> object:
    def answer(server: RawServer, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            conn.sendall(b" ")
            time.sleep(every)

    return answer


def huge(megabytes: int) -> object:
    def answer(server: RawServer, conn: socket.socket) -> None:
        size = megabytes * 1_000_000
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {size}\r\n\r\n"
        conn.sendall(head.encode())
        chunk = b"x" * 1_000_000
        for _ in range(megabytes):
            conn.sendall(chunk)
            server.sent += len(chunk)

    return answer


def settings_for(url: str, workdir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": url,
        "encryption_keys": TEST_KEYS,
        "encryption_key_file": str(workdir / "unused.key"),
        "public_base_url": "http://testserver",
        "callback_allow_private": True,
        "worker_poll_seconds": 0.05,
        "fixed_rates": "RUB=3233561.44,KZT=27500000",
        "log_json": False,
        "log_level": "ERROR",
        "callback_retry_schedule": [3600],
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def isolation(workdir: Path, dribble_seconds: float, timeout: float) -> float:
    url = f"sqlite+aiosqlite:///{workdir / 'isolation.db'}"
    settings = settings_for(url, workdir, callback_timeout_seconds=timeout)
    slow_server = RawServer(dribble(dribble_seconds, timeout * 0.75))
    with Receiver() as fast_receiver:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            rt = app.state.runtime
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
                slow = await make_client(rt, "Slow office", webhook_url=slow_server.url)
                fast = await make_client(rt, "Fast office", webhook_url=fast_receiver.url)
                await make_direction(rt)
                await make_requisites(rt, 4)
                stop = asyncio.Event()
                running = asyncio.create_task(Worker(rt, name="bench").run(stop))
                assert (await create_order(api, slow)).status_code == 200
                await asyncio.sleep(1.0)  # the slow delivery is under way
                queued = time.monotonic()
                assert (await create_order(api, fast)).status_code == 200
                while not fast_receiver.requests:
                    await asyncio.sleep(0.02)
                delay = time.monotonic() - queued
                stop.set()
                await asyncio.wait_for(running, timeout=dribble_seconds + 30)
    return delay


async def memory(workdir: Path, megabytes: int) -> tuple[int, int, int]:
    url = f"sqlite+aiosqlite:///{workdir / 'memory.db'}"
    settings = settings_for(url, workdir)
    server = RawServer(huge(megabytes))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        rt = app.state.runtime
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
            who = await make_client(rt, "Huge office", webhook_url=server.url)
            await make_direction(rt)
            await make_requisites(rt, 1)
            assert (await create_order(api, who)).status_code == 200
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENGATE_")}
    env.update(
        GREENGATE_DATABASE_URL=url,
        GREENGATE_ENCRYPTION_KEYS=TEST_KEYS,
        GREENGATE_CALLBACK_ALLOW_PRIVATE="true",
        GREENGATE_CALLBACK_RETRY_SCHEDULE="[3600]",
        GREENGATE_LOG_LEVEL="ERROR",
        GREENGATE_CALLBACK_TIMEOUT_SECONDS="60",
    )
    proc = subprocess.Popen([sys.executable, "-m", "greengate.cli", "worker"], env=env, cwd=workdir)
    idle = peak = 0
    try:
        deadline = time.monotonic() + 120
        started = time.monotonic()
        while time.monotonic() < deadline:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            rss = int(fields["VmRSS"].split()[0])
            peak = int(fields["VmHWM"].split()[0])
            if time.monotonic() - started < 1.5:
                idle = rss
            if await _attempts(url) >= 1:
                break
            await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return idle, peak, server.sent


async def _attempts(url: str) -> int:
    from sqlalchemy import func, select
    from sqlalchemy.ext.asyncio import create_async_engine

    from greengate.store.models import DeliveryAttempt

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(DeliveryAttempt).where(DeliveryAttempt.duration_ms > 0)
            )
    finally:
        await engine.dispose()
    return int(count or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dribble-seconds", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=2.0, help="callback_timeout_seconds")
    parser.add_argument("--huge-mb", type=int, default=400)
    parser.add_argument("--only", choices=["isolation", "memory"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.only in (None, "isolation"):
            migrate.upgrade(f"sqlite+aiosqlite:///{workdir / 'isolation.db'}")
            delay = asyncio.run(isolation(workdir, args.dribble_seconds, args.timeout))
            print(
                f"fast callback delay while a dribbling endpoint is served "
                f"(timeout {args.timeout:g} s, dribble {args.dribble_seconds:g} s): {delay:.2f} s"
            )
        if args.only in (None, "memory"):
            migrate.upgrade(f"sqlite+aiosqlite:///{workdir / 'memory.db'}")
            idle, peak, sent = asyncio.run(memory(workdir, args.huge_mb))
            print(
                f"worker process with a {args.huge_mb} MB answer: idle RSS {idle / 1024:.0f} MB, "
                f"peak RSS {peak / 1024:.0f} MB, server managed to send {sent / 1e6:.0f} MB"
            )


if __name__ == "__main__":
    main()
