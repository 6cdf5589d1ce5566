"""What every API benchmark shares: a fresh PostgreSQL database, the CLI, `greengate serve` as a
subprocess, an HTTP/1.1 keep-alive load generator in separate processes, pgbench on the same
database, CPU accounting from /proc, the results table and the JSON file.

A benchmark module (bench/exchange.py, bench/merchant.py) seeds its data, describes each HTTP phase
as a `Workload` (the request it sends, how it judges an answer) and each pgbench phase as a script
under bench/pgbench/<benchmark>/, and hands the pairs to `BenchRun.finish`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import glob
import http.client
import json
import math
import multiprocessing
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from bench.pgbouncer import PgBouncer, find_pgbouncer

if TYPE_CHECKING:
    from greengate.settings import Settings

BENCH_DIR = Path(__file__).resolve().parent
PGBENCH_DIR = BENCH_DIR / "pgbench"
RESULTS_DIR = BENCH_DIR / "results"
# Cores that other processes may keep busy before a run is flagged as disturbed.
NOISE_CORES = 0.25
CPU_SAMPLE_SECONDS = 0.5
REQUEST_TIMEOUT = 30.0
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
SETTLE_TIMEOUT = 20.0
PRIME_SECONDS = 3.0  # unrecorded write load before a measured write phase
# The half-load phase after each measured one: open loop at half the rate just measured.
HALF_WARMUP = 0.5  # unrecorded seconds at its start, while the closed loop's last requests drain
HALF_GRACE = 2.0  # how long its last scheduled requests may take to answer after its window
HALF_LOAD_P99_MS = 25.0  # the requirement: p99 under 25 ms at half of the target load
CLI_TIMEOUT = 120.0
ERROR_SAMPLES = 5


# --- results ---------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """What one load-generator process measured in one phase."""

    latencies: list[float] = field(default_factory=list)  # seconds, requests completed in the window
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    window: float = 0.0  # seconds from the end of the warm-up to the last recorded completion
    warmup_requests: int = 0
    flagged: int = 0  # successes the workload counts apart (e.g. orders created without requisites)
    unfinished: int = 0  # requests still waiting for an answer when the window closed
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds used during the window
    cpu_window: float = 0.0  # wall seconds the CPU figures cover
    offered: float = 0.0  # open loop: requests a second scheduled; 0 in a closed loop
    queued: int = 0  # open loop: requests whose time came while every connection was busy


@dataclass
class PhaseSummary:
    name: str
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    warmup_requests: int
    error_samples: list[str]
    flagged: int = 0
    flag_label: str = ""
    unfinished: int = 0
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    cores_busy: dict[str, float] = field(default_factory=dict)
    offered_rps: float = 0.0  # open loop only
    queued: int = 0  # open loop only
    half: PhaseSummary | None = None  # the open-loop phase at half this one's rate, if it ran


@dataclass
class PgbenchSummary:
    script: str
    clients: int
    threads: int
    seconds: int
    transactions: int
    failed: int
    tps: float
    p50_ms: float
    p99_ms: float
    latency_avg_ms: float
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    cores_busy: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    """One row of the table: an HTTP phase, the baseline phase doing its bare SQL (pgbench, or raw
    SQLite with `--sqlite`), the target ratio, and absolute targets where the row has them."""

    http: PhaseSummary
    pgbench: PgbenchSummary
    target: float
    min_rps: float = 0.0
    max_p99_ms: float | None = None
    half_max_p99_ms: float | None = HALF_LOAD_P99_MS  # of the half-load phase; None: report only

    def met(self) -> bool:
        return (
            ratio(self.http.rps, self.pgbench.tps) >= self.target
            and self.http.rps >= self.min_rps
            and (self.max_p99_ms is None or self.http.p99_ms < self.max_p99_ms)
        )

    def target_text(self) -> str:
        parts = [f"{self.target:.2f}"] if self.target else []
        if self.min_rps:
            parts.append(f">={self.min_rps:.0f}/s")
        if self.max_p99_ms is not None:
            parts.append(f"p99<{self.max_p99_ms:.0f}")
        return " ".join(parts) or "-"

    def half_met(self) -> bool | None:
        """Whether the half-load phase answered every request it sent in time with its p99 under the
        target; None without a target or without the phase."""
        half = self.http.half
        if half is None or self.half_max_p99_ms is None:
            return None
        return half.requests > 0 and half.unfinished == 0 and half.p99_ms < self.half_max_p99_ms


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def summarize(name: str, parts: list[LoadResult], flag_label: str = "") -> PhaseSummary:
    """One phase's figures over the load processes' parts. In an open loop every part's window is the
    whole schedule, so the rate is the answered requests over it."""
    latencies = sorted(x for p in parts for x in p.latencies)
    seconds = max((p.window for p in parts), default=0.0)
    samples = [s for p in parts for s in p.error_samples][:ERROR_SAMPLES]
    n = len(latencies)
    # Server and PostgreSQL are machine-wide figures (every load process saw the same); clients add up.
    cpu = dict(parts[0].cpu) if parts and parts[0].cpu else {}
    if cpu:
        cpu["client"] = round(sum(p.cpu.get("client", 0.0) for p in parts), 3)
        cpu["other"] = round(cpu.pop("machine") - cpu["server"] - cpu["postgres"] - cpu["client"], 3)
    window = parts[0].cpu_window if parts else 0.0
    return PhaseSummary(
        name=name,
        requests=n,
        errors=sum(p.errors for p in parts),
        seconds=round(seconds, 3),
        rps=round(n / seconds, 1) if seconds > 0 else 0.0,
        p50_ms=round(percentile(latencies, 50) * 1000, 2),
        p99_ms=round(percentile(latencies, 99) * 1000, 2),
        mean_ms=round(sum(latencies) / n * 1000, 2) if n else 0.0,
        max_ms=round(latencies[-1] * 1000, 2) if n else 0.0,
        warmup_requests=sum(p.warmup_requests for p in parts),
        error_samples=samples,
        flagged=sum(p.flagged for p in parts),
        flag_label=flag_label,
        unfinished=sum(p.unfinished for p in parts),
        cpu_ms_per_request={k: round(v * 1000 / n, 3) for k, v in cpu.items()} if n else {},
        cores_busy={k: round(v / window, 2) for k, v in cpu.items()} if window > 0 else {},
        offered_rps=round(sum(p.offered for p in parts), 1),
        queued=sum(p.queued for p in parts),
    )


# --- CPU accounting (Linux /proc) ------------------------------------------------------------------------


def _proc_stats() -> dict[int, tuple[str, int, float]]:
    """pid -> (command name, parent pid, user+system CPU seconds) for every visible process."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[str, int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is field 3 of proc(5): state; ppid is field 4, utime 14, stime 15.
        stats[int(entry)] = (name, int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    return stats


_CLIENT_BACKEND = re.compile(r"^postgres: (?:\S+: )?\S+ (\S+) (?:\S+\(\d+\)|\[local\])")


def _counts_for(pid: int, database: str | None) -> bool:
    """Whether a PostgreSQL process works for this run: the database's own backends and the shared
    background processes (WAL writer, checkpointer, ...), not the backends of other databases."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            title = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return False
    m = _CLIENT_BACKEND.match(title)
    return m is None or database is None or m.group(1) == database


def cpu_sample(
    server_pid: int | None, database: str | None, pooler_pid: int | None = None
) -> dict[str, float]:
    """CPU seconds used so far: per process of the server's tree ("server:<pid>") and of PostgreSQL
    ("postgres:<pid>"; the run's PgBouncer counts with it), and by the whole machine ("machine";
    whatever else runs shows as the rest)."""
    if not os.path.isdir("/proc"):
        return {}
    stats = _proc_stats()
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    sample: dict[str, float] = {}
    todo = [server_pid] if server_pid in stats else []
    while todo:
        pid = todo.pop()
        sample[f"server:{pid}"] = stats[pid][2]
        todo.extend(children.get(pid, []))
    for pid, (name, _, cpu) in stats.items():
        if name in ("postgres", "postmaster") and _counts_for(pid, database):
            sample[f"postgres:{pid}"] = cpu
    if pooler_pid in stats:
        sample[f"postgres:{pooler_pid}"] = stats[pooler_pid][2]
    with open("/proc/stat") as fh:
        # user nice system idle iowait irq softirq steal: everything but idle and iowait is busy.
        jiffies = [int(x) for x in fh.readline().split()[1:9]]
    sample["machine"] = (sum(jiffies) - jiffies[3] - jiffies[4]) / os.sysconf("SC_CLK_TCK")
    return sample


class CpuTracker:
    """CPU seconds used between the first sample and the last, per group (server, postgres, machine).
    Sampling every so often catches processes that exit in between (their last sample counts); one that
    starts in between counts in full."""

    def __init__(self, server_pid: int | None, database: str | None, pooler_pid: int | None = None) -> None:
        self.server_pid = server_pid
        self.database = database
        self.pooler_pid = pooler_pid
        self.first: dict[str, float] | None = None
        self.last: dict[str, float] = {}
        self.started = 0.0
        self.stopped = 0.0

    def sample(self) -> None:
        now = time.perf_counter()
        sample = cpu_sample(self.server_pid, self.database, self.pooler_pid)
        if self.first is None:
            self.first, self.started = sample, now
        self.last.update(sample)
        self.stopped = now

    @property
    def wall(self) -> float:
        return self.stopped - self.started

    def totals(self) -> dict[str, float]:
        if not self.first or "machine" not in self.first:
            return {}
        totals = {"server": 0.0, "postgres": 0.0, "machine": 0.0}
        for key, value in self.last.items():
            totals[key.split(":", 1)[0]] += value - self.first.get(key, 0.0)
        return {k: round(v, 3) for k, v in totals.items()}


# --- load generator (runs in its own process) ------------------------------------------------------------


class HttpError(Exception):
    pass


class Rejected(Exception):
    """An answer that does not count as a success; the message is kept as an error sample."""


class Workload:
    """One HTTP phase: the request each connection sends, one at a time, and how an answer is judged.

    Instances are pickled into the load-generator processes, so subclasses live at module level and
    hold plain data. `request` runs in the client's hot loop: keep it cheap.
    """

    name = "phase"
    flag_label = ""  # what `judge` returning True means, for the report ("" if it never does)

    def request(self, rng: random.Random, host: str, port: int) -> bytes:
        """The complete HTTP/1.1 request (keep-alive)."""
        raise NotImplementedError

    def judge(self, status: int, body: bytes) -> bool:
        """Raise Rejected unless the answer is a success; return True for a success to count apart."""
        raise NotImplementedError

    def problem(self) -> str | None:
        """Why the phase cannot run at all (e.g. nothing to read), counted as one error; None if it can."""
        return None


def post_bytes(host: str, port: int, path: str, content_type: str, body: bytes, headers: str = "") -> bytes:
    """A POST request; `headers` holds extra header lines, each ending in CRLF."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def excerpt(body: bytes) -> str:
    return body[:200].decode(errors="replace")


Response = tuple[int, bytes, bool]  # status, body, whether the server keeps the connection open


def parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """Status line and header lines (each ending in CRLF): status, Content-Length (None if absent),
    chunked, keep-alive."""
    line = head[: head.find(b"\r\n")]
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise HttpError(f"bad status line {line[:80]!r}")
    # Three searches in the lowered head rather than a Python loop over every header line.
    lower = head.lower()
    length = _header_value(lower, b"content-length")
    encoding = _header_value(lower, b"transfer-encoding")
    return (
        int(parts[1]),
        None if length is None else int(length),
        encoding is not None and b"chunked" in encoding,
        _header_value(lower, b"connection") != b"close",
    )


def _header_value(lower: bytes, name: bytes) -> bytes | None:
    """The value of a header in a lowered head whose lines all end in CRLF (None if absent)."""
    start = lower.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    return lower[start : lower.index(b"\r\n", start)].strip()


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection sending one request at a time. The response is parsed as its
    bytes arrive and resolves the request's future. Callbacks rather than asyncio streams, and one timer
    per connection rather than `wait_for` per request, because the load generator shares the CPU with
    the server it measures: every microsecond it spends per request is taken from the server."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.waiter: asyncio.Future[Response] | None = None  # of the request in flight
        self.sent = 0.0  # when that request was sent (perf_counter)
        self.buffer = b""  # received and not consumed yet
        self.head: tuple[int, int | None, bool, bool] | None = None  # of the response being read
        self.chunks: list[bytes] = []  # of a chunked body, so far
        self.chunk_at = 0  # offset in the buffer of the next chunk-size line

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence the cast.
        self.transport = cast(asyncio.Transport, transport)
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timer = self.loop.call_later(REQUEST_TIMEOUT, self.check_deadline)

    def send(self, payload: bytes, started: float) -> asyncio.Future[Response]:
        if self.closed or self.transport is None:
            raise ConnectionResetError("connection closed by the server")
        self.waiter = self.loop.create_future()
        self.sent = started
        self.transport.write(payload)
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def check_deadline(self) -> None:
        """Fail the request in flight once it has run REQUEST_TIMEOUT. The timer is re-armed when it
        fires (at most once per REQUEST_TIMEOUT), not per request; connection_lost cancels it."""
        now = time.perf_counter()
        due = (self.sent if self.waiter is not None else now) + REQUEST_TIMEOUT
        if due <= now:
            self.fail(TimeoutError(f"no complete answer within {REQUEST_TIMEOUT:g}s"))
            due = now + REQUEST_TIMEOUT
        self.timer = self.loop.call_later(due - now, self.check_deadline)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None:
            return  # unasked bytes: kept, so the next response's parse trips over them (as a stream would)
        try:
            response = self.parse()
        except (HttpError, ValueError) as exc:
            self.fail(exc)
            return
        if response is not None:
            waiter, self.waiter = self.waiter, None
            if not waiter.done():  # cancelled when the window closed
                waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        head = self.head
        if head is not None and head[1] is None and not head[2] and self.waiter is not None:
            # Neither Content-Length nor chunked: the body ends with the connection.
            waiter, self.waiter = self.waiter, None
            if not waiter.done():
                waiter.set_result((head[0], self.buffer, False))
        else:
            self.fail(exc or ConnectionResetError("connection closed before the end of the response"))

    def fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def parse(self) -> Response | None:
        """The response once the buffer holds all of it, None until then."""
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return None
            self.head = parse_head(self.buffer[: end + 2])
            self.buffer = self.buffer[end + 4 :]
        status, length, chunked, keep_alive = self.head
        if chunked:
            body = self.dechunk()
            if body is None:
                return None
        elif length is None or len(self.buffer) < length:
            return None  # without a length, connection_lost ends the body
        else:
            body, self.buffer = self.buffer[:length], self.buffer[length:]
        self.head = None
        return status, body, keep_alive

    def dechunk(self) -> bytes | None:
        """The chunked body once the buffer holds its last chunk and trailers, None until then."""
        buf, at = self.buffer, self.chunk_at
        while (eol := buf.find(b"\r\n", at)) >= 0:
            size = int(buf[at:eol].split(b";", 1)[0], 16)
            if size == 0:
                end = buf.find(b"\r\n\r\n", eol)  # the empty line after the trailers, if any
                if end < 0:
                    break
                body, self.chunks = b"".join(self.chunks), []
                self.buffer, self.chunk_at = buf[end + 4 :], 0
                return body
            if len(buf) < eol + size + 4:
                break
            self.chunks.append(buf[eol + 2 : eol + 2 + size])
            at = eol + size + 4
        self.chunk_at = at
        return None


class LoadRun:
    """Keep-alive connections each sending one request at a time, in phases over the same connections.

    The measured phase is a closed loop: a connection sends its next request as soon as it has the
    answer, until the window or the count ends. Then, unless `half_duration` is 0, the half-load phase
    is an open loop at half the rate just measured: requests are due on a fixed schedule whatever the
    answers, a free connection takes the next one due, and its latency counts from when it was due —
    so a request that waits for a connection (all busy) carries that wait, as a user's request would.
    At half the rate the connections saturate at, they are rarely all busy: `queued` counts the times.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.host: str = spec["host"]
        self.port: int = spec["port"]
        self.workload: Workload = spec["workload"]
        self.connections: int = spec["connections"]
        self.warmup: float = spec["warmup"]
        self.duration: float = spec["duration"]
        self.half_duration: float = spec.get("half_duration", 0.0)
        self.max_requests: int = spec["max_requests"]
        self.server_pid: int | None = spec.get("server_pid")
        self.database: str | None = spec.get("database")
        self.pooler_pid: int | None = spec.get("pooler_pid")
        self.rng = random.Random(spec.get("seed"))
        self.idle: list[HttpConnection] = []  # open, nothing in flight: kept for the next phase
        self.result = LoadResult()
        self.warm_end = 0.0
        self.end = 0.0
        self.last_done = 0.0
        self.stop = False
        self.client_cpu_start = 0.0
        self.interval = 0.0  # open loop: seconds between due times; 0 for a closed loop
        self.next_due = 0.0  # open loop: when the next request nobody has taken yet is due

    def failure(self, what: str) -> None:
        self.result.errors += 1
        if len(self.result.error_samples) < ERROR_SAMPLES:
            self.result.error_samples.append(what[:300])

    def accept(self, status: int, body: bytes) -> bool:
        try:
            if self.workload.judge(status, body):
                self.result.flagged += 1
        except Rejected as exc:
            self.failure(str(exc))
            return False
        return True

    async def connect(self) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: HttpConnection(loop), self.host, self.port), REQUEST_TIMEOUT
        )
        return conn

    async def due(self) -> float:
        """Open loop: take the next request due and wait for its time; the time it was due. Taken once
        due already, it waited for this connection to be free."""
        due, self.next_due = self.next_due, self.next_due + self.interval
        if due >= self.end:
            return due
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif due >= self.warm_end:
            self.result.queued += 1
        return due

    async def connection(self) -> None:
        conn = self.idle.pop() if self.idle else None
        try:
            while not self.stop:
                if conn is None:
                    conn = await self.connect()
                payload = self.workload.request(self.rng, self.host, self.port)
                started = await self.due() if self.interval else time.perf_counter()
                if started >= self.end:
                    break
                keep = False
                try:
                    status, body, keep = await conn.send(payload, started)
                except (TimeoutError, OSError, HttpError, ValueError) as exc:
                    ok = False
                    self.failure(f"{type(exc).__name__}: {exc}")
                else:
                    ok = self.accept(status, body)
                done = time.perf_counter()
                # Open loop: every request due in the window counts, however late its answer.
                if started >= self.warm_end and (done <= self.end or self.interval):
                    if ok:
                        self.result.latencies.append(done - started)
                        self.last_done = max(self.last_done, done)
                        if len(self.result.latencies) >= self.max_requests:
                            self.stop = True
                elif started < self.warm_end:
                    self.result.warmup_requests += 1
                if not keep:
                    conn.close()
                    conn = None
            if conn is not None:
                self.idle.append(conn)
                conn = None
        except (TimeoutError, OSError) as exc:
            self.failure(f"connect: {type(exc).__name__}: {exc}")
        finally:
            if conn is not None:  # a request still in flight (cancelled): its answer would follow
                conn.close()

    async def track_cpu(self, tracker: CpuTracker) -> None:
        """Sample CPU use from the end of the warm-up on, every CPU_SAMPLE_SECONDS, until cancelled."""
        await asyncio.sleep(max(0.0, self.warm_end - time.perf_counter()))
        self.client_cpu_start = time.process_time()
        while True:
            await asyncio.to_thread(tracker.sample)
            await asyncio.sleep(CPU_SAMPLE_SECONDS)

    async def run(self) -> tuple[LoadResult, LoadResult | None]:
        """The measured phase, then the half-load phase (None when it does not run)."""
        problem = self.workload.problem()
        if problem is not None:
            self.failure(problem)
            return self.result, None
        try:
            measured = await self.phase(self.warmup, self.duration)
            half = None
            if self.half_duration > 0 and measured.window > 0:
                rate = len(measured.latencies) / measured.window / 2
                half = await self.phase(HALF_WARMUP, self.half_duration, rate)
            return measured, half
        finally:
            for conn in self.idle:
                conn.close()

    async def phase(self, warmup: float, duration: float, rate: float = 0.0) -> LoadResult:
        """One phase over the connections: a closed loop, or with `rate` an open loop at that many
        requests a second."""
        self.result = LoadResult(offered=round(rate, 1))
        self.stop = False
        self.last_done = 0.0
        # perf_counter, not loop.time(): uvloop's clock has millisecond resolution.
        self.next_due = time.perf_counter()
        self.warm_end = self.next_due + warmup
        self.end = self.warm_end + duration
        self.interval = 1 / rate if rate else 0.0
        tasks = [asyncio.create_task(self.connection()) for _ in range(self.connections)]
        tracker = CpuTracker(self.server_pid, self.database, self.pooler_pid)
        sampler = asyncio.create_task(self.track_cpu(tracker))
        # Closed loop: a request still running when the window closes could not be counted anyway.
        # Open loop: the last ones due get HALF_GRACE to answer. Then what is left is cancelled.
        grace = HALF_GRACE if rate else 0.05
        _, pending = await asyncio.wait(tasks, timeout=self.end - time.perf_counter() + grace)
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        if tracker.first is not None:
            await asyncio.to_thread(tracker.sample)
            cpu = tracker.totals()
            if cpu:
                self.result.cpu = {**cpu, "client": round(time.process_time() - self.client_cpu_start, 3)}
                self.result.cpu_window = round(tracker.wall, 3)
        self.result.unfinished = len(pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if rate and self.result.latencies:
            self.result.window = duration
        elif self.last_done > self.warm_end:
            self.result.window = self.last_done - self.warm_end
        return self.result


def load_process(spec: dict[str, Any]) -> tuple[LoadResult, LoadResult | None]:
    """Entry point of a load-generator process."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(LoadRun(spec).run())


# --- database, CLI and server ----------------------------------------------------------------------------


@dataclass
class Pg:
    host: str
    port: int
    user: str

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{database}"

    async def execute(self, database: str, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(host=self.host, port=self.port, user=self.user, database=database)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def fetchval(self, database: str, sql: str, *args: Any) -> Any:
        import asyncpg

        conn = await asyncpg.connect(host=self.host, port=self.port, user=self.user, database=database)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before it was ready")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/readyz")
            response = conn.getresponse()
            body = response.read()
            if response.status == 200:
                return
            last = f"HTTP {response.status}: {body[:200]!r}"
        except OSError as exc:
            last = repr(exc)
        finally:
            conn.close()
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {READY_TIMEOUT:.0f}s: {last}")


def settle(server_pid: int) -> bool:
    """Wait until the server has finished the requests the load generator gave up on (its processes
    are nearly idle); False if it is still busy after SETTLE_TIMEOUT."""
    if not os.path.isdir("/proc"):
        time.sleep(1.0)
        return True
    deadline = time.monotonic() + SETTLE_TIMEOUT
    quiet = 0
    while time.monotonic() < deadline:
        tracker = CpuTracker(server_pid, None)
        tracker.sample()
        time.sleep(0.25)
        tracker.sample()
        quiet = quiet + 1 if tracker.totals().get("server", 0.0) < 0.025 else 0
        if quiet >= 2:
            return True
    return False


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM to the server (it stops its workers), SIGKILL to its process group if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT)


