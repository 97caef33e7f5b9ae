"""The hand-off between the stream and the batch writer.

faust's ``noack_take`` stops taking records while the agent holds the batch it
yielded, so a worker that wrote each batch inside that loop read nothing from
the broker during its PostgreSQL transaction, and every batch held only the
records of one short window (measured: about 200 records, half the worker's
time waiting). With a hand-off, one task takes records from the stream and
adds them here while the agent writes the previous batch; the agent then
takes everything that gathered meanwhile as its next batch. Batches grow with
the load (more records per round trip when busy) and stay small when quiet
(low latency).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Handoff(Generic[T]):
    """Items in arrival order, added in batches by one task, taken all at once
    by another. ``add`` waits while ``limit`` items are waiting (back-pressure on
    the stream); a failure of the adding side is raised to the taking side."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._items: list[T] = []
        self._changed = asyncio.Condition()
        self._failure: BaseException | None = None

    def __len__(self) -> int:
        return len(self._items)

    async def add(self, items: Iterable[T]) -> None:
        """Add ``items`` after those waiting; first wait for room below the limit."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._items) < self._limit)
            self._items.extend(items)
            self._changed.notify_all()

    async def take(self) -> list[T]:
        """Every item waiting, in order; waits until there is at least one."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items) or self._failure is not None)
            if self._failure is not None:
                raise self._failure
            items, self._items = self._items, []
            self._changed.notify_all()
            return items

    async def fail(self, failure: BaseException) -> None:
        """The adding side failed: ``take`` raises ``failure`` from now on."""
        async with self._changed:
            self._failure = failure
            self._changed.notify_all()
