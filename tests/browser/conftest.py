"""A real greengate (uvicorn in a thread, worker included) on a free port, a merchant's site that
answers callbacks and receives the payer back, and Chromium driven by Playwright."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn

from greengate.api.merchant.codec import parse_form_body, parse_query, parse_xml, render_xml
from greengate.app import create_app
from greengate.clock import utcnow
from greengate.domain.params import Params, first
from greengate.domain.signature import new_salt, script_name_from_url, verify, with_signature
from greengate.runtime import Runtime
from greengate.services.merchants import create_merchant
from greengate.settings import Settings
from tests.conftest import make_settings, wipe

CHROMIUM = os.environ.get("GREENGATE_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent / "screenshots"
CALLBACK_SCRIPTS = ("check.php", "result.php")
T = TypeVar("T")


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a thread of its own: Playwright's sync API keeps an event
    loop running on the main thread, where asyncio.run would refuse to start."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, asyncio.run(make())))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="test-async")
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# greengate


@dataclass
class Gateway:
    url: str
    settings: Settings


@pytest.fixture(scope="module")
def gateway(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """`greengate serve` in-process: the ASGI app with its worker, served by uvicorn in a thread."""
    run_async(lambda: wipe(database_url))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    settings = make_settings(database_url, tmp_path_factory.mktemp("gateway"), public_base_url=url)
    app = create_app(settings, run_worker=True)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="greengate-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("greengate did not start")
        time.sleep(0.05)
    try:
        yield Gateway(url, settings)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


# ---------------------------------------------------------------------------------------------
# The merchant


@dataclass(frozen=True)
class Received:
    method: str
    script: str
    params: Params
    signed: bool  # pg_sig checked with the script name and the merchant's secret


@dataclass
class MerchantSite:
    """The shop's web server: answers check/result callbacks with signed XML and shows the pages the
    payer comes back to (success.php, failure.php). Records everything it gets."""

    merchant_id: int
    secret: str
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                params = parse_query(parts.query) if self.command == "GET" else parse_form_body(body)
                if [name for name, _ in params] == ["pg_xml"]:
                    params = parse_xml(str(params[0][1]))
                script = script_name_from_url(parts.path)
                entry = Received(self.command, script, params, verify(script, params, site.secret))
                with site._lock:
                    site.received.append(entry)
                if script in CALLBACK_SCRIPTS:
                    answer = with_signature(
                        script,
                        [("pg_status", "ok"), ("pg_description", "accepted")],
                        site.secret,
                        first(params, "pg_salt") or "",
                    )
                    payload, content_type = render_xml(answer), "text/xml; charset=utf-8"
                else:
                    verdict = "valid" if entry.signed else "INVALID"
                    payload = (
                        "<!doctype html><meta charset=utf-8><title>Shop</title>"
                        f'<h1 data-shop-page="{script}">Back at the shop</h1>'
                        f'<p data-signature="{verdict}">signature {verdict}</p>'
                    ).encode()
                    content_type = "text/html; charset=utf-8"
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True

    def url(self, script: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/shop/{script}"

    def calls(self, script: str) -> list[Received]:
        with self._lock:
            return [entry for entry in self.received if entry.script == script]

    def wait_for(self, script: str, count: int = 1, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(found := self.calls(script)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{script}: {len(found)} of {count} requests within {timeout}s")
            time.sleep(0.05)
        return found

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


async def _create_merchant(settings: Settings) -> tuple[int, str]:
    rt = Runtime.create(settings)
    try:
        async with rt.db.transaction() as session:
            merchant, creds = await create_merchant(
                session, rt.keyring, name="Green Mugs Shop", mode="test", now=utcnow()
            )
        return merchant.id, creds.secret_key
    finally:
        await rt.close()


@pytest.fixture
def shop(gateway: Gateway) -> Iterator[MerchantSite]:
    merchant_id, secret = run_async(lambda: _create_merchant(gateway.settings))
    site = MerchantSite(merchant_id, secret)
    site.start()
    try:
        yield site
    finally:
        site.stop()


@dataclass
class MerchantApi:
    """The shop's server-side calls to greengate (init_payment.php, get_status2.php)."""

    gateway: Gateway
    site: MerchantSite

    def call(self, script: str, params: Params) -> Params:
        signed = with_signature(
            script, [("pg_merchant_id", str(self.site.merchant_id)), *params], self.site.secret, new_salt()
        )
        response = httpx.post(f"{self.gateway.url}/{script}", data=dict(signed), timeout=10)
        answer = parse_xml(response.text)
        assert verify(script, answer, self.site.secret), response.text
        return answer

    def init_payment(self, **extra: str) -> tuple[int, str]:
        params: Params = [
            ("pg_amount", extra.pop("amount", "4990")),
            ("pg_currency", extra.pop("currency", "KZT")),
            ("pg_description", extra.pop("description", "Two green mugs")),
            ("pg_order_id", extra.pop("order_id", f"web-{time.monotonic_ns()}")),
            ("pg_success_url", self.site.url("success.php")),
            ("pg_failure_url", self.site.url("failure.php")),
        ]
        params += [(f"pg_{name}", value) for name, value in extra.items()]
        answer = self.call("init_payment.php", params)
        assert first(answer, "pg_status") == "ok", answer
        return int(first(answer, "pg_payment_id") or 0), first(answer, "pg_redirect_url") or ""

    def status(self, payment_id: int) -> Params:
        return self.call("get_status2.php", [("pg_payment_id", str(payment_id))])


@pytest.fixture
def merchant_api(gateway: Gateway, shop: MerchantSite) -> MerchantApi:
    return MerchantApi(gateway, shop)


# ---------------------------------------------------------------------------------------------
# The browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"Chromium not found at {CHROMIUM}: install it (apt-get install chromium) to run browser tests"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS
