"""Soak: the service under a steady stream with hostile records, for minutes.

A worker and the API run as their own processes (`consent-ledger worker`,
`consent-ledger api`) on the embedded broker and PostgreSQL (or
LEDGER_BENCH_KAFKA / LEDGER_BENCH_DATABASE_URL). The load generator publishes
RATE records a second to ledger.events, as an upstream producer does; about 2 %
of them are hostile: U+0000 and a lone surrogate in a subject, a member name
twice, nesting 40 deep, an envelope without `time`, not JSON, a redelivered
event, and every 5 s a record over 262,144 bytes. Meanwhile the API is read
(stats, a page of violations and of rejected records, every second) and
written (a batch of ten events every second, a 980 KB array of zeros every
30 s).

Each minute it prints the records sent and counted, the consumer lag (records
on the topic not yet committed), the outbox's depth and dead messages, the
workers' and the API's resident memory, and what tells a service that slows as
the ledger grows from a machine that has no CPU to spare: the workers' batches
(how many, mean size, milliseconds per record in each stage: check, load,
settle, write, from their "batch committed" log lines), the CPU each process
took (% of one core: workers, API, PostgreSQL, broker, this load generator),
the workers' CPU per record, and the load average. A cost that grows shows as
milliseconds per record rising minute by minute; a starved worker as flat
costs per record, its CPU share falling and the lag rising. At the end, per
minute, the latency from the call that sends a record to its commit in
PostgreSQL (p50, p99; as bench_service.py measures it). Prints figures; never
fails on a timing.

Usage: python bench/bench_soak.py [--minutes N] [--rate R] [--workers W]
(default 10 minutes, 1,000/s, one worker; several workers share one consumer group)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from bench_service import CLI, counted, ledger_database, say
from machine import CpuMeter, bench_servers, describe, runnable_wait_s, tree

from consent_ledger.api.broker import LogEndOffsets, consumer_lag
from consent_ledger.devtools.demo import EventFactory
from consent_ledger.devtools.processes import find_free_port, stop_process_groups
from consent_ledger.devtools.tokens import DEMO_SOURCES
from consent_ledger.kafka import make_producer
from consent_ledger.settings import Settings
from consent_ledger.store.tokens import TokenStore

HOSTILE_EVERY = 50  # one record in 50 is hostile
OVERSIZE_EVERY_S = 5.0
ZEROS_EVERY_S = 30.0


def hostile_records(factory: EventFactory) -> list[bytes]:
    """One of each kind of hostile record (CONTRACT §2), built on a valid event."""

    def event() -> dict[str, Any]:
        return dict(factory.next_event())

    nul, surrogate, twice, deep, no_time = event(), event(), event(), event(), event()
    nul_text = orjson.dumps(nul).replace(
        orjson.dumps(nul["subject"]), b'"nul\\u0000' + nul["subject"].encode() + b'"'
    )
    surrogate_text = orjson.dumps(surrogate).replace(
        orjson.dumps(surrogate["subject"]), b'"surr\\ud800' + surrogate["subject"].encode() + b'"'
    )
    twice_text = orjson.dumps(twice)[:-1] + b',"id":"' + twice["id"].encode() + b'-twice"}'
    nested: Any = 1
    for _ in range(40):
        nested = {"n": nested}
    deep["data"] = {**deep["data"], "nested": nested}
    del no_time["time"]
    return [
        nul_text,
        surrogate_text,
        twice_text,
        orjson.dumps(deep),
        orjson.dumps(no_time),
        b'{"specversion": "1.0", "id": ',  # not JSON
    ]


def oversize_record(factory: EventFactory) -> bytes:
    event = dict(factory.next_event())
    event["data"] = {**event["data"], "padding": "x" * 270_000}
    return orjson.dumps(event)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Latencies:
    """Send time of each acknowledged record, per partition in offset order, until
    the worker's committed position passes it; then its latency, by minute sent."""

    def __init__(self) -> None:
        self.pending: dict[int, collections.deque[tuple[int, float, int]]] = {}
        self.by_minute: dict[int, list[float]] = collections.defaultdict(list)

    def sent(self, partition: int, offset: int, sent_at: float, minute: int) -> None:
        self.pending.setdefault(partition, collections.deque()).append((offset, sent_at, minute))

    def committed(self, partition: int, next_offset: int, now: float) -> None:
        waiting = self.pending.get(partition)
        while waiting and waiting[0][0] < next_offset:
            _, sent_at, minute = waiting.popleft()
            self.by_minute[minute].append((now - sent_at) * 1000)

    def waiting(self) -> int:
        return sum(len(queue) for queue in self.pending.values())


