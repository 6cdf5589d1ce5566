"""Throttle counters kept per process between database round trips: each `Database` below stands for
one server process (or node) with its own cache, all on the one test database. Their monotonic clocks
are held still unless a test moves them, which is the worst case for staleness."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from sqlalchemy import func, select

from greengate.clock import utcnow
from greengate.services import throttles
from greengate.services.throttles import BATCH_SHARE, FAILURE_TTL_SECONDS, FLUSH_SECONDS, Rule
from greengate.store.db import Database
from greengate.store.models import AuditEvent, ThrottleCounter

FAILURES = Rule("auth_fail_exchange", 5, 300)
ADDRESS = "203.0.113.9"


class Ticks:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


@pytest.fixture
async def processes(database_url: str, clean_db: None) -> AsyncIterator[list[tuple[Database, Ticks]]]:
    made = []
    for _ in range(2):
        db = Database(database_url, pool_size=5)
        ticks = Ticks()
        throttles.cache_of(db).clock = ticks
        made.append((db, ticks))
    yield made
    for db, _ in made:
        await db.dispose()


def at_start_of_window(rule: Rule) -> datetime:
    """A time with the whole window ahead, so no test straddles two windows."""
    start, _ = throttles.window_of(rule, utcnow())
    return datetime.fromtimestamp(start + rule.window_seconds, tz=utcnow().tzinfo)


async def stored_hits(db: Database, rule: Rule, subject: str) -> int:
    async with db.sessions() as session:
        total = await session.scalar(
            select(func.coalesce(func.sum(ThrottleCounter.hits), 0)).where(
                ThrottleCounter.scope == rule.scope, ThrottleCounter.subject == subject
            )
        )
    return int(total or 0)


async def engagements(db: Database) -> int:
    async with db.sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "throttle.engaged")
        )
    return int(count or 0)


async def test_failures_counted_elsewhere_refuse_here_once_the_cached_total_ages(
    processes: list[tuple[Database, Ticks]],
) -> None:
    (here, here_ticks), (there, _) = processes
    now = at_start_of_window(FAILURES)
    before = await throttles.check_failures(here, FAILURES, ADDRESS, now)  # cached here: 0
    for _ in range(FAILURES.limit):
        await throttles.count_failure(there, FAILURES, ADDRESS, now)
    here_ticks.value += FAILURE_TTL_SECONDS
    after = await throttles.check_failures(here, FAILURES, ADDRESS, now)
    assert before.allowed
    assert not after.allowed


async def test_a_process_that_has_not_heard_of_the_limit_lets_one_guess_past_then_refuses(
    processes: list[tuple[Database, Ticks]],
) -> None:
    (here, _), (there, _) = processes
    now = at_start_of_window(FAILURES)
    await throttles.check_failures(here, FAILURES, ADDRESS, now)  # cached here: 0, never aged
    for _ in range(FAILURES.limit):
        await throttles.count_failure(there, FAILURES, ADDRESS, now)
    stale = await throttles.check_failures(here, FAILURES, ADDRESS, now)
    counted = await throttles.count_failure(here, FAILURES, ADDRESS, now)  # that guess was wrong
    refused = await throttles.check_failures(here, FAILURES, ADDRESS, now)
    assert stale.allowed
    assert not counted.allowed
    assert not refused.allowed


async def test_guesses_past_the_failure_limit_are_only_those_in_flight(
    processes: list[tuple[Database, Ticks]],
) -> None:
    (here, _), (there, _) = processes
    now = at_start_of_window(FAILURES)
    await throttles.check_failures(here, FAILURES, ADDRESS, now)
    for _ in range(FAILURES.limit - 1):
        await throttles.count_failure(there, FAILURES, ADDRESS, now)
    # Eight guesses arrive here together; all pass the check before any of them has failed.
    in_flight = 8
    checks = await asyncio.gather(
        *(throttles.check_failures(here, FAILURES, ADDRESS, now) for _ in range(in_flight))
    )
    await asyncio.gather(
        *(throttles.count_failure(here, FAILURES, ADDRESS, now) for v in checks if v.allowed)
    )
    # A guesser that waits for each answer, alternating between the two processes, gets no more.
    later = []
    for n in range(20):
        db = (here, there)[n % 2]
        verdict = await throttles.check_failures(db, FAILURES, ADDRESS, now)
        later.append(verdict.allowed)
        if verdict.allowed:
            await throttles.count_failure(db, FAILURES, ADDRESS, now)
    admitted = FAILURES.limit - 1 + sum(v.allowed for v in checks) + sum(later)
    assert admitted <= FAILURES.limit - 1 + in_flight + 1  # `there` may let one more through
    assert not any(later[2:])
    assert await engagements(here) == 1


async def test_a_sequential_guesser_gets_at_most_one_guess_past_the_limit_per_process(
    processes: list[tuple[Database, Ticks]],
) -> None:
    now = at_start_of_window(FAILURES)
    for db, _ in processes:
        await throttles.check_failures(db, FAILURES, ADDRESS, now)  # both warm, never aged
    admitted = 0
    for n in range(4 * FAILURES.limit):
        db = processes[n % 2][0]
        if (await throttles.check_failures(db, FAILURES, ADDRESS, now)).allowed:
            admitted += 1
            await throttles.count_failure(db, FAILURES, ADDRESS, now)
    assert FAILURES.limit <= admitted <= FAILURES.limit + len(processes)


async def test_request_counts_reach_the_database_in_batches(
    processes: list[tuple[Database, Ticks]],
) -> None:
    (db, ticks), _ = processes
    rule = Rule("exchange_client", 100_000, 60)
    now = at_start_of_window(rule)
    first = [await throttles.count_request(db, rule, "7", now) for _ in range(150)]
    after_first_write = await stored_hits(db, rule, "7")
    ticks.value += FLUSH_SECONDS
    await throttles.count_request(db, rule, "7", now)  # its last write is old: this one writes
    after_second_write = await stored_hits(db, rule, "7")
    await throttles.count_request(db, rule, "7", now)
    ticks.value += FLUSH_SECONDS
    await throttles.flush(db, now)  # what the background flusher does for a quiet client
    assert all(v.allowed for v in first)
    assert after_first_write == 1
    assert after_second_write == 151
    assert await stored_hits(db, rule, "7") == 152


async def test_all_unwritten_request_counts_are_written_at_shutdown(
    processes: list[tuple[Database, Ticks]],
) -> None:
    (db, _), _ = processes
    rule = Rule("exchange_client", 100_000, 60)
    now = at_start_of_window(rule)
    for _ in range(40):
        await throttles.count_request(db, rule, "8", now)
    stop = asyncio.Event()
    stop.set()
    await throttles.keep_flushing(db, stop)
    assert await stored_hits(db, rule, "8") == 40


@pytest.mark.parametrize("limit", [4, 120, 1000])
async def test_request_overshoot_across_processes_stays_within_the_documented_bound(
    processes: list[tuple[Database, Ticks]], limit: int
) -> None:
    rule = Rule("exchange_client", limit, 60)
    now = at_start_of_window(rule)
    allowed = 0
    # Bursts of concurrent requests on both processes, well past the limit; clocks held still, so
    # nothing is written for its age: only the batch share and the limit make a process write.
    for _ in range(3 * limit // 40 + 3):
        bursts = [throttles.count_request(db, rule, "9", now) for db, _ in processes for _ in range(20)]
        allowed += sum(v.allowed for v in await asyncio.gather(*bursts))
    bound = limit + len(processes) * (limit // BATCH_SHARE)
    assert limit <= allowed <= bound
    assert await engagements(processes[0][0]) == 1


async def test_a_small_request_limit_is_exact_across_processes(
    processes: list[tuple[Database, Ticks]],
) -> None:
    rule = Rule("exchange_client", BATCH_SHARE - 1, 60)
    now = at_start_of_window(rule)
    verdicts = [
        await throttles.count_request(processes[n % 2][0], rule, "10", now) for n in range(rule.limit + 5)
    ]
    assert [v.allowed for v in verdicts] == [True] * rule.limit + [False] * 5
