"""Market rate providers for BTC against fiat; results are Decimal and cached by the caller."""

from greengate.rates.binance import BinanceProvider
from greengate.rates.fixed import FixedRateProvider
from greengate.rates.kraken import KrakenProvider
from greengate.rates.median import MedianProvider, median_rate
from greengate.rates.provider import Quote, RateProvider, RateUnavailable
from greengate.rates.registry import build_provider

__all__ = [
    "BinanceProvider",
    "FixedRateProvider",
    "KrakenProvider",
    "MedianProvider",
    "Quote",
    "RateProvider",
    "RateUnavailable",
    "build_provider",
    "median_rate",
]
