"""Exchange directions: what the gateway buys BTC with, at what limits, TTL and commission."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain.errors import InvalidRequest, NotFound
from greengate.domain.money import exponent, parse_amount, parse_decimal_text
from greengate.services.audit import record_audit
from greengate.services.rates import validate_rate_source
from greengate.store.models import Direction


@dataclass(frozen=True)
class DirectionChanges:
    status: int | None = None
    order_ttl: int | None = None
    min_amount: str | None = None
    max_amount: str | None = None
    commission_percent: str | None = None
    fullname: str | None = None
    rate_source: str | None = None
    unique_amounts: bool | None = None
    unique_amount_span: int | None = None
    underpay_tolerance_percent: str | None = None
    reserve_btc: str | None = None


def _percent(raw: str, field: str) -> str:
    value = parse_decimal_text(raw, field=field, max_places=4)
    if value >= 100:
        raise InvalidRequest(f"{field} must be below 100", field=field)
    return str(value.normalize()) if value == value.to_integral_value() else str(value)


def _apply(direction: Direction, ch: DirectionChanges) -> None:
    if ch.status is not None:
        if ch.status not in (0, 1):
            raise InvalidRequest("status must be 0 or 1", field="status")
        direction.status = ch.status
    if ch.order_ttl is not None:
        if not 1 <= ch.order_ttl <= 24 * 60:
            raise InvalidRequest("order_ttl must be between 1 and 1440 minutes", field="order_ttl")
        direction.order_ttl = ch.order_ttl
    if ch.min_amount is not None:
        direction.min_amount = parse_amount(ch.min_amount, direction.from_currency, field="min_amount")
    if ch.max_amount is not None:
        direction.max_amount = parse_amount(ch.max_amount, direction.from_currency, field="max_amount")
    if direction.min_amount <= 0 or direction.min_amount > direction.max_amount:
        raise InvalidRequest("min_amount must be positive and not above max_amount", field="min_amount")
    if ch.commission_percent is not None:
        direction.commission_percent = _percent(ch.commission_percent, "commission_percent")
    if ch.fullname is not None:
        direction.fullname = ch.fullname
    if ch.rate_source is not None:
        direction.rate_source = validate_rate_source(ch.rate_source)
    if ch.unique_amounts is not None:
        direction.unique_amounts = ch.unique_amounts
    if ch.unique_amount_span is not None:
        if not 0 <= ch.unique_amount_span <= 10_000:
            raise InvalidRequest("unique_amount_span must be between 0 and 10000 minor units")
        direction.unique_amount_span = ch.unique_amount_span
    if ch.underpay_tolerance_percent is not None:
        direction.underpay_tolerance_percent = _percent(
            ch.underpay_tolerance_percent, "underpay_tolerance_percent"
        )
    if ch.reserve_btc is not None:
        direction.reserve_sat = parse_amount(ch.reserve_btc, "BTC", field="reserve")


def _snapshot(d: Direction) -> dict[str, object]:
    return {
        "status": d.status,
        "order_ttl": d.order_ttl,
        "min_amount": d.min_amount,
        "max_amount": d.max_amount,
        "commission_percent": d.commission_percent,
        "fullname": d.fullname,
        "rate_source": d.rate_source,
        "unique_amounts": d.unique_amounts,
        "unique_amount_span": d.unique_amount_span,
        "underpay_tolerance_percent": d.underpay_tolerance_percent,
        "reserve_sat": d.reserve_sat,
    }


async def create_direction(
    session: AsyncSession,
    *,
    payment_method: str,
    from_currency: str,
    changes: DirectionChanges,
    now: datetime,
    actor: str = "cli",
) -> Direction:
    currency = from_currency.upper()
    exponent(currency)
    if not payment_method or not payment_method.isidentifier():
        raise InvalidRequest(
            "payment_method must be a short code like card, kzt or phone", field="payment_method"
        )
    existing = await session.scalar(select(Direction).where(Direction.payment_method == payment_method))
    if existing is not None:
        raise InvalidRequest(f"direction {payment_method} already exists", code="duplicate_direction")
    direction = Direction(
        payment_method=payment_method,
        from_currency=currency,
        to_currency="BTC",
        status=1,
        order_ttl=30,
        min_amount=1,
        max_amount=1,
        commission_percent="0",
        fullname=f"{currency} → BTC",
        rate_source="fixed",
        unique_amounts=False,
        unique_amount_span=100,
        underpay_tolerance_percent="0",
        reserve_sat=0,
        created_at=now,
        updated_at=now,
    )
    _apply(direction, changes)
    session.add(direction)
    await session.flush()
    await record_audit(
        session,
        actor=actor,
        action="direction.create",
        obj=("direction", direction.id),
        before=None,
        after=_snapshot(direction),
        now=now,
    )
    return direction


async def update_direction(
    session: AsyncSession, direction_id: int, changes: DirectionChanges, *, now: datetime, actor: str = "cli"
) -> Direction:
    direction = await session.scalar(select(Direction).where(Direction.id == direction_id).with_for_update())
    if direction is None:
        raise NotFound(f"direction {direction_id} not found")
    before = _snapshot(direction)
    _apply(direction, changes)
    direction.updated_at = now
    await record_audit(
        session,
        actor=actor,
        action="direction.update",
        obj=("direction", direction.id),
        before=before,
        after=_snapshot(direction),
        now=now,
    )
    return direction


async def list_directions(session: AsyncSession) -> list[Direction]:
    return list(await session.scalars(select(Direction).order_by(Direction.id)))


def commission_decimal(direction: Direction) -> Decimal:
    return Decimal(direction.commission_percent)