async def exercise_api(
    api_url: str, token: str, factory: EventFactory, stop: asyncio.Event,
    read_ms: dict[str, list[float]],
) -> dict[str, int]:  # fmt: skip
    """Reads every second, ten events posted every second, the 980 KB body of
    zeros every 30 s, as a privacy officer who also publishes the demo's
    sources; the statuses seen, counted, and each read's time in ``read_ms``
    (by path: a read whose cost grows with the tables shows there)."""
    statuses: dict[str, int] = collections.Counter()
    zeros = b"[" + b"0," * 489_999 + b"0]"
    last_zeros = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=api_url, timeout=30, headers=headers) as client:
        while not stop.is_set():
            try:
                for path in ("/v1/stats", "/v1/violations?limit=100", "/v1/rejected?limit=100"):
                    asked = time.perf_counter()
                    status = (await client.get(path)).status_code
                    read_ms[path.split("?")[0]].append((time.perf_counter() - asked) * 1000)
                    statuses[f"GET {path.split('?')[0]} {status}"] += 1
                batch = [dict(factory.next_event()) for _ in range(10)]
                posted = await client.post("/v1/events", json=batch)
                statuses[f"POST /v1/events {posted.status_code}"] += 1
                if time.monotonic() - last_zeros >= ZEROS_EVERY_S:
                    last_zeros = time.monotonic()
                    answer = await client.post(
                        "/v1/events", content=zeros, headers={"Content-Type": "application/json"}
                    )
                    statuses[f"POST zeros {answer.status_code}"] += 1
            except httpx.TransportError as exc:
                statuses[f"transport error {type(exc).__name__}"] += 1
            await asyncio.sleep(1)
    return statuses


