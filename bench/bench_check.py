"""Benchmark `consent-ledger check` on a generated stream: events/s and peak memory.

Usage: python bench/bench_check.py [EVENTS]   (default 200,000)

The check runs in a child process so its peak memory (ru_maxrss) is its own.
A benchmark prints figures; it never fails on a timing.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from machine import describe

from consent_ledger.core import intake
from consent_ledger.devtools.demo import EventFactory

TARGET_RATE = 100_000
TARGET_MEMORY_MB = 300


def build() -> str:
    """Whether this interpreter runs the mypyc-compiled core (make compiled) or pure Python."""
    compiled = not intake.__file__.endswith(".py")
    return (
        "core compiled with mypyc"
        if compiled
        else "pure Python (make compiled for the compiled core)"
    )


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    print(describe(), flush=True)
    print(f"build: {build()}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.jsonl"
        factory = EventFactory(seed=11, subjects=max(1_000, count // 20))
        with path.open("wb") as out:
            for event in factory.events(count):
                out.write(orjson.dumps(event) + b"\n")
        size_mb = path.stat().st_size / 1e6
        cli = Path(sys.executable).with_name("consent-ledger")
        started = time.perf_counter()
        result = subprocess.run(
            [str(cli), "check", str(path), "--json"], capture_output=True, check=False
        )
        elapsed = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    counts = orjson.loads(result.stdout)["counts"]
    rate = count / elapsed
    print(f"check: {count:,} events ({size_mb:.0f} MB) in {elapsed:.2f} s (process start included)")
    print(f"  rate:        {rate:,.0f} events/s   (target >= {TARGET_RATE:,})")
    print(f"  peak memory: {peak_mb:,.0f} MB        (target < {TARGET_MEMORY_MB})")
    print(f"  counts:      {counts}")


if __name__ == "__main__":
    main()
