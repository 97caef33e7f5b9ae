"""The dashboard's and the docs pages' files, as the app serves them (in process).

What a browser does with them is in tests/browser/; here: every vendored file is
the one its manifest names, every page asks only for files of this origin and
carries its Content-Security-Policy, and the static route serves nothing outside
its folder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from consent_ledger.api.app import create_app
from consent_ledger.api.dashboard import STATIC_ROOT
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.settings import Settings

pytestmark = pytest.mark.unit

VENDOR = STATIC_ROOT / "vendor"
PAGES = ["/", "/docs", "/redoc"]
# The SVG namespace names a URI; nothing fetches it.
NOT_FETCHED = {"http://www.w3.org/2000/svg"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_every_vendored_file_is_the_one_its_manifest_names() -> None:
    manifest = json.loads((VENDOR / "MANIFEST.json").read_text())
    listed = set()
    for folder, package in manifest.items():
        assert package["npm_package"] and package["version"] and package["license"]
        assert package["npm_integrity"].startswith("sha512-")
        licences = [name for name in package["files"] if "LICENSE" in name]
        assert licences, f"{folder}: keep the package's licence beside its files"
        for name, entry in package["files"].items():
            data = (VENDOR / folder / name).read_bytes()
            assert sha256(data) == entry["sha256"], f"{folder}/{name} changed"
            for patch in reversed(entry.get("patches", [])):
                assert data.count(patch["to"].encode()) == 1, (folder, name, patch["to"])
                data = data.replace(patch["to"].encode(), patch["from"].encode())
            if "patches" in entry:
                assert sha256(data) == entry["upstream_sha256"], f"{folder}/{name}: patch drifted"
            listed.add(f"{folder}/{name}")
    present = {
        str(path.relative_to(VENDOR))
        for path in VENDOR.rglob("*")
        if path.is_file() and path.parent != VENDOR
    }
    assert present == listed, "every vendored file is listed in MANIFEST.json"


def test_the_redoc_patch_removed_the_only_address_of_another_site_it_loads() -> None:
    bundle = (VENDOR / "redoc" / "redoc.standalone.js").read_text(encoding="utf-8")
    assert "cdn.redoc.ly" not in bundle
    assert "fonts.googleapis" not in bundle


def own_files() -> list[Path]:
    return [
        path
        for path in STATIC_ROOT.rglob("*")
        if path.is_file() and VENDOR not in path.parents and path.suffix in {".html", ".js", ".css"}
    ]


@pytest.mark.parametrize("path", own_files(), ids=lambda path: path.name)
def test_the_projects_own_files_name_no_other_site(path: Path) -> None:
    addresses = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'`)]*", path.read_text()))
    assert addresses <= NOT_FETCHED


def test_every_module_import_names_a_file_of_the_bundle() -> None:
    for module in (STATIC_ROOT / "js").glob("*.js"):
        for target in re.findall(r'^import .* from "(\./[\w-]+\.js)";$', module.read_text(), re.M):
            assert (module.parent / target).is_file(), f"{module.name} imports {target}"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The app without its lifespan: these routes read only the package's files."""
    settings = Settings(master_key=base64.b64encode(os.urandom(32)).decode())
    app = create_app(settings, policy=load_reference_policy())
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


def referenced(page: str) -> list[str]:
    return re.findall(r'\b(?:src|href|spec-url|data-openapi-url)="([^"]*)"', page)


@pytest.mark.parametrize("page", PAGES)
async def test_each_page_loads_only_files_of_this_origin_under_its_policy(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    targets = [target for target in referenced(response.text) if not target.startswith("#")]
    assert targets
    for target in targets:
        assert target.startswith("/") and not target.startswith("//"), target
        asset = await client.get(target)
        assert asset.status_code == 200, target
    assert "<script>" not in response.text  # no inline script: the policy would refuse it


async def test_static_files_are_served_with_their_types(client: httpx.AsyncClient) -> None:
    for path, media_type in [
        ("/static/js/app.js", "text/javascript"),
        ("/static/dashboard.css", "text/css"),
        ("/static/vendor/chart.js/chart.umd.min.js", "text/javascript"),
        ("/static/favicon.svg", "image/svg+xml"),
    ]:
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(media_type), path
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["etag"]


@pytest.mark.parametrize(
    "path",
    [
        "/static/../dashboard.py",
        "/static/%2e%2e/dashboard.py",
        "/static/js/%2e%2e/%2e%2e/dashboard.py",
        "/static/js",
        "/static/",
        "/static/nothing.js",
        "/static//etc/passwd",
    ],
)
async def test_the_static_route_serves_nothing_outside_its_folder(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not-found"


async def test_the_pages_are_not_part_of_the_api_description(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [
        path for path in paths if not path.startswith(("/v1/", "/healthz", "/readyz", "/metrics"))
    ]
