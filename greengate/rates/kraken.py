"""Kraken public ticker: GET /0/public/Ticker?pair=XBTUSD."""

from __future__ import annotations

import httpx

from greengate.rates.provider import (
    Quote,
    RateUnavailable,
    currency_code,
    decode_json,
    http_get,
    positive_decimal,
)

DEFAULT_BASE_URL = "https://api.kraken.com"

# Kraken's own asset codes where they differ from the common ones.
_KRAKEN_ASSET = {"BTC": "XBT"}


class KrakenProvider:
    """Uses the last trade price (`c[0]`), not the bid/ask mid: Binance's ticker/price is also a
    last trade, so a median over both compares like with like, and one-sided books cannot skew it."""

    name: str = "kraken"

    def __init__(self, client: httpx.AsyncClient, base_url: str = DEFAULT_BASE_URL) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/0/public/Ticker"

    async def fetch(self, base: str, quote: str) -> Quote:
        base = currency_code(base, self.name)
        quote = currency_code(quote, self.name)
        pair = _KRAKEN_ASSET.get(base, base) + _KRAKEN_ASSET.get(quote, quote)
        response = await http_get(self._client, self.name, self._url, {"pair": pair})
        if not response.is_success:
            raise RateUnavailable(self.name, f"HTTP {response.status_code} for {pair}")
        payload = decode_json(response, self.name)
        if not isinstance(payload, dict):
            raise RateUnavailable(self.name, f"unexpected response for {pair}: not an object")
        errors = payload.get("error")
        if errors:
            # Kraken reports failures with HTTP 200 and e.g. ["EQuery:Unknown asset pair"].
            shown = "; ".join(map(str, errors)) if isinstance(errors, list) else str(errors)
            raise RateUnavailable(self.name, f"{pair}: {shown}")
        result = payload.get("result")
        # The result key is Kraken's canonical name ("XXBTZUSD" for "XBTUSD"), so take the only entry.
        if not isinstance(result, dict) or len(result) != 1:
            raise RateUnavailable(self.name, f"expected exactly one ticker in result for {pair}")
        (ticker,) = result.values()
        last = ticker.get("c") if isinstance(ticker, dict) else None
        if not isinstance(last, list) or not last:
            raise RateUnavailable(self.name, f"no last trade price for {pair}")
        rate = positive_decimal(last[0], self.name, f"{pair} last trade price")
        return Quote(source=self.name, base=base, quote=quote, rate=rate)
