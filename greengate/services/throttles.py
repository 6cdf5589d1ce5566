"""Request limits and failed-authentication throttles, counted in the database so that every worker
process and every node sees the same counts, with each process keeping what it last learnt so that
the common request costs no database round trip.

A rule allows `limit` hits per subject in fixed windows of `window_seconds`. A request limit counts
every request and refuses the ones past the limit; a failure throttle counts failures only and,
once a subject has `limit` of them in a window, refuses it before authentication until the window
ends. Each engagement is written to the audit log once per window and counted in the metrics.

Failure throttles. Every failure is written at once (`count_failure`: one upsert, whose total the
process keeps). A check reads the process's kept total and asks the database only when that total
is below the limit and older than `FAILURE_TTL_SECONDS`. Slack: once the limit is reached, a
process that has not heard of it yet still lets guesses through, but each of them, once it fails,
writes its failure and reads back a total past the limit, which the process then keeps. So a process
lets past the limit at most the guesses from that subject it is serving at once before it hears:
across all processes, the guesser's requests in flight, one a process for a guesser that waits for
each answer. Neither the TTL nor the guess rate adds to it.

Request limits. A process counts a request in memory and writes its counted hits in one upsert (a
batch) when the last write it issued for the subject is `FLUSH_SECONDS` old, when its unconfirmed
hits (pending or being written) would pass `B = limit // BATCH_SHARE`, or when the database total it
last saw plus its unconfirmed hits would pass the limit; a request that writes is judged by the total
the upsert returns. Near the limit each request therefore writes and is judged by the database, and
a limit under `BATCH_SHARE` (B = 0) is exact. Slack: a process lets a request through without
writing only while its unconfirmed hits stay within B, and it stops at its first write that shows
the limit passed; so a client gets at most `limit + processes × B` requests a window (2 % more per
process serving it). A spent window is refused from memory, written once per `FLUSH_SECONDS`. Hits
unwritten when a process dies are lost: at most one batch (B), which lets that client only that much
further in that window. `keep_flushing` writes a quiet subject's last batch within `FLUSH_SECONDS`
and every batch at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.clock import utcnow
from greengate.metrics import THROTTLES_ENGAGED
from greengate.services.audit import record_audit
from greengate.services.throttle_cache import FailureTotal, Key, RequestCount, ThrottleCache
from greengate.store import throttles as store
from greengate.store.db import Database

log = structlog.get_logger(__name__)

FAILURE_TTL_SECONDS = 1.0
FLUSH_SECONDS = 0.2
BATCH_SHARE = 50

_caches: weakref.WeakKeyDictionary[Database, ThrottleCache] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Rule:
    scope: str
    limit: int  # 0: no limit
    window_seconds: int


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int  # seconds until the window ends


def window_of(rule: Rule, now: datetime) -> tuple[int, int]:
    """(window start, seconds left in it) for `now`."""
    ts = int(now.timestamp())
    start = ts - ts % rule.window_seconds
    return start, max(1, start + rule.window_seconds - ts)


def cache_of(db: Database) -> ThrottleCache:
    """This process's view of `db`'s counters: one per Database, so each stands for a process."""
    cache = _caches.get(db)
    if cache is None:
        cache = _caches[db] = ThrottleCache()
    return cache


async def count_request(db: Database, rule: Rule, subject: str, now: datetime) -> Verdict:
    """Count one request; refused past the limit (with the slack the module describes)."""
    if rule.limit <= 0:
        return Verdict(True, 0)
    start, left = window_of(rule, now)
    cache = cache_of(db)
    key = (rule.scope, subject, start)
    entry = cache.requests.get(key)
    if entry is None:
        ends = start + rule.window_seconds
        entry = cache.requests.add(key, RequestCount(ends, rule.limit), int(now.timestamp()))
    entry.limit = rule.limit
    fresh = cache.clock() - entry.written_at < FLUSH_SECONDS
    if fresh and entry.seen > rule.limit:
        entry.pending += 1  # the window is spent: refused without asking again
        return Verdict(False, left)
    if (
        fresh
        and entry.unconfirmed + 1 <= rule.limit // BATCH_SHARE
        and entry.seen + entry.unconfirmed + 1 <= rule.limit
    ):
        entry.pending += 1
        return Verdict(True, left)
    total = await _write(db, cache, key, entry, now, own=1)
    return Verdict(total <= rule.limit, left)


async def check_failures(db: Database, rule: Rule, subject: str, now: datetime) -> Verdict:
    """Whether the subject may try to authenticate now (it has fewer than `limit` failures)."""
    if rule.limit <= 0:
        return Verdict(True, 0)
    start, left = window_of(rule, now)
    cache = cache_of(db)
    key = (rule.scope, subject, start)
    entry = cache.failures.get(key)
    if entry is None:
        entry = cache.failures.add(key, FailureTotal(start + rule.window_seconds), int(now.timestamp()))
    clock = cache.clock()
    # A total at the limit stays there for the window; below it, it is asked again once it ages.
    if entry.total < rule.limit and clock - entry.read_at >= FAILURE_TTL_SECONDS:
        entry.read_at = clock  # the other checks meanwhile go by the total at hand
        async with db.sessions() as session:
            hits = await store.hits(session, rule.scope, subject, start)
        entry.total = max(entry.total, hits)
    return Verdict(entry.total < rule.limit, left)


async def count_failure(db: Database, rule: Rule, subject: str, now: datetime) -> Verdict:
    """Count one failed authentication; the verdict says whether the subject may still try."""
    if rule.limit <= 0:
        return Verdict(True, 0)
    start, left = window_of(rule, now)
    async with db.transaction() as session:
        hits = await store.bump(session, rule.scope, subject, start)
        if hits == rule.limit:
            await _engaged(session, rule.scope, rule.limit, subject, now, left)
    cache = cache_of(db)
    key = (rule.scope, subject, start)
    entry = cache.failures.get(key)
    if entry is None:
        entry = cache.failures.add(key, FailureTotal(start + rule.window_seconds), int(now.timestamp()))
    entry.total = max(entry.total, hits)
    entry.read_at = cache.clock()
    return Verdict(hits < rule.limit, left)


async def flush(db: Database, now: datetime, *, all_pending: bool = False) -> None:
    """Write the request hits this process has counted and not written: those of subjects whose last
    write is `FLUSH_SECONDS` old, or all of them."""
    cache = cache_of(db)
    clock = cache.clock()
    for key, entry in cache.requests.entries():
        if entry.pending and (all_pending or clock - entry.written_at >= FLUSH_SECONDS):
            await _write(db, cache, key, entry, now, own=0)


async def keep_flushing(db: Database, stop: asyncio.Event) -> None:
    """Write quiet subjects' last batches every `FLUSH_SECONDS` until `stop`, then every batch."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FLUSH_SECONDS)
        await _flush_logged(db, all_pending=False)
    await _flush_logged(db, all_pending=True)


