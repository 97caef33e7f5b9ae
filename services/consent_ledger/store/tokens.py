"""Opaque bearer tokens (CONTRACT §7): issued, listed, revoked, and looked up.

A token is ``clt_`` and 43 characters of base64url: 256 random bits. Only its
SHA-256 is stored (``api_tokens``, migration 007): the bits are random, so a
slow password hash would add nothing against guessing, and a lookup stays one
index probe per request. Revocation takes effect at the next request: nothing
is cached.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Final, NamedTuple

import asyncpg

from consent_ledger.core.roles import Caller, Role, known_roles, parse_roles

TOKEN_PREFIX: Final = "clt_"  # noqa: S105  # a marker, not a secret
TOKEN_BYTES: Final = 32
# How stale `last_used_at` may be before a request writes it again: a busy
# token would otherwise turn every read into a write.
LAST_USE_RESOLUTION: Final = timedelta(minutes=1)


class TokenError(ValueError):
    """A token cannot be issued or revoked as asked; the message says why."""


class TokenRecord(NamedTuple):
    """What is kept about a token: never the token itself."""

    name: str
    roles: tuple[str, ...]
    sources: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


def new_token() -> str:
    """A fresh token: the prefix (so it is told from a JWT, and found by secret
    scanners) and 256 bits from the operating system's CSPRNG."""
    random = base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=")
    return TOKEN_PREFIX + random.decode("ascii")


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def is_opaque_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX)


ISSUE: Final = """
INSERT INTO api_tokens (name, token_sha256, roles, sources, expires_at)
VALUES ($1, $2, $3, $4, $5)
RETURNING name, roles, sources, created_at, expires_at, last_used_at, revoked_at
"""

LIST: Final = """
SELECT name, roles, sources, created_at, expires_at, last_used_at, revoked_at
FROM api_tokens
WHERE $1 OR revoked_at IS NULL
ORDER BY name, id
"""

REVOKE: Final = """
UPDATE api_tokens SET revoked_at = now()
WHERE name = $1 AND revoked_at IS NULL
RETURNING name
"""

# A token counts while it is neither revoked nor expired.
LIVE_BY_DIGEST: Final = """
SELECT id, name, roles, sources, last_used_at < now() - $2::interval OR last_used_at IS NULL
       AS stale
FROM api_tokens
WHERE token_sha256 = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
"""

TOUCH: Final = "UPDATE api_tokens SET last_used_at = now() WHERE id = $1"


class TokenStore:
    """The ``api_tokens`` table, through a pool or one connection (the CLI's)."""

    def __init__(self, db: asyncpg.Pool | asyncpg.Connection) -> None:
        self._db = db

    async def issue(
        self,
        name: str,
        roles: list[str],
        *,
        sources: list[str] | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[str, TokenRecord]:
        """A new token and its record; the token is returned once and never kept."""
        checked = _checked(name, roles, sources or [])
        token = new_token()
        try:
            row = await self._db.fetchrow(ISSUE, name, token_digest(token), *checked, expires_at)
        except asyncpg.UniqueViolationError:
            raise TokenError(
                f"a token named {name!r} exists; revoke it first or choose another name"
            ) from None
        assert row is not None
        return token, _record(row)

    async def tokens(self, *, include_revoked: bool = False) -> list[TokenRecord]:
        return [_record(row) for row in await self._db.fetch(LIST, include_revoked)]

    async def revoke(self, name: str) -> bool:
        """End the live token named ``name`` at once; False when there is none."""
        return await self._db.fetchval(REVOKE, name) is not None

    async def caller(self, token: str) -> Caller | None:
        """Who presents ``token``: None when it is unknown, revoked or expired."""
        row = await self._db.fetchrow(LIVE_BY_DIGEST, token_digest(token), LAST_USE_RESOLUTION)
        if row is None:
            return None
        if row["stale"]:
            await self._db.execute(TOUCH, row["id"])
        return Caller(
            name=row["name"],
            roles=known_roles(row["roles"]),
            sources=frozenset(row["sources"]),
            kind="token",
        )


def _checked(name: str, roles: list[str], sources: list[str]) -> tuple[list[str], list[str]]:
    if not name.strip():
        raise TokenError("a token needs a name")
    if not roles:
        raise TokenError("a token needs at least one role")
    try:
        parsed = parse_roles(roles)
    except ValueError as exc:
        raise TokenError(str(exc)) from None
    if sources and Role.PUBLISHER not in parsed:
        raise TokenError("sources bind a publisher: give --role publisher with --source")
    if Role.PUBLISHER in parsed and not sources:
        raise TokenError(
            "a publisher token lists the sources it may publish: give --source URN (repeatable)"
        )
    if any(not source.strip() for source in sources):
        raise TokenError("a source is a non-empty string, e.g. urn:system:crm")
    ordered = [role.value for role in Role if role in parsed]
    return ordered, sorted(set(sources))


def _record(row: asyncpg.Record) -> TokenRecord:
    return TokenRecord(
        name=row["name"],
        roles=tuple(row["roles"]),
        sources=tuple(row["sources"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )
