"""Ids as clients send them: decimal text naming a row."""

from __future__ import annotations

# Up to 18 digits always fits a BIGINT (the largest is 19 digits long).
MAX_ID_DIGITS = 18


def id_number(text: object) -> int | None:
    """The id a decimal text names (ASCII digits only, at most `MAX_ID_DIGITS`); None for anything
    else, so that each caller refuses it in its own protocol's terms."""
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() or len(text) > MAX_ID_DIGITS:
        return None
    return int(text)
