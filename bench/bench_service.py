"""End-to-end benchmark of the running service. Prints figures; never fails on a timing.

1. Sustained rate: worker processes (`consent-ledger worker`) settle in their
   consumer group, then 100,000 events are published to ledger.events; the rate
   into PostgreSQL is counted from the end of publishing to the last record.
2. The same without the ledger's hashing and encryption (LEDGER_INTEGRITY=false),
   to show what integrity costs.
3. Latency at a steady 2,000 events/s: from the call that sends an event (with
   the project's own producer settings) to the event being committed in
   PostgreSQL, which is what the API reads (p50, p99).
4. A naive baseline: one aiokafka consumer, one INSERT + COMMIT + offset commit
   per event.

Usage: python bench/bench_service.py [EVENTS] [--latency]  (default 100,000;
--latency measures only the latency at the steady rate). The broker is
the embedded Tansu unless LEDGER_BENCH_KAFKA names one; PostgreSQL is
LEDGER_BENCH_DATABASE_URL (a server where databases may be created) or embedded.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer
from machine import CpuMeter, bench_servers, describe

from consent_ledger.devtools.broker import EmbeddedBroker
from consent_ledger.devtools.databases import create_database, drop_database
from consent_ledger.devtools.demo import EventFactory
from consent_ledger.devtools.kafka_admin import ensure_topics
from consent_ledger.kafka import make_producer
from consent_ledger.settings import Settings

CLI = Path(sys.executable).with_name("consent-ledger")
STEADY_RATE = 2_000
STEADY_SECONDS = 20
WARMUP_SECONDS = 8
LATENCY_WORKERS = int(os.environ.get("LEDGER_BENCH_LATENCY_WORKERS", "1"))
BASELINE_EVENTS = 5_000
SETTLE_SECONDS = 8


def say(text: str) -> None:
    print(text, flush=True)


async def publish(bootstrap: str, topic: str, events: list[dict[str, object]]) -> float:
    producer = make_producer(Settings(kafka_bootstrap=bootstrap, kafka_idempotence=False))
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [
            await producer.send(topic, orjson.dumps(event), key=str(event["subject"]).encode())
            for event in events
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()
    return time.perf_counter() - started


@asynccontextmanager
async def workers(
    env: dict[str, str], count: int
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """``count`` worker processes in one consumer group."""
    processes = []
    for _ in range(count):
        with tempfile.NamedTemporaryFile(
            prefix="bench-worker-", suffix=".log", delete=False
        ) as log:
            processes.append(
                await asyncio.create_subprocess_exec(
                    str(CLI), "worker", env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
    try:
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            await asyncio.wait_for(process.wait(), timeout=30)


async def counted(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        value = await connection.fetchval(
            "SELECT coalesce(sum(accepted + duplicates + rejected), 0) FROM consumer_positions"
        )
        return int(value)
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await connection.close()


async def sustained_rate(
    env: dict[str, str],
    dsn: str,
    bootstrap: str,
    topic: str,
    events: list[dict[str, object]],
    worker_count: int,
) -> tuple[float, float]:
    """Events/s into PostgreSQL, and the seconds publishing took.

    The workers start first and settle in their consumer group on a trickle of
    warm-up events (SETTLE_SECONDS, longer than a session timeout, so any late
    join and its rebalance are over). Then ``events`` are published, and the
    rate is counted from the end of publishing to the last record: the workers
    share the machine with neither the producer nor a rebalance."""
    warmup = EventFactory(seed=5, subjects=200, live=True)
    async with workers(env, worker_count):
        base = await counted(dsn)
        sent = 0
        settled_at = None
        while settled_at is None or time.perf_counter() < settled_at:
            await publish(bootstrap, topic, [warmup.next_event()])
            sent += 1
            if settled_at is None and await counted(dsn) > base:
                settled_at = time.perf_counter() + SETTLE_SECONDS
            await asyncio.sleep(0.2)
        base = await counted_at_least(dsn, base + sent)
        seconds = await publish(bootstrap, topic, events)
        start, at_start = time.perf_counter(), await counted(dsn)
        done = await counted_at_least(dsn, base + len(events))
        return (done - at_start) / (time.perf_counter() - start), seconds


async def counted_at_least(dsn: str, records: int) -> int:
    """Poll the counts the workers commit until they reach ``records``."""
    while True:
        done = await counted(dsn)
        if done >= records:
            return done
        await asyncio.sleep(0.05)


async def steady_latency(
    env: dict[str, str],
    dsn: str,
    bootstrap: str,
    topic: str,
    worker_count: int,
    servers: dict[str, list[int]],
) -> list[float]:
    """Publish at STEADY_RATE; after WARMUP_SECONDS (group joins, rebalances), the
    latency of each event of the next STEADY_SECONDS, from the call that sends it
    to its commit.

    The load is published as an upstream system publishes with the project's own
    producers (``make_producer``: ``acks=all``, ``linger_ms=5``), and the clock
    starts before the producer batches it, so its linger counts as latency. (A
    producer lingering 1 ms sends a request per record or two: at 2,000 events/s
    Tansu then spent 73 % of a core against 43 %, and a plain consumer saw p99
    48-113 ms against 26-29 ms.)

    An event is committed (and visible to the API) once its partition's stored
    position passes its offset: the position commits in the same transaction as
    the rows. Watching the positions is one small query per poll, so the
    measurement does not load the database it measures.

    Prints the CPU each process took while the load was steady (``servers``:
    the broker's and PostgreSQL's processes, where this benchmark started
    them): on two shared cores the latency follows how busy they are."""
    factory = EventFactory(seed=99, subjects=20_000, live=True)
    sent: dict[tuple[int, int], float] = {}  # (partition, offset) -> sent at
    pending: dict[int, list[int]] = {}  # partition -> offsets not yet seen committed
    visible: dict[tuple[int, int], float] = {}
    async with workers(env, worker_count) as processes:
        meter = CpuMeter(
            {"worker(s)": [process.pid for process in processes]}
            | servers
            | {"load generator and watcher": [os.getpid()]}
        )
        before = await counted(dsn)
        while await counted(dsn) == before:  # the group has joined and consumes
            await publish(bootstrap, topic, [factory.next_event()])
            await asyncio.sleep(0.2)
        producer = make_producer(Settings(kafka_bootstrap=bootstrap, kafka_idempotence=False))
        await producer.start()
        connection = await asyncpg.connect(dsn)
        stop = asyncio.Event()

        gaps: list[float] = []

        async def watch() -> None:
            last = time.perf_counter()
            while not stop.is_set() or any(pending.values()):
                gaps.append(time.perf_counter() - last)
                last = time.perf_counter()
                rows = await connection.fetch(
                    "SELECT kafka_partition, next_offset FROM consumer_positions WHERE topic = $1",
                    topic,
                )
                now = time.perf_counter()
                for partition, next_offset in rows:
                    waiting = pending.get(partition, [])
                    done = [offset for offset in waiting if offset < next_offset]
                    for offset in done:
                        visible[(partition, offset)] = now
                    pending[partition] = [offset for offset in waiting if offset >= next_offset]
                await asyncio.sleep(0.005)

        def acknowledged(sent_at: float | None) -> Callable[[asyncio.Future[Any]], None]:
            def done(future: asyncio.Future[Any]) -> None:
                if sent_at is not None:
                    metadata = future.result()
                    sent[(metadata.partition, metadata.offset)] = sent_at
                    pending.setdefault(metadata.partition, []).append(metadata.offset)

            return done

        watcher = asyncio.create_task(watch())
        # This process keeps every future and timestamp (hundreds of thousands of
        # objects): a full collection of them stalls its watcher for hundreds of
        # milliseconds, which would be counted as the service's latency.
        gc.disable()
        started = time.perf_counter()
        futures = []
        total = STEADY_RATE * (WARMUP_SECONDS + STEADY_SECONDS)
        for number in range(total):
            delay = started + number / STEADY_RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if number == STEADY_RATE * WARMUP_SECONDS:
                meter.start()
            event = factory.next_event()
            sent_at = time.perf_counter()
            future = await producer.send(
                topic, orjson.dumps(event), key=str(event["subject"]).encode()
            )
            future.add_done_callback(
                acknowledged(sent_at if number >= STEADY_RATE * WARMUP_SECONDS else None)
            )
            futures.append(future)
        await asyncio.gather(*futures)
        shares = meter.shares()
        stop.set()
        await asyncio.wait_for(watcher, timeout=60)
        gc.enable()
        await producer.stop()
        await connection.close()
    gaps.sort()
    say(
        "  CPU while steady, % of one core: "
        + ", ".join(f"{name} {share:.0f}" for name, share in shares.items())
    )
    say(
        f"  this benchmark's own watcher: polls every 5 ms, gaps p99 {gaps[int(len(gaps) * 0.99)] * 1000:.0f} ms, "
        f"max {gaps[-1] * 1000:.0f} ms (a gap delays what it sees: counted as latency)"
    )
    if os.environ.get("LEDGER_BENCH_TRACE"):
        by_second: dict[int, list[float]] = {}
        for key, at in sent.items():
            by_second.setdefault(int(at - started), []).append((visible[key] - at) * 1000)
        for second, values in sorted(by_second.items()):
            say(
                f"  second {second}: p50 {statistics.median(values):.0f} ms, max {max(values):.0f} ms"
            )
    return sorted((visible[key] - sent[key]) * 1000 for key in sent)


async def naive_baseline(bootstrap: str, topic: str, dsn: str) -> float:
    """One consumer, one INSERT + COMMIT + offset commit per event."""
    connection = await asyncpg.connect(dsn)
    await connection.execute("CREATE TABLE naive (event_id text PRIMARY KEY, body jsonb NOT NULL)")
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"naive-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest", enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    done = 0
    started = None
    try:
        async for record in consumer:
            if started is None:
                started = time.perf_counter()
            body = orjson.loads(record.value)
            async with connection.transaction():
                await connection.execute(
                    "INSERT INTO naive VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    body["id"],
                    record.value.decode(),
                )
            await consumer.commit()
            done += 1
            if done >= BASELINE_EVENTS:
                break
    finally:
        await consumer.stop()
        await connection.close()
    assert started is not None
    return done / (time.perf_counter() - started)


@asynccontextmanager
async def ledger_database(
    server: str, bootstrap: str
) -> AsyncIterator[tuple[dict[str, str], str, str]]:
    """A fresh database and topics, and the environment of workers that use them."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    dsn = await create_database(server, name)
    topic = f"{name}.events"
    await ensure_topics(bootstrap, {topic: 4, f"{name}.rejected": 1, f"{name}.violations": 1})
    env = dict(
        os.environ, LEDGER_KAFKA_BOOTSTRAP=bootstrap, LEDGER_DATABASE_URL=dsn,
        LEDGER_EVENTS_TOPIC=topic, LEDGER_REJECTED_TOPIC=f"{name}.rejected",
        LEDGER_VIOLATIONS_TOPIC=f"{name}.violations", LEDGER_CONSUMER_GROUP=f"{name}-workers",
        LEDGER_MASTER_KEY=base64.b64encode(os.urandom(32)).decode(), LEDGER_KAFKA_IDEMPOTENCE="false",
        LEDGER_SESSION_TIMEOUT_S="6",
        LEDGER_FETCH_MAX_WAIT_MS=str(EmbeddedBroker.FETCH_MAX_WAIT_MS),
    )  # fmt: skip
    try:
        yield env, dsn, topic
    finally:
        await drop_database(server, name)