def start_service(
    env: dict[str, str], folder: Path, workers: int
) -> dict[str, subprocess.Popen[bytes]]:
    """``workers`` workers (one consumer group) and the API, each logging to
    ``<name>.log`` in ``folder``."""
    processes = {}
    names = ["worker"] if workers == 1 else [f"worker-{n}" for n in range(1, workers + 1)]
    for name in [*names, "api"]:
        command = "api" if name == "api" else "worker"
        with (folder / f"{name}.log").open("wb") as log:
            processes[name] = subprocess.Popen(
                [str(CLI), command], env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
    return processes


async def issue_token(dsn: str) -> str:
    """A token for the API load (CONTRACT §7): reads as a privacy officer, posts
    the demo factory's events (erasures among them) as a publisher and eraser of
    its sources."""
    connection = await asyncpg.connect(dsn)
    try:
        token, _ = await TokenStore(connection).issue(
            "soak", ["privacy-officer", "publisher", "eraser"], sources=list(DEMO_SOURCES)
        )
    finally:
        await connection.close()
    return token


class WorkerLogs:
    """The "batch committed" lines the workers logged since the last reading."""

    def __init__(self, paths: list[Path]) -> None:
        self._read_to = dict.fromkeys(paths, 0)

    def batches(self) -> list[dict[str, Any]]:
        found = []
        for path, offset in self._read_to.items():
            with path.open("rb") as log:
                log.seek(offset)
                text = log.read()
            complete = text.rpartition(b"\n")[0]  # a line being written waits for the next
            self._read_to[path] = offset + len(complete) + (1 if complete else 0)
            for line in complete.splitlines():
                if b"batch committed" in line:
                    try:
                        found.append(orjson.loads(line))
                    except orjson.JSONDecodeError:
                        continue
        return found


class MinuteMonitor:
    """What one line per minute reports beside the counts: lag, batches, CPU."""

    def __init__(
        self, processes: dict[str, subprocess.Popen[bytes]], servers: dict[str, list[int]],
        folder: Path, log_end: LogEndOffsets, topic: str,
    ) -> None:  # fmt: skip
        workers = [name for name in processes if name.startswith("worker")]
        self.worker_names = workers
        self.log_end, self.topic = log_end, topic
        self.logs = WorkerLogs([folder / f"{name}.log" for name in workers])
        self.meter = CpuMeter(
            {"workers": [processes[name].pid for name in workers], "API": [processes["api"].pid]}
            | servers
            | {"load generator": [os.getpid()]}
        )
        self.meter.start()
        self.waiting_roots = {
            "workers": [processes[name].pid for name in workers], **servers
        }  # fmt: skip
        self.waited = self._waited()
        self.rows: list[dict[str, Any]] = []
        self.read_ms: dict[str, list[float]] = collections.defaultdict(list)

    def reads(self) -> str:
        """The API's reads since the last reading: median and slowest, by path."""
        timed = {path: sorted(times) for path, times in self.read_ms.items() if times}
        self.read_ms.clear()
        return (
            "API reads "
            + ", ".join(
                f"{path} {statistics.median(times):.0f}/{times[-1]:.0f} ms"
                for path, times in sorted(timed.items())
            )
            + " (median/slowest)"
        )

    async def lag(self, next_offsets: dict[int, int]) -> int | None:
        log_end = await self.log_end.of(self.topic)
        return sum(consumer_lag(log_end, next_offsets).values()) if log_end is not None else None

    def batches(self) -> str:
        """Batches since the last reading: count, mean size, ms per record by stage."""
        batches = self.logs.batches()
        records = sum(batch["records"] for batch in batches)
        if not records:
            return "no batch"
        stages: dict[str, float] = collections.Counter()
        for batch in batches:
            stages.update(batch.get("stages_ms") or {})
        per_record = ", ".join(
            f"{stage} {stages[stage] / records:.2f}"
            for stage in ("check", "load", "settle", "write")
        )
        total_ms = sum(batch["ms"] for batch in batches)
        rest_ms = total_ms - sum(stages.values())  # begin, commit (its fsync), the pool
        self.rows[-1] |= {"batches": len(batches), "records": records, "batch_ms": total_ms}
        return (
            f"{len(batches):,} batches of {records / len(batches):,.0f} records on average, "
            f"{total_ms / records:.2f} ms a record in batches ({per_record}, "
            f"commit and rest {rest_ms / records:.2f}); a worker in batches "
            f"{total_ms / 600 / len(self.worker_names):.0f} % of the minute"
        )

    def _waited(self) -> dict[str, float]:
        """Seconds each tree has waited for a CPU while runnable, so far (a tree
        whose processes ended drops what they waited: read as a lower bound)."""
        return {name: runnable_wait_s(tree(roots)) for name, roots in self.waiting_roots.items()}

    def cpu(self, processed: int) -> str:
        """Each process tree's CPU since the last reading, in % of one core, and
        the time the workers and the servers were runnable but got no CPU."""
        shares = self.meter.shares()
        self.meter.start()
        waited, self.waited = self.waited, self._waited()
        self.rows[-1] |= {"cpu": shares}
        workers_ms = shares["workers"] * 600 / processed if processed else float("nan")
        listed = ", ".join(f"{name} {share:.0f} %" for name, share in shares.items())
        queued = ", ".join(
            f"{name} {self.waited[name] - waited[name]:.0f} s" for name in self.waited
        )
        return (
            f"CPU {listed}; workers {workers_ms:.2f} ms a record; "
            f"load average {os.getloadavg()[0]:.1f}; runnable but waiting for a CPU: {queued}"
        )


async def soak(
    env: dict[str, str], dsn: str, bootstrap: str, topic: str, minutes: float, rate: int,
    workers: int, servers: dict[str, list[int]],
) -> None:  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    env = env | {"LEDGER_API_PORT": str(find_free_port())}
    api_url = f"http://127.0.0.1:{env['LEDGER_API_PORT']}"
    processes = start_service(env, folder, workers)
    say(f"logs in {folder}")
    factory = EventFactory(seed=7, subjects=50_000, live=True)
    producer = make_producer(Settings(kafka_bootstrap=bootstrap, kafka_idempotence=False))
    await producer.start()
    connection = await asyncpg.connect(dsn)  # the watcher's
    monitor = await asyncpg.connect(dsn)  # the minute lines'
    log_end = LogEndOffsets(bootstrap)  # one consumer for the run, as the API keeps
    latencies = Latencies()
    stop = asyncio.Event()
    try:
        async with httpx.AsyncClient(base_url=api_url) as client:
            for _ in range(600):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        token = await issue_token(dsn)
        before = await counted(dsn)
        while await counted(dsn) == before:  # the worker has joined its group and consumes
            event = factory.next_event()
            await producer.send_and_wait(topic, orjson.dumps(event), key=event["subject"].encode())
            await asyncio.sleep(0.2)

        def memory() -> str:
            return ", ".join(
                f"{name} {rss_mb(process.pid):.0f} MB" for name, process in processes.items()
            )

        say(f"RSS at start: {memory()}")
        monitor_of = MinuteMonitor(processes, servers, folder, log_end, topic)

        async def watch() -> None:
            while not stop.is_set() or latencies.waiting():
                rows = await connection.fetch(
                    "SELECT kafka_partition, next_offset FROM consumer_positions WHERE topic = $1",
                    topic,
                )
                now = time.perf_counter()
                for partition, next_offset in rows:
                    latencies.committed(partition, next_offset, now)
                await asyncio.sleep(0.01)

        def acknowledged(sent_at: float, minute: int) -> Any:
            def done(future: asyncio.Future[Any]) -> None:
                if not future.cancelled() and future.exception() is None:
                    metadata = future.result()
                    latencies.sent(metadata.partition, metadata.offset, sent_at, minute)

            return done

        hostile = hostile_records(factory)
        redelivered = orjson.dumps(factory.next_event())
        watcher = asyncio.create_task(watch())
        api_load = asyncio.create_task(
            exercise_api(api_url, token, factory, stop, monitor_of.read_ms)
        )
        gc.disable()  # this process keeps a timestamp per record: no stalls from collecting them
        started = time.perf_counter()
        total = int(minutes * 60 * rate)
        sent_by_minute: dict[int, int] = collections.Counter()
        hostile_sent = 0
        last_oversize = started
        reported = 0
        for number in range(total):
            delay = started + number / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter()
            minute = int((now - started) // 60)
            if now - last_oversize >= OVERSIZE_EVERY_S:
                last_oversize = now
                value, key = oversize_record(factory), b"oversize"
                hostile_sent += 1
            elif number % HOSTILE_EVERY == HOSTILE_EVERY - 1:
                kind = (number // HOSTILE_EVERY) % (len(hostile) + 1)
                value = hostile[kind] if kind < len(hostile) else redelivered
                key = b"hostile"
                hostile_sent += 1
            else:
                event = factory.next_event()
                value, key = orjson.dumps(event), event["subject"].encode()
            future = await producer.send(topic, value, key=key)
            future.add_done_callback(acknowledged(now, minute))
            sent_by_minute[minute] += 1
            if minute > reported:
                await progress(monitor, monitor_of, reported, sent_by_minute, memory())
                reported = minute
        await producer.flush()
        stop.set()
        await asyncio.wait_for(watcher, timeout=300)
        statuses = await api_load
        gc.enable()
        await progress(monitor, monitor_of, reported, sent_by_minute, memory())
        say("latency send -> committed (visible to the API), by the minute a record was sent:")
        for minute in sorted(sent_by_minute):
            values = sorted(latencies.by_minute.get(minute, []))
            if values:
                say(
                    f"  minute {minute + 1}: p50 {statistics.median(values):.0f} ms, "
                    f"p99 {values[int(len(values) * 0.99)]:.0f} ms, max {values[-1]:.0f} ms "
                    f"({len(values):,} records)"
                )
        async with httpx.AsyncClient(
            base_url=api_url, timeout=10, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            stats = (await client.get("/v1/stats")).json()
        say(f"RSS at end: {memory()}")
        say(
            f"sent {sum(sent_by_minute.values()):,} records ({hostile_sent:,} hostile) in "
            f"{time.perf_counter() - started:.0f} s; ledger: {stats['accepted']:,} accepted, "
            f"{stats['duplicates']:,} duplicates, {stats['rejected']:,} rejected"
        )
        say("API answers: " + ", ".join(f"{key} x{n}" for key, n in sorted(statuses.items())))
        alive = [name for name, process in processes.items() if process.poll() is None]
        say(f"still running at the end: {', '.join(alive) or 'nothing'}")
    finally:
        stop.set()
        await producer.stop()
        await connection.close()
        await monitor.close()
        await log_end.close()
        stop_process_groups(processes.values(), timeout=30)


async def progress(
    connection: asyncpg.Connection, monitor: MinuteMonitor, minute: int,
    sent_by_minute: dict[int, int], memory: str,
) -> None:  # fmt: skip
    """Lines as ``minute`` ends: what was sent, what the workers have counted and
    how far behind they are, the outbox, memory; their batches; the CPU each
    process took (latencies come at the end, once every record committed)."""
    depth = await connection.fetchval("SELECT count(*) FROM outbox")
    dead = await connection.fetchval("SELECT count(*) FROM outbox_dead")
    positions = await connection.fetch(
        "SELECT kafka_partition, next_offset, accepted + duplicates + rejected AS done"
        " FROM consumer_positions WHERE topic = $1",
        monitor.topic,
    )
    done = sum(row["done"] for row in positions)
    lag = await monitor.lag({row["kafka_partition"]: row["next_offset"] for row in positions})
    processed = done - (monitor.rows[-1]["counted"] if monitor.rows else 0)
    monitor.rows.append({"minute": minute + 1, "counted": done, "lag": lag, "depth": depth})
    say(
        f"minute {minute + 1}: sent {sent_by_minute[minute]:,} "
        f"({sum(sent_by_minute.values()):,} in all), counted {done:,} ({processed:,} this minute), "
        f"lag {lag if lag is not None else '?'}; outbox depth {depth}, dead {dead}; RSS {memory}"
    )
    say(f"  batches: {monitor.batches()}")
    say(f"  {monitor.cpu(processed)}")
    say(f"  {monitor.reads()}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes in one consumer group"
    )
    options = parser.parse_args()
    with bench_servers("bench_pg", broker=True) as servers:
        say(f"broker {servers.bootstrap}, PostgreSQL {servers.database.split('@')[-1]}")
        say(describe())
        say(
            f"soak: {options.minutes:g} minutes at {options.rate:,} records/s, "
            f"{options.workers} worker(s)"
        )
        pids = {name: [process.pid] for name, process in servers.started.items() if process.pid}
        async with ledger_database(servers.database, servers.bootstrap) as (env, dsn, topic):
            await soak(
                env, dsn, servers.bootstrap, topic,
                options.minutes, options.rate, options.workers, pids,
            )  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
