"""Exchange orders: create, read, cancel, pay, complete, expire. Each function is one use case
running inside the caller's transaction; every status change goes through `transition`."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, and_, bindparam, insert, select, text, true, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain.bitcoin_address import parse_address
from greengate.domain.errors import BusinessRuleViolation, DomainError, InvalidRequest, NotFound
from greengate.domain.exchange import OPEN_STATUSES, OrderStatus, check_transition
from greengate.domain.money import format_minor, parse_amount
from greengate.domain.pricing import amount_receivable_sat
from greengate.metrics import ORDER_TRANSITIONS
from greengate.payouts.btc import validate_txid
from greengate.runtime import Runtime
from greengate.security.encryption import Keyring
from greengate.services import ledger, outbox
from greengate.services.merchants import ACTIVE_SECRET_OWNER, api_secret_digest
from greengate.services.rates import CachedRate, lock_rate
from greengate.services.requisites import (
    ALL_CARDS,
    CARDS_IN_TURN,
    SLOT_COLUMNS,
    Candidate,
    allocation_choices,
    decrypt_number,
    gather_slots,
    slots,
    taken_between,
    within_limits,
)
from greengate.store.db import column_values, table_of, update_versioned
from greengate.store.links import Link, Row, SqlAlchemyLink
from greengate.store.models import BtcPayoutSend, Direction, ExchangeOrder, Merchant, OrderEvent, Rate

EXPIRE_JOB = "exchange.order_expire"
CALLBACK = "exchange.callback"


@dataclass(frozen=True)
class CreateOrderRequest:
    payment_method: str
    wallet: str
    from_amount: object  # decimal text, int or exact Decimal as parsed from the wire


@dataclass(frozen=True)
class CreatedOrder:
    order: dict[str, Any]  # the new row's columns
    requisite_number: str  # the assigned card's number, "" while the order is unconfirmed


@dataclass(frozen=True)
class CancelOutcome:
    order_id: int
    status: str
    canceled: bool


def _resolve_wallet(rt: Runtime, default_wallet: str | None, wallet: str) -> str:
    if wallet == "":
        if not default_wallet:
            raise BusinessRuleViolation(
                "wallet is empty and no default payout wallet is set for this client",
                code="no_default_wallet",
            )
        wallet = default_wallet
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


# Statements built once per dialect, values bound per use. A concurrent order that took the same
# (requisite, amount) makes the insert of an awaiting one a no-op (the partial unique index).
_ORDERS = table_of(ExchangeOrder)
_DIRECTIONS = table_of(Direction)
_RATES = table_of(Rate)
_EVENTS = table_of(OrderEvent)
_INSERT_EVENT = insert(_EVENTS).values({c.key: bindparam(c.key) for c in _EVENTS.c if c.key != "id"})
_AWAITING_SLOT = ["requisite_id", "amount_payable"]
_AWAITING_ONLY = text("status = 'awaiting'")
# A new order's columns: all but its id and what payment and completion fill in later.
_LATER = ("id", "paid_amount", "txid", "paid_at", "completed_at")
_ORDER_VALUES: dict[str, Any] = {c.key: bindparam(c.key) for c in _ORDERS.c if c.key not in _LATER}
# SQLite's order insert; the event and messages follow in the same transaction.
_INSERT_ORDER = (
    sqlite.insert(_ORDERS)
    .values(_ORDER_VALUES)
    .on_conflict_do_nothing(index_elements=_AWAITING_SLOT, index_where=_AWAITING_ONLY)
    .returning(_ORDERS.c.id)
)
# On PostgreSQL a new order, its first event, its expiry job and (with a webhook URL) the client's
# callback are written by one statement, atomic on its own: no BEGIN and COMMIT round trips. Nothing is
# written when the order's (requisite, amount) slot was taken meanwhile. The payloads are the JSON
# `outbox.enqueue_now` writes.
_ORDER_COLUMNS = ", ".join(_ORDER_VALUES)
_INSERT_ORDER_WITH_MESSAGES = text(  # the f-string only spells out the model's column names
    f"""
    WITH new_order AS (
        INSERT INTO exchange_orders ({_ORDER_COLUMNS})
        VALUES ({", ".join(f":{name}" for name in _ORDER_VALUES)})
        ON CONFLICT (requisite_id, amount_payable) WHERE status = 'awaiting' DO NOTHING
        RETURNING id, status, expires_at, created_at
    ), first_event AS (
        INSERT INTO order_events (order_id, from_status, to_status, actor, note, at)
        SELECT id, NULL, status, :actor, '', created_at FROM new_order
    ), expiry AS (
        INSERT INTO outbox (kind, merchant_id, aggregate, payload, status, attempts, due_at, created_at)
        SELECT :expire_kind, :merchant_id, 'order:' || id, '{{"order_id":' || id || '}}',
               :pending, 0, expires_at, created_at
        FROM new_order
    ), callback AS (
        INSERT INTO outbox (kind, merchant_id, aggregate, payload, target_url, status, attempts, due_at,
                            created_at)
        SELECT :callback_kind, :merchant_id, 'order:' || id,
               '{{"order_id":' || id || ',"order_status":"' || status || '","version"\\:1}}',
               CAST(:webhook_url AS VARCHAR), :pending, 0, created_at, created_at
        FROM new_order WHERE CAST(:webhook_url AS VARCHAR) IS NOT NULL
    )
    SELECT id FROM new_order
    """  # noqa: S608
)
_LOW = bindparam("low", type_=BigInteger)
# What a create reads of its direction.
_TERMS = (
    *("id", "status", "payment_method", "from_currency", "to_currency", "min_amount", "max_amount"),
    *("commission_percent", "order_ttl", "rate_source", "unique_amounts", "unique_amount_span"),
)
# What a create needs besides the request, in one statement: the client by its API secret's digest,
# the direction of the payment method (null columns when there is none), its cached market rate, and
# the first batch of the method's cards in turn, each with the amounts from the request's on (as far
# as the direction may shift it) that its awaiting orders hold: one row per card and taken amount.
_ORDER_CONTEXT = (
    select(
        Merchant.id.label("client_id"),
        Merchant.default_wallet,
        Merchant.webhook_url,
        *(_DIRECTIONS.c[name].label(f"d_{name}") for name in _TERMS),
        _RATES.c.rate.label("cached_rate"),
        _RATES.c.fetched_at.label("rate_fetched_at"),
        *SLOT_COLUMNS,
    )
    .select_from(Merchant)
    .outerjoin(_DIRECTIONS, _DIRECTIONS.c.payment_method == bindparam("payment_method"))
    .outerjoin(
        _RATES,
        and_(
            _RATES.c.source == _DIRECTIONS.c.rate_source,
            _RATES.c.base == _DIRECTIONS.c.to_currency,
            _RATES.c.quote == _DIRECTIONS.c.from_currency,
        ),
    )
    .outerjoin(CARDS_IN_TURN, true())
    .outerjoin(
        ExchangeOrder,
        taken_between(_LOW, _LOW + _DIRECTIONS.c.unique_amount_span),
    )
    .where(ACTIVE_SECRET_OWNER)
)
# A direction's currency, per payment method, as last read: the amount is parsed in it before the
# direction is read, so that the same statement can read the cards' taken amounts (checked after).
_currency_of: dict[str, str] = {}


@dataclass(frozen=True)
class OrderContext:
    client_id: int
    default_wallet: str | None
    webhook_url: str | None
    direction: dict[str, Any] | None  # the direction's `_TERMS`; None for an unknown payment method
    cached_rate: CachedRate | None
    # The first batch of cards and their taken amounts, read for this amount in minor units (None
    # when the amount could not be known before the direction was read).
    slots: tuple[list[Candidate], set[tuple[int, int]]]
    slots_amount: int | None


async def order_context(
    link: Link, api_secret: str, payment_method: str, from_amount: object = None
) -> OrderContext | None:
    """The active client holding the API secret, with the direction of the payment method and the
    first cards to try for the amount; None when no active client holds the secret."""
    digest = api_secret_digest(api_secret)
    if digest is None:
        return None
    amount: int | None = None
    currency = _currency_of.get(payment_method)
    if currency is not None:
        try:
            amount = parse_amount(from_amount, currency, field="from_amount")
        except DomainError:
            amount = None  # refused in its turn, after the client and the direction
    after = _turn.get(payment_method, 0)
    params = {
        "api_secret_hash": digest,
        "payment_method": payment_method,
        "after": after,
        "batch": ALLOCATION_BATCH,
        "low": -1 if amount is None else amount,
    }
    rows = await link.rows(_ORDER_CONTEXT, params)
    if not rows:
        return None
    row = rows[0]
    direction = None
    if row["d_id"] is not None:
        direction = {name: row[f"d_{name}"] for name in _TERMS}
        _currency_of[payment_method] = direction["from_currency"]
        if direction["from_currency"] != currency:
            amount = None
    cached = (
        CachedRate(row["cached_rate"], row["rate_fetched_at"]) if row["cached_rate"] is not None else None
    )
    slots_found = gather_slots(rows, after)
    return OrderContext(
        row["client_id"], row["default_wallet"], row["webhook_url"], direction, cached, slots_found, amount
    )


async def create_order(
    link: Link, rt: Runtime, ctx: OrderContext, request: CreateOrderRequest, now: datetime
) -> CreatedOrder:
    direction = ctx.direction
    if direction is None:
        raise BusinessRuleViolation(
            f"unknown payment_method {request.payment_method!r}", code="unknown_direction"
        )
    currency = direction["from_currency"]
    if direction["status"] != 1:
        raise BusinessRuleViolation(
            f"direction {direction['payment_method']} is disabled", code="direction_disabled"
        )
    amount = parse_amount(request.from_amount, currency, field="from_amount")
    if not direction["min_amount"] <= amount <= direction["max_amount"]:
        low = format_minor(direction["min_amount"], currency, trim=True)
        high = format_minor(direction["max_amount"], currency, trim=True)
        raise BusinessRuleViolation(
            f"from_amount must be between {low} and {high}",
            code="amount_out_of_range",
        )
    wallet = _resolve_wallet(rt, ctx.default_wallet, request.wallet)
    locked = lock_rate(rt, direction["rate_source"], direction["to_currency"], currency, ctx.cached_rate, now)
    commission = Decimal(direction["commission_percent"])

    values = {
        "merchant_id": ctx.client_id,
        "direction_id": direction["id"],
        "payment_method": direction["payment_method"],
        "version": 1,
        "wallet": wallet,
        "currency": currency,
        "from_amount": amount,
        "exchange_rate": str(locked.rate),
        "rate_source": locked.source,
        "commission_percent": direction["commission_percent"],
        "access_token": secrets.token_urlsafe(24),
        "expires_at": now + timedelta(minutes=direction["order_ttl"]),
        "created_at": now,
        "updated_at": now,
    }
    order: dict[str, Any] | None = None
    number = ""
    first = ctx.slots if ctx.slots_amount == amount else None
    span = unique_span(direction, amount)
    async for cand, payable in _free_slots(link, direction["payment_method"], amount, span, first):
        row = dict(
            values,
            status=OrderStatus.AWAITING.value,
            requisite_id=cand.id,
            amount_payable=payable,
            amount_receivable=amount_receivable_sat(payable, currency, locked.rate, commission),
        )
        if cand.daily_limit is None and cand.turnover_limit is None:
            order_id = await _insert_order(link, row, ctx.webhook_url)
        else:
            # The card's turnover is summed under its row lock, held until the order is written.
            async with link.transaction():
                fits = await within_limits(link, cand, payable, now)
                order_id = await _insert_order(link, row, ctx.webhook_url) if fits else None
        if order_id is not None:
            order = dict(row, id=order_id)
            number = decrypt_number(rt.keyring, cand.id, cand.number_enc)
            _turn[direction["payment_method"]] = cand.id
            break
    if order is None:
        row = dict(
            values,
            status=OrderStatus.UNCONFIRMED.value,
            requisite_id=None,
            amount_payable=amount,
            amount_receivable=amount_receivable_sat(amount, currency, locked.rate, commission),
        )
        order_id = await _insert_order(link, row, ctx.webhook_url)
        assert order_id is not None  # no slot, no conflict
        order = dict(row, id=order_id)
    ORDER_TRANSITIONS.labels(to=order["status"]).inc()
    return CreatedOrder(order, number)


async def _insert_order(link: Link, row: dict[str, Any], webhook_url: str | None) -> int | None:
    """Write a new order with its first event, its expiry job and the client's callback (with a webhook
    URL); None, writing nothing, when a concurrent order took its (requisite, amount) slot."""
    if link.dialect == "postgresql":
        params = dict(
            row,
            actor="api",
            expire_kind=EXPIRE_JOB,
            callback_kind=CALLBACK,
            pending=outbox.PENDING,
            webhook_url=webhook_url,
        )
        found = await link.row(_INSERT_ORDER_WITH_MESSAGES, params)
        return None if found is None else int(found["id"])
    async with link.transaction():
        found = await link.row(_INSERT_ORDER, row)
        if found is None:
            return None
        order_id = int(found["id"])
        now, merchant_id = row["created_at"], row["merchant_id"]
        event = {"order_id": order_id, "from_status": None, "to_status": row["status"], "actor": "api"}
        await link.execute(_INSERT_EVENT, dict(event, note="", at=now))
        await outbox.enqueue_now(
            link,
            kind=EXPIRE_JOB,
            aggregate=f"order:{order_id}",
            payload={"order_id": order_id},
            now=now,
            due_at=row["expires_at"],
            merchant_id=merchant_id,
        )
        callback = _callback(merchant_id, webhook_url, order_id, row["status"], row["version"])
        if callback is not None:
            await outbox.enqueue_now(link, now=now, **callback)
    return order_id


def unique_span(direction: Mapping[str, Any], amount: int) -> int:
    """How far above the amount a payable amount may be shifted to keep it unique on its card (0 when
    the direction does not shift amounts); shifted amounts stay within the direction's maximum."""
    if not direction["unique_amounts"]:
        return 0
    return int(min(direction["unique_amount_span"], direction["max_amount"] - amount))


