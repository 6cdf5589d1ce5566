"""Strict JSON request bodies: numbers parsed as exact Decimal, NaN/Infinity refused."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

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
