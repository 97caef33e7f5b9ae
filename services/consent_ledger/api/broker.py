"""The API's use of Kafka: publishing events, and asking the broker how far the
topic goes. The API must keep answering reads while the broker is down, so
nothing here connects before it is needed and every question has a time limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

import structlog
from aiokafka import AIOKafkaClient, AIOKafkaProducer
from aiokafka.errors import KafkaError

from consent_ledger.kafka import (
    PLAINTEXT,
    IdempotenceRefused,
    KafkaSecurity,
    end_offsets,
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


async def log_end_offsets(
    bootstrap: str | None,
    topic: str,
    timeout_s: float = BROKER_TIMEOUT_S,
    security: KafkaSecurity = PLAINTEXT,
) -> dict[int, int] | None:
    """The log-end offset per partition of ``topic``, or None when the broker
    cannot tell in time (or none is configured)."""
    if not bootstrap:
        return None
    try:
        return await asyncio.wait_for(end_offsets(bootstrap, topic, security), timeout_s)
    except (KafkaError, OSError) as exc:
        log.warning("log-end offsets unavailable", topic=topic, error=repr(exc))
        return None


def consumer_lag(log_end: dict[int, int], next_offsets: dict[int, int]) -> dict[int, int]:
    """Records per partition the worker has not processed yet (0 when it is ahead
    of what the broker reported a moment earlier)."""
    return {
        partition: max(0, end - next_offsets.get(partition, 0))
        for partition, end in sorted(log_end.items())
    }
