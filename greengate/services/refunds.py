"""Refunds of settled payments (revoke.php, a rejected result, the operator's refund and chargeback
buttons): full or partial, several partials up to the captured amount.

One use case per call, in the caller's transaction, under the payment's row lock: the refunded total
rises through `payments.transition` (which posts the ledger and checks the merchant's balance), the
refund is a row of its own, and the refund callback goes to the outbox in the same transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain.errors import StateForbids
from greengate.domain.money import format_minor
from greengate.domain.payments import PaymentStatus
from greengate.services import amount_caps, outbox
from greengate.services.payments import transition
from greengate.store.models import Payment, PaymentCapture, Refund

REFUND_CALLBACK = "merchant.refund"
KINDS = ("refund", "chargeback")
SUCCESS = "success"
S = PaymentStatus


async def settled_amount(session: AsyncSession, payment: Payment) -> int:
    """What the payer was charged: the amount of a one-step payment, the capture of a two-step one."""
    if not payment.two_step:
        return payment.amount if S(payment.status) in (S.OK, S.REVOKED) else 0
    captured = await session.scalar(
        select(PaymentCapture.amount).where(PaymentCapture.payment_id == payment.id)
    )
    return int(captured or 0)


async def refundable(session: AsyncSession, payment: Payment) -> int:
    return max(0, await settled_amount(session, payment) - payment.refunded_amount)


async def refund_payment(
    session: AsyncSession,
    payment: Payment,
    amount: int | None,
    *,
    actor: str,
    now: datetime,
    kind: str = "refund",
    reason: str = "",
    reversal: bool = False,
) -> Refund:
    """Refund `amount` (None: all that is left) of a payment whose row lock the caller holds.

    `reversal` undoes the payment as a whole (a result the merchant rejected, a chargeback): all that
    is left goes back and the fee charged on the payment returns to the merchant, so the refund needs
    no more of the merchant's balance than the payment brought in. An ordinary refund keeps the fee."""
    assert kind in KINDS
    assert not (reversal and amount is not None), "a reversal takes back all that is left"
    status = S(payment.status)
    if status not in (S.OK, S.REVOKED):
        raise StateForbids(f"a payment in status {status.value} cannot be refunded")
    if payment.two_step and not payment.captured:
        raise StateForbids("the payment is authorised, not captured: cancel.php releases the authorisation")
    left = await refundable(session, payment)
    if left == 0:
        raise StateForbids("the payment is refunded in full: nothing is left to refund")
    if amount is None:
        amount = left
    if not reversal:
        await amount_caps.enforce(
            session,
            payment.merchant_id,
            payment.currency,
            amount,
            operation="refund",
            field="pg_refund_amount",
        )
    if amount > left:
        raise StateForbids(
            f"pg_refund_amount {format_minor(amount, payment.currency)} is more than the "
            f"{format_minor(left, payment.currency)} {payment.currency} left to refund",
            field="pg_refund_amount",
        )
    await transition(
        session,
        payment,
        S.REVOKED,
        actor=actor,
        now=now,
        note=f"{kind} {format_minor(amount, payment.currency)}" + (f": {reason}" if reason else ""),
        changes={"refunded_amount": payment.refunded_amount + amount},
        reversal=reversal,
    )
    refund = Refund(
        payment_id=payment.id,
        merchant_id=payment.merchant_id,
        kind=kind,
        status=SUCCESS,
        amount=amount,
        currency=payment.currency,
        actor=actor,
        reason=reason,
        created_at=now,
    )
    session.add(refund)
    await session.flush()
    if payment.refund_url:
        outbox.enqueue(
            session,
            kind=REFUND_CALLBACK,
            aggregate=f"payment:{payment.id}",
            # The refunded total as of this refund: later refunds must not change what this one reports.
            payload={
                "payment_id": payment.id,
                "refund_id": refund.id,
                "refunded_total": payment.refunded_amount,
            },
            now=now,
            merchant_id=payment.merchant_id,
            target_url=payment.refund_url,
        )
    return refund


async def refunds_of(session: AsyncSession, payment_id: int) -> list[Refund]:
    return list(
        await session.scalars(select(Refund).where(Refund.payment_id == payment_id).order_by(Refund.id))
    )
