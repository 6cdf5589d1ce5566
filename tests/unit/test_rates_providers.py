"""Rate providers against local HTTP servers replaying recorded exchange responses."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from greengate.rates import (
    BinanceProvider,
    FixedRateProvider,
    KrakenProvider,
    MedianProvider,
    Quote,
    RateProvider,
    RateUnavailable,
    build_provider,
    median_rate,
)

# --- recorded responses -------------------------------------------------------------------------

BINANCE_PATH = "/api/v3/ticker/price?symbol="
KRAKEN_PATH = "/0/public/Ticker?pair="

BINANCE_BTCRUB = '{"symbol":"BTCRUB","price":"3233561.44000000"}'
BINANCE_BTCUSDT = '{"symbol":"BTCUSDT","price":"67251.01000000"}'
BINANCE_INVALID_SYMBOL = '{"code":-1121,"msg":"Invalid symbol."}'
BINANCE_ILLEGAL_CHARS = (
    '{"code":-1100,"msg":"Illegal characters found in parameter \'symbol\'; '
    "legal range is '^[A-Z0-9-_.]{1,20}$'.\"}"
)
KRAKEN_XBTUSD = json.dumps(
    {
        "error": [],
        "result": {
            "XXBTZUSD": {
                "a": ["67250.10000", "1", "1.000"],
                "b": ["67250.00000", "3", "3.000"],
                "c": ["67249.90000", "0.00150000"],
                "v": ["1234.56789012", "2345.67890123"],
                "p": ["67012.34567", "66987.65432"],
                "t": [23456, 45678],
                "l": ["66500.00000", "66100.00000"],
                "h": ["67500.00000", "67800.00000"],
                "o": "66800.00000",
            }
        },
    }
)
KRAKEN_XBTUSDT = json.dumps(
    {
        "error": [],
        "result": {
            "XBTUSDT": {
                "a": ["67262.50000", "2", "2.000"],
                "b": ["67262.40000", "1", "1.000"],
                "c": ["67262.40000", "0.01000000"],
                "v": ["88.12345678", "190.87654321"],
                "p": ["67100.11111", "67050.22222"],
                "t": [3456, 7890],
                "l": ["66600.00000", "66200.00000"],
                "h": ["67400.00000", "67700.00000"],
                "o": "66900.00000",
            }
        },
    }
)
KRAKEN_UNKNOWN_PAIR = '{"error":["EQuery:Unknown asset pair"]}'


# --- local HTTP server ---------------------------------------------------------------------------


@dataclass
class Route:
    status: int = 200
    body: str = ""
    delay: float = 0.0


@dataclass
class RecordedServer:
    """Serves canned bodies keyed by path+query and records every requested path."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def add(self, path: str, body: str, status: int = 200, delay: float = 0.0) -> None:
        self.routes[path] = Route(status, body, delay)