def git_revision() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=BENCH_DIR.parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return None
    return done.stdout.strip() or None


# --- pgbench ---------------------------------------------------------------------------------------------


def pgbench(
    pg: Pg,
    database: str,
    script: Path,
    *,
    clients: int,
    seconds: int,
    variables: dict[str, int],
    log_dir: Path,
) -> PgbenchSummary:
    """Run one pgbench script (`-n -M prepared`, per-transaction log for p50/p99) and read its figures."""
    name = script.stem
    threads = max(1, min(clients, os.cpu_count() or 1))
    prefix = log_dir / f"pgbench_{name}"
    cmd = [
        shutil.which("pgbench") or "/usr/bin/pgbench",
        "-h", pg.host,
        "-p", str(pg.port),
        "-U", pg.user,
        "-n",
        "-M", "prepared",
        "-T", str(seconds),
        "-c", str(clients),
        "-j", str(threads),
        "-l", f"--log-prefix={prefix}",
        "-f", str(script),
    ]  # fmt: skip
    for var, value in variables.items():
        cmd += ["-D", f"{var}={value}"]
    cmd.append(database)
    tracker = CpuTracker(None, database)
    tracker.sample()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + seconds + 120
    while True:
        try:
            out, err = proc.communicate(timeout=CPU_SAMPLE_SECONDS)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                proc.kill()
                proc.communicate()
                raise RuntimeError(f"pgbench {name} did not finish") from None
            tracker.sample()
    tracker.sample()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench {name} failed ({proc.returncode}): {err.strip()[-2000:]}")
    cpu = tracker.totals()
    cpu.pop("server", None)
    if cpu:
        cpu["client"] = round(
            children_after.ru_utime
            + children_after.ru_stime
            - children_before.ru_utime
            - children_before.ru_stime,
            3,
        )
        cpu["other"] = round(cpu.pop("machine") - cpu["postgres"] - cpu["client"], 3)
    wall = tracker.wall

    def grab(pattern: str, default: str = "0") -> str:
        m = re.search(pattern, out, re.MULTILINE)
        return m.group(1) if m else default

    latencies: list[float] = []
    for path in glob.glob(f"{prefix}.*"):
        with open(path) as fh:
            for line in fh:
                cols = line.split()
                if len(cols) >= 3 and cols[2].isdigit():
                    latencies.append(int(cols[2]) / 1e6)
    latencies.sort()
    transactions = int(grab(r"number of transactions actually processed: (\d+)"))
    return PgbenchSummary(
        script=name,
        clients=clients,
        threads=threads,
        seconds=seconds,
        transactions=transactions,
        failed=int(grab(r"number of failed transactions: (\d+)")),
        tps=round(float(grab(r"^tps = ([\d.]+)")), 1),
        p50_ms=round(percentile(latencies, 50) * 1000, 2),
        p99_ms=round(percentile(latencies, 99) * 1000, 2),
        latency_avg_ms=float(grab(r"latency average = ([\d.]+) ms")),
        cpu_ms_per_request={k: round(v * 1000 / max(1, transactions), 3) for k, v in cpu.items()},
        cores_busy={k: round(v / wall, 2) for k, v in cpu.items()} if wall > 0 else {},
    )


