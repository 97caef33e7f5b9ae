"""`consent-ledger dev` keeps its database between runs but its embedded broker
keeps nothing: the new broker's offsets start at 0 again. A broker epoch lets
the worker take those records as new, and `verify` still passes."""

from __future__ import annotations

import os

import asyncpg
import pytest

from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.integrity.checkpoints import generate_signing_key
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.store.audit_reads import start_broker_epoch, verify_ledger
from consent_ledger.store.checkpoint_issuer import issue_checkpoint
from consent_ledger.worker.pipeline import BatchPipeline
from tests.e2e.conftest import SCENARIOS

pytestmark = [pytest.mark.integration]


def records(name: str) -> list[Record]:
    lines = [line for line in (SCENARIOS / name / "events.jsonl").read_bytes().splitlines() if line]
    return [Record(0, offset, line) for offset, line in enumerate(lines)]


async def test_a_restarted_memory_only_broker_starts_a_new_epoch(pool: asyncpg.Pool) -> None:
    settings = Settings()
    pipeline = BatchPipeline(pool, KeyRing(os.urandom(32)), load_reference_policy(), settings)
    key = generate_signing_key()
    first, second = records("consent-lifecycle"), records("late-arrivals")
    await pipeline.process(first)
    await issue_checkpoint(pool, key, "test", force=True)

    # Without an epoch the new broker's offsets look like records already stored.
    assert (await pipeline.process(second[:2])).skipped == 2

    async with pool.acquire() as connection:
        await start_broker_epoch(connection, settings.events_topic)
    report = await pipeline.process(second)
    assert report.skipped == 0
    assert sum(report.accepted_by_type.values()) == len(second)
    await issue_checkpoint(pool, key, "test", force=True)

    async with pool.acquire() as connection:
        audit = await verify_ledger(connection, key.public_key())
        assert audit.ok, audit.divergences
        assert audit.entries == len(first) + len(second)
        # An offset going back anywhere else is still a divergence.
        await connection.execute("DELETE FROM broker_epochs")
        assert not (await verify_ledger(connection, key.public_key())).ok
