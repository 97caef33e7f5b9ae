"""Poison isolation (CONTRACT §2 "No record stops the stream"), on a real PostgreSQL.

The failures are PostgreSQL's own, not mocks: a trigger the test installs on
``ledger_entries`` refuses one event id (a record that passes intake but that
the database will not store), once or always; and a subject holding U+0000,
which PostgreSQL refuses in text (intake may reject it first: either way the
record is rejected and the stream goes on). Each batch is stored through
:func:`store_isolating` as the worker stores it; what it commits is compared
with ``check`` (the offline ledger) on the same records less the poison.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

import asyncpg
import orjson
import pytest

from consent_ledger.core.batch import Record
from consent_ledger.core.intake import ValidEvent, subject_named_in, validate
from consent_ledger.core.offline import OfflineLedger
from consent_ledger.core.policy import load_policy
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.worker.isolation import store_isolating
from consent_ledger.worker.pipeline import BatchPipeline
from tests.conftest import assert_counts_kept
from tests.e2e.conftest import SCENARIOS

pytestmark = [pytest.mark.integration]

PARTITIONS = 3
FOLDER = SCENARIOS / "random-3000"
POLICY = load_policy(FOLDER / "policy.yaml")
LINES = [line for line in (FOLDER / "events.jsonl").read_bytes().splitlines() if line.strip()]

# A sequence counts the refusals: unlike a row, it is not rolled back with
# the transaction that the refusal aborts.
REFUSE_ONE_ID = """
CREATE TABLE refusal (event_id text PRIMARY KEY, times bigint NOT NULL);
CREATE SEQUENCE refusals_made;
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    allowed bigint;
BEGIN
    SELECT times INTO allowed FROM refusal WHERE event_id = NEW.event_id;
    IF FOUND THEN
        IF nextval('refusals_made') <= allowed THEN
            RAISE EXCEPTION 'test trigger refuses event %', NEW.event_id;
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION refuse_poison();
"""


def records_of(lines: Sequence[bytes]) -> list[Record]:
    """Lines spread over partitions as the broker would (offsets grow per
    partition), keyed by the subject each names."""
    records = []
    for number, line in enumerate(lines):
        subject = subject_named_in(line)
        key = subject.encode("utf-8", "surrogatepass") if subject else None
        records.append(Record(number % PARTITIONS, number // PARTITIONS, line, (), key))
    return records


def accepted_once(lines: Sequence[bytes], start: int) -> int:
    """The index of the first line from ``start`` on that is a valid event whose
    id no other line carries: refusing it changes nothing else."""
    ids = Counter(outcome.id for outcome in map(validate, lines) if isinstance(outcome, ValidEvent))
    for index in range(start, len(lines)):
        outcome = validate(lines[index])
        if isinstance(outcome, ValidEvent) and ids[outcome.id] == 1:
            return index
    raise AssertionError("no such line")


def event_id_of(line: bytes) -> str:
    outcome = validate(line)
    assert isinstance(outcome, ValidEvent)
    return outcome.id


async def refuse(pool: asyncpg.Pool, event_id: str, times: int) -> None:
    async with pool.acquire() as connection:
        await connection.execute(REFUSE_ONE_ID)
        await connection.execute("INSERT INTO refusal VALUES ($1, $2)", event_id, times)


async def committed(pool: asyncpg.Pool) -> tuple[set[tuple[str, str]], tuple[int, int, int]]:
    async with pool.acquire() as connection:
        violations = {
            (row["event_id"], row["rule"])
            for row in await connection.fetch(
                "SELECT event_id, rule FROM violations WHERE status = 'open'"
            )
        }
        counts = await connection.fetchrow(
            "SELECT sum(accepted) AS a, sum(duplicates) AS d, sum(rejected) AS r"
            " FROM consumer_positions"
        )
    await assert_counts_kept(pool)
    return violations, (counts["a"], counts["d"], counts["r"])


def offline(lines: Sequence[bytes]) -> OfflineLedger:
    ledger = OfflineLedger(POLICY)
    for number, line in enumerate(lines, start=1):
        ledger.ingest(line, number)
    return ledger


def pipeline_on(pool: asyncpg.Pool) -> BatchPipeline:
    return BatchPipeline(pool, KeyRing(os.urandom(32)), POLICY, Settings())


@pytest.mark.parametrize(
    ("batch_size", "poison_at", "stream"),
    # batches of one record are a transaction each: a hundred show it as 800 would
    [(1, 5, 100), (64, 37, 800), (400, 311, 800)],
)
async def test_a_record_the_database_refuses_is_isolated_and_the_rest_commits(
    pool: asyncpg.Pool, batch_size: int, poison_at: int, stream: int
) -> None:
    lines = LINES[:stream]
    poison_at = accepted_once(lines, poison_at)
    poison = event_id_of(lines[poison_at])
    await refuse(pool, poison, times=1_000)
    pipeline = pipeline_on(pool)
    records = records_of(lines)
    reports = []
    for start in range(0, len(records), batch_size):
        reports += await store_isolating(pipeline, records[start : start + batch_size])

    expected = offline(lines[:poison_at] + lines[poison_at + 1 :])
    violations, counts = await committed(pool)
    assert violations == {violation.key for violation in expected.open_violations()}
    assert counts == (
        expected.counts.accepted, expected.counts.duplicates, expected.counts.rejected + 1,
    )  # fmt: skip
    assert sum(counts) == len(lines)
    assert sum(report.rejected_by_reason["unprocessable"] for report in reports) == 1
    async with pool.acquire() as connection:
        row = await connection.fetchrow(
            "SELECT reason, detail, event_id, kafka_partition, kafka_offset, raw, subject,"
            " key_subject FROM rejected_events WHERE reason = 'unprocessable'"
        )
        positions = dict(
            await connection.fetch("SELECT kafka_partition, next_offset FROM consumer_positions")
        )
        copies = await connection.fetchval(
            "SELECT count(*) FROM outbox WHERE topic = 'ledger.rejected' AND headers @> $1::jsonb",
            '[["reason", "unprocessable"]]',
        )
    poisoned = records[poison_at]
    assert (row["event_id"], row["kafka_partition"], row["kafka_offset"]) == (
        poison, poisoned.partition, poisoned.offset,
    )  # fmt: skip
    assert f"test trigger refuses event {poison}" in row["detail"]
    assert row["raw"] == poisoned.value
    assert row["subject"] == row["key_subject"] == orjson.loads(poisoned.value)["subject"]
    assert copies == 1
    assert positions == {
        partition: max(r.offset for r in records if r.partition == partition) + 1
        for partition in range(PARTITIONS)
    }


async def test_a_redelivered_batch_after_an_isolation_counts_nothing_twice(
    pool: asyncpg.Pool,
) -> None:
    lines = LINES[:120]
    await refuse(pool, event_id_of(lines[accepted_once(lines, 70)]), times=1_000)
    pipeline = pipeline_on(pool)
    records = records_of(lines)
    await store_isolating(pipeline, records)
    before = await committed(pool)
    reports = await store_isolating(pipeline, records)  # Kafka redelivers after a crash
    assert [report.skipped for report in reports] == [len(records)]
    assert await committed(pool) == before


async def test_a_failure_that_does_not_recur_alone_rejects_nothing(pool: asyncpg.Pool) -> None:
    """A record whose batch failed, but which stores alone on the retry (what a
    race between two workers looks like), is accepted, not rejected."""
    lines = LINES[:64]
    # Refused in the batch of 64 and in each of the six halves that hold it down
    # to itself alone, then stored on the retry alone.
    await refuse(pool, event_id_of(lines[accepted_once(lines, 9)]), times=7)
    pipeline = pipeline_on(pool)
    reports = await store_isolating(pipeline, records_of(lines))
    async with pool.acquire() as connection:
        # refused seven times, then stored: the eighth attempt
        assert await connection.fetchval("SELECT last_value FROM refusals_made") == 8
    expected = offline(lines)
    violations, counts = await committed(pool)
    assert counts == (
        expected.counts.accepted, expected.counts.duplicates, expected.counts.rejected,
    )  # fmt: skip
    assert violations == {violation.key for violation in expected.open_violations()}
    assert not any(report.rejected_by_reason["unprocessable"] for report in reports)


async def test_a_subject_postgresql_refuses_stops_nothing(pool: asyncpg.Pool) -> None:
    """U+0000 in a subject: the core's decoder takes it, PostgreSQL's text does
    not. Once intake applies I-JSON it is rejected there as invalid-json; until
    then, isolation rejects it as unprocessable. Either way the record is kept
    with its bytes, the batch's other records commit, and nothing is counted twice."""
    poison = {
        "specversion": "1.0", "id": "nul-1", "source": "urn:test", "type": "VisitorRegistered",
        "subject": "nul\u0000subject", "time": "2026-03-01T08:00:00Z",
        "data": {"site": "oslo", "rights_notice": "v1"},
    }  # fmt: skip
    lines = [*LINES[:30], orjson.dumps(poison), *LINES[30:60]]
    records = records_of(lines)
    pipeline = pipeline_on(pool)
    await store_isolating(pipeline, records)
    expected = offline(LINES[:60])
    violations, counts = await committed(pool)
    assert violations == {violation.key for violation in expected.open_violations()}
    assert counts == (
        expected.counts.accepted, expected.counts.duplicates, expected.counts.rejected + 1,
    )  # fmt: skip
    async with pool.acquire() as connection:
        row = await connection.fetchrow(
            "SELECT reason, raw, subject, key_subject FROM rejected_events"
            " WHERE kafka_partition = $1 AND kafka_offset = $2",
            records[30].partition, records[30].offset,
        )  # fmt: skip
    assert row["reason"] in ("invalid-json", "unprocessable")
    assert row["raw"] == orjson.dumps(poison)
    assert row["subject"] is None and row["key_subject"] is None  # no subject anyone could erase
