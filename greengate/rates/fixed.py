"""Operator-configured static rates (development, fallback, or a median participant)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from greengate.rates.provider import Quote, RateUnavailable, currency_code


class FixedRateProvider:
    """Rates keyed by quote currency: {"RUB": Decimal("3233561.44")} means 1 `base` = 3233561.44 RUB."""

    name: str = "fixed"

    def __init__(self, rates: Mapping[str, Decimal], base: str = "BTC") -> None:
        self._base = currency_code(base, self.name)
        self._rates: dict[str, Decimal] = {}
        for currency, rate in rates.items():
            # Floats would silently carry binary rounding error into money calculations.
            if not isinstance(rate, Decimal):
                raise TypeError(f"fixed rate for {currency} must be Decimal, got {type(rate).__name__}")
            if not rate.is_finite() or rate <= 0:
                raise ValueError(f"fixed rate for {currency} must be positive, got {rate}")
            self._rates[currency_code(currency, self.name)] = rate

    async def fetch(self, base: str, quote: str) -> Quote:
        base = currency_code(base, self.name)
        quote = currency_code(quote, self.name)
        if base != self._base:
            raise RateUnavailable(self.name, f"only {self._base} rates are configured, not {base}")
        rate = self._rates.get(quote)
        if rate is None:
            raise RateUnavailable(self.name, f"no fixed rate configured for {base}/{quote}")
        return Quote(source=self.name, base=base, quote=quote, rate=rate)
