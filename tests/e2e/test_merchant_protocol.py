"""Merchant API protocol over real HTTP: every transport, signatures both ways, merchant identification,
replays, parameter validation and hostile XML, checked against an independent signer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from sqlalchemy import select

from greengate.clock import utcnow
from greengate.domain.card_rules import validate_card_form
from greengate.runtime import Runtime
from greengate.services import payment_flow
from greengate.store.models import Payment
from greengate.worker.loop import Worker
from tests.support.merchant_api import (
    TRANSPORTS,
    Answer,
    CallbackServer,
    Shop,
    as_params,
    make_shop,
    parse_brackets,
    parse_xml_message,
    send,
    set_merchant,
    signature_string,
    signed,
    table_counts,
)
from tests.support.vectors import SIGNATURE_VECTORS

VECTORS = SIGNATURE_VECTORS
CYRILLIC = "Оплата заказа №7 — «Кофе»"


@pytest.fixture
async def shop(rt: Runtime, app_client: httpx.AsyncClient) -> Shop:
    return await make_shop(rt, app_client)


async def payments_of(rt: Runtime, merchant_id: int) -> list[Payment]:
    async with rt.db.transaction() as session:
        rows = await session.scalars(
            select(Payment).where(Payment.merchant_id == merchant_id).order_by(Payment.id)
        )
        return list(rows)


async def drain(worker: Worker) -> None:
    for _ in range(50):
        if await worker.run_once() == 0:
            return
    raise AssertionError("the worker never became idle")


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_the_test_signer_reproduces_the_reference_vectors(vector: dict) -> None:
    """The tests' own signer is right, so agreeing with it means agreeing with the reference."""
    if vector["kind"] == "xml":
        params = parse_xml_message(vector["xml"].encode())
    else:
        params = parse_brackets(parse_qsl(vector["form"], keep_blank_values=True))
        as_given = as_params(vector["params"])
        assert signature_string(vector["script"], as_given, vector["secret"]) == vector["sig_string"]
    assert signature_string(vector["script"], params, vector["secret"]) == vector["sig_string"]


# --- transports and signatures --------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_init_payment_by_each_transport(rt: Runtime, shop: Shop, transport: str) -> None:
    fields = {
        "pg_amount": "1500.50",
        "pg_currency": "KZT",
        "pg_description": CYRILLIC,
        "pg_order_id": f"T-{transport}",
        "pg_user_contact_email": "buyer@example.kz",
        "Cart_ID": "77",
    }
    answer = await shop.init(transport=transport, **fields)
    answer.assert_ok(shop.secret)
    assert not answer.verifies(shop.secret, "payment.php")
    assert len(answer["pg_salt"]) >= 8
    assert answer["pg_payment_id"].isdigit()
    assert answer["pg_redirect_url_type"] == "need data"
    [payment] = await payments_of(rt, shop.merchant_id)
    assert (payment.amount, payment.currency, payment.description) == (150050, "KZT", CYRILLIC)
    assert payment.order_id == f"T-{transport}" and payment.user_email == "buyer@example.kz"
    assert json.loads(payment.extra_params) == [["Cart_ID", "77"]]

    # The same message with a value changed after signing, and one signed with another secret.
    before = await table_counts(rt)
    tampered = shop.message("init_payment.php", {**fields, "pg_order_id": "T2"})
    tampered = [(n, "1600" if n == "pg_amount" else v) for n, v in tampered]
    (await shop.send_raw("init_payment.php", tampered, transport)).assert_error(100, shop.secret)
    foreign = signed(
        "init_payment.php", as_params({"pg_merchant_id": str(shop.merchant_id), **fields}), "x" * 20
    )
    (await shop.send_raw("init_payment.php", foreign, transport)).assert_error(100, shop.secret)
    assert await table_counts(rt) == before


async def test_raw_xml_body_and_json_numbers(rt: Runtime, shop: Shop) -> None:
    """A raw text/xml body, and JSON numbers signed as their exact text with null meaning absent."""
    (await shop.init(transport="xml", pg_order_id="raw-xml")).assert_ok(shop.secret)
    fields = as_params(
        {
            "pg_merchant_id": str(shop.merchant_id),
            "pg_amount": "300.50",
            "pg_description": "json",
            "pg_salt": "j1",
        }
    )
    message = signed("init_payment.php", fields, shop.secret)
    body = json.dumps({n: v for n, v in message}).replace('"300.50"', "300.50")
    body = body[:-1] + ', "pg_user_phone": null}'
    response = await shop.client.post(
        "/init_payment.php", content=body.encode(), headers={"Content-Type": "application/json"}
    )
    Answer.read(response, "init_payment.php").assert_ok(shop.secret)
    payments = await payments_of(rt, shop.merchant_id)
    assert [p.amount for p in payments] == [10000, 30050]
    assert payments[1].user_phone is None


