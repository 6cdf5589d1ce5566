"""Market rates from (recorded) Binance and Kraken answers, cached by the worker, used by the API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from greengate.app import create_app
from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.services.rates import refresh_rates
from greengate.store.models import Rate
from greengate.worker.loop import Worker
from tests.conftest import make_settings
from tests.support.exchange import create_order, make_client, make_direction, make_requisites
from tests.support.servers import LocalServer, Recorded, Reply

MAX_AGE = 3  # seconds a cached rate may be used for

BINANCE_BTCRUB = {"symbol": "BTCRUB", "price": "3233561.44000000"}
KRAKEN_XBTRUB = {
    "error": [],
    "result": {
        "XXBTZRUB": {
            "a": ["3240100.00000", "1", "1.000"],
            "b": ["3239500.00000", "2", "2.000"],
            "c": ["3239886.80000", "0.00150000"],
            "v": ["12.84120017", "101.19373427"],
            "p": ["3238912.61234", "3235120.40012"],
            "t": [1310, 9822],
            "l": ["3201000.00000", "3188000.00000"],
            "h": ["3251200.00000", "3262700.00000"],
            "o": "3220000.00000",
        }
    },
}
MEDIAN = Decimal("3236724.12")  # mean of the two last trades, 3233561.44 and 3239886.80


class Upstreams:
    """Binance and Kraken on one local server; `failing` makes both answer like an outage."""

    def __init__(self) -> None:
        self.failing = False
        self.server = LocalServer(self.respond)

    def respond(self, request: Recorded) -> Reply:
        if self.failing:
            return Reply(502, b"<html>502 Bad Gateway</html>", "text/html")
        if request.path == "/api/v3/ticker/price" and request.query == {"symbol": "BTCRUB"}:
            return Reply.json(BINANCE_BTCRUB)
        if request.path == "/0/public/Ticker" and request.query == {"pair": "XBTRUB"}:
            return Reply.json(KRAKEN_XBTRUB)
        return Reply.json({"code": -1121, "msg": "Invalid symbol."}, status=400)


@pytest.fixture
def upstreams() -> Iterator[Upstreams]:
    up = Upstreams()
    with up.server:
        yield up


@pytest.fixture
async def client(
    database_url: str, tmp_path: Path, clean_db: None, upstreams: Upstreams
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        database_url,
        tmp_path,
        binance_base_url=upstreams.server.url,
        kraken_base_url=upstreams.server.url + "/",
        rate_max_age_seconds=MAX_AGE,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            c.app = app  # type: ignore[attr-defined]
            yield c


async def stored_rate(rt: Runtime) -> Rate:
    async with rt.db.transaction() as session:
        row = await session.scalar(select(Rate).where(Rate.source == "median"))
    assert row is not None
    return row


async def test_worker_refreshes_median_rate_and_orders_lock_it(
    client: httpx.AsyncClient, upstreams: Upstreams
) -> None:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    who = await make_client(rt)
    await make_direction(rt, rate_source="median")
    await make_requisites(rt, 2)
    worker = Worker(rt, name="rates")

    (before,) = (await client.get("/api/v2/directions", headers=who.headers)).json()
    assert before["current_course"] is None
    refused = await create_order(client, who, "9999")
    assert refused.status_code == 503 and refused.json()["code"] == "rate_unavailable"

    await worker.refresh_rates()
    refreshed_at = time.monotonic()

    assert {(r.path, tuple(r.query.values())) for r in upstreams.server.received()} == {
        ("/api/v3/ticker/price", ("BTCRUB",)),
        ("/0/public/Ticker", ("XBTRUB",)),
    }
    row = await stored_rate(rt)
    assert (row.base, row.quote, Decimal(row.rate), row.error) == ("BTC", "RUB", MEDIAN, None)
    (direction,) = (await client.get("/api/v2/directions", headers=who.headers)).json()
    assert Decimal(str(direction["current_course"])) == MEDIAN
    response = await create_order(client, who, "9999")
    assert response.status_code == 200, response.text
    order = response.json()["items"][0]
    assert Decimal(order["exchange_rate"]) == MEDIAN
    expected = (Decimal(9999) / MEDIAN * Decimal("0.83")).quantize(Decimal("0.00000001"), ROUND_DOWN)
    assert order["amount_receivable"] == f"{expected:.8f}"

    # The upstreams go down: the cached rate stays in use while it is fresh enough.
    upstreams.failing = True
    await worker.refresh_rates()
    row = await stored_rate(rt)
    assert Decimal(row.rate) == MEDIAN and row.error and "502" in row.error
    assert time.monotonic() - refreshed_at < MAX_AGE - 0.5, "machine too slow for this timing"
    kept = await create_order(client, who, "9999")
    assert kept.status_code == 200, kept.text
    assert Decimal(kept.json()["items"][0]["exchange_rate"]) == MEDIAN

    # ... and no longer once it is older than rate_max_age_seconds.
    await asyncio.sleep(MAX_AGE + 0.2 - (time.monotonic() - refreshed_at))
    stale = await create_order(client, who, "9999")
    assert stale.status_code == 503
    assert stale.json()["code"] == "rate_unavailable" and stale.json()["error"]
    (direction,) = (await client.get("/api/v2/directions", headers=who.headers)).json()
    assert direction["current_course"] is None

    # The upstreams recover: the next refresh makes the direction usable again.
    upstreams.failing = False
    await worker.refresh_rates()
    assert (await stored_rate(rt)).error is None
    assert (await create_order(client, who, "9999")).status_code == 200


async def test_median_uses_what_answers_when_one_venue_fails(
    client: httpx.AsyncClient, upstreams: Upstreams
) -> None:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    who = await make_client(rt)
    await make_direction(rt, rate_source="median")
    await make_requisites(rt, 1)
    original = upstreams.respond

    def kraken_down(request: Recorded) -> Reply:
        if request.path.startswith("/0/"):
            return Reply.json({"error": ["EService:Unavailable"]})
        return original(request)

    upstreams.server.respond = kraken_down
    now = utcnow()
    outcomes = await refresh_rates(rt, now)

    assert outcomes == {"median:BTC/RUB": "3233561.44"}
    row = await stored_rate(rt)
    assert (Decimal(row.rate), row.fetched_at) == (Decimal("3233561.44"), now)
    response = await create_order(client, who, "9999")
    assert response.json()["items"][0]["amount_receivable"] == "0.00256657"
