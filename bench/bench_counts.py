"""What /v1/stats and /metrics cost with counted rows and a consumer per call
(before migration 021), against the kept counts and one kept consumer (after),
and what keeping the counts costs the worker. Prints figures; never fails on a
timing.

1. Reads, at each size given (default 100,000 and 1,000,000 violations, as many
   ledger entries and a tenth as many rejected records, written by SQL then
   vacuumed and analysed), 20 calls each, median and slowest:
   - the database part of each endpoint: the full counts the API ran before
     (the statements as they were, in one read-only REPEATABLE READ snapshot)
     against the kept counts (store/row_counts.py);
   - the lag: a consumer started and stopped per call (``kafka.end_offsets``, as
     before) against the API's kept one (``LogEndOffsets``);
   - both endpoints end to end as shipped now (the app with its lifespan, over
     ASGI, signed in as an admin).
2. The worker: records/s through ``BatchPipeline.process`` (batches of 200
   generated events), runs alternating with the count triggers enabled and
   disabled (``ALTER TABLE ... DISABLE TRIGGER``), on one database.

Usage: python bench/bench_counts.py [SIZES...]  (PostgreSQL is
LEDGER_BENCH_DATABASE_URL or embedded; the broker LEDGER_BENCH_KAFKA or the
embedded Tansu.)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import orjson
from machine import describe, fresh_database

from consent_ledger.api.app import create_app
from consent_ledger.api.broker import LogEndOffsets
from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.devtools.broker import EmbeddedBroker
from consent_ledger.devtools.demo import EventFactory
from consent_ledger.devtools.kafka_admin import ensure_topics
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.kafka import end_offsets
from consent_ledger.settings import Settings
from consent_ledger.store import row_counts
from consent_ledger.store.migrate import migrate
from consent_ledger.store.tokens import TokenStore
from consent_ledger.worker.pipeline import BatchPipeline

CALLS = 20
TOPIC = "bench.events"
# What the API counted per call before migration 021 (store/api_reads.py then).
STATS_BEFORE = ("SELECT status, count(*) AS n FROM violations GROUP BY status",)
METRICS_BEFORE = (
    "SELECT type, count(*) AS n FROM ledger_entries GROUP BY type ORDER BY type",
    "SELECT reason, count(*) AS n FROM rejected_events GROUP BY reason ORDER BY reason",
    "SELECT rule, status, count(*) AS n FROM violations GROUP BY rule, status ORDER BY rule, status",
    "SELECT severity, count(*) AS n FROM violations GROUP BY severity ORDER BY severity",
)
COUNTED_TRIGGERS = {
    "ledger_entries": ("ledger_entries_counted",),
    "rejected_events": tuple(
        f"rejected_events_counted_{event}" for event in ("insert", "update", "delete", "truncate")
    ),
    "violations": tuple(
        f"violations_counted_{event}" for event in ("insert", "update", "delete", "truncate")
    ),
}
FILL = """
INSERT INTO ledger_entries (seq, event_id, subject, type, occurred_us, recorded_at, recorded_us,
                            kafka_partition, kafka_offset, digest, payload, payload_sha256,
                            leaf_index, leaf_hash)
SELECT 10000000 + g, 'bench-' || g, 's' || (g % 50000),
       (ARRAY['ConsentGiven', 'ConsentWithdrawn', 'DataShared', 'VisitorRegistered'])[1 + g % 4],
       g, now(), g, 9, g, '\\x00', decode(repeat('ab', 400), 'hex'), '\\x00', g, '\\x00'
FROM generate_series($1::bigint + 1, $2::bigint) AS g;
INSERT INTO violations (event_id, rule, subject, severity, clause, explanation, status,
                        occurred_us, detected_at, updated_at)
SELECT 'e' || g, (ARRAY['consent-missing', 'consent-withdrawn', 'purpose-mismatch'])[1 + g % 3],
       's' || (g % 50000), (ARRAY['critical', 'high', 'medium'])[1 + g % 3], 'clause-' || g % 22,
       'Explained at the length an explanation has, give or take a few words.',
       CASE WHEN g % 3 = 0 THEN 'retracted' ELSE 'open' END, g, now(), now()
FROM generate_series($1::bigint + 1, $2::bigint) AS g;
INSERT INTO rejected_events (kafka_partition, kafka_offset, reason, detail, raw, recorded_at)
SELECT 9, g, (ARRAY['invalid-json', 'invalid-schema', 'too-large'])[1 + g % 3], 'why',
       decode(repeat('cd', 200), 'hex'), now()
