"""Money in integer minor units; decimal strings parsed with Decimal, never float."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, InvalidOperation

from greengate.domain.errors import InvalidAmount

# Fraction digits per currency (ISO 4217 minor units; BTC counted in satoshi).
EXPONENTS: dict[str, int] = {
    "RUB": 2,
    "KZT": 2,
    "USD": 2,
    "EUR": 2,
    "KGS": 2,
    "UZS": 2,
    "USDT": 2,
    "BTC": 8,
}

# Plain decimal notation only: no sign, exponent, separators, NaN or Infinity.
_DECIMAL_TEXT = re.compile(r"^(0|[1-9][0-9]*)(\.[0-9]+)?$")
# Refuse absurd inputs before Decimal sees them (keeps parsing O(1) and storage in BIGINT).
_MAX_INTEGER_DIGITS = 15
_MAX_FRACTION_DIGITS = 100


def exponent(currency: str) -> int:
    try:
        return EXPONENTS[currency]
    except KeyError:
        raise InvalidAmount(f"unsupported currency {currency}", code="unsupported_currency") from None


@dataclass(frozen=True, order=True)
class Money:
    minor: int
    currency: str

    def __post_init__(self) -> None:
        exponent(self.currency)

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"currency mismatch: {self.currency} vs {other.currency}")

    def to_decimal(self) -> Decimal:
        return to_major(self.minor, self.currency)

    def __str__(self) -> str:
        return f"{format_minor(self.minor, self.currency)} {self.currency}"


def parse_decimal_text(raw: object, *, field: str = "amount", max_places: int | None = None) -> Decimal:
    """Parse a decimal given as text (or an exact Decimal/int from a JSON parser) strictly."""
    if isinstance(raw, bool):
        raise InvalidAmount(f"{field} must be a decimal string", field=field)
    if isinstance(raw, int):
        text = str(raw)
    elif isinstance(raw, Decimal):
        if not raw.is_finite():
            raise InvalidAmount(f"{field} must be a finite number", field=field)
        # A JSON number like 1e99999999999 is a few bytes but would format to that many digits.
        if raw.adjusted() >= _MAX_INTEGER_DIGITS:
            raise InvalidAmount(f"{field} is too large", field=field)
        if -int(raw.as_tuple().exponent) > _MAX_FRACTION_DIGITS:
            raise InvalidAmount(f"{field} has too many decimal places", field=field)
        text = format(raw, "f")
    elif isinstance(raw, str):
        text = raw.strip()
    else:
        raise InvalidAmount(f"{field} must be a decimal string", field=field)
    if not _DECIMAL_TEXT.match(text):
        raise InvalidAmount(
            f"{field} must be a non-negative decimal number like 5000 or 5000.50", field=field
        )
    integer, _, fraction = text.partition(".")
    if len(integer) > _MAX_INTEGER_DIGITS:
        raise InvalidAmount(f"{field} is too large", field=field)
    if max_places is not None and len(fraction.rstrip("0")) > max_places:
        raise InvalidAmount(f"{field} has more than {max_places} decimal places", field=field)
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regex already guarantees a valid literal
        raise InvalidAmount(f"{field} is not a number", field=field) from None


def parse_amount(raw: object, currency: str, *, field: str = "amount") -> int:
    """Decimal text in major units → integer minor units, refusing any rounding."""
    places = exponent(currency)
    value = parse_decimal_text(raw, field=field, max_places=places)
    return int(value.scaleb(places))


def to_major(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-exponent(currency))


def format_minor(minor: int | Decimal, currency: str, *, trim: bool = False) -> str:
    """Minor units → major-unit text with the currency's fraction digits ("0.00256657").

    With trim, trailing zero fraction digits are dropped ("9999", "100.5").
    """
    places = exponent(currency)
    units = int(minor)  # a database's SUM may hand over a whole Decimal
    if units != minor:
        raise ValueError(f"{minor!r} is not a whole number of minor units")
    # Integer arithmetic: exact, and several times cheaper than a Decimal on the busiest responses.
    whole, fraction = divmod(abs(units), 10**places)
    text = f"{'-' if units < 0 else ''}{whole}.{fraction:0{places}d}" if places else f"{units}"
    if trim and "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def quantize_down(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)
