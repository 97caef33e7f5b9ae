"""Benchmark the analyst reports (CONTRACT §8): one million violations, each
report timed as the API runs it.

Usage: python bench/bench_reports.py [VIOLATIONS [RUNS]] [--without-018] [--only=TEXT]
(default 1,000,000 and 20; --without-018 drops migration 018's indexes and
statistics after filling, to measure what they are worth; --only runs the
reports whose label holds TEXT, e.g. --only=data_category)

The violations, their disclosures (several rules, clauses, recipients and
purposes, spread over a year, a tenth retracted, some disclosures breaking two
rules, some visitor registrations) and clean disclosures beside them are written
straight into the read models of a fresh database (COPY), as the worker would
have left them, then ANALYZEd and VACUUMed as autovacuum would. Each report
(every group_by; day and week buckets; all time and the last 30 days) then runs
RUNS times through :mod:`consent_ledger.store.reports`, and its p50 and p99 are
printed. A benchmark prints figures; it never fails on a timing.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sized
from datetime import UTC, datetime
from functools import partial

import asyncpg
from machine import describe, fresh_database

from consent_ledger.core.reports import Bucket, TimeRange
from consent_ledger.core.timestamps import format_micros
from consent_ledger.store.migrate import migrate
from consent_ledger.store.reports import (
    DISCLOSURE_GROUPS,
    VIOLATION_GROUPS,
    disclosure_report,
    violation_report,
)

BASE_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
YEAR_US = 365 * 86_400 * 1_000_000
DAY_US = 86_400 * 1_000_000
RETRACTED_SHARE = 0.1
TWO_RULES_SHARE = 0.2  # of violating disclosures, those that break two rules
VISITOR_SHARE = 0.05  # of violations, those of visitor registrations (no disclosure)
CLEAN_PER_VIOLATING = 0.6  # disclosures that break nothing, per one that breaks a rule
SUBJECTS = 100_000
# (purpose, clause) and (kind, recipient, its clause) as the reference policy names them.
PURPOSES = (
    ("delivery", "c"), ("support", "d"), ("marketing", "l"), ("cloud_access", "k"),
    ("legal_disclosure", "Offentlige myndigheter"), ("offers", "a"), ("invoicing", "i"),
)  # fmt: skip
RECIPIENTS = (
    ("group_company", "visma-software-as", "Innenfor Visma konsernet"),
    ("group_company", "visma-unknown-ab", "Innenfor Visma konsernet"),
    ("partner", "northwind-consulting", "Visma partnere"),
    ("partner", "fjord-it-partner", "Visma partnere"),
    ("partner", "uncertified-partner", "Visma partnere"),
    ("public_authority", "politiet", "Offentlige myndigheter"),
    ("acquirer", "nordic-buyer-as", "Fusjoner og oppkjøp"),
    ("public_forum", "community", "Vismas nettforum"),
)
# Rules judged against the purpose's clause and those against the recipient's.
PURPOSE_RULES = (("consent-missing", "high"), ("consent-withdrawn", "critical"),
                 ("consent-expired", "high"), ("unknown-purpose", "medium"))  # fmt: skip
RECIPIENT_RULES = (("recipient-not-permitted", "high"), ("partner-not-certified", "high"),
                   ("authority-without-court-order", "critical"),
                   ("recipient-purpose-mismatch", "medium"))  # fmt: skip
CATEGORIES = ("contact_details", "usage_data", "payment_details", "support_history")
LIMIT = 100_001  # as the API asks (MAX_REPORT_ITEMS + 1)
EXPLANATION = "shared for a purpose that needs consent without a valid consent at its time"


def _violation(
    event_id: str, rule: tuple[str, str], subject: str, clause: str, at: int, rng: random.Random
) -> tuple[object, ...]:
    detected = datetime.fromtimestamp((at + rng.randrange(DAY_US)) / 1e6, UTC)
    status = "retracted" if rng.random() < RETRACTED_SHARE else "open"
    return (event_id, rule[0], subject, rule[1], clause, EXPLANATION, status, at,
            detected, detected, "reference")  # fmt: skip


def rows(violations: int, rng: random.Random) -> tuple[list[tuple[object, ...]], ...]:
    """Violation rows and disclosure rows, as the worker would have written them."""
    violation_rows: list[tuple[object, ...]] = []
    disclosure_rows: list[tuple[object, ...]] = []
    seq = 0
    while len(violation_rows) < violations:
        seq += 1
        subject = f"s{rng.randrange(SUBJECTS):06d}"
        at = BASE_US + rng.randrange(YEAR_US)
        if rng.random() < VISITOR_SHARE:
            rule = ("visitor-not-informed", "medium")
            violation_rows.append(_violation(f"r{seq}", rule, subject, "visitors", at, rng))
            continue
        purpose, purpose_clause = rng.choice(PURPOSES)
        kind, recipient, recipient_clause = rng.choice(RECIPIENTS)
        categories = rng.sample(CATEGORIES, rng.randint(1, 2))
        disclosure_rows.append((
            f"d{seq}", subject, purpose, at, seq, "customer_contact", "visma-software-as",
            kind, recipient, categories, None, None,
        ))  # fmt: skip
        judged = [(rng.choice(PURPOSE_RULES), purpose_clause)]
        if rng.random() < TWO_RULES_SHARE:
            judged.append((rng.choice(RECIPIENT_RULES), recipient_clause))
        for rule, clause in judged:
            violation_rows.append(_violation(f"d{seq}", rule, subject, clause, at, rng))
    for _ in range(int(len(disclosure_rows) * CLEAN_PER_VIOLATING)):
        seq += 1
        kind, recipient, _ = rng.choice(RECIPIENTS)
        disclosure_rows.append((
            f"d{seq}", f"s{rng.randrange(SUBJECTS):06d}", rng.choice(PURPOSES)[0],
            BASE_US + rng.randrange(YEAR_US), seq, "customer_contact", "visma-software-as",
            kind, recipient, rng.sample(CATEGORIES, rng.randint(1, 2)), None, None,
        ))  # fmt: skip
    return violation_rows[:violations], disclosure_rows


VIOLATION_COLUMNS = ("event_id", "rule", "subject", "severity", "clause", "explanation",
                     "status", "occurred_us", "detected_at", "updated_at", "policy_version")  # fmt: skip


WITHOUT_018 = (
    "DROP INDEX violations_by_time",
    "DROP INDEX disclosures_by_time",
    "DROP STATISTICS violations_hour_buckets, violations_day_buckets, violations_week_buckets",
)


async def fill(dsn: str, violations: int, without_018: bool) -> int:
    """Write ``violations`` violations and their disclosures by COPY; return the
    number of disclosures written."""
    violation_rows, disclosure_rows = rows(violations, random.Random(18))
    connection = await asyncpg.connect(dsn)
    try:
        await migrate(connection)
        for statement in WITHOUT_018 if without_018 else ():
            await connection.execute(statement)
        await connection.copy_records_to_table("disclosures", records=disclosure_rows)
        await connection.copy_records_to_table(
            "violations", records=violation_rows, columns=VIOLATION_COLUMNS
        )
        await connection.execute("VACUUM ANALYZE violations")
        await connection.execute("VACUUM ANALYZE disclosures")
    finally:
        await connection.close()
    return len(disclosure_rows)


def percentile(seconds: list[float], share: float) -> float:
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def timed(run: Callable[[], Awaitable[Sized]], runs: int) -> tuple[float, float, int]:
    """p50 and p99 in milliseconds of ``runs`` calls of ``run``, and its item count."""
    seconds = []
    items = 0
    for _ in range(runs):
        started = time.perf_counter()
        items = len(await run())
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1e3, percentile(seconds, 0.99) * 1e3, items


async def measure(dsn: str, runs: int, only: str) -> None:
    last_month = TimeRange(BASE_US + YEAR_US - 30 * DAY_US, BASE_US + YEAR_US)
    ranges = {"all time": TimeRange(None, None), "last 30 days": last_month}
    print(f"{'report':<48} {'range':<13} {'p50 ms':>8} {'p99 ms':>8} {'items':>7}", flush=True)
    connection = await asyncpg.connect(dsn)
    try:
        for group_by in VIOLATION_GROUPS:
            for bucket in (Bucket.DAY, Bucket.WEEK):
                label = f"violations bucket={bucket} group_by={group_by}"
                for name, span in ranges.items() if only in label else ():
                    p50, p99, items = await timed(
                        partial(violation_report, connection, bucket, group_by, span, LIMIT), runs
                    )
                    print(f"{label:<48} {name:<13} {p50:>8.1f} {p99:>8.1f} {items:>7}", flush=True)
        for grouping in DISCLOSURE_GROUPS:
            label = f"disclosures group_by={grouping}"
            for name, span in ranges.items() if only in label else ():
                p50, p99, items = await timed(
                    partial(disclosure_report, connection, grouping, span, LIMIT), runs
                )
                print(f"{label:<48} {name:<13} {p50:>8.1f} {p99:>8.1f} {items:>7}", flush=True)
    finally:
        await connection.close()
    print(f"(last 30 days: from {format_micros(last_month.since or 0)})")


async def main() -> None:
    without_018 = "--without-018" in sys.argv
    only = next((arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("--only=")), "")
    numbers = [argument for argument in sys.argv[1:] if not argument.startswith("--")]
    count = int(numbers[0]) if numbers else 1_000_000
    runs = int(numbers[1]) if len(numbers) > 1 else 20
    print(describe(), flush=True)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    async with fresh_database("bench_reports") as dsn:
        started = time.perf_counter()
        disclosures = await fill(dsn, count, without_018)
        print(
            f"recorded {count:,} violations and {disclosures:,} disclosures in "
            f"{time.perf_counter() - started:.1f} s; each report run {runs} times"
            + ("; WITHOUT migration 018's indexes and statistics" if without_018 else ""),
            flush=True,
        )
        await measure(dsn, runs, only)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    asyncio.run(main())
