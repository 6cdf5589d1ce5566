"""The sandbox acquirer: test payments decided by the published test cards and test phones.

Every test card has one behaviour (see `test_data` and docs/test-cards.md); any other card is
declined with 10005. The sandbox serves test payments only: a call with `testing=False` is declined
with 850, so a live payment routed here by mistake can never be approved without a bank.
"""

from __future__ import annotations

import re

from greengate.acquiring.base import (
    OTP_MAX_ATTEMPTS,
    PROCESSING,
    REQUIRE_3DS,
    REQUIRE_OTP,
    Decision,
    FailureCode,
    Outcome,
    approved,
    declined,
)
from greengate.acquiring.test_data import (
    THREE_DS_FAILED,
    THREE_DS_PASSWORD,
    TestPhone,
    find_payout_card,
    find_purchase_card,
    find_test_phone,
)
from greengate.domain.card_rules import CardForm

NOT_A_TEST_CARD = declined(FailureCode.WRONG_CARD_DATA, "only test cards are accepted in test mode")
LIVE_PAYMENT = declined(FailureCode.NO_PAYMENT_SYSTEM, "the sandbox only processes test payments")
PAYOUT_CARD_FOR_PURCHASE = declined(
    FailureCode.WRONG_CARD_DATA, "this test card only receives payouts; pay with a purchase test card"
)
PURCHASE_CARD_FOR_PAYOUT = declined(
    FailureCode.WRONG_CARD_DATA, "this test card is for purchases; pay out to a payout test card"
)
WRONG_PHONE = declined(FailureCode.WRONG_PHONE, "wrong phone number")
PHONE_NOT_ACCEPTED = declined(
    FailureCode.PHONE_NOT_ACCEPTED, "only test phone numbers are accepted in test mode"
)
WRONG_OTP = declined(FailureCode.PAYER_INPUT, "wrong confirmation code")
TOO_MANY_OTP_ATTEMPTS = declined(FailureCode.TOO_MANY_OTP_ATTEMPTS, "too many OTP attempts")

# A phone as people write it: optional '+', digits with spaces, dashes or brackets between them.
_PHONE = re.compile(r"\+?[0-9][0-9 ()-]*")
_PHONE_MIN_DIGITS = 11
_PHONE_MAX_DIGITS = 15


def phone_digits(phone: str) -> str | None:
    """The phone's digits, country code first (11 to 15 of them), or None when it is malformed."""
    text = phone.strip()
    if not _PHONE.fullmatch(text):
        return None
    digits = "".join(ch for ch in text if ch.isdigit())
    return digits if _PHONE_MIN_DIGITS <= len(digits) <= _PHONE_MAX_DIGITS else None


class SandboxAcquirer:
    name = "sandbox"

    def authorize_card(
        self, *, payment_id: int, amount_minor: int, currency: str, card: CardForm, testing: bool
    ) -> Decision:
        if not testing:
            return LIVE_PAYMENT
        number = card.pan.reveal()
        test_card = find_purchase_card(number)
        if test_card is None:
            return PAYOUT_CARD_FOR_PURCHASE if find_payout_card(number) else NOT_A_TEST_CARD
        if test_card.three_ds:
            return REQUIRE_3DS
        return _with_codes(test_card.result, payment_id, payout=False)

    def complete_3ds(self, *, payment_id: int, card_number: str, password: str) -> Decision:
        test_card = find_purchase_card(card_number)
        if test_card is None:
            return PAYOUT_CARD_FOR_PURCHASE if find_payout_card(card_number) else NOT_A_TEST_CARD
        if password != THREE_DS_PASSWORD:
            return THREE_DS_FAILED
        # A card that does not ask for 3-D Secure (the operator may require it) keeps its own outcome.
        return _with_codes(test_card.result, payment_id, payout=False)

    def start_phone(self, *, payment_id: int, phone: str, testing: bool) -> Decision:
        if not testing:
            return LIVE_PAYMENT
        found = _find_phone(phone)
        return found if isinstance(found, Decision) else REQUIRE_OTP

    def complete_otp(self, *, payment_id: int, phone: str, code: str, attempt: int) -> Decision:
        if attempt < 1:
            raise ValueError("OTP attempts are counted from 1")
        found = _find_phone(phone)
        if isinstance(found, Decision):
            return found
        if attempt > OTP_MAX_ATTEMPTS:
            return TOO_MANY_OTP_ATTEMPTS
        if code.strip() == found.otp:
            return _with_codes(found.result, payment_id, payout=False)
        return WRONG_OTP if attempt < OTP_MAX_ATTEMPTS else TOO_MANY_OTP_ATTEMPTS

    def payout(
        self, *, payout_id: int, amount_minor: int, currency: str, card_number: str, testing: bool
    ) -> Decision:
        if not testing:
            return LIVE_PAYMENT
        test_card = find_payout_card(card_number)
        if test_card is None:
            return PURCHASE_CARD_FOR_PAYOUT if find_purchase_card(card_number) else NOT_A_TEST_CARD
        return _with_codes(test_card.result, payout_id, payout=True)

    def resolve_processing(self, *, card_number: str) -> Decision:
        """A test card with a "processing, then …" behaviour gives that final answer; any other test
        card stays PROCESSING (the operator resolves it from the console)."""
        test_card = find_purchase_card(card_number) or find_payout_card(card_number)
        if test_card is None:
            return NOT_A_TEST_CARD
        return test_card.resolution or PROCESSING


def _find_phone(phone: str) -> TestPhone | Decision:
    digits = phone_digits(phone)
    if digits is None:
        return WRONG_PHONE
    return find_test_phone(digits) or PHONE_NOT_ACCEPTED


def _with_codes(result: Decision, reference: int, *, payout: bool) -> Decision:
    """A table result, with the auth code and RRN of this payment or payout when it is an approval."""
    return approved(reference, payout=payout) if result.outcome is Outcome.APPROVED else result
