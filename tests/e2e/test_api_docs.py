"""/docs works with no internet: Swagger UI's page names only the gateway's own assets, and the
OpenAPI document describes the operational endpoints and the Exchange API's security scheme."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx

LOCAL_ASSETS = {
    "/docs/assets/swagger-ui-bundle.js": "application/javascript",
    "/docs/assets/swagger-ui.css": "text/css",
    "/docs/assets/favicon-32x32.png": "image/png",
}


class AssetReferences(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


async def test_docs_page_references_only_assets_the_gateway_serves(app_client: httpx.AsyncClient) -> None:
    page = await app_client.get("/docs")
    assert page.status_code == 200
    refs = AssetReferences()
    refs.feed(page.text)
    assert sorted(refs.urls) == sorted(LOCAL_ASSETS)
    assert "http://" not in page.text and "https://" not in page.text
    assert "validatorUrl" in page.text  # no badge fetched from the public validator
    for url, media_type in LOCAL_ASSETS.items():
        asset = await app_client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].startswith(media_type)
        assert len(asset.content) > 500
    bundle = await app_client.get("/docs/assets/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.content


async def test_docs_asset_route_serves_nothing_but_the_bundle(app_client: httpx.AsyncClient) -> None:
    for name in ("__init__.py", "..%2F..%2Fsettings.py", "swagger-ui.js"):
        assert (await app_client.get(f"/docs/assets/{name}")).status_code == 404


async def test_redoc_is_not_offered_since_it_would_need_a_cdn(app_client: httpx.AsyncClient) -> None:
    assert (await app_client.get("/redoc")).status_code == 404


async def test_openapi_describes_operations_endpoints_and_rates_export(app_client: httpx.AsyncClient) -> None:
    spec = (await app_client.get("/openapi.json")).json()
    for path in ("/healthz", "/readyz", "/metrics", "/rates.xml"):
        operation = spec["paths"][path]["get"]
        assert operation.get("summary") and operation.get("description"), path
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]
    assert "application/xml" in spec["paths"]["/rates.xml"]["get"]["responses"]["200"]["content"]
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


async def test_openapi_declares_the_api_secret_scheme_on_every_client_endpoint(
    app_client: httpx.AsyncClient,
) -> None:
    spec = (await app_client.get("/openapi.json")).json()
    scheme = spec["components"]["securitySchemes"]["ApiSecret"]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "Api-Secret"}
    client_operations = [
        ("/api/v2/directions", "get"),
        ("/api/v2/order/create", "post"),
        ("/api/v2/order/check", "post"),
        ("/api/v2/order/cancel", "post"),
    ]
    for path, method in client_operations:
        operation = spec["paths"][path][method]
        assert operation["security"] == [{"ApiSecret": []}], path
        header_names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
        assert "Api-Secret" not in header_names, path


async def test_missing_api_secret_still_answers_in_the_exchange_error_shape(
    app_client: httpx.AsyncClient,
) -> None:
    response = await app_client.get("/api/v2/directions")
    assert response.status_code == 401
    assert response.json()["code"] == "missing_api_secret"
