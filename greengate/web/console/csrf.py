"""CSRF protection for the console's forms.

Signed-in forms carry the session's own random token (stored on the session row) in a hidden
`csrf_token` field; every POST is refused with 403 unless it matches. The sign-in form, which has no
session yet, uses a double-submit token: a random value in a short-lived cookie and in the form, which
a cross-site page can neither read nor set. SameSite=Lax cookies are a second, independent layer.
"""

from __future__ import annotations

import secrets

from starlette.datastructures import FormData

FIELD = "csrf_token"
LOGIN_COOKIE = "gg_console_login"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def form_token(form: FormData) -> str:
    value = form.get(FIELD)
    return value if isinstance(value, str) else ""


def tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return secrets.compare_digest(expected.encode(), given.encode())
