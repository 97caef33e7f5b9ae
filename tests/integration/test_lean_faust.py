"""The worker's lean faust consumer (worker/lean_faust.py) on a real broker: its
own fetch loop delivers every record once, in order per partition, through the
direct path while flow is active, and faust commits exactly the acked offsets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from consent_ledger.devtools.broker import EmbeddedBroker
from consent_ledger.devtools.kafka_admin import ensure_topics
from consent_ledger.worker.app import take_batch
from consent_ledger.worker.lean_faust import LeanConsumer, RawRecords, lean_consumer
from tests.integration.test_infra import (
    PARTITIONS,
    RECORDS,
    committed_offsets,
    faust_app,
    produce_keyed,
    running,
    wait_for,
)

pytestmark = pytest.mark.integration


class CountingLeanConsumer(lean_consumer(EmbeddedBroker.FETCH_MAX_WAIT_MS)):  # type: ignore[misc]
    """Counts the records the fetch loop hands over through faust's guarded path
    (``wait_first``, which only that loop calls in the consumer)."""

    guarded = 0

    async def wait_first(self, *coros: Any, **kwargs: Any) -> Any:
        type(self).guarded += 1
        return await super().wait_first(*coros, **kwargs)


async def test_the_lean_fetch_loop_delivers_every_record_once_and_in_order(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic_name, app_id = unique_name("events"), unique_name("app")
    await ensure_topics(kafka_bootstrap, {topic_name: PARTITIONS})
    end_offsets = await produce_keyed(kafka_bootstrap, topic_name)
    app = faust_app(app_id, kafka_bootstrap)
    app.transport.Consumer = CountingLeanConsumer
    channel = aiter(app.topic(topic_name, schema=RawRecords()))
    seen: list[tuple[int, int]] = []

    @app.task
    async def collect() -> None:
        while True:
            batch = await take_batch(channel, 300)
            seen.extend((event.message.partition, event.message.offset) for event in batch)
            for event in batch:
                event.ack()

    async with running(app):
        consumer = app.consumer
        # The loop that ran is the lean one, and it asked the broker for short fetches.
        assert type(consumer)._drain_messages is LeanConsumer._drain_messages
        await wait_for(lambda: len(seen) >= RECORDS, within=20, what="all records")
        aiokafka_consumer = consumer._thread._ensure_consumer()
        assert aiokafka_consumer._fetch_max_wait_ms == EmbeddedBroker.FETCH_MAX_WAIT_MS
        await consumer.commit()
        assert await committed_offsets(kafka_bootstrap, app_id, topic_name) == end_offsets

    assert len(seen) == len(set(seen)) == RECORDS  # once each
    for partition, end in end_offsets.items():
        assert [offset for p, offset in seen if p == partition] == list(range(end))  # in order
    assert CountingLeanConsumer.guarded == 0  # flow stayed active: the direct path only
