"""Test cards and test phones: the numbers the Merchant API family publishes, each with one behaviour.

The tables are data so the docs and the operator console render them as they are. The sandbox
acquirer reads them; the manual acquirer uses `is_test_card` to refuse them in live mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from greengate.acquiring.base import PROCESSING, Decision, FailureCode, Outcome, declined
from greengate.domain.card_rules import card_brand
from greengate.domain.cards import mask_number

THREE_DS_PASSWORD = "12345678"  # noqa: S105 - the published sandbox password, not a secret

# Approvals in the tables carry no auth code or RRN: those are derived from each payment's id.
_APPROVED = Decision(Outcome.APPROVED)


@dataclass(frozen=True)
class PurchaseCard:
    """`result` is the answer after the card form, or after 3-D Secure with the right password when
    `three_ds` is set. A PROCESSING result becomes `resolution` when it is resolved."""

    number: str
    behaviour: str
    three_ds: bool
    result: Decision
    resolution: Decision | None = None

    @property
    def brand(self) -> str:
        return card_brand(self.number)

    @property
    def masked(self) -> str:
        return mask_number(self.number)


@dataclass(frozen=True)
class PayoutCard:
    number: str
    behaviour: str
    result: Decision
    resolution: Decision | None = None

    @property
    def brand(self) -> str:
        return card_brand(self.number)

    @property
    def masked(self) -> str:
        return mask_number(self.number)


@dataclass(frozen=True)
class TestPhone:
    """`result` is the answer once the right OTP is entered."""

    __test__ = False  # not a pytest test class despite the name

    number: str
    otp: str
    behaviour: str
    result: Decision

    @property
    def digits(self) -> str:
        return self.number.removeprefix("+")


CONTACT_ISSUER = declined(FailureCode.CONTACT_ISSUER, "contact the issuing bank")
THREE_DS_FAILED = declined(FailureCode.THREE_DS_FAILED, "3-D Secure authentication failed")

PURCHASE_CARDS: tuple[PurchaseCard, ...] = (
    PurchaseCard("4405645000006150", "approved without 3-D Secure", False, _APPROVED),
    PurchaseCard("5475102935853613", "approved without 3-D Secure", False, _APPROVED),
    PurchaseCard("5483185000000293", "approved after 3-D Secure", True, _APPROVED),
    PurchaseCard("4716047261941981", "approved after 3-D Secure", True, _APPROVED),
    PurchaseCard("4916307416334310", "3-D Secure fails whatever the password", True, THREE_DS_FAILED),
    PurchaseCard("5367654276102126", "declined: contact the issuing bank", False, CONTACT_ISSUER),
    PurchaseCard(
        "4939770956154989",
        "declined: wrong card data",
        False,
        declined(FailureCode.WRONG_CARD_DATA, "wrong card data"),
    ),
    PurchaseCard(
        "5335215945367703",
        "declined by the issuer's security checks",
        False,
        declined(FailureCode.SECURITY_DECLINE, "declined for security reasons"),
    ),
    PurchaseCard(
        "4916109830832246",
        "declined: insufficient funds",
        False,
        declined(FailureCode.INSUFFICIENT_FUNDS, "insufficient funds"),
    ),
    PurchaseCard("5548398681700148", "processing, then approved", False, PROCESSING, _APPROVED),
)

PAYOUT_CARDS: tuple[PayoutCard, ...] = (
    PayoutCard("4671593866478252", "paid out", _APPROVED),
    PayoutCard(
        "5325349472901311",
        "error: service unavailable",
        declined(FailureCode.SERVICE_UNAVAILABLE, "service unavailable"),
    ),
    PayoutCard("4556046085041740", "error: contact the issuing bank", CONTACT_ISSUER),
    PayoutCard(
        "5543974702876045",
        "error: rejected by the payment system",
        declined(FailureCode.PAYOUT_REJECTED, "payout rejected by the payment system"),
    ),
    PayoutCard("5507841999732294", "processing, then paid out", PROCESSING, _APPROVED),
    PayoutCard(
        "4532676596620704", "processing, then error: contact the issuing bank", PROCESSING, CONTACT_ISSUER
    ),
)

TEST_PHONES: tuple[TestPhone, ...] = (
    TestPhone("+77017777777", "111111", "approved after the OTP", _APPROVED),
    TestPhone("+77057777777", "555555", "approved after the OTP", _APPROVED),
    TestPhone("+77077777777", "777777", "declined after the OTP: contact the issuing bank", CONTACT_ISSUER),
)

_PURCHASE_BY_NUMBER = {card.number: card for card in PURCHASE_CARDS}
_PAYOUT_BY_NUMBER = {card.number: card for card in PAYOUT_CARDS}
_PHONE_BY_DIGITS = {phone.digits: phone for phone in TEST_PHONES}


def card_digits(number: str) -> str:
    """The number without the spaces and dashes a card is often written with."""
    return number.replace(" ", "").replace("-", "")


def find_purchase_card(number: str) -> PurchaseCard | None:
    return _PURCHASE_BY_NUMBER.get(card_digits(number))


def find_payout_card(number: str) -> PayoutCard | None:
    return _PAYOUT_BY_NUMBER.get(card_digits(number))


def find_test_phone(digits: str) -> TestPhone | None:
    """The test phone with these digits (country code first, no '+')."""
    return _PHONE_BY_DIGITS.get(digits)


def is_test_card(number: str) -> bool:
    """True for every published test card, purchase or payout."""
    digits = card_digits(number)
    return digits in _PURCHASE_BY_NUMBER or digits in _PAYOUT_BY_NUMBER