async def sustained_rates(server: str, bootstrap: str, count: int) -> dict[str, list[float]]:
    """The sustained rate of 1 worker once, and of 2 workers with and without
    integrity three times each, alternating (the machine's noise is 10-30 %: the
    integrity comparison compares medians)."""
    events = [
        dict(event)
        for event in EventFactory(seed=3, subjects=max(1_000, count // 10)).events(count)
    ]
    results: dict[str, list[float]] = {}
    runs = (("1 worker", "true", 1),) + (
        ("2 workers", "true", 2),
        ("2 workers, no integrity", "false", 2),
    ) * 3
    for label, integrity, worker_count in runs:
        async with ledger_database(server, bootstrap) as (env, dsn, topic):
            env["LEDGER_INTEGRITY"] = integrity
            rate, seconds = await sustained_rate(env, dsn, bootstrap, topic, events, worker_count)
        results.setdefault(label, []).append(rate)
        say(f"published {count:,} events in {seconds:.1f} s ({count / seconds:,.0f}/s)")
        say(f"sustained processing rate, {label}: {rate:,.0f} events/s into PostgreSQL")
    with_integrity = statistics.median(results["2 workers"])
    without = statistics.median(results["2 workers, no integrity"])
    say(
        f"2 workers: best {max(results['2 workers']):,.0f}, median {with_integrity:,.0f} events/s; "
        f"without integrity median {without:,.0f}"
    )
    say(
        f"cost of hashing + encryption: {1 - with_integrity / without:.1%} of the sustained rate, "
        "medians of three alternating runs (target < 15%)"
    )
    return results


async def main() -> None:
    arguments = [argument for argument in sys.argv[1:] if argument != "--latency"]
    latency_only = "--latency" in sys.argv[1:]
    count = int(arguments[0]) if arguments else 100_000
    with bench_servers("bench_pg", broker=True) as servers:
        server, bootstrap = servers.database, servers.bootstrap
        say(f"broker {bootstrap}, PostgreSQL {server.split('@')[-1]}")
        say(describe())
        results = {} if latency_only else await sustained_rates(server, bootstrap, count)
        async with ledger_database(server, bootstrap) as (env, dsn, topic):
            pids = {name: [process.pid] for name, process in servers.started.items() if process.pid}
            latencies = await steady_latency(env, dsn, bootstrap, topic, LATENCY_WORKERS, pids)
            say(
                f"latency send -> committed (visible to the API), {LATENCY_WORKERS} worker(s), "
                f"{STEADY_RATE:,}/s for {STEADY_SECONDS} s: p50 {statistics.median(latencies):.0f} ms, "
                f"p99 {latencies[int(len(latencies) * 0.99)]:.0f} ms, max {latencies[-1]:.0f} ms "
                f"({len(latencies):,} events; target p99 < 250 ms)"
            )
            if latency_only:
                return
            baseline = await naive_baseline(bootstrap, topic, dsn)
        best = max(*results["1 worker"], *results["2 workers"])
        say(f"naive baseline (INSERT + COMMIT + offset commit per event): {baseline:,.0f} events/s")
        say(
            f"  the ledger's best ({best:,.0f}/s) is {best / baseline:.1f}x the naive baseline (target >= 4x)"
        )


if __name__ == "__main__":
    asyncio.run(main())
