"""The hand-off between the stream and the batch writer (worker/handoff.py)."""

from __future__ import annotations

import asyncio

import pytest

from consent_ledger.worker.handoff import Handoff


async def test_take_returns_everything_added_in_order() -> None:
    handoff: Handoff[int] = Handoff(limit=100)
    await handoff.add([1, 2])
    await handoff.add([3])
    assert await handoff.take() == [1, 2, 3]
    assert len(handoff) == 0


async def test_take_waits_for_items() -> None:
    handoff: Handoff[int] = Handoff(limit=10)
    taking = asyncio.create_task(handoff.take())
    await asyncio.sleep(0)
    assert not taking.done()
    await handoff.add([7])
    assert await asyncio.wait_for(taking, timeout=5) == [7]


async def test_add_waits_while_the_limit_is_reached() -> None:
    handoff: Handoff[int] = Handoff(limit=2)
    await handoff.add([1, 2])
    adding = asyncio.create_task(handoff.add([3]))
    await asyncio.sleep(0)
    assert not adding.done()
    assert await handoff.take() == [1, 2]
    await asyncio.wait_for(adding, timeout=5)
    assert await handoff.take() == [3]


async def test_a_failure_of_the_adding_side_reaches_the_taker() -> None:
    handoff: Handoff[int] = Handoff(limit=2)
    taking = asyncio.create_task(handoff.take())
    await asyncio.sleep(0)
    await handoff.fail(RuntimeError("stream broke"))
    with pytest.raises(RuntimeError, match="stream broke"):
        await asyncio.wait_for(taking, timeout=5)


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Handoff(limit=0)
