"""Pages of the operator console: the Jinja environment, its filters, security headers, pagination."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain.cards import luhn_valid, mask_number
from greengate.domain.money import EXPONENTS, format_minor

if TYPE_CHECKING:
    from greengate.web.console.auth import Console

PAGE_SIZE = 50
MAX_PAGE = 10_000
STATIC = Path(__file__).parent.parent / "static" / "console"

templates = Environment(
    loader=FileSystemLoader(str(Path(__file__).parent.parent / "templates")),
    autoescape=select_autoescape(("html",), default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

# Scripts and styles only from our own files (the vendored htmx, the stylesheet), requests and forms
# only back to us. Every page works without the script; htmx only swaps pages in place.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


def money(minor: int | None, currency: str) -> str:
    if minor is None:
        return "—"
    if currency not in EXPONENTS:
        return f"{minor} {currency}"
    return f"{format_minor(minor, currency)} {currency}"


def when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


# 13-19 digits, optionally grouped by single spaces or dashes ("4405 6450 0000 6150").
_DIGIT_RUN = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")


def mask_cards(text: str | None) -> str:
    """Card numbers (13-19 digits passing Luhn) in a callback body shown as 440564XXXXXX6150."""
    if not text:
        return ""

    def repl(match: re.Match[str]) -> str:
        found = match.group(0)
        digits = found.replace(" ", "").replace("-", "")
        return mask_number(digits).replace("-", "") if luhn_valid(digits) else found

    return _DIGIT_RUN.sub(repl, text)


def readable_body(text: str | None) -> str:
    """A form-encoded callback body as one `name = value` line per field; anything else as it is."""
    if not text or text[0] in "<{[" or "=" not in text or any(ch.isspace() for ch in text):
        return text or ""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return text
    return "\n".join(f"{name} = {value}" for name, value in pairs)


def pretty_json(raw: str | None) -> str:
    if raw is None:
        return ""
    try:
        return json.dumps(json.loads(raw), ensure_ascii=False, indent=1, sort_keys=True)
    except ValueError:
        return raw


def status_badge(status: object) -> Markup:
    text = str(status)
    return Markup('<span class="st st-{0}">{0}</span>').format(text)


templates.filters.update(
    money=money, when=when, mask_cards=mask_cards, pretty_json=pretty_json, readable_body=readable_body
)
templates.globals.update(badge=status_badge)


def render(
    request: Request,
    template: str,
    console: Console | None = None,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    html = templates.get_template(f"console/{template}").render(
        context, console=console, path=request.url.path, query=request.query_params
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


STATIC_FILES = {"console.css": "text/css", "htmx.min.js": "text/javascript"}


def static_file(name: str) -> Response:
    return Response(
        (STATIC / name).read_bytes(),
        media_type=STATIC_FILES[name],
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@dataclass(frozen=True)
class Page:
    items: list[Any]
    number: int
    has_next: bool
    prev_url: str | None
    next_url: str | None


def page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    return min(max(int(raw), 1), MAX_PAGE) if (raw.isascii() and raw.isdigit()) and len(raw) < 6 else 1


def _page_url(request: Request, number: int) -> str:
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "page" and v != ""]
    if number > 1:
        params.append(("page", str(number)))
    return request.url.path + ("?" + urlencode(params) if params else "")


async def paginate(
    session: AsyncSession, stmt: Select[Any], request: Request, *, scalars: bool = True, size: int = PAGE_SIZE
) -> Page:
    """One page of a query's rows (ordered by the caller), fetching one extra row to know of a next."""
    number = page_number(request)
    limited = stmt.limit(size + 1).offset((number - 1) * size)
    rows: list[Any] = (
        list(await session.scalars(limited)) if scalars else list(await session.execute(limited))
    )
    has_next = len(rows) > size
    return Page(
        items=rows[:size],
        number=number,
        has_next=has_next,
        prev_url=_page_url(request, number - 1) if number > 1 else None,
        next_url=_page_url(request, number + 1) if has_next else None,
    )
