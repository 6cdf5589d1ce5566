"""Locked rates for exchange directions: read from the database cache, refreshed by the worker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain.errors import InvalidRequest, Unavailable
from greengate.domain.pricing import quantize_rate
from greengate.rates import RateUnavailable, build_provider
from greengate.runtime import Runtime
from greengate.store.models import Direction, Rate

log = structlog.get_logger(__name__)
FIXED = "fixed"


@dataclass(frozen=True)
class LockedRate:
    rate: Decimal
    source: str
    fetched_at: datetime | None


def inline_fixed_rate(source: str) -> Decimal | None:
    """`fixed:3233561.44` pins a direction's rate; plain `fixed` takes GREENGATE_FIXED_RATES."""
    if not source.startswith(FIXED + ":"):
        return None
    try:
        rate = Decimal(source.split(":", 1)[1])
    except InvalidOperation:
        raise InvalidRequest(f"bad fixed rate in {source!r}", code="invalid_rate_source") from None
    if not rate.is_finite() or rate <= 0:
        raise InvalidRequest(f"bad fixed rate in {source!r}", code="invalid_rate_source")
    return quantize_rate(rate)


def validate_rate_source(source: str) -> str:
    source = source.strip()
    if source == FIXED or inline_fixed_rate(source) is not None:
        return source
    name = source.split(":", 1)[0]
    if name not in ("binance", "kraken", "median"):
        raise InvalidRequest(
            "rate source must be fixed, fixed:<rate>, binance, kraken, median or median:<a>,<b>",
            code="invalid_rate_source",
        )
    return source


@dataclass(frozen=True)
class CachedRate:
    rate: str
    fetched_at: datetime


def lock_rate(
    rt: Runtime, source: str, base: str, quote: str, cached: CachedRate | None, now: datetime
) -> LockedRate:
    """The rate an order of a direction (rate source, BTC/fiat pair) locks now, given the cached
    market rate of that source (None when there is none)."""
    pinned = inline_fixed_rate(source)
    if pinned is not None:
        return LockedRate(pinned, source, None)
    if source == FIXED:
        rate = rt.settings.fixed_rate_map().get(quote)
        if rate is None:
            raise Unavailable(f"no fixed rate for {quote}", code="rate_unavailable")
        return LockedRate(quantize_rate(rate), FIXED, None)
    max_age = timedelta(seconds=rt.settings.rate_max_age_seconds)
    if cached is None or now - cached.fetched_at > max_age:
        raise Unavailable(f"the {base}/{quote} rate is not available right now", code="rate_unavailable")
    return LockedRate(Decimal(cached.rate), source, cached.fetched_at)


async def current_rate(session: AsyncSession, rt: Runtime, direction: Direction, now: datetime) -> LockedRate:
    source, base, quote = direction.rate_source, direction.to_currency, direction.from_currency
    cached = None
    if source != FIXED and inline_fixed_rate(source) is None:
        row = await session.scalar(
            select(Rate).where(Rate.source == source, Rate.base == base, Rate.quote == quote)
        )
        cached = CachedRate(row.rate, row.fetched_at) if row is not None else None
    return lock_rate(rt, source, base, quote, cached, now)


async def refresh_rates(rt: Runtime, now: datetime) -> dict[str, str]:
    """Fetch every market-rate source used by a direction and cache it; returns source → outcome."""
    async with rt.db.transaction() as session:
        pairs = {
            (d.rate_source, d.to_currency, d.from_currency)
            for d in await session.scalars(select(Direction))
            if d.rate_source != FIXED and inline_fixed_rate(d.rate_source) is None
        }
    outcomes: dict[str, str] = {}
    for source, base, quote in sorted(pairs):
        key = f"{source}:{base}/{quote}"
        try:
            provider = build_provider(
                source,
                rt.http,
                rt.settings.fixed_rate_map(),
                {"binance": rt.settings.binance_base_url, "kraken": rt.settings.kraken_base_url},
            )
            quote_ = await provider.fetch(base, quote)
            rate, error = str(quantize_rate(quote_.rate)), None
        except (RateUnavailable, ValueError) as exc:
            rate, error = None, str(exc) or type(exc).__name__
            log.warning("rate_refresh_failed", source=source, pair=f"{base}/{quote}", error=error)
        async with rt.db.transaction() as session:
            row = await session.scalar(
                select(Rate).where(Rate.source == source, Rate.base == base, Rate.quote == quote)
            )
            if row is None:
                if rate is None:
                    outcomes[key] = f"error: {error}"
                    continue
                row = Rate(source=source, base=base, quote=quote, rate=rate, fetched_at=now)
                session.add(row)
            if rate is not None:
                row.rate, row.fetched_at, row.error, row.error_at = rate, now, None, None
            else:
                row.error, row.error_at = error, now
        outcomes[key] = rate if rate is not None else f"error: {error}"
    return outcomes
