"""Exchange orders: create, read, cancel, pay, complete, expire. Each function is one use case
running inside the caller's transaction; every status change goes through `transition`."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from greengate.domain.bitcoin_address import parse_address
from greengate.domain.errors import BusinessRuleViolation, InvalidRequest, NotFound
from greengate.domain.exchange import OPEN_STATUSES, OrderStatus, check_transition
from greengate.domain.money import format_minor, parse_amount
from greengate.domain.pricing import amount_receivable_sat
from greengate.metrics import ORDER_TRANSITIONS
from greengate.payouts.btc import validate_txid
from greengate.runtime import Runtime
from greengate.services import ledger, outbox
from greengate.services.rates import current_rate
from greengate.services.requisites import (
    Candidate,
    allocation_choices,
    candidates,
    taken_amounts,
    within_limits,
)
from greengate.store.db import dialect_name
from greengate.store.models import Direction, ExchangeOrder, Merchant, OrderEvent

EXPIRE_JOB = "exchange.order_expire"
CALLBACK = "exchange.callback"


@dataclass(frozen=True)
class CreateOrderRequest:
    payment_method: str
    wallet: str
    from_amount: object  # decimal text, int or exact Decimal as parsed from the wire


@dataclass(frozen=True)
class CancelOutcome:
    order_id: int
    status: str
    canceled: bool


async def load_direction(session: AsyncSession, payment_method: str) -> Direction:
    direction = await session.scalar(select(Direction).where(Direction.payment_method == payment_method))
    if direction is None:
        raise BusinessRuleViolation(f"unknown payment_method {payment_method!r}", code="unknown_direction")
    return direction


def _resolve_wallet(rt: Runtime, merchant: Merchant, wallet: str) -> str:
    if wallet == "":
        if not merchant.default_wallet:
            raise BusinessRuleViolation(
                "wallet is empty and no default payout wallet is set for this client",
                code="no_default_wallet",
            )
        wallet = merchant.default_wallet
    try:
        address = parse_address(wallet, rt.settings.btc_network)
    except ValueError as exc:
        raise BusinessRuleViolation(
            f"wallet is not a valid {rt.settings.btc_network.value} Bitcoin address: {exc}",
            code="invalid_wallet",
        ) from None
    if address.kind == "witness_unknown":
        # Future segwit versions are valid addresses but not yet spendable under consensus rules.
        raise BusinessRuleViolation(
            "wallet uses a segwit version that cannot receive payouts", code="invalid_wallet"
        )
    return address.text


def _insert(session: AsyncSession):  # type: ignore[no-untyped-def]
    return (postgresql if dialect_name(session) == "postgresql" else sqlite).insert


def _awaiting_conflict_target() -> dict[str, object]:
    return {"index_elements": ["requisite_id", "amount_payable"], "index_where": text("status = 'awaiting'")}


async def create_order(
    session: AsyncSession, rt: Runtime, merchant: Merchant, request: CreateOrderRequest, now: datetime
) -> ExchangeOrder:
    direction = await load_direction(session, request.payment_method)
    if direction.status != 1:
        raise BusinessRuleViolation(
            f"direction {direction.payment_method} is disabled", code="direction_disabled"
        )
    amount = parse_amount(request.from_amount, direction.from_currency, field="from_amount")
    if not direction.min_amount <= amount <= direction.max_amount:
        low = format_minor(direction.min_amount, direction.from_currency, trim=True)
        high = format_minor(direction.max_amount, direction.from_currency, trim=True)
        raise BusinessRuleViolation(
            f"from_amount must be between {low} and {high}",
            code="amount_out_of_range",
        )
    wallet = _resolve_wallet(rt, merchant, request.wallet)
    locked = await current_rate(session, rt, direction, now)
    commission = Decimal(direction.commission_percent)

    values = {
        "merchant_id": merchant.id,
        "direction_id": direction.id,
        "payment_method": direction.payment_method,
        "version": 1,
        "wallet": wallet,
        "currency": direction.from_currency,
        "from_amount": amount,
        "exchange_rate": str(locked.rate),
        "rate_source": locked.source,
        "commission_percent": direction.commission_percent,
        "access_token": secrets.token_urlsafe(24),
        "expires_at": now + timedelta(minutes=direction.order_ttl),
        "created_at": now,
        "updated_at": now,
    }
    insert = _insert(session)
    order_id: int | None = None
    async for cand, payable in _free_slots(session, direction, amount, now):
        row = dict(
            values,
            status=OrderStatus.AWAITING.value,
            requisite_id=cand.id,
            amount_payable=payable,
            amount_receivable=amount_receivable_sat(
                payable, direction.from_currency, locked.rate, commission
            ),
        )
        # A concurrent order that took the same (requisite, amount) makes this insert a no-op.
        stmt = insert(ExchangeOrder).values(**row).on_conflict_do_nothing(**_awaiting_conflict_target())
        order_id = await session.scalar(stmt.returning(ExchangeOrder.id))
        if order_id is not None:
            break
    if order_id is None:
        row = dict(
            values,
            status=OrderStatus.UNCONFIRMED.value,
            requisite_id=None,
            amount_payable=amount,
            amount_receivable=amount_receivable_sat(amount, direction.from_currency, locked.rate, commission),
        )
        order_id = await session.scalar(insert(ExchangeOrder).values(**row).returning(ExchangeOrder.id))
    assert order_id is not None
    order = ExchangeOrder(id=order_id, **row)
    ORDER_TRANSITIONS.labels(to=order.status).inc()
    session.add(
        OrderEvent(order_id=order_id, from_status=None, to_status=order.status, actor="api", note="", at=now)
    )
    outbox.enqueue(
        session,
        kind=EXPIRE_JOB,
        aggregate=f"order:{order_id}",
        payload={"order_id": order_id},
        now=now,
        due_at=order.expires_at,
        merchant_id=merchant.id,
    )
    _enqueue_callback(session, merchant, order, now)
    return order


async def _free_slots(
    session: AsyncSession, direction: Direction, amount: int, now: datetime
) -> AsyncIterator[tuple[Candidate, int]]:
    """(requisite, payable amount) pairs not taken by an open order and within the card's limits."""
    cands = await candidates(session, direction.payment_method)
    if not cands:
        return
    # Shifted amounts stay within the direction's maximum.
    span = min(direction.unique_amount_span, direction.max_amount - amount) if direction.unique_amounts else 0
    taken = await taken_amounts(session, [c.id for c in cands], amount, amount + span)
    refused: set[int] = set()
    for cand, payable in allocation_choices(cands, amount, span, taken):
        if cand.id in refused:
            continue
        if await within_limits(session, cand, payable, now):
            yield cand, payable
        else:
            # Over its limit (or locked by another order) now: a larger amount is no better.
            refused.add(cand.id)


