"""Swagger UI renders the API reference in Chromium with every request outside the gateway refused."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from tests.browser.conftest import Gateway

pytestmark = pytest.mark.slow


def test_docs_render_offline(browser: Any, gateway: Gateway) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    gateway_origin = urlsplit(gateway.url).netloc
    refused: list[str] = []
    served: list[str] = []

    def only_the_gateway(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).netloc == gateway_origin:
            served.append(urlsplit(url).path)
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    page.route("**/*", only_the_gateway)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{gateway.url}/docs")
        page.wait_for_selector(".opblock-summary-path")
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert any("/api/v2/order/create" in p for p in paths)
        assert any("/healthz" in p for p in paths)
        assert page.locator(".btn.authorize").count() == 1  # the Api-Secret scheme
        assert refused == []
        assert errors == []
        assert "/docs/assets/swagger-ui-bundle.js" in served and "/openapi.json" in served
    finally:
        context.close()
