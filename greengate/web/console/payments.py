"""Payments (Merchant API): list with filters, the transaction page (history, attempts, callbacks)
and the test buttons, which drive test payments through `payment_flow.test_action`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.clock import utcnow
from greengate.domain.payments import PaymentStatus
from greengate.services.audit import record_audit
from greengate.services.payment_flow import TEST_ACTIONS, test_action
from greengate.store.models import (
    DeliveryAttempt,
    Merchant,
    Payment,
    PaymentAttempt,
    PaymentCapture,
    PaymentEvent,
    Refund,
)
from greengate.web.console import filters
from greengate.web.console.auth import Console, ConsoleRoute, action, page, perform
from greengate.web.console.exchange import callbacks_of
from greengate.web.console.rendering import paginate, render

router = APIRouter(route_class=ConsoleRoute)
STATUSES = [s.value for s in PaymentStatus]
# Amount filters are read in this currency's minor units when no currency is chosen.
DEFAULT_FILTER_CURRENCY = "RUB"


def _payment_filters(request: Request) -> tuple[Select[Any], dict[str, str]]:
    names = ("status", "merchant", "order_id", "payment_id", "currency", "amount_min", "amount_max")
    f = {name: filters.text(request, name) for name in (*names, "date_from", "date_to", "testing")}
    stmt = select(Payment).order_by(Payment.id.desc())
    if f["status"] in STATUSES:
        stmt = stmt.where(Payment.status == f["status"])
    if (merchant := filters.integer(request, "merchant")) is not None:
        stmt = stmt.where(Payment.merchant_id == merchant)
    if f["order_id"]:
        stmt = stmt.where(Payment.order_id == f["order_id"])
    if (payment_id := filters.integer(request, "payment_id")) is not None:
        stmt = stmt.where(Payment.id == payment_id)
    currency = f["currency"].upper()
    if currency:
        stmt = stmt.where(Payment.currency == currency)
    amount_currency = currency or DEFAULT_FILTER_CURRENCY
    if (low := filters.amount(request, "amount_min", amount_currency)) is not None:
        stmt = stmt.where(Payment.amount >= low)
    if (high := filters.amount(request, "amount_max", amount_currency)) is not None:
        stmt = stmt.where(Payment.amount <= high)
    if (start := filters.day_start(request, "date_from")) is not None:
        stmt = stmt.where(Payment.created_at >= start)
    if (end := filters.day_end(request, "date_to")) is not None:
        stmt = stmt.where(Payment.created_at < end)
    if f["testing"] in ("1", "0"):
        stmt = stmt.where(Payment.testing.is_(f["testing"] == "1"))
    return stmt, f


@router.get("/admin/payments")
async def payment_list(request: Request, console: Console = Depends(page())) -> Response:
    stmt, f = _payment_filters(request)
    async with console.rt.db.transaction() as session:
        payments = await paginate(session, stmt, request)
        merchant_ids = {p.merchant_id for p in payments.items}
        merchant_names = dict(
            (
                await session.execute(select(Merchant.id, Merchant.name).where(Merchant.id.in_(merchant_ids)))
            ).all()
            if merchant_ids
            else []
        )
    return render(
        request,
        "payments.html",
        console,
        page=payments,
        f=f,
        statuses=STATUSES,
        merchant_names=merchant_names,
    )


@router.get("/admin/payments/{payment_id}")
async def payment_page(payment_id: int, request: Request, console: Console = Depends(page())) -> Response:
    async with console.rt.db.transaction() as session:
        payment = await session.get(Payment, payment_id)
        if payment is None:
            return render(request, "not_found.html", console, status_code=404, what=f"payment {payment_id}")
        merchant = await session.get(Merchant, payment.merchant_id)
        attempts = list(
            await session.scalars(
                select(PaymentAttempt)
                .where(PaymentAttempt.payment_id == payment_id)
                .order_by(PaymentAttempt.id)
            )
        )
        events = list(
            await session.scalars(
                select(PaymentEvent).where(PaymentEvent.payment_id == payment_id).order_by(PaymentEvent.id)
            )
        )
        callbacks = await callbacks_of(session, f"payment:{payment_id}")
        deliveries = (
            list(
                await session.scalars(
                    select(DeliveryAttempt)
                    .where(DeliveryAttempt.outbox_id.in_([c.id for c in callbacks]))
                    .order_by(DeliveryAttempt.id)
                )
            )
            if callbacks
            else []
        )
        extras = await _extra_sections(session, payment_id)
    return render(
        request,
        "payment.html",
        console,
        payment=payment,
        merchant=merchant,
        attempts=attempts,
        events=events,
        callbacks=callbacks,
        deliveries=deliveries,
        actions=_test_buttons(payment),
        extras=extras,
    )


def _test_buttons(payment: Payment) -> list[tuple[str, str]]:
    """(action, label) of the buttons that fit the payment now; the service has the last word."""
    status = PaymentStatus(payment.status)
    if not payment.testing:
        if status is PaymentStatus.PENDING:
            return [("approve", "Approve (manual acquirer)"), ("decline", "Decline (manual acquirer)")]
        return []
    buttons: list[tuple[str, str]] = []
    open_ = status in (PaymentStatus.NEW, PaymentStatus.THREE_DS, PaymentStatus.OTP, PaymentStatus.PENDING)
    if open_ or status is PaymentStatus.CHECK:
        buttons += [("approve", "Approve"), ("decline", "Decline")]
    if status is PaymentStatus.NEW and not payment.require_3ds:
        buttons.append(("require-3ds", "Require 3-D Secure"))
    if status in (PaymentStatus.NEW, PaymentStatus.THREE_DS, PaymentStatus.OTP):
        buttons.append(("expire", "Expire"))
    if status in (PaymentStatus.OK, PaymentStatus.REVOKED):
        buttons += [("refund", "Refund all"), ("chargeback", "Chargeback")]
    return [(name, label) for name, label in buttons if name in TEST_ACTIONS]


async def _extra_sections(session: AsyncSession, payment_id: int) -> dict[str, list[object]]:
    """Refunds and the capture of the payment."""
    out: dict[str, list[object]] = {}
    out["refunds"] = list(
        await session.scalars(select(Refund).where(Refund.payment_id == payment_id).order_by(Refund.id))
    )
    out["captures"] = list(
        await session.scalars(select(PaymentCapture).where(PaymentCapture.payment_id == payment_id))
    )
    return out


@router.post("/admin/payments/{payment_id}/test")
async def payment_test_button(payment_id: int, console: Console = Depends(action("payments"))) -> Response:
    name = console.value("action", 20)

    async def work(session: AsyncSession) -> str:
        now = utcnow()
        before = await session.scalar(select(Payment.status).where(Payment.id == payment_id))
        code_raw = console.value("code", 5)
        code = int(code_raw) if (code_raw.isascii() and code_raw.isdigit()) else None
        payment = await test_action(session, payment_id, name, now=now, actor=console.actor, code=code)
        await record_audit(
            session,
            actor=console.actor,
            action=f"payment.test.{name}",
            obj=("payment", payment_id),
            before={"status": before},
            after={"status": payment.status, "require_3ds": payment.require_3ds},
            now=now,
        )
        return f"Payment {payment_id}: {name} → {payment.status}."

    return await perform(console, work, f"/admin/payments/{payment_id}")
