"""A reference figure for how fast this machine runs Python right now.

Rates measured on different days or machines compare only with the machine's
speed beside them (seen here: the same code and benchmark ran at 50,000 and at
25,000 events/s on two days). Each benchmark prints this figure first.
"""

from __future__ import annotations

import os
import time


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