def _handler(app: RecordedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            app.requests.append(self.path)
            route = app.routes.get(self.path, Route(404, '{"error":"not recorded"}'))
            if route.delay:
                app.release.wait(route.delay)
            payload = route.body.encode()
            try:
                self.send_response(route.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up (timeout tests)
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[RecordedServer]:
    app = RecordedServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(app))
    app.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield app
    finally:
        app.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # Tiny timeout keeps the slow-endpoint tests fast; trust_env=False ignores any proxy settings.
    async with httpx.AsyncClient(timeout=0.2, trust_env=False) as c:
        yield c


# --- fixed ---------------------------------------------------------------------------------------


async def test_fixed_returns_configured_rate() -> None:
    provider = FixedRateProvider({"RUB": Decimal("3233561.44"), "kzt": Decimal("27500000")})
    assert await provider.fetch("BTC", "RUB") == Quote("fixed", "BTC", "RUB", Decimal("3233561.44"))
    assert (await provider.fetch("btc", "KZT")).rate == Decimal("27500000")


async def test_fixed_unknown_currency_or_base() -> None:
    provider = FixedRateProvider({"RUB": Decimal("3233561.44")})
    with pytest.raises(RateUnavailable, match="no fixed rate configured for BTC/KZT"):
        await provider.fetch("BTC", "KZT")
    with pytest.raises(RateUnavailable, match="only BTC"):
        await provider.fetch("ETH", "RUB")


def test_fixed_rejects_bad_configuration() -> None:
    with pytest.raises(TypeError):
        FixedRateProvider({"RUB": 3233561.44})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        FixedRateProvider({"RUB": Decimal("0")})
    with pytest.raises(ValueError):
        FixedRateProvider({"RUB": Decimal("NaN")})


# --- binance -------------------------------------------------------------------------------------


async def test_binance_direct_pair(server: RecordedServer, client: httpx.AsyncClient) -> None:
    server.add(BINANCE_PATH + "BTCRUB", BINANCE_BTCRUB)
    quote = await BinanceProvider(client, server.url).fetch("BTC", "RUB")
    assert quote == Quote("binance", "BTC", "RUB", Decimal("3233561.44"))
    assert isinstance(quote.rate, Decimal)
    assert server.requests == ["/api/v3/ticker/price?symbol=BTCRUB"]


async def test_binance_invalid_symbol(server: RecordedServer, client: httpx.AsyncClient) -> None:
    server.add(BINANCE_PATH + "BTCKZT", BINANCE_INVALID_SYMBOL, status=400)
    with pytest.raises(RateUnavailable, match="invalid symbol BTCKZT") as exc_info:
        await BinanceProvider(client, server.url).fetch("BTC", "KZT")
    assert exc_info.value.source == "binance"


async def test_binance_other_api_error_keeps_message(
    server: RecordedServer, client: httpx.AsyncClient
) -> None:
    server.add(BINANCE_PATH + "BTCRUB", BINANCE_ILLEGAL_CHARS, status=400)
    with pytest.raises(RateUnavailable, match=r"HTTP 400 for BTCRUB: Illegal characters.*code -1100"):
        await BinanceProvider(client, server.url).fetch("BTC", "RUB")


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, "<html>Internal Server Error</html>", "HTTP 500"),
        (503, "", "HTTP 503"),
        (200, "{not json", "malformed JSON"),
        (200, '{"symbol":"BTCRUB","price":NaN}', "malformed JSON"),
        (200, '["BTCRUB","3233561.44"]', "not an object"),
        (200, '{"symbol":"BTCRUB"}', "no price"),
        (200, '{"symbol":"BTCUSDT","price":"67251.01"}', "got 'BTCUSDT'"),
        (200, '{"symbol":"BTCRUB","price":"0.00000000"}', "not positive"),
        (200, '{"symbol":"BTCRUB","price":"-1.00"}', "not a decimal number"),
        (200, '{"symbol":"BTCRUB","price":"NaN"}', "not a decimal number"),
        (200, '{"symbol":"BTCRUB","price":""}', "not a decimal number"),
        (200, '{"symbol":"BTCRUB","price":null}', "unexpected type NoneType"),
        (200, '{"symbol":"BTCRUB","price":true}', "unexpected type bool"),
    ],
)
async def test_binance_bad_responses(
    server: RecordedServer, client: httpx.AsyncClient, status: int, body: str, message: str
) -> None:
    server.add(BINANCE_PATH + "BTCRUB", body, status=status)
    with pytest.raises(RateUnavailable, match=message):
        await BinanceProvider(client, server.url).fetch("BTC", "RUB")


async def test_binance_numeric_price_is_parsed_as_decimal(
    server: RecordedServer, client: httpx.AsyncClient
) -> None:
    server.add(BINANCE_PATH + "BTCRUB", '{"symbol":"BTCRUB","price":3233561.44}')
    quote = await BinanceProvider(client, server.url).fetch("BTC", "RUB")
    assert quote.rate == Decimal("3233561.44")
    assert str(quote.rate) == "3233561.44"  # no binary float rounding on the way


async def test_binance_timeout(server: RecordedServer, client: httpx.AsyncClient) -> None:
    server.add(BINANCE_PATH + "BTCRUB", BINANCE_BTCRUB, delay=2.0)
    with pytest.raises(RateUnavailable, match="timeout"):
        await BinanceProvider(client, server.url).fetch("BTC", "RUB")


async def test_binance_connection_refused(client: httpx.AsyncClient) -> None:
    # Grab a free port and release it so nothing listens there.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RateUnavailable, match="HTTP error requesting"):
        await BinanceProvider(client, f"http://127.0.0.1:{port}").fetch("BTC", "RUB")


