"""Transactional outbox: callbacks and scheduled jobs written with the business change.

A worker claims due rows (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite's single writer makes the
claim exclusive), commits the claim, then runs each row. A claim that is not finished before it
expires (the worker died) is simply claimable again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

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
    session: AsyncSession, *, worker: str, now: datetime, limit: int, claim_for: timedelta
) -> list[ClaimedMessage]:
    due = (
        select(OutboxMessage.id)
        .where(
            OutboxMessage.status == PENDING,
            OutboxMessage.due_at <= now,
            or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now),
        )
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


async def record_attempt(
    session: AsyncSession,
    message: ClaimedMessage,
    *,
    worker: str,
    started_at: datetime,
    duration_ms: int,
    succeeded: bool,
    status_code: int | None,
    request_body: str,
    response_body: str,
    error: str | None,
    retry_schedule: list[int],
    now: datetime,
) -> str:
    """Log one delivery attempt and move the row on: done, retried later, or dead when exhausted."""
    row = await _still_claimed(session, message.id, worker)
    if row is None:
        return "lost_claim"
    row.attempts += 1
    session.add(
        DeliveryAttempt(
            outbox_id=message.id,
            attempt=row.attempts,
            started_at=started_at,
            duration_ms=duration_ms,
            status_code=status_code,
            request_body=request_body[:20_000],
            response_body=response_body[:20_000],
            error=error,
            succeeded=succeeded,
        )
    )
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
