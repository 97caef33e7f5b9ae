"""The worker's pipeline, state in PostgreSQL, gives exactly what `check` gives
in memory, whatever the batch size: the same core judges both, and the batch
loads only what it needs, so this is where the two could drift apart."""

from __future__ import annotations

import os

import asyncpg
import pytest

from consent_ledger.core.batch import Record
from consent_ledger.core.intake import parse_json_object
from consent_ledger.core.offline import OfflineLedger
from consent_ledger.core.policy import load_policy, load_reference_policy
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.integrity.shredding import open_sealed
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


@pytest.mark.parametrize("integrity", [True, False])
async def test_integers_beyond_64_bits_are_stored_exactly(
    pool: asyncpg.Pool, integrity: bool
) -> None:
    """A valid event may carry any JSON number in its extra fields; storing it
    must neither fail the batch (which would stop the worker on every restart)
    nor round the number."""
    keyring = KeyRing(os.urandom(32))
    pipeline = BatchPipeline(pool, keyring, load_reference_policy(), Settings(integrity=integrity))
    huge = 2**70 + 1
    line = (
        b'{"specversion":"1.0","id":"big-1","source":"urn:test","type":"VisitorRegistered",'
        b'"subject":"s-big","time":"2026-03-01T08:00:00Z","data":{"site":"oslo","rights_notice":"v1"},'
        b'"x-count":' + str(huge).encode() + b"}"
    )
    report = await pipeline.process([Record(0, 0, line)])
    assert report.accepted_by_type["VisitorRegistered"] == 1
    async with pool.acquire() as connection:
        payload = await connection.fetchval(
            "SELECT payload FROM ledger_entries WHERE event_id = 'big-1'"
        )
        wrapped = await connection.fetchval(
            "SELECT wrapped_key FROM subject_keys WHERE subject = 's-big'"
        )
    if integrity:
        payload = open_sealed(keyring.unwrap("s-big", wrapped), "s-big", "big-1", payload)
    assert parse_json_object(payload)["x-count"] == huge


def _valid_disclosure(number: int) -> bytes:
    return (
        b'{"specversion":"1.0","id":"after-' + str(number).encode() + b'","source":"urn:test",'
        b'"type":"DataShared","subject":"s-after","time":"2026-05-01T09:00:00Z","data":'
        b'{"purpose":"marketing","subject_role":"customer_contact","controller":"visma-software-as",'
        b'"recipient":{"kind":"group_company","id":"visma-software-as"},'
        b'"data_categories":["contact_details"]}}'
    )


def _consent(subject: bytes, event_id: bytes = b"hostile") -> bytes:
    return (
        b'{"specversion":"1.0","id":"' + event_id + b'","source":"urn:test","type":"ConsentGiven",'
        b'"subject":"' + subject + b'","time":"2026-05-01T08:00:00Z","data":{"purpose":"marketing",'
        b'"subject_role":"customer_contact","controller":"visma-software-as"}}'
    )


HOSTILE = [
    ("a NUL in the subject", _consent(b"nul\\u0000subject"), "invalid-json"),
    ("a lone surrogate", _consent(b"surrogate-\\ud800-subject"), "invalid-json"),
    ("an 8,000-character id", _consent(b"s-long-id", b"i" * 8_000), "invalid-envelope"),
    ("an 8,000-character subject", _consent(b"s" * 8_000), "invalid-envelope"),
    ("999 levels deep", b'{"a":' * 999 + b"1" + b"}" * 999, "invalid-json"),
    ("a member name twice", _consent(b"s-dup").replace(b'"id"', b'"id":"x","id"'), "invalid-json"),
    ("over 262,144 bytes", _consent(b"s-big").replace(b"{", b'{"p":"' + b"p" * 262_144 + b'",', 1),
     "too-large"),
]  # fmt: skip


@pytest.mark.parametrize("batch_size", [1, len(HOSTILE) * 2])
async def test_hostile_records_are_rejected_and_the_rest_accepted(
    pool: asyncpg.Pool, batch_size: int
) -> None:
    """What once crashed the worker on PostgreSQL (a NUL, a lone surrogate, an
    id past the btree limit, a record deeper than the recursion limit) is
    rejected with its reason, stored, and the records around it accepted."""
    pipeline = BatchPipeline(pool, KeyRing(os.urandom(32)), load_reference_policy(), Settings())
    partition = 7 + batch_size  # apart from the other tests' records
    records = []
    for number, (_, hostile, _) in enumerate(HOSTILE):
        records.append(Record(partition, 2 * number, hostile))
        records.append(Record(partition, 2 * number + 1, _valid_disclosure(number)))
    for start in range(0, len(records), batch_size):
        await pipeline.process(records[start : start + batch_size])

    async with pool.acquire() as connection:
        rejected = await connection.fetch(
            "SELECT kafka_offset, reason, event_id, subject FROM rejected_events"
            " WHERE kafka_partition = $1 ORDER BY kafka_offset",
            partition,
        )
        accepted = await connection.fetchval(
            "SELECT accepted FROM consumer_positions WHERE kafka_partition = $1", partition
        )
    assert [(row["kafka_offset"], row["reason"]) for row in rejected] == [
        (2 * number, reason) for number, (*_, reason) in enumerate(HOSTILE)
    ]
    assert all(row["event_id"] in (None, "hostile") for row in rejected)
    assert all(row["subject"] is None or len(row["subject"]) <= 256 for row in rejected)
    assert accepted == len(HOSTILE)
