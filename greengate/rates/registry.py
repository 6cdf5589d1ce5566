"""Build a provider from a config spec: "fixed", "binance", "kraken", "median" or "median:a,b,..."."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal

import httpx

from greengate.rates.binance import DEFAULT_BASE_URL as BINANCE_URL
from greengate.rates.binance import BinanceProvider
from greengate.rates.fixed import FixedRateProvider
from greengate.rates.kraken import DEFAULT_BASE_URL as KRAKEN_URL
from greengate.rates.kraken import KrakenProvider
from greengate.rates.median import MedianProvider
from greengate.rates.provider import RateProvider

DEFAULT_MEDIAN = ("binance", "kraken")


def build_provider(
    spec: str,
    client: httpx.AsyncClient,
    fixed_rates: Mapping[str, Decimal],
    base_urls: Mapping[str, str] | None = None,
) -> RateProvider:
    """`base_urls` overrides endpoints by provider name, e.g. {"binance": "http://127.0.0.1:9000"}."""
    urls = base_urls or {}
    factories: dict[str, Callable[[], RateProvider]] = {
        "fixed": lambda: FixedRateProvider(fixed_rates),
        "binance": lambda: BinanceProvider(client, urls.get("binance", BINANCE_URL)),
        "kraken": lambda: KrakenProvider(client, urls.get("kraken", KRAKEN_URL)),
    }
    kind, has_list, members = spec.strip().lower().partition(":")
    if kind == "median":
        names = [n.strip() for n in members.split(",")] if has_list else list(DEFAULT_MEDIAN)
        if not names or "" in names:
            raise ValueError(f"rate source spec {spec!r}: empty provider name in median list")
        if len(set(names)) != len(names):
            raise ValueError(f"rate source spec {spec!r}: duplicate provider in median list")
        unknown = [n for n in names if n not in factories]
        if unknown:
            raise ValueError(f"rate source spec {spec!r}: unknown provider(s) {', '.join(unknown)}")
        return MedianProvider([factories[n]() for n in names])
    if has_list or kind not in factories:
        raise ValueError(f"unknown rate source spec {spec!r}; use fixed, binance, kraken or median[:a,b]")
    return factories[kind]()
