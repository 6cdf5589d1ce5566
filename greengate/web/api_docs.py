"""The interactive API reference at /docs and the documentation site at /docs/guide, served with no
request leaving the gateway.

Swagger UI's script and stylesheet come from the `fastapi-swagger` distribution, which ships a current
Swagger UI build as package data; the gateway reads them once and serves them from /docs/assets/. The
guide is the MkDocs site built from docs/ (`mkdocs build`), mounted only when it has been built."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

import greengate

router = APIRouter(include_in_schema=False)

ASSETS_PACKAGE = "fastapi_swagger.resources"
ASSETS = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


@cache
def _asset(name: str) -> bytes:
    return resources.files(ASSETS_PACKAGE).joinpath(name).read_bytes()


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui(request: Request) -> Response:
    root = request.scope.get("root_path", "").rstrip("/")
    page = get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} API reference",
        swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
        swagger_favicon_url=f"{root}/docs/assets/favicon-32x32.png",
        # validatorUrl: no badge fetched from the public validator; the page stays offline.
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True, "tryItOutEnabled": False},
    )
    return HTMLResponse(page.body, headers={"Cache-Control": "no-cache"})


@router.get("/docs/assets/{name}")
async def swagger_asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(_asset(name), media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})


GUIDE_PATH = "/docs/guide"


def guide_directory(configured: str) -> Path | None:
    """The built site to serve: the configured directory, else site/ of this checkout; None when
    there is no built site there."""
    root = Path(configured) if configured else Path(greengate.__file__).resolve().parents[1] / "site"
    return root if (root / "index.html").is_file() else None


def mount_guide(app: FastAPI, configured: str) -> bool:
    directory = guide_directory(configured)
    if directory is None:
        return False

    @app.get(GUIDE_PATH, include_in_schema=False)
    async def guide_root() -> Response:
        return RedirectResponse(f"{GUIDE_PATH}/", status_code=308)

    app.mount(GUIDE_PATH, StaticFiles(directory=directory, html=True), name="guide")
    return True
