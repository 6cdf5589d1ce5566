"""Reading list filters from the query string: bad values are ignored, never an error page."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from fastapi import Request

from greengate.domain.errors import DomainError
from greengate.domain.money import parse_amount


def text(request: Request, name: str, max_length: int = 200) -> str:
    """A filter's text, without what no database stores (NUL, lone surrogates): such a filter matches
    nothing anyway."""
    raw = request.query_params.get(name, "")
    kept = "".join(ch for ch in raw if ch != "\x00" and not "\ud800" <= ch <= "\udfff")
    return kept.strip()[:max_length]


def integer(request: Request, name: str) -> int | None:
    raw = text(request, name, 19)
    return int(raw) if (raw.isascii() and raw.isdigit()) and len(raw) < 19 else None


def day_start(request: Request, name: str) -> datetime | None:
    """The start of the given YYYY-MM-DD day in UTC."""
    try:
        day = date.fromisoformat(text(request, name, 10))
    except ValueError:
        return None
    return datetime.combine(day, time(0), tzinfo=UTC)


def day_end(request: Request, name: str) -> datetime | None:
    """The end (exclusive) of the given day, so a "to" date includes that whole day."""
    start = day_start(request, name)
    if start is None or start.date() == date.max:
        return None  # no day after the last one: no upper bound
    return start + timedelta(days=1)


def amount(request: Request, name: str, currency: str) -> int | None:
    raw = text(request, name, 30)
    if not raw:
        return None
    try:
        return parse_amount(raw, currency, field=name)
    except DomainError:
        return None
