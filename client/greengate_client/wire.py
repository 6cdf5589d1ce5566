"""Merchant API messages on the wire: the four request transports and the XML answers.

Transports: `query` (GET), `form` (POST urlencoded, brackets for nesting), `pg_xml` (POST form with
one `pg_xml` field holding an XML document) and `json` (POST a JSON object).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode
from xml.sax.saxutils import escape

from greengate_client.errors import ProtocolError
from greengate_client.signature import Params

Transport = Literal["query", "form", "pg_xml", "json"]
TRANSPORTS: tuple[Transport, ...] = ("query", "form", "pg_xml", "json")
XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>'
MAX_XML_BYTES = 1_000_000
FORM = "application/x-www-form-urlencoded"


def bracket_pairs(params: Params, prefix: str = "") -> list[tuple[str, str]]:
    """Flat `name[child][grandchild]` pairs, as PHP clients send nested parameters."""
    pairs: list[tuple[str, str]] = []
    for name, value in params:
        key = f"{prefix}[{name}]" if prefix else name
        if isinstance(value, list):
            pairs.extend(bracket_pairs(value, key))
        else:
            pairs.append((key, value))
    return pairs


def query_string(params: Params) -> str:
    return urlencode(bracket_pairs(params), quote_via=quote)


def xml_names(params: Params, item: str = "item") -> Params:
    """The message with list children (named 0, 1, ... by `as_params`) renamed `item`: digits are not
    XML element names. Sign the renamed message when sending it by pg_xml, so the signature covers
    exactly what travels."""
    return [
        (item if name.isdigit() else name, xml_names(value, item) if isinstance(value, list) else value)
        for name, value in params
    ]


def xml_document(params: Params, root: str = "request") -> str:
    def element(name: str, value: Any) -> str:
        if isinstance(value, list):
            return f"<{name}>{''.join(element(n, v) for n, v in value)}</{name}>"
        return f"<{name}>{escape(value)}</{name}>"

    return XML_DECLARATION + element(root, params)


def _json_value(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    if value and all(name == str(i) for i, (name, _) in enumerate(value)):
        return [_json_value(v) for _, v in value]
    return {name: _json_value(v) for name, v in value}


def json_document(params: Params) -> str:
    return json.dumps({name: _json_value(v) for name, v in params}, ensure_ascii=False)


def encode(params: Params, transport: Transport) -> tuple[str, str, bytes | None, dict[str, str]]:
    """(method, query string, body, headers) of a message sent by `transport`."""
    if transport == "query":
        return "GET", query_string(params), None, {}
    if transport == "form":
        return "POST", "", query_string(params).encode(), {"Content-Type": FORM}
    if transport == "pg_xml":
        body = urlencode({"pg_xml": xml_document(params)}).encode()
        return "POST", "", body, {"Content-Type": FORM}
    if transport == "json":
        return "POST", "", json_document(params).encode(), {"Content-Type": "application/json"}
    raise ValueError(f"unknown transport {transport!r}")


def parse_xml(document: bytes | str, root: str | None = None) -> Params:
    """The root's children as a message (elements with children nest; repeated names kept in order).
    Refuses DTDs and oversized documents: an XML answer never needs either."""
    raw = document.encode() if isinstance(document, str) else document
    if len(raw) > MAX_XML_BYTES:
        raise ProtocolError("XML document is too large")
    if b"<!DOCTYPE" in raw.upper() or b"<!ENTITY" in raw.upper():
        raise ProtocolError("XML documents with a DTD are refused")
    try:
        element = ET.fromstring(raw)  # noqa: S314 - no DTD, bounded size
    except ET.ParseError as exc:
        raise ProtocolError(f"not a well-formed XML document: {exc}") from None
    if root is not None and element.tag != root:
        raise ProtocolError(f"expected a <{root}> document, got <{element.tag}>")

    def convert(node: ET.Element) -> Params:
        return [(child.tag, convert(child) if len(child) else (child.text or "")) for child in node]

    return convert(element)


def parse_brackets(pairs: list[tuple[str, str]]) -> Params:
    """Decoded `a[b][c]=v` pairs → a nested message (first appearance order)."""
    root: Params = []
    for key, value in pairs:
        base, _, rest = key.partition("[")
        path = [base, *[seg.rstrip("]") for seg in rest.split("[")]] if rest else [base]
        level = root
        for segment in path[:-1]:
            found = next((v for n, v in level if n == segment and isinstance(v, list)), None)
            if found is None:
                found = []
                level.append((segment, found))
            level = found
        level.append((path[-1], value))
    return root


def parse_form(body: bytes | str) -> Params:
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    return parse_brackets(parse_qsl(text, keep_blank_values=True))
