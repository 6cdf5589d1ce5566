"""Strict JSON request bodies: numbers parsed as exact Decimal, NaN/Infinity refused."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

from greengate.domain.errors import InvalidRequest


def _refuse_constant(name: str) -> Any:
    raise InvalidRequest(f"{name} is not allowed in JSON", code="malformed_json")


def _decimal(text: str) -> Decimal:
    # Amounts are plain decimals: "1e3" is refused in JSON numbers as it is in strings.
    if "e" in text or "E" in text:
        raise InvalidRequest(
            f"number {text[:40]} uses exponent notation; write it as a plain decimal", code="invalid_number"
        )
    return Decimal(text)


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise InvalidRequest("request body must be a JSON object", code="malformed_json")
    try:
        data = json.loads(body, parse_float=_decimal, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"malformed JSON: {exc}", code="malformed_json") from None
    except ValueError:  # an integer literal longer than Python converts (over 4300 digits)
        raise InvalidRequest("malformed JSON: a number is too long", code="malformed_json") from None
    except RecursionError:
        raise InvalidRequest("JSON nested too deeply", code="malformed_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object", code="malformed_json")
    return data


def canonical_json(data: Any) -> bytes:
    """The request's meaning as bytes: keys sorted, no insignificant whitespace, strings as parsed (so
    escapes do not matter), numbers by value (`1.50` and `1.5` are one number). Two bodies that parse
    to the same object give the same bytes."""
    try:
        return orjson.dumps(_canonical(data), option=orjson.OPT_SORT_KEYS)
    except RecursionError:
        raise InvalidRequest("JSON nested too deeply", code="malformed_json") from None


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    if isinstance(value, Decimal):
        return orjson.Fragment(format(value.normalize(), "f").encode())
    if isinstance(value, int) and not isinstance(value, bool):
        return orjson.Fragment(str(value).encode())
    return value
