"""Bad requests to the Exchange API: each gets its own error in the spec's shape and writes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio

from greengate.app import create_app
from greengate.runtime import Runtime
from tests.conftest import OPERATOR_TOKEN, make_settings
from tests.support.exchange import (
    TESTNET_WALLET,
    WALLET,
    Client,
    create_order,
    empty_tables,
    make_client,
    make_direction,
    make_requisites,
    table_contents,
)

CARD = "2200700100000000"
BAD_CHECKSUM_WALLET = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5"
CREATE = "/api/v2/order/create"
CHECK = "/api/v2/order/check"
CANCEL = "/api/v2/order/cancel"
TRANSFERS = "/api/v2/internal/transfers"
RANGE_ERROR = "from_amount must be between 300 and 150000000"


@pytest.fixture
async def clean_db(database_url: str) -> None:
    """The suite's cleanup, done with DELETE instead of TRUNCATE (much faster on PostgreSQL)."""
    await empty_tables(database_url)


@dataclass
class World:
    client: Client
    order_id: str
    max_request_bytes: int


@dataclass
class Shared:
    http: httpx.AsyncClient
    rt: Runtime
    world: World


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    """One app and one arranged world for every case here: a refused request changes nothing, so the
    cases cannot disturb each other (and each one proves it by comparing the whole database).

    The world: a client, an enabled RUB card direction (300..150000000), a disabled KZT one and an
    open order on the only requisite."""
    await empty_tables(database_url)
    app = create_app(make_settings(database_url, tmp_path_factory.mktemp("bad-input")))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            rt: Runtime = app.state.runtime
            who = await make_client(rt)
            await make_direction(rt)
            await make_direction(rt, "kzt", "KZT", status=0)
            await make_requisites(rt, 1)
            response = await create_order(http, who, "9999")
            assert response.status_code == 200, response.text
            order_id = response.json()["items"][0]["order_id"]
            yield Shared(http, rt, World(who, order_id, rt.settings.max_request_bytes))


Body = bytes | Callable[[World], bytes]


def dumped(data: Any) -> bytes:
    return json.dumps(data).encode()


def create_body(**fields: Any) -> bytes:
    """A create request with the given fields replaced; a field set to ... is left out."""
    data: dict[str, Any] = {"payment_method": "card", "wallet": WALLET, "from_amount": "9999"}
    data.update(fields)
    return dumped({k: v for k, v in data.items() if v is not ...})


def raw_amount(literal: str) -> bytes:
    """A create request whose from_amount is the given JSON literal, exactly as written."""
    return f'{{"payment_method": "card", "wallet": "{WALLET}", "from_amount": {literal}}}'.encode()


def with_open_order(*extra: Any) -> Callable[[World], bytes]:
    """order_id list that names the open order (which must stay untouched) next to bad items."""
    return lambda w: dumped({"order_id": [w.order_id, *extra]})


def oversized(w: World) -> bytes:
    filler = "x" * (w.max_request_bytes + 1)
    return dumped({"payment_method": "card", "wallet": WALLET, "from_amount": "9999", "note": filler})


@dataclass(frozen=True)
class Case:
    id: str
    path: str
    body: Body | None
    status: int
    code: str
    method: str = "POST"
    auth: str = "client"  # client | none | wrong | operator
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def create_case(id: str, body: Body, status: int, code: str, **kw: Any) -> Case:
    return Case(id, CREATE, body, status, code, **kw)


