"""faust-streaming, tuned for a worker that takes raw records in batches.

faust's per-message path is built for agents that handle one event at a time.
The ledger's worker reads its topic as a channel in batches (worker/app.py),
and on a two-core machine faust's per-message overhead, not the ledger's work,
set its rate (about 200 µs of the event loop's time per record). Each class
here removes one such cost without changing what faust delivers, acks or
commits:

- :class:`RawRecords`: the record's key and value as they are, without looking
  up codecs per message (the ledger validates the bytes itself).
- :class:`LeanConsumer`: the fetch loop hands each record to the topic's
  handler directly instead of racing it against four new tasks; and the broker
  may hold a fetch at most ``LEDGER_FETCH_MAX_WAIT_MS`` (:func:`lean_consumer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer


class RawRecords(faust.Schema[bytes, bytes]):
    """Key and value as raw bytes, exactly what the ``raw`` serializer gives,
    without a codec lookup per message."""

    def __init__(self) -> None:
        super().__init__(
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    def compile(self, app: Any, **_: Any) -> Callable[..., Awaitable[Any]]:
        create_event = app.create_event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return create_event(message.key, message.value, message.headers, message)

        return decode


class _PromptConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust fixes the fetch wait at 1.5 s. Kafka answers a fetch as soon as
        # a record arrives, so there the wait only bounds idle polling; Tansu
        # holds a fetch that found nothing to its end (seen: 0.6 s), which is
        # all latency, so `dev` asks for 50 ms.
        consumer._fetch_max_wait_ms = cast("LeanConsumer", self.consumer).fetch_max_wait_ms
        return consumer


class LeanConsumer(AIOKafkaConsumer):
    """faust's aiokafka consumer with a leaner fetch loop.

    faust's loop (``Consumer._drain_messages``) awaits every record's handler
    through ``Service.wait_first(handler, suspend_flow.wait())``, which creates
    four tasks per record so that a rebalance can abandon a handler blocked on
    flow control. While flow is active the handler waits only when the
    channel's buffer is completely full (a buffer under high pressure pauses
    the partition's fetching instead, and the buffer holds several fetches),
    and that wait ends as soon as the worker takes its next batch, which it
    also does during a rebalance. This loop therefore awaits the handler
    directly while flow is active, and takes faust's guarded path otherwise. Everything else (read offsets, gaps in
    offsets, commit every N acks, stopping) is faust's loop unchanged.

    A modified copy of ``faust.transport.consumer.Consumer._drain_messages``:
    faust-streaming and aiokafka are pinned exactly (pyproject.toml), a unit
    test fingerprints the upstream method (tests/unit/test_lean_faust.py), and
    tests/integration/test_lean_faust.py runs this loop on a real broker.
    """

    fetch_max_wait_ms = 500  # Kafka's own default

    def _new_consumer_thread(self) -> _PromptConsumerThread:
        return _PromptConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        callback = self.callback
        read_offsets = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        flow_active = self.app.flow_control.is_active
        suspended = self.suspend_flow.is_set
        since_yield = 0
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                records = self.getmany(timeout=1.0)
                await asyncio.sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in records:
                    since_yield += 1
                    if since_yield > 100:
                        await asyncio.sleep(0)
                        since_yield = 0
                    offset = message.offset
                    read = read_offsets[tp]
                    if read is not None and offset < read:
                        continue  # faust's loop drops these too
                    if read and offset - read > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, read + 1, offset)
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if flow_active() and not suspended():
                        await callback(message)
                    else:
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    read_offsets[tp] = offset
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise


def lean_consumer(fetch_max_wait_ms: int) -> type[LeanConsumer]:
    """:class:`LeanConsumer` for one app, whose fetches the broker may hold at
    most ``fetch_max_wait_ms`` when no record is waiting."""
    return type("LeanConsumer", (LeanConsumer,), {"fetch_max_wait_ms": fetch_max_wait_ms})