async def test_nested_receipt_positions_by_form_xml_and_json(rt: Runtime, shop: Shop) -> None:
    positions = [
        {"count": "1", "name": "Чай", "tax_type": "0", "price": "100"},
        {"count": "2", "name": "Кофе", "tax_type": "0", "price": "100"},
    ]
    base = {"pg_merchant_id": str(shop.merchant_id), "pg_amount": "300", "pg_description": "receipt"}
    # Brackets and JSON index the positions 0, 1; XML names the elements (digits are not XML names).
    indexed = as_params({**base, "pg_receipt_positions": positions})
    named = as_params({**base, "pg_receipt_positions": [("position", p) for p in positions]})
    strings = {
        signature_string("init_payment.php", [*params, ("pg_salt", "same")], shop.secret)
        for params in (indexed, named)
    }
    assert len(strings) == 1
    assert ";1;Чай;100;0;2;Кофе;100;0;" in strings.pop()

    sigs = []
    for transport, params in (("form", indexed), ("query", indexed), ("pg_xml", named), ("json", indexed)):
        message = signed("init_payment.php", params, shop.secret)
        sigs.append(message[-1][1])
        (await shop.send_raw("init_payment.php", message, transport)).assert_ok(shop.secret)
    payments = await payments_of(rt, shop.merchant_id)
    receipts = [json.loads(p.receipt or "null") for p in payments]
    assert receipts == [positions] * 4
    assert len(set(sigs)) == 4  # fresh salts, yet every one verified

    # A position changed after signing is caught inside the nesting too.
    before = await table_counts(rt)
    message = signed("init_payment.php", indexed, shop.secret)
    changed = as_params({**base, "pg_receipt_positions": [positions[0], {**positions[1], "price": "1"}]})
    tampered = [*changed, *message[len(indexed) :]]  # the original pg_salt and pg_sig
    for transport in ("query", "json"):
        (await shop.send_raw("init_payment.php", tampered, transport)).assert_error(100, shop.secret)
    assert await table_counts(rt) == before


async def test_unknown_or_missing_merchant_is_answered_unsigned(rt: Runtime, shop: Shop) -> None:
    before = await table_counts(rt)
    for merchant in (None, "999999", "abc", "", str(shop.merchant_id) + "0"):
        fields = {"pg_amount": "100", "pg_description": "x"}
        params = as_params(fields if merchant is None else {"pg_merchant_id": merchant, **fields})
        message = signed("init_payment.php", params, shop.secret)
        for transport in ("form", "query"):
            answer = await shop.send_raw("init_payment.php", message, transport)
            answer.assert_error(101, None)
    assert await table_counts(rt) == before


async def test_disabled_merchant_gets_110_signed(rt: Runtime, shop: Shop) -> None:
    payment_id = await shop.init_ok()
    await set_merchant(rt, shop.merchant_id, active=False)
    before = await table_counts(rt)
    (await shop.init()).assert_error(110, shop.secret)
    (await shop.call("get_status2.php", {"pg_payment_id": payment_id})).assert_error(110, shop.secret)
    # The signature is checked first: a disabled merchant with a wrong signature is still 100.
    bad = signed(
        "init_payment.php", as_params({"pg_merchant_id": str(shop.merchant_id), "pg_amount": "1"}), "no"
    )
    (await shop.send_raw("init_payment.php", bad)).assert_error(100, shop.secret)
    assert await table_counts(rt) == before
    await set_merchant(rt, shop.merchant_id, active=True)
    (await shop.init()).assert_ok(shop.secret)


