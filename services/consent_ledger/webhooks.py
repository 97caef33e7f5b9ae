"""Alert webhooks (CONTRACT §8): the file that names them, which alerts each
takes, how a POST is signed, and when a failed one is tried again.

``LEDGER_WEBHOOKS`` names a YAML or JSON file (JSON is YAML)::

    webhooks:
      - url: https://alerts.example.com/ledger     # http:// or https://
        secret_file: /run/secrets/ledger-webhook   # or secret: "..." (prefer the file)
        name: pager                                # optional: shown in stats, metrics, logs
                                                   # (else scheme://host:port/..., no path)
        rule: [consent-withdrawn, shared-after-erasure]   # optional filter
        severity: [critical]                       # optional filter

A hook takes an alert when its ``rule`` list (if given) names the violation's
rule and its ``severity`` list (if given) names its severity. ``secret_file``
is read once at start, relative to the webhooks file's folder, trailing line
breaks dropped. A file that cannot be used is refused at start with the key
and the problem (:class:`WebhooksError`).

What a receiver gets, one POST per alert per hook:

* the body: the alert's JSON exactly as published to ``ledger.violations``;
* ``X-Ledger-Signature: sha256=<hex>``: HMAC-SHA256, keyed with the secret's
  UTF-8 bytes, of the body's bytes and nothing else (:func:`signature`);
* ``X-Ledger-Timestamp``: seconds since the epoch when this attempt was sent
  (not covered by the signature);
* ``X-Ledger-Delivery``: the delivery's id (a UUID), the same on every attempt
  of that alert to that hook, so a receiver can drop a repeat.

Only what reads the file touches a disk here: the rest is pure.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from consent_ledger.core.verdicts import Rule, Severity

SIGNATURE_HEADER = "X-Ledger-Signature"
TIMESTAMP_HEADER = "X-Ledger-Timestamp"
DELIVERY_HEADER = "X-Ledger-Delivery"
_KEYS = frozenset({"url", "secret", "secret_file", "name", "rule", "severity"})


class WebhooksError(ValueError):
    """The webhooks file cannot be used; the message names file, key and problem."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Webhook:
    """One receiver of alerts: where, with which secret, for which alerts.

    ``name`` is what stats, metrics and logs show: the file's ``name``, else the
    URL's scheme, host and port, never its path (:func:`public_label`).
    The URL itself and the secret are never shown."""

    url: str
    secret: bytes
    name: str
    rules: frozenset[str] | None = None  # None: every rule
    severities: frozenset[str] | None = None  # None: every severity

    def takes(self, alert: Mapping[str, Any]) -> bool:
        """Whether this hook wants ``alert`` (a ``ledger.violations`` message)."""
        violation = alert.get("violation")
        if not isinstance(violation, Mapping):
            return False
        if self.rules is not None and violation.get("rule") not in self.rules:
            return False
        return self.severities is None or violation.get("severity") in self.severities

    def __repr__(self) -> str:  # never the secret, nor the URL's credentials
        return f"Webhook(name={self.name!r})"


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Ledger-Signature`` value: ``sha256=`` and the lower-case hex
    HMAC-SHA256 of ``body`` keyed with ``secret``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signed_headers(secret: bytes, body: bytes, delivery_id: str, now_s: float) -> dict[str, str]:
    """The headers of one POST of ``body``."""
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(secret, body),
        TIMESTAMP_HEADER: str(int(now_s)),
        DELIVERY_HEADER: delivery_id,
    }