def _enqueue_callback(session: AsyncSession, merchant: Merchant, order: ExchangeOrder, now: datetime) -> None:
    if not merchant.webhook_url:
        return
    outbox.enqueue(
        session,
        kind=CALLBACK,
        aggregate=f"order:{order.id}",
        payload={"order_id": order.id, "order_status": order.status, "version": order.version},
        now=now,
        merchant_id=merchant.id,
        target_url=merchant.webhook_url,
    )


async def orders_of(session: AsyncSession, merchant_id: int, ids: Iterable[int]) -> list[ExchangeOrder]:
    wanted = sorted(set(ids))
    if not wanted:
        return []
    rows = await session.scalars(
        select(ExchangeOrder)
        .where(ExchangeOrder.merchant_id == merchant_id, ExchangeOrder.id.in_(wanted))
        .order_by(ExchangeOrder.id)
    )
    return list(rows)


async def lock_order(session: AsyncSession, order_id: int, merchant_id: int | None = None) -> ExchangeOrder:
    stmt = select(ExchangeOrder).where(ExchangeOrder.id == order_id).with_for_update()
    if merchant_id is not None:
        stmt = stmt.where(ExchangeOrder.merchant_id == merchant_id)
    order = await session.scalar(stmt)
    if order is None:
        raise NotFound(f"order {order_id} not found", code="order_not_found")
    return order


