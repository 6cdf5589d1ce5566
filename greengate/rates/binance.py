"""Binance spot last-trade price: GET /api/v3/ticker/price?symbol=BTCRUB."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import httpx

from greengate.rates.provider import (
    Quote,
    RateProvider,
    RateUnavailable,
    currency_code,
    decode_json,
    http_get,
    positive_decimal,
)

DEFAULT_BASE_URL = "https://api.binance.com"
INVALID_SYMBOL = -1121
_CENT = Decimal("0.01")

# Second leg of a cross rate: a constant or another provider asked for `via`/`quote`.
CrossLeg = Decimal | RateProvider


class BinanceProvider:
    """`cross` maps a quote currency without a direct pair to (intermediate, second leg),
    e.g. {"KZT": ("USDT", fixed_usdt_kzt)} prices BTC/KZT as BTCUSDT x USDT/KZT."""

    name: str = "binance"

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str = DEFAULT_BASE_URL,
        cross: Mapping[str, tuple[str, CrossLeg]] | None = None,
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/api/v3/ticker/price"
        self._cross = {currency_code(q, self.name): leg for q, leg in (cross or {}).items()}

    async def fetch(self, base: str, quote: str) -> Quote:
        base = currency_code(base, self.name)
        quote = currency_code(quote, self.name)
        route = self._cross.get(quote)
        if route is None:
            rate = await self._ticker(base + quote)
        else:
            rate = await self._cross_rate(base, quote, *route)
        return Quote(source=self.name, base=base, quote=quote, rate=rate)

    async def _cross_rate(self, base: str, quote: str, via: str, leg: CrossLeg) -> Decimal:
        via = currency_code(via, self.name)
        first = await self._ticker(base + via)
        if isinstance(leg, Decimal):
            second = positive_decimal(leg, self.name, f"{via}/{quote} cross rate")
        else:
            second = (await leg.fetch(via, quote)).rate
        # The product has up to 16 fractional digits; fiat amounts are priced in cents.
        return (first * second).quantize(_CENT, rounding=ROUND_HALF_EVEN)

    async def _ticker(self, symbol: str) -> Decimal:
        response = await http_get(self._client, self.name, self._url, {"symbol": symbol})
        if not response.is_success:
            raise self._error(response, symbol)
        payload = decode_json(response, self.name)
        if not isinstance(payload, dict):
            raise RateUnavailable(self.name, f"unexpected response for {symbol}: not an object")
        if payload.get("symbol", symbol) != symbol:
            raise RateUnavailable(self.name, f"asked for {symbol}, got {payload.get('symbol')!r}")
        if "price" not in payload:
            raise RateUnavailable(self.name, f"no price in response for {symbol}")
        return positive_decimal(payload["price"], self.name, f"{symbol} price")

    def _error(self, response: httpx.Response, symbol: str) -> RateUnavailable:
        # Binance error bodies look like {"code": -1121, "msg": "Invalid symbol."}.
        try:
            body: Any = decode_json(response, self.name)
        except RateUnavailable:
            body = None
        code = body.get("code") if isinstance(body, dict) else None
        if code == INVALID_SYMBOL:
            return RateUnavailable(self.name, f"invalid symbol {symbol} (no such market)")
        detail = f": {body.get('msg')} (code {code})" if isinstance(body, dict) and code is not None else ""
        return RateUnavailable(self.name, f"HTTP {response.status_code} for {symbol}{detail}")
