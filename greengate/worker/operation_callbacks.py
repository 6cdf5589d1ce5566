"""Refund and capture callbacks (to pg_refund_url and pg_capture_url): the payment's callback fields
plus the operation's own, signed, sent and retried exactly like check and result callbacks.

The merchant's answer only ends the delivery: a refund or capture has happened and cannot be
rejected."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from greengate.api.exchange.wire import wire_time
from greengate.domain.money import format_minor
from greengate.domain.params import Params
from greengate.runtime import Runtime
from greengate.services import outbox, payments
from greengate.services.captures import CAPTURE_CALLBACK
from greengate.services.merchants import secret_key
from greengate.store.models import Merchant, Payment, PaymentCapture, Refund
from greengate.worker import merchant_callbacks


def _with(fields: Params, name: str, value: str) -> Params:
    """`fields` with `name` set to `value` (replaced where it is, appended otherwise)."""
    if any(n == name for n, _ in fields):
        return [(n, value if n == name else v) for n, v in fields]
    return [*fields, (name, value)]


def refund_fields(base: Params, payment: Payment, refund: Refund, refunded_total: int) -> Params:
    # `base` says pg_captured=1: only money that was taken (a paid or captured payment) is refunded.
    return [
        *base,
        ("pg_result", "1"),
        ("pg_refund_payment_id", str(refund.id)),
        ("pg_refund_type", refund.kind),
        ("pg_refund_amount", format_minor(refund.amount, refund.currency)),
        ("pg_revoke_amount", format_minor(refunded_total, payment.currency)),
        ("pg_refund_date", wire_time(refund.created_at)),
    ]


def capture_fields(base: Params, payment: Payment, capture: PaymentCapture) -> Params:
    fields = _with(base, "pg_captured", "1")
    fields = _with(fields, "pg_net_amount", format_minor(capture.amount - capture.fee, capture.currency))
    return [
        *fields,
        ("pg_result", "1"),
        ("pg_clearing_amount", format_minor(capture.amount, capture.currency)),
        ("pg_capture_date", wire_time(capture.created_at)),
    ]


async def deliver(
    rt: Runtime, message: outbox.ClaimedMessage, *, worker: str, clock: Callable[[], datetime]
) -> None:
    payment_id = int(message.payload["payment_id"])
    is_capture = message.kind == CAPTURE_CALLBACK
    async with rt.db.transaction() as session:
        payment = await session.get(Payment, payment_id)
        merchant = await session.get(Merchant, message.merchant_id)
        assert payment is not None and merchant is not None
        attempt = await payments.latest_attempt(session, payment_id)
        secret = secret_key(rt.keyring, merchant)
        capture = refund = None
        if is_capture:
            capture = await session.get(PaymentCapture, int(message.payload["capture_id"]))
        else:
            refund = await session.get(Refund, int(message.payload["refund_id"]))
    base = merchant_callbacks.callback_params(
        payment, attempt, kind="capture" if is_capture else "refund", result=None, can_reject=False
    )
    if capture is not None:
        params = capture_fields(base, payment, capture)
    else:
        assert refund is not None
        total = int(message.payload.get("refunded_total", payment.refunded_amount))
        params = refund_fields(base, payment, refund, total)
    await merchant_callbacks.deliver_message(
        rt,
        message,
        worker=worker,
        clock=clock,
        method=payment.request_method,
        params=params,
        secret=secret,
    )
