"""Benchmark what-if over the database (CONTRACT §9): one million recorded
disclosures judged under the current policy and under a draft, and compared.

Usage: python bench/bench_whatif.py [DISCLOSURES]   (default 1,000,000)

The disclosures (and their subjects' consent timelines) are written straight
into the read models of a fresh database (COPY), as the worker would have left
them; the what-if itself reads them in one read-only snapshot and writes
nothing (the row counts are compared before and after). Goal: under a minute.
A benchmark prints figures; it never fails on a timing.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

import asyncpg
from machine import describe, fresh_database

from consent_ledger.core.policy import PolicyVersions, load_reference_policy, parse_policy
from consent_ledger.store.migrate import migrate
from consent_ledger.store.whatif_reads import whatif_recorded

GOAL_S = 60.0
DISCLOSURES_PER_SUBJECT = 10
BASE_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
YEAR_US = 365 * 86_400 * 1_000_000
# Purposes and recipients as the demo stream uses them: every rule gets work.
PURPOSES = ("delivery", "support", "marketing", "cloud_access", "legal_disclosure", "offers")
RECIPIENTS = (
    ("group_company", "visma-software-as"), ("group_company", "visma-unknown-ab"),
    ("partner", "northwind-consulting"), ("partner", "fjord-it-partner"),
    ("partner", "uncertified-partner"), ("public_authority", "politiet"),
)  # fmt: skip


def draft() -> PolicyVersions:
    """The reference policy with marketing on legitimate interest and a partner
    less certified: many verdicts change both ways."""
    text = (
        Path(__file__).resolve().parents[1] / "services/consent_ledger/policies/reference.yaml"
    ).read_text()
    text = text.replace(
        'marketing:             {clause: "l", basis: consent',
        'marketing:             {clause: "l", basis: legitimate_interest',
    ).replace(
        "certified: [northwind-consulting, fjord-it-partner]", "certified: [northwind-consulting]"
    )
    return PolicyVersions((parse_policy(text, "draft"),))


async def fill(dsn: str, disclosures: int) -> None:
    """Write ``disclosures`` disclosures and their subjects' consents by COPY."""
    rng = random.Random(16)
    subjects = disclosures // DISCLOSURES_PER_SUBJECT
    shared_rows, consent_rows = [], []
    seq = 0
    for number in range(subjects):
        subject = f"s{number:07d}"
        for purpose in ("marketing", "cloud_access"):
            if rng.random() < 0.6:
                seq += 1
                consent_rows.append((
                    f"c{seq}", subject, purpose, BASE_US + rng.randrange(YEAR_US), seq,
                    rng.random() < 0.8, None, "visma-software-as", "web",
                ))  # fmt: skip
        for _ in range(DISCLOSURES_PER_SUBJECT):
            seq += 1
            kind, recipient = rng.choice(RECIPIENTS)
            shared_rows.append((
                f"d{seq}", subject, rng.choice(PURPOSES), BASE_US + rng.randrange(YEAR_US), seq,
                "customer_contact", "visma-software-as", kind, recipient, ["contact_details"],
                "court_order" if rng.random() < 0.5 else None, "case 7" if rng.random() < 0.5 else None,
            ))  # fmt: skip
    connection = await asyncpg.connect(dsn)
    try:
        await migrate(connection)
        await connection.copy_records_to_table("consent_changes", records=consent_rows)
        await connection.copy_records_to_table("disclosures", records=shared_rows)
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


async def row_counts(connection: asyncpg.Connection) -> tuple[int, ...]:
    return tuple([
        await connection.fetchval(f"SELECT count(*) FROM {table}")
        for table in ("violations", "outbox", "disclosures", "consent_changes", "ledger_entries")
    ])  # fmt: skip


def no_registrations(*_: object) -> None:
    raise AssertionError("the benchmark records no visitor registrations")


async def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    print(describe(), flush=True)
    async with fresh_database("bench_whatif") as dsn:
        started = time.perf_counter()
        await fill(dsn, count)
        print(
            f"recorded {count:,} disclosures in {time.perf_counter() - started:.1f} s", flush=True
        )
        current = PolicyVersions((load_reference_policy(),))
        connection = await asyncpg.connect(dsn)
        try:
            before = await row_counts(connection)
            started = time.perf_counter()
            answer = await whatif_recorded(connection, current, draft(), no_registrations)
            seconds = time.perf_counter() - started
            after = await row_counts(connection)
        finally:
            await connection.close()
        document = answer.document(examples=0)
        print(
            f"what-if over {count:,} recorded disclosures: {seconds:.1f} s "
            f"({count / seconds:,.0f} disclosures/s, each judged twice; goal < {GOAL_S:.0f} s); "
            f"would open {document['counts']['would_open']:,}, "
            f"would close {document['counts']['would_close']:,}; "
            f"rows written: {'none' if before == after else 'SOME (a bug)'}"
        )


if __name__ == "__main__":
    asyncio.run(main())
