"""Merchant API transport codec: every transport yields the same Params; hostile input is refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from greengate.api.dispatch import incoming_of
from greengate.api.merchant.codec import (
    MAX_JSON_DEPTH,
    MAX_PARAMS,
    MalformedRequest,
    PayloadTooLarge,
    parse_form_body,
    parse_json,
    parse_multipart,
    parse_query,
    parse_xml,
    read_params,
    render_form,
    render_query,
    render_xml,
)
from greengate.domain.errors import InvalidRequest
from greengate.domain.params import MAX_DEPTH, Params, params_to_pairs
from greengate.domain.signature import sign, verify
from tests.support.vectors import SIGNATURE_VECTORS

VECTORS = SIGNATURE_VECTORS

SCRIPT = "init_payment.php"
SECRET = "SeCrEt-key_42"
SMALL_LIMIT = 4096
BOUNDARY = "gg-test-boundary"

# --- the echo app --------------------------------------------------------------------------------


def _jsonable(params: Params) -> list[Any]:
    return [[name, value if isinstance(value, str) else _jsonable(value)] for name, value in params]


def _from_jsonable(data: list[Any]) -> Params:
    return [(name, value if isinstance(value, str) else _from_jsonable(value)) for name, value in data]


async def _echo(request: Request, max_bytes: int) -> Response:
    try:
        params = read_params(await incoming_of(request), max_bytes=max_bytes)
    except InvalidRequest as exc:
        return JSONResponse({"code": exc.code, "message": exc.message, "type": type(exc).__name__}, 400)
    if request.url.path.endswith("/xml"):
        return Response(render_xml(params), media_type="text/xml; charset=utf-8")
    return JSONResponse({"params": _jsonable(params)})


async def echo(request: Request) -> Response:
    return await _echo(request, 1_000_000)


async def echo_small(request: Request) -> Response:
    return await _echo(request, SMALL_LIMIT)


app = Starlette(
    routes=[
        Route("/small", echo_small, methods=["GET", "POST"]),
        Route("/{path:path}", echo, methods=["GET", "POST", "PUT"]),
    ]
)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        yield c


def params_of(response: httpx.Response) -> Params:
    assert response.status_code == 200, response.text
    return _from_jsonable(response.json()["params"])


def error_of(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 400, response.text
    data: dict[str, str] = response.json()
    return data


# --- one logical request, every transport -------------------------------------------------------

RECEIPT: Params = [
    ("0", [("name", "Чай"), ("count", "1")]),
    ("1", [("name", "Кофе"), ("count", "2")]),
]
UNSIGNED: Params = [
    ("pg_merchant_id", "82"),
    ("pg_amount", "1500.50"),
    ("pg_description", "Оплата заказа №1001 — «Кофе» & <чай> 100%+1"),
    ("pg_salt", "Zq81xK"),
    ("pg_user_ip", ""),
    ("pg_testing_mode", "1"),
    ("pg_shop", [("name", "Магазин"), ("city", "Алматы")]),
    ("pg_receipt_positions", RECEIPT),
    ("tag", "a"),
    ("tag", "b"),
]
LOGICAL: Params = [*UNSIGNED, ("pg_sig", sign(SCRIPT, UNSIGNED, SECRET))]
# XML element names cannot be list indexes ("0", "1"), so the XML transports carry the same message
# with its receipt positions as repeated elements, which is a different (equally signable) structure.
XML_RECEIPT: Params = [("position", item) for _, item in RECEIPT]
XML_UNSIGNED: Params = [
    (name, XML_RECEIPT if name == "pg_receipt_positions" else value) for name, value in UNSIGNED
]
XML_LOGICAL: Params = [*XML_UNSIGNED, ("pg_sig", sign(SCRIPT, XML_UNSIGNED, SECRET))]


def multipart(fields: Sequence[tuple[str, str | bytes]], file: tuple[str, str] | None = None) -> bytes:
    parts = []
    for name, value in fields:
        data = value.encode() if isinstance(value, str) else value
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        parts.append(head + data + b"\r\n")
    if file is not None:
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{file[0]}"; filename="{file[1]}"\r\n'
            "Content-Type: text/plain\r\n\r\n"
        ).encode()
        parts.append(head + b"file content\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


MULTIPART_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
FORM_TYPE = "application/x-www-form-urlencoded"


def json_text() -> str:
    """LOGICAL as a JSON object: numbers, true, null, arrays of objects and a duplicate key."""

    def s(value: str) -> str:
        return json.dumps(value, ensure_ascii=False)

    sig = LOGICAL[-1][1]
    assert isinstance(sig, str)
    return (
        '{"pg_merchant_id": 82, "pg_amount": 1500.50, '
        f'"pg_description": {s(str(LOGICAL[2][1]))}, "pg_salt": "Zq81xK", "pg_user_phone": null, '
        '"pg_user_ip": "", "pg_testing_mode": true, "pg_shop": {"name": "Магазин", "city": "Алматы"}, '
        '"pg_receipt_positions": [{"name": "Чай", "count": 1}, {"name": "Кофе", "count": "2"}], '
        f'"tag": "a", "tag": "b", "pg_sig": {s(sig)}}}'
    )


def json_object(params: Params) -> str:
    """Params as a JSON object built pair by pair, so repeated names become duplicate keys."""
    members = (
        f"{json.dumps(name)}: {json.dumps(value) if isinstance(value, str) else json_object(value)}"
        for name, value in params
    )
    return "{" + ", ".join(members) + "}"


def raw_utf8_form() -> bytes:
    # Unescaped UTF-8 as some clients send it; only the characters that are syntax are escaped.
    return "&".join(
        f"{quote(k, safe='[]')}={quote(v, safe='«»—№ ').replace(' ', '+')}"
        for k, v in params_to_pairs(LOGICAL)
    ).encode()


TRANSPORTS: dict[str, dict[str, Any]] = {
    "get_query": {"method": "GET", "url": "/init_payment.php?" + render_query(LOGICAL)},
    "form": {"content": render_form(LOGICAL), "headers": {"content-type": FORM_TYPE}},
    "form_raw_utf8": {"content": raw_utf8_form(), "headers": {"content-type": FORM_TYPE}},
    "form_without_content_type": {"content": render_form(LOGICAL)},
    "multipart": {
        "content": multipart(params_to_pairs(LOGICAL)),
        "headers": {"content-type": MULTIPART_TYPE},
    },
    "json_body": {"content": json_text().encode(), "headers": {"content-type": "application/json"}},
}
XML_TRANSPORTS: dict[str, dict[str, Any]] = {
    "pg_xml_form": {
        "content": render_form([("pg_xml", render_xml(XML_LOGICAL, root="request").decode())]),
        "headers": {"content-type": FORM_TYPE},
    },
    "pg_xml_multipart": {
        "content": multipart([("pg_xml", render_xml(XML_LOGICAL, root="request"))]),
        "headers": {"content-type": MULTIPART_TYPE},
    },
    "pg_xml_get_query": {
        "method": "GET",
        "url": "/init_payment.php?"
        + render_query([("pg_xml", render_xml(XML_LOGICAL, root="request").decode())]),
    },
    "xml_body": {"content": render_xml(XML_LOGICAL, root="request"), "headers": {"content-type": "text/xml"}},
    "xml_body_application": {
        "content": render_xml(XML_LOGICAL, root="request"),
        "headers": {"content-type": "application/xml; charset=utf-8"},
    },
    # JSON duplicate keys express repeated nested elements too.
    "json_duplicate_keys": {
        "content": json_object(XML_LOGICAL).encode(),
        "headers": {"content-type": "application/json"},
    },
}


async def _send(client: httpx.AsyncClient, spec: dict[str, Any]) -> Params:
    spec = dict(spec)
    method = spec.pop("method", "POST")
    url = spec.pop("url", "/init_payment.php")
    return params_of(await client.request(method, url, **spec))


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
async def test_every_transport_yields_the_same_params(client: httpx.AsyncClient, transport: str) -> None:
    got = await _send(client, TRANSPORTS[transport])
    assert got == LOGICAL
    assert verify(SCRIPT, got, SECRET)


@pytest.mark.parametrize("transport", sorted(XML_TRANSPORTS))
async def test_every_xml_transport_yields_the_same_params(client: httpx.AsyncClient, transport: str) -> None:
    got = await _send(client, XML_TRANSPORTS[transport])
    assert got == XML_LOGICAL
    assert verify(SCRIPT, got, SECRET)


def test_list_indexes_cannot_be_xml_names() -> None:
    with pytest.raises(ValueError, match="'0' is not a valid XML element name"):
        render_xml(LOGICAL)


async def test_echoed_xml_reads_back(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/init_payment.php/xml",
        content=render_xml(XML_LOGICAL, root="request"),
        headers={"content-type": "text/xml"},
    )
    assert response.headers["content-type"].startswith("text/xml")
    assert response.content.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<response>')
    assert "&amp; &lt;чай&gt;".encode() in response.content
    assert parse_xml(response.content) == XML_LOGICAL


# --- query + body merge ---------------------------------------------------------------------------


async def test_query_params_come_before_form_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/x?pg_merchant_id=82&a=1", content=b"a=2&b=3", headers={"content-type": FORM_TYPE}
    )
    assert params_of(response) == [("pg_merchant_id", "82"), ("a", "1"), ("a", "2"), ("b", "3")]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json; charset=utf-8", b'{"a": "2"}'),
        ("application/xml", b"<request><a>2</a></request>"),
        (FORM_TYPE, b"pg_xml=" + quote("<request><a>2</a></request>").encode()),
        (MULTIPART_TYPE, multipart([("a", "2")])),
    ],
)
async def test_query_merges_with_every_body_type(
    client: httpx.AsyncClient, content_type: str, body: bytes
) -> None:
    response = await client.post("/x?pg_merchant_id=82", content=body, headers={"content-type": content_type})
    assert params_of(response) == [("pg_merchant_id", "82"), ("a", "2")]


async def test_pg_xml_only_expands_when_alone(client: httpx.AsyncClient) -> None:
    body = render_form([("pg_xml", "<request><a>1</a></request>"), ("b", "2")])
    response = await client.post("/x", content=body, headers={"content-type": FORM_TYPE})
    assert params_of(response) == [("pg_xml", "<request><a>1</a></request>"), ("b", "2")]


async def test_get_with_only_pg_xml_in_query_expands(client: httpx.AsyncClient) -> None:
    response = await client.get("/x", params={"pg_xml": "<request><a>1</a><b>2</b></request>"})
    assert params_of(response) == [("a", "1"), ("b", "2")]


async def test_empty_post_body_gives_query_only(client: httpx.AsyncClient) -> None:
    response = await client.post("/x?a=1", headers={"content-type": "application/json"})
    assert params_of(response) == [("a", "1")]


async def test_get_body_is_ignored(client: httpx.AsyncClient) -> None:
    response = await client.request("GET", "/x?a=1", content=b"b=2")
    assert params_of(response) == [("a", "1")]


# --- hostile XML ------------------------------------------------------------------------------------

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10))
    + "]><request><pg_a>&lol9;</pg_a></request>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE request [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<request><pg_a>&xxe;</pg_a></request>"
)
PARAMETER_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE request [<!ENTITY % ext SYSTEM "file:///etc/passwd"> %ext;]>'
    "<request><pg_a>1</pg_a></request>"
)
EXTERNAL_DTD = '<?xml version="1.0"?><!DOCTYPE request SYSTEM "http://127.0.0.1:1/x.dtd"><request/>'
PLAIN_DTD = "<!DOCTYPE request><request><pg_a>1</pg_a></request>"
HOSTILE_XML = {
    "billion_laughs": BILLION_LAUGHS,
    "external_entity": EXTERNAL_ENTITY,
    "parameter_entity": PARAMETER_ENTITY,
    "external_dtd": EXTERNAL_DTD,
    "plain_dtd": PLAIN_DTD,
}


@pytest.mark.parametrize("name", sorted(HOSTILE_XML))
def test_parse_xml_refuses_dtd_and_entities(name: str) -> None:
    with pytest.raises(MalformedRequest, match="XML with DTD or entities is not accepted"):
        parse_xml(HOSTILE_XML[name])


@pytest.mark.parametrize("name", sorted(HOSTILE_XML))
@pytest.mark.parametrize("via", ["xml_body", "pg_xml"])
async def test_hostile_xml_refused_over_http(client: httpx.AsyncClient, name: str, via: str) -> None:
    xml = HOSTILE_XML[name]
    if via == "xml_body":
        response = await client.post("/x", content=xml.encode(), headers={"content-type": "text/xml"})
    else:
        response = await client.post("/x", content=render_form([("pg_xml", xml)]))
    error = error_of(response)
    assert error["code"] == "malformed_request"
    assert error["message"] == "XML with DTD or entities is not accepted"


@pytest.mark.parametrize(
    ("xml", "position"),
    [
        ("<request><a>1</b></request>", "mismatched tag: line 1, column 15"),
        ("<request>\n<a>1</a>\n<b>", "line 3"),
        ("", "line 1, column 0"),
        ("<request><a>&undefined;</a></request>", "line 1, column 12"),
        ("<request><x:a>1</x:a></request>", "line 1, column 9"),
    ],
)
def test_malformed_xml_names_the_position(xml: str, position: str) -> None:
    with pytest.raises(MalformedRequest, match="malformed XML") as info:
        parse_xml(xml)
    assert position in info.value.message


def test_parse_xml_details() -> None:
    # Root name ignored, attributes and namespaces dropped, BOM/leading whitespace tolerated, the
    # declared encoding does not override UTF-8.
    xml = '\ufeff\n<?xml version="1.0" encoding="windows-1251"?><r xmlns:p="urn:x"><p:a k="v">Чай</p:a></r>'
    assert parse_xml(xml.encode()) == [("a", "Чай")]
    assert parse_xml("<request><a>x &amp; &#13;&#x20AC;</a><b/><c></c></request>") == [
        ("a", "x & \r€"),
        ("b", ""),
        ("c", ""),
    ]


def test_xml_element_count_is_capped() -> None:
    xml = "<request>" + "<a/>" * (MAX_PARAMS + 1) + "</request>"
    with pytest.raises(MalformedRequest, match="more than"):
        parse_xml(xml)
    assert len(parse_xml("<request>" + "<a/>" * MAX_PARAMS + "</request>")) == MAX_PARAMS


def test_xml_nesting_is_capped() -> None:
    depth = MAX_DEPTH + 1
    with pytest.raises(MalformedRequest, match="nested deeper"):
        parse_xml("<request>" + "<a>" * depth + "x" + "</a>" * depth + "</request>")


def test_very_deep_xml_fails_cleanly() -> None:
    with pytest.raises(MalformedRequest):
        parse_xml("<r>" + "<a>" * 100_000 + "</a>" * 100_000 + "</r>")


# --- encodings, sizes, counts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("/x?a=%FF", {}),
        ("/x?a=%C3%28", {}),
        ("/x", {"content": b"a=%FF", "headers": {"content-type": FORM_TYPE}}),
        ("/x", {"content": b"a=\xff", "headers": {"content-type": FORM_TYPE}}),
        ("/x", {"content": b'{"a": "\xff"}', "headers": {"content-type": "application/json"}}),
        ("/x", {"content": b"<request><a>\xff</a></request>", "headers": {"content-type": "text/xml"}}),
        ("/x", {"content": multipart([("a", b"\xc3\x28")]), "headers": {"content-type": MULTIPART_TYPE}}),
        (
            "/x",
            {
                "content": multipart([("a", "1")]).replace(b'name="a"', b'name="\xff"'),
                "headers": {"content-type": MULTIPART_TYPE},
            },
        ),
    ],
)
async def test_invalid_utf8_is_malformed(client: httpx.AsyncClient, url: str, kwargs: dict[str, Any]) -> None:
    response = await client.request("POST" if "content" in kwargs else "GET", url, **kwargs)
    error = error_of(response)
    assert error["code"] == "malformed_request"
    assert "UTF-8" in error["message"]


@pytest.mark.parametrize("value", ["%00", "%01", "%1F", "%EF%BF%BF"])
def test_characters_xml_cannot_carry_are_refused(value: str) -> None:
    with pytest.raises(MalformedRequest, match="control or non-character"):
        parse_query(f"a={value}")
    with pytest.raises(MalformedRequest, match="control or non-character"):
        parse_query(f"{value}=1")


def test_json_lone_surrogate_is_refused() -> None:
    with pytest.raises(MalformedRequest, match="control or non-character"):
        parse_json(b'{"a": "\\ud800"}')


async def test_oversized_body_refused_by_content_length(client: httpx.AsyncClient) -> None:
    response = await client.post("/small", content=b"a=" + b"x" * SMALL_LIMIT)
    error = error_of(response)
    assert error["code"] == PayloadTooLarge.code
    assert error["type"] == "PayloadTooLarge"


async def test_body_at_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/small", content=b"a=" + b"x" * (SMALL_LIMIT - 2))
    assert params_of(response) == [("a", "x" * (SMALL_LIMIT - 2))]


async def test_streamed_body_under_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for piece in (b"a=1", b"&b=", "Чай".encode()[:3], "Чай".encode()[3:]):
            yield piece

    assert params_of(await client.post("/small", content=chunks())) == [("a", "1"), ("b", "Чай")]


async def test_invalid_content_length_is_malformed(client: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"a=1"

    response = await client.post("/x", content=body(), headers={"content-length": "1_0"})
    assert error_of(response)["code"] == "malformed_request"


async def test_compressed_body_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/x", content=b"\x1f\x8b", headers={"content-encoding": "gzip"})
    assert "Content-Encoding" in error_of(response)["message"]


@pytest.mark.parametrize(
    "make",
    [
        lambda n: ("query", "&".join(f"a{i}=1" for i in range(n))),
        lambda n: ("json", "{" + ",".join(f'"a{i}": 1' for i in range(n)) + "}"),
        lambda n: ("json", '{"a": [' + ",".join(["{}"] * n) + "]}"),
        lambda n: ("query", "&".join(f"a[{i}][x]=1" for i in range(n // 2))),
        lambda n: ("multipart", n),
    ],
)
def test_parameter_count_is_capped(make: Any) -> None:
    kind, payload = make(MAX_PARAMS + 1)
    with pytest.raises(MalformedRequest, match=f"more than {MAX_PARAMS} parameters"):
        if kind == "query":
            parse_query(payload)
        elif kind == "json":
            parse_json(payload.encode())
        else:
            parse_multipart(multipart([(f"a{i}", "1") for i in range(payload)]), MULTIPART_TYPE)


async def test_query_and_body_share_the_parameter_cap(client: httpx.AsyncClient) -> None:
    half = MAX_PARAMS // 2 + 1
    query = "&".join(f"q{i}=1" for i in range(half))
    body = "&".join(f"b{i}=1" for i in range(half)).encode()
    response = await client.post(f"/x?{query}", content=body, headers={"content-type": FORM_TYPE})
    assert "more than" in error_of(response)["message"]


def test_bracket_nesting_too_deep_is_malformed_request() -> None:
    with pytest.raises(MalformedRequest, match="nested deeper") as info:
        parse_query("a" + "[x]" * MAX_DEPTH + "=1")
    assert info.value.code == "malformed_request"
    assert info.value.field == "a"


# --- JSON ---------------------------------------------------------------------------------------------------


def test_json_values_are_their_text() -> None:
    body = b'{"n": -0, "f": 1.50, "e": 1E+5, "big": 123456789012345678901234567890, "t": true, "x": false}'
    assert parse_json(body) == [
        ("n", "-0"),
        ("f", "1.50"),
        ("e", "1E+5"),
        ("big", "123456789012345678901234567890"),
        ("t", "1"),
        ("x", "0"),
    ]


def test_json_structure() -> None:
    body = (
        '\ufeff{"b": null, "list": ["x", null, {"k": "v"}, []], "o": {"z": "1", "a": "2"}, "d": "1", "d": ""}'
    )
    assert parse_json(body.encode()) == [
        ("list", [("0", "x"), ("2", [("k", "v")]), ("3", [])]),
        ("o", [("z", "1"), ("a", "2")]),
        ("d", "1"),
        ("d", ""),
    ]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_json_nan_and_infinity_refused(client: httpx.AsyncClient, constant: str) -> None:
    response = await client.post(
        "/x", content=f'{{"pg_amount": {constant}}}'.encode(), headers={"content-type": "application/json"}
    )
    error = error_of(response)
    assert error["code"] == "malformed_request"
    assert constant in error["message"]


@pytest.mark.parametrize("body", [b"[]", b'"a"', b"1", b"null", b"{", b'{"a": 1,}', b'{"a": 1} x'])
def test_json_must_be_one_object(body: bytes) -> None:
    with pytest.raises(MalformedRequest, match="JSON"):
        parse_json(body)


def test_json_depth_limit() -> None:
    def nested(depth: int) -> bytes:
        return ('{"a": ' * depth + '"x"' + "}" * depth).encode()

    inner = parse_json(nested(MAX_JSON_DEPTH))
    for _ in range(MAX_JSON_DEPTH - 1):
        (_name, value), *_rest = inner
        assert isinstance(value, list)
        inner = value
    assert inner == [("a", "x")]
    with pytest.raises(MalformedRequest, match=f"nested deeper than {MAX_JSON_DEPTH}"):
        parse_json(nested(MAX_JSON_DEPTH + 1))


async def test_very_deep_json_fails_cleanly(client: httpx.AsyncClient) -> None:
    body = b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    response = await client.post("/x", content=body, headers={"content-type": "application/json"})
    assert "nested deeper" in error_of(response)["message"]


# --- multipart ---------------------------------------------------------------------------------------------


async def test_multipart_file_part_refused(client: httpx.AsyncClient) -> None:
    body = multipart([("pg_merchant_id", "82")], file=("receipt", "r.txt"))
    response = await client.post("/x", content=body, headers={"content-type": MULTIPART_TYPE})
    error = error_of(response)
    assert error["code"] == "malformed_request"
    assert "'receipt' is a file" in error["message"]


async def test_multipart_file_via_httpx_files_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/x", data={"a": "1"}, files={"f": ("f.bin", b"\x00\x01")})
    assert "is a file" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("multipart/form-data", multipart([("a", "1")]), "boundary"),
        (MULTIPART_TYPE, multipart([("a", "1")])[:-8], "truncated"),
        (
            MULTIPART_TYPE,
            f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
            "name",
        ),
        (MULTIPART_TYPE, b"garbage", "multipart"),
    ],
)
def test_malformed_multipart(content_type: str, body: bytes, message: str) -> None:
    with pytest.raises(MalformedRequest, match=message):
        parse_multipart(body, content_type)


# --- rendering ----------------------------------------------------------------------------------------------


def test_render_xml_shape_and_escaping() -> None:
    xml = render_xml(
        [("pg_status", "ok"), ("d", "a<b & c>d ]]> \r\n"), ("card", [("id", "1")]), ("card", [])]
    )
    assert xml == (
        b'<?xml version="1.0" encoding="utf-8"?>\n<response><pg_status>ok</pg_status>'
        b"<d>a&lt;b &amp; c&gt;d ]]&gt; &#13;\n</d><card><id>1</id></card><card/></response>"
    )
    assert parse_xml(xml) == [
        ("pg_status", "ok"),
        ("d", "a<b & c>d ]]> \r\n"),
        ("card", [("id", "1")]),
        ("card", ""),
    ]
    assert render_xml([], root="request") == b'<?xml version="1.0" encoding="utf-8"?>\n<request/>'


@pytest.mark.parametrize("name", ["", "1a", "a b", "a:b", "a<b", "a[0]", "-a"])
def test_render_xml_refuses_invalid_names(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid XML element name"):
        render_xml([(name, "x")])
    with pytest.raises(ValueError, match="not a valid XML element name"):
        render_xml([("ok", [(name, "x")])])


def test_render_xml_refuses_text_xml_cannot_carry() -> None:
    with pytest.raises(ValueError, match="cannot carry"):
        render_xml([("a", "\x00")])


def test_render_query_and_form() -> None:
    params: Params = [("a b", "x&y=z+ä"), ("list", [("0", [("name", "Чай")])]), ("a b", "2")]
    query = render_query(params)
    assert query == "a+b=x%26y%3Dz%2B%C3%A4&list%5B0%5D%5Bname%5D=%D0%A7%D0%B0%D0%B9&a+b=2"
    assert render_form(params) == query.encode()
    assert parse_query(query) == params
    assert parse_form_body(render_form(params)) == params


XML_TEXT = st.text(
    alphabet=st.characters(
        codec="utf-8",  # no surrogates
        exclude_characters="".join(map(chr, [*range(9), 11, 12, *range(14, 32)])) + "\ufffe\uffff",
    ),
    max_size=12,
)
NAMES = st.one_of(st.sampled_from(["a", "pg_x", "_"]), st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True))


def params_strategy() -> st.SearchStrategy[Params]:
    leaf = st.tuples(NAMES, XML_TEXT)

    def extend(children: st.SearchStrategy[Params]) -> st.SearchStrategy[Params]:
        return st.lists(st.one_of(leaf, st.tuples(NAMES, children)), min_size=1, max_size=4)

    # Nested lists are never empty: an empty one has no form encoding and reads back from XML as "".
    nested = st.recursive(st.lists(leaf, min_size=1, max_size=4), extend, max_leaves=20)
    return st.lists(st.one_of(leaf, st.tuples(NAMES, nested)), max_size=6)


def nested_names_unique(params: Params) -> bool:
    """Bracket notation merges two nested entries of the same name at one level."""
    names = [name for name, value in params if not isinstance(value, str)]
    return len(names) == len(set(names)) and all(
        nested_names_unique(value) for _, value in params if not isinstance(value, str)
    )


@given(params_strategy())
def test_xml_round_trip(params: Params) -> None:
    assert parse_xml(render_xml(params)) == params
    assert parse_xml(render_xml(params, root="request").decode()) == params


@given(params_strategy())
def test_query_and_form_round_trip(params: Params) -> None:
    assume(nested_names_unique(params))
    assert parse_query(render_query(params)) == params
    assert parse_form_body(render_form(params)) == params


@given(params_strategy())
def test_json_object_round_trip(params: Params) -> None:
    assert parse_json(json_object(params).encode()) == params


# --- signature vectors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", [v for v in VECTORS if "form" in v], ids=lambda v: v["name"])
def test_signature_vectors_from_form(vector: dict[str, Any]) -> None:
    params = parse_form_body(vector["form"].encode())
    assert sign(vector["script"], params, vector["secret"]) == vector["pg_sig"]
    # The vector's params as a JSON body parse to the same structure.
    assert parse_json(json.dumps(vector["params"], ensure_ascii=False).encode()) == params
    assert parse_query(render_query(params)) == params


@pytest.mark.parametrize("vector", [v for v in VECTORS if "xml" in v], ids=lambda v: v["name"])
def test_signature_vectors_from_xml(vector: dict[str, Any]) -> None:
    params = parse_xml(vector["xml"])
    assert sign(vector["script"], params, vector["secret"]) == vector["pg_sig"]
    assert parse_xml(render_xml(params)) == params
    assert sign(vector["script"], parse_xml(vector["xml"].encode()), vector["secret"]) == vector["pg_sig"]


async def test_signature_vectors_over_http(client: httpx.AsyncClient) -> None:
    for vector in VECTORS:
        if "form" in vector:
            response = await client.post(
                "/x", content=vector["form"].encode(), headers={"content-type": FORM_TYPE}
            )
        else:
            response = await client.post("/x", content=render_form([("pg_xml", vector["xml"])]))
        got = params_of(response)
        assert sign(vector["script"], got, vector["secret"]) == vector["pg_sig"], vector["name"]
