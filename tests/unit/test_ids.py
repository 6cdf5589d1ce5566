from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from greengate.domain.ids import id_number


@given(st.integers(min_value=0, max_value=10**18 - 1))
def test_decimal_text_of_up_to_18_digits_names_its_id(number: int) -> None:
    assert id_number(str(number)) == number


def test_anything_else_names_no_id() -> None:
    for text in ("", "1" * 19, "-1", "1.0", " 1", "١٢", "0x1", None, 12, ["1"]):
        assert id_number(text) is None, text
