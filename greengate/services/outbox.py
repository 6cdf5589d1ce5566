"""Transactional outbox: callbacks and scheduled jobs written with the business change.

A worker claims due rows (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite's single writer makes the
claim exclusive), commits the claim, then runs each row. A live worker renews the claims it holds,
and each delivery attempt is logged, and the claim stretched to cover it, before the request goes
out; a claim that is not renewed (the worker died) expires and the row is claimable again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, exists, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from greengate.store.db import table_of
from greengate.store.links import Link, as_link
from greengate.store.models import DeliveryAttempt, OutboxMessage

PENDING, DONE, DEAD = "pending", "done", "dead"


@dataclass(frozen=True)
class ClaimedMessage:
    id: int
    kind: str
    merchant_id: int | None
    aggregate: str
    payload: dict[str, Any]
    target_url: str | None
    attempts: int
    created_at: datetime


def enqueue(
    session: AsyncSession,
    *,
    kind: str,
    aggregate: str,
    payload: dict[str, Any],
    now: datetime,
    due_at: datetime | None = None,
    merchant_id: int | None = None,
    target_url: str | None = None,
) -> OutboxMessage:
    message = OutboxMessage(
        **_row(kind, aggregate, payload, now, due_at=due_at, merchant_id=merchant_id, target_url=target_url)
    )
    session.add(message)
    return message


_INSERT = insert(table_of(OutboxMessage)).values(
    {
        name: bindparam(name)
        for name in (
            *("kind", "aggregate", "merchant_id", "payload", "target_url"),
            *("status", "attempts", "due_at", "created_at"),
        )
    }
)


async def enqueue_now(
    conn: Link | AsyncSession,
    *,
    kind: str,
    aggregate: str,
    payload: dict[str, Any],
    now: datetime,
    due_at: datetime | None = None,
    merchant_id: int | None = None,
    target_url: str | None = None,
) -> None:
    """`enqueue` written at once by one plain INSERT, past the unit of work (no object to track and
    flush, no id read back): for a hot path that needs no `OutboxMessage` back."""
    row = _row(kind, aggregate, payload, now, due_at=due_at, merchant_id=merchant_id, target_url=target_url)
    await as_link(conn).execute(_INSERT, row)


def _row(
    kind: str,
    aggregate: str,
    payload: dict[str, Any],
    now: datetime,
    *,
    due_at: datetime | None,
    merchant_id: int | None,
    target_url: str | None,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "aggregate": aggregate,
        "merchant_id": merchant_id,
        "payload": json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
        "target_url": target_url,
        "status": PENDING,
        "attempts": 0,
        "due_at": due_at or now,
        "created_at": now,
    }


async def claim_due(
    session: AsyncSession,
    *,
    worker: str,
    now: datetime,
    limit: int,
    claim_for: timedelta,
    kinds: frozenset[str] | None = None,
    except_kinds: frozenset[str] | None = None,
    except_merchants: frozenset[int] = frozenset(),
    except_targets: frozenset[str] = frozenset(),
) -> list[ClaimedMessage]:
    """Claim up to `limit` due rows, of `kinds` only or of any kind but `except_kinds`, leaving the
    rows of `except_merchants` and `except_targets` (those the worker is busy with) to later."""
    conditions = [
        OutboxMessage.status == PENDING,
        OutboxMessage.due_at <= now,
        or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now),
    ]
    if kinds is not None:
        conditions.append(OutboxMessage.kind.in_(sorted(kinds)))
    if except_kinds:
        conditions.append(OutboxMessage.kind.not_in(sorted(except_kinds)))
        # Callbacks about one object go out in order: none while an earlier one is under way.
        earlier = aliased(OutboxMessage)
        conditions.append(
            ~exists().where(
                earlier.aggregate == OutboxMessage.aggregate,
                earlier.status == PENDING,
                earlier.id < OutboxMessage.id,
                earlier.claimed_until >= now,
                earlier.kind.not_in(sorted(except_kinds)),
            )
        )
    if except_merchants:
        conditions.append(
            or_(
                OutboxMessage.merchant_id.is_(None),
                OutboxMessage.merchant_id.not_in(sorted(except_merchants)),
            )
        )
    if except_targets:
        conditions.append(
            or_(OutboxMessage.target_url.is_(None), OutboxMessage.target_url.not_in(sorted(except_targets)))
        )
    due = (
        select(OutboxMessage.id)
        .where(*conditions)
        .order_by(OutboxMessage.due_at, OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(await session.scalars(due))
    if not ids:
        return []
    rows = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids))
        .values(claimed_by=worker, claimed_until=now + claim_for)
        .returning(
            OutboxMessage.id,
            OutboxMessage.kind,
            OutboxMessage.merchant_id,
            OutboxMessage.aggregate,
            OutboxMessage.payload,
            OutboxMessage.target_url,
            OutboxMessage.attempts,
            OutboxMessage.created_at,
        )
    )
    claimed = [
        ClaimedMessage(
            r.id,
            r.kind,
            r.merchant_id,
            r.aggregate,
            json.loads(r.payload),
            r.target_url,
            r.attempts,
            r.created_at,
        )
        for r in rows
    ]
    return sorted(claimed, key=lambda m: m.id)


async def _still_claimed(session: AsyncSession, message_id: int, worker: str) -> OutboxMessage | None:
    """The row, locked, if this worker's claim still holds (another may have taken over a stale one)."""
    return await session.scalar(
        select(OutboxMessage)
        .where(
            OutboxMessage.id == message_id,
            OutboxMessage.status == PENDING,
            OutboxMessage.claimed_by == worker,
        )
        .with_for_update()
    )


