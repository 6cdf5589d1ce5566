"""Payouts to cards: statuses, the transitions between them, what each means for the ledger, and how
they read on the wire.

A payout reserves the merchant's available balance when it is created (in status `new` for a card the
recipient has yet to enter, or straight on to the acquirer for a saved card). The reservation is
either completed (the money left: `ok`) or released (it did not: `failed`, `expired`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from greengate.domain.errors import IllegalTransition


class PayoutStatus(StrEnum):
    NEW = "new"  # reserved; waiting for the recipient to enter the card (reg2nonreg)
    PROCESSING = "processing"  # sent to the acquirer, no final answer yet
    OK = "ok"  # paid out
    FAILED = "failed"  # declined by the acquirer (or the operator)
    EXPIRED = "expired"  # pg_order_time_limit passed before the recipient entered a card


class LedgerEffect(StrEnum):
    COMPLETED = "completed"  # the reserved money went to the payout rail
    RELEASED = "released"  # the reserved money is available to the merchant again


class PayoutKind(StrEnum):
    TO_NEW_CARD = "reg2nonreg"
    TO_SAVED_CARD = "reg2reg"


S = PayoutStatus
FINAL = frozenset({S.OK, S.FAILED, S.EXPIRED})

ALLOWED: dict[PayoutStatus, frozenset[PayoutStatus]] = {
    S.NEW: frozenset({S.PROCESSING, S.OK, S.FAILED, S.EXPIRED}),
    S.PROCESSING: frozenset({S.OK, S.FAILED}),
    S.OK: frozenset(),
    S.FAILED: frozenset(),
    S.EXPIRED: frozenset(),
}

LEDGER_EFFECT: dict[PayoutStatus, LedgerEffect] = {
    S.OK: LedgerEffect.COMPLETED,
    S.FAILED: LedgerEffect.RELEASED,
    S.EXPIRED: LedgerEffect.RELEASED,
}


def can_transition(current: PayoutStatus, target: PayoutStatus) -> bool:
    return target in ALLOWED[current]


def check_transition(current: PayoutStatus, target: PayoutStatus) -> LedgerEffect | None:
    """Refuse a transition the state machine does not allow; else what it does to the reservation."""
    if not can_transition(current, target):
        raise IllegalTransition("payout", current.value, target.value)
    return LEDGER_EFFECT.get(target)


# payment_status: pg_transaction_status (as get_status.php) and pg_payment_status (as get_status3.php)
TRANSACTION_STATUS = {
    S.NEW: "partial",
    S.PROCESSING: "pending",
    S.OK: "ok",
    S.FAILED: "failed",
    S.EXPIRED: "incomplete",
}
PAYMENT_STATUS = {
    S.NEW: "waiting",
    S.PROCESSING: "process",
    S.OK: "success",
    S.FAILED: "error",
    S.EXPIRED: "error",
}
# reg2reg's answer and the pg_post_link callback: pg_status is `error` once the payout has failed, so
# an integration that only reads pg_status never takes a failed payout for a paid one; a payout still
# processing reads `ok` with pg_payment_status=process (the outcome follows at pg_post_link).
RESULT_STATUS = {
    S.NEW: "ok",
    S.PROCESSING: "ok",
    S.OK: "ok",
    S.FAILED: "error",
    S.EXPIRED: "error",
}

# An expired payout reports the protocol's "transaction expired" code.
EXPIRED_CODE = 360
EXPIRED_DESCRIPTION = "the recipient did not enter a card before pg_order_time_limit"
DEFAULT_TIME_LIMIT_SECONDS = 86_400
MAX_TIME_LIMIT_SECONDS = 30 * 86_400


@dataclass(frozen=True)
class NewPayout:
    """A validated payout request, whatever transport it came by."""

    kind: PayoutKind
    amount: int
    currency: str
    order_id: str
    description: str
    expires_at: datetime
    user_id: str | None = None
    post_link: str | None = None
    back_link: str | None = None
    language: str = "ru"
    testing: bool = False
    card_id: str | None = None  # reg2reg: pg_card_id
    card_token: str | None = None  # reg2reg: pg_card_token_to
    idempotency_key: str | None = None
    extras: list[tuple[str, str]] = field(default_factory=list)  # the merchant's own parameters
