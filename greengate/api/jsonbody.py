"""Strict JSON request bodies: numbers parsed as exact Decimal, NaN/Infinity refused."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from greengate.domain.errors import InvalidRequest


def _refuse_constant(name: str) -> Any:
    raise InvalidRequest(f"{name} is not allowed in JSON", code="malformed_json")


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise InvalidRequest("request body must be a JSON object", code="malformed_json")
    try:
        data = json.loads(body, parse_float=Decimal, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"malformed JSON: {exc}", code="malformed_json") from None
    except RecursionError:
        raise InvalidRequest("JSON nested too deeply", code="malformed_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object", code="malformed_json")
    return data
