"""`pg_sig`, the Merchant API's signature, and the parameter tree it signs.

A message is a list of `(name, value)` pairs in order; a value is a string or, for nested parameters,
another such list. Dicts and lists from Python code are turned into that shape by `as_params`
(a list's items are named 0, 1, ...).

pg_sig = md5(script ; values ordered by name ; secret): each name gets its 3-digit position among its
siblings appended (so `pg_param10` sorts before `pg_param1`), children are prefixed by their parent's
name, names compare as bytes, and `pg_sig` itself is left out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, TypeAlias
from urllib.parse import urlsplit

Params: TypeAlias = list[tuple[str, Any]]  # value: str, or a nested Params
MAX_DEPTH = 16


def as_params(data: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Params:
    """A message from a dict, a list of pairs, or JSON-like nesting; `None` values are left out."""
    items = data.items() if isinstance(data, Mapping) else data
    return [(str(name), _value(value, 0)) for name, value in items if value is not None]


def _value(value: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError("parameters are nested too deeply")
    if isinstance(value, Mapping):
        return [(str(k), _value(v, depth + 1)) for k, v in value.items() if v is not None]
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value):
            return [(k, _value(v, depth + 1)) for k, v in value if v is not None]
        return [(str(i), _value(v, depth + 1)) for i, v in enumerate(value)]
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        raise TypeError("amounts must be Decimal, str or int, never float")
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def script_name(url_or_path: str) -> str:
    """The last path segment: what a message to (or from) this URL is signed with."""
    path = urlsplit(url_or_path).path
    return path.rpartition("/")[2]


def signature_string(script: str, params: Params, secret: str) -> str:
    flat: list[tuple[bytes, str]] = []

    def walk(items: Params, prefix: str) -> None:
        for position, (name, value) in enumerate(items, start=1):
            if name == "pg_sig" and not prefix:
                continue
            key = f"{prefix}{name}{position:03d}"
            if isinstance(value, list):
                walk(value, key)
            else:
                flat.append((key.encode("utf-8"), value))

    walk(params, "")
    flat.sort(key=lambda entry: entry[0])
    return ";".join([script, *(value for _, value in flat), secret])


def make_signature(script: str, params: Params, secret: str) -> str:
    return hashlib.md5(signature_string(script, params, secret).encode("utf-8")).hexdigest()  # noqa: S324


def verify_signature(script: str, params: Params, secret: str) -> bool:
    """Exactly one top-level `pg_sig`, equal (in constant time) to the one computed."""
    given = [value for name, value in params if name == "pg_sig"]
    if len(given) != 1 or not isinstance(given[0], str):
        return False
    return hmac.compare_digest(given[0].lower().encode(), make_signature(script, params, secret).encode())


def new_salt() -> str:
    """A fresh random salt for every message (the gateway treats identical signed messages as replays)."""
    return secrets.token_hex(16)


def sign(script: str, params: Params, secret: str, *, salt: str | None = None) -> Params:
    """`params` with `pg_salt` (the given one, else a fresh one unless already present) and `pg_sig` last."""
    message = [(n, v) for n, v in params if n != "pg_sig"]
    if salt is not None:
        message = [(n, v) for n, v in message if n != "pg_salt"]
        message.append(("pg_salt", salt))
    elif not any(n == "pg_salt" for n, _ in message):
        message.append(("pg_salt", new_salt()))
    return [*message, ("pg_sig", make_signature(script, message, secret))]


def first(params: Params, name: str) -> Any:
    for n, v in params:
        if n == name:
            return v
    return None
