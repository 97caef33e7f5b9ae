"""The access log (CONTRACT §7): one row per API answer that carried named
subjects' personal data, appended before the answer leaves, read by privacy
officers. Append-only in the database (migration 007: a trigger and privileges)."""

from __future__ import annotations

from datetime import datetime
from typing import Final, NamedTuple

import asyncpg

RECORD: Final = """
INSERT INTO access_log (token_name, role, endpoint, subjects, purpose)
VALUES ($1, $2, $3, $4, $5)
"""

# Filters that are NULL match everything; the subject filter uses the GIN index.
PAGE: Final = """
SELECT id, accessed_at, token_name, role, endpoint, subjects, purpose
FROM access_log
WHERE id > $1
  AND ($2::text IS NULL OR subjects @> ARRAY[$2::text])
  AND ($3::text IS NULL OR token_name = $3)
  AND ($4::timestamptz IS NULL OR accessed_at >= $4)
  AND ($5::timestamptz IS NULL OR accessed_at < $5)
ORDER BY id
LIMIT $6
"""


class Access(NamedTuple):
    id: int
    accessed_at: datetime
    token_name: str
    role: str
    endpoint: str
    subjects: tuple[str, ...]
    purpose: str | None


class AccessLog:
    """The ``access_log`` table."""

    def __init__(self, db: asyncpg.Pool | asyncpg.Connection) -> None:
        self._db = db

    async def record(
        self,
        *,
        token_name: str,
        role: str,
        endpoint: str,
        subjects: list[str],
        purpose: str | None,
    ) -> None:
        await self._db.execute(RECORD, token_name, role, endpoint, subjects, purpose)

    async def page(
        self,
        *,
        after_id: int,
        limit: int,
        subject: str | None = None,
        token_name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Access]:
        """Rows after ``after_id`` in the order they were written, ``since`` inclusive,
        ``until`` exclusive."""
        rows = await self._db.fetch(PAGE, after_id, subject, token_name, since, until, limit)
        return [
            Access(
                id=row["id"],
                accessed_at=row["accessed_at"],
                token_name=row["token_name"],
                role=row["role"],
                endpoint=row["endpoint"],
                subjects=tuple(row["subjects"]),
                purpose=row["purpose"],
            )
            for row in rows
        ]