async def test_binance_cross_with_constant_leg(server: RecordedServer, client: httpx.AsyncClient) -> None:
    server.add(BINANCE_PATH + "BTCUSDT", BINANCE_BTCUSDT)
    provider = BinanceProvider(client, server.url, cross={"KZT": ("USDT", Decimal("482.37"))})
    quote = await provider.fetch("BTC", "KZT")
    # 67251.01 * 482.37 = 32439869.6937 -> quantized to cents
    assert quote == Quote("binance", "BTC", "KZT", Decimal("32439869.69"))
    assert server.requests == ["/api/v3/ticker/price?symbol=BTCUSDT"]


async def test_binance_cross_with_provider_leg(server: RecordedServer, client: httpx.AsyncClient) -> None:
    server.add(BINANCE_PATH + "BTCUSDT", BINANCE_BTCUSDT)
    server.add(BINANCE_PATH + "BTCRUB", BINANCE_BTCRUB)
    usdt_kzt = FixedRateProvider({"KZT": Decimal("482.37")}, base="USDT")
    provider = BinanceProvider(client, server.url, cross={"KZT": ("USDT", usdt_kzt)})
    assert (await provider.fetch("BTC", "KZT")).rate == Decimal("32439869.69")
    # Currencies without a cross route still use the direct pair.
    assert (await provider.fetch("BTC", "RUB")).rate == Decimal("3233561.44")


async def test_binance_cross_leg_failure(server: RecordedServer, client: httpx.AsyncClient) -> None:
    server.add(BINANCE_PATH + "BTCUSDT", BINANCE_BTCUSDT)
    empty_leg = FixedRateProvider({}, base="USDT")
    provider = BinanceProvider(client, server.url, cross={"KZT": ("USDT", empty_leg)})
    with pytest.raises(RateUnavailable, match="no fixed rate configured for USDT/KZT"):
        await provider.fetch("BTC", "KZT")


async def test_binance_rejects_odd_currency_codes(server: RecordedServer, client: httpx.AsyncClient) -> None:
    with pytest.raises(RateUnavailable, match="unsupported currency code"):
        await BinanceProvider(client, server.url).fetch("BTC", "RUB&symbol=X")
    assert server.requests == []


# --- kraken --------------------------------------------------------------------------------------


async def test_kraken_uses_last_trade_price(server: RecordedServer, client: httpx.AsyncClient) -> None:
    server.add(KRAKEN_PATH + "XBTUSD", KRAKEN_XBTUSD)
    quote = await KrakenProvider(client, server.url).fetch("BTC", "USD")
    assert quote == Quote("kraken", "BTC", "USD", Decimal("67249.9"))
    assert server.requests == ["/0/public/Ticker?pair=XBTUSD"]


async def test_kraken_result_key_differs_from_pair(server: RecordedServer, client: httpx.AsyncClient) -> None:
    server.add(KRAKEN_PATH + "XBTUSDT", KRAKEN_XBTUSDT)
    assert (await KrakenProvider(client, server.url).fetch("BTC", "USDT")).rate == Decimal("67262.4")


async def test_kraken_error_list(server: RecordedServer, client: httpx.AsyncClient) -> None:
    server.add(KRAKEN_PATH + "XBTKZT", KRAKEN_UNKNOWN_PAIR)
    with pytest.raises(RateUnavailable, match="XBTKZT: EQuery:Unknown asset pair"):
        await KrakenProvider(client, server.url).fetch("BTC", "KZT")


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, '{"error":["EService:Unavailable"]}', "HTTP 500"),
        (520, "", "HTTP 520"),
        (200, "<html>maintenance</html>", "malformed JSON"),
        (200, '"XBTUSD"', "not an object"),
        (200, '{"error":"EGeneral:Internal error"}', "EGeneral:Internal error"),
        (200, '{"error":[]}', "exactly one ticker"),
        (200, '{"error":[],"result":{}}', "exactly one ticker"),
        (
            200,
            '{"error":[],"result":{"XXBTZUSD":{"c":["1.0","1"]},"XBTUSD":{"c":["2.0","1"]}}}',
            "exactly one ticker",
        ),
        (200, '{"error":[],"result":{"XXBTZUSD":{"a":["67250.1","1","1.000"]}}}', "no last trade"),
        (200, '{"error":[],"result":{"XXBTZUSD":{"c":[]}}}', "no last trade"),
        (200, '{"error":[],"result":{"XXBTZUSD":["67249.9"]}}', "no last trade"),
        (200, '{"error":[],"result":{"XXBTZUSD":{"c":["0.00000","0"]}}}', "not positive"),
        (200, '{"error":[],"result":{"XXBTZUSD":{"c":["1e400","1"]}}}', "not a decimal number"),
    ],
)
async def test_kraken_bad_responses(
    server: RecordedServer, client: httpx.AsyncClient, status: int, body: str, message: str
) -> None:
    server.add(KRAKEN_PATH + "XBTUSD", body, status=status)
    with pytest.raises(RateUnavailable, match=message):
        await KrakenProvider(client, server.url).fetch("BTC", "USD")