def id_cases(path: str) -> list[Case]:
    name = path.rsplit("/", 1)[1]
    # Ids that are not numbers are unknown ids, not bad requests (tests/e2e/test_exchange_wire_details.py).
    bad = [("too_many_ids", {"order_id": [str(i) for i in range(1, 502)]})]
    cases = [Case(f"{name}-{label}", path, dumped(data), 400, "invalid_field") for label, data in bad]
    cases += [
        Case(f"{name}-missing_order_id", path, dumped({}), 400, "missing_field"),
        Case(f"{name}-null_order_id", path, dumped({"order_id": None}), 400, "missing_field"),
        Case(f"{name}-malformed_json", path, b'{"order_id": [', 400, "malformed_json"),
        Case(
            f"{name}-integer_over_4300_digits",
            path,
            b'{"order_id": ' + b"1" * 5000 + b"}",
            400,
            "malformed_json",
        ),
        Case(f"{name}-exponent_number", path, b'{"order_id": 1e99999999999}', 400, "invalid_number"),
        Case(f"{name}-json_array", path, b'["1"]', 400, "malformed_json"),
        Case(
            f"{name}-form_encoded",
            path,
            b"order_id=1",
            415,
            "unsupported_media_type",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        Case(f"{name}-missing_api_secret", path, with_open_order(), 401, "missing_api_secret", auth="none"),
        Case(f"{name}-wrong_api_secret", path, with_open_order(), 401, "invalid_api_secret", auth="wrong"),
    ]
    return cases


CASES: list[Case] = [
    # Body framing.
    create_case("malformed_json", b'{"payment_method": "card",', 400, "malformed_json"),
    create_case("json_array", dumped([{"payment_method": "card"}]), 400, "malformed_json"),
    create_case("json_string", b'"card"', 400, "malformed_json"),
    create_case("empty_body", b"", 400, "malformed_json"),
    create_case("whitespace_body", b"  \n ", 400, "malformed_json"),
    create_case("invalid_utf8", b'{"payment_method": "\xff\xfe"}', 400, "malformed_json"),
    create_case("nan_literal", raw_amount("NaN"), 400, "malformed_json"),
    create_case("infinity_literal", raw_amount("Infinity"), 400, "malformed_json"),
    create_case("negative_infinity_literal", raw_amount("-Infinity"), 400, "malformed_json"),
    create_case("deeply_nested", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "malformed_json"),
    create_case(
        "form_encoded",
        f"payment_method=card&wallet={WALLET}&from_amount=9999".encode(),
        415,
        "unsupported_media_type",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    create_case(
        "json_as_text_plain",
        create_body(),
        415,
        "unsupported_media_type",
        headers={"Content-Type": "text/plain"},
    ),
    create_case("over_max_request_bytes", oversized, 413, "payload_too_large"),
    # from_amount.
    create_case("amount_negative_string", create_body(from_amount="-100"), 400, "invalid_amount"),
    create_case("amount_negative_number", create_body(from_amount=-100), 400, "invalid_amount"),
    create_case("amount_nan_string", create_body(from_amount="NaN"), 400, "invalid_amount"),
    create_case("amount_infinity_string", create_body(from_amount="Infinity"), 400, "invalid_amount"),
    create_case("amount_exponent_string", create_body(from_amount="1e3"), 400, "invalid_amount"),
    create_case("amount_three_decimals_string", create_body(from_amount="10.123"), 400, "invalid_amount"),
    create_case("amount_three_decimals_number", raw_amount("10.555"), 400, "invalid_amount"),
    create_case("amount_boolean", create_body(from_amount=True), 400, "invalid_amount"),
    create_case("amount_object", create_body(from_amount={"value": "9999"}), 400, "invalid_amount"),
    create_case("amount_list", create_body(from_amount=["9999"]), 400, "invalid_amount"),
    create_case("amount_huge_string", create_body(from_amount="9" * 40), 400, "invalid_amount"),
    create_case("amount_huge_number", create_body(from_amount=int("9" * 40)), 400, "invalid_amount"),
    create_case("amount_huge_exponent_number", raw_amount("1e99999999999"), 400, "invalid_number"),
    create_case("amount_tiny_exponent_number", raw_amount("1e-99999999999"), 400, "invalid_number"),
    create_case("amount_large_exponent_number", raw_amount("9e100000000"), 400, "invalid_number"),
    create_case("amount_small_exponent_number", raw_amount("9.999e3"), 400, "invalid_number"),
    create_case("amount_integer_over_4300_digits", raw_amount("9" * 5000), 400, "malformed_json"),
    create_case("amount_empty_string", create_body(from_amount=""), 400, "invalid_amount"),
    create_case("amount_thousands_separator", create_body(from_amount="9 999"), 400, "invalid_amount"),
    create_case("amount_decimal_comma", create_body(from_amount="9999,50"), 400, "invalid_amount"),
    create_case("amount_hex", create_body(from_amount="0x10"), 400, "invalid_amount"),
    create_case("amount_leading_plus", create_body(from_amount="+9999"), 400, "invalid_amount"),
    create_case(
        "amount_below_min", create_body(from_amount="299.99"), 422, "amount_out_of_range", error=RANGE_ERROR
    ),
    create_case(
        "amount_above_max",
        create_body(from_amount="150000000.01"),
        422,
        "amount_out_of_range",
        error=RANGE_ERROR,
    ),
    create_case("amount_zero", create_body(from_amount="0"), 422, "amount_out_of_range", error=RANGE_ERROR),
    # wallet.
    create_case("wallet_number", create_body(wallet=12345), 400, "invalid_field"),
    create_case("wallet_list", create_body(wallet=[WALLET]), 400, "invalid_field"),
    create_case("wallet_too_long", create_body(wallet="bc1q" + "q" * 120), 400, "invalid_field"),
    create_case("wallet_bad_checksum", create_body(wallet=BAD_CHECKSUM_WALLET), 422, "invalid_wallet"),
    create_case("wallet_not_an_address", create_body(wallet="not-a-wallet"), 422, "invalid_wallet"),
    create_case("wallet_testnet_on_mainnet", create_body(wallet=TESTNET_WALLET), 422, "invalid_wallet"),
    create_case("wallet_empty_without_default", create_body(wallet=""), 422, "no_default_wallet"),
    # payment_method.
    create_case("unknown_payment_method", create_body(payment_method="sbp"), 422, "unknown_direction"),
    create_case("payment_method_number", create_body(payment_method=1), 400, "invalid_field"),
    create_case("disabled_direction", create_body(payment_method="kzt"), 422, "direction_disabled"),
    # Missing fields.
    create_case("missing_payment_method", create_body(payment_method=...), 400, "missing_field"),
    create_case("missing_wallet", create_body(wallet=...), 400, "missing_field"),
    create_case("missing_from_amount", create_body(from_amount=...), 400, "missing_field"),
    create_case("null_from_amount", create_body(from_amount=None), 400, "missing_field"),
    create_case("empty_object", dumped({}), 400, "missing_field"),
    # Credentials and headers.
    create_case("missing_api_secret", create_body(), 401, "missing_api_secret", auth="none"),
    create_case("wrong_api_secret", create_body(), 401, "invalid_api_secret", auth="wrong"),
    create_case(
        "idempotency_key_too_long",
        create_body(),
        400,
        "invalid_idempotency_key",
        headers={"Idempotency-Key": "k" * 201},
    ),
    Case(
        "directions_missing_api_secret", "/api/v2/directions", None, 401, "missing_api_secret", "GET", "none"
    ),
    Case(
        "directions_wrong_api_secret", "/api/v2/directions", None, 401, "invalid_api_secret", "GET", "wrong"
    ),
    # check and cancel.
    *id_cases(CHECK),
    *id_cases(CANCEL),
    # Unknown endpoints.
    Case("unknown_get_endpoint", "/api/v2/unknown", None, 404, "not_found", "GET"),
    Case("unknown_post_endpoint", "/api/v2/order/refund", dumped({"order_id": "1"}), 404, "not_found"),
    # Incoming transfers (operator).
    Case(
        "transfer_missing_token",
        TRANSFERS,
        dumped({"requisite": CARD, "amount": "9999", "currency": "RUB"}),
        401,
        "invalid_operator_token",
        auth="none",
    ),
    Case(
        "transfer_amount_not_a_number",
        TRANSFERS,
        dumped({"requisite": CARD, "amount": "lots", "currency": "RUB"}),
        400,
        "invalid_amount",
        auth="operator",
    ),
    Case(
        "transfer_unsupported_currency",
        TRANSFERS,
        dumped({"requisite": CARD, "amount": "9999", "currency": "XYZ"}),
        400,
        "unsupported_currency",
        auth="operator",
    ),
    Case(
        "transfer_missing_requisite",
        TRANSFERS,
        dumped({"amount": "9999", "currency": "RUB"}),
        400,
        "missing_field",
        auth="operator",
    ),
    Case(
        "transfer_bad_received_at",
        TRANSFERS,
        dumped({"requisite": CARD, "amount": "9999", "currency": "RUB", "received_at": "yesterday"}),
        400,
        "invalid_request",
        auth="operator",
    ),
]


def auth_headers(case: Case, w: World) -> dict[str, str]:
    if case.auth == "client":
        return dict(w.client.headers)
    if case.auth == "wrong":
        return {"Api-Secret": "not-the-secret"}
    if case.auth == "operator":
        return {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    return {}


def assert_error_shape(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"response", "result", "error", "code"}
    assert (body["response"], body["result"], body["code"]) == ("error", "false", code)
    assert isinstance(body["error"], str) and body["error"].strip()
    return body


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_request_gets_its_error_and_writes_nothing(shared: Shared, case: Case) -> None:
    world = shared.world
    headers = {"Content-Type": "application/json", **auth_headers(case, world), **case.headers}
    content = case.body(world) if callable(case.body) else case.body
    before = await table_contents(shared.rt)

    response = await shared.http.request(case.method, case.path, content=content, headers=headers)

    body = assert_error_shape(response, case.status, case.code)
    if case.error is not None:
        assert body["error"] == case.error
    assert await table_contents(shared.rt) == before


@pytest.mark.asyncio(loop_scope="module")
async def test_oversized_chunked_body_is_refused_and_writes_nothing(shared: Shared) -> None:
    world = shared.world

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"payment_method": "card", "wallet": "' + WALLET.encode() + b'", "note": "'
        for _ in range(world.max_request_bytes // 50_000 + 1):
            yield b"x" * 50_000
        yield b'", "from_amount": "9999"}'

    before = await table_contents(shared.rt)

    response = await shared.http.post(
        CREATE, content=chunks(), headers={"Content-Type": "application/json", **world.client.headers}
    )

    assert "content-length" not in response.request.headers
    assert_error_shape(response, 413, "payload_too_large")
    assert await table_contents(shared.rt) == before


@pytest.mark.asyncio(loop_scope="module")
async def test_wrong_method_on_an_endpoint_gets_the_error_shape(shared: Shared) -> None:
    response = await shared.http.get(CREATE, headers=shared.world.client.headers)

    assert response.status_code == 405
    body = response.json()
    assert (body["response"], body["result"]) == ("error", "false")
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["code"], str) and body["code"]


@pytest.mark.asyncio(loop_scope="module")
async def test_content_type_with_charset_is_accepted(shared: Shared) -> None:
    world = shared.world

    response = await shared.http.post(
        CHECK,
        content=dumped({"order_id": world.order_id}),
        headers={"Content-Type": "application/json; charset=utf-8", **world.client.headers},
    )

    assert response.status_code == 200, response.text
    assert [o["order_id"] for o in response.json()["data"]["orders"]] == [world.order_id]


# The tests below arrange their own database (app_client wipes it), so they come after the shared ones.


async def test_json_number_amount_with_two_decimals_is_accepted(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt, min_amount="10")
    await make_requisites(rt, 1)

    response = await app_client.post(
        CREATE,
        content=f'{{"payment_method": "card", "wallet": "{WALLET}", "from_amount": 10.5}}'.encode(),
        headers={"Content-Type": "application/json", **who.headers},
    )

    assert response.status_code == 200, response.text
    order = response.json()["items"][0]
    assert (order["amount_payable"], order["amount_receivable"]) == ("10.50", "0.00000269")


async def test_amount_with_trailing_zero_decimals_is_accepted(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    who = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)

    response = await create_order(app_client, who, "9999.000")

    assert response.status_code == 200, response.text
    assert response.json()["items"][0]["amount_payable"] == "9999"
