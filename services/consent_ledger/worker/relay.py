"""The outbox relay: publishes committed outbox rows to Kafka, then deletes them.

Rows are claimed in id order, skipping rows another worker holds (several
workers may relay at once: store/outbox.py), sent, and deleted in the same
transaction once the broker acknowledged them. A crash between the
acknowledgement and the commit sends those rows again: consumers see each
alert's ``id`` and can drop the rare repeat; nothing is ever lost. A message
the broker refuses for good (too large, invalid) moves to ``outbox_dead``
with the reason and the rest go on; one that failed otherwise (an outage)
stays for the next pass, so only then may a later alert overtake it.

Alerts the broker took are queued for the webhooks that want them
(worker/webhooks.py) in the same transaction that deletes them from the
outbox: each published alert is queued once per hook, and a webhook is POSTed
only what ``ledger.violations`` carries, byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from consent_ledger.kafka import REFUSED_FOR_GOOD, send_each
from consent_ledger.store.outbox import claim_messages, settle_messages
from consent_ledger.store.webhook_deliveries import queue_deliveries
from consent_ledger.worker.webhooks import WebhookDispatcher

log = structlog.get_logger(__name__)


class OutboxRelay:
    """Moves outbox rows to their topics; wake it with :meth:`notify` after a commit."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        batch: int = 1_000,
        webhooks: WebhookDispatcher | None = None,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._batch = batch
        self._webhooks = webhooks
        self.queued_for_webhooks = 0
        self._wake = asyncio.Event()
        self.sent = 0
        self.dead = 0  # messages refused for good by this relay

    def notify(self) -> None:
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish one batch of outbox rows; return how many were settled: sent, or
        refused by the broker for good and kept in ``outbox_dead`` with the reason,
        so that one message the broker will never take jams nothing behind it.
        Any other failure is raised after what was settled is committed; the
        messages it concerns stay for the next pass."""
        async with self._pool.acquire() as connection, connection.transaction():
            claimed = await claim_messages(connection, self._batch)
            if not claimed:
                return 0
            outcomes = await send_each(
                self._producer, [(m.topic, m.key, m.value, m.headers) for m in claimed]
            )
            sent: list[int] = []
            dead: list[tuple[int, str]] = []
            failure: BaseException | None = None
            for message, outcome in zip(claimed, outcomes, strict=True):
                if outcome is None:
                    sent.append(message.id)
                elif isinstance(outcome, REFUSED_FOR_GOOD):
                    dead.append((message.id, f"{type(outcome).__name__}: {outcome}"[:1_024]))
                elif failure is None:
                    failure = outcome
            queued = []
            if self._webhooks is not None and sent:
                queued = self._webhooks.deliveries_for(
                    [
                        (m.topic, m.value)
                        for m, o in zip(claimed, outcomes, strict=True)
                        if o is None
                    ]
                )
                await queue_deliveries(connection, queued)
            if sent or dead:
                await settle_messages(connection, sent, dead)
        for message_id, reason in dead:
            log.error("outbox message refused for good, kept as dead", id=message_id, reason=reason)
        self.sent += len(sent)
        self.dead += len(dead)
        self.queued_for_webhooks += len(queued)
        if queued and self._webhooks is not None:
            self._webhooks.notify()
        if failure is not None:
            raise failure
        return len(sent) + len(dead)

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
