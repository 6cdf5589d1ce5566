"""The acquirer interface: what the payment and payout services ask a connector, and its answers.

Acquirers are pure: no I/O, no clock, no state between calls. Whatever a step depends on (the OTP
attempt number, the payment id) is passed in, so any process may serve any step of a payment.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Protocol

from greengate.domain.card_rules import CardForm


class Outcome(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    REQUIRE_3DS = "require_3ds"  # show the 3-D Secure page, then call complete_3ds
    REQUIRE_OTP = "require_otp"  # show the OTP page, then call complete_otp
    PROCESSING = "processing"  # no answer yet: resolved later by the operator or the worker


class FailureCode(IntEnum):
    """Failure codes acquirers put in `Decision.failure_code` (sent to merchants as `pg_failure_code`).

    Platron/PayBox codes for the payer's input and routing, FreedomPay codes for issuer declines.
    10002 (insufficient funds) is not in FreedomPay's published list, which skips it; greengate
    gives it that meaning because it is the one common decline the list has no code for.
    """

    PAYER_INPUT = 700  # wrong OTP code, the payer may try again
    WRONG_PHONE = 701
    PHONE_NOT_ACCEPTED = 711
    NO_PAYMENT_SYSTEM = 850
    PAYOUT_REJECTED = 8888
    SERVICE_UNAVAILABLE = 10000
    CONTACT_ISSUER = 10001
    INSUFFICIENT_FUNDS = 10002
    TOO_MANY_OTP_ATTEMPTS = 10003
    THREE_DS_FAILED = 10004
    WRONG_CARD_DATA = 10005
    SECURITY_DECLINE = 10007


OTP_MAX_ATTEMPTS = 3

_AUTH_CODE = re.compile(r"[0-9]{6}")
_RRN = re.compile(r"[0-9]{12}")


@dataclass(frozen=True)
class Decision:
    """An acquirer's answer. Only DECLINED carries a failure; only APPROVED may carry auth_code/rrn."""

    outcome: Outcome
    auth_code: str | None = None
    rrn: str | None = None
    failure_code: int | None = None
    failure_description: str | None = None

    def __post_init__(self) -> None:
        declined = self.outcome is Outcome.DECLINED
        if declined != (self.failure_code is not None) or declined != (self.failure_description is not None):
            raise ValueError("a declined decision, and only it, has a failure code and description")
        if self.outcome is not Outcome.APPROVED and (self.auth_code is not None or self.rrn is not None):
            raise ValueError("only an approved decision has an auth code and RRN")
        if self.auth_code is not None and not _AUTH_CODE.fullmatch(self.auth_code):
            raise ValueError("auth code must have 6 digits")
        if self.rrn is not None and not _RRN.fullmatch(self.rrn):
            raise ValueError("RRN must have 12 digits")

    @property
    def is_final(self) -> bool:
        """APPROVED, or DECLINED other than a wrong OTP code that the payer may enter again."""
        if self.outcome is Outcome.APPROVED:
            return True
        return self.outcome is Outcome.DECLINED and self.failure_code != FailureCode.PAYER_INPUT


def approval_codes(reference: int, *, payout: bool = False) -> tuple[str, str]:
    """The (auth_code, rrn) pair an acquirer without a bank reports for an approval.

    Deterministic, so tests and the docs can predict it: h = SHA-256 of the ASCII text
    "payment:<payment_id>" (or "payout:<payout_id>"); auth_code = the first 8 bytes of h as a
    big-endian integer modulo 10**6, zero-padded to 6 digits; rrn = the next 8 bytes modulo 10**12,
    zero-padded to 12 digits.
    """
    digest = hashlib.sha256(f"{'payout' if payout else 'payment'}:{reference}".encode("ascii")).digest()
    auth_code = int.from_bytes(digest[:8], "big") % 10**6
    rrn = int.from_bytes(digest[8:16], "big") % 10**12
    return f"{auth_code:06d}", f"{rrn:012d}"


def approved(reference: int, *, payout: bool = False) -> Decision:
    auth_code, rrn = approval_codes(reference, payout=payout)
    return Decision(Outcome.APPROVED, auth_code=auth_code, rrn=rrn)


def declined(code: int, description: str) -> Decision:
    return Decision(Outcome.DECLINED, failure_code=int(code), failure_description=description)


PROCESSING = Decision(Outcome.PROCESSING)
REQUIRE_3DS = Decision(Outcome.REQUIRE_3DS)
REQUIRE_OTP = Decision(Outcome.REQUIRE_OTP)


class Acquirer(Protocol):
    """A connector that decides card payments, mobile payments and payouts.

    `testing` is the payment's (or payout's) effective test flag: True when the merchant is in test
    mode or the payment was created with `pg_testing_mode=1`. Card numbers are digits; spaces and
    dashes are tolerated. `card_number` arguments are the full PAN: never log them.
    """

    name: str

    def authorize_card(
        self, *, payment_id: int, amount_minor: int, currency: str, card: CardForm, testing: bool
    ) -> Decision:
        """First step after the card form: APPROVED, DECLINED, REQUIRE_3DS or PROCESSING."""
        ...

    def complete_3ds(self, *, payment_id: int, card_number: str, password: str) -> Decision:
        """After the 3-D Secure page: APPROVED, DECLINED or PROCESSING."""
        ...

    def start_phone(self, *, payment_id: int, phone: str, testing: bool) -> Decision:
        """REQUIRE_OTP, or DECLINED with 701 (malformed number) or 711 (number not accepted)."""
        ...

    def complete_otp(self, *, payment_id: int, phone: str, code: str, attempt: int) -> Decision:
        """`attempt` counts from 1. A wrong code is DECLINED 700 (ask again) while attempt < 3;
        the third wrong code is DECLINED 10003 (too many OTP attempts)."""
        ...

    def payout(
        self, *, payout_id: int, amount_minor: int, currency: str, card_number: str, testing: bool
    ) -> Decision:
        """APPROVED, DECLINED or PROCESSING."""
        ...

    def resolve_processing(self, *, card_number: str) -> Decision:
        """What a PROCESSING payment or payout on this card becomes when it is resolved.
        An APPROVED answer here carries no auth_code/rrn: the caller knows the id and may use
        `approval_codes`."""
        ...
