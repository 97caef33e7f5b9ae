"""Benchmark the count behind GET /v1/policy: open violations per clause, one
grouped statement (store/api_reads.py, OPEN_VIOLATIONS_BY_CLAUSE), over a
million violations.

Usage: python bench/bench_policy.py [VIOLATIONS]   (default 1,000,000)

The violations are written straight into a fresh database (COPY), two thirds
open, their clauses drawn from the reference policy's; the table is vacuumed
and analysed as autovacuum would leave it. The count runs 20 times as shipped
(no index on clause), then 20 times with a partial index on clause for the
open ones, created here only, to show what one would bring to this read (the
worker's writes pay for it: migration 022). Prints p50 and p99 of each and
the plan used; never fails on a timing.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from datetime import UTC, datetime

import asyncpg
from machine import describe, fresh_database

from consent_ledger.core.coverage import clause_coverage
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.store.api_reads import OPEN_VIOLATIONS_BY_CLAUSE
from consent_ledger.store.migrate import migrate

RUNS = 20
PARTIAL_INDEX = "CREATE INDEX bench_open_by_clause ON violations (clause) WHERE status = 'open'"


async def fill(connection: asyncpg.Connection, count: int) -> None:
    rng = random.Random(15)
    clauses = [item.id for item in clause_coverage(load_reference_policy()) if item.enforced]
    now = datetime.now(UTC)
    rows = [
        (f"e{number}", "consent-missing", f"s{number % 50_000}", "high", rng.choice(clauses),
         "explained", "open" if rng.random() < 2 / 3 else "retracted", number, now, now)
        for number in range(count)
    ]  # fmt: skip
    await connection.copy_records_to_table(
        "violations",
        records=rows,
        columns=(
            "event_id", "rule", "subject", "severity", "clause", "explanation", "status",
            "occurred_us", "detected_at", "updated_at",
        ),
    )  # fmt: skip
    await connection.execute("VACUUM ANALYZE violations")


async def timings(connection: asyncpg.Connection) -> list[float]:
    seconds = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await connection.fetch(OPEN_VIOLATIONS_BY_CLAUSE)
        seconds.append(time.perf_counter() - started)
    return seconds


def summary(label: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"{label}: p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"


async def plan(connection: asyncpg.Connection) -> str:
    rows = await connection.fetch(f"EXPLAIN {OPEN_VIOLATIONS_BY_CLAUSE}")
    return " / ".join(row[0].strip() for row in rows if "Scan" in row[0] or "Aggregate" in row[0])


async def main(count: int) -> None:
    print(describe(), flush=True)
    async with fresh_database("bench_policy") as dsn:
        connection = await asyncpg.connect(dsn)
        try:
            await migrate(connection)
            started = time.perf_counter()
            await fill(connection, count)
            opened = await connection.fetchval(
                "SELECT count(*) FROM violations WHERE status = 'open'"
            )
            print(
                f"recorded {count:,} violations ({opened:,} open) "
                f"in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            print(summary("open per clause, as shipped", await timings(connection)))
            print(f"  plan: {await plan(connection)}")
            await connection.execute(PARTIAL_INDEX)
            await connection.execute("VACUUM ANALYZE violations")
            print(summary("open per clause, partial index on clause", await timings(connection)))
            print(f"  plan: {await plan(connection)}")
        finally:
            await connection.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
