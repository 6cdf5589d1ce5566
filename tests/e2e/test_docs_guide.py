"""The documentation site: built with MkDocs from docs/ and served by the gateway at /docs/guide."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from greengate.app import create_app
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gateway_with_site(database_url: str, tmp_path: Path, clean_db: None) -> Callable[[str], object]:
    @asynccontextmanager
    async def start(site_dir: str) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(make_settings(database_url, tmp_path, docs_site_dir=site_dir))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield client

    return start


async def test_a_built_site_is_served_under_docs_guide(gateway_with_site: Callable, tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "deploy").mkdir(parents=True)
    (site / "index.html").write_text("<h1>greengate guide</h1>")
    (site / "deploy" / "index.html").write_text("<h1>Deploying</h1>")
    (tmp_path / "secret.txt").write_text("not part of the site")

    async with gateway_with_site(str(site)) as client:
        bare = await client.get("/docs/guide")
        home = await client.get("/docs/guide/")
        page = await client.get("/docs/guide/deploy/")
        outside = await client.get("/docs/guide/../secret.txt")
        swagger = await client.get("/docs")

    assert bare.status_code == 308 and bare.headers["location"] == "/docs/guide/"
    assert "greengate guide" in home.text
    assert "Deploying" in page.text
    assert outside.status_code == 404 or "not part of the site" not in outside.text
    assert swagger.status_code == 200 and "swagger-ui" in swagger.text


async def test_without_a_built_site_the_guide_is_not_found(
    gateway_with_site: Callable, tmp_path: Path
) -> None:
    async with gateway_with_site(str(tmp_path / "never-built")) as client:
        assert (await client.get("/docs/guide/")).status_code == 404
        assert (await client.get("/docs")).status_code == 200


@pytest.mark.slow
async def test_mkdocs_builds_the_site_strictly_and_the_gateway_serves_it(
    gateway_with_site: Callable, tmp_path: Path
) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("the docs extra is not installed: pip install -c constraints.txt -e '.[docs]'")
    site = tmp_path / "built"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert build.returncode == 0, build.stderr[-3000:]

    async with gateway_with_site(str(site)) as client:
        tour = await client.get("/docs/guide/tour/")
        reference = await client.get("/docs/guide/merchant-api/init_payment/")
        search_index = await client.get("/docs/guide/search/search_index.json")

    assert "A 5-minute tour of the Exchange API" in tour.text  # taken from the README
    assert 'href="../test-cards/"' in tour.text  # the README's docs/ links, relative to the page
    assert "init_payment.php" in reference.text
    assert search_index.status_code == 200
    loaded = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', tour.text)
    assert loaded == []  # nothing fetched from other sites: the guide works offline
