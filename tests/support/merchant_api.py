"""Merchant API from the merchant's side: sign and send requests by every transport, read the signed XML
answers, and a local shop server that receives check/result callbacks and answers them.

The signer here is written from the protocol description (Platron's reference ``PG_Signature``), not
taken from greengate, so the tests compare two independent implementations.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, quote, urlencode, urlsplit
from xml.sax.saxutils import escape

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.services.merchants import MerchantApiSettings, create_merchant, update_merchant_settings
from greengate.store.models import Base, Merchant

Params: TypeAlias = list[tuple[str, Any]]  # value: str or a nested Params

TRANSPORTS = ("query", "form", "multipart", "pg_xml", "json")
XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>'


# --- parameters and signatures -------------------------------------------------------------------


def as_params(data: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Params:
    """Dicts, pair lists and JSON-like nesting (dict → named children, list → children 0, 1, ...)."""
    items = data.items() if isinstance(data, Mapping) else data
    out: Params = []
    for name, value in items:
        out.append((str(name), _as_value(value)))
    return out


def _as_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return as_params(value)
    if isinstance(value, list) and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return as_params(value)
    if isinstance(value, list):
        return [(str(i), _as_value(v)) for i, v in enumerate(value)]
    return str(value)


def signature_string(script: str, params: Params, secret: str) -> str:
    """The reference's string: every value except pg_sig, ordered by ``name + %03d position`` flattened
    recursively (children prefixed by the parent's flat name), byte order."""
    flat: list[tuple[bytes, str]] = []

    def walk(items: Params, prefix: str) -> None:
        for position, (name, value) in enumerate(items, start=1):
            if name == "pg_sig":
                continue
            key = f"{prefix}{name}{position:03d}"
            if isinstance(value, list):
                walk(value, key)
            else:
                flat.append((key.encode("utf-8"), value))

    walk(params, "")
    flat.sort(key=lambda entry: entry[0])
    return ";".join([script, *(value for _, value in flat), secret])


def make_sig(script: str, params: Params, secret: str) -> str:
    return hashlib.md5(signature_string(script, params, secret).encode("utf-8")).hexdigest()


def verify_sig(script: str, params: Params, secret: str) -> bool:
    sigs = [value for name, value in params if name == "pg_sig"]
    return len(sigs) == 1 and sigs[0] == make_sig(script, params, secret)


def new_salt() -> str:
    return secrets.token_hex(8)


def signed(script: str, params: Params, secret: str, salt: str | None = None) -> Params:
    """``params`` with ``pg_salt`` (kept if present, else ``salt`` or a fresh one) and ``pg_sig`` last."""
    message = [(n, v) for n, v in params if n != "pg_sig"]
    if not any(n == "pg_salt" for n, _ in message):
        message.append(("pg_salt", salt or new_salt()))
    return [*message, ("pg_sig", make_sig(script, message, secret))]


def first(params: Params, name: str) -> Any:
    for n, v in params:
        if n == name:
            return v
    return None


def script_of(url: str) -> str:
    path = urlsplit(url).path
    return "" if not path or path.endswith("/") else path.rpartition("/")[2]


# --- wire formats ----------------------------------------------------------------------------------


def bracket_pairs(params: Params, prefix: str = "") -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for name, value in params:
        key = f"{prefix}[{name}]" if prefix else name
        if isinstance(value, list):
            pairs.extend(bracket_pairs(value, key))
        else:
            pairs.append((key, value))
    return pairs


def query_string(params: Params) -> str:
    return urlencode(bracket_pairs(params), quote_via=quote)


def xml_document(params: Params, root: str = "request") -> str:
    def element(name: str, value: Any) -> str:
        if isinstance(value, list):
            return f"<{name}>{''.join(element(n, v) for n, v in value)}</{name}>"
        return f"<{name}>{escape(value)}</{name}>"

    return XML_DECLARATION + element(root, params)


def _json_value(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    if value and all(name == str(i) for i, (name, _) in enumerate(value)):
        return [_json_value(v) for _, v in value]
    return {name: _json_value(v) for name, v in value}


def json_document(params: Params) -> str:
    return json.dumps({name: _json_value(v) for name, v in params}, ensure_ascii=False)


def multipart_body(params: Params) -> tuple[bytes, str]:
    boundary = "gg" + secrets.token_hex(12)
    chunks: list[bytes] = []
    for name, value in bracket_pairs(params):
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode()
        )
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def parse_xml_message(body: bytes | str) -> Params:
    """The children of the root element; elements with children nest. Only for trusted test input."""
    root = ET.fromstring(body)

    def convert(element: ET.Element) -> Params:
        return [(child.tag, convert(child) if len(child) else (child.text or "")) for child in element]

    return convert(root)


def parse_brackets(pairs: Iterable[tuple[str, str]]) -> Params:
    """Decoded ``a[b][c]=v`` pairs → nested params (indexes as names, first appearance order)."""
    root: Params = []
    for key, value in pairs:
        base, _, rest = key.partition("[")
        path = [base, *[seg.rstrip("]") for seg in rest.split("[")]] if rest else [base]
        level = root
        for segment in path[:-1]:
            found = next((v for n, v in level if n == segment and isinstance(v, list)), None)
            if found is None:
                found = []
                level.append((segment, found))
            level = found
        level.append((path[-1], value))
    return root


async def send(
    client: httpx.AsyncClient, path: str, params: Params, transport: str = "form"
) -> httpx.Response:
    """One request by a named transport: query (GET), form, multipart, pg_xml, json, xml (raw body)."""
    if transport == "query":
        return await client.get(f"{path}?{query_string(params)}")
    if transport == "form":
        return await client.post(
            path,
            content=query_string(params).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    if transport == "multipart":
        body, content_type = multipart_body(params)
        return await client.post(path, content=body, headers={"Content-Type": content_type})
    if transport == "pg_xml":
        return await client.post(
            path,
            content=urlencode({"pg_xml": xml_document(params)}).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    if transport == "json":
        return await client.post(
            path, content=json_document(params).encode(), headers={"Content-Type": "application/json"}
        )
    if transport == "xml":
        return await client.post(
            path, content=xml_document(params).encode(), headers={"Content-Type": "text/xml; charset=utf-8"}
        )
    raise ValueError(f"unknown transport {transport}")


# --- answers ---------------------------------------------------------------------------------------


@dataclass
class Answer:
    """A Merchant API answer: HTTP 200, ``text/xml``, a ``<response>`` document."""

    response: httpx.Response
    params: Params
    script: str

    @classmethod
    def read(cls, response: httpx.Response, script: str, *, status: int = 200) -> Answer:
        assert response.status_code == status, (response.status_code, response.text[:500])
        assert response.headers["content-type"].startswith("text/xml"), response.headers["content-type"]
        assert response.content.startswith(b"<?xml"), response.content[:200]
        root = ET.fromstring(response.content)
        assert root.tag == "response", root.tag
        return cls(response, parse_xml_message(response.content), script)

    def __getitem__(self, name: str) -> Any:
        value = first(self.params, name)
        if value is None:
            raise KeyError(f"{name} not in answer: {self.params}")
        return value

    def get(self, name: str) -> Any:
        return first(self.params, name)

    def __contains__(self, name: str) -> bool:
        return any(n == name for n, _ in self.params)

    @property
    def status(self) -> str:
        return str(self["pg_status"])

    @property
    def error_code(self) -> int | None:
        code = self.get("pg_error_code")
        return int(code) if code is not None else None

    @property
    def description(self) -> str:
        return str(self.get("pg_error_description") or "")

    def verifies(self, secret: str, script: str | None = None) -> bool:
        return verify_sig(self.script if script is None else script, self.params, secret)

    def assert_ok(self, secret: str) -> Answer:
        assert self.status == "ok", self.params
        assert self.verifies(secret), f"answer signature does not verify with {self.script!r}"
        return self

    def assert_error(self, code: int, secret: str | None, names: str | None = None) -> Answer:
        """An error with this code, signed with ``secret`` (None: unsigned), naming ``names`` if given."""
        assert self.status == "error", self.params
        assert self.error_code == code, self.params
        if secret is None:
            assert "pg_sig" not in self and "pg_salt" not in self, self.params
        else:
            assert self.verifies(secret), f"error answer signature does not verify: {self.params}"
            assert len(str(self["pg_salt"])) >= 8
        if names is not None:
            assert names in self.description, (names, self.description)
        return self


@dataclass
class Shop:
    """A merchant as its integration sees greengate: id, secret and an HTTP client to the gateway."""

    client: httpx.AsyncClient
    merchant_id: int
    secret: str
    payout_secret: str = ""  # signs the payout scripts (reg2nonreg, reg2reg, payment_status)

    def message(self, script: str, fields: Mapping[str, Any] | Params, salt: str | None = None) -> Params:
        params = as_params(fields)
        if not any(n == "pg_merchant_id" for n, _ in params):
            params = [("pg_merchant_id", str(self.merchant_id)), *params]
        return signed(script, params, self.secret, salt)

    async def call(
        self,
        script: str,
        fields: Mapping[str, Any] | Params,
        *,
        transport: str = "form",
        salt: str | None = None,
    ) -> Answer:
        params = self.message(script, fields, salt)
        return Answer.read(await send(self.client, f"/{script}", params, transport), script)

    async def send_raw(self, script: str, params: Params, transport: str = "form") -> Answer:
        return Answer.read(await send(self.client, f"/{script}", params, transport), script)

    async def init(self, transport: str = "form", **fields: Any) -> Answer:
        values: dict[str, Any] = {"pg_amount": "100", "pg_description": "Order"}
        values.update({k: v for k, v in fields.items() if v is not None})
        return await self.call("init_payment.php", values, transport=transport)

    async def init_ok(self, **fields: Any) -> int:
        answer = await self.init(**fields)
        answer.assert_ok(self.secret)
        return int(answer["pg_payment_id"])

    async def status(
        self, payment_id: int | None = None, script: str = "get_status2.php", **fields: Any
    ) -> Answer:
        values = dict(fields)
        if payment_id is not None:
            values["pg_payment_id"] = str(payment_id)
        return (await self.call(script, values)).assert_ok(self.secret)


async def make_shop(
    rt: Runtime, client: httpx.AsyncClient, *, name: str = "Shop", mode: str = "test", **api_settings: Any
) -> Shop:
    async with rt.db.transaction() as session:
        merchant, creds = await create_merchant(session, rt.keyring, name=name, mode=mode, now=utcnow())
        if api_settings:
            await update_merchant_settings(
                session,
                merchant,
                MerchantApiSettings(**api_settings),
                now=utcnow(),
                allow_private_callbacks=True,
            )
    return Shop(client, creds.merchant_id, creds.secret_key, creds.payout_secret)


async def set_merchant(rt: Runtime, merchant_id: int, **api_settings: Any) -> None:
    async with rt.db.transaction() as session:
        merchant = await session.get(Merchant, merchant_id)
        assert merchant is not None
        await update_merchant_settings(
            session, merchant, MerchantApiSettings(**api_settings), now=utcnow(), allow_private_callbacks=True
        )


async def table_counts(rt: Runtime) -> dict[str, int]:
    """Rows in every table, to show that a refused request wrote nothing."""
    async with rt.db.transaction() as session:
        return {t.name: await _count(session, t) for t in Base.metadata.sorted_tables}


async def _count(session: AsyncSession, table: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(table)) or 0)


# --- the shop's callback server ------------------------------------------------------------------

ANSWER_MODES = ("ok", "rejected", "error", "500", "garbage", "unsigned", "wrong_salt", "slow")


@dataclass(frozen=True)
class Callback:
    """One request greengate sent to the shop."""

    method: str
    path: str
    raw_query: str
    query: Params
    form: Params
    pg_xml: Params | None
    body: bytes
    content_type: str
    at: datetime

    @property
    def script(self) -> str:
        return script_of(self.path)

    @property
    def params(self) -> Params:
        """The message: the pg_xml document, else the form, else the query."""
        if self.pg_xml is not None:
            return self.pg_xml
        return self.form if self.method == "POST" else self.query

    def __getitem__(self, name: str) -> Any:
        value = first(self.params, name)
        if value is None:
            raise KeyError(f"{name} not in callback: {self.params}")
        return value

    def get(self, name: str) -> Any:
        return first(self.params, name)

    def __contains__(self, name: str) -> bool:
        return any(n == name for n, _ in self.params)

    @property
    def names(self) -> set[str]:
        return {n for n, _ in self.params}

    def verifies(self, secret: str) -> bool:
        return verify_sig(self.script, self.params, secret)


class CallbackServer:
    """The shop's callback endpoints on 127.0.0.1, in a thread.

    Every request is recorded. Answers follow the mode set per path (``answer(path, *modes)``: the
    modes are used in turn, the last one stays): ``ok``/``rejected``/``error`` are signed XML answers
    echoing the callback's pg_salt, signed with the script name of the requested path; ``500`` is an
    HTTP error, ``garbage`` is not XML, ``unsigned`` has no pg_sig, ``wrong_salt`` echoes another salt
    and ``slow`` waits ``slow_seconds`` before answering ok.
    """

    def __init__(self, secret: str, *, slow_seconds: float = 2.0) -> None:
        self.secret = secret
        self.slow_seconds = slow_seconds
        self._lock = threading.Lock()
        self._modes: dict[str, list[str]] = {}
        self._default = ["ok"]
        self.callbacks: list[Callback] = []
        shop = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                callback = shop._record(self.command, self.path, body, self.headers.get("Content-Type", ""))
                status, reply, delay = shop._reply(callback)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/xml; charset=utf-8")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:  # the client gave up waiting
                    pass

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, path: str = "/shop/result.php", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def answer(self, path: str | None, *modes: str) -> None:
        """Answer requests to ``path`` (None: every path without its own modes) with these modes in turn."""
        assert modes and all(m in ANSWER_MODES for m in modes), modes
        with self._lock:
            if path is None:
                self._default = list(modes)
            else:
                self._modes[path] = list(modes)

    def received(self, path: str | None = None) -> list[Callback]:
        with self._lock:
            return [c for c in self.callbacks if path is None or c.path == path]

    def _record(self, method: str, target: str, body: bytes, content_type: str) -> Callback:
        parts = urlsplit(target)
        query = parse_brackets(parse_qsl(parts.query, keep_blank_values=True))
        form: Params = []
        pg_xml: Params | None = None
        if method == "POST" and body:
            form = _parse_form(body, content_type)
            if len(form) == 1 and form[0][0] == "pg_xml":
                pg_xml = parse_xml_message(form[0][1].encode())
        callback = Callback(
            method, parts.path, parts.query, query, form, pg_xml, body, content_type, utcnow()
        )
        with self._lock:
            self.callbacks.append(callback)
        return callback

    def _reply(self, callback: Callback) -> tuple[int, bytes, float]:
        with self._lock:
            modes = self._modes.get(callback.path, self._default)
            mode = modes.pop(0) if len(modes) > 1 else modes[0]
        if mode == "500":
            return 500, b"<html>Internal Server Error</html>", 0.0
        if mode == "garbage":
            return 200, b"OK, thanks!", 0.0
        salt = str(callback.get("pg_salt") or "")
        status = "ok" if mode in ("slow", "unsigned", "wrong_salt") else mode
        fields: Params = [("pg_status", status), ("pg_description", f"shop says {status}")]
        if mode == "unsigned":
            return 200, xml_document([*fields, ("pg_salt", salt)], root="response").encode(), 0.0
        if mode == "wrong_salt":
            salt = "not-" + salt
        answer = signed(callback.script, [*fields, ("pg_salt", salt)], self.secret)
        return (
            200,
            xml_document(answer, root="response").encode(),
            self.slow_seconds if mode == "slow" else 0.0,
        )

    def start(self) -> CallbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> CallbackServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _parse_form(body: bytes, content_type: str) -> Params:
    assert content_type.startswith("application/x-www-form-urlencoded"), content_type
    return parse_brackets(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
