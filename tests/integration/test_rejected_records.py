"""Rejected records on a real PostgreSQL: erasure covers them by the subject
their Kafka key names, parseable or not (CONTRACT §2), and their copies for
``ledger.rejected`` always fit the producer's maximum request size."""

from __future__ import annotations

import os

import asyncpg
import orjson
import pytest

from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.kafka import PRODUCER_MAX_REQUEST_BYTES
from consent_ledger.settings import Settings
from consent_ledger.worker.pipeline import BatchPipeline

pytestmark = [pytest.mark.integration]

ANNA = "anna@example.org"


def event(event_id: str, subject: str, kind: str = "VisitorRegistered", **data: object) -> bytes:
    return orjson.dumps({
        "specversion": "1.0", "id": event_id, "source": "urn:test", "type": kind,
        "subject": subject, "time": "2026-03-01T08:00:00Z",
        "data": data or {"site": "oslo", "rights_notice": "v1"},
    })  # fmt: skip


def pipeline_on(pool: asyncpg.Pool) -> BatchPipeline:
    return BatchPipeline(pool, KeyRing(os.urandom(32)), load_reference_policy(), Settings())


async def rejected_rows(pool: asyncpg.Pool) -> dict[int, asyncpg.Record]:
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT kafka_offset, reason, detail, raw, subject, key_subject FROM rejected_events"
        )
    return {row["kafka_offset"]: row for row in rows}


async def copies_keyed(pool: asyncpg.Pool, key: bytes) -> int:
    async with pool.acquire() as connection:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM outbox WHERE topic = 'ledger.rejected' AND key = $1", key
        )
    return count


async def test_erasure_covers_rejected_records_by_their_kafka_key(pool: asyncpg.Pool) -> None:
    pipeline = pipeline_on(pool)
    key = ANNA.encode()
    unparseable = b"name=Anna Berg;mail=" + key  # not JSON: only the key says whose it is
    misfiled = orjson.dumps({"subject": "someone-else", "note": f"{ANNA} wrote this"})
    await pipeline.process([
        Record(0, 0, unparseable, (), key),
        Record(0, 1, misfiled, (), key),
        Record(0, 2, b"[1, 2]", (), b"bob"),
    ])  # fmt: skip
    before = await rejected_rows(pool)
    assert before[0]["raw"] == unparseable and before[0]["key_subject"] == ANNA
    assert before[1]["subject"] == "someone-else" and before[1]["key_subject"] == ANNA
    assert await copies_keyed(pool, key) == 2

    erasure = event("erase-anna", ANNA, "ErasureRequested", reason="asked by mail")
    await pipeline.process([Record(0, 3, erasure, (), key)])
    after = await rejected_rows(pool)
    for offset in (0, 1):
        assert (after[offset]["raw"], after[offset]["detail"]) == (b"", "erased")
    assert after[2]["raw"] == b"[1, 2]"  # bob's stays
    assert await copies_keyed(pool, key) == 0  # not yet relayed: dropped

    # Arriving after the erasure: kept without its bytes, and not copied.
    await pipeline.process([Record(0, 4, b"\xff late garbage", (), key)])
    late = (await rejected_rows(pool))[4]
    assert (late["raw"], late["detail"], late["key_subject"]) == (b"", "erased", ANNA)
    assert await copies_keyed(pool, key) == 0


@pytest.mark.parametrize("size", [262_145, 1_040_000, 1_048_400])
async def test_a_copy_of_a_rejected_record_always_fits_a_request(
    pool: asyncpg.Pool, size: int
) -> None:
    raw = b"\x01" * size
    await pipeline_on(pool).process([Record(0, 0, raw, (), b"k" * 5_000)])
    async with pool.acquire() as connection:
        stored = await connection.fetchval("SELECT raw FROM rejected_events")
        copy = await connection.fetchrow(
            "SELECT key, value, headers FROM outbox WHERE topic = 'ledger.rejected'"
        )
    assert stored == raw  # the database keeps every byte
    headers = dict(orjson.loads(copy["headers"]))
    size_of_headers = sum(len(name) + len(value.encode()) for name, value in headers.items())
    assert len(copy["value"]) + size_of_headers + 512 <= PRODUCER_MAX_REQUEST_BYTES
    assert copy["key"] is None and headers["key_size"] == "5000"
    if size > PRODUCER_MAX_REQUEST_BYTES - 8_192:
        assert headers["raw_truncated"] == "true" and headers["raw_size"] == str(size)
        assert raw.startswith(copy["value"])
    else:
        assert copy["value"] == raw and "raw_truncated" not in headers