async def _flush_logged(db: Database, *, all_pending: bool) -> None:
    try:
        await flush(db, utcnow(), all_pending=all_pending)
    except Exception as exc:  # the next round tries again; the hits stay counted here
        log.warning("throttle_flush_failed", error=repr(exc))


async def engaged_subjects(db: Database, rule: Rule, prefix: str, now: datetime) -> list[str]:
    start, _ = window_of(rule, now)
    async with db.sessions() as session:
        return await store.subjects_at_least(session, rule.scope, prefix, start, rule.limit)


async def lift(db: Database, rule: Rule, prefix: str) -> None:
    """Clear the subjects' counters; other processes still go by the totals they hold until those age
    (failures) or until their next write (requests)."""
    async with db.transaction() as session:
        await store.clear(session, rule.scope, prefix)
    cache = cache_of(db)
    cache.failures.forget(rule.scope, prefix)
    cache.requests.forget(rule.scope, prefix)


async def sweep(db: Database, now: datetime, keep_seconds: int = 86_400) -> None:
    async with db.transaction() as session:
        await store.sweep(session, int(now.timestamp()) - keep_seconds)


async def _write(
    db: Database, cache: ThrottleCache, key: Key, entry: RequestCount, now: datetime, *, own: int
) -> int:
    """Write the entry's pending hits plus `own` (the request asking) in one upsert; the window's
    total after it. The batch that first takes the total past the limit records the engagement, so
    it is recorded once per window whichever process writes it."""
    scope, subject, start = key
    carried, entry.pending = entry.pending, 0
    batch = carried + own
    entry.in_flight += batch
    entry.written_at = cache.clock()
    try:
        async with db.transaction() as session:
            total = await store.bump(session, scope, subject, start, batch)
            if total - batch <= entry.limit < total:
                left = max(1, entry.ends - int(now.timestamp()))
                await _engaged(session, scope, entry.limit, subject, now, left)
    except BaseException:
        entry.pending += carried  # kept for the next write; the asking request fails
        raise
    finally:
        entry.in_flight -= batch
    entry.seen = max(entry.seen, total)
    return total


async def _engaged(
    session: AsyncSession, scope: str, limit: int, subject: str, now: datetime, left: int
) -> None:
    THROTTLES_ENGAGED.labels(scope).inc()
    await record_audit(
        session,
        actor="system:throttle",
        action="throttle.engaged",
        obj=("throttle", f"{scope}:{subject}"[:60]),
        before=None,
        after={"scope": scope, "subject": subject, "limit": limit, "seconds_left": left},
        now=now,
    )