# The last card each payment method's allocation took in this process: the next search starts after
# it, so that orders spread over the cards without counting every card's open orders on each create.
_turn: dict[str, int] = {}
# Cards read per search: the first free slot is almost always among them; all cards are read when not.
ALLOCATION_BATCH = 4


async def _free_slots(
    link: Link,
    payment_method: str,
    amount: int,
    span: int,
    first: tuple[list[Candidate], set[tuple[int, int]]] | None = None,
) -> AsyncIterator[tuple[Candidate, int]]:
    """(requisite, payable amount) pairs not taken by an open order; the caller checks the limits of a
    card that has them. `first` is the first batch when the caller has read it already."""
    after = _turn.get(payment_method, 0)
    tried: set[int] = set()
    for batch in (ALLOCATION_BATCH, ALL_CARDS):
        if first is not None:
            (cands, taken), first = first, None
        else:
            cands, taken = await slots(link, payment_method, amount, amount + span, after=after, batch=batch)
        fresh = [c for c in cands if c.id not in tried]
        for cand, payable in allocation_choices(fresh, amount, span, taken):
            yield cand, payable
        tried.update(c.id for c in cands)
        if len(cands) < batch:
            return  # that was every card


def _callback(
    merchant_id: int, webhook_url: str | None, order_id: int, status: str, version: int
) -> dict[str, Any] | None:
    """The outbox message telling the client the order's status; None without a webhook URL."""
    if not webhook_url:
        return None
    return {
        "kind": CALLBACK,
        "aggregate": f"order:{order_id}",
        "payload": {"order_id": order_id, "order_status": status, "version": version},
        "merchant_id": merchant_id,
        "target_url": webhook_url,
    }


