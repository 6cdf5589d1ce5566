"""Request limits and failed-authentication throttles, counted in the database so that every worker
process and every node sees the same counts.

A rule allows `limit` hits per subject in fixed windows of `window_seconds`. A request limit counts
every request and refuses the ones past the limit; a failure throttle counts failures only and,
once a subject has `limit` of them in a window, refuses it before authentication until the window
ends. Each engagement is written to the audit log once per window and counted in the metrics."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from greengate.metrics import THROTTLES_ENGAGED
from greengate.services.audit import record_audit
from greengate.store import throttles as store
from greengate.store.db import Database


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


async def count_request(db: Database, rule: Rule, subject: str, now: datetime) -> Verdict:
    """Count one request; refused past the limit."""
    if rule.limit <= 0:
        return Verdict(True, 0)
    start, left = window_of(rule, now)
    async with db.transaction() as session:
        hits = await store.bump(session, rule.scope, subject, start)
        if hits == rule.limit + 1:
            await _engaged(session, rule, subject, now, left)
    return Verdict(hits <= rule.limit, left)


async def check_failures(db: Database, rule: Rule, subject: str, now: datetime) -> Verdict:
    """Whether the subject may try to authenticate now (it has fewer than `limit` failures)."""
    if rule.limit <= 0:
        return Verdict(True, 0)
    start, left = window_of(rule, now)
    async with db.sessions() as session:
        hits = await store.hits(session, rule.scope, subject, start)
    return Verdict(hits < rule.limit, left)


async def count_failure(db: Database, rule: Rule, subject: str, now: datetime) -> Verdict:
    """Count one failed authentication; the verdict says whether the subject may still try."""
    if rule.limit <= 0:
        return Verdict(True, 0)
    start, left = window_of(rule, now)
    async with db.transaction() as session:
        hits = await store.bump(session, rule.scope, subject, start)
        if hits == rule.limit:
            await _engaged(session, rule, subject, now, left)
    return Verdict(hits < rule.limit, left)


async def engaged_subjects(db: Database, rule: Rule, prefix: str, now: datetime) -> list[str]:
    start, _ = window_of(rule, now)
    async with db.sessions() as session:
        return await store.subjects_at_least(session, rule.scope, prefix, start, rule.limit)


async def lift(db: Database, rule: Rule, prefix: str) -> None:
    async with db.transaction() as session:
        await store.clear(session, rule.scope, prefix)


async def sweep(db: Database, now: datetime, keep_seconds: int = 86_400) -> None:
    async with db.transaction() as session:
        await store.sweep(session, int(now.timestamp()) - keep_seconds)


async def _engaged(session: AsyncSession, rule: Rule, subject: str, now: datetime, left: int) -> None:
    THROTTLES_ENGAGED.labels(rule.scope).inc()
    await record_audit(
        session,
        actor="system:throttle",
        action="throttle.engaged",
        obj=("throttle", f"{rule.scope}:{subject}"[:60]),
        before=None,
        after={"scope": rule.scope, "subject": subject, "limit": rule.limit, "seconds_left": left},
        now=now,
    )
