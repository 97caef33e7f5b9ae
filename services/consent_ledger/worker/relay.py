"""The outbox relay: publishes committed outbox rows to Kafka, then deletes them.

Rows are claimed in id order, skipping rows another worker holds (several
workers may relay at once: store/outbox.py), sent, and deleted in the same
transaction once the broker acknowledged every one. A crash between the acknowledgement and the commit
sends those rows again: consumers see each alert's ``id`` and can drop the
rare repeat; nothing is ever lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from consent_ledger.kafka import send_all
from consent_ledger.store.outbox import claim_messages, delete_messages

log = structlog.get_logger(__name__)


class OutboxRelay:
    """Moves outbox rows to their topics; wake it with :meth:`notify` after a commit."""

    def __init__(self, pool: asyncpg.Pool, producer: AIOKafkaProducer, batch: int = 1_000) -> None:
        self._pool = pool
        self._producer = producer
        self._batch = batch
        self._wake = asyncio.Event()
        self.sent = 0

    def notify(self) -> None:
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish one batch of outbox rows; return how many were sent."""
        async with self._pool.acquire() as connection, connection.transaction():
            claimed = await claim_messages(connection, self._batch)
            if not claimed:
                return 0
            by_topic: dict[str, list[tuple[bytes | None, bytes, Sequence[tuple[str, bytes]]]]] = {}
            for message in claimed:
                by_topic.setdefault(message.topic, []).append(
                    (message.key, message.value, message.headers)
                )
            for topic, messages in by_topic.items():
                await send_all(self._producer, topic, messages)
            await delete_messages(connection, [message.id for message in claimed])
        self.sent += len(claimed)
        return len(claimed)

    async def run(self, idle_poll_s: float = 0.5, pause_s: float = 0.05) -> None:
        """Relay until cancelled: drain, then wait for a notify or the poll interval.

        After each pass it pauses ``pause_s``: a busy worker notifies after every
        batch, dozens a second, and each pass is a transaction and a produce
        request; pausing lets a pass carry the alerts of several batches, for
        at most ``pause_s`` more before alerting hears of them."""
        while True:
            self._wake.clear()  # what commits from here on wakes the next pass
            try:
                while await self.relay_once():
                    pass
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("outbox relay failed, will retry", error=str(exc))
            except Exception as exc:  # the broker's own errors: retry, never lose rows
                log.warning("outbox relay failed, will retry", error=repr(exc))
            await asyncio.sleep(pause_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=idle_poll_s)