def _enqueue_callback(session: AsyncSession, merchant: Merchant, order: ExchangeOrder, now: datetime) -> None:
    callback = _callback(merchant.id, merchant.webhook_url, order.id, order.status, order.version)
    if callback is not None:
        outbox.enqueue(session, now=now, **callback)


# What the wire shows of an order (`order_wire`), and the card it is paid to.
WIRE_COLUMNS = (
    *("id", "status", "currency", "exchange_rate", "amount_payable", "amount_receivable", "wallet"),
    *("created_at", "updated_at", "expires_at", "access_token", "requisite_id", "txid"),
)


def with_numbers(keyring: Keyring, rows: Iterable[Row]) -> list[tuple[Row, str]]:
    """The rows of orders (a row without an order is skipped), each with its card's number ("" without
    one), in the order given."""
    numbers: dict[int, str] = {}
    found: list[tuple[Row, str]] = []
    for row in rows:
        requisite_id = row["requisite_id"]
        if row["id"] is None:
            continue  # the client's own row, when none of the ids is theirs
        if requisite_id is not None and requisite_id not in numbers:
            numbers[requisite_id] = decrypt_number(keyring, requisite_id, row["number_enc"])
        found.append((row, numbers.get(requisite_id or 0, "")))
    return found


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
    if not await update_versioned(session, order, values):
        raise BusinessRuleViolation(f"order {order.id} changed concurrently", code="concurrent_update")
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
        if OrderStatus(order.status) in OPEN_STATUSES and order.expires_at <= now:
            # Its time ran out before the expiry sweep came by: it is autocanceled, not canceled.
            await expire_order(session, rt, order.id, now)
            outcomes.append(CancelOutcome(order.id, order.status, False))
        elif OrderStatus(order.status) in OPEN_STATUSES:
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
    completed = await transition(
        session,
        rt,
        order,
        OrderStatus.COMPLETED,
        actor=actor,
        now=now,
        note=f"txid {clean}",
        changes={"txid": clean, "completed_at": now},
    )
    await session.execute(
        update(BtcPayoutSend)
        .where(BtcPayoutSend.order_id == order_id)
        .values(state="sent", finished_at=now)
        .execution_options(synchronize_session=False)
    )
    return completed


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
    link = SqlAlchemyLink(session)
    assigned = 0
    for order in waiting:
        span = unique_span(column_values(direction), order.from_amount)
        async for cand, payable in _free_slots(link, payment_method, order.from_amount, span):
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