async def test_replayed_request_gets_its_first_answer_by_any_transport(rt: Runtime, shop: Shop) -> None:
    message = shop.message(
        "init_payment.php", {"pg_amount": "100", "pg_description": "once", "pg_order_id": "R1"}
    )
    first = (await shop.send_raw("init_payment.php", message)).assert_ok(shop.secret)
    before = await table_counts(rt)
    for transport in ("form", "query", "json"):
        again = (await shop.send_raw("init_payment.php", message, transport)).assert_ok(shop.secret)
        assert again["pg_payment_id"] == first["pg_payment_id"]
        assert again["pg_sig"] != first["pg_sig"]
    assert await table_counts(rt) == before
    assert len(await payments_of(rt, shop.merchant_id)) == 1
    # A salt is no nonce: a read with the same salt is answered.
    salt = next(v for n, v in message if n == "pg_salt")
    (await shop.call("get_status2.php", {"pg_order_id": "R1"}, salt=salt)).assert_ok(shop.secret)


BAD_FIELDS = [
    ("pg_amount", "abc"),
    ("pg_amount", "-1"),
    ("pg_amount", "0"),
    ("pg_amount", "1.234"),
    ("pg_amount", "1,5"),
    ("pg_amount", "9" * 16),
    ("pg_amount", "1" * 40),
    ("pg_amount", ""),
    ("pg_description", ""),
    ("pg_currency", "XXX"),
    ("pg_lifetime", "10"),
    ("pg_lifetime", str(10**9)),
    ("pg_language", "de"),
    ("pg_request_method", "PUT"),
    ("pg_success_url_method", "X"),
    ("pg_check_url", "ftp://x"),
    ("pg_result_url", "/relative/result.php"),
    ("pg_testing_mode", "2"),
    ("pg_order_id", "o" * 51),
    ("pg_user_contact_email", "not-an-email"),
]


async def test_missing_or_malformed_parameter_is_200_naming_it(rt: Runtime, shop: Shop) -> None:
    before = await table_counts(rt)
    problems = []
    for name, value in BAD_FIELDS:
        for transport in ("form", "json"):
            fields = {"pg_amount": "100", "pg_description": "x", name: value}
            answer = await shop.call("init_payment.php", fields, transport=transport)
            try:
                answer.assert_error(200, shop.secret, name)
            except AssertionError as exc:
                problems.append(f"{name}={value[:20]!r} by {transport}: {exc}")
    assert not problems, "\n".join(problems)
    assert await table_counts(rt) == before


async def test_accepted_amount_forms(rt: Runtime, shop: Shop) -> None:
    for text in ("100", "100.0", "100.5", "0.01", "2500.00"):
        (await shop.init(pg_amount=text)).assert_ok(shop.secret)
    amounts = [p.amount for p in await payments_of(rt, shop.merchant_id)]
    assert amounts == [10000, 10000, 10050, 1, 250000]


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE request [<!ENTITY a "lollollollollollollollollollol">'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
    + "]><request><pg_merchant_id>{mid}</pg_merchant_id><pg_amount>100</pg_amount>"
    "<pg_description>&i;</pg_description><pg_salt>bomb</pg_salt><pg_sig>x</pg_sig></request>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE request [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<request><pg_merchant_id>{mid}</pg_merchant_id><pg_amount>100</pg_amount>"
    "<pg_description>&xxe;</pg_description><pg_salt>xxe</pg_salt><pg_sig>x</pg_sig></request>"
)
DTD_ONLY = (
    '<?xml version="1.0"?><!DOCTYPE request SYSTEM "http://127.0.0.1:9/evil.dtd">'
    "<request><pg_merchant_id>{mid}</pg_merchant_id><pg_amount>100</pg_amount>"
    "<pg_description>d</pg_description><pg_salt>dtd</pg_salt><pg_sig>x</pg_sig></request>"
)
NOT_XML = "<request><pg_merchant_id>{mid}</pg_merchant_id><pg_amount>100</request>"


def _xml_error(response: httpx.Response, reason: str) -> Answer:
    """The transport's refusal: a well-formed XML error (before the merchant is known: unsigned);
    an oversized body is refused with 413 as it arrives."""
    status = 413 if reason == "larger than" else 200
    answer = Answer.read(response, "init_payment.php", status=status)
    assert (answer.status, answer.error_code) == ("error", 200), answer.params
    assert reason in answer.description, answer.description
    assert "root:" not in response.text and "lollol" not in response.text
    return answer


