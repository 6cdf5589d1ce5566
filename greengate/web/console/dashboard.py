"""The dashboard: today's exchange orders and payments, the callback backlog, rate freshness, balances."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import func, select

from greengate.clock import utcnow
from greengate.domain.money import format_minor
from greengate.services import ledger, outbox
from greengate.store.daily_activity import DayActivity, daily_activity
from greengate.store.models import Direction, ExchangeOrder, OutboxMessage, Payment, Rate
from greengate.web.console import charts
from greengate.web.console.auth import Console, ConsoleRoute, page
from greengate.web.console.rendering import render

router = APIRouter(route_class=ConsoleRoute)
PAID_ORDER = ("payed", "completed")
PAID_PAYMENT = ("ok", "revoked")
CHART_DAYS = 14
MAX_VOLUME_CHARTS = 3


@router.get("/admin/")
@router.get("/admin")
async def dashboard(request: Request, console: Console = Depends(page())) -> Response:
    now = utcnow()
    day = datetime.combine(now.date(), time(0), tzinfo=UTC)
    async with console.rt.db.transaction() as session:
        order_counts = dict(
            (
                await session.execute(
                    select(ExchangeOrder.status, func.count())
                    .where(ExchangeOrder.created_at >= day)
                    .group_by(ExchangeOrder.status)
                )
            ).all()
        )
        order_volume = (
            await session.execute(
                select(ExchangeOrder.currency, func.sum(ExchangeOrder.amount_payable), func.count())
                .where(ExchangeOrder.created_at >= day, ExchangeOrder.status.in_(PAID_ORDER))
                .group_by(ExchangeOrder.currency)
            )
        ).all()
        payment_counts = dict(
            (
                await session.execute(
                    select(Payment.status, func.count())
                    .where(Payment.created_at >= day)
                    .group_by(Payment.status)
                )
            ).all()
        )
        hi, lo = ledger.split_sum(Payment.amount)
        payment_volume = [
            (testing, cur, ledger.unsplit(h, low), n)
            for testing, cur, h, low, n in await session.execute(
                select(Payment.testing, Payment.currency, hi, lo, func.count())
                .where(Payment.created_at >= day, Payment.status.in_(PAID_PAYMENT))
                .group_by(Payment.testing, Payment.currency)
                .order_by(Payment.testing, Payment.currency)
            )
        ]
        callbacks = OutboxMessage.target_url.is_not(None)
        backlog = await session.scalar(
            select(func.count()).where(callbacks, OutboxMessage.status == outbox.PENDING)
        )
        overdue = await session.scalar(
            select(func.count()).where(
                callbacks, OutboxMessage.status == outbox.PENDING, OutboxMessage.due_at <= now
            )
        )
        failing = await session.scalar(
            select(func.count()).where(
                callbacks, OutboxMessage.status == outbox.PENDING, OutboxMessage.attempts > 0
            )
        )
        dead = await session.scalar(
            select(func.count()).where(callbacks, OutboxMessage.status == outbox.DEAD)
        )
        rates = list(await session.scalars(select(Rate).order_by(Rate.source, Rate.quote)))
        sources = sorted({d.rate_source for d in await session.scalars(select(Direction))})
        balances = await ledger.balances(session)
        activity = await daily_activity(session, now.date(), CHART_DAYS)
        live = [b for b in balances if b.book == "live"]
        test = [b for b in balances if b.book == "test"]
    max_age = console.rt.settings.rate_max_age_seconds
    return render(
        request,
        "dashboard.html",
        console,
        today=day,
        order_counts=order_counts,
        order_volume=order_volume,
        payment_counts=payment_counts,
        payment_volume=payment_volume,
        backlog=backlog or 0,
        overdue=overdue or 0,
        failing=failing or 0,
        dead=dead or 0,
        rates=[(r, int((now - r.fetched_at).total_seconds())) for r in rates],
        max_age=max_age,
        sources=sources,
        live_balances=live,
        test_balances=test,
        charts=activity_charts(activity),
    )


def _money_text(currency: str) -> Callable[[int], str]:
    return lambda minor: f"{format_minor(minor, currency)} {currency}"


def _rate(succeeded: int, failed: int) -> float | None:
    finished = succeeded + failed
    return 100 * succeeded / finished if finished else None


def activity_charts(days: list[DayActivity]) -> dict[str, Any]:
    """The dashboard's pictures of the last days: paid volume per currency (the busiest few), the
    share of finished payments and orders that succeeded, and callback delivery attempts."""
    labels = [d.day.strftime("%m-%d") for d in days]
    totals: dict[str, int] = {}
    for d in days:
        for currency, amount in d.volume.items():
            totals[currency] = totals.get(currency, 0) + amount
    currencies = sorted(totals, key=lambda c: (-totals[c], c))[:MAX_VOLUME_CHARTS]
    volume = [
        (
            currency,
            charts.bar_chart(
                f"Paid volume in {currency}, last {len(days)} days",
                labels,
                [d.volume.get(currency, 0) for d in days],
                _money_text(currency),
            ),
        )
        for currency in currencies
    ]
    success = charts.percent_line_chart(
        f"Share of finished payments and exchange orders that succeeded, last {len(days)} days",
        labels,
        [
            charts.Series(
                "payments", [_rate(d.payments_succeeded, d.payments_failed) for d in days], charts.GREEN
            ),
            charts.Series("orders", [_rate(d.orders_succeeded, d.orders_failed) for d in days], charts.BLUE),
        ],
    )
    callbacks = charts.stacked_bar_chart(
        f"Callback delivery attempts, last {len(days)} days",
        labels,
        charts.Series("delivered", [d.callbacks_delivered for d in days], charts.GREEN),
        charts.Series("failed", [d.callbacks_failed for d in days], charts.RED),
    )
    return {"days": len(days), "volume": volume, "success": success, "callbacks": callbacks}
