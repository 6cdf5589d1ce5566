"""Incoming transfers to requisites: matched to the open order they pay, or kept for the operator."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain.errors import BusinessRuleViolation, NotFound
from greengate.domain.exchange import OrderStatus
from greengate.runtime import Runtime
from greengate.services.exchange_orders import confirm_paid, expire_order
from greengate.services.requisites import find_by_number, is_awaiting
from greengate.store.models import Direction, ExchangeOrder, IncomingTransfer

MATCHED, UNMATCHED, REVIEW = "matched", "unmatched", "review"
# How far back a transfer is compared with canceled orders to flag it as a late payment.
LATE_WINDOW = timedelta(days=2)


@dataclass(frozen=True)
class TransferInput:
    requisite_number: str
    amount: int
    currency: str
    external_id: str | None
    received_at: datetime


def within_tolerance(payable: int, received: int, tolerance_percent: Decimal) -> bool:
    """An underpayment no larger than tolerance% of the payable amount (exact integer comparison)."""
    shortfall = payable - received
    return 0 < shortfall and shortfall * 100 <= payable * tolerance_percent


async def record_transfer(
    session: AsyncSession, rt: Runtime, transfer: TransferInput, now: datetime, actor: str
) -> IncomingTransfer:
    if transfer.external_id:
        existing = await session.scalar(
            select(IncomingTransfer).where(IncomingTransfer.external_id == transfer.external_id)
        )
        if existing is not None:
            return existing  # a bank notification delivered twice is one transfer
    requisite = await find_by_number(session, rt.keyring, transfer.requisite_number)
    row = IncomingTransfer(
        external_id=transfer.external_id,
        requisite_id=requisite.id if requisite else None,
        amount=transfer.amount,
        currency=transfer.currency,
        status=UNMATCHED,
        order_id=None,
        note="",
        received_at=transfer.received_at,
        created_at=now,
    )
    session.add(row)
    if requisite is None:
        row.note = "no requisite with this number"
        return row
    awaiting = list(
        await session.scalars(
            select(ExchangeOrder)
            .where(
                ExchangeOrder.requisite_id == requisite.id,
                is_awaiting(),
                ExchangeOrder.currency == transfer.currency,
            )
            .order_by(ExchangeOrder.id)
            .with_for_update()
        )
    )
    # An order whose time ran out before the money arrived is autocanceled here, even if the expiry
    # sweep has not come by (the worker may be down): its rate is stale, so a transfer for it is a late
    # payment for the operator to review, never a match.
    arrived = min(transfer.received_at, now)
    for order in [o for o in awaiting if o.expires_at <= arrived]:
        await expire_order(session, rt, order.id, now)
    awaiting = [o for o in awaiting if o.status == OrderStatus.AWAITING.value]
    exact = [o for o in awaiting if o.amount_payable == transfer.amount]
    if exact:
        await _apply(session, rt, row, exact[0], transfer.amount, now, actor, "exact match")
        return row
    under = []
    for order in awaiting:
        direction = await session.get(Direction, order.direction_id)
        tolerance = Decimal(direction.underpay_tolerance_percent) if direction else Decimal(0)
        if within_tolerance(order.amount_payable, transfer.amount, tolerance):
            under.append(order)
    if len(under) == 1:
        await _apply(session, rt, row, under[0], transfer.amount, now, actor, "underpayment within tolerance")
        return row
    if under:
        row.status, row.order_id = REVIEW, under[0].id
        row.note = "amount differs from the payable amount; held for review"
        return row
    # An exact match with a recently closed order says more than "the only open order" does.
    late = await session.scalar(
        select(ExchangeOrder)
        .where(
            ExchangeOrder.requisite_id == requisite.id,
            ExchangeOrder.amount_payable == transfer.amount,
            ExchangeOrder.status.in_([OrderStatus.AUTOCANCELED.value, OrderStatus.CANCELED.value]),
            ExchangeOrder.updated_at >= transfer.received_at - LATE_WINDOW,
        )
        .order_by(ExchangeOrder.id.desc())
        .limit(1)
    )
    if late is not None:
        row.status, row.order_id = REVIEW, late.id
        row.note = f"late payment for {late.status} order"
        return row
    if len(awaiting) == 1:
        row.status, row.order_id = REVIEW, awaiting[0].id
        row.note = "amount differs from the payable amount; held for review"
        return row
    row.note = "no open order on this requisite expects this amount"
    return row


async def _apply(
    session: AsyncSession,
    rt: Runtime,
    row: IncomingTransfer,
    order: ExchangeOrder,
    amount: int,
    now: datetime,
    actor: str,
    note: str,
) -> None:
    await confirm_paid(session, rt, order.id, now=now, actor=actor, paid_amount=amount, note=note)
    row.status, row.order_id, row.note = MATCHED, order.id, note


async def match_transfer(
    session: AsyncSession, rt: Runtime, transfer_id: int, order_id: int, now: datetime, actor: str
) -> IncomingTransfer:
    """Operator's decision: apply an unmatched or held transfer to an open order at the received amount."""
    row = await session.scalar(
        select(IncomingTransfer).where(IncomingTransfer.id == transfer_id).with_for_update()
    )
    if row is None:
        raise NotFound(f"transfer {transfer_id} not found")
    if row.status == MATCHED:
        raise BusinessRuleViolation(f"transfer {transfer_id} is already matched to order {row.order_id}")
    await _apply(
        session, rt, row, await _order(session, order_id), row.amount, now, actor, "matched by operator"
    )
    return row


async def _order(session: AsyncSession, order_id: int) -> ExchangeOrder:
    order = await session.get(ExchangeOrder, order_id)
    if order is None:
        raise NotFound(f"order {order_id} not found", code="order_not_found")
    return order
