"""Merchant API payments: create, look up, cancel, expire; every status change goes through `transition`."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain import payment_systems
from greengate.domain.errors import BusinessRuleViolation, InvalidRequest, TransactionNotFound
from greengate.domain.ids import id_number
from greengate.domain.payments import FINAL, PAYER_STEPS, NewPayment, PaymentStatus, check_transition
from greengate.runtime import Runtime
from greengate.services import amount_caps, ledger, outbox
from greengate.store.db import update_versioned
from greengate.store.models import (
    Merchant,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    RecurringProfile,
    SavedCard,
)

EXPIRE_JOB = "payment.expire"
CHECK_CALLBACK = "merchant.check"
RESULT_CALLBACK = "merchant.result"
AUTO_CAPTURE_JOB = "payment.auto_capture"
AUTO_CAPTURE_AFTER = timedelta(days=5)  # a two-step payment neither captured nor canceled by then
S = PaymentStatus


def page_url(rt: Runtime, payment: Payment) -> str:
    return f"{rt.settings.base_url}/pay/{payment.access_token}"


def is_testing(merchant: Merchant, requested: bool) -> bool:
    """Test-mode merchants only ever make test payments; live ones only when asked with pg_testing_mode=1."""
    return merchant.mode == "test" or requested


async def init_payment(
    session: AsyncSession, rt: Runtime, merchant: Merchant, req: NewPayment, now: datetime
) -> Payment:
    await amount_caps.enforce(
        session, merchant.id, req.currency, req.amount, operation="payment", field="pg_amount"
    )
    if req.order_id is not None:
        await _serialise_order(session, merchant.id, req.order_id)
        existing = await _open_order(session, merchant.id, req.order_id)
        if existing is not None:
            return _same_order(existing, merchant, req)
    payment_systems.check_available(req.payment_system, rt.settings.payment_system_state_map())
    urls = dict(req.urls)
    for name in ("check", "result", "refund", "capture", "success", "failure"):
        urls.setdefault(name, getattr(merchant, f"{name}_url") or "")
    payment = Payment(
        merchant_id=merchant.id,
        order_id=req.order_id,
        open_order=True,
        status=S.NEW.value,
        version=1,
        amount=req.amount,
        currency=req.currency,
        description=req.description,
        testing=is_testing(merchant, req.testing),
        payment_system=req.payment_system,
        language=req.language,
        request_method=req.request_method or merchant.request_method or "POST",
        check_url=(urls["check"] or None) if ("check" in req.urls or merchant.check_enabled) else None,
        result_url=urls["result"] or None,
        refund_url=urls["refund"] or None,
        capture_url=urls["capture"] or None,
        success_url=urls["success"] or None,
        failure_url=urls["failure"] or None,
        success_url_method=req.success_url_method,
        timeout_after_payment=req.timeout_after_payment,
        failure_url_method=req.failure_url_method,
        state_url=urls.get("state"),
        state_url_method=req.state_url_method,
        site_url=urls.get("site"),
        user_phone=req.user_phone,
        user_email=req.user_email,
        user_ip=req.user_ip,
        user_id=req.user_id,
        two_step=req.two_step,
        captured=False,
        recurring_start=req.recurring_start,
        recurring_lifetime_months=req.recurring_lifetime,
        extra_params=json.dumps(req.extras, ensure_ascii=False),
        receipt=json.dumps(req.receipt, ensure_ascii=False) if req.receipt else None,
        access_token=secrets.token_urlsafe(24),
        require_3ds=False,
        refunded_amount=0,
        result_sent=False,
        expires_at=now + timedelta(seconds=req.lifetime),
        created_at=now,
        updated_at=now,
    )
    session.add(payment)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        # Only where the order lock is not taken (SQLite runs one writer at a time anyway).
        raise InvalidRequest(
            f"pg_order_id {req.order_id} already has a payment that is open or paid", field="pg_order_id"
        ) from None
    session.add(
        PaymentEvent(
            payment_id=payment.id, from_status=None, to_status=payment.status, actor="api", note="", at=now
        )
    )
    outbox.enqueue(
        session,
        kind=EXPIRE_JOB,
        aggregate=f"payment:{payment.id}",
        payload={"payment_id": payment.id},
        now=now,
        due_at=payment.expires_at,
        merchant_id=merchant.id,
    )
    return payment


_ORDER_LOCK = select(func.pg_advisory_xact_lock(bindparam("lock_id", type_=BigInteger)))


async def _serialise_order(session: AsyncSession, merchant_id: int, order_id: str) -> None:
    """On PostgreSQL, inits of one merchant order id run one after the other (a transaction-scoped
    advisory lock), so a concurrent identical request finds the first one's payment instead of
    colliding with it on the unique index."""
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"payment-order:{merchant_id}:{order_id}".encode()).digest()
    await session.execute(_ORDER_LOCK, {"lock_id": int.from_bytes(digest[:8], "big", signed=True)})


async def _open_order(session: AsyncSession, merchant_id: int, order_id: str) -> Payment | None:
    return await session.scalar(
        select(Payment).where(
            Payment.merchant_id == merchant_id,
            Payment.order_id == order_id,
            Payment.open_order.is_(True),
        )
    )


def _requested(merchant: Merchant, req: NewPayment) -> dict[str, Any]:
    """What a request asks of a payment, by parameter name, as the payment would store it."""
    urls = dict(req.urls)
    for name in ("check", "result", "refund", "capture", "success", "failure"):
        urls.setdefault(name, getattr(merchant, f"{name}_url") or "")
    values: dict[str, Any] = {
        "pg_amount": req.amount,
        "pg_currency": req.currency,
        "pg_description": req.description,
        "pg_payment_system": req.payment_system,
        "pg_postpone_payment": req.two_step,
        "pg_request_method": req.request_method or merchant.request_method or "POST",
        "pg_recurring_start": req.recurring_start,
    }
    for name in ("result", "refund", "capture", "success", "failure"):
        values[f"pg_{name}_url"] = urls[name] or None
    checked = "check" in req.urls or merchant.check_enabled
    values["pg_check_url"] = (urls["check"] or None) if checked else None
    values["pg_state_url"] = urls.get("state")
    values["pg_site_url"] = urls.get("site")
    return values


def _stored(payment: Payment) -> dict[str, Any]:
    values: dict[str, Any] = {
        "pg_amount": payment.amount,
        "pg_currency": payment.currency,
        "pg_description": payment.description,
        "pg_payment_system": payment.payment_system,
        "pg_postpone_payment": payment.two_step,
        "pg_request_method": payment.request_method,
        "pg_recurring_start": payment.recurring_start,
    }
    for name in ("check", "result", "refund", "capture", "success", "failure", "state", "site"):
        values[f"pg_{name}_url"] = getattr(payment, f"{name}_url")
    return values


def _same_order(existing: Payment, merchant: Merchant, req: NewPayment) -> Payment:
    """A repeated pg_order_id: the same request gets the same payment; any difference is a conflict
    that names what differs."""
    requested, stored = _requested(merchant, req), _stored(existing)
    differing = [name for name, value in requested.items() if stored[name] != value]
    if differing:
        raise InvalidRequest(
            f"pg_order_id {req.order_id} already has payment {existing.id} with another "
            f"{', '.join(differing)}; repeat it with the same parameters, or use a new pg_order_id",
            field="pg_order_id",
            code="order_id_conflict",
        )
    return existing


async def find_payment(
    session: AsyncSession,
    merchant_id: int,
    *,
    payment_id: str | None,
    order_id: str | None,
    lock: bool = False,
) -> Payment:
    if not payment_id and not order_id:
        raise InvalidRequest("pg_payment_id or pg_order_id is required", field="pg_payment_id")
    stmt = select(Payment).where(Payment.merchant_id == merchant_id)
    if payment_id:
        number = id_number(payment_id)
        if number is None:
            raise InvalidRequest("pg_payment_id must be a number", field="pg_payment_id")
        stmt = stmt.where(Payment.id == number)
    if order_id:
        # The newest payment for the order id: earlier ones failed or expired.
        stmt = stmt.where(Payment.order_id == order_id).order_by(Payment.id.desc()).limit(1)
    if lock:
        stmt = stmt.with_for_update()
    payment = await session.scalar(stmt)
    if payment is None:
        raise TransactionNotFound("transaction not found")
    return payment


async def lock_payment(session: AsyncSession, payment_id: int) -> Payment:
    payment = await session.scalar(select(Payment).where(Payment.id == payment_id).with_for_update())
    if payment is None:
        raise TransactionNotFound(f"payment {payment_id} not found")
    return payment


async def latest_attempt(session: AsyncSession, payment_id: int) -> PaymentAttempt | None:
    return await session.scalar(
        select(PaymentAttempt)
        .where(PaymentAttempt.payment_id == payment_id)
        .order_by(PaymentAttempt.id.desc())
        .limit(1)
    )


async def transition(
    session: AsyncSession,
    payment: Payment,
    target: PaymentStatus,
    *,
    actor: str,
    now: datetime,
    note: str = "",
    changes: dict[str, Any] | None = None,
    reversal: bool = False,
) -> Payment:
    """The one way a payment changes status. The caller holds the payment's row lock. `reversal`: see
    `ledger.book_payment_transition`."""
    current = S(payment.status)
    check_transition(current, target)
    values = dict(changes or {}, status=target.value, version=payment.version + 1, updated_at=now)
    if target in FINAL:
        values["open_order"] = False  # the merchant may try this order id again
    if target is S.OK:
        values.setdefault("paid_at", now)
    booking = await ledger.book_payment_transition(session, payment, target, values, reversal=reversal)
    values.update(booking.values)
    if not await update_versioned(session, payment, values):
        raise BusinessRuleViolation(f"payment {payment.id} changed concurrently", code="transaction_locked")
    await booking.post(session, now)
    session.add(
        PaymentEvent(
            payment_id=payment.id,
            from_status=current.value,
            to_status=target.value,
            actor=actor,
            note=note,
            at=now,
        )
    )
    # Success, and every way a payment ends without one (failed, canceled, expired): pg_result 1 or 0.
    if (target is S.OK or target in FINAL) and payment.result_url:
        outbox.enqueue(
            session,
            kind=RESULT_CALLBACK,
            aggregate=f"payment:{payment.id}",
            payload={"payment_id": payment.id, "status": target.value},
            now=now,
            merchant_id=payment.merchant_id,
            target_url=payment.result_url,
        )
    if target is S.OK and payment.two_step:
        outbox.enqueue(
            session,
            kind=AUTO_CAPTURE_JOB,
            aggregate=f"payment:{payment.id}",
            payload={"payment_id": payment.id},
            now=now,
            due_at=now + AUTO_CAPTURE_AFTER,
            merchant_id=payment.merchant_id,
        )
    if target is S.OK and payment.recurring_start:
        from greengate.services import recurring  # recurring charges use this module

        await recurring.start_profile(session, payment, now)
    if target is S.CHECK:
        outbox.enqueue(
            session,
            kind=CHECK_CALLBACK,
            aggregate=f"payment:{payment.id}",
            payload={"payment_id": payment.id},
            now=now,
            merchant_id=payment.merchant_id,
            target_url=payment.check_url,
        )
    if target is S.OK or target in FINAL:
        await destroy_card_numbers(session, payment)
    return payment


async def destroy_card_numbers(session: AsyncSession, payment: Payment) -> None:
    """The attempts' full card numbers go when the payment's attempts end, except the one a
    recurring profile charges again; a card being saved hands its number over itself."""
    await session.flush()  # an attempt added in this unit of work is in the table before the update
    saving = await session.scalar(select(SavedCard.id).where(SavedCard.payment_id == payment.id).limit(1))
    if saving is not None:
        return
    kept = select(RecurringProfile.attempt_id).where(RecurringProfile.payment_id == payment.id)
    await session.execute(
        update(PaymentAttempt)
        .where(
            PaymentAttempt.payment_id == payment.id,
            PaymentAttempt.card_enc.is_not(None),
            PaymentAttempt.id.not_in(kept),
        )
        .values(card_enc=None)
        .execution_options(synchronize_session="fetch")
    )


async def cancel_payment(session: AsyncSession, payment: Payment, now: datetime, actor: str) -> Payment:
    """cancel.php: a payment the payer has not paid yet, or an authorised two-step payment not captured
    (the authorisation is released)."""
    status = S(payment.status)
    if status is S.OK and payment.two_step and not payment.captured:
        return await transition(
            session,
            payment,
            S.CANCELED,
            actor=actor,
            now=now,
            note="authorisation released",
            changes={"failure_code": 400, "failure_description": "authorisation released by the merchant"},
        )
    if status not in PAYER_STEPS and status is not S.PENDING:
        raise BusinessRuleViolation(
            f"a payment in status {status.value} cannot be canceled", code="state_forbids"
        )
    return await transition(
        session,
        payment,
        S.CANCELED,
        actor=actor,
        now=now,
        changes={"failure_code": 400, "failure_description": "canceled by the merchant"},
    )


async def expire_payment(session: AsyncSession, payment_id: int, now: datetime) -> bool:
    """Lifetime job: a payment still waiting for the payer when its lifetime ends is incomplete."""
    payment = await session.scalar(select(Payment).where(Payment.id == payment_id).with_for_update())
    if payment is None or S(payment.status) not in PAYER_STEPS or payment.expires_at > now:
        return False
    await transition(
        session,
        payment,
        S.EXPIRED,
        actor="worker",
        now=now,
        note="lifetime passed",
        changes={"failure_code": 360, "failure_description": "payment lifetime expired"},
    )
    return True


async def mark_result_delivered(session: AsyncSession, payment_id: int) -> None:
    await session.execute(
        update(Payment)
        .where(Payment.id == payment_id)
        .values(result_sent=True)
        .execution_options(synchronize_session=False)
    )