# --- report ----------------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b > 0 else 0.0


def http_phases(rows: list[Comparison]) -> list[PhaseSummary]:
    """Every HTTP phase of the rows: each measured one, followed by its half-load phase if it ran."""
    return [phase for row in rows for phase in (row.http, row.http.half) if phase is not None]


def report(rows: list[Comparison]) -> list[dict[str, Any]]:
    """Print the table, the phase details and the CPU table; return the verdict per endpoint (a
    half-load phase is an endpoint of its own, "<name> @half")."""
    width = max(8, *(len(phase.name) for phase in http_phases(rows)))
    verdicts: list[dict[str, Any]] = []
    print()
    print(
        f"{'endpoint':<{width}} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} | "
        f"{'baseline':<10} {'tps':>9} {'p50 ms':>8} {'p99 ms':>8} | {'ratio':>6} {'target':>22}  met"
    )
    print("-" * (120 + width))
    for row in rows:
        http_phase, pg_phase = row.http, row.pgbench
        r = ratio(http_phase.rps, pg_phase.tps)
        met = row.met()
        verdicts.append(
            {
                "endpoint": http_phase.name,
                "ratio": r,
                "target": row.target,
                "min_rps": row.min_rps,
                "max_p99_ms": row.max_p99_ms,
                "met": met,
            }
        )
        print(
            f"{http_phase.name:<{width}} {http_phase.rps:>9.1f} {http_phase.p50_ms:>8.2f} "
            f"{http_phase.p99_ms:>8.2f} {http_phase.errors:>7} | {pg_phase.script:<10} {pg_phase.tps:>9.1f} "
            f"{pg_phase.p50_ms:>8.2f} {pg_phase.p99_ms:>8.2f} | {r:>6.3f} {row.target_text():>22}  "
            f"{'yes' if met else 'NO'}"
        )
        half = http_phase.half
        if half is None:
            continue
        # The baseline columns hold the rate the open loop offered (half the measured req/s).
        half_met = row.half_met()
        verdicts.append(
            {
                "endpoint": half.name,
                "offered_rps": half.offered_rps,
                "rps": half.rps,
                "p99_ms": half.p99_ms,
                "max_p99_ms": row.half_max_p99_ms,
                "met": half_met,
            }
        )
        target = "-" if row.half_max_p99_ms is None else f"p99<{row.half_max_p99_ms:.0f}"
        print(
            f"{half.name:<{width}} {half.rps:>9.1f} {half.p50_ms:>8.2f} {half.p99_ms:>8.2f} "
            f"{half.errors:>7} | {'offered':<10} {half.offered_rps:>9.1f} {'':>8} {'':>8} | {'':>6} "
            f"{target:>22}  {'-' if half_met is None else 'yes' if half_met else 'NO'}"
        )
    print()
    for row in rows:
        for phase in (row.http, row.http.half):
            if phase is None:
                continue
            extra = f", {phase.flagged} {phase.flag_label}" if phase.flagged else ""
            if phase.offered_rps:
                extra += f"; {phase.offered_rps:.1f}/s offered, {phase.queued} waited for a connection"
            print(
                f"{phase.name}: {phase.requests} requests in {phase.seconds:.2f}s "
                f"(mean {phase.mean_ms:.2f} ms, max {phase.max_ms:.2f} ms, {phase.warmup_requests} warm-up, "
                f"{phase.unfinished} unanswered at the end){extra}"
            )
            for sample in phase.error_samples:
                print(f"  error: {sample}")
    for row in rows:
        pgb = row.pgbench
        print(
            f"baseline {pgb.script}: {pgb.transactions} transactions, {pgb.failed} failed, "
            f"{pgb.clients} clients, {pgb.threads} threads"
        )
    items: list[tuple[str, PhaseSummary | PgbenchSummary]] = [(p.name, p) for p in http_phases(rows)]
    items += [(f"baseline {row.pgbench.script}", row.pgbench) for row in rows]
    if any(item.cores_busy for _, item in items):
        groups = ("server", "postgres", "client", "other")
        print("\nCPU ms per request (cores busy)" + "".join(f"{g:>17}" for g in groups))
        for label, item in items:
            cells = ""
            for g in groups:
                if g not in item.cores_busy:
                    cells += f"{'-':>17}"
                    continue
                per = item.cpu_ms_per_request.get(g)
                cells += f"{'-' if per is None else f'{per:.3f}':>10} ({item.cores_busy[g]:.2f})"
            print(f"  {label:<29}{cells}")
        noisy = {
            label: item.cores_busy["other"]
            for label, item in items
            if item.cores_busy.get("other", 0.0) > NOISE_CORES
        }
        if noisy:
            listed = ", ".join(f"{k} {v:.2f}" for k, v in noisy.items())
            print(f"\nWARNING: other processes kept cores busy ({listed}): the figures are disturbed.")
    return verdicts


