"""Choosing a page's language from ?lang=, the payment's pg_language and Accept-Language."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greengate.web.checkout.i18n import LANGUAGES, accepted_language, pick_language


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("kk-KZ,kk;q=0.9,ru;q=0.8", "kk"),
        ("en-US,en;q=0.9", "en"),
        ("de-DE,ru;q=0.5,en;q=0.7", "en"),
        ("ru;q=0.5,en;q=0.5", "ru"),  # equal weights: the header's order
        ("en;q=0,ru;q=0.1", "ru"),  # q=0 means "not this one"
        ("*", None),
        ("fr, de", None),
        ("en;q=abc, kk", "kk"),
        ("KK", "kk"),
        ("", None),
        (None, None),
    ],
)
def test_accepted_language_reads_weights_and_regions(header: str | None, expected: str | None) -> None:
    assert accepted_language(header) == expected


def test_explicit_choices_come_before_accept_language() -> None:
    assert pick_language("kk", "en", "ru") == "kk"
    assert pick_language(None, "en", "kk") == "en"
    assert pick_language(None, None, "kk") == "kk"
    assert pick_language("xx", None, None) == "ru"


@given(st.text(max_size=2000))
def test_any_accept_language_header_names_a_supported_language_or_nothing(header: str) -> None:
    assert accepted_language(header) in (*LANGUAGES, None)
