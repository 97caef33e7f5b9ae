"""CloudEvents binary mode (CONTRACT §1): attributes in ``ce_*`` Kafka headers,
``data`` in the record value. Turned into the structured form intake checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consent_ledger.core.intake import InvalidJson, parse_json

_PREFIX = "ce_"


def is_binary_mode(headers: Sequence[tuple[str, bytes]]) -> bool:
    """A record is in binary mode when it carries a ``ce_specversion`` header."""
    return any(name == "ce_specversion" for name, _ in headers)


def structured_from_binary(headers: Sequence[tuple[str, bytes]], value: bytes) -> dict[str, Any]:
    """The structured-mode object of a binary-mode record.

    Header values are UTF-8 strings; ``data`` is the value parsed as JSON, or,
    when it is not JSON, the raw text (which intake then refuses as not an
    object). ``content-type`` becomes ``datacontenttype``.
    """
    event: dict[str, Any] = {}
    for name, raw in headers:
        text = raw.decode("utf-8", errors="replace") if raw is not None else ""
        if name.startswith(_PREFIX):
            event[name[len(_PREFIX) :]] = text
        elif name.lower() == "content-type":
            event["datacontenttype"] = text
    if value:
        try:
            event["data"] = parse_json(value)  # as intake reads structured records
        except InvalidJson:
            event["data"] = value.decode("utf-8", errors="replace")
    return event


def binary_headers(event: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The ``ce_*`` headers of an event, for producers that send binary mode."""
    headers = [
        (f"{_PREFIX}{name}", str(value).encode())
        for name, value in event.items()
        if name not in ("data", "datacontenttype")
    ]
    headers.append(("content-type", str(event.get("datacontenttype", "application/json")).encode()))
    return headers
