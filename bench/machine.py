"""A reference figure for how fast this machine runs Python right now.

Rates measured on different days or machines compare only with the machine's
speed beside them (seen here: the same code and benchmark ran at 50,000 and at
25,000 events/s on two days). Each benchmark prints this figure first.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consent_ledger.devtools.databases import create_database, drop_database


def python_speed(iterations: int = 2_000_000) -> float:
    """Millions of iterations per second of a plain Python loop, best of three."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for number in range(iterations):
            total += number
        best = min(best, time.perf_counter() - started)
    return iterations / best / 1e6


def describe() -> str:
    return (
        f"machine: {os.cpu_count()} cores; reference Python loop {python_speed():.1f} M iterations/s "
        "(compare rates only between runs with similar figures)"
    )


@dataclass(frozen=True)
class Servers:
    """Where a benchmark's PostgreSQL server and broker are, and the processes of
    those it started itself (name -> process, for CpuMeter)."""

    database: str
    bootstrap: str
    started: dict[str, Any]


@contextmanager
def bench_servers(prefix: str, broker: bool = False) -> Iterator[Servers]:
    """PostgreSQL at LEDGER_BENCH_DATABASE_URL (and with ``broker``, Kafka at
    LEDGER_BENCH_KAFKA) when set, to measure real servers; else embedded ones, an
    embedded PostgreSQL in a temporary folder. What it started is stopped, and
    the folder removed, afterwards, whatever happened."""
    from consent_ledger.devtools.broker import EmbeddedBroker
    from consent_ledger.devtools.postgres import EmbeddedPostgres

    started: dict[str, Any] = {}
    folder = None
    try:
        bootstrap = os.environ.get("LEDGER_BENCH_KAFKA", "") if broker else ""
        if broker and not bootstrap:
            started["broker"] = EmbeddedBroker().start()
            bootstrap = started["broker"].bootstrap
        database = os.environ.get("LEDGER_BENCH_DATABASE_URL")
        if not database:
            folder = tempfile.TemporaryDirectory(prefix=f"{prefix.replace('_', '-')}-")
            started["PostgreSQL"] = EmbeddedPostgres(Path(folder.name) / "data").start()
            database = started["PostgreSQL"].dsn
        yield Servers(database, bootstrap, started)
    finally:
        for process in reversed(started.values()):
            process.stop()
        if folder is not None:
            folder.cleanup()


@asynccontextmanager
async def fresh_database(prefix: str) -> AsyncIterator[str]:
    """A new empty database for one benchmark run (:func:`bench_servers`); yields
    its DSN. The database is dropped afterwards, whatever happened, so runs
    neither see each other's rows nor leave files behind."""
    with bench_servers(prefix) as servers:
        name = f"{prefix}_{os.getpid()}"
        dsn = await create_database(servers.database, name)
        try:
            yield dsn
        finally:
            await drop_database(servers.database, name)


class CpuMeter:
    """CPU spent by named process trees (a process and its descendants, as
    PostgreSQL's backends are the postmaster's; a tree stops where another
    named one starts) between two readings."""

    def __init__(self, roots: dict[str, list[int]]) -> None:
        self._roots = roots
        self._started: dict[str, float] = {}
        self._at = 0.0

    def start(self) -> None:
        self._started, self._at = self._read(), time.perf_counter()

    def shares(self) -> dict[str, float]:
        """Each tree's CPU since :meth:`start`, in percent of one core."""
        now, elapsed = self._read(), time.perf_counter() - self._at
        return {
            name: 100 * (now.get(name, 0.0) - self._started.get(name, 0.0)) / elapsed
            for name in self._roots
        }

    def _read(self) -> dict[str, float]:
        processes = _processes()
        children: dict[int, list[int]] = {}
        for pid, (parent, _) in processes.items():
            children.setdefault(parent, []).append(pid)
        named = {pid for roots in self._roots.values() for pid in roots}
        totals = {}
        for name, roots in self._roots.items():
            seen, stack = set(), list(roots)
            while stack:
                pid = stack.pop()
                if pid not in seen:
                    seen.add(pid)
                    stack.extend(child for child in children.get(pid, []) if child not in named)
            totals[name] = sum(processes[pid][1] for pid in seen if pid in processes)
        return totals


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds: user + system) of every process."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        found[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    return found


def tree(roots: list[int]) -> set[int]:
    """``roots`` and every process descending from them."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in _processes().items():
        children.setdefault(parent, []).append(pid)
    seen, stack = set(), list(roots)
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack.extend(children.get(pid, []))
    return seen


def runnable_wait_s(pids: set[int]) -> float:
    """Seconds the threads of ``pids`` have spent runnable but waiting for a CPU
    since they started (the second field of each thread's schedstat): the time
    a busy machine takes from them, which their own CPU time does not show."""
    total_ns = 0
    for pid in pids:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:  # gone meanwhile
            continue
        for thread in threads:
            try:
                with open(f"/proc/{pid}/task/{thread}/schedstat") as schedstat:
                    total_ns += int(schedstat.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total_ns / 1e9
