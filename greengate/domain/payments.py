"""Merchant API payments: statuses, the transitions between them, and how they read on the wire."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from greengate.domain.errors import IllegalTransition


class PaymentStatus(StrEnum):
    NEW = "new"  # created; the payer has not finished the page
    THREE_DS = "3ds"  # waiting for the 3-D Secure password
    OTP = "otp"  # waiting for the SMS code (mobile commerce)
    CHECK = "check"  # waiting for the merchant's answer to the check request
    PENDING = "pending"  # the acquirer is processing
    OK = "ok"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"  # lifetime passed without payment
    REVOKED = "revoked"  # refunded (fully or partly) after success


S = PaymentStatus
PAYER_STEPS = frozenset({S.NEW, S.THREE_DS, S.OTP})
FINAL = frozenset({S.FAILED, S.CANCELED, S.EXPIRED})

ALLOWED: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    S.NEW: frozenset({S.THREE_DS, S.OTP, S.CHECK, S.PENDING, S.OK, S.FAILED, S.CANCELED, S.EXPIRED}),
    S.THREE_DS: frozenset({S.CHECK, S.PENDING, S.OK, S.FAILED, S.CANCELED, S.EXPIRED}),
    S.OTP: frozenset({S.CHECK, S.PENDING, S.OK, S.FAILED, S.CANCELED, S.EXPIRED}),
    S.CHECK: frozenset({S.PENDING, S.OK, S.FAILED}),
    S.PENDING: frozenset({S.OK, S.FAILED, S.CANCELED}),
    S.OK: frozenset({S.REVOKED, S.CANCELED}),  # canceled: an uncaptured authorisation released
    S.REVOKED: frozenset({S.REVOKED}),  # a further partial refund
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
    S.EXPIRED: frozenset(),
}


def check_transition(current: PaymentStatus, target: PaymentStatus) -> None:
    if target not in ALLOWED[current]:
        raise IllegalTransition("payment", current.value, target.value)


# get_status.php / get_status2.php: pg_transaction_status
def is_captured(status: PaymentStatus, *, two_step: bool, captured: bool) -> bool:
    """Whether the payer's money was actually taken (`pg_captured`): a one-step payment once it is paid
    (and still after a refund, which returns money that was taken), a two-step one once captured."""
    if two_step:
        return captured
    return status in (S.OK, S.REVOKED)


TRANSACTION_STATUS = {
    S.NEW: "partial",
    S.THREE_DS: "partial",
    S.OTP: "partial",
    S.CHECK: "pending",
    S.PENDING: "pending",
    S.OK: "ok",
    S.FAILED: "failed",
    S.CANCELED: "failed",
    S.EXPIRED: "incomplete",
    S.REVOKED: "revoked",
}
# get_status3.php: pg_payment_status
PAYMENT_STATUS3 = {
    S.NEW: "waiting",
    S.THREE_DS: "waiting",
    S.OTP: "waiting",
    S.CHECK: "process",
    S.PENDING: "process",
    S.OK: "success",
    S.FAILED: "error",
    S.CANCELED: "error",
    S.EXPIRED: "error",
    S.REVOKED: "success",
}

CURRENCIES = ("KZT", "RUB", "USD", "EUR", "KGS", "UZS")
CURRENCY_ALIASES = {"RUR": "RUB"}
LANGUAGES = ("ru", "en", "kk")
REQUEST_METHODS = ("GET", "POST", "XML")
REDIRECT_METHODS = ("GET", "POST", "AUTOGET", "AUTOPOST")
PAYMENT_METHODS = ("card", "phone")


def selected_methods(payment_system: str | None) -> tuple[str, ...]:
    """The methods a payment may be paid with; `pg_payment_system` may narrow them to one."""
    system = (payment_system or "").upper()
    if "CARD" in system:
        return ("card",)
    if "MOBILE" in system or "PHONE" in system:
        return ("phone",)
    return PAYMENT_METHODS


DEFAULT_LIFETIME = 86_400
MIN_LIFETIME = 300
MAX_LIFETIME = 7 * 86_400
MAX_TIMEOUT_AFTER_PAYMENT = 3_600


@dataclass(frozen=True)
class NewPayment:
    """A validated payment request, whatever transport it came by."""

    amount: int
    currency: str
    description: str
    order_id: str | None = None
    lifetime: int = DEFAULT_LIFETIME
    urls: dict[str, str] = field(default_factory=dict)  # check, result, refund, capture, success, ... → URL
    request_method: str | None = None  # None: the merchant's default
    success_url_method: str = "GET"
    failure_url_method: str = "GET"
    state_url_method: str = "GET"
    payment_system: str | None = None
    timeout_after_payment: int | None = None  # seconds before the success page returns to the shop
    user_phone: str | None = None
    user_email: str | None = None
    user_ip: str | None = None
    user_id: str | None = None
    language: str = "ru"
    testing: bool = False
    two_step: bool = False
    recurring_start: bool = False
    recurring_lifetime: int | None = None
    idempotency_key: str | None = None
    receipt: list[dict[str, str]] | None = None
    extras: list[tuple[str, str]] = field(default_factory=list)  # the merchant's own parameters