async def complete(session: AsyncSession, message_id: int, worker: str, now: datetime) -> bool:
    row = await _still_claimed(session, message_id, worker)
    if row is None:
        return False
    row.status, row.finished_at, row.claimed_until, row.last_error = DONE, now, None, None
    return True


async def renew(session: AsyncSession, message_ids: list[int], worker: str, *, until: datetime) -> set[int]:
    """Stretch this worker's claims on `message_ids` to at least `until` (a claim an attempt already
    holds for longer keeps its end); returns the ids still held."""
    if not message_ids:
        return set()
    rows = await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id.in_(message_ids),
            OutboxMessage.status == PENDING,
            OutboxMessage.claimed_by == worker,
        )
        .values(
            claimed_until=case(
                (OutboxMessage.claimed_until > until, OutboxMessage.claimed_until), else_=until
            )
        )
        .returning(OutboxMessage.id)
    )
    return {r.id for r in rows}


async def unclaim(session: AsyncSession, message_ids: list[int], worker: str) -> None:
    """Give claimed rows back untouched (the worker cannot start them now); any worker may take them."""
    if message_ids:
        await session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id.in_(message_ids),
                OutboxMessage.status == PENDING,
                OutboxMessage.claimed_by == worker,
            )
            .values(claimed_by=None, claimed_until=None)
        )


@dataclass(frozen=True)
class StartedAttempt:
    id: int
    number: int
    started_at: datetime


async def begin_attempt(
    session: AsyncSession,
    message: ClaimedMessage,
    *,
    worker: str,
    now: datetime,
    hold_until: datetime,
    request_body: str,
) -> StartedAttempt | None:
    """Log a delivery attempt about to be sent and hold the claim until `hold_until` (at least the
    delivery's deadline). None when the claim is no longer this worker's: then nothing may be sent."""
    row = await _still_claimed(session, message.id, worker)
    if row is None:
        return None
    row.attempts += 1
    if row.claimed_until is None or row.claimed_until < hold_until:
        row.claimed_until = hold_until
    attempt = DeliveryAttempt(
        outbox_id=message.id,
        attempt=row.attempts,
        started_at=now,
        duration_ms=0,
        request_body=request_body[:20_000],
        response_body="",
        succeeded=False,
    )
    session.add(attempt)
    await session.flush()
    return StartedAttempt(attempt.id, row.attempts, now)


async def record_attempt(
    session: AsyncSession,
    message: ClaimedMessage,
    attempt: StartedAttempt,
    *,
    worker: str,
    duration_ms: int,
    succeeded: bool,
    status_code: int | None,
    response_body: str,
    error: str | None,
    retry_schedule: list[int],
    now: datetime,
) -> str:
    """Log how a started attempt ended and move the row on: done, retried later, or dead when
    exhausted. The outcome is logged even when the claim was lost meanwhile (the request went out)."""
    await session.execute(
        update(DeliveryAttempt)
        .where(DeliveryAttempt.id == attempt.id)
        .values(
            duration_ms=duration_ms,
            status_code=status_code,
            response_body=response_body[:20_000],
            error=error,
            succeeded=succeeded,
            finished_at=now,
        )
    )
    row = await _still_claimed(session, message.id, worker)
    if row is None:
        return "lost_claim"
    row.claimed_until = None
    if succeeded:
        row.status, row.finished_at, row.last_error = DONE, now, None
        return DONE
    row.last_error = error or f"HTTP {status_code}"
    if row.attempts > len(retry_schedule):
        row.status, row.finished_at = DEAD, now
        return DEAD
    row.due_at = now + timedelta(seconds=retry_schedule[row.attempts - 1])
    return PENDING


async def prune_delivered(session: AsyncSession, *, finished_before: datetime, limit: int) -> int:
    """Delete up to `limit` delivered rows finished before `finished_before`, with their attempt
    logs; returns how many rows went. Failed (dead) rows stay for the operator."""
    ids = list(
        await session.scalars(
            select(OutboxMessage.id)
            .where(OutboxMessage.status == DONE, OutboxMessage.finished_at < finished_before)
            .order_by(OutboxMessage.finished_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        return 0
    await session.execute(delete(DeliveryAttempt).where(DeliveryAttempt.outbox_id.in_(ids)))
    await session.execute(
        delete(OutboxMessage).where(OutboxMessage.id.in_(ids), OutboxMessage.status == DONE)
    )
    return len(ids)


async def release(
    session: AsyncSession, message_id: int, worker: str, *, retry_at: datetime, error: str
) -> None:
    """Give a claimed job back for a later run (its handler failed without an outcome)."""
    row = await _still_claimed(session, message_id, worker)
    if row is not None:
        row.claimed_until, row.due_at, row.last_error = None, retry_at, error
        row.attempts += 1


async def requeue(session: AsyncSession, message_ids: list[int], now: datetime) -> int:
    """Operator redelivery: dead or delivered callbacks become due again."""
    result = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(message_ids), and_(OutboxMessage.status.in_([DONE, DEAD])))
        .values(status=PENDING, due_at=now, claimed_until=None, claimed_by=None, finished_at=None)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
