"""What CLI commands use to call a running API: ``LEDGER_API_URL`` (default the
``LEDGER_API_HOST:LEDGER_API_PORT`` the API listens on) with the bearer token in
``LEDGER_TOKEN`` (CONTRACT §7; ``consent-ledger dev`` prints the line that sets it).
Standard library only, so that a command starts fast."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from consent_ledger.settings import Settings


class ApiCallFailed(Exception):
    """The API refused or could not be reached; the message says what to do."""


def api_url(settings: Settings) -> str:
    if settings.api_url:
        return settings.api_url.rstrip("/")
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host  # noqa: S104  # a listening address, mapped to one to call
    return f"http://{host}:{settings.api_port}"


def call_api(settings: Settings, method: str, path: str, body: Any = None) -> Any:
    """The JSON the API answers to ``method path`` (None for an empty answer)."""
    content = fetch_from_api(settings, method, path, body)
    return json.loads(content) if content else None


def fetch_from_api(
    settings: Settings,
    method: str,
    path: str,
    body: Any = None,
    *,
    accept: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """The bytes the API answers to ``method path`` (``body`` sent as JSON), for
    an answer that is not JSON (an HTML report) or is written as it came."""
    if not settings.token:
        raise ApiCallFailed(
            "set LEDGER_TOKEN to a token of the API (`consent-ledger dev` prints "
            "`export LEDGER_TOKEN=...`; `consent-ledger token create` issues one)"
        )
    url = api_url(settings) + path
    if not url.startswith(("http://", "https://")):
        raise ApiCallFailed(f"LEDGER_API_URL is not an http(s) URL: {url}")
    sent = {**(headers or {}), "Authorization": f"Bearer {settings.token}", "Accept": accept}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        sent["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=sent, method=method)  # noqa: S310  # scheme checked above
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            content: bytes = answer.read()
    except urllib.error.HTTPError as exc:
        raise ApiCallFailed(f"{method} {url}: {exc.code} {_error_message(exc)}") from None
    except OSError as exc:
        raise ApiCallFailed(f"cannot reach the API at {url}: {exc}") from None
    return content


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        document = json.loads(exc.read())
        return str(document["error"]["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return str(exc.reason)