@pytest.mark.parametrize(
    ("document", "reason"),
    [(BILLION_LAUGHS, "DTD"), (EXTERNAL_ENTITY, "DTD"), (DTD_ONLY, "DTD"), (NOT_XML, "malformed XML")],
    ids=["bomb", "xxe", "dtd", "broken"],
)
async def test_hostile_xml_gets_a_well_formed_xml_error(
    rt: Runtime, shop: Shop, document: str, reason: str
) -> None:
    xml = document.replace("{mid}", str(shop.merchant_id))
    before = await table_counts(rt)
    as_field = await shop.client.post(
        "/init_payment.php",
        content=urlencode({"pg_xml": xml}).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    raw = await shop.client.post(
        "/init_payment.php", content=xml.encode(), headers={"Content-Type": "text/xml; charset=utf-8"}
    )
    for response in (as_field, raw):
        _xml_error(response, reason)
    assert await table_counts(rt) == before


async def test_oversized_body_gets_an_xml_error(rt: Runtime, shop: Shop) -> None:
    before = await table_counts(rt)
    fields = {"pg_amount": "100", "pg_description": "x" * 1_100_000}
    message = shop.message("init_payment.php", fields)
    for transport in ("form", "multipart", "json", "pg_xml"):
        _xml_error(await send(shop.client, "/init_payment.php", message, transport), "larger than")
    # Without a Content-Length (chunked), counted while reading.
    chunks = [b"pg_description=", *([b"y" * 65536] * 20)]

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    response = await shop.client.post(
        "/init_payment.php", content=body(), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    _xml_error(response, "larger than")
    assert await table_counts(rt) == before


async def test_extra_parameters_are_signed_and_echoed_in_callbacks(rt: Runtime, shop: Shop) -> None:
    extras = {"sdk": "pythonsdk", "order_note": "подарок & bow", "Cart_ID": "77"}
    base = {"pg_merchant_id": str(shop.merchant_id), "pg_amount": "100", "pg_description": "x"}
    # Signed without the extras, sent with them: the extras are part of the signature.
    without = signed("init_payment.php", as_params(base), shop.secret)
    sent = [*without[:-1], *as_params(extras), without[-1]]
    before = await table_counts(rt)
    (await shop.send_raw("init_payment.php", sent)).assert_error(100, shop.secret)
    assert await table_counts(rt) == before

    with CallbackServer(shop.secret) as server:
        payment_id = await shop.init_ok(**extras, pg_result_url=server.url("/shop/result.php"))
        card = validate_card_form("4405645000006150", "12", "2030", "TEST USER", "123", date.today())
        async with rt.db.transaction() as session:
            await payment_flow.submit_card(session, rt, payment_id, card, utcnow())
        await drain(Worker(rt))
        [result] = server.received()
    assert result.verifies(shop.secret)
    assert [(n, result[n]) for n in extras] == list(extras.items())
    assert result["pg_result"] == "1"


async def test_answer_is_signed_with_the_script_name_of_the_request_path(rt: Runtime, shop: Shop) -> None:
    payment_id = await shop.init_ok(pg_order_id="S-1")
    for script in ("get_status.php", "get_status2.php", "get_status3.php"):
        for transport in ("form", "query"):
            answer = await shop.call(script, {"pg_payment_id": str(payment_id)}, transport=transport)
            answer.assert_ok(shop.secret)
            others = {"get_status.php", "get_status2.php", "get_status3.php", "init_payment.php"} - {script}
            assert not any(answer.verifies(shop.secret, other) for other in others)
    # A request signed for another script is refused, and the refusal is signed with this path's name.
    message = shop.message("get_status.php", {"pg_payment_id": str(payment_id)})
    response = await send(shop.client, "/get_status2.php", message, "form")
    Answer.read(response, "get_status2.php").assert_error(100, shop.secret)
    # Parameters an endpoint does not use are ignored but still signed.
    answer = await shop.call(
        "get_status2.php", {"pg_payment_id": str(payment_id), "pg_currency": "KZT", "pg_amount": "5"}
    )
    assert answer.assert_ok(shop.secret)["pg_order_id"] == "S-1"


async def test_merchant_id_in_the_url_of_a_post(rt: Runtime, shop: Shop) -> None:
    """Query parameters and body parameters form one message, query first."""
    for transport in ("form", "multipart", "json"):
        message = shop.message("init_payment.php", {"pg_amount": "100", "pg_description": "split"})
        assert message[0] == ("pg_merchant_id", str(shop.merchant_id))
        path = f"/init_payment.php?pg_merchant_id={shop.merchant_id}"
        response = await send(shop.client, path, message[1:], transport)
        Answer.read(response, "init_payment.php").assert_ok(shop.secret)
    assert len(await payments_of(rt, shop.merchant_id)) == 3
