"""The dashboard at ``/`` and the API docs pages, served from files in the package.

CONTRACT §8: no asset comes from another site. The dashboard is a small static
bundle (``static/``: HTML, CSS and JavaScript modules, no build step); it signs
in with a token kept in the tab's sessionStorage and reads the ``/v1`` endpoints
with ``Authorization: Bearer``, so these routes serve no data and need no token.
``/docs`` (Swagger UI) and ``/redoc`` replace FastAPI's own pages, which load
their scripts from a CDN and start them with an inline script; the libraries are
vendored under ``static/vendor/`` (see its README for versions and licences).

Every HTML page carries a Content-Security-Policy that allows scripts, styles,
images and requests from this origin only, so even a page that tried could not
reach another site.
"""

from __future__ import annotations

import html
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from consent_ledger.api.auth import public
from consent_ledger.api.errors import ApiError

STATIC_ROOT: Final = Path(str(files("consent_ledger.api").joinpath("static")))
STATIC_PREFIX: Final = "/static"

_COMMON_DIRECTIVES: Final = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Inline styles are allowed on the dashboard for the subject report: the page
# opens the report's HTML (fetched with the bearer token) as a blob: document,
# which inherits this policy, and the report styles itself with a <style> element.
DASHBOARD_CSP: Final = (
    f"{_COMMON_DIRECTIVES}; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:"
)
# Swagger UI's stylesheet draws its icons as data: URLs.
SWAGGER_CSP: Final = f"{_COMMON_DIRECTIVES}; style-src 'self'; img-src 'self' data:"
# Redoc styles itself with styled-components (<style> elements it writes at run
# time) and runs its search index in a Worker made from a blob: URL.
REDOC_CSP: Final = (
    f"{_COMMON_DIRECTIVES}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "worker-src 'self' blob:"
)

_PAGE_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}

router = APIRouter(include_in_schema=False)


def _page(body: str, csp: str) -> HTMLResponse:
    return HTMLResponse(body, headers={**_PAGE_HEADERS, "Content-Security-Policy": csp})


@router.get("/", dependencies=[public()])
async def dashboard() -> Response:
    return _page((STATIC_ROOT / "index.html").read_text(encoding="utf-8"), DASHBOARD_CSP)


@router.get(STATIC_PREFIX + "/{asset:path}", dependencies=[public()])
async def static_asset(asset: str) -> Response:
    """A file of ``static/``; anything else (``..``, a folder, a missing file) is a 404.

    Answers carry ``Cache-Control: no-cache``: the browser keeps the file but
    asks again (the ETag makes that cheap), so an upgraded package is seen at once.
    """
    path = _static_file(asset)
    media_type = _MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    headers = dict(_PAGE_HEADERS)
    if path.suffix == ".html":
        headers["Content-Security-Policy"] = DASHBOARD_CSP
    return FileResponse(path, media_type=media_type, headers=headers)


def _static_file(asset: str) -> Path:
    parts = PurePosixPath(asset).parts
    if not parts or any(part in ("..", ".") or part.startswith("/") for part in parts):
        raise _no_asset(asset)
    path = STATIC_ROOT.joinpath(*parts)
    if not path.is_file() or not path.resolve().is_relative_to(STATIC_ROOT.resolve()):
        raise _no_asset(asset)
    return path


def _no_asset(asset: str) -> ApiError:
    return ApiError(404, "not-found", f"no such file: {STATIC_PREFIX}/{asset}")


@router.get("/docs", dependencies=[public()])
async def swagger_ui(request: Request) -> Response:
    return _page(
        _docs_page(
            "API reference",
            request.app.openapi_url,
            head=f'<link rel="stylesheet" href="{STATIC_PREFIX}/vendor/swagger-ui/swagger-ui.css">',
            body=(
                '<div id="swagger-ui"></div>\n'
                f'<script src="{STATIC_PREFIX}/vendor/swagger-ui/swagger-ui-bundle.js"></script>\n'
                f'<script src="{STATIC_PREFIX}/docs.js"></script>'
            ),
        ),
        SWAGGER_CSP,
    )


@router.get("/redoc", dependencies=[public()])
async def redoc(request: Request) -> Response:
    spec = html.escape(request.app.openapi_url or "", quote=True)
    return _page(
        _docs_page(
            "API reference (Redoc)",
            request.app.openapi_url,
            head="",
            body=(
                f'<redoc spec-url="{spec}"></redoc>\n'
                f'<script src="{STATIC_PREFIX}/vendor/redoc/redoc.standalone.js"></script>'
            ),
        ),
        REDOC_CSP,
    )


def _docs_page(title: str, openapi_url: str | None, *, head: str, body: str) -> str:
    spec = html.escape(openapi_url or "", quote=True)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>consent-ledger: {html.escape(title)}</title>
<link rel="icon" href="{STATIC_PREFIX}/favicon.svg" type="image/svg+xml">
{head}
</head>
<body data-openapi-url="{spec}">
{body}
</body>
</html>
"""
