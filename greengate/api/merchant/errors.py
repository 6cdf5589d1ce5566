"""Domain error codes → the Platron/PayBox family's integer pg_error_code."""

from __future__ import annotations

from greengate.domain.errors import DomainError, ErrorKind

PG_ERROR_CODES: dict[str, int] = {
    "signature_invalid": 100,
    "merchant_unknown": 101,
    "merchant_inactive": 110,
    "action_disabled": 120,
    "transaction_not_found": 340,
    "transaction_locked": 350,
    "transaction_expired": 360,
    "recurring_expired": 365,
    "payment_rejected": 400,
    "limit_exceeded": 420,
    "payment_system_unreachable": 465,
    "payment_system_certificate_expired": 466,
    "payment_system_error": 470,
    "payment_system_failure": 475,
    "state_forbids": 490,
    "illegal_transition": 490,
    "payer_data_error": 700,
    "wrong_phone": 701,
    "phone_not_accepted": 711,
    "no_payment_system": 850,
    "unknown_script": 600,
    "internal_error": 1000,
    "rate_limited": 1000,
}

BY_KIND: dict[ErrorKind, int] = {
    ErrorKind.INVALID: 200,
    ErrorKind.UNAUTHORIZED: 100,
    ErrorKind.NOT_FOUND: 340,
    ErrorKind.CONFLICT: 350,
    ErrorKind.REJECTED: 600,
    ErrorKind.UNAVAILABLE: 1000,
}


def pg_error_code(error: DomainError) -> int:
    return PG_ERROR_CODES.get(error.code, BY_KIND[error.kind])
