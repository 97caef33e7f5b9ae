"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against
`consent-ledger dev --demo` run as a user runs `make run`.

- ``stack`` (module): one `dev --demo` (embedded broker and PostgreSQL, worker,
  API, demo producer) with at least three open violations from the demo and a
  signed checkpoint, and the
  token to sign in with (``<data-dir>/admin.token`` once `dev` writes one; until
  the API checks tokens, any token does).
- ``browser`` (module): headless Chromium at ``LEDGER_TEST_CHROMIUM`` (default
  ``/usr/bin/chromium``); Playwright's own browser download is never used.
- ``visit`` (function): a fresh browser context on the stack's URL that records
  every request. At the end of the test it fails if any request went to another
  host, if the Content-Security-Policy refused anything, or if a page threw.
- ``artifacts`` (session): the folder screenshots and PDFs go to, printed at
  the end of the run; ``LEDGER_BROWSER_ARTIFACTS`` chooses it.

Without Chromium the tests are skipped, with a reason that says how to install it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import postgres_parent_dir
from tests.e2e.test_dev import DevRun

CHROMIUM = Path(os.environ.get("LEDGER_TEST_CHROMIUM", "/usr/bin/chromium"))
INSTALL_HINT = (
    "apt-get install -y chromium (Debian's package; .ci/run installs it when run as root), "
    "or set LEDGER_TEST_CHROMIUM to a Chromium binary"
)
# What the machine's probe found Chromium needs on a closed network: without the
# background-networking flags it tries to reach Google's hosts at every start.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PLACEHOLDER_TOKEN = "dashboard-browser-test"  # while the API checks no tokens
WAIT_MS = 30_000  # for one page state; the stack's start has its own bound (DevRun)


def _skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM}: {INSTALL_HINT}"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is missing: make install (it is a dev dependency)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _skip_reason()
    if reason is None:
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.skip(reason=reason))


_artifact_folder: list[Path] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _artifact_folder and any(_artifact_folder[0].iterdir()):
        terminalreporter.write_line(
            f"browser test artifacts (screenshots, PDFs): {_artifact_folder[0]}"
        )


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Outside the repository, kept after the run for a person to look at."""
    configured = os.environ.get("LEDGER_BROWSER_ARTIFACTS")
    folder = (
        Path(configured)
        if configured
        else Path(tempfile.gettempdir()) / "consent-ledger-browser" / time.strftime("%Y%m%d-%H%M%S")
    )
    folder.mkdir(parents=True, exist_ok=True)
    _artifact_folder[:] = [folder]
    return folder


@dataclass
class Stack:
    """A running `dev --demo` and how to reach it."""

    url: str
    token: str
    data_dir: Path
    client: httpx.Client

    def api(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with postgres_parent_dir() as parent:
        data_dir = parent / "ledger-data"
        run = DevRun(data_dir, "--demo")
        try:
            run.wait_running()
            assert f"dashboard: {run.api_url}/" in run.output()  # what `make run` shows
            token_file = data_dir / "admin.token"
            token = token_file.read_text().strip() if token_file.is_file() else PLACEHOLDER_TOKEN
            client = httpx.Client(
                base_url=run.api_url, timeout=10, headers={"Authorization": f"Bearer {token}"}
            )

            def open_violations() -> bool:
                response = client.get("/v1/violations", params={"status": "open", "limit": 3})
                return response.status_code == 200 and len(response.json()["items"]) >= 3

            run.wait_for(open_violations, "three open violations from the demo")

            def signed_checkpoint() -> bool:  # the subject report and the health page show it
                return client.get("/v1/ledger/checkpoints/latest").status_code == 200

            run.wait_for(signed_checkpoint, "a signed checkpoint")
            yield Stack(run.api_url, token, data_dir, client)
            client.close()
        finally:
            run.close()
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class Visit:
    """One browser context on the stack, and what its pages did."""

    context: Any
    page: Any
    origin: str
    requests: list[Any] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def on_request(self, request: Any) -> None:
        self.requests.append(request)
        if not is_same_origin(request.url, self.origin):
            self.foreign.append(request.url)

    def on_console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.refused.append(message.text[:300])

    def watch(self, page: Any) -> None:
        page.on("console", self.on_console)
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))


def is_same_origin(url: str, origin: str) -> bool:
    """Whether ``url`` is this origin's: blob: URLs carry their creator's origin,
    data: URLs fetch nothing."""
    if url.startswith("data:"):
        return True
    if url.startswith("blob:"):
        url = url.removeprefix("blob:")
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" == origin


@pytest.fixture
async def visit(browser: Any, stack: Stack) -> AsyncIterator[Visit]:
    context = await browser.new_context(
        base_url=stack.url, viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    seen = Visit(context, page, stack.url)
    context.on("request", seen.on_request)  # every page of the context, popups included
    context.on("page", seen.watch)
    seen.watch(page)
    try:
        yield seen
    finally:
        await context.close()
    assert not seen.foreign, f"requests to another host: {seen.foreign}"
    assert not seen.refused, f"the Content-Security-Policy refused: {seen.refused}"
    assert not seen.errors, f"uncaught errors in the page: {seen.errors}"