async def test_kraken_timeout(server: RecordedServer, client: httpx.AsyncClient) -> None:
    server.add(KRAKEN_PATH + "XBTUSD", KRAKEN_XBTUSD, delay=2.0)
    with pytest.raises(RateUnavailable, match="kraken: timeout"):
        await KrakenProvider(client, server.url).fetch("BTC", "USD")


# --- median --------------------------------------------------------------------------------------


def fixed(name: str, rate: str | None) -> FixedRateProvider:
    """A fixed provider under another name; rate=None makes it fail."""
    provider = FixedRateProvider({"RUB": Decimal(rate)} if rate is not None else {})
    provider.name = name
    return provider


class Exploding:
    name = "broken"

    async def fetch(self, base: str, quote: str) -> Quote:
        raise KeyError("bug")


async def test_median_odd_count() -> None:
    provider = MedianProvider([fixed("a", "3300000"), fixed("b", "3200000.50"), fixed("c", "3250000.10")])
    quote = await provider.fetch("BTC", "RUB")
    assert quote == Quote("median(a,b,c)", "BTC", "RUB", Decimal("3250000.10"))
    assert provider.name == "median(a,b,c)"


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        ("100.00", "100.01", "100.00"),  # 100.005 -> half-even rounds down to the even cent
        ("100.01", "100.02", "100.02"),  # 100.015 -> rounds up to the even cent
        ("3200000", "3300000", "3250000.00"),
        ("1.001", "1.002", "1.001"),  # 1.0015 would quantize to 1.00, clamped to the lower input
    ],
)
async def test_median_even_count(low: str, high: str, expected: str) -> None:
    provider = MedianProvider([fixed("x", high), fixed("y", low)])
    assert (await provider.fetch("BTC", "RUB")).rate == Decimal(expected)


async def test_median_skips_failing_provider() -> None:
    provider = MedianProvider([fixed("a", "3200000"), fixed("b", None), fixed("c", "3300000"), Exploding()])
    quote = await provider.fetch("BTC", "RUB")
    assert quote.rate == Decimal("3250000.00")
    assert quote.source == "median(a,c)"
    assert provider.name == "median(a,b,c,broken)"


async def test_median_all_failing() -> None:
    provider = MedianProvider([fixed("a", None), Exploding()])
    with pytest.raises(RateUnavailable) as exc_info:
        await provider.fetch("BTC", "RUB")
    message = str(exc_info.value)
    assert "0 of 2 sources for BTC/RUB, need 1" in message
    assert "a: no fixed rate configured" in message
    assert "broken: KeyError" in message


async def test_median_min_sources() -> None:
    providers: list[RateProvider] = [fixed("a", "3200000"), fixed("b", None), fixed("c", "3300000")]
    assert (await MedianProvider(providers, min_sources=2).fetch("BTC", "RUB")).rate == Decimal("3250000.00")
    with pytest.raises(RateUnavailable, match="2 of 3 sources for BTC/RUB, need 3"):
        await MedianProvider(providers, min_sources=3).fetch("BTC", "RUB")


def test_median_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError):
        MedianProvider([])
    with pytest.raises(ValueError):
        MedianProvider([fixed("a", "1")], min_sources=0)
    with pytest.raises(ValueError):
        MedianProvider([fixed("a", "1")], min_sources=2)


async def test_median_fetches_concurrently() -> None:
    started = {"a": asyncio.Event(), "b": asyncio.Event()}

    class WaitsForPeer:
        def __init__(self, name: str, peer: str) -> None:
            self.name = name
            self._peer = peer

        async def fetch(self, base: str, quote: str) -> Quote:
            started[self.name].set()
            await started[self._peer].wait()  # never returns if providers ran one after another
            return Quote(self.name, base, quote, Decimal("100"))

    provider = MedianProvider([WaitsForPeer("a", "b"), WaitsForPeer("b", "a")])
    quote = await asyncio.wait_for(provider.fetch("BTC", "RUB"), timeout=2)
    assert quote.rate == Decimal("100")


