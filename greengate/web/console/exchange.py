"""Exchange: directions and live rates, requisites, orders with their actions, incoming transfers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.clock import utcnow
from greengate.domain.errors import DomainError, InvalidRequest
from greengate.domain.exchange import OrderStatus
from greengate.domain.money import parse_amount
from greengate.services import exchange_orders, requisites, transfers
from greengate.services.audit import record_audit
from greengate.services.directions import (
    DirectionChanges,
    create_direction,
    list_directions,
    update_direction,
)
from greengate.services.rates import current_rate
from greengate.store.models import (
    Direction,
    ExchangeOrder,
    IncomingTransfer,
    Merchant,
    OrderEvent,
    OutboxMessage,
    Rate,
    Requisite,
)
from greengate.web.console import filters
from greengate.web.console.auth import Console, ConsoleRoute, action, page, perform
from greengate.web.console.rendering import paginate, render

router = APIRouter(route_class=ConsoleRoute)
ORDER_STATUSES = [s.value for s in OrderStatus]
TRANSFER_STATUSES = (transfers.UNMATCHED, transfers.REVIEW, transfers.MATCHED)


# --- directions and rates --------------------------------------------------------------------


@router.get("/admin/directions")
async def direction_list(request: Request, console: Console = Depends(page())) -> Response:
    now = utcnow()
    rows = []
    async with console.rt.db.transaction() as session:
        for d in await list_directions(session):
            try:
                locked = await current_rate(session, console.rt, d, now)
                rate, rate_error = str(locked.rate), None
                age = None if locked.fetched_at is None else int((now - locked.fetched_at).total_seconds())
            except DomainError as exc:
                rate, rate_error, age = None, exc.message, None
            rows.append({"d": d, "rate": rate, "rate_error": rate_error, "age": age})
        cached = list(await session.scalars(select(Rate).order_by(Rate.source, Rate.base, Rate.quote)))
    return render(
        request,
        "directions.html",
        console,
        rows=rows,
        cached=cached,
        now=now,
        max_age=console.rt.settings.rate_max_age_seconds,
    )


def _direction_changes(console: Console, *, status_default: int | None = None) -> DirectionChanges:
    def opt(name: str) -> str | None:
        return console.value(name) or None

    def opt_int(name: str) -> int | None:
        raw = console.value(name)
        if not raw:
            return None
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
            raise InvalidRequest(f"{name} must be a whole number", field=name)
        return int(raw)

    status = opt_int("status")
    return DirectionChanges(
        status=status if status is not None else status_default,
        order_ttl=opt_int("order_ttl"),
        min_amount=opt("min_amount"),
        max_amount=opt("max_amount"),
        commission_percent=opt("commission_percent"),
        fullname=opt("fullname"),
        rate_source=opt("rate_source"),
        unique_amounts=(console.value("unique_amounts") == "1")
        if "unique_amounts_shown" in console.form
        else None,
        unique_amount_span=opt_int("unique_amount_span"),
        underpay_tolerance_percent=opt("underpay_tolerance_percent"),
        reserve_btc=opt("reserve_btc"),
    )


@router.post("/admin/directions")
async def direction_create(console: Console = Depends(action("directions"))) -> Response:
    async def work(session: AsyncSession) -> str:
        d = await create_direction(
            session,
            payment_method=console.value("payment_method", 32),
            from_currency=console.value("from_currency", 8),
            changes=_direction_changes(console, status_default=1),
            now=utcnow(),
            actor=console.actor,
        )
        return f"Direction {d.payment_method} created."

    return await perform(console, work, "/admin/directions")


@router.get("/admin/directions/{direction_id}")
async def direction_page(direction_id: int, request: Request, console: Console = Depends(page())) -> Response:
    async with console.rt.db.transaction() as session:
        direction = await session.get(Direction, direction_id)
    if direction is None:
        return render(request, "not_found.html", console, status_code=404, what=f"direction {direction_id}")
    return render(request, "direction.html", console, d=direction)


@router.post("/admin/directions/{direction_id}")
async def direction_update(direction_id: int, console: Console = Depends(action("directions"))) -> Response:
    async def work(session: AsyncSession) -> str:
        d = await update_direction(
            session, direction_id, _direction_changes(console), now=utcnow(), actor=console.actor
        )
        return f"Direction {d.payment_method} saved."

    return await perform(console, work, f"/admin/directions/{direction_id}")


# --- requisites ------------------------------------------------------------------------------


async def _currency_of(session: AsyncSession, payment_method: str) -> str:
    currency = await session.scalar(
        select(Direction.from_currency).where(Direction.payment_method == payment_method)
    )
    return currency or "RUB"


@router.get("/admin/requisites")
async def requisite_list(request: Request, console: Console = Depends(page())) -> Response:
    method = filters.text(request, "payment_method", 32)
    state = filters.text(request, "state")
    stmt = select(Requisite).order_by(Requisite.id.desc())
    if method:
        stmt = stmt.where(Requisite.payment_method == method)
    if state in ("active", "disabled"):
        stmt = stmt.where(Requisite.active.is_(state == "active"))
    async with console.rt.db.transaction() as session:
        reqs = await paginate(session, stmt, request)
        usage = await requisites.turnover(session, {r.id for r in reqs.items}, utcnow())
        currencies = dict(
            (await session.execute(select(Direction.payment_method, Direction.from_currency))).all()
        )
    return render(
        request,
        "requisites.html",
        console,
        page=reqs,
        usage=usage,
        currencies=currencies,
        method=method,
        state=state,
    )


def _limit(console: Console, name: str, currency: str) -> int | None:
    raw = console.value(name, 30)
    return parse_amount(raw, currency, field=name) if raw else None


@router.post("/admin/requisites")
async def requisite_add(console: Console = Depends(action("requisites"))) -> Response:
    async def work(session: AsyncSession) -> str:
        method = console.value("payment_method", 32)
        currency = await _currency_of(session, method)
        req = await requisites.add_requisite(
            session,
            console.rt.keyring,
            payment_method=method,
            number=console.value("number", 40),
            bank=console.value("bank", 100),
            holder=console.value("holder", 200),
            daily_limit=_limit(console, "daily_limit", currency),
            turnover_limit=_limit(console, "turnover_limit", currency),
            now=utcnow(),
            actor=console.actor,
        )
        return f"Requisite {req.number_masked} added."

    return await perform(console, work, "/admin/requisites")


@router.post("/admin/requisites/{requisite_id}/active")
async def requisite_active(requisite_id: int, console: Console = Depends(action("requisites"))) -> Response:
    async def work(session: AsyncSession) -> str:
        active = console.value("active") == "1"
        req = await requisites.set_requisite_active(
            session, requisite_id, active, now=utcnow(), actor=console.actor
        )
        return f"Requisite {req.number_masked} {'enabled' if active else 'disabled'}."

    return await perform(console, work, "/admin/requisites")


@router.post("/admin/requisites/{requisite_id}/limits")
async def requisite_limits(requisite_id: int, console: Console = Depends(action("requisites"))) -> Response:
    async def work(session: AsyncSession) -> str:
        method = await session.scalar(select(Requisite.payment_method).where(Requisite.id == requisite_id))
        currency = await _currency_of(session, method or "")
        req = await requisites.set_requisite_limits(
            session,
            requisite_id,
            daily_limit=_limit(console, "daily_limit", currency),
            turnover_limit=_limit(console, "turnover_limit", currency),
            now=utcnow(),
            actor=console.actor,
        )
        return f"Limits of requisite {req.number_masked} saved."

    return await perform(console, work, "/admin/requisites")


# --- orders ----------------------------------------------------------------------------------


def _order_filters(request: Request) -> tuple[Select[Any], dict[str, str]]:
    f = {
        name: filters.text(request, name)
        for name in ("status", "merchant", "payment_method", "q", "date_from", "date_to")
    }
    stmt = select(ExchangeOrder).order_by(ExchangeOrder.id.desc())
    if f["status"] in ORDER_STATUSES:
        stmt = stmt.where(ExchangeOrder.status == f["status"])
    if (merchant := filters.integer(request, "merchant")) is not None:
        stmt = stmt.where(ExchangeOrder.merchant_id == merchant)
    if f["payment_method"]:
        stmt = stmt.where(ExchangeOrder.payment_method == f["payment_method"])
    if q := f["q"]:
        conditions = [ExchangeOrder.wallet == q, ExchangeOrder.txid == q.lower()]
        if (q.isascii() and q.isdigit()) and len(q) < 19:
            conditions.append(ExchangeOrder.id == int(q))
        stmt = stmt.where(or_(*conditions))
    if (start := filters.day_start(request, "date_from")) is not None:
        stmt = stmt.where(ExchangeOrder.created_at >= start)
    if (end := filters.day_end(request, "date_to")) is not None:
        stmt = stmt.where(ExchangeOrder.created_at < end)
    return stmt, f


@router.get("/admin/orders")
async def order_list(request: Request, console: Console = Depends(page())) -> Response:
    stmt, f = _order_filters(request)
    async with console.rt.db.transaction() as session:
        orders = await paginate(session, stmt, request)
    return render(request, "orders.html", console, page=orders, f=f, statuses=ORDER_STATUSES)


async def callbacks_of(session: AsyncSession, aggregate: str) -> list[OutboxMessage]:
    return list(
        await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.aggregate == aggregate, OutboxMessage.target_url.is_not(None))
            .order_by(OutboxMessage.id)
        )
    )


@router.get("/admin/orders/{order_id}")
async def order_page(order_id: int, request: Request, console: Console = Depends(page())) -> Response:
    async with console.rt.db.transaction() as session:
        order = await session.get(ExchangeOrder, order_id)
        if order is None:
            return render(request, "not_found.html", console, status_code=404, what=f"order {order_id}")
        merchant = await session.get(Merchant, order.merchant_id)
        requisite = await session.get(Requisite, order.requisite_id) if order.requisite_id else None
        events = list(
            await session.scalars(
                select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id)
            )
        )
        incoming = list(
            await session.scalars(
                select(IncomingTransfer)
                .where(IncomingTransfer.order_id == order_id)
                .order_by(IncomingTransfer.id)
            )
        )
        callbacks = await callbacks_of(session, f"order:{order_id}")
    status = OrderStatus(order.status)
    return render(
        request,
        "order.html",
        console,
        order=order,
        merchant=merchant,
        requisite=requisite,
        events=events,
        incoming=incoming,
        callbacks=callbacks,
        can_confirm=status in (OrderStatus.UNCONFIRMED, OrderStatus.AWAITING),
        can_complete=status is OrderStatus.PAYED,
        can_cancel=status in (OrderStatus.UNCONFIRMED, OrderStatus.AWAITING),
    )


async def _audit_order(
    session: AsyncSession,
    console: Console,
    order: ExchangeOrder,
    action_name: str,
    before: str,
    **extra: object,
) -> None:
    await record_audit(
        session,
        actor=console.actor,
        action=action_name,
        obj=("exchange_order", order.id),
        before={"status": before},
        after={"status": order.status, **extra},
        now=utcnow(),
    )


async def _status_of(session: AsyncSession, order_id: int) -> str:
    order = await exchange_orders.lock_order(session, order_id)
    return order.status


@router.post("/admin/orders/{order_id}/confirm")
async def order_confirm(order_id: int, console: Console = Depends(action("orders"))) -> Response:
    async def work(session: AsyncSession) -> str:
        locked = await exchange_orders.lock_order(session, order_id)
        before = locked.status
        raw = console.value("amount", 30)
        paid = parse_amount(raw, locked.currency, field="amount") if raw else None
        order = await exchange_orders.confirm_paid(
            session, console.rt, order_id, now=utcnow(), actor=console.actor, paid_amount=paid, note="console"
        )
        await _audit_order(
            session, console, order, "order.confirm_paid", before, paid_amount=order.paid_amount
        )
        return f"Order {order_id} confirmed paid."

    return await perform(console, work, f"/admin/orders/{order_id}")


@router.post("/admin/orders/{order_id}/complete")
async def order_complete(order_id: int, console: Console = Depends(action("orders"))) -> Response:
    async def work(session: AsyncSession) -> str:
        before = await _status_of(session, order_id)
        order = await exchange_orders.complete_order(
            session, console.rt, order_id, txid=console.value("txid", 100), now=utcnow(), actor=console.actor
        )
        await _audit_order(session, console, order, "order.complete", before, txid=order.txid)
        return f"Order {order_id} completed."

    return await perform(console, work, f"/admin/orders/{order_id}")


@router.post("/admin/orders/{order_id}/cancel")
async def order_cancel(order_id: int, console: Console = Depends(action("orders"))) -> Response:
    async def work(session: AsyncSession) -> str:
        before = await _status_of(session, order_id)
        order = await exchange_orders.cancel_order_by_operator(
            session, console.rt, order_id, now=utcnow(), actor=console.actor, note="console"
        )
        await _audit_order(session, console, order, "order.cancel", before)
        return f"Order {order_id} canceled."

    return await perform(console, work, f"/admin/orders/{order_id}")


# --- incoming transfers ----------------------------------------------------------------------


@router.get("/admin/transfers")
async def transfer_list(request: Request, console: Console = Depends(page())) -> Response:
    status = filters.text(request, "status") or "open"
    stmt = select(IncomingTransfer).order_by(IncomingTransfer.id.desc())
    if status == "open":
        stmt = stmt.where(IncomingTransfer.status.in_([transfers.UNMATCHED, transfers.REVIEW]))
    elif status in TRANSFER_STATUSES:
        stmt = stmt.where(IncomingTransfer.status == status)
    async with console.rt.db.transaction() as session:
        rows = await paginate(session, stmt, request)
        ids = {r.requisite_id for r in rows.items if r.requisite_id}
        masked = (
            dict(
                (
                    await session.execute(
                        select(Requisite.id, Requisite.number_masked).where(Requisite.id.in_(ids))
                    )
                ).all()
            )
            if ids
            else {}
        )
    return render(
        request,
        "transfers.html",
        console,
        page=rows,
        status=status,
        statuses=TRANSFER_STATUSES,
        masked=masked,
    )


@router.post("/admin/transfers/{transfer_id}/match")
async def transfer_match(transfer_id: int, console: Console = Depends(action("orders"))) -> Response:
    async def work(session: AsyncSession) -> str:
        raw = console.value("order_id", 19)
        if not (raw.isascii() and raw.isdigit()):
            raise InvalidRequest("order id must be a number", field="order_id")
        row = await transfers.match_transfer(
            session, console.rt, transfer_id, int(raw), utcnow(), console.actor
        )
        await record_audit(
            session,
            actor=console.actor,
            action="transfer.match",
            obj=("incoming_transfer", transfer_id),
            before=None,
            after={"order_id": row.order_id, "status": row.status},
            now=utcnow(),
        )
        return f"Transfer {transfer_id} matched to order {row.order_id}."

    return await perform(console, work, "/admin/transfers")
