"""The outbox relay's statements: claim committed messages, delete relayed ones.

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
DELETE = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"


class OutboxMessage(NamedTuple):
    """A message committed with its batch, waiting to be published."""

    id: int
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


async def claim_messages(connection: asyncpg.Connection, limit: int) -> list[OutboxMessage]:
    """Up to ``limit`` messages in the order they were written, locked until the
    transaction ends."""
    messages = []
    for row in await connection.fetch(CLAIM, limit):
        headers = [(name, value.encode()) for name, value in orjson.loads(row["headers"])]
        messages.append(OutboxMessage(row["id"], row["topic"], row["key"], row["value"], headers))
    return messages


async def delete_messages(connection: asyncpg.Connection, ids: Sequence[int]) -> None:
    """Forget messages the broker acknowledged."""
    await connection.execute(DELETE, list(ids))
