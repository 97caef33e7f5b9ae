"""Benchmark `verify`: what holding the ledger to kept checkpoints costs.

Usage: python bench/bench_verify.py [EVENTS]   (default 100,000)

Feeds generated events through the real batch pipeline into a fresh database
(embedded PostgreSQL unless LEDGER_BENCH_DATABASE_URL names a server), four
partitions, a checkpoint after every hundredth of them, then times
`verify_ledger` alone, with the first, the last and all the checkpoints kept
(as an auditor who saved one every hour would), in three alternating rounds
after a warm-up run. A benchmark prints figures;
it never fails on a timing.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

import asyncpg
import orjson
from machine import describe

from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.devtools.databases import create_database, drop_database
from consent_ledger.devtools.demo import EventFactory
from consent_ledger.devtools.postgres import EmbeddedPostgres
from consent_ledger.integrity.checkpoints import generate_signing_key
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.integrity.trust import TrustedCheckpoint
from consent_ledger.settings import Settings
from consent_ledger.store.audit_reads import verify_ledger
from consent_ledger.store.checkpoint_issuer import issue_checkpoint
from consent_ledger.store.migrate import migrate
from consent_ledger.worker.pipeline import BatchPipeline

PARTITIONS = 4
BATCH = 2_000
KEPT = 100


def records(count: int) -> list[Record]:
    factory = EventFactory(seed=17, subjects=max(1_000, count // 20))
    offsets = [0] * PARTITIONS
    out = []
    for event in factory.events(count):
        partition = zlib.crc32(str(event["subject"]).encode()) % PARTITIONS
        out.append(Record(partition, offsets[partition], orjson.dumps(event)))
        offsets[partition] += 1
    return out


async def timed_verify(dsn: str, key: object, kept: list[TrustedCheckpoint]) -> tuple[float, int]:
    connection = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        report = await verify_ledger(connection, key, kept)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
    finally:
        await connection.close()
    assert report.ok and report.signed_entries == report.entries, report
    return elapsed, report.entries


async def run(server: str, count: int) -> None:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    dsn = await create_database(server, name)
    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            async with pool.acquire() as connection:
                await migrate(connection)
            pipeline = BatchPipeline(
                pool, KeyRing(os.urandom(32)), load_reference_policy(), Settings()
            )
            key = generate_signing_key()
            fed = records(count)
            kept = []
            started = time.perf_counter()
            step = max(count // KEPT, 1)  # a checkpoint every `step` events, all of them kept
            for start in range(0, count, step):
                chunk = fed[start : start + step]
                for first in range(0, len(chunk), BATCH):
                    await pipeline.process(chunk[first : first + BATCH])
                signed = await issue_checkpoint(pool, key, "bench", force=True)
                assert signed is not None
                kept.append(TrustedCheckpoint(f"checkpoint {len(kept) + 1}", signed))
            print(
                f"fed {count:,} events through the pipeline in {time.perf_counter() - started:.1f} s,"
                f" {len(kept)} checkpoints"
            )
        finally:
            await pool.close()
        public = key.public_key()
        await timed_verify(dsn, public, [])  # warm the database's cache: not counted
        cases = (
            ("no kept checkpoint", []),
            ("the first kept", kept[:1]),
            ("the last kept", kept[-1:]),
            (f"all {len(kept)} kept", kept),
        )
        times: dict[str, list[float]] = {label: [] for label, _ in cases}
        entries = 0
        for _ in range(3):  # alternating rounds: the machine's noise hits every case alike
            for label, trusted in cases:
                elapsed, entries = await timed_verify(dsn, public, trusted)
                times[label].append(elapsed)
        for label, elapsed in times.items():
            median = statistics.median(elapsed)
            print(f"verify, {label:<20}: median {median:5.2f} s of 3 for {entries:,} entries "
                  f"({entries / median:,.0f} entries/s)")  # fmt: skip
    finally:
        await drop_database(server, name)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(describe(), flush=True)
    server = os.environ.get("LEDGER_BENCH_DATABASE_URL")
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as folder:
        if server:
            asyncio.run(run(server, count))
            return
        with EmbeddedPostgres(Path(folder) / "data") as postgres:
            asyncio.run(run(postgres.dsn, count))


if __name__ == "__main__":
    main()
