"""Core statements for the Merchant API's busiest payment use cases: a new payment with its first
event and expiry job, an open order's payment, and what a status request reads. Built once, run on a
`Link` on both databases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, bindparam, func, insert, select, text

from greengate.store.db import table_of
from greengate.store.links import Link, Row
from greengate.store.models import Payment, PaymentAttempt, PaymentEvent

_PAYMENTS = table_of(Payment)
_ATTEMPTS = table_of(PaymentAttempt)
_EVENTS = table_of(PaymentEvent)

ORDER_LOCK = select(func.pg_advisory_xact_lock(bindparam("lock_id", type_=BigInteger)).label("locked"))

# The columns that tell whether a repeated order id asks for the same payment, by parameter name.
STORED_AS = {
    "pg_amount": "amount",
    "pg_currency": "currency",
    "pg_description": "description",
    "pg_payment_system": "payment_system",
    "pg_postpone_payment": "two_step",
    "pg_request_method": "request_method",
    "pg_recurring_start": "recurring_start",
    **{f"pg_{name}_url": f"{name}_url" for name in ("check", "result", "refund", "capture", "success")},
    **{f"pg_{name}_url": f"{name}_url" for name in ("failure", "state", "site")},
}
OPEN_ORDER = select(
    _PAYMENTS.c.id, _PAYMENTS.c.access_token, *(_PAYMENTS.c[column] for column in set(STORED_AS.values()))
).where(
    _PAYMENTS.c.merchant_id == bindparam("merchant_id"),
    _PAYMENTS.c.order_id == bindparam("order_id"),
    _PAYMENTS.c.open_order.is_(True),
)

_NEW_COLUMNS = [c.key for c in _PAYMENTS.c if c.key != "id"]
INSERT_PAYMENT = (
    insert(_PAYMENTS).values({name: bindparam(name) for name in _NEW_COLUMNS}).returning(_PAYMENTS.c.id)
)
INSERT_EVENT = insert(_EVENTS).values(
    {name: bindparam(name) for name in ("payment_id", "from_status", "to_status", "actor", "note", "at")}
)
# On PostgreSQL the payment, its first event and its expiry job are one statement: one round trip.
# The payload is the JSON `outbox.enqueue_now` writes.
INSERT_WITH_MESSAGES = text(  # the f-string only spells out the model's column names
    f"""
    WITH new_payment AS (
        INSERT INTO payments ({", ".join(_NEW_COLUMNS)})
        VALUES ({", ".join(f":{name}" for name in _NEW_COLUMNS)})
        RETURNING id, merchant_id, status, expires_at, created_at
    ), first_event AS (
        INSERT INTO payment_events (payment_id, from_status, to_status, actor, note, at)
        SELECT id, NULL, status, :actor, '', created_at FROM new_payment
    ), expiry AS (
        INSERT INTO outbox (kind, merchant_id, aggregate, payload, status, attempts, due_at, created_at)
        SELECT :expire_kind, merchant_id, 'payment:' || id, '{{"payment_id":' || id || '}}',
               :pending, 0, expires_at, created_at
        FROM new_payment
    )
    SELECT id FROM new_payment
    """  # noqa: S608
)


def _latest_attempt(column: str) -> Any:
    return (
        select(_ATTEMPTS.c[column])
        .where(_ATTEMPTS.c.payment_id == _PAYMENTS.c.id)
        .order_by(_ATTEMPTS.c.id.desc())
        .limit(1)
        .scalar_subquery()
        .label(f"attempt_{column}")
    )


_STATUS = select(_PAYMENTS, _latest_attempt("method"), _latest_attempt("card_masked")).where(
    _PAYMENTS.c.merchant_id == bindparam("merchant_id")
)
_BY_ID = _PAYMENTS.c.id == bindparam("payment_id")
# The newest payment for the order id: earlier ones failed or expired.
_NEWEST_OF_ORDER = _PAYMENTS.c.order_id == bindparam("order_id")
_STATUS_BY_ID = _STATUS.where(_BY_ID)
_STATUS_BY_ORDER = _STATUS.where(_NEWEST_OF_ORDER).order_by(_PAYMENTS.c.id.desc()).limit(1)
_STATUS_BY_BOTH = _STATUS.where(_BY_ID, _NEWEST_OF_ORDER)


async def status_row(
    link: Link, merchant_id: int, payment_id: int | None, order_id: str | None
) -> Row | None:
    if order_id is None:
        return await link.row(_STATUS_BY_ID, {"merchant_id": merchant_id, "payment_id": payment_id})
    if payment_id is None:
        return await link.row(_STATUS_BY_ORDER, {"merchant_id": merchant_id, "order_id": order_id})
    params = {"merchant_id": merchant_id, "payment_id": payment_id, "order_id": order_id}
    return await link.row(_STATUS_BY_BOTH, params)
