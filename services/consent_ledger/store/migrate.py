"""Versioned schema migrations, applied at start.

Files ``migrations/NNN_name.sql`` are applied in order, each in its own
transaction with its version recorded in ``schema_migrations``. A session-level
advisory lock makes it safe for several processes to migrate at once: the
first applies, the others wait and then find nothing left to do. Running it
again is a no-op.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

log = structlog.get_logger(__name__)

_LOCK_ID = 0x6C65646765720001  # "ledger" + 1: one advisory lock for migrations
_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migrations shipped with the package, in version order."""
    folder = resources.files("consent_ledger.store").joinpath("migrations")
    found = []
    for item in folder.iterdir():
        match = _FILE.match(item.name)
        if match:
            found.append(Migration(int(match.group(1)), item.name, item.read_text("utf-8")))
    return sorted(found, key=lambda migration: migration.version)


async def migrate(connection: asyncpg.Connection) -> list[str]:
    """Apply the migrations not yet applied; return the names of those applied."""
    applied_now: list[str] = []
    await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        # Looked up first: a service role without CREATE in the schema may start
        # against a database its owner already migrated.
        if await connection.fetchval("SELECT to_regclass('schema_migrations')") is None:
            await connection.execute(
                "CREATE TABLE schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        done = {
            row["version"]
            for row in await connection.fetch("SELECT version FROM schema_migrations")
        }
        for migration in migrations():
            if migration.version in done:
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied_now.append(migration.name)
            log.info("migration applied", migration=migration.name)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now
