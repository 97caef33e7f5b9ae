"""Benchmark alert webhooks (worker/webhooks.py): how fast queued alerts reach a
local receiver, whether a receiver that never answers slows another, what
queueing costs the relay, and what /v1/stats' count per hook costs on a big
table.

Usage: python bench/bench_webhooks.py [ALERTS] [ROWS]   (default 2,000 and 1,000,000)

The receivers are ThreadingHTTPServers in processes of their own (one answers
204 at once, one holds every request until the dispatcher's timeout, 2 s);
PostgreSQL is embedded (or LEDGER_BENCH_DATABASE_URL). Prints figures; never
fails on a timing.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
from machine import describe, fresh_database

from consent_ledger.core.timeline import Status, Violation, ViolationChange
from consent_ledger.core.verdicts import SEVERITY, Rule
from consent_ledger.devtools.processes import find_free_port
from consent_ledger.store.batch_write import alert_message
from consent_ledger.store.migrate import migrate
from consent_ledger.store.webhook_deliveries import figures_by_hook, queue_deliveries
from consent_ledger.webhooks import parse_webhooks
from consent_ledger.worker.webhooks import WebhookDispatcher

TOPIC = "ledger.violations"
TIMEOUT_S = 2.0
# For comparison: the same figures counted over every row, as a first version did.
COUNT_EVERY_ROW = """
SELECT hook, count(*) FILTER (WHERE delivered_at IS NOT NULL),
       count(*) FILTER (WHERE delivered_at IS NULL AND dead_at IS NULL),
       count(*) FILTER (WHERE dead_at IS NOT NULL), sum(failures)
FROM webhook_deliveries GROUP BY hook
"""


def serve(port: int, hang_s: float) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            if hang_s:
                time.sleep(hang_s)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def alerts(count: int) -> list[bytes]:
    now = datetime.now(UTC)
    return [
        alert_message(
            ViolationChange(
                Status.OPEN,
                Violation(f"e-{n}", Rule.CONSENT_MISSING, f"s-{n}", SEVERITY[Rule.CONSENT_MISSING],
                          "k", "explained", n, "v1"),
            ),
            now,
        )
        for n in range(count)
    ]  # fmt: skip


async def delivered(pool: asyncpg.Pool, url: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE url = $1 AND delivered_at IS NOT NULL",
            url,
        )
    )


async def run_dispatch(
    pool: asyncpg.Pool, urls: Sequence[str], count: int, watched: str
) -> tuple[float, float]:
    """Queue ``count`` alerts for every URL, run one dispatcher until ``watched``
    took them all; (seconds to queue, seconds to deliver)."""
    await pool.execute("TRUNCATE webhook_deliveries, webhook_totals")
    configured = parse_webhooks(
        {"webhooks": [{"url": url, "secret": "bench"} for url in urls]}, "bench", lambda k, n: b""
    )
    dispatcher = WebhookDispatcher(pool, configured, topic=TOPIC, timeout_s=TIMEOUT_S)
    values = alerts(count)
    started = time.perf_counter()
    for start in range(0, count, 1_000):  # as the relay does, a pass at a time
        deliveries = dispatcher.deliveries_for([(TOPIC, v) for v in values[start : start + 1_000]])
        async with pool.acquire() as connection, connection.transaction():
            await queue_deliveries(connection, deliveries)
    queued_s = time.perf_counter() - started
    task = asyncio.create_task(dispatcher.run(idle_poll_s=0.05))
    started = time.perf_counter()
    try:
        while True:
            if await delivered(pool, watched) >= count:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return queued_s, time.perf_counter() - started


async def stats_timings(pool: asyncpg.Pool, rows: int) -> tuple[list[float], list[float]]:
    """Fill the table with ``rows`` deliveries over 4 hooks (1 % undelivered),
    then time the per-hook figures 10 times as shipped and 10 times counted
    over every row."""
    await pool.execute("TRUNCATE webhook_deliveries, webhook_totals")
    now = datetime.now(UTC)
    records = [
        (f"00000000-0000-4000-8000-{n:012d}", f"http://h{n % 4}/", f"hook-{n % 4}", f"a-{n}",
         f"s-{n}", b"{}", now, 1, 0, now, now if n % 100 else None, None, None)
        for n in range(rows)
    ]  # fmt: skip
    async with pool.acquire() as connection:
        await connection.copy_records_to_table(
            "webhook_deliveries",
            records=records,
            columns=(
                "delivery_id", "url", "hook", "alert_id", "subject", "body", "created_at",
                "attempts", "failures", "next_attempt_at", "delivered_at", "dead_at", "last_error",
            ),
        )  # fmt: skip
        await connection.execute(
            "INSERT INTO webhook_totals (hook, delivered, failed_attempts) SELECT hook, count(*)"
            " FILTER (WHERE delivered_at IS NOT NULL), 0 FROM webhook_deliveries GROUP BY hook"
        )  # as the dispatcher would have counted them
        await connection.execute("VACUUM ANALYZE webhook_deliveries")
        shipped, every_row = [], []
        for _ in range(10):
            started = time.perf_counter()
            await figures_by_hook(connection)
            shipped.append(time.perf_counter() - started)
            started = time.perf_counter()
            await connection.fetch(COUNT_EVERY_ROW)
            every_row.append(time.perf_counter() - started)
    return shipped, every_row


async def main(count: int, rows: int) -> None:
    print(describe(), flush=True)
    ports = [find_free_port(), find_free_port()]
    receivers = [
        multiprocessing.Process(target=serve, args=(ports[0], 0.0), daemon=True),
        multiprocessing.Process(target=serve, args=(ports[1], TIMEOUT_S + 1), daemon=True),
    ]
    for process in receivers:
        process.start()
    prompt, stuck = (f"http://127.0.0.1:{port}/hook" for port in ports)
    try:
        async with fresh_database("bench_webhooks") as dsn:
            pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
            async with pool.acquire() as connection:
                await migrate(connection)
            await asyncio.sleep(0.5)  # the receivers' processes bind their ports
            queued_s, alone_s = await run_dispatch(pool, [prompt], count, prompt)
            print(f"queue {count:,} alerts for 1 URL, as the relay does: {queued_s * 1000:.0f} ms "
                  f"({count / queued_s:,.0f} rows/s)")  # fmt: skip
            print(f"deliver {count:,} alerts to 1 URL (4 POSTs in flight): {alone_s:.2f} s "
                  f"({count / alone_s:,.0f} alerts/s)")  # fmt: skip
            _, beside_s = await run_dispatch(pool, [prompt, stuck], count, prompt)
            print(f"the same beside a URL that never answers within {TIMEOUT_S:g} s: {beside_s:.2f} s "
                  f"({count / beside_s:,.0f} alerts/s)")  # fmt: skip
            shipped, every_row = await stats_timings(pool, rows)
            for label, seconds in (("as shipped", shipped), ("counted over every row", every_row)):
                print(f"/v1/stats figures per hook over {rows:,} rows, {label}: p50 "
                      f"{statistics.median(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms")  # fmt: skip
            await pool.close()
    finally:
        for process in receivers:
            process.terminate()


if __name__ == "__main__":
    arguments = [int(value) for value in sys.argv[1:3]]
    asyncio.run(main(*(arguments + [2_000, 1_000_000][len(arguments) :])))