FROM generate_series($1::bigint / 10 + 1, $2::bigint / 10) AS g;
"""


def say(text: str) -> None:
    print(text, flush=True)


def figure(label: str, value: str) -> None:
    say(f"  {label:52} {value}")


async def timed(call: Callable[[], Awaitable[Any]], calls: int = CALLS) -> str:
    await call()  # warm: plans, connections
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return f"median {statistics.median(times):7.2f} ms, slowest {max(times):7.2f} ms"


async def statements(pool: asyncpg.Pool, queries: tuple[str, ...]) -> None:
    async with (
        pool.acquire() as connection,
        connection.transaction(isolation="repeatable_read", readonly=True),
    ):
        for query in queries:
            await connection.fetch(query)


async def kept(pool: asyncpg.Pool) -> None:
    async with (
        pool.acquire() as connection,
        connection.transaction(isolation="repeatable_read", readonly=True),
    ):
        await row_counts.kept_counts(connection)


async def triggers(connection: asyncpg.Connection, enabled: bool) -> None:
    verb = "ENABLE" if enabled else "DISABLE"
    for table, names in COUNTED_TRIGGERS.items():
        for name in names:
            await connection.execute(f"ALTER TABLE {table} {verb} TRIGGER {name}")


async def grow(pool: asyncpg.Pool, have: int, size: int) -> None:
    """Rows up to ``size`` violations, counted once at the end, as 021 does."""
    async with pool.acquire() as connection:
        await triggers(connection, enabled=False)
        started = time.perf_counter()
        for low in range(have, size, 100_000):
            await connection.execute(FILL.replace("$1::bigint", str(low)).replace(
                "$2::bigint", str(min(size, low + 100_000))))  # fmt: skip
        await connection.execute("VACUUM ANALYZE ledger_entries, violations, rejected_events")
        async with connection.transaction():
            await row_counts.recount(connection)
        await triggers(connection, enabled=True)
        say(f"  filled to {size:,} violations in {time.perf_counter() - started:.0f} s")


async def reads(pool: asyncpg.Pool, bootstrap: str, dsn: str, size: int) -> None:
    say(f"{size:,} violations, {size:,} ledger entries, {size // 10:,} rejected records:")
    figure(
        "/v1/stats database part, before (count violations)",
        await timed(lambda: statements(pool, STATS_BEFORE)),
    )
    figure(
        "/metrics database part, before (4 counts)",
        await timed(lambda: statements(pool, METRICS_BEFORE)),
    )
    figure("either's database part, after (kept counts)", await timed(lambda: kept(pool)))
    figure("lag, before (a consumer per call)", await timed(lambda: end_offsets(bootstrap, TOPIC)))
    log_end = LogEndOffsets(bootstrap)
    try:
        figure("lag, after (the kept consumer)", await timed(lambda: log_end.of(TOPIC)))
    finally:
        await log_end.close()
    settings = Settings(
        database_url=dsn, kafka_bootstrap=bootstrap, events_topic=TOPIC,
        master_key="A" * 43 + "=",
    )  # fmt: skip
    app = create_app(settings, pool=pool, policy=load_reference_policy())
    token, _ = await TokenStore(pool).issue(f"bench-{size}", ["admin"])
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://api",
            headers={"Authorization": f"Bearer {token}"},
        ) as client,
    ):  # fmt: skip
        for path in ("/v1/stats", "/metrics"):

            async def get(path: str = path) -> None:
                (await client.get(path)).raise_for_status()

            figure(f"GET {path} end to end, after", await timed(get))


async def worker(pool: asyncpg.Pool, runs: int = 4, batches: int = 25, size: int = 200) -> None:
    """Records/s through the pipeline, and µs per record in its write stage (the
    batch statement, where the triggers run), counts kept and not, alternating."""
    pipeline = BatchPipeline(pool, KeyRing(os.urandom(32)), load_reference_policy(), Settings())
    factory = EventFactory(seed=21, subjects=20_000)
    offset = 0
    rates: dict[bool, list[float]] = {True: [], False: []}
    writes: dict[bool, list[float]] = {True: [], False: []}
    for run in range(runs * 2):
        enabled = run % 2 == 0
        async with pool.acquire() as connection:
            await triggers(connection, enabled)
        records = []
        for event in factory.events(batches * size):
            records.append(Record(0, offset, orjson.dumps(event), key=event["subject"].encode()))
            offset += 1
        started = time.perf_counter()
        write_ms = 0.0
        for start in range(0, len(records), size):
            report = await pipeline.process(records[start : start + size])
            write_ms += report.stages_ms["write"]
        rates[enabled].append(len(records) / (time.perf_counter() - started))
        writes[enabled].append(write_ms * 1000 / len(records))
    async with pool.acquire() as connection:
        await triggers(connection, enabled=True)
        async with connection.transaction():
            await row_counts.recount(connection)  # what the disabled runs wrote
    for enabled, label in ((True, "counts kept (021)"), (False, "triggers disabled")):
        values = ", ".join(f"{rate:,.0f}" for rate in rates[enabled])
        stage = ", ".join(f"{us:.0f}" for us in writes[enabled])
        say(
            f"  worker, {label}: {values} records/s; write stage {stage} µs a record "
            f"(batches of {size}; median rate {statistics.median(rates[enabled]):,.0f}/s, "
            f"write {statistics.median(writes[enabled]):.0f} µs)"
        )


async def main(sizes: list[int]) -> None:
    say(describe())
    broker = None if os.environ.get("LEDGER_BENCH_KAFKA") else EmbeddedBroker().start()
    bootstrap = os.environ.get("LEDGER_BENCH_KAFKA") or (broker.bootstrap if broker else "")
    try:
        async with fresh_database("bench_counts") as dsn:
            await ensure_topics(bootstrap, {TOPIC: 4})
            pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
            assert pool is not None
            try:
                async with pool.acquire() as connection:
                    await migrate(connection)
                await worker(pool)
                have = 0
                for size in sizes:
                    await grow(pool, have, size)
                    have = size
                    await reads(pool, bootstrap, dsn, size)
            finally:
                await pool.close()
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    asyncio.run(main([int(size) for size in sys.argv[1:]] or [100_000, 1_000_000]))
