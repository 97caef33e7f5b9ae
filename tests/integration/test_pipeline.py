"""The worker's pipeline, state in PostgreSQL, gives exactly what `check` gives
in memory, whatever the batch size: the same core judges both, and the batch
loads only what it needs, so this is where the two could drift apart."""

from __future__ import annotations

import os

import asyncpg
import pytest

from consent_ledger.core.batch import Record
from consent_ledger.core.offline import OfflineLedger
from consent_ledger.core.policy import load_policy
from consent_ledger.ledger.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.worker.pipeline import BatchPipeline
from tests.e2e.conftest import SCENARIOS

pytestmark = [pytest.mark.integration]

CASES = [
    (name, size)
    for name in ("late-arrivals", "consent-lifecycle", "erasure", "bad-input")
    for size in (1, 4)
]
CASES += [("random-3000", 29), ("random-3000", 1000)]


@pytest.mark.parametrize(("name", "batch_size"), CASES)
async def test_the_pipeline_agrees_with_check(
    pool: asyncpg.Pool, name: str, batch_size: int
) -> None:
    folder = SCENARIOS / name
    policy = load_policy(folder / "policy.yaml")
    lines = [line for line in (folder / "events.jsonl").read_bytes().splitlines() if line.strip()]
    offline = OfflineLedger(policy)
    for number, line in enumerate(lines, start=1):
        offline.ingest(line, number)

    pipeline = BatchPipeline(pool, KeyRing(os.urandom(32)), policy, Settings())
    records = [Record(number % 3, number // 3, line) for number, line in enumerate(lines)]
    for start in range(0, len(records), batch_size):
        await pipeline.process(records[start : start + batch_size])

    async with pool.acquire() as connection:
        stored = {
            (row["event_id"], row["rule"])
            for row in await connection.fetch(
                "SELECT event_id, rule FROM violations WHERE status = 'open'"
            )
        }
        counts = await connection.fetchrow(
            "SELECT sum(accepted) AS accepted, sum(duplicates) AS duplicates, sum(rejected) AS rejected"
            " FROM consumer_positions"
        )
    assert stored == {violation.key for violation in offline.open_violations()}
    assert (counts["accepted"], counts["duplicates"], counts["rejected"]) == (
        offline.counts.accepted, offline.counts.duplicates, offline.counts.rejected,
    )  # fmt: skip
