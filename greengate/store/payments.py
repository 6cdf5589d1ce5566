"""Core statements for the Merchant API's busiest payment use cases: a new payment with its first
event and expiry job, an open order's payment, and what a status request reads. Built once, run on a
`Link` on both databases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, func, insert, select, text

from greengate.store.db import table_of
from greengate.store.links import Row
from greengate.store.merchants import MERCHANTS, Joined, merchant_statement
from greengate.store.models import MerchantAmountCap, Payment, PaymentAttempt, PaymentEvent
from greengate.store.signed_requests import STORED_ANSWER

_PAYMENTS = table_of(Payment)
_ATTEMPTS = table_of(PaymentAttempt)
_EVENTS = table_of(PaymentEvent)

_CAPS = table_of(MerchantAmountCap)

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
_OPEN_COLUMNS = (
    "id",
    "access_token",
    "payment_system",
    *sorted(set(STORED_AS.values()) - {"payment_system"}),
)
OPEN_ORDER = select(*(_PAYMENTS.c[column] for column in _OPEN_COLUMNS)).where(
    _PAYMENTS.c.merchant_id == bindparam("merchant_id"),
    _PAYMENTS.c.order_id == bindparam("order_id"),
    _PAYMENTS.c.open_order.is_(True),
)
OPENED = select(_PAYMENTS.c.id, _PAYMENTS.c.access_token, _PAYMENTS.c.payment_system).where(
    _PAYMENTS.c.merchant_id == bindparam("merchant_id"), _PAYMENTS.c.id == bindparam("payment_id")
)
_OPEN = _PAYMENTS.alias("open_payment")
# What init_payment.php reads with its merchant: the stored answer, the merchant's cap in the request's
# currency (`cap`) and the open payment its order id has (`open_<column>`).
_INIT_JOINS = (
    STORED_ANSWER,
    Joined(
        _CAPS,
        and_(_CAPS.c.merchant_id == MERCHANTS.c.id, _CAPS.c.currency == bindparam("currency")),
        (_CAPS.c.max_amount.label("cap"),),
    ),
    Joined(
        _OPEN,
        and_(
            _OPEN.c.merchant_id == MERCHANTS.c.id,
            _OPEN.c.order_id == bindparam("order_id"),
            _OPEN.c.open_order.is_(True),
        ),
        tuple(_OPEN.c[column].label(f"open_{column}") for column in _OPEN_COLUMNS),
    ),
)
INIT_CONTEXT = merchant_statement(*_INIT_JOINS)
# On PostgreSQL also the id the new payment will have (`next_payment_id`): its answer is then known
# before it is written, and recorded by the same statement.
INIT_CONTEXT_WITH_ID = merchant_statement(
    *_INIT_JOINS,
    also=(func.nextval(func.pg_get_serial_sequence("payments", "id")).label("next_payment_id"),),
)


def open_order_of(context: Row) -> dict[str, Any] | None:
    """The open payment `INIT_CONTEXT` read, as `OPEN_ORDER` reads it."""
    if context["open_id"] is None:
        return None
    return {column: context[f"open_{column}"] for column in _OPEN_COLUMNS}


_NEW_COLUMNS = [c.key for c in _PAYMENTS.c if c.key != "id"]
INSERT_PAYMENT = (
    insert(_PAYMENTS).values({name: bindparam(name) for name in _NEW_COLUMNS}).returning(_PAYMENTS.c.id)
)
# On SQLite a write transaction holds the database from its first statement: the open order read in it
# is still the truth at the insert. On PostgreSQL a concurrent init of the same order id may commit
# between the two: the insert then writes nothing, and the caller reads that payment.
INSERT_EVENT = insert(_EVENTS).values(
    {name: bindparam(name) for name in ("payment_id", "from_status", "to_status", "actor", "note", "at")}
)
# On PostgreSQL the payment (with the id given, or the next), its first event, its expiry job and (with
# an answer) the signed request that created it are one statement: one round trip; none of them is
# written when the order id has an open payment already.
# The payload is the JSON `outbox.enqueue_now` writes.
INSERT_WITH_MESSAGES = text(  # the f-string only spells out the model's column names
    f"""
    WITH new_payment AS (
        INSERT INTO payments (id, {", ".join(_NEW_COLUMNS)})
        VALUES (COALESCE(CAST(:id AS BIGINT), nextval(pg_get_serial_sequence('payments', 'id'))),
                {", ".join(f":{name}" for name in _NEW_COLUMNS)})
        ON CONFLICT (merchant_id, order_id) WHERE open_order DO NOTHING
        RETURNING id, merchant_id, status, expires_at, created_at
    ), first_event AS (
        INSERT INTO payment_events (payment_id, from_status, to_status, actor, note, at)
        SELECT id, NULL, status, :actor, '', created_at FROM new_payment
    ), expiry AS (
        INSERT INTO outbox (kind, merchant_id, aggregate, payload, status, attempts, due_at, created_at)
        SELECT :expire_kind, merchant_id, 'payment:' || id, '{{"payment_id":' || id || '}}',
               :pending, 0, expires_at, created_at
        FROM new_payment
    ), recorded AS (
        INSERT INTO signed_requests (merchant_id, script, digest, answer, created_at)
        SELECT merchant_id, :script, :digest, CAST(:answer AS TEXT), created_at
        FROM new_payment WHERE CAST(:answer AS TEXT) IS NOT NULL
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


_OWN = _PAYMENTS.c.merchant_id == MERCHANTS.c.id
_BY_ID = _PAYMENTS.c.id == bindparam("payment_id")
_NEWEST = _PAYMENTS.alias("newest")
# The newest payment for the order id: earlier ones failed or expired.
_NEWEST_OF_ORDER = _PAYMENTS.c.id == (
    select(func.max(_NEWEST.c.id))
    .where(_NEWEST.c.merchant_id == MERCHANTS.c.id, _NEWEST.c.order_id == bindparam("order_id"))
    .scalar_subquery()
)
_STATUS_COLUMNS = (*_PAYMENTS.c, _latest_attempt("method"), _latest_attempt("card_masked"))


def _status(on: ColumnElement[bool]) -> Any:
    return merchant_statement(Joined(_PAYMENTS, and_(_OWN, on), _STATUS_COLUMNS))


# What get_status.php reads with its merchant: the payment's columns (`id` null when there is no such
# payment of the merchant's) and its latest attempt's `attempt_method` and `attempt_card_masked`.
_STATUS_BY_ID = _status(_BY_ID)
_STATUS_BY_ORDER = _status(_NEWEST_OF_ORDER)
_STATUS_BY_BOTH = _status(and_(_BY_ID, _PAYMENTS.c.order_id == bindparam("order_id")))


def status_context(payment_id: int | None, order_id: str | None) -> tuple[Any, dict[str, Any]]:
    """The statement (and its values) that reads a status with its merchant."""
    if order_id is None:
        return _STATUS_BY_ID, {"payment_id": payment_id}
    if payment_id is None:
        return _STATUS_BY_ORDER, {"order_id": order_id}
    return _STATUS_BY_BOTH, {"payment_id": payment_id, "order_id": order_id}
