"""The client's pg_sig signer against the repository's signature vectors, and its four transports
read back the way the gateway (and any PHP-style server) reads them."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import pytest
from greengate_client.signature import (
    as_params,
    make_signature,
    sign,
    signature_string,
    verify_signature,
)
from greengate_client.wire import (
    TRANSPORTS,
    encode,
    parse_brackets,
    parse_form,
    parse_xml,
    xml_names,
)
from hypothesis import given
from hypothesis import strategies as st

from tests.support.vectors import SIGNATURE_VECTORS

PARAM_VECTORS = [v for v in SIGNATURE_VECTORS if v["kind"] == "params"]
XML_VECTORS = [v for v in SIGNATURE_VECTORS if v["kind"] == "xml"]


@pytest.mark.parametrize("vector", PARAM_VECTORS, ids=lambda v: v["name"])
def test_params_vectors_sign_and_verify(vector: dict[str, Any]) -> None:
    params = as_params(vector["params"])
    assert signature_string(vector["script"], params, vector["secret"]) == vector["sig_string"]
    assert make_signature(vector["script"], params, vector["secret"]) == vector["pg_sig"]
    assert verify_signature(vector["script"], [*params, ("pg_sig", vector["pg_sig"])], vector["secret"])


@pytest.mark.parametrize("vector", PARAM_VECTORS, ids=lambda v: v["name"])
def test_the_form_of_each_vector_parses_to_the_same_signature(vector: dict[str, Any]) -> None:
    params = parse_form(vector["form"])
    assert make_signature(vector["script"], params, vector["secret"]) == vector["pg_sig"]


@pytest.mark.parametrize("vector", XML_VECTORS, ids=lambda v: v["name"])
def test_xml_vectors_verify(vector: dict[str, Any]) -> None:
    parsed = parse_xml(vector["xml"])
    assert signature_string(vector["script"], parsed, vector["secret"]) == vector["sig_string"]
    assert make_signature(vector["script"], parsed, vector["secret"]) == vector["pg_sig"]
    params = [*[(n, v) for n, v in parsed if n != "pg_sig"], ("pg_sig", vector["pg_sig"])]
    assert verify_signature(vector["script"], params, vector["secret"])
    tampered = [(n, v + "x" if n == "pg_salt" else v) for n, v in params]
    assert not verify_signature(vector["script"], tampered, vector["secret"])


def _decode(transport: str, method: str, query: str, body: bytes | None) -> list[tuple[str, Any]]:
    """What a server reads from each transport."""
    if transport == "query":
        assert method == "GET" and body is None
        return parse_brackets(parse_qsl(query, keep_blank_values=True))
    assert method == "POST" and body is not None and not query
    if transport == "form":
        return parse_form(body)
    if transport == "pg_xml":
        [(name, document)] = parse_qsl(body.decode(), keep_blank_values=True)
        assert name == "pg_xml"
        return parse_xml(document)
    data = json.loads(body)

    def from_json(value: Any) -> Any:
        if isinstance(value, dict):
            return [(k, from_json(v)) for k, v in value.items()]
        if isinstance(value, list):
            return [(str(i), from_json(v)) for i, v in enumerate(value)]
        return value

    return from_json(data)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("vector", PARAM_VECTORS, ids=lambda v: v["name"])
def test_every_transport_carries_a_message_that_still_verifies(
    transport: Any, vector: dict[str, Any]
) -> None:
    message = as_params(vector["params"])
    if transport == "pg_xml":
        message = xml_names(message)
    params = sign(vector["script"], message, vector["secret"])
    method, query, body, headers = encode(params, transport)
    received = _decode(transport, method, query, body)
    assert received == params
    assert verify_signature(vector["script"], received, vector["secret"])
    if transport in ("form", "pg_xml"):
        assert headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_each_signed_message_gets_a_fresh_salt() -> None:
    message = as_params({"pg_merchant_id": "1", "pg_payment_id": "5"})
    salts = {dict(sign("get_status2.php", message, "k"))["pg_salt"] for _ in range(50)}
    assert len(salts) == 50
    assert all(len(s) >= 16 for s in salts)


def test_floats_are_refused_as_parameter_values() -> None:
    with pytest.raises(TypeError):
        as_params({"pg_amount": 10.5})


names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,11}", fullmatch=True)
values = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)
leaves = st.lists(st.tuples(names, values), min_size=1, max_size=6, unique_by=lambda p: p[0])
trees = st.lists(
    st.tuples(names, st.one_of(values, leaves)), min_size=1, max_size=6, unique_by=lambda p: p[0]
)


@given(trees, st.sampled_from(TRANSPORTS))
def test_any_message_survives_any_transport_and_tampering_breaks_it(tree: Any, transport: Any) -> None:
    params = sign("init_payment.php", [(f"x{n}", v) for n, v in tree], "secret")
    method, query, body, _ = encode(params, transport)
    received = _decode(transport, method, query, body)
    assert received == params
    assert verify_signature("init_payment.php", received, "secret")
    changed = [(n, v + "!" if n == "pg_salt" else v) for n, v in received]
    assert not verify_signature("init_payment.php", changed, "secret")
