"""The outbox relay's statements: claim committed messages, then record what
became of them (sent, or refused by the broker for good), and the outbox's
health for metrics and readiness.

Rows are claimed in id order with ``FOR UPDATE SKIP LOCKED``, so several
workers may relay at once without sending a row twice in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import asyncpg
import orjson

CLAIM = """
SELECT id, topic, key, value, headers FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
"""
# Sent rows are deleted; rows the broker refused for good move to outbox_dead
# with the reason; either is progress, which /readyz reads from outbox_relay.
SETTLE = """
WITH sent AS (
    DELETE FROM outbox WHERE id = ANY($1::bigint[])
), dead AS (
    DELETE FROM outbox WHERE id = ANY($2::bigint[]) RETURNING *
), buried AS (
    INSERT INTO outbox_dead (id, topic, key, value, headers, subject, created_at, reason)
    SELECT dead.id, dead.topic, dead.key, dead.value, dead.headers, dead.subject, dead.created_at,
           why.reason
    FROM dead JOIN unnest($2::bigint[], $3::text[]) AS why(id, reason) ON why.id = dead.id
)
UPDATE outbox_relay SET progressed_at = now()
"""
HEALTH = """
SELECT (SELECT count(*) FROM outbox) AS depth,
       coalesce(extract(epoch FROM now() - (SELECT min(created_at) FROM outbox)), 0)::float8
           AS oldest_age_s,
       (SELECT count(*) FROM outbox_dead) AS dead,
       coalesce(extract(epoch FROM now() - (SELECT progressed_at FROM outbox_relay)), 0)::float8
           AS since_progress_s
"""


class OutboxMessage(NamedTuple):
    """A message committed with its batch, waiting to be published."""

    id: int
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


class OutboxHealth(NamedTuple):
    """How the outbox is doing: messages waiting, the oldest one's age, messages
    refused for good, and seconds since a relay last sent or buried one."""

    depth: int
    oldest_age_s: float
    dead: int
    since_progress_s: float

    def stuck_for(self, seconds: float) -> bool:
        """Whether messages have waited ``seconds`` while no relay made progress."""
        return self.depth > 0 and self.oldest_age_s >= seconds and self.since_progress_s >= seconds


async def claim_messages(connection: asyncpg.Connection, limit: int) -> list[OutboxMessage]:
    """Up to ``limit`` messages in the order they were written, locked until the
    transaction ends."""
    messages = []
    for row in await connection.fetch(CLAIM, limit):
        headers = [(name, value.encode()) for name, value in orjson.loads(row["headers"])]
        messages.append(OutboxMessage(row["id"], row["topic"], row["key"], row["value"], headers))
    return messages


async def settle_messages(
    connection: asyncpg.Connection, sent: Sequence[int], dead: Sequence[tuple[int, str]]
) -> None:
    """Forget messages the broker acknowledged; keep those it refused for good,
    with the reason, in ``outbox_dead``."""
    await connection.execute(
        SETTLE, list(sent), [id_ for id_, _ in dead], [reason for _, reason in dead]
    )


async def outbox_health(connection: asyncpg.Connection) -> OutboxHealth:
    row = await connection.fetchrow(HEALTH)
    return OutboxHealth(row["depth"], row["oldest_age_s"], row["dead"], row["since_progress_s"])
