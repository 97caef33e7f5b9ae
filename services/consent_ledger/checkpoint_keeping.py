"""``consent-ledger checkpoint save FILE``: keep the latest signed checkpoint outside the ledger.

A checkpoint in the ledger's own database can be deleted together with what
it signed; a copy the auditor keeps cannot (CONTRACT §10). This fetches
``GET /v1/ledger/checkpoints/latest`` from the API, checks its Ed25519
signature under the public key the auditor pinned (never one the same API
hands out), and writes it to a new file, which ``verify --trusted-checkpoint``
and ``verify-proof --trusted-checkpoint`` take.

The file holds UTF-8 JSON, two-space indented, keys sorted, ending in a line
break, in the shape the API answers::

    {"checkpoint": <signed checkpoint, checkpoints.py>, "id": <the ledger's number for it>}

An existing file is never replaced: a checkpoint kept earlier is the evidence
a later rewrite would have to contradict, so a schedule writes a new file each
time (e.g. named by date).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consent_ledger.integrity.checkpoints import key_id, verify_checkpoint
from consent_ledger.integrity.trust import TrustedCheckpoint, parse_trusted_checkpoint

LATEST_PATH = "/v1/ledger/checkpoints/latest"


class CheckpointNotFetched(Exception):
    """The API could not be asked, or answered something else than a checkpoint."""


class CheckpointNotTrusted(Exception):
    """The API answered a checkpoint whose signature does not hold under the pinned key."""


@dataclass(frozen=True, slots=True)
class SavedCheckpoint:
    path: Path
    kept: TrustedCheckpoint

    def describe(self) -> str:
        cp = self.kept.signed.checkpoint
        entries = sum(head.size for head in cp.tree_heads)
        return (
            f"saved checkpoint {self.kept.stored_id} of log {cp.log_id!r} to {self.path}: "
            f"{len(cp.tree_heads)} partitions, {entries} entries, issued "
            f"{cp.issued_at.isoformat()}, signed by key {self.kept.signed.key_id}"
        )


def fetch_latest(api_url: str, token: str | None, *, timeout_s: float = 30.0) -> bytes:
    """The body of ``GET {api_url}/v1/ledger/checkpoints/latest`` (bearer ``token`` if given)."""
    url = api_url.rstrip("/") + LATEST_PATH
    if not url.startswith(("http://", "https://")):
        raise CheckpointNotFetched(f"the API's URL must start with http:// or https://: {api_url}")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        raise CheckpointNotFetched(f"{url} answered {exc.code}: {_api_message(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CheckpointNotFetched(f"cannot reach {url}: {reason}") from None


def _api_message(error: urllib.error.HTTPError) -> str:
    try:
        body = orjson.loads(error.read())
        message = body["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError, OSError):
        return error.reason or "no message"
    hint = (
        " (set LEDGER_TOKEN to a token with the auditor role)" if error.code in (401, 403) else ""
    )
    return f"{message}{hint}"


def save_latest_checkpoint(
    api_url: str, token: str | None, public_key: Ed25519PublicKey, path: Path
) -> SavedCheckpoint:
    """Fetch, check and write the latest checkpoint (module docstring).

    Raises CheckpointNotFetched, CheckpointNotTrusted (nothing is written then),
    FileExistsError when ``path`` exists, OSError when it cannot be written.
    """
    if path.exists():
        raise FileExistsError(f"{path} exists; a kept checkpoint is never replaced")
    body = fetch_latest(api_url, token)
    try:
        kept = parse_trusted_checkpoint(body, f"the answer of {api_url}")
    except ValueError as exc:
        raise CheckpointNotFetched(str(exc)) from None
    if not verify_checkpoint(kept.signed, public_key):
        if kept.signed.key_id != key_id(public_key):
            raise CheckpointNotTrusted(
                f"the checkpoint names signing key {kept.signed.key_id}, the key given is "
                f"{key_id(public_key)}: a wrong --public-key, or a key rotated since"
            )
        raise CheckpointNotTrusted("the checkpoint's signature does not verify: forged or altered")
    document = kept.signed.to_json_dict()
    if kept.stored_id is not None:
        document = {"id": kept.stored_id, "checkpoint": document}
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    write_new_file(path, text + b"\n")
    return SavedCheckpoint(path, kept)


def write_new_file(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path``, which must not exist, all or nothing: written
    beside it, flushed to disk, then linked into place (a link never replaces)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    try:
        os.link(temporary, path)
    finally:
        temporary.unlink()
