"""Merchant API transport codec: every wire format in, one ordered nested ``Params`` out.

The family's clients send the same message as a GET query, an urlencoded or multipart form, a form
with a single ``pg_xml`` field, a raw XML body or a JSON object. ``read_params`` reduces all of
them to the structure the signature is computed over; ``render_*`` produce responses and
callbacks. Everything inbound is hostile: sizes, counts and nesting are bounded, XML goes through
defusedxml with DTDs refused, and text must be valid UTF-8 that an XML response can carry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, NoReturn
from urllib.parse import parse_qsl, unquote_to_bytes, urlencode
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as safe_et
from defusedxml import DefusedXmlException
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from greengate.api.dispatch import Incoming
from greengate.domain.errors import InvalidRequest
from greengate.domain.params import (
    MalformedParams,
    Params,
    params_from_pairs,
    params_from_xml_element,
    params_to_pairs,
)

MAX_BODY_BYTES = 1_000_000
# Entries at all levels (a nested list counts as one, plus its children). PHP's max_input_vars.
MAX_PARAMS = 1000
MAX_JSON_DEPTH = 32

PG_XML_PARAM = "pg_xml"
XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>'

_FORM_TYPE = "application/x-www-form-urlencoded"
_MULTIPART_TYPE = "multipart/form-data"
_JSON_TYPES = frozenset({"application/json", "text/json"})
_XML_TYPES = frozenset({"text/xml", "application/xml"})

# Characters XML 1.0 cannot carry (C0 controls other than tab/LF/CR, surrogates, U+FFFE/U+FFFF).
# Refused on input so that every accepted value can be echoed in an XML response or callback;
# NUL would also break text columns in the database.
_NON_XML_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Element names every XML parser reads: ASCII letters, digits, "_", "-" and ".", no ":" (a prefix
# would need a namespace declaration). The 5th edition's wider Name set is not read by parsers built
# on the 4th edition's tables (expat among them), so such names stay out of XML answers and callbacks.
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_CONTENT_LENGTH = re.compile(r"[0-9]+")


class MalformedRequest(InvalidRequest):
    code = "malformed_request"


class PayloadTooLarge(InvalidRequest):
    code = "payload_too_large"


# --- inbound -----------------------------------------------------------------------------------


def read_params(
    request: Incoming, *, max_bytes: int = MAX_BODY_BYTES, max_params: int = MAX_PARAMS
) -> Params:
    """All parameters of a Merchant API request, query string first, then the body.

    Query parameters come first because some clients put ``pg_merchant_id`` in the URL of a POST.
    Repeated names from the two parts are both kept, in that order.
    """
    body = b""
    if request.method not in ("GET", "HEAD"):
        body = _checked_body(request, max_bytes)
    return parse_message(request.query, body, request.header(b"content-type") or "", max_params=max_params)


def parse_message(
    query_string: bytes, body: bytes, content_type: str, *, max_params: int = MAX_PARAMS
) -> Params:
    """The parameters of a request whose body is in: the pure part of ``read_params``."""
    params: Params = []
    if query_string:
        query = _decode_utf8(query_string, "query string")
        params = _expand_pg_xml(parse_query(query, max_params=max_params), max_params)
    # A body of nothing but whitespace carries no parameters in any of the formats.
    if body.strip():
        params = params + _parse_body(body, content_type, max_params)
    return _checked(params, max_params)


def _checked_body(request: Incoming, max_bytes: int) -> bytes:
    encoding = (request.header(b"content-encoding") or "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise MalformedRequest(f"Content-Encoding {encoding!r} is not supported")
    declared = request.header(b"content-length")
    if declared is not None:
        declared = declared.strip()
        if not _CONTENT_LENGTH.fullmatch(declared):
            raise MalformedRequest("invalid Content-Length header")
    # The dispatch read it under the gateway's own limit; a caller may ask for less.
    if len(request.body) > max_bytes:
        raise _too_large(max_bytes)
    return request.body


_MERCHANT_ID_IN_BODY = re.compile(
    rb"(?:^|[&?])pg_merchant_id=([0-9]{1,18})(?:&|$)|<pg_merchant_id>\s*([0-9]{1,18})\s*</pg_merchant_id>"
    rb'|"pg_merchant_id"\s*:\s*"?([0-9]{1,18})"?',
    re.MULTILINE,
)


def merchant_id_hint(request: Incoming) -> str | None:
    """``pg_merchant_id`` of a request whose parameters could not be read, where it is still legible:
    the query string, else a plain occurrence in the body (form, XML or JSON)."""
    for source in (request.query, request.body):
        source = source[:MAX_BODY_BYTES]
        # As sent, and percent-decoded (a pg_xml document inside a form).
        for text in (source, unquote_to_bytes(source.replace(b"+", b" "))):
            match = _MERCHANT_ID_IN_BODY.search(text)
            if match is not None:
                return next(group for group in match.groups() if group).decode("ascii")
    return None


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than {max_bytes} bytes")


def _parse_body(body: bytes, content_type: str, max_params: int) -> Params:
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type in _JSON_TYPES or media_type.endswith("+json"):
        return parse_json(body, max_params=max_params)
    if media_type in _XML_TYPES or media_type.endswith("+xml"):
        return parse_xml(body, max_params=max_params)
    if media_type == _MULTIPART_TYPE:
        return _expand_pg_xml(parse_multipart(body, content_type, max_params=max_params), max_params)
    # Urlencoded, and also a missing or unknown type: clients that forget the header send forms.
    return _expand_pg_xml(parse_form_body(body, max_params=max_params), max_params)


def _expand_pg_xml(params: Params, max_params: int) -> Params:
    """The ``pg_xml`` transport: a form whose only field holds the XML message."""
    if len(params) == 1:
        name, value = params[0]
        if name == PG_XML_PARAM and isinstance(value, str):
            return parse_xml(value, max_params=max_params)
    return params


def parse_query(query: str, *, max_params: int = MAX_PARAMS) -> Params:
    """A decoded query string (or urlencoded form) in bracket notation."""
    try:
        # errors="strict": an escape that is not UTF-8 must fail, not become U+FFFD.
        pairs = parse_qsl(
            query,
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=max_params,
        )
    except UnicodeDecodeError:
        raise MalformedRequest("percent-encoded text is not valid UTF-8") from None
    except ValueError:  # max_num_fields exceeded
        raise _too_many(max_params) from None
    return _checked(_from_pairs(pairs), max_params)


def parse_form_body(body: bytes, *, max_params: int = MAX_PARAMS) -> Params:
    """An ``application/x-www-form-urlencoded`` body; raw (unescaped) UTF-8 is accepted too."""
    return parse_query(_decode_utf8(body, "form body"), max_params=max_params)


def parse_multipart(body: bytes, content_type: str, *, max_params: int = MAX_PARAMS) -> Params:
    """A buffered ``multipart/form-data`` body with text fields only.

    Parsed with python-multipart directly rather than ``Request.form()``: Starlette silently
    decodes non-UTF-8 fields as Latin-1 (a changed value the signature check would then blame)
    and spools file parts to disk, whereas here a file part is refused as soon as its headers end.
    """
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise MalformedRequest("multipart body without a boundary")
    reader = _MultipartReader(max_params)
    try:
        parser = MultipartParser(boundary, reader.callbacks())
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise MalformedRequest(f"malformed multipart body: {exc}") from None
    if not reader.finished:
        raise MalformedRequest("multipart body is truncated (no closing boundary)")
    return _checked(_from_pairs(reader.pairs), max_params)


class _MultipartReader:
    """Collects ``(name, text)`` pairs from python-multipart's callbacks."""

    def __init__(self, max_params: int) -> None:
        self.max_params = max_params
        self.pairs: list[tuple[str, str]] = []
        self.finished = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._name = ""
        self._data = bytearray()

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._disposition = b""
        self._data = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if bytes(self._header_name).strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name = bytearray()
        self._header_value = bytearray()

    def _headers_finished(self) -> None:
        options = parse_options_header(self._disposition)[1]
        raw_name = options.get(b"name")
        if raw_name is None:
            raise MalformedRequest("multipart part without a field name")
        self._name = _decode_utf8(raw_name, "multipart field name")
        if b"filename" in options:
            raise MalformedRequest(f"multipart field {self._name!r} is a file; only text fields are accepted")
        if len(self.pairs) >= self.max_params:
            raise _too_many(self.max_params)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]

    def _part_end(self) -> None:
        self.pairs.append((self._name, _decode_utf8(bytes(self._data), f"multipart field {self._name!r}")))

    def _end(self) -> None:
        self.finished = True


