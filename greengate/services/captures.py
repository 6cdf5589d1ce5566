"""Capture (clearing) of two-step payments: do_capture.php, and the automatic capture of an
authorisation left neither captured nor canceled for five days.

A capture takes up to the authorised amount once; what is not captured goes back to the payer. The
gateway's fee is charged on the captured amount, at capture (ledger `payment.captured`). The payment
keeps its status (`ok`) and becomes captured; the capture is its own row, and the capture callback
goes to the outbox in the same transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain import ledger as ledger_domain
from greengate.domain.errors import BusinessRuleViolation, StateForbids
from greengate.domain.money import format_minor
from greengate.domain.payments import PaymentStatus
from greengate.services import amount_caps, fees, ledger, outbox
from greengate.services.payments import lock_payment
from greengate.store.db import update_versioned
from greengate.store.models import Payment, PaymentCapture, PaymentEvent

CAPTURE_CALLBACK = "merchant.capture"
S = PaymentStatus


async def capture_of(session: AsyncSession, payment_id: int) -> PaymentCapture | None:
    return await session.scalar(select(PaymentCapture).where(PaymentCapture.payment_id == payment_id))


async def capture_payment(
    session: AsyncSession, payment: Payment, amount: int | None, *, actor: str, now: datetime
) -> PaymentCapture:
    """Capture `amount` (None: all that was authorised) of a payment whose row lock the caller holds."""
    if not payment.two_step:
        raise StateForbids("the payment is one-step: it was captured when it was paid")
    if payment.status != S.OK.value:
        raise StateForbids(f"a payment in status {payment.status} cannot be captured")
    if payment.captured:
        raise StateForbids("the payment is captured already")
    if amount is None:
        amount = payment.amount
    if amount > payment.amount:
        asked, authorised = (
            format_minor(amount, payment.currency),
            format_minor(payment.amount, payment.currency),
        )
        raise StateForbids(
            f"the capture amount (pg_amount, pg_clearing_amount) {asked} is more than the "
            f"{authorised} {payment.currency} authorised",
            field="pg_amount",
        )
    await amount_caps.enforce(
        session, payment.merchant_id, payment.currency, amount, operation="capture", field="pg_amount"
    )
    system = await fees.payment_system_of(session, payment)
    fee = await fees.fee_for(session, payment.merchant_id, system, amount, payment.currency)
    values = {"captured": True, "fee_amount": fee, "version": payment.version + 1, "updated_at": now}
    if not await update_versioned(session, payment, values):
        raise BusinessRuleViolation(f"payment {payment.id} changed concurrently", code="transaction_locked")
    draft = ledger_domain.payment_captured(
        payment.merchant_id,
        payment.amount,
        amount,
        payment.currency,
        fee,
        book=ledger_domain.book_of(payment.testing),
    )
    await ledger.post(session, draft, object_type="payment", object_id=str(payment.id), now=now)
    capture = PaymentCapture(
        payment_id=payment.id,
        merchant_id=payment.merchant_id,
        amount=amount,
        fee=fee,
        currency=payment.currency,
        actor=actor,
        created_at=now,
    )
    session.add(capture)
    session.add(
        PaymentEvent(
            payment_id=payment.id,
            from_status=payment.status,
            to_status=payment.status,
            actor=actor,
            note=f"captured {format_minor(amount, payment.currency)} of "
            f"{format_minor(payment.amount, payment.currency)}",
            at=now,
        )
    )
    await session.flush()
    if payment.capture_url:
        outbox.enqueue(
            session,
            kind=CAPTURE_CALLBACK,
            aggregate=f"payment:{payment.id}",
            payload={"payment_id": payment.id, "capture_id": capture.id},
            now=now,
            merchant_id=payment.merchant_id,
            target_url=payment.capture_url,
        )
    return capture


async def auto_capture(session: AsyncSession, payment_id: int, now: datetime) -> bool:
    """The five-day job: capture the whole authorisation if it is still waiting; otherwise nothing."""
    payment = await lock_payment(session, payment_id)
    if not payment.two_step or payment.captured or payment.status != S.OK.value:
        return False
    await capture_payment(session, payment, None, actor="worker", now=now)
    return True
