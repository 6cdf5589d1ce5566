"""Rate provider interface, errors and helpers shared by the HTTP providers."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import httpx

_PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_CURRENCY_CODE = re.compile(r"[A-Z0-9]{2,10}")


@dataclass(frozen=True)
class Quote:
    """Price of 1 `base` expressed in `quote`, e.g. BTC/RUB = 3233561.44."""

    source: str
    base: str
    quote: str
    rate: Decimal


class RateUnavailable(Exception):
    """A provider could not produce a trustworthy rate; `str()` explains why."""

    def __init__(self, source: str, reason: str) -> None:
        # Both parts go to Exception.args so the error pickles and copies cleanly.
        super().__init__(source, reason)
        self.source = source
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


class RateProvider(Protocol):
    name: str

    async def fetch(self, base: str, quote: str) -> Quote: ...


def currency_code(code: str, source: str) -> str:
    normalized = code.strip().upper()
    if not _CURRENCY_CODE.fullmatch(normalized):
        raise RateUnavailable(source, f"unsupported currency code {code!r}")
    return normalized


def positive_decimal(value: object, source: str, field: str) -> Decimal:
    """Validate an exchange-supplied number; only plain decimal strings and exact numbers pass."""
    if isinstance(value, str):
        if not _PLAIN_DECIMAL.fullmatch(value):
            raise RateUnavailable(source, f"{field} is not a decimal number: {value[:40]!r}")
        try:
            number = Decimal(value)
        except InvalidOperation as exc:  # pragma: no cover - the regex already guards this
            raise RateUnavailable(source, f"{field} is not a decimal number") from exc
    elif isinstance(value, Decimal) or (isinstance(value, int) and not isinstance(value, bool)):
        number = Decimal(value)
    else:
        raise RateUnavailable(source, f"{field} has unexpected type {type(value).__name__}")
    if not number.is_finite() or number <= 0:
        raise RateUnavailable(source, f"{field} is not positive: {number}")
    return number


async def http_get(
    client: httpx.AsyncClient, source: str, url: str, params: dict[str, str]
) -> httpx.Response:
    """GET with transport failures mapped to RateUnavailable; status handling is left to the caller."""
    try:
        return await client.get(url, params=params)
    except httpx.TimeoutException as exc:
        raise RateUnavailable(source, f"timeout requesting {url}") from exc
    except httpx.HTTPError as exc:
        raise RateUnavailable(source, f"HTTP error requesting {url}: {exc.__class__.__name__}") from exc


def _reject_constant(name: str) -> Any:
    # json accepts NaN/Infinity by default and would hand back floats.
    raise ValueError(f"non-finite JSON constant {name}")


def decode_json(response: httpx.Response, source: str) -> Any:
    try:
        return json.loads(response.text, parse_float=Decimal, parse_constant=_reject_constant)
    except ValueError as exc:
        raise RateUnavailable(source, f"malformed JSON (HTTP {response.status_code})") from exc
