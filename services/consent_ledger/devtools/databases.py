"""Create and drop databases on a PostgreSQL server: a database per test run,
``dev``'s database on the embedded server. Plain asyncpg, so it works against
any server and without the ``embedded`` extra."""

from __future__ import annotations

import re
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def database_dsn(server_dsn: str, database: str) -> str:
    """``server_dsn`` with its database replaced by ``database`` (query kept)."""
    parts = urlsplit(server_dsn)
    return urlunsplit(
        SplitResult(parts.scheme, parts.netloc, "/" + quote(database), parts.query, "")
    )


def _quoted_database_name(name: str) -> str:
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(
            f"database name {name!r} must be a letter or _ then letters, digits or _ "
            "(at most 63 characters)"
        )
    return f'"{name}"'


async def create_database(
    server_dsn: str, name: str, *, exist_ok: bool = False, template: str | None = None
) -> str:
    """Create database ``name`` on the server ``server_dsn`` points at; return its DSN.

    With ``template``: a copy of that database (nobody may be connected to it),
    which is how the tests get a migrated database without migrating each one."""
    import asyncpg

    quoted = _quoted_database_name(name)
    copied = f" TEMPLATE {_quoted_database_name(template)}" if template else ""
    connection = await asyncpg.connect(server_dsn)
    try:
        await connection.execute(f"CREATE DATABASE {quoted}{copied}")
    except asyncpg.DuplicateDatabaseError:
        if not exist_ok:
            raise
    finally:
        await connection.close()
    return database_dsn(server_dsn, name)


async def drop_database(server_dsn: str, name: str) -> None:
    """Drop database ``name`` if it exists, ending the sessions still connected to it."""
    import asyncpg

    quoted = _quoted_database_name(name)
    connection = await asyncpg.connect(server_dsn)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await connection.close()
