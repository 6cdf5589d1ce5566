"""Median over several providers, so a single bad or stale venue cannot set the price."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal

from greengate.rates.provider import Quote, RateProvider, RateUnavailable, currency_code

_CENT = Decimal("0.01")
log = logging.getLogger(__name__)


def median_rate(rates: Sequence[Decimal]) -> Decimal:
    """Middle value for an odd count. For an even count, the mean of the two middle values
    quantized to 0.01 with ROUND_HALF_EVEN, clamped to those two values so that inputs with more
    than two decimals can never yield a result outside the range they span."""
    if not rates:
        raise ValueError("median of no rates")
    ordered = sorted(rates)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    low, high = ordered[middle - 1], ordered[middle]
    mean = ((low + high) / 2).quantize(_CENT, rounding=ROUND_HALF_EVEN)
    return min(max(mean, low), high)


class MedianProvider:
    """`name` lists every configured provider; a returned Quote's `source` lists only those
    that answered, e.g. "median(binance,fixed)" when kraken failed."""

    def __init__(self, providers: Sequence[RateProvider], min_sources: int = 1) -> None:
        if not providers:
            raise ValueError("MedianProvider needs at least one provider")
        if not 1 <= min_sources <= len(providers):
            raise ValueError(f"min_sources must be between 1 and {len(providers)}, got {min_sources}")
        self._providers = tuple(providers)
        self._min_sources = min_sources
        self.name = f"median({','.join(p.name for p in self._providers)})"

    async def fetch(self, base: str, quote: str) -> Quote:
        base = currency_code(base, self.name)
        quote = currency_code(quote, self.name)
        results = await asyncio.gather(
            *(p.fetch(base, quote) for p in self._providers), return_exceptions=True
        )
        quotes: list[tuple[str, Decimal]] = []
        failures: list[str] = []
        for provider, result in zip(self._providers, results, strict=True):
            if isinstance(result, Quote):
                quotes.append((provider.name, result.rate))
            elif isinstance(result, RateUnavailable):
                failures.append(str(result))
            elif isinstance(result, Exception):
                # An unexpected error in one provider must not take down the others' answer.
                log.warning("rate provider %s failed unexpectedly", provider.name, exc_info=result)
                failures.append(f"{provider.name}: {result.__class__.__name__}: {result}")
            else:  # cancellation and other BaseExceptions are not ours to swallow
                raise result
        if len(quotes) < self._min_sources:
            detail = "; ".join(failures) or "no provider answered"
            raise RateUnavailable(
                self.name,
                f"{len(quotes)} of {len(self._providers)} sources for {base}/{quote}, "
                f"need {self._min_sources} ({detail})",
            )
        source = f"median({','.join(name for name, _ in quotes)})"
        return Quote(source=source, base=base, quote=quote, rate=median_rate([r for _, r in quotes]))
