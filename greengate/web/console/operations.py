"""Payouts to cards (with their test buttons), refunds and saved cards: lists with filters and the
payout page with its history and callbacks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.clock import utcnow
from greengate.domain.payouts import FINAL, PayoutStatus
from greengate.services import payouts
from greengate.services.audit import record_audit
from greengate.store.models import Merchant, Payout, PayoutEvent, Refund, SavedCard
from greengate.web.console import filters
from greengate.web.console.auth import Console, ConsoleRoute, action, page, perform
from greengate.web.console.exchange import callbacks_of
from greengate.web.console.rendering import paginate, render

router = APIRouter(route_class=ConsoleRoute)
PAYOUT_STATUSES = [s.value for s in PayoutStatus]
CARD_STATUSES = ("pending", "active", "failed", "removed")
DEFAULT_FILTER_CURRENCY = "RUB"


def _money_filters(request: Request, stmt: Select[Any], model: Any, f: dict[str, str]) -> Select[Any]:
    """Merchant, currency, amount range and creation day filters shared by payouts and refunds."""
    if (merchant := filters.integer(request, "merchant")) is not None:
        stmt = stmt.where(model.merchant_id == merchant)
    currency = f.get("currency", "").upper()
    if currency:
        stmt = stmt.where(model.currency == currency)
    amount_currency = currency or DEFAULT_FILTER_CURRENCY
    if (low := filters.amount(request, "amount_min", amount_currency)) is not None:
        stmt = stmt.where(model.amount >= low)
    if (high := filters.amount(request, "amount_max", amount_currency)) is not None:
        stmt = stmt.where(model.amount <= high)
    if (start := filters.day_start(request, "date_from")) is not None:
        stmt = stmt.where(model.created_at >= start)
    if (end := filters.day_end(request, "date_to")) is not None:
        stmt = stmt.where(model.created_at < end)
    return stmt


FILTER_NAMES = (
    "status",
    "merchant",
    "order_id",
    "currency",
    "amount_min",
    "amount_max",
    "date_from",
    "date_to",
)


@router.get("/admin/payouts")
async def payout_list(request: Request, console: Console = Depends(page())) -> Response:
    f = {name: filters.text(request, name) for name in FILTER_NAMES}
    stmt = _money_filters(request, select(Payout).order_by(Payout.id.desc()), Payout, f)
    if f["status"] in PAYOUT_STATUSES:
        stmt = stmt.where(Payout.status == f["status"])
    if f["order_id"]:
        stmt = stmt.where(Payout.order_id == f["order_id"])
    async with console.rt.db.transaction() as session:
        rows = await paginate(session, stmt, request)
    return render(request, "payouts.html", console, page=rows, f=f, statuses=PAYOUT_STATUSES)


@router.get("/admin/payouts/{payout_id}")
async def payout_page(payout_id: int, request: Request, console: Console = Depends(page())) -> Response:
    async with console.rt.db.transaction() as session:
        payout = await session.get(Payout, payout_id)
        if payout is None:
            return render(request, "not_found.html", console, status_code=404, what=f"payout {payout_id}")
        merchant = await session.get(Merchant, payout.merchant_id)
        events = list(
            await session.scalars(
                select(PayoutEvent).where(PayoutEvent.payout_id == payout_id).order_by(PayoutEvent.id)
            )
        )
        callbacks = await callbacks_of(session, f"payout:{payout_id}")
    status = PayoutStatus(payout.status)
    buttons = status not in FINAL and (payout.testing or status is PayoutStatus.PROCESSING)
    return render(
        request,
        "payout.html",
        console,
        payout=payout,
        merchant=merchant,
        events=events,
        callbacks=callbacks,
        actions=list(payouts.TEST_ACTIONS) if buttons else [],
    )


@router.post("/admin/payouts/{payout_id}/test")
async def payout_test_button(payout_id: int, console: Console = Depends(action("payments"))) -> Response:
    name = console.value("action", 20)

    async def work(session: AsyncSession) -> str:
        now = utcnow()
        before = await session.scalar(select(Payout.status).where(Payout.id == payout_id))
        code_raw = console.value("code", 5)
        payout = await payouts.test_action(
            session,
            payout_id,
            name,
            now=now,
            actor=console.actor,
            code=int(code_raw) if (code_raw.isascii() and code_raw.isdigit()) else None,
            rt=console.rt,
        )
        await record_audit(
            session,
            actor=console.actor,
            action=f"payout.test.{name}",
            obj=("payout", payout_id),
            before={"status": before},
            after={"status": payout.status},
            now=now,
        )
        return f"Payout {payout_id}: {name} → {payout.status}."

    return await perform(console, work, f"/admin/payouts/{payout_id}")


@router.get("/admin/refunds")
async def refund_list(request: Request, console: Console = Depends(page())) -> Response:
    f = {name: filters.text(request, name) for name in (*FILTER_NAMES, "kind", "payment_id")}
    stmt = _money_filters(request, select(Refund).order_by(Refund.id.desc()), Refund, f)
    if f["kind"] in ("refund", "chargeback"):
        stmt = stmt.where(Refund.kind == f["kind"])
    if (payment_id := filters.integer(request, "payment_id")) is not None:
        stmt = stmt.where(Refund.payment_id == payment_id)
    async with console.rt.db.transaction() as session:
        rows = await paginate(session, stmt, request)
    return render(request, "refunds.html", console, page=rows, f=f)


@router.get("/admin/cards")
async def card_list(request: Request, console: Console = Depends(page())) -> Response:
    f = {name: filters.text(request, name) for name in ("status", "merchant", "user_id", "purpose")}
    stmt = select(SavedCard).order_by(SavedCard.id.desc())
    if f["status"] in CARD_STATUSES:
        stmt = stmt.where(SavedCard.status == f["status"])
    if (merchant := filters.integer(request, "merchant")) is not None:
        stmt = stmt.where(SavedCard.merchant_id == merchant)
    if f["user_id"]:
        stmt = stmt.where(SavedCard.user_id == f["user_id"])
    if f["purpose"] in ("payment", "payout"):
        stmt = stmt.where(SavedCard.purpose == f["purpose"])
    async with console.rt.db.transaction() as session:
        rows = await paginate(session, stmt, request)
    return render(request, "cards.html", console, page=rows, f=f, statuses=CARD_STATUSES)
