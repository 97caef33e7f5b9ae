"""The API's use of Kafka: publishing events, and asking the broker how far the
topic goes. The API must keep answering reads while the broker is down, so
nothing here connects before it is needed and every question has a time limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

import structlog
from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from consent_ledger.kafka import (
    PLAINTEXT,
    IdempotenceRefused,
    KafkaSecurity,
    make_producer,
    send_all,
    start_producer,
)
from consent_ledger.settings import Settings

log = structlog.get_logger(__name__)

BROKER_TIMEOUT_S: Final = 3.0
"""How long readiness and lag wait for the broker before calling it unreachable."""

Message = tuple[bytes | None, bytes, Sequence[tuple[str, bytes]]]


class BrokerUnavailable(Exception):
    """The broker did not take the events: nothing or not all of them was acknowledged."""


class Publisher:
    """Publishes to the events topic and waits for the broker's acknowledgement.

    Given a producer, it uses it and leaves starting and stopping it to the
    caller. Otherwise it makes one on first use, starting it again on a later
    request when the broker could not be reached, and stops it in :meth:`close`.
    """

    def __init__(self, settings: Settings, producer: AIOKafkaProducer | None = None) -> None:
        self._settings = settings
        self._producer = producer
        self._owned = producer is None
        self._starting = asyncio.Lock()

    async def _ready_producer(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._starting:
            if self._producer is None:
                if not self._settings.kafka_bootstrap:
                    raise BrokerUnavailable("no broker is configured (LEDGER_KAFKA_BOOTSTRAP)")
                producer = make_producer(self._settings, client_id="consent-ledger-api")
                try:
                    await start_producer(producer, self._settings)
                except (KafkaError, OSError, IdempotenceRefused) as exc:  # stopped already
                    raise BrokerUnavailable(f"cannot reach the broker: {exc}") from exc
                self._producer = producer
            return self._producer

    async def publish(self, topic: str, messages: Sequence[Message]) -> None:
        """Send every message; return once the broker acknowledged them all."""
        producer = await self._ready_producer()
        try:
            await send_all(producer, topic, messages)
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"the broker did not acknowledge the events: {exc!r}") from exc

    async def close(self) -> None:
        if self._owned and self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


async def broker_answers(
    bootstrap: str, timeout_s: float = BROKER_TIMEOUT_S, security: KafkaSecurity = PLAINTEXT
) -> None:
    """Raise unless the broker answers a metadata request within ``timeout_s``."""
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        client_id="consent-ledger-api-ready",
        request_timeout_ms=int(timeout_s * 1000),
        **security.client_options(),
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
    finally:
        await client.close()


class LogEndOffsets:
    """Asks the broker how far a topic goes (the lag in ``/v1/stats`` and
    ``/metrics``) over one long-lived consumer, not one per call: a consumer's
    start (bootstrap, metadata, connections) was most of ``/v1/stats``' time.

    Made unstarted; the consumer is started on the first question, kept, and
    dropped when a question fails or times out, so the next one starts a new
    one (the broker restarted, the connection was cut). :meth:`close` stops it:
    the API's lifespan calls it on shutdown.
    """

    def __init__(
        self,
        bootstrap: str | None,
        security: KafkaSecurity = PLAINTEXT,
        timeout_s: float = BROKER_TIMEOUT_S,
    ) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._asking = asyncio.Lock()  # one question at a time, one consumer started
        self.consumers_started = 0  # consumers made so far: one while the broker stays up

    @property
    def connected(self) -> bool:
        """A consumer is started and kept for the next question."""
        return self._consumer is not None

    async def of(self, topic: str) -> dict[int, int] | None:
        """The log-end offset per partition of ``topic``, or None when the broker
        cannot tell in time (or none is configured)."""
        if not self._bootstrap:
            return None
        async with self._asking:
            try:
                return await asyncio.wait_for(self._ask(topic), self._timeout_s)
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("log-end offsets unavailable", topic=topic, error=repr(exc))
                await self._drop()
                return None

    async def _ask(self, topic: str) -> dict[int, int]:
        consumer = await self._started()
        await consumer.topics()  # fresh cluster metadata: partitions added since count
        partitions = consumer.partitions_for_topic(topic) or set()
        offsets = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in offsets.items()}

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            assert self._bootstrap is not None
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                client_id="consent-ledger-api-offsets",
                enable_auto_commit=False,
                request_timeout_ms=int(self._timeout_s * 1000),
                **self._security.client_options(),
            )
            self.consumers_started += 1
            self._consumer = consumer  # set first: a failed start is stopped by _drop
            await consumer.start()
        return self._consumer

    async def _drop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except (KafkaError, OSError) as exc:  # stopping a consumer that never started
                log.warning("stopping the offsets consumer failed", error=repr(exc))

    async def close(self) -> None:
        async with self._asking:
            await self._drop()


def consumer_lag(log_end: dict[int, int], next_offsets: dict[int, int]) -> dict[int, int]:
    """Records per partition the worker has not processed yet (0 when it is ahead
    of what the broker reported a moment earlier)."""
    return {
        partition: max(0, end - next_offsets.get(partition, 0))
        for partition, end in sorted(log_end.items())
    }
