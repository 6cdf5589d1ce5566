"""Per-day totals for the console's charts: paid volume and outcomes of payments and exchange orders,
and callback delivery attempts, over the last few days (UTC days)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.store.db import dialect_name
from greengate.store.models import DeliveryAttempt, ExchangeOrder, Payment

PAYMENT_SUCCEEDED = frozenset({"ok", "revoked"})
PAYMENT_FAILED = frozenset({"failed", "canceled", "expired"})
ORDER_SUCCEEDED = frozenset({"payed", "completed"})
ORDER_FAILED = frozenset({"autocanceled", "canceled"})


@dataclass
class DayActivity:
    day: date
    volume: dict[str, int] = field(default_factory=dict)  # currency → minor units paid
    payments_succeeded: int = 0
    payments_failed: int = 0
    orders_succeeded: int = 0
    orders_failed: int = 0
    callbacks_delivered: int = 0
    callbacks_failed: int = 0


def _day_text(session: AsyncSession, column: Any) -> Any:
    """The UTC day of a timestamp column as 'YYYY-MM-DD', in the database's own dialect."""
    if dialect_name(session) == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)  # SQLite keeps UTC timestamps as naive text


async def daily_activity(session: AsyncSession, today: date, days: int) -> list[DayActivity]:
    """One entry per day, oldest first, ending with `today`; days without activity are zeros."""
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, time(0), tzinfo=UTC)
    by_day = {first + timedelta(days=i): DayActivity(first + timedelta(days=i)) for i in range(days)}

    def entry(text: str) -> DayActivity | None:
        return by_day.get(date.fromisoformat(text))

    volume: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    sources: list[tuple[Any, Any, Any, Any, frozenset[str], frozenset[str], str]] = [
        (
            Payment.created_at,
            Payment.currency,
            Payment.status,
            Payment.amount,
            PAYMENT_SUCCEEDED,
            PAYMENT_FAILED,
            "payments",
        ),
        (
            ExchangeOrder.created_at,
            ExchangeOrder.currency,
            ExchangeOrder.status,
            ExchangeOrder.amount_payable,
            ORDER_SUCCEEDED,
            ORDER_FAILED,
            "orders",
        ),
    ]
    for created, currency, status, amount, succeeded, failed, name in sources:
        day = _day_text(session, created)
        rows = await session.execute(
            select(day, currency, status, func.count(), func.sum(amount))
            .where(created >= start)
            .group_by(day, currency, status)
        )
        for day_text, cur, st, count, total in rows:
            item = entry(day_text)
            if item is None:
                continue
            if st in succeeded:
                setattr(item, f"{name}_succeeded", getattr(item, f"{name}_succeeded") + count)
                volume[item.day][cur] += int(total or 0)
            elif st in failed:
                setattr(item, f"{name}_failed", getattr(item, f"{name}_failed") + count)
    day = _day_text(session, DeliveryAttempt.started_at)
    rows = await session.execute(
        select(day, DeliveryAttempt.succeeded, func.count())
        .where(DeliveryAttempt.started_at >= start)
        .group_by(day, DeliveryAttempt.succeeded)
    )
    for day_text, ok, count in rows:
        item = entry(day_text)
        if item is None:
            continue
        if ok:
            item.callbacks_delivered += count
        else:
            item.callbacks_failed += count
    for d, totals in volume.items():
        by_day[d].volume = dict(totals)
    return [by_day[d] for d in sorted(by_day)]