def parse_xml(text: str | bytes, *, max_params: int = MAX_PARAMS) -> Params:
    """The children of an XML message's root element (``<request>``, ``<response>``, any name).

    The protocol is UTF-8 only, so bytes are decoded as such whatever the declaration says.
    """
    if isinstance(text, bytes):
        text = _decode_utf8(text, "XML")
    # A BOM or a newline before the declaration is common in hand-built messages; expat refuses it.
    text = text.lstrip("\ufeff \t\r\n")
    try:
        root = safe_et.fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise MalformedRequest("XML with DTD or entities is not accepted") from None
    except ParseError as exc:
        raise MalformedRequest(f"malformed XML: {exc}") from None
    # Counted before conversion so a flood of tiny elements is refused cheaply.
    if sum(1 for _ in root.iter()) - 1 > max_params:
        raise _too_many(max_params)
    try:
        params = params_from_xml_element(root)
    except MalformedParams as exc:
        raise MalformedRequest(exc.message, field=exc.field) from None
    return _checked(params, max_params)


class _JsonObject:
    """A JSON object as its ordered pairs, so duplicate keys and key order survive decoding."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs


def _refuse_constant(name: str) -> NoReturn:
    raise MalformedRequest(f"{name} is not allowed in JSON")


def parse_json(body: bytes, *, max_params: int = MAX_PARAMS) -> Params:
    """A JSON object body.

    Strings are taken as is and numbers as their exact JSON text (``1.50`` stays ``1.50``: the
    sender signed that text); ``true``/``false`` become ``1``/``0``; ``null`` means absent.
    Objects nest in key order, arrays nest with names ``0``, ``1``, ... like ``list[0][x]`` in a
    form (an array's ``null`` element leaves its index unused). Duplicate keys are all kept.
    """
    text = _decode_utf8(body, "JSON").removeprefix("\ufeff")
    try:
        data = json.loads(
            text,
            object_pairs_hook=_JsonObject,
            parse_float=str,
            parse_int=str,
            parse_constant=_refuse_constant,
        )
    except json.JSONDecodeError as exc:
        raise MalformedRequest(
            f"malformed JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:
        raise _too_deep_json() from None
    if not isinstance(data, _JsonObject):
        raise MalformedRequest("JSON body must be an object")
    budget = [max_params]  # entries still allowed, shared across the recursion
    return _checked(_json_params(data.pairs, 1, budget, max_params), max_params)


def _json_params(items: Iterable[tuple[str, Any]], depth: int, budget: list[int], max_params: int) -> Params:
    if depth > MAX_JSON_DEPTH:
        raise _too_deep_json()
    params: Params = []
    for name, value in items:
        if value is None:
            continue
        budget[0] -= 1
        if budget[0] < 0:
            raise _too_many(max_params)
        if isinstance(value, str):
            params.append((name, value))
        elif isinstance(value, bool):
            params.append((name, "1" if value else "0"))
        elif isinstance(value, _JsonObject):
            params.append((name, _json_params(value.pairs, depth + 1, budget, max_params)))
        else:  # array
            indexed = ((str(index), element) for index, element in enumerate(value))
            params.append((name, _json_params(indexed, depth + 1, budget, max_params)))
    return params


def _too_deep_json() -> MalformedRequest:
    return MalformedRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def _too_many(max_params: int) -> MalformedRequest:
    return MalformedRequest(f"request has more than {max_params} parameters")


def _decode_utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"{what} is not valid UTF-8 (byte {exc.start})") from None


def _from_pairs(pairs: list[tuple[str, str]]) -> Params:
    try:
        return params_from_pairs(pairs)
    except MalformedParams as exc:
        raise MalformedRequest(exc.message, field=exc.field) from None


def _checked(params: Params, max_params: int) -> Params:
    """Enforce the entry cap and the XML-representable character set over the whole structure."""
    count = 0
    stack = [params]
    while stack:
        for name, value in stack.pop():
            count += 1
            if count > max_params:
                raise _too_many(max_params)
            if _NON_XML_CHAR.search(name):
                raise MalformedRequest("parameter name contains a control or non-character code point")
            if isinstance(value, str):
                if _NON_XML_CHAR.search(value):
                    raise MalformedRequest(
                        f"parameter {name!r} contains a control or non-character code point", field=name
                    )
            else:
                stack.append(value)
    return params


# --- outbound ----------------------------------------------------------------------------------


def is_xml_name(name: str) -> bool:
    return _XML_NAME.fullmatch(name) is not None


def render_xml(params: Params, root: str = "response") -> bytes:
    """``<?xml ...?>\\n<response>...</response>`` in UTF-8; nested lists become nested elements.

    Parses back (``parse_xml``) to the same structure, except that an empty nested list reads back
    as an empty string. Raises ValueError for a name that is not an XML name or text XML cannot
    carry: the caller must not send a message that would arrive changed.
    """
    out = [XML_DECLARATION, "\n"]
    _render_element(root, params, out)
    return "".join(out).encode("utf-8")


def _render_element(name: str, value: str | Params, out: list[str]) -> None:
    if not _XML_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid XML element name")
    if isinstance(value, str):
        out.append(f"<{name}>{_escape_text(value)}</{name}>")
    elif not value:
        out.append(f"<{name}/>")
    else:
        out.append(f"<{name}>")
        for child_name, child_value in value:
            _render_element(child_name, child_value, out)
        out.append(f"</{name}>")


def _escape_text(text: str) -> str:
    if _NON_XML_CHAR.search(text):
        raise ValueError("text contains a character XML 1.0 cannot carry")
    # ">" for "]]>"; CR as a reference because parsers normalise a literal CR to LF.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def render_query(params: Params) -> str:
    """Bracket-notation query string (``a[b][0]=x``), spaces as ``+`` like PHP's http_build_query."""
    return urlencode(params_to_pairs(params))


def render_form(params: Params) -> bytes:
    """An ``application/x-www-form-urlencoded`` body."""
    return render_query(params).encode("ascii")
