"""The canonical form of a JSON request: equal meaning, equal bytes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from greengate.api.jsonbody import canonical_json, parse_json_object

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
objects = st.dictionaries(st.text(max_size=6), values, max_size=6)


def written(value: Any, indent: int | None, reverse: bool) -> str:
    """The value as JSON text in one of several layouts, with keys in one of two orders."""
    if isinstance(value, dict):
        items = sorted(value.items(), reverse=reverse)
        inner = [f"{json.dumps(k)}:{written(v, indent, reverse)}" for k, v in items]
        sep = ",\n" + " " * (indent or 0) if indent is not None else ","
        return "{" + sep.join(inner) + "}"
    if isinstance(value, list):
        return "[ " + " , ".join(written(v, indent, reverse) for v in value) + " ]"
    if isinstance(value, Decimal):
        return format(value, "f")
    return json.dumps(value, ensure_ascii=indent is None)


@given(objects, st.none() | st.integers(0, 4), st.booleans())
def test_same_object_written_differently_has_one_canonical_form(
    data: dict[str, Any], indent: int | None, reverse: bool
) -> None:
    plain = parse_json_object(written(data, None, False).encode())
    other = parse_json_object(written(data, indent, reverse).encode())

    assert canonical_json(other) == canonical_json(plain)


def test_numbers_are_compared_by_value() -> None:
    assert canonical_json(parse_json_object(b'{"a": 9999.00}')) == canonical_json(
        parse_json_object(b'{"a": 9999}')
    )


def test_different_values_have_different_canonical_forms() -> None:
    assert canonical_json(parse_json_object(b'{"a": "9999"}')) != canonical_json(
        parse_json_object(b'{"a": 9999}')
    )
