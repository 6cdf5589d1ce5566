"""Odd input never gives a 5xx nor writes anything: hypothesis-generated console query strings and
Exchange order fields, plus the cases that used to fail (lone surrogate and NUL in order/create,
"²" as a page or merchant number, the last representable day as a "to" date)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greengate.app import create_app
from greengate.runtime import Runtime
from tests.conftest import make_settings
from tests.support.console import ConsoleClient, make_admin
from tests.support.exchange import Client, empty_tables, make_client, make_direction, table_contents

LIST_PAGES = [
    "/admin/orders",
    "/admin/payments",
    "/admin/payouts",
    "/admin/refunds",
    "/admin/transfers",
    "/admin/callbacks",
    "/admin/merchants",
    "/admin/ledger",
    "/admin/audit",
    "/admin/requisites",
    "/admin/cards",
]
FILTERS = ["page", "merchant", "status", "q", "date_from", "date_to", "payment_method", "kind", "reason"]
TRIED: dict[str, int] = {"console query": 0, "order/create": 0}


@dataclass
class World:
    http: httpx.AsyncClient
    rt: Runtime
    console: ConsoleClient
    client: Client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    await empty_tables(database_url)
    app = create_app(make_settings(database_url, tmp_path_factory.mktemp("fuzz")))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            rt: Runtime = app.state.runtime
            await make_admin(rt, "fuzz@example.com")
            console = ConsoleClient(http)
            assert (await console.login("fuzz@example.com")).status_code == 303
            client = await make_client(rt)
            await make_direction(rt)
            yield World(http, rt, console, client)


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.mark.parametrize(
    "query", [{"page": "²"}, {"merchant": "²"}, {"date_to": "9999-12-31"}, {"date_from": "9999-12-31"}]
)
@pytest.mark.parametrize("path", LIST_PAGES)
async def test_console_lists_take_odd_filters_without_error(
    world: World, path: str, query: dict[str, str]
) -> None:
    response = await world.console.get(path, **query)
    assert response.status_code == 200, (path, query, response.status_code)


@pytest.mark.parametrize("value", ["\ud800", "card\x00", "\udfff\ud800"])
@pytest.mark.parametrize("field", ["payment_method", "wallet"])
async def test_order_create_refuses_unstorable_text_without_writing(
    world: World, field: str, value: str
) -> None:
    before = await table_contents(world.rt)
    body = {
        "payment_method": "card_rub",
        "wallet": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
        "from_amount": 1000,
    }
    body[field] = value
    response = await world.http.post(
        "/api/v2/order/create",
        content=_json(body),
        headers={**world.client.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_field"
    assert await table_contents(world.rt) == before


def _json(data: dict[str, object]) -> bytes:
    import json

    # ensure_ascii keeps lone surrogates as \\ud800 escapes, as a client's JSON encoder would send them.
    return json.dumps(data, ensure_ascii=True).encode()


# Text with the characters that break things: controls, surrogates, non-ASCII digits, huge numbers.
ODD_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["²", "٣", "9999-12-31", "0001-01-01", "-1", "99999999999999999999", "\x00", "1e9"]),
    st.integers().map(str),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(LIST_PAGES), query=st.dictionaries(st.sampled_from(FILTERS), ODD_TEXT, max_size=4)
)
async def test_console_query_strings_never_give_5xx(world: World, path: str, query: dict[str, str]) -> None:
    TRIED["console query"] += 1
    response = await world.console.get(path, **query)
    assert response.status_code < 500, (path, query)


FIELD_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=3),
    st.sampled_from(["card_rub", "\ud800", "\x00", "300", "1e3", "NaN"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.fixed_dictionaries(
        {},
        optional={"payment_method": FIELD_VALUE, "wallet": FIELD_VALUE, "from_amount": FIELD_VALUE},
    )
)
async def test_order_create_fields_never_give_5xx(world: World, body: dict[str, object]) -> None:
    TRIED["order/create"] += 1
    response = await world.http.post(
        "/api/v2/order/create",
        content=_json(body),
        headers={**world.client.headers, "Content-Type": "application/json"},
    )
    assert response.status_code < 500, (body, response.text)