async def test_median_over_http_providers(server: RecordedServer, client: httpx.AsyncClient) -> None:
    server.add(BINANCE_PATH + "BTCUSDT", BINANCE_BTCUSDT)
    server.add(KRAKEN_PATH + "XBTUSDT", KRAKEN_XBTUSDT)
    provider = MedianProvider([BinanceProvider(client, server.url), KrakenProvider(client, server.url)])
    quote = await provider.fetch("BTC", "USDT")
    # (67251.01 + 67262.4) / 2 = 67256.705 -> half-even to cents
    assert quote == Quote("median(binance,kraken)", "BTC", "USDT", Decimal("67256.70"))


async def test_median_over_http_with_one_venue_down(
    server: RecordedServer, client: httpx.AsyncClient
) -> None:
    server.add(BINANCE_PATH + "BTCUSDT", BINANCE_BTCUSDT, delay=2.0)
    server.add(KRAKEN_PATH + "XBTUSDT", KRAKEN_XBTUSDT)
    provider = MedianProvider([BinanceProvider(client, server.url), KrakenProvider(client, server.url)])
    quote = await provider.fetch("BTC", "USDT")
    assert quote == Quote("median(kraken)", "BTC", "USDT", Decimal("67262.4"))


rates_strategy = st.lists(
    st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("100000000"), places=8),
    min_size=1,
    max_size=9,
)


@given(rates=rates_strategy, data=st.data())
def test_median_property_bounds_and_order_independence(rates: list[Decimal], data: st.DataObject) -> None:
    result = median_rate(rates)
    assert min(rates) <= result <= max(rates)
    shuffled = data.draw(st.permutations(rates))
    assert median_rate(shuffled) == result


@given(rates=rates_strategy)
def test_median_provider_matches_median_rate(rates: list[Decimal]) -> None:
    providers = [fixed(f"p{i}", str(rate)) for i, rate in enumerate(rates)]
    quote = asyncio.run(MedianProvider(providers).fetch("BTC", "RUB"))
    assert quote.rate == median_rate(rates)
    assert min(rates) <= quote.rate <= max(rates)


def test_median_rate_of_nothing() -> None:
    with pytest.raises(ValueError):
        median_rate([])


# --- registry ------------------------------------------------------------------------------------

FIXED_RATES = {"RUB": Decimal("3233561.44"), "KZT": Decimal("27500000")}


async def test_registry_single_providers(client: httpx.AsyncClient) -> None:
    assert isinstance(build_provider("fixed", client, FIXED_RATES), FixedRateProvider)
    assert isinstance(build_provider(" Binance ", client, FIXED_RATES), BinanceProvider)
    assert isinstance(build_provider("kraken", client, FIXED_RATES), KrakenProvider)
    quote = await build_provider("fixed", client, FIXED_RATES).fetch("BTC", "KZT")
    assert quote.rate == Decimal("27500000")


async def test_registry_median_specs(client: httpx.AsyncClient) -> None:
    assert build_provider("median", client, FIXED_RATES).name == "median(binance,kraken)"
    custom = build_provider("median: binance, kraken ,fixed", client, FIXED_RATES)
    assert isinstance(custom, MedianProvider)
    assert custom.name == "median(binance,kraken,fixed)"


@pytest.mark.parametrize(
    "spec",
    ["", "coinbase", "fixed:rub", "median:", "median:binance,", "median:median", "median:kraken,kraken"],
)
async def test_registry_rejects_unknown_specs(client: httpx.AsyncClient, spec: str) -> None:
    with pytest.raises(ValueError):
        build_provider(spec, client, FIXED_RATES)


async def test_registry_uses_base_urls(server: RecordedServer, client: httpx.AsyncClient) -> None:
    server.add(BINANCE_PATH + "BTCRUB", BINANCE_BTCRUB)
    server.add(KRAKEN_PATH + "XBTRUB", KRAKEN_UNKNOWN_PAIR)
    urls = {"binance": server.url, "kraken": server.url}
    provider = build_provider("median:binance,kraken,fixed", client, {"RUB": Decimal("3233561.40")}, urls)
    quote = await provider.fetch("BTC", "RUB")
    assert quote == Quote("median(binance,fixed)", "BTC", "RUB", Decimal("3233561.42"))
    assert sorted(server.requests) == ["/0/public/Ticker?pair=XBTRUB", "/api/v3/ticker/price?symbol=BTCRUB"]
