"""The tokens ``consent-ledger dev`` hands out (CONTRACT §7): an ``admin`` token
for the person at the terminal, kept in ``<data-folder>/admin.token``, and a
``publisher`` + ``eraser`` token for the demo producer, bound to the demo's
sources. Both are files of mode 0600 beside the database they are valid in,
and are reused across runs while that database still knows them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, NamedTuple

import asyncpg

from consent_ledger.store.tokens import TokenStore

ADMIN_TOKEN_FILE: Final = "admin.token"  # noqa: S105  # file names, not secrets
DEMO_TOKEN_FILE: Final = "demo-publisher.token"  # noqa: S105
ADMIN_NAME: Final = "dev-admin"
DEMO_NAME: Final = "dev-demo-publisher"
# Every `source` the demo producer publishes with.
DEMO_SOURCES: Final = (
    "urn:system:crm",
    "urn:system:integration-hub",
    "urn:system:privacy-portal",
    "urn:system:visitor-kiosk",
)


class DevTokens(NamedTuple):
    admin: str
    demo_publisher: str
    admin_file: Path


async def ensure_dev_tokens(connection: asyncpg.Connection, data_dir: Path) -> DevTokens:
    store = TokenStore(connection)
    admin = await _ensure(store, data_dir / ADMIN_TOKEN_FILE, ADMIN_NAME, ["admin"], ())
    demo = await _ensure(
        store, data_dir / DEMO_TOKEN_FILE, DEMO_NAME, ["publisher", "eraser"], DEMO_SOURCES
    )
    return DevTokens(admin, demo, data_dir / ADMIN_TOKEN_FILE)


async def _ensure(
    store: TokenStore, path: Path, name: str, roles: list[str], sources: tuple[str, ...]
) -> str:
    kept = _kept_token(path)
    if kept is not None:
        caller = await store.caller(kept)
        if caller is not None and caller.name == name:
            return kept
    # The file is gone, or names a token this database does not know (another
    # database, or one revoked): a fresh one replaces the token of that name.
    await store.revoke(name)
    token, _ = await store.issue(name, roles, sources=list(sources))
    write_secret(path, token + "\n")
    return token


def _kept_token(path: Path) -> str | None:
    """The token an earlier run left in ``path`` (a few bytes: read at once)."""
    try:
        return path.read_text("ascii", errors="replace").strip()
    except FileNotFoundError:
        return None


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        os.fchmod(file.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
        file.write(text)
