"""Exchange API wire format: how orders and directions look on the wire, and errors."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from greengate.domain.errors import DomainError, ErrorKind
from greengate.domain.exchange import UNPAYABLE_STATUSES, OrderStatus, status_seen
from greengate.domain.money import format_minor
from greengate.store.models import Direction

WIRE_TIME = "%Y-%m-%d %H:%M:%S"

HTTP_STATUS = {
    ErrorKind.INVALID: 400,
    ErrorKind.UNAUTHORIZED: 401,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.REJECTED: 422,
    ErrorKind.UNAVAILABLE: 503,
}


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Written as a JSON number with the exact decimal digits, never through float.
        return orjson.Fragment(format(value, "f").encode())
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, default=_default)


def wire_time(value: datetime) -> str:
    return value.strftime(WIRE_TIME)


def fiat_text(minor: int, currency: str) -> str:
    """ "9999" for whole amounts, "5000.37" otherwise."""
    return format_minor(minor, currency, trim=minor % 100 == 0)


def fiat_number(minor: int, currency: str) -> Decimal:
    return Decimal(fiat_text(minor, currency))


def percent_number(text: str) -> Decimal:
    value = Decimal(text)
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


def order_wire(
    order: Mapping[str, Any], wallet_payment: str, base_url: str, now: datetime | None = None
) -> dict[str, Any]:
    """An order as the wire shows it, from its columns (a row, or `column_values` of the object).
    The requisites are shown only while the order can still be paid; a completed order shows the
    payout's txid. Read at `now`, an open order whose time has run out is autocanceled, whether or not
    the expiry has been written yet."""
    currency = order["currency"]
    status = OrderStatus(order["status"])
    if now is not None:
        status = status_seen(status, order["expires_at"], now)
    if status in UNPAYABLE_STATUSES:
        wallet_payment = ""
    wire = {
        "order_id": str(order["id"]),
        "exchange_rate": order["exchange_rate"],
        "amount_payable": fiat_text(order["amount_payable"], currency),
        "amount_receivable": format_minor(order["amount_receivable"], "BTC"),
        "wallet_payment": wallet_payment,
        "clients_wallet": order["wallet"],
        "created_at": wire_time(order["created_at"]),
        "updated_at": wire_time(order["updated_at"]),
        "order_status": status.value,
        "expires_at": wire_time(order["expires_at"]),
        "fast_link": f"{base_url.rstrip('/')}/pay/order/{order['access_token']}",
    }
    if status is OrderStatus.COMPLETED:
        wire["txid"] = order.get("txid") or ""  # the payout's transaction, beyond the seed's fields
    return wire


def direction_wire(direction: Direction, current_course: Decimal | None) -> dict[str, Any]:
    return {
        "id": direction.id,
        "status": direction.status,
        "order_ttl": direction.order_ttl,
        "min_amount": fiat_number(direction.min_amount, direction.from_currency),
        "max_amount": fiat_number(direction.max_amount, direction.from_currency),
        "comission_percent": percent_number(direction.commission_percent),
        "fullname": direction.fullname,
        "current_course": current_course,
        "payment_method": direction.payment_method,
    }


def error_body(error: DomainError) -> dict[str, str]:
    return {"response": "error", "result": "false", "error": error.message, "code": error.code}


def error_status(error: DomainError) -> int:
    if error.code == "payload_too_large":
        return 413
    if error.code == "unsupported_media_type":
        return 415
    return HTTP_STATUS[error.kind]
