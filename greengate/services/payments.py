"""Merchant API payments: create, look up, cancel, expire; every status change goes through `transition`."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain import payment_systems
from greengate.domain.errors import BusinessRuleViolation, InvalidRequest, TransactionNotFound, Unavailable
from greengate.domain.ids import id_number
from greengate.domain.payments import FINAL, PAYER_STEPS, NewPayment, PaymentStatus, check_transition
from greengate.runtime import Runtime
from greengate.services import amount_caps, ledger, outbox
from greengate.store import payments as payments_store
from greengate.store.db import update_versioned
from greengate.store.links import Link, Row, as_link
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


def page_url(rt: Runtime, access_token: str) -> str:
    return f"{rt.settings.base_url}/pay/{access_token}"


def is_testing(merchant: Merchant, requested: bool) -> bool:
    """Test-mode merchants only ever make test payments; live ones only when asked with pg_testing_mode=1."""
    return merchant.mode == "test" or requested


@dataclass(frozen=True)
class Opened:
    """A payment as init_payment.php answers it: new, or the open one the same order id already has."""

    id: int
    access_token: str
    payment_system: str | None
    recorded: bool = False  # its answer was recorded with it (`open_payment`'s `record`)


# The signed request to record with a new payment, given the payment: (script, digest, answer).
Record = Callable[[Opened], tuple[str, str, str]]


async def open_payment(
    conn: Link | AsyncSession,
    rt: Runtime,
    merchant: Merchant,
    req: NewPayment,
    now: datetime,
    context: Row | None = None,
    record: Record | None = None,
) -> Opened:
    """Create a payment with its first event and expiry job, in Core statements (a link, or a session's
    transaction); with an order id that already has an open payment, that payment when the request is
    the same, a conflict naming what differs otherwise. `context`: what `store.payments.INIT_CONTEXT`
    read for this request already (the merchant's cap, the open payment of the order id, and on
    PostgreSQL the new payment's id). `record`: where that id is known, the signed request to record in
    the payment's own statement (`Opened.recorded` says it was)."""
    link = as_link(conn)
    if context is None:
        await amount_caps.enforce(
            link, merchant.id, req.currency, req.amount, operation="payment", field="pg_amount"
        )
    else:
        amount_caps.check(req.currency, req.amount, context["cap"], operation="payment", field="pg_amount")
    if req.order_id is not None:
        if context is None:
            existing = await _open_order(link, merchant.id, req.order_id)
        else:
            existing = payments_store.open_order_of(context)
        if existing is not None:
            return _same_order(existing, merchant, req)
    payment_systems.check_available(req.payment_system, rt.settings.payment_system_state_map())
    urls = _urls(merchant, req)
    row: dict[str, Any] = {
        "merchant_id": merchant.id,
        "order_id": req.order_id,
        "open_order": True,
        "status": S.NEW.value,
        "version": 1,
        "amount": req.amount,
        "currency": req.currency,
        "description": req.description,
        "testing": is_testing(merchant, req.testing),
        "payment_system": req.payment_system,
        "language": req.language,
        "request_method": req.request_method or merchant.request_method or "POST",
        "check_url": urls["check"],
        "result_url": urls["result"],
        "refund_url": urls["refund"],
        "capture_url": urls["capture"],
        "success_url": urls["success"],
        "failure_url": urls["failure"],
        "success_url_method": req.success_url_method,
        "timeout_after_payment": req.timeout_after_payment,
        "failure_url_method": req.failure_url_method,
        "state_url": urls["state"],
        "state_url_method": req.state_url_method,
        "site_url": urls["site"],
        "user_phone": req.user_phone,
        "user_email": req.user_email,
        "user_ip": req.user_ip,
        "user_id": req.user_id,
        "two_step": req.two_step,
        "captured": False,
        "recurring_start": req.recurring_start,
        "recurring_lifetime_months": req.recurring_lifetime,
        "extra_params": json.dumps(req.extras, ensure_ascii=False),
        "receipt": json.dumps(req.receipt, ensure_ascii=False) if req.receipt else None,
        "access_token": secrets.token_urlsafe(24),
        "require_3ds": False,
        "refunded_amount": 0,
        "fee_amount": 0,
        "failure_code": None,
        "failure_description": None,
        "result_sent": False,
        "expires_at": now + timedelta(seconds=req.lifetime),
        "created_at": now,
        "updated_at": now,
        "paid_at": None,
    }
    next_id = None if context is None else context.get("next_payment_id")
    recorded = None
    if next_id is not None and record is not None:
        recorded = record(Opened(next_id, row["access_token"], row["payment_system"]))
    payment_id = await _insert_new(link, dict(row, id=next_id), recorded, expire_job=EXPIRE_JOB)
    if payment_id is None:  # a concurrent init of the order id was first
        existing = await _open_order(link, merchant.id, req.order_id)
        if existing is None:
            raise Unavailable("a concurrent request conflicted; retry", code="internal_error")
        return _same_order(existing, merchant, req)
    return Opened(payment_id, row["access_token"], row["payment_system"], recorded is not None)


async def _open_order(link: Link, merchant_id: int, order_id: str | None) -> Row | None:
    """The open payment the merchant's order id has."""
    return await link.row(payments_store.OPEN_ORDER, {"merchant_id": merchant_id, "order_id": order_id})


async def init_payment(
    session: AsyncSession, rt: Runtime, merchant: Merchant, req: NewPayment, now: datetime
) -> Payment:
    """`open_payment` for a use case that goes on with the payment in its session."""
    opened = await open_payment(session, rt, merchant, req, now)
    payment = await session.get(Payment, opened.id)
    assert payment is not None
    return payment


async def _insert_new(
    link: Link, row: dict[str, Any], recorded: tuple[str, str, str] | None, *, expire_job: str
) -> int | None:
    """Write a new payment (`row`: its columns, the id None for the next), its first event, its expiry
    job and (PostgreSQL) the signed request `recorded` names; None, writing nothing, when its order id
    has an open payment already (PostgreSQL)."""
    actor = "api"
    if link.dialect == "postgresql":
        script, digest, answer = recorded or (None, None, None)
        params = dict(row, actor=actor, expire_kind=expire_job, pending=outbox.PENDING)
        params.update(script=script, digest=digest, answer=answer)
        found = await link.row(payments_store.INSERT_WITH_MESSAGES, params)
        return None if found is None else int(found["id"])
    row = {name: value for name, value in row.items() if name != "id"}  # the database's next
    found = await link.row(payments_store.INSERT_PAYMENT, row)
    assert found is not None
    payment_id = int(found["id"])
    event = {"payment_id": payment_id, "from_status": None, "to_status": row["status"], "actor": actor}
    await link.execute(payments_store.INSERT_EVENT, dict(event, note="", at=row["created_at"]))
    await outbox.enqueue_now(
        link,
        kind=expire_job,
        aggregate=f"payment:{payment_id}",
        payload={"payment_id": payment_id},
        now=row["created_at"],
        due_at=row["expires_at"],
        merchant_id=row["merchant_id"],
    )
    return payment_id


def _urls(merchant: Merchant, req: NewPayment) -> dict[str, str | None]:
    """The payment's URLs: the request's, else the merchant's defaults; the check URL only when the
    request names one or the merchant checks payments."""
    urls: dict[str, str | None] = {}
    for name in ("check", "result", "refund", "capture", "success", "failure"):
        urls[name] = req.urls.get(name, getattr(merchant, f"{name}_url") or "") or None
    if "check" not in req.urls and not merchant.check_enabled:
        urls["check"] = None
    urls["state"] = req.urls.get("state")
    urls["site"] = req.urls.get("site")
    return urls


def _same_order(existing: Mapping[str, Any], merchant: Merchant, req: NewPayment) -> Opened:
    """A repeated pg_order_id: the same request gets the same payment; any difference is a conflict
    that names what differs."""
    urls = _urls(merchant, req)
    requested: dict[str, Any] = {
        "pg_amount": req.amount,
        "pg_currency": req.currency,
        "pg_description": req.description,
        "pg_payment_system": req.payment_system,
        "pg_postpone_payment": req.two_step,
        "pg_request_method": req.request_method or merchant.request_method or "POST",
        "pg_recurring_start": req.recurring_start,
        **{f"pg_{name}_url": url for name, url in urls.items()},
    }
    differing = [
        name for name, value in requested.items() if existing[payments_store.STORED_AS[name]] != value
    ]
    if differing:
        raise InvalidRequest(
            f"pg_order_id {req.order_id} already has payment {existing['id']} with another "
            f"{', '.join(differing)}; repeat it with the same parameters, or use a new pg_order_id",
            field="pg_order_id",
            code="order_id_conflict",
        )
    return Opened(existing["id"], existing["access_token"], existing["payment_system"])


def lookup(payment_id: str | None, order_id: str | None) -> tuple[int | None, str | None]:
    if not payment_id and not order_id:
        raise InvalidRequest("pg_payment_id or pg_order_id is required", field="pg_payment_id")
    number = None
    if payment_id:
        number = id_number(payment_id)
        if number is None:
            raise InvalidRequest("pg_payment_id must be a number", field="pg_payment_id")
    return number, order_id or None


async def find_payment(
    session: AsyncSession,
    merchant_id: int,
    *,
    payment_id: str | None,
    order_id: str | None,
    lock: bool = False,
) -> Payment:
    number, order = lookup(payment_id, order_id)
    stmt = select(Payment).where(Payment.merchant_id == merchant_id)
    if number is not None:
        stmt = stmt.where(Payment.id == number)
    if order is not None:
        # The newest payment for the order id: earlier ones failed or expired.
        stmt = stmt.where(Payment.order_id == order).order_by(Payment.id.desc()).limit(1)
    if lock:
        stmt = stmt.with_for_update()
    payment = await session.scalar(stmt)
    if payment is None:
        raise TransactionNotFound("transaction not found")
    return payment


async def opened(link: Link, merchant_id: int, payment_id: int) -> Opened:
    """A payment of the merchant's as init_payment.php answered it."""
    row = await link.row(payments_store.OPENED, {"merchant_id": merchant_id, "payment_id": payment_id})
    if row is None:
        raise TransactionNotFound("transaction not found")
    return Opened(row["id"], row["access_token"], row["payment_system"])


def status_of(context: Row, payment_id: str | None, order_id: str | None) -> Row:
    """The status `store.payments.status_context` read with the merchant; the request's lookup keys are
    checked here, after authentication."""
    lookup(payment_id, order_id)
    if context["id"] is None:
        raise TransactionNotFound("transaction not found")
    return context


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
