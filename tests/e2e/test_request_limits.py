"""GREENGATE_MAX_REQUEST_BYTES on every route: counted as the bytes arrive, before authentication,
chunked bodies and multipart totals included, refused with 413 in the route's own format.

Bounded memory is shown by the bytes the gateway took from the client: the body is produced lazily
by the test, and the gateway must stop pulling chunks once the limit is crossed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from defusedxml import ElementTree

from greengate.app import create_app
from tests.conftest import make_settings

LIMIT = 64 * 1024
CHUNK = 8 * 1024
BOUNDARY = "gg-boundary-7c1f"


@dataclass
class Producer:
    """A lazily produced body that counts the bytes the server actually took."""

    chunks: int
    chunk: bytes
    prefix: bytes = b""
    sent: int = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.prefix:
            self.sent += len(self.prefix)
            yield self.prefix
        for _ in range(self.chunks):
            self.sent += len(self.chunk)
            yield self.chunk

    @property
    def total(self) -> int:
        return len(self.prefix) + self.chunks * len(self.chunk)


def multipart_fields(count: int, size: int) -> Producer:
    """`count` form fields of `size` bytes each, as one multipart body."""
    part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"\r\n\r\n'.encode() + b"x" * size + b"\r\n"
    )
    return Producer(count, part)


@pytest.fixture
async def http(database_url: str, tmp_path: Path, clean_db: None) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(database_url, tmp_path, max_request_bytes=LIMIT))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def assert_bounded(body: Producer) -> None:
    assert body.sent < body.total
    assert body.sent <= LIMIT + len(body.chunk) + len(body.prefix)


async def test_chunked_oversize_body_to_exchange_cancel_is_refused_before_authentication(
    http: httpx.AsyncClient,
) -> None:
    body = Producer(10_000, b"[" + b"1," * (CHUNK // 2 - 1) + b"1")  # 80 MB if read to the end
    response = await http.post(
        "/api/v2/order/cancel",
        content=body,
        headers={"Api-Secret": "wrong", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert response.json()["result"] == "false"
    assert_bounded(body)


async def test_chunked_oversize_body_to_order_create_is_refused(http: httpx.AsyncClient) -> None:
    body = Producer(10_000, b" " * CHUNK)
    response = await http.post(
        "/api/v2/order/create",
        content=body,
        headers={"Api-Secret": "wrong", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert_bounded(body)


async def test_declared_oversize_body_is_refused_without_reading_it(http: httpx.AsyncClient) -> None:
    body = Producer(LIMIT // CHUNK + 1, b"a" * CHUNK)
    response = await http.post(
        "/api/v2/directions",
        content=body,
        headers={"Content-Length": str(body.total), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert body.sent <= CHUNK


@pytest.mark.parametrize("path", ["/admin/login", "/pay/no-such-token/card", "/cards/no-such-token/card"])
async def test_many_large_form_fields_to_pages_get_html_413(http: httpx.AsyncClient, path: str) -> None:
    body = multipart_fields(200, 64 * 1024)  # 200 fields of 64 KB
    response = await http.post(
        path, content=body, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/html")
    assert "Request too large" in response.text
    assert_bounded(body)


async def test_many_urlencoded_fields_to_console_login_are_refused(http: httpx.AsyncClient) -> None:
    body = Producer(10_000, b"&username=" + b"a" * CHUNK)
    response = await http.post(
        "/admin/login", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 413
    assert_bounded(body)


@pytest.mark.parametrize("path", ["/init_payment.php", "/api/reg2nonreg", "/v1/merchant/1/cardstorage/add"])
async def test_oversize_multipart_to_merchant_api_gets_xml_413(http: httpx.AsyncClient, path: str) -> None:
    body = multipart_fields(200, 64 * 1024)
    response = await http.post(
        path, content=body, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )
    assert response.status_code == 413
    root = ElementTree.fromstring(response.content)
    assert root.findtext("pg_status") == "error"
    assert root.findtext("pg_error_code") == "200"
    assert_bounded(body)


async def test_body_under_the_limit_still_reaches_the_endpoint(http: httpx.AsyncClient) -> None:
    body = Producer(4, b" " * CHUNK, prefix=b"{}")
    response = await http.post(
        "/api/v2/order/create",
        content=body,
        headers={"Api-Secret": "wrong", "Content-Type": "application/json"},
    )
    assert response.status_code == 401
    assert body.sent == body.total