def retry_delay(
    failures: int, base_s: float, cap_s: float, draw: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after the ``failures``-th failure: exponential backoff
    (``base_s``, doubling, at most ``cap_s``) with "equal jitter": half of it
    fixed, half drawn at random, so that alerts that failed together (a receiver
    that was down) do not all come back at the same instant."""
    ceiling = min(cap_s, base_s * 2.0 ** min(max(failures - 1, 0), 62))
    return ceiling / 2 + ceiling / 2 * draw()


def public_label(url: str) -> str:
    """What may be shown of ``url``: its scheme, host and port, with ``/...`` in
    place of a path. User, password, query and fragment are dropped, and so is
    the path: chat services' incoming webhooks (Slack's ``/services/T/B/SECRET``,
    Discord's ``/api/webhooks/ID/TOKEN``) carry their credential there, and
    ``/v1/stats``, which analysts read, shows this label. Two hooks this leaves
    alike need a ``name`` each (:func:`parse_webhooks` says so)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    path = "/..." if parts.path not in ("", "/") else parts.path
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def load_webhooks(path: Path) -> tuple[Webhook, ...]:
    """The hooks the file at ``path`` names, secrets read; :class:`WebhooksError`
    naming the key and the problem when it cannot be used."""
    source = str(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WebhooksError(source, "", f"cannot read it: {exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WebhooksError(source, "", f"not YAML or JSON: {exc}") from None
    return parse_webhooks(document, source, read_secret=_secret_reader(path.parent, source))


def parse_webhooks(
    document: Any, source: str, read_secret: Callable[[str, str], bytes]
) -> tuple[Webhook, ...]:
    """The hooks of a parsed webhooks file; ``read_secret(key, file)`` reads a
    ``secret_file``."""
    if not isinstance(document, Mapping) or set(document) != {"webhooks"}:
        raise WebhooksError(source, "", "must be a mapping with one key, webhooks (a list)")
    entries = document["webhooks"]
    if not isinstance(entries, list):
        raise WebhooksError(source, "webhooks", "must be a list of hooks")
    hooks = [
        _hook(entry, f"webhooks[{index}]", source, read_secret)
        for index, entry in enumerate(entries)
    ]
    _refuse_twice([hook.url for hook in hooks], "url", source)
    _refuse_twice([hook.name for hook in hooks], "name", source)
    return tuple(hooks)


def _hook(entry: Any, key: str, source: str, read_secret: Callable[[str, str], bytes]) -> Webhook:
    if not isinstance(entry, Mapping):
        raise WebhooksError(source, key, "must be a mapping with url and secret_file or secret")
    unknown = sorted(str(name) for name in set(entry) - _KEYS)
    if unknown:
        raise WebhooksError(
            source, f"{key}.{unknown[0]}", "unknown key; known: " + ", ".join(sorted(_KEYS))
        )
    url = entry.get("url")
    if not isinstance(url, str) or not _is_http_url(url):
        raise WebhooksError(
            source, f"{key}.url", f"{_shown(url)} is not an http:// or https:// URL"
        )
    if ("secret" in entry) == ("secret_file" in entry):
        raise WebhooksError(source, key, "give exactly one of secret_file and secret")
    if "secret_file" in entry:
        if not isinstance(entry["secret_file"], str) or not entry["secret_file"]:
            raise WebhooksError(source, f"{key}.secret_file", "must be a file name")
        secret = read_secret(f"{key}.secret_file", entry["secret_file"])
    else:
        if not isinstance(entry["secret"], str):
            raise WebhooksError(source, f"{key}.secret", "must be a string")
        secret = entry["secret"].encode()
    if not secret:
        raise WebhooksError(source, key, "the secret is empty")
    name = entry.get("name", public_label(url))
    if not isinstance(name, str) or not name.strip():
        raise WebhooksError(source, f"{key}.name", "must be a non-empty string")
    rules = _choices(entry, "rule", key, source, {str(rule) for rule in Rule})
    severities = _choices(entry, "severity", key, source, {str(level) for level in Severity})
    return Webhook(url, secret, name, rules, severities)


def _choices(
    entry: Mapping[str, Any], name: str, key: str, source: str, known: set[str]
) -> frozenset[str] | None:
    """A filter: a name or a list of names, each one of ``known`` (a misspelt
    filter would silently drop every alert)."""
    if name not in entry:
        return None
    value = entry[name]
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise WebhooksError(source, f"{key}.{name}", "must be a name or a non-empty list of names")
    for item in values:
        if item not in known:
            raise WebhooksError(
                source, f"{key}.{name}", f"{item!r} is not one of " + ", ".join(sorted(known))
            )
    return frozenset(values)


def _refuse_twice(values: Sequence[str], what: str, source: str) -> None:
    for index, value in enumerate(values):
        if value in values[:index]:
            if what == "url":
                problem = f"{public_label(value)!r} is named twice"
            else:
                problem = (
                    f"{value!r} is named twice (a hook without a name is shown as its URL's "
                    "scheme, host and port: give hooks that share them a name each)"
                )
            raise WebhooksError(source, f"webhooks[{index}].{what}", problem)


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number raises here
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _shown(value: Any) -> str:
    """A refused URL as it may be printed."""
    if isinstance(value, str):
        return repr(value.partition("://")[0] + "://..." if "://" in value else value[:40])
    return "missing" if value is None else f"a {type(value).__name__}"


def _secret_reader(folder: Path, source: str) -> Callable[[str, str], bytes]:
    def read(key: str, name: str) -> bytes:
        try:
            return (folder / name).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise WebhooksError(source, key, f"cannot read {name}: {exc.strerror}") from None

    return read
