"""Benchmark `consent-ledger rebuild`: entries replayed per second, and how long
a swap holds the workers' batches off.

Usage: python bench/bench_rebuild.py [EVENTS]   (default 50,000)

Writes a generated stream through the worker's pipeline into a fresh database
on an embedded PostgreSQL (or LEDGER_TEST_DATABASE_URL's server), then times a
compare-only rebuild, and a --swap after the violations were emptied (which
restores them all). A benchmark prints figures; it never fails on a timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import orjson
from machine import describe

from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_policy_versions
from consent_ledger.devtools.databases import create_database, drop_database
from consent_ledger.devtools.demo import EventFactory
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.store.migrate import migrate
from consent_ledger.store.rebuild import rebuild_read_models
from consent_ledger.worker.pipeline import BatchPipeline

PARTITIONS = 4
BATCH = 500


@contextlib.contextmanager
def server() -> Iterator[str]:
    configured = os.environ.get("LEDGER_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    from consent_ledger.devtools.postgres import EmbeddedPostgres

    with (
        tempfile.TemporaryDirectory(prefix="bench-rebuild-") as parent,
        EmbeddedPostgres(Path(parent) / "data") as embedded,
    ):
        yield embedded.dsn


async def run(dsn: str, count: int) -> None:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    url = await create_database(dsn, name)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as connection:
            await migrate(connection)
        keyring = KeyRing(os.urandom(32))
        policy = load_policy_versions(None)
        pipeline = BatchPipeline(pool, keyring, policy, Settings())
        factory = EventFactory(seed=7, subjects=max(1_000, count // 20))
        offsets = [0] * PARTITIONS
        records = []
        for event in factory.events(count):
            partition = zlib.crc32(event["subject"].encode()) % PARTITIONS
            records.append(Record(partition, offsets[partition], orjson.dumps(event)))
            offsets[partition] += 1
        started = time.perf_counter()
        for start in range(0, len(records), BATCH):
            await pipeline.process(records[start : start + BATCH])
        print(f"ingest: {count:,} events in {time.perf_counter() - started:.1f} s", flush=True)
        async with pool.acquire() as connection:
            compared = await rebuild_read_models(connection, keyring, policy, "ledger.events")
            emptied = await connection.execute("DELETE FROM violations")
            swapped = await rebuild_read_models(
                connection, keyring, policy, "ledger.events", swap=True
            )
        rows = ", ".join(f"{n:,} {table}" for table, n in compared.rows.items())
        print(
            f"ledger: {compared.entries + compared.erased_entries:,} entries; read models: {rows}"
        )
        print(
            f"rebuild (compare): {compared.seconds:.2f} s, "
            f"{compared.entries / compared.seconds:,.0f} entries/s replayed, "
            f"{len(compared.differences)} differences"
        )
        print(
            f"rebuild --swap after {emptied.split()[-1]} violations deleted: "
            f"{swapped.seconds:.2f} s with batches held off, "
            f"{len(swapped.differences):,} rows restored"
        )
    finally:
        await pool.close()
        await drop_database(dsn, name)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    print(describe(), flush=True)
    with server() as dsn:
        asyncio.run(run(dsn, count))


if __name__ == "__main__":
    main()
