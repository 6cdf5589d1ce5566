"""The manual acquirer for live payments: there is no bank behind it, so the operator decides.

Every card payment and payout is left PROCESSING until the operator resolves it in the console.
Mobile commerce has no connector here (850). Test cards are refused (10005), and so is a test
payment with any other card: test payments belong to the sandbox.
"""

from __future__ import annotations

from greengate.acquiring.base import PROCESSING, Decision, FailureCode, declined
from greengate.acquiring.test_data import is_test_card
from greengate.domain.card_rules import CardForm

TEST_CARD_IN_LIVE_MODE = declined(FailureCode.WRONG_CARD_DATA, "test cards are not accepted in live mode")
REAL_CARD_IN_TEST_MODE = declined(FailureCode.WRONG_CARD_DATA, "only test cards are accepted in test mode")
NO_PAYMENT_SYSTEM = declined(FailureCode.NO_PAYMENT_SYSTEM, "no payment system is ready")


class ManualAcquirer:
    name = "manual"

    def authorize_card(
        self, *, payment_id: int, amount_minor: int, currency: str, card: CardForm, testing: bool
    ) -> Decision:
        return _leave_to_operator(card.pan.reveal(), testing=testing)

    def complete_3ds(self, *, payment_id: int, card_number: str, password: str) -> Decision:
        return _leave_to_operator(card_number, testing=False)

    def start_phone(self, *, payment_id: int, phone: str, testing: bool) -> Decision:
        return NO_PAYMENT_SYSTEM

    def complete_otp(self, *, payment_id: int, phone: str, code: str, attempt: int) -> Decision:
        return NO_PAYMENT_SYSTEM

    def payout(
        self, *, payout_id: int, amount_minor: int, currency: str, card_number: str, testing: bool
    ) -> Decision:
        return _leave_to_operator(card_number, testing=testing)

    def resolve_processing(self, *, card_number: str) -> Decision:
        return _leave_to_operator(card_number, testing=False)


def _leave_to_operator(card_number: str, *, testing: bool) -> Decision:
    if is_test_card(card_number):
        return TEST_CARD_IN_LIVE_MODE
    if testing:
        return REAL_CARD_IN_TEST_MODE
    return PROCESSING
