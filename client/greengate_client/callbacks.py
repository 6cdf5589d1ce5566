"""The merchant's side of Merchant API callbacks (check, result, refund, capture, card and payout
results): verify what greengate sends and build the signed answer.

A callback arrives as a GET query, a POST form, or a POST form with one `pg_xml` field; it is signed
with the script name of the merchant's own URL (its last path segment). The answer is an XML
document echoing the callback's `pg_salt`, signed the same way.

Framework-agnostic use (any framework that hands over the method, URL and body)::

    from greengate_client.callbacks import read_callback, answer
    def result_php(method, url, body, content_type):
        try:
            callback = read_callback(SECRET, url, method=method, body=body, content_type=content_type)
        except SignatureError:
            return 400, "bad signature"
        paid = callback["pg_result"] == "1"
        mark_order(callback["pg_order_id"], paid)
        return 200, answer(SECRET, callback, "ok")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from greengate_client.errors import ProtocolError, SignatureError
from greengate_client.signature import Params, first, new_salt, script_name, sign, verify_signature
from greengate_client.wire import parse_brackets, parse_form, parse_xml, xml_document

Verdict = Literal["ok", "rejected", "error"]
MAX_BODY = 1_000_000


@dataclass(frozen=True)
class Callback:
    """A verified callback: its script name and parameters (nested ones as lists of pairs)."""

    script: str
    params: Params

    def __getitem__(self, name: str) -> Any:
        value = first(self.params, name)
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        value = first(self.params, name)
        return default if value is None else value

    def __contains__(self, name: str) -> bool:
        return any(n == name for n, _ in self.params)

    @property
    def salt(self) -> str:
        return str(self.get("pg_salt", ""))


def callback_params(
    url: str, *, method: str = "GET", body: bytes | str = b"", content_type: str = ""
) -> Params:
    """The message of a callback request, before any check: the pg_xml document, else the POST form,
    else the query string."""
    raw = body.encode() if isinstance(body, str) else body
    if len(raw) > MAX_BODY:
        raise ProtocolError("callback body is too large")
    if method.upper() == "POST" and raw:
        kind = content_type.split(";")[0].strip().lower()
        if kind in ("text/xml", "application/xml"):
            return parse_xml(raw, root="request")
        form = parse_form(raw)
        if len(form) == 1 and form[0][0] == "pg_xml" and isinstance(form[0][1], str):
            return parse_xml(form[0][1], root="request")
        return form
    return parse_brackets(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def read_callback(
    secret: str,
    url: str,
    *,
    method: str = "GET",
    body: bytes | str = b"",
    content_type: str = "",
    script: str | None = None,
) -> Callback:
    """A callback whose `pg_sig` verifies with `secret` and the script name of `url` (or `script`);
    `SignatureError` otherwise. `url` is the URL the request came to, query string included."""
    params = callback_params(url, method=method, body=body, content_type=content_type)
    name = script_name(url) if script is None else script
    if not verify_signature(name, params, secret):
        raise SignatureError(f"callback to {name!r} does not verify")
    return Callback(name, params)


def answer_params(secret: str, callback: Callback, status: Verdict, description: str = "") -> Params:
    fields: Params = [("pg_status", status)]
    if description:
        fields.append(("pg_description", description))
    return sign(callback.script, fields, secret, salt=callback.salt or new_salt())


def answer(secret: str, callback: Callback, status: Verdict = "ok", description: str = "") -> str:
    """The signed XML answer (`ok`, `rejected` or `error`), echoing the callback's `pg_salt`.
    `rejected` to a check stops the payment; to a result that allows it, refunds it."""
    return xml_document(answer_params(secret, callback, status, description), root="response")


def ok(secret: str, callback: Callback, description: str = "") -> str:
    return answer(secret, callback, "ok", description)


def rejected(secret: str, callback: Callback, description: str = "") -> str:
    return answer(secret, callback, "rejected", description)


__all__ = [
    "Callback",
    "ProtocolError",
    "SignatureError",
    "answer",
    "answer_params",
    "callback_params",
    "ok",
    "read_callback",
    "rejected",
]