# --- raw SQLite ------------------------------------------------------------------------------------------

# The baseline of `--sqlite`: what SQLite itself does on the same file with the gateway's durability
# (WAL, synchronous=FULL), one connection per client in threads, no application in between.
RAW_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_raw_rows (
    id INTEGER PRIMARY KEY, merchant_id INTEGER NOT NULL, amount INTEGER NOT NULL,
    status TEXT NOT NULL, payload TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bench_raw_events (
    id INTEGER PRIMARY KEY, row_id INTEGER NOT NULL, kind TEXT NOT NULL, at TEXT NOT NULL);
"""


def raw_sqlite(path: Path, script: str, clients: int, seconds: int) -> PgbenchSummary:
    """`write`: a two-insert transaction, committed durably; `read`: a point lookup by id."""
    import threading

    stop = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    max_id = 1
    if script == "read":
        with sqlite3.connect(path) as conn:
            max_id = conn.execute("SELECT coalesce(max(id), 1) FROM bench_raw_rows").fetchone()[0]

    def client(n: int) -> None:
        rng = random.Random(n)
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        payload = "x" * 200
        mine = latencies[n]
        try:
            while time.monotonic() < stop:
                started = time.perf_counter()
                try:
                    if script == "write":
                        now = datetime.now(UTC).isoformat()
                        conn.execute("BEGIN IMMEDIATE")
                        row_id = conn.execute(
                            "INSERT INTO bench_raw_rows (merchant_id, amount, status, payload, created_at)"
                            " VALUES (1, ?, 'new', ?, ?)",
                            (rng.randint(1, 10**9), payload, now),
                        ).lastrowid
                        conn.execute(
                            "INSERT INTO bench_raw_events (row_id, kind, at) VALUES (?, 'created', ?)",
                            (row_id, now),
                        )
                        conn.execute("COMMIT")
                    else:
                        conn.execute(
                            "SELECT * FROM bench_raw_rows WHERE id = ?", (rng.randint(1, max_id),)
                        ).fetchone()
                except sqlite3.Error:
                    failures[n] += 1
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    continue
                mine.append(time.perf_counter() - started)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    done = sorted(x for part in latencies for x in part)
    return PgbenchSummary(
        script=f"raw {script}",
        clients=clients,
        threads=clients,
        seconds=seconds,
        transactions=len(done),
        failed=sum(failures),
        tps=round(len(done) / elapsed, 1),
        p50_ms=round(percentile(done, 50) * 1000, 2),
        p99_ms=round(percentile(done, 99) * 1000, 2),
        latency_avg_ms=round(sum(done) / len(done) * 1000, 2) if done else 0.0,
    )


# --- command line ----------------------------------------------------------------------------------------


def arg_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """The options every benchmark has; a benchmark adds its own before `parse_args`."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=10, help="measured seconds per phase (default 10)")
    p.add_argument("--concurrency", type=int, default=32, help="HTTP connections and pgbench clients")
    p.add_argument("--warmup", type=float, default=1.5, help="unrecorded seconds before each phase")
    p.add_argument(
        "--half-duration",
        type=float,
        default=5.0,
        help="measured seconds of the half-load (open-loop) phase after each HTTP phase (default 5)",
    )
    p.add_argument("--no-half", action="store_true", help="skip the half-load phases")
    p.add_argument("--max-requests", type=int, default=200_000, help="recorded requests per phase, at most")
    p.add_argument("--server-workers", type=int, default=2, help="greengate serve --workers")
    p.add_argument("--client-processes", type=int, default=1, help="load-generator processes")
    p.add_argument("--pg-host", default="127.0.0.1")
    p.add_argument("--pg-port", type=int, default=5432)
    p.add_argument("--pg-user", default="postgres")
    p.add_argument(
        "--sqlite",
        action="store_true",
        help="run the gateway on a SQLite file and compare with raw durable SQLite, not pgbench",
    )
    p.add_argument(
        "--pgbouncer",
        action="store_true",
        help="the server connects through a PgBouncer (transaction pooling) started for the run; "
        "pgbench stays direct",
    )
    return p


def parse_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    if not 1 <= args.duration <= 60:
        p.error("--duration must be between 1 and 60 seconds")
    if not 0 <= args.warmup <= 10:
        p.error("--warmup must be between 0 and 10 seconds")
    if not 1 <= args.half_duration <= 60:
        p.error("--half-duration must be between 1 and 60 seconds")
    if not 1 <= args.concurrency <= 512:
        p.error("--concurrency must be between 1 and 512")
    if not 1 <= args.client_processes <= min(8, args.concurrency):
        p.error("--client-processes must be between 1 and min(8, concurrency)")
    if not 1 <= args.server_workers <= 16:
        p.error("--server-workers must be between 1 and 16")
    if args.sqlite and args.pgbouncer:
        p.error("--sqlite and --pgbouncer exclude each other")
    if args.pg_host not in ("127.0.0.1", "localhost", "::1"):
        p.error("--pg-host must be a loopback address")
    return args


COMMON_CONFIG = (
    "duration", "warmup", "half_duration", "no_half", "concurrency", "server_workers", "client_processes",
    "max_requests", "sqlite", "pgbouncer",
)  # fmt: skip


# --- one run ---------------------------------------------------------------------------------------------


class BenchRun:
    """One benchmark run: its database, working directory, server and load processes.

    Used as a context manager: on the way out — also on failure, Ctrl-C or SIGTERM — the server is
    stopped, the load processes are shut down and the database is dropped. Nothing is written to the
    working directory but bench/results/<name>-<timestamp>.json.
    """

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.args = args
        self.pg = Pg(args.pg_host, args.pg_port, args.pg_user)
        self.database = f"greengate_bench_{os.getpid()}"
        self.workdir = Path(tempfile.mkdtemp(prefix="greengate-bench-"))
        self.sqlite_file = self.workdir / "bench.db" if args.sqlite else None
        self.key_file = str(self.workdir / "unused.key")
        self.keys = "bench:" + base64.urlsafe_b64encode(os.urandom(32)).decode()
        (self.workdir / "metrics").mkdir()
        self.env = {
            **os.environ,
            "GREENGATE_DATABASE_URL": self.database_url,
            "GREENGATE_ENCRYPTION_KEYS": self.keys,
            "GREENGATE_ENCRYPTION_KEY_FILE": self.key_file,
            "GREENGATE_LOG_LEVEL": "WARNING",
            "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / "metrics"),
        }
        self.server: subprocess.Popen[bytes] | None = None
        self.bouncer: PgBouncer | None = None
        self.server_log = self.workdir / "server.log"
        self.port = 0
        self.created_db = False
        self.started = time.monotonic()
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._seed = 0

    def __enter__(self) -> BenchRun:
        # SIGTERM unwinds like Ctrl-C, so the server is stopped and the database dropped.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and self.server_log.exists() and self.server_log.stat().st_size:
            tail = self.server_log.read_text(errors="replace")[-3000:]
            print(f"--- server output (tail) ---\n{tail}", file=sys.stderr)
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        stop_process(self.server)
        if self.bouncer is not None:
            self.bouncer.stop()
        if self.created_db:
            try:
                self.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)', database="postgres")
            except Exception as exc:
                print(f"could not drop database {self.database}: {exc}", file=sys.stderr)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # database

    @property
    def database_url(self) -> str:
        if self.sqlite_file is not None:
            return f"sqlite+aiosqlite:///{self.sqlite_file}"
        return self.pg.url(self.database)

    def create_database(self) -> None:
        if self.sqlite_file is not None:
            print(f"database {self.sqlite_file}; migrating and seeding", flush=True)
            return
        self.execute(f'CREATE DATABASE "{self.database}"', database="postgres")
        self.created_db = True
        print(f"database {self.database} created; migrating and seeding", flush=True)

    def execute(self, sql: str, *, database: str | None = None) -> None:
        if self.sqlite_file is not None:
            with sqlite3.connect(self.sqlite_file) as conn:
                conn.executescript(sql)
            return
        asyncio.run(self.pg.execute(database or self.database, sql))

    def fetchval(self, sql: str, *args: Any) -> Any:
        if self.sqlite_file is not None:
            with sqlite3.connect(self.sqlite_file) as conn:
                return conn.execute(sql.replace("$1", "?"), args).fetchone()[0]
        return asyncio.run(self.pg.fetchval(self.database, sql, *args))

    def ids(self, table: str, merchant_id: int) -> list[int]:
        """Every id of `table` that belongs to the merchant."""
        sql = f"SELECT id FROM {table} WHERE merchant_id = ?"
        if self.sqlite_file is not None:
            with sqlite3.connect(self.sqlite_file) as conn:
                return [row[0] for row in conn.execute(sql, (merchant_id,))]
        found = self.fetchval(
            f"SELECT coalesce(array_agg(id), '{{}}') FROM {table} WHERE merchant_id = $1",
            merchant_id,
        )
        return list(found)

    def settings(self) -> Settings:
        """greengate Settings for this run's database and keys, to seed through services in-process."""
        from greengate.settings import Settings

        return Settings(
            database_url=self.database_url,
            encryption_keys=self.keys,
            encryption_key_file=self.key_file,
            log_level="WARNING",
        )

    def cli(self, *args: str) -> str:
        """`greengate <args>` against this run's database; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "greengate.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"greengate {' '.join(args[:2])} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout

    # server and load

    def server_database_env(self) -> dict[str, str]:
        """The server's database settings: direct, or through this run's PgBouncer (started once)."""
        if not self.args.pgbouncer:
            return {}
        if self.bouncer is None:
            executable, why = find_pgbouncer(install=False)
            if executable is None:
                raise SystemExit(f"--pgbouncer: {why} (apt-get install pgbouncer)")
            # As many PostgreSQL backends as the direct run's load can use: the comparison is of the
            # pooler's cost, not of a smaller pool.
            self.bouncer = PgBouncer(
                executable, self.database_url, self.workdir / "pgbouncer", pool_size=self.args.concurrency
            )
            print(f"pgbouncer on 127.0.0.1:{self.bouncer.port} (transaction pooling)", flush=True)
        return {"GREENGATE_DATABASE_URL": self.bouncer.url, "GREENGATE_DATABASE_POOLER": "pgbouncer"}

    def start_server(self) -> None:
        self.port = free_port()
        serve_cmd = [
            sys.executable, "-m", "greengate.cli", "serve",
            "--workers", str(self.args.server_workers),
            "--no-worker",
            "--host", "127.0.0.1",
            "--port", str(self.port),
        ]  # fmt: skip
        with open(self.server_log, "wb") as log_fh:
            self.server = subprocess.Popen(
                serve_cmd,
                env={
                    **self.env,
                    **self.server_database_env(),
                    "GREENGATE_PUBLIC_BASE_URL": f"http://127.0.0.1:{self.port}",
                },
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_ready(self.server, self.port)
        print(
            f"server pid {self.server.pid} on 127.0.0.1:{self.port} ({self.args.server_workers} workers); "
            f"load: {self.args.concurrency} connections, {self.args.warmup}s warm-up + "
            f"{self.args.duration}s per phase"
            + ("" if self.args.no_half else f", then {self.args.half_duration:g}s at half load"),
            flush=True,
        )

    def stop_server(self) -> None:
        stop_process(self.server)
        self.server = None

    def prime(self, workload: Workload, seconds: float = PRIME_SECONDS) -> None:
        """An unrecorded run of a write workload, then ANALYZE (`settle`): the measured phase then runs
        on tables that hold rows and statistics of them, as on a server that has been taking requests.
        Without it a server whose autovacuum is off keeps the plans it made for empty tables."""
        self.load(workload, duration=seconds, half=False, label="priming ")
        self.settle(after=f"priming {workload.name}")

    def load(
        self, workload: Workload, *, duration: float | None = None, half: bool = True, label: str = ""
    ) -> PhaseSummary:
        """One HTTP phase: the connections spread over the load processes, each with its own seed; then,
        with `half` and unless --no-half, the half-load phase over the same connections (its summary is
        the phase's `half`). Each process offers half of what it measured: together, half the total."""
        assert self.server is not None, "start_server() first"
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = concurrent.futures.ProcessPoolExecutor(self.args.client_processes, mp_context=ctx)
        self._seed += 1
        procs, connections = self.args.client_processes, self.args.concurrency
        per_proc = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
        specs = [
            {
                "host": "127.0.0.1",
                "port": self.port,
                "workload": workload,
                "connections": n,
                "warmup": self.args.warmup,
                "duration": float(self.args.duration if duration is None else duration),
                "half_duration": self.args.half_duration if half and not self.args.no_half else 0.0,
                "max_requests": max(1, self.args.max_requests // procs),
                "server_pid": self.server.pid,
                "database": self.database,
                "pooler_pid": self.bouncer.proc.pid if self.bouncer is not None else None,
                "seed": 1000 * i + self._seed,
            }
            for i, n in enumerate(per_proc)
            if n > 0
        ]
        futures = [self._pool.submit(load_process, spec) for spec in specs]
        timeout = self.args.warmup + specs[0]["duration"] + REQUEST_TIMEOUT + 60
        timeout += HALF_WARMUP + specs[0]["half_duration"] + HALF_GRACE
        parts = [f.result(timeout=timeout) for f in futures]
        summary = summarize(workload.name, [measured for measured, _ in parts], workload.flag_label)
        print(f"{label}{summary.name}: {summary.rps:.1f} req/s, {summary.errors} errors", flush=True)
        halves = [half for _, half in parts if half is not None]
        if halves:
            summary.half = summarize(f"{workload.name} @half", halves, workload.flag_label)
            print(
                f"{summary.half.name}: {summary.half.rps:.1f} req/s of {summary.half.offered_rps:.1f} "
                f"offered, p99 {summary.half.p99_ms:.2f} ms, {summary.half.errors} errors",
                flush=True,
            )
        return summary

    def settle(self, after: str) -> None:
        """Wait for the server to finish what the previous phase left running, then refresh the
        planner's statistics of the rows it wrote, as autovacuum's analyze does on a server where it
        runs (it is off on some; a table analyzed empty keeps plans made for an empty table)."""
        if self.server is not None and not settle(self.server.pid):
            print(
                f"server still busy {SETTLE_TIMEOUT:.0f}s after the {after} phase; the next one is disturbed"
            )
        self.execute("ANALYZE")

    # pgbench

    def prepare_pgbench(self) -> int:
        """Stop the server (pgbench gets the machine alone), create the bench tables (the shared
        outbox.sql, then <name>/schema.sql), and return the client count capped below max_connections.
        With `--sqlite`: the raw baseline's tables in the same file."""
        self.stop_server()
        if self.sqlite_file is not None:
            self.execute(RAW_SQLITE_SCHEMA)
            print("raw SQLite write/read", flush=True)
            return self.args.concurrency
        max_conn = int(self.fetchval("SHOW max_connections"))
        clients = min(self.args.concurrency, max_conn - 10)
        if clients != self.args.concurrency:
            print(f"pgbench clients capped at {clients} by max_connections={max_conn}")
        self.execute((PGBENCH_DIR / "outbox.sql").read_text())
        self.execute((PGBENCH_DIR / self.name / "schema.sql").read_text())
        print("pgbench write/read", flush=True)
        return clients

    def pgbench(self, script: str, clients: int, variables: dict[str, int]) -> PgbenchSummary:
        if self.sqlite_file is not None:
            return raw_sqlite(self.sqlite_file, script, clients, self.args.duration)
        return pgbench(
            self.pg,
            self.database,
            PGBENCH_DIR / self.name / f"{script}.sql",
            clients=clients,
            seconds=self.args.duration,
            variables=variables,
            log_dir=self.workdir,
        )

    # results

    def finish(self, rows: list[Comparison], clients: int, config: dict[str, Any]) -> int:
        """Print the table, write bench/results/<name>-<timestamp>.json; the exit code (1: any failure)."""
        if self.args.pgbouncer:
            print("\nserver through PgBouncer in transaction pooling mode; pgbench direct to PostgreSQL")
        verdicts = report(rows)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        RESULTS_DIR.mkdir(exist_ok=True)
        out = RESULTS_DIR / f"{self.name}-{stamp}.json"
        document = {
            "timestamp": stamp,
            "revision": git_revision(),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "database": (
                    f"SQLite {sqlite3.sqlite_version}"
                    if self.sqlite_file is not None
                    else f"PostgreSQL {self.fetchval('SHOW server_version')}"
                ),
            },
            "config": {
                **{key: getattr(self.args, key) for key in COMMON_CONFIG},
                "pgbench_clients": clients,
                **config,
            },
            "http": {
                phase.name: {k: v for k, v in asdict(phase).items() if k != "half"}
                for phase in http_phases(rows)
            },
            "pgbench": {row.pgbench.script: asdict(row.pgbench) for row in rows},
            "targets": verdicts,
        }
        out.write_text(json.dumps(document, indent=2) + "\n")
        elapsed = time.monotonic() - self.started
        print(f"\nresults: {out.relative_to(BENCH_DIR.parent)}  ({elapsed:.0f}s in all)")
        failed = any(phase.errors for phase in http_phases(rows)) or any(row.pgbench.failed for row in rows)
        return 1 if failed else 0
