"""Hosted card form rules: what a payer may submit as a card, and the card it describes.

`validate_card_form` checks the raw form fields and returns a `CardForm` whose number and CVC are
wrapped in `Secret`; the first invalid field raises `CardFormError` naming that field (the name of
the matching parameter: number, exp_month, exp_year, holder, cvc).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from greengate.domain.cards import luhn_valid, mask_number
from greengate.domain.errors import InvalidRequest
from greengate.domain.secret import Secret

HOLDER_MAX_LENGTH = 100

_NUMBER = re.compile(r"[0-9]{12,19}")
_MONTH = re.compile(r"[0-9]{1,2}")
_YEAR = re.compile(r"[0-9]{2}|[0-9]{4}")
# One word of a holder name: latin letters with hyphens, apostrophes and dots, at least one letter.
_HOLDER_WORD = re.compile(r"[A-Za-z.'-]*[A-Za-z][A-Za-z.'-]*")
_AMEX_PREFIXES = ("34", "37")


class CardFormError(InvalidRequest):
    code = "invalid_card_data"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)


def card_brand(number: str) -> str:
    """Payment system code as sent in `pg_card_brand`: VI, MC, AE, MI (Mir), UP (UnionPay) or XX."""
    digits = number.replace(" ", "")
    if not digits.isascii() or not digits.isdigit():
        return "XX"
    if digits.startswith("4"):
        return "VI"
    if digits.startswith(_AMEX_PREFIXES):
        return "AE"
    if digits.startswith("62"):
        return "UP"
    if "51" <= digits[:2] <= "55":
        return "MC"
    if len(digits) >= 4:
        if "2200" <= digits[:4] <= "2204":
            return "MI"
        if "2221" <= digits[:4] <= "2720":
            return "MC"
    return "XX"


def is_amex(number: str) -> bool:
    return number.replace(" ", "").startswith(_AMEX_PREFIXES)


@dataclass(frozen=True, repr=False)
class CardForm:
    """A validated card: `pan` digits only, `exp_year` with four digits, `holder` upper case."""

    pan: Secret[str]
    exp_month: int
    exp_year: int
    holder: str
    cvc: Secret[str]

    @property
    def masked(self) -> str:
        return mask_number(self.pan.reveal())

    @property
    def brand(self) -> str:
        return card_brand(self.pan.reveal())

    @property
    def exp_text(self) -> str:
        """`MM/YY`, the wire form of `pg_card_exp`."""
        return f"{self.exp_month:02d}/{self.exp_year % 100:02d}"

    def __repr__(self) -> str:
        # Only what may be shown to anyone: masked number, brand and expiry.
        return f"CardForm(masked={self.masked!r}, brand={self.brand!r}, exp={self.exp_text!r})"

    __str__ = __repr__


def validate_card_form(
    number: str, exp_month: str, exp_year: str, holder: str, cvc: str, today: date
) -> CardForm:
    pan = _validate_number(number)
    month, year = _validate_expiry(exp_month, exp_year, today)
    return CardForm(
        pan=Secret(pan),
        exp_month=month,
        exp_year=year,
        holder=_validate_holder(holder),
        cvc=Secret(_validate_cvc(cvc, pan)),
    )


def _validate_number(number: str) -> str:
    digits = number.replace(" ", "")
    if not _NUMBER.fullmatch(digits):
        raise CardFormError("number", "card number must have 12 to 19 digits")
    if not luhn_valid(digits):
        raise CardFormError("number", "card number is not valid")
    return digits


def _validate_expiry(exp_month: str, exp_year: str, today: date) -> tuple[int, int]:
    month_text = exp_month.strip()
    if not _MONTH.fullmatch(month_text) or not 1 <= int(month_text) <= 12:
        raise CardFormError("exp_month", "expiry month must be 01 to 12")
    year_text = exp_year.strip()
    if not _YEAR.fullmatch(year_text):
        raise CardFormError("exp_year", "expiry year must have 2 or 4 digits")
    month = int(month_text)
    year = int(year_text) + (2000 if len(year_text) == 2 else 0)
    # A card is valid through the last day of its expiry month.
    if (year, month) < (today.year, today.month):
        field = "exp_month" if year == today.year else "exp_year"
        raise CardFormError(field, "card has expired")
    return month, year


def _validate_holder(holder: str) -> str:
    words = holder.split()
    name = " ".join(words)
    if not name:
        raise CardFormError("holder", "enter the card holder's name")
    if len(name) > HOLDER_MAX_LENGTH:
        raise CardFormError("holder", f"card holder's name must be at most {HOLDER_MAX_LENGTH} characters")
    if not all(_HOLDER_WORD.fullmatch(word) for word in words):
        raise CardFormError("holder", "card holder's name must be in latin letters, as printed on the card")
    if len(words) < 2:
        raise CardFormError("holder", "enter the card holder's first and last name")
    return name.upper()


def _validate_cvc(cvc: str, pan: str) -> str:
    value = cvc.strip()
    length = 4 if is_amex(pan) else 3
    if len(value) != length or not value.isascii() or not value.isdigit():
        raise CardFormError("cvc", f"CVC must have {length} digits")
    return value
