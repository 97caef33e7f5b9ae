"""The counts /v1/stats and /metrics read without counting (migration 021): kept
exact through every writer of the counted tables, in one ledger; set from the
rows already there when the migration is applied to a ledger in use.

Other tests hold the same helper (``tests.conftest.assert_counts_kept``) after
their own runs: every scenario and the tampered rebuild (test_rebuild.py),
erasure (test_erasure.py), poison isolation (test_poison.py), the fuzzed
pipeline (test_fuzz_pipeline.py) and re-judging (test_policy_publish.py).
"""

from __future__ import annotations

import asyncio
import os
import zlib
from collections.abc import Iterable

import asyncpg
import pytest

from consent_ledger.core.batch import Record
from consent_ledger.core.intake import subject_named_in
from consent_ledger.core.policy import load_policy_versions
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.store import row_counts
from consent_ledger.store.migrate import migrate
from consent_ledger.store.policy_versions import publish_version
from consent_ledger.store.rebuild import rebuild_read_models
from consent_ledger.worker.pipeline import BatchPipeline
from tests.conftest import assert_counts_kept
from tests.e2e.conftest import SCENARIOS

pytestmark = [pytest.mark.integration]

MASTER_KEY = os.urandom(32)
PARTITIONS = 2
VERSIONS = SCENARIOS / "policy-versions" / "policies"


def lines_of(*scenarios: str) -> list[bytes]:
    return [
        line
        for name in scenarios
        for line in (SCENARIOS / name / "events.jsonl").read_bytes().splitlines()
        if line.strip()
    ]


class Feed:
    """Records on consecutive offsets, each on its subject's partition."""

    def __init__(self) -> None:
        self.offsets = [0] * PARTITIONS

    def records(self, lines: Iterable[bytes]) -> list[Record]:
        records = []
        for line in lines:
            subject = subject_named_in(line) or ""
            partition = zlib.crc32(subject.encode()) % PARTITIONS
            records.append(
                Record(partition, self.offsets[partition], line, key=subject.encode() or None)
            )
            self.offsets[partition] += 1
        return records


async def test_counts_stay_exact_through_every_writer_and_a_rebuild_swap(
    pool: asyncpg.Pool,
) -> None:
    pipeline = BatchPipeline(
        pool, KeyRing(MASTER_KEY), load_policy_versions(VERSIONS / "v1.yaml"), Settings()
    )
    feed = Feed()
    # Late events that retract violations, rejected records, an erasure, and the
    # events a policy version judges otherwise, in batches of 5.
    first = lines_of("late-arrivals", "hostile-input", "erasure", "policy-versions")
    records = feed.records(first)
    for start in range(0, len(records), 5):
        await pipeline.process(records[start : start + 5])
    await pipeline.process(feed.records(first[:40]))  # sent again: duplicates
    async with pool.acquire() as connection:
        statuses = await connection.fetch("SELECT DISTINCT status FROM violations")
        reasons = await connection.fetchval("SELECT count(DISTINCT reason) FROM rejected_events")
        erased = await connection.fetchval("SELECT count(*) FROM erasures")
        duplicates = await connection.fetchval("SELECT sum(duplicates) FROM consumer_positions")
    assert {row["status"] for row in statuses} == {"open", "retracted"}
    assert reasons > 1 and erased == 1 and duplicates > 0  # the run is what it claims
    await assert_counts_kept(pool)

    async with pool.acquire() as connection:
        await publish_version(
            connection,
            pipeline.policies.configured,
            (VERSIONS / "v2.yaml").read_text(encoding="utf-8"),
            "dpo",
        )
        before = await row_counts.kept_counts(connection)
    while await pipeline.rejudge(subjects=3) is not None:
        pass
    async with pool.acquire() as connection:
        after = await row_counts.kept_counts(connection)
    assert after.violations != before.violations  # re-judging changed verdicts
    assert after.entries_by_type["PolicyPublished"] == 1
    await assert_counts_kept(pool)

    # A projection bug: a violation lost, one flipped, by SQL. The triggers count
    # that too; the rebuild finds the rows and --swap puts them back, counted.
    async with pool.acquire() as connection:
        await connection.execute(
            "DELETE FROM violations WHERE id = (SELECT min(id) FROM violations"
            " WHERE subject NOT IN (SELECT subject FROM erasures))"
        )
        await connection.execute(
            "UPDATE violations SET status = 'retracted' WHERE id = (SELECT max(id) FROM violations"
            " WHERE status = 'open' AND subject NOT IN (SELECT subject FROM erasures))"
        )
        await assert_counts_kept(pool)
        report = await rebuild_read_models(
            connection, KeyRing(MASTER_KEY), pipeline.policies.configured,
            Settings().events_topic, swap=True,
        )  # fmt: skip
        assert report.swapped and len(report.differences) == 2
        assert report.count_drift == []
        assert await row_counts.kept_counts(connection) == after
    await assert_counts_kept(pool)


async def test_the_migration_counts_the_rows_already_there(pool: asyncpg.Pool) -> None:
    pipeline = BatchPipeline(
        pool, KeyRing(MASTER_KEY), load_policy_versions(VERSIONS / "v1.yaml"), Settings()
    )
    await pipeline.process(Feed().records(lines_of("late-arrivals", "hostile-input")))
    async with pool.acquire() as connection:
        kept = await row_counts.kept_counts(connection)
        # As the ledger was before 021: no counts kept, rows in every table.
        await connection.execute(
            "DROP TABLE row_counts; DROP FUNCTION count_rows, forget_row_counts CASCADE;"
            " DELETE FROM schema_migrations WHERE version = 21"
        )
        assert await migrate(connection) == ["021_row_counts.sql"]
        assert await row_counts.kept_counts(connection) == kept
        assert kept.entries_by_type and kept.rejected_by_reason and kept.violations
    await assert_counts_kept(pool)


async def test_two_folds_at_once_lose_nothing(pool: asyncpg.Pool) -> None:
    """Each worker folds on its own: two folds racing keep every delta once."""
    async with pool.acquire() as connection:
        await connection.execute(
            "INSERT INTO row_counts SELECT 'violations', ARRAY['r', 'high', 'c', 'open'], 1"
            " FROM generate_series(1, 500)"
        )
    async with pool.acquire() as first, pool.acquire() as second, pool.acquire() as watcher:
        folding = first.transaction()
        await folding.start()
        await row_counts.compact(first)  # holds the deltas it deleted until it commits
        racing = asyncio.create_task(row_counts.compact(second))
        await waiting_on_a_lock(watcher, second)
        await folding.commit()
        await racing
        kept = await row_counts.kept_counts(second)
        rows = await second.fetchval("SELECT count(*) FROM row_counts")
    assert kept.violations == {("r", "high", "c", "open"): 500}
    assert rows == 1


async def waiting_on_a_lock(watcher: asyncpg.Connection, waiting: asyncpg.Connection) -> None:
    """Return once ``waiting``'s backend waits on a lock (bounded)."""
    pid = waiting.get_server_pid()
    for _ in range(500):
        state = await watcher.fetchval(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
        )
        if state == "Lock":
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the second fold never waited for the first")