async def transition(
    session: AsyncSession,
    rt: Runtime,
    order: ExchangeOrder,
    target: OrderStatus,
    *,
    actor: str,
    now: datetime,
    note: str = "",
    changes: dict[str, Any] | None = None,
) -> ExchangeOrder:
    """The one way an order changes status, with any fields that change along with it.

    The caller holds the order's row lock; the version check on top refuses a stale in-memory order.
    """
    current = OrderStatus(order.status)
    check_transition(current, target)
    values = dict(changes or {}, status=target.value, version=order.version + 1, updated_at=now)
    result = await session.execute(
        update(ExchangeOrder)
        .where(ExchangeOrder.id == order.id, ExchangeOrder.version == order.version)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise BusinessRuleViolation(f"order {order.id} changed concurrently", code="concurrent_update")
    for key, value in values.items():
        set_committed_value(order, key, value)
    await ledger.post_order_transition(session, order, target, now)
    ORDER_TRANSITIONS.labels(to=target.value).inc()
    session.add(
        OrderEvent(
            order_id=order.id,
            from_status=current.value,
            to_status=target.value,
            actor=actor,
            note=note,
            at=now,
        )
    )
    merchant = await session.get(Merchant, order.merchant_id)
    if merchant is not None:
        _enqueue_callback(session, merchant, order, now)
    if current is OrderStatus.AWAITING and order.requisite_id is not None:
        await assign_waiting_orders(session, rt, order.payment_method, now)
    return order


async def cancel_orders(
    session: AsyncSession, rt: Runtime, merchant: Merchant, ids: Iterable[int], now: datetime
) -> list[CancelOutcome]:
    outcomes: list[CancelOutcome] = []
    for order_id in sorted(set(ids)):
        try:
            order = await lock_order(session, order_id, merchant.id)
        except NotFound:
            continue  # never reveal other clients' orders
        if OrderStatus(order.status) in OPEN_STATUSES:
            await transition(session, rt, order, OrderStatus.CANCELED, actor=f"client:{merchant.id}", now=now)
            outcomes.append(CancelOutcome(order.id, order.status, True))
        else:
            outcomes.append(CancelOutcome(order.id, order.status, False))
    return outcomes


async def confirm_paid(
    session: AsyncSession,
    rt: Runtime,
    order_id: int,
    *,
    now: datetime,
    actor: str,
    paid_amount: int | None = None,
    note: str = "",
) -> ExchangeOrder:
    order = await lock_order(session, order_id)
    if order.requisite_id is None and paid_amount is None:
        raise BusinessRuleViolation(
            f"order {order_id} has no requisites assigned; nothing can have been paid to it",
            code="no_requisite",
        )
    paid = order.amount_payable if paid_amount is None else paid_amount
    changes: dict[str, Any] = {"paid_amount": paid, "paid_at": now}
    if paid != order.amount_payable:
        # Accepted at a different amount (operator's decision): re-price what the client receives.
        changes["amount_receivable"] = amount_receivable_sat(
            paid, order.currency, Decimal(order.exchange_rate), Decimal(order.commission_percent)
        )
    return await transition(
        session, rt, order, OrderStatus.PAYED, actor=actor, now=now, note=note, changes=changes
    )


async def complete_order(
    session: AsyncSession, rt: Runtime, order_id: int, *, txid: str, now: datetime, actor: str
) -> ExchangeOrder:
    try:
        clean = validate_txid(txid)
    except ValueError as exc:
        raise InvalidRequest(str(exc), code="invalid_txid") from None
    order = await lock_order(session, order_id)
    return await transition(
        session,
        rt,
        order,
        OrderStatus.COMPLETED,
        actor=actor,
        now=now,
        note=f"txid {clean}",
        changes={"txid": clean, "completed_at": now},
    )


async def expire_order(session: AsyncSession, rt: Runtime, order_id: int, now: datetime) -> bool:
    """TTL job: autocancel the order if it is still open and its time has passed."""
    order = await session.scalar(select(ExchangeOrder).where(ExchangeOrder.id == order_id).with_for_update())
    if order is None or OrderStatus(order.status) not in OPEN_STATUSES or order.expires_at > now:
        return False
    await transition(session, rt, order, OrderStatus.AUTOCANCELED, actor="worker", now=now, note="ttl passed")
    return True


async def assign_waiting_orders(
    session: AsyncSession, rt: Runtime, payment_method: str, now: datetime, *, limit: int = 20
) -> int:
    """Give freed requisites to unconfirmed orders, oldest first."""
    waiting = list(
        await session.scalars(
            select(ExchangeOrder)
            .where(
                ExchangeOrder.status == OrderStatus.UNCONFIRMED.value,
                ExchangeOrder.payment_method == payment_method,
                ExchangeOrder.expires_at > now,
            )
            .order_by(ExchangeOrder.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not waiting:
        return 0
    direction = await session.get(Direction, waiting[0].direction_id)
    assert direction is not None
    assigned = 0
    for order in waiting:
        async for cand, payable in _free_slots(session, direction, order.from_amount, now):
            changes = {
                "requisite_id": cand.id,
                "amount_payable": payable,
                "amount_receivable": amount_receivable_sat(
                    payable, order.currency, Decimal(order.exchange_rate), Decimal(order.commission_percent)
                ),
            }
            try:
                async with session.begin_nested():
                    await transition(
                        session, rt, order, OrderStatus.AWAITING, actor="allocator", now=now, changes=changes
                    )
            except IntegrityError:
                continue  # the unique index refused a (requisite, amount) taken meanwhile
            assigned += 1
            break
        else:
            break  # nothing free for this one; later ones are no luckier
    return assigned


async def cancel_order_by_operator(
    session: AsyncSession, rt: Runtime, order_id: int, *, now: datetime, actor: str, note: str = ""
) -> ExchangeOrder:
    """The operator cancels an open order (the client's own cancel rules apply: a paid order stays)."""
    order = await lock_order(session, order_id)
    return await transition(session, rt, order, OrderStatus.CANCELED, actor=actor, now=now, note=note)
