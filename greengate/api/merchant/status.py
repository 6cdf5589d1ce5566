"""How a payment reads in get_status*.php answers."""

from __future__ import annotations

from collections.abc import Sequence

from greengate.api.exchange.wire import wire_time
from greengate.domain.money import format_minor
from greengate.domain.params import Params
from greengate.domain.payments import PAYMENT_STATUS3, TRANSACTION_STATUS, PaymentStatus, is_captured
from greengate.store.links import Row
from greengate.store.models import Payment, PaymentAttempt, Refund


def money(minor: int, currency: str) -> str:
    return format_minor(minor, currency)


def captured_flag(payment: Payment) -> str:
    """`pg_captured` in status answers and callbacks alike: 1 once the payer's money was taken."""
    status = PaymentStatus(payment.status)
    return "1" if is_captured(status, two_step=payment.two_step, captured=payment.captured) else "0"


def status_fields(row: Row) -> Params:
    """get_status(2).php: `row` holds the payment's columns and its latest attempt's `attempt_method`
    and `attempt_card_masked` (`store.payments.status_row`)."""
    status = PaymentStatus(row["status"])
    currency = row["currency"]
    method = row["attempt_method"]
    system = (row["payment_system"] or "") if method is None else _method_system(method)
    captured = is_captured(status, two_step=row["two_step"], captured=row["captured"])
    fields: Params = [
        ("pg_payment_id", str(row["id"])),
        ("pg_order_id", row["order_id"] or ""),
        ("pg_transaction_status", TRANSACTION_STATUS[status]),
        ("pg_testing_mode", "1" if row["testing"] else "0"),
        ("pg_captured", "1" if captured else "0"),
        ("pg_create_date", wire_time(row["created_at"])),
        ("pg_can_reject", "1" if status is PaymentStatus.OK and not row["result_sent"] else "0"),
        ("pg_amount", money(row["amount"], currency)),
        ("pg_currency", currency),
        ("pg_payment_system", system),
        ("pg_card_pan", row["attempt_card_masked"] or ""),
        ("pg_refund_amount", money(row["refunded_amount"], currency)),
    ]
    if row["failure_code"] is not None:
        fields += [
            ("pg_failure_code", str(row["failure_code"])),
            ("pg_failure_description", row["failure_description"] or ""),
        ]
    return fields


def status3_fields(
    payment: Payment,
    attempt: PaymentAttempt | None,
    refunds: Sequence[Refund] = (),
    clearing: int | None = None,
    card_token: str | None = None,
) -> Params:
    """`clearing`: the captured amount (None: the whole amount once paid, as before captures existed);
    `card_token`: the saved card's token when the payment was made with one."""
    status = PaymentStatus(payment.status)
    if clearing is None:
        settled = status in (PaymentStatus.OK, PaymentStatus.REVOKED)
        clearing = payment.amount if settled and (payment.captured or not payment.two_step) else 0
    fields: Params = [
        ("pg_payment_id", str(payment.id)),
        ("pg_order_id", payment.order_id or ""),
        ("pg_payment_status", PAYMENT_STATUS3[status]),
        ("pg_payment_method", (attempt.method if attempt else "") or ""),
        ("pg_amount", money(payment.amount, payment.currency)),
        ("pg_currency", payment.currency),
        ("pg_clearing_amount", money(clearing, payment.currency)),
        ("pg_revoke_amount", money(payment.refunded_amount, payment.currency)),
        ("pg_testing_mode", "1" if payment.testing else "0"),
        ("pg_create_date", wire_time(payment.created_at)),
        ("pg_payment_date", wire_time(payment.paid_at) if payment.paid_at else ""),
        ("pg_card_name", (attempt.card_holder or "") if attempt else ""),
        ("pg_card_pan", (attempt.card_masked or "") if attempt else ""),
        ("pg_card_token", card_token or ""),
        ("pg_reference", (attempt.rrn or "") if attempt else ""),
        ("pg_auth_code", (attempt.auth_code or "") if attempt else ""),
        ("pg_refund_payments", [("pg_refund_payment", _refund_fields(r)) for r in refunds]),
    ]
    if payment.failure_code is not None:
        fields += [
            ("pg_failure_code", str(payment.failure_code)),
            ("pg_failure_description", payment.failure_description or ""),
        ]
    return fields


def _refund_fields(refund: Refund) -> Params:
    return [
        ("pg_payment_id", str(refund.id)),
        ("pg_payment_status", "success" if refund.status == "success" else "error"),
        ("pg_amount", "-" + money(refund.amount, refund.currency)),
        ("pg_payment_date", wire_time(refund.created_at)),
        ("pg_refund_type", refund.kind),
    ]


def _method_system(method: str) -> str:
    return "BANKCARD" if method == "bankcard" else "MOBILE_COMMERCE"
