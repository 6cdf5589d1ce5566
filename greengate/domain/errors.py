"""Typed domain errors. Each carries a stable code; adapters map codes to their wire format."""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    INVALID = "invalid"  # malformed request or field
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"  # concurrent use of the same key/resource
    REJECTED = "rejected"  # well-formed but refused by a business rule
    UNAVAILABLE = "unavailable"  # a dependency (rates, acquirer) cannot serve now


class DomainError(Exception):
    kind: ErrorKind = ErrorKind.REJECTED
    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field


class TooManyRequests(DomainError):
    """A request limit or a failed-authentication throttle refused the request for a while."""

    kind = ErrorKind.UNAVAILABLE
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidRequest(DomainError):
    kind = ErrorKind.INVALID
    code = "invalid_request"


class InvalidAmount(InvalidRequest):
    code = "invalid_amount"


class Unauthorized(DomainError):
    kind = ErrorKind.UNAUTHORIZED
    code = "unauthorized"


class NotFound(DomainError):
    kind = ErrorKind.NOT_FOUND
    code = "not_found"


class Conflict(DomainError):
    kind = ErrorKind.CONFLICT
    code = "conflict"


class BusinessRuleViolation(DomainError):
    kind = ErrorKind.REJECTED
    code = "rejected"


class IllegalTransition(BusinessRuleViolation):
    code = "illegal_transition"

    def __init__(self, aggregate: str, current: str, target: str) -> None:
        super().__init__(f"{aggregate} cannot move from {current} to {target}")
        self.current = current
        self.target = target


class Unavailable(DomainError):
    kind = ErrorKind.UNAVAILABLE
    code = "unavailable"


# Merchant API failures. Each has its own code; the adapter maps codes to pg_error_code.
class SignatureInvalid(Unauthorized):
    code = "signature_invalid"


class MerchantUnknown(Unauthorized):
    code = "merchant_unknown"


class MerchantInactive(BusinessRuleViolation):
    code = "merchant_inactive"


class ActionDisabled(BusinessRuleViolation):
    code = "action_disabled"


class TransactionNotFound(NotFound):
    code = "transaction_not_found"


class TransactionLocked(Conflict):
    code = "transaction_locked"


class TransactionExpired(BusinessRuleViolation):
    code = "transaction_expired"


class StateForbids(BusinessRuleViolation):
    """A refund, cancel or capture the transaction's state does not allow."""

    code = "state_forbids"


class NoPaymentSystem(BusinessRuleViolation):
    code = "no_payment_system"


class PaymentSystemUnreachable(Unavailable):
    """The connector to the chosen payment system is down."""

    code = "payment_system_unreachable"


class PaymentSystemCertificateExpired(Unavailable):
    """The chosen payment system's connector certificate has expired."""

    code = "payment_system_certificate_expired"


class PaymentSystemFailure(Unavailable):
    """The chosen payment system fails every request."""

    code = "payment_system_failure"
