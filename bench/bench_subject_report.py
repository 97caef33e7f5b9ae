"""Benchmark GET /v1/subjects/{subject}/report for a subject with a long history.

Usage: python bench/bench_subject_report.py [DISCLOSURES]   (default 5,000)

One subject gets 100 consent changes, DISCLOSURES disclosures (every fifth to an
uncertified partner, so that a fifth break rules), and 100 visits, written by the
worker's own batch pipeline (sealed payloads, read models, violations) on an
embedded PostgreSQL (or LEDGER_BENCH_DATABASE_URL's server); a checkpoint is
signed. Then the report is asked for 10 times as JSON and 10 times as HTML
through the API app (ASGI, no socket), and the figures printed: p50 and p99 of
each, the answer's size, and the share of one report spent reading, opening
the payloads, assembling and rendering. Never fails on a timing.
"""

from __future__ import annotations

import asyncio
import base64
import os
import statistics
import sys
import time
from typing import Any

import asyncpg
import httpx
import orjson
from machine import describe, fresh_database

from consent_ledger.api.app import create_app
from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.core.subject_report_html import render_html
from consent_ledger.integrity.checkpoints import generate_signing_key
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.store.checkpoint_issuer import issue_checkpoint
from consent_ledger.store.migrate import migrate
from consent_ledger.store.tokens import TokenStore
from consent_ledger.worker.pipeline import BatchPipeline

RUNS = 10
SUBJECT = "bench-subject"
BATCH = 2_000


def events(disclosures: int) -> list[dict[str, Any]]:
    def envelope(number: int, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        seconds = 1_767_225_600 + number * 60  # from 2026-01-01, a minute apart
        time_text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
        return {"specversion": "1.0", "id": f"b-{number}", "source": "urn:system:bench",
                "type": kind, "subject": SUBJECT, "time": time_text, "data": data}  # fmt: skip

    made = []
    for number in range(100):
        kind = "ConsentGiven" if number % 2 == 0 else "ConsentWithdrawn"
        data: dict[str, Any] = {"purpose": "marketing", "controller": "visma-software-as",
                                "channel": "web"}  # fmt: skip
        if kind == "ConsentGiven":
            data |= {"subject_role": "user",
                     "notice": {"id": "n", "version": "1", "content_sha256": "ab" * 32}}  # fmt: skip
        made.append(envelope(number, kind, data))
    for number in range(100, 100 + disclosures):
        recipient = (
            {"kind": "partner", "id": "shady", "name": "Shady AS"}
            if number % 5 == 0
            else {"kind": "group_company", "id": "visma-enterprise-as", "name": "Visma Enterprise"}
        )
        made.append(envelope(number, "DataShared", {
            "purpose": "delivery", "subject_role": "user", "controller": "visma-software-as",
            "recipient": recipient, "data_categories": ["email", "name"]}))  # fmt: skip
    for number in range(100 + disclosures, 200 + disclosures):
        made.append(envelope(number, "VisitorRegistered", {"site": "oslo", "rights_notice": "v"}))
    return made


def summary(label: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"{label}: p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"


async def fill(pool: asyncpg.Pool, master_key: bytes, disclosures: int) -> None:
    pipeline = BatchPipeline(pool, KeyRing(master_key), load_reference_policy(), Settings())
    records = [Record(0, n, orjson.dumps(body)) for n, body in enumerate(events(disclosures))]
    for start in range(0, len(records), BATCH):
        await pipeline.process(records[start : start + BATCH])
    await issue_checkpoint(pool, generate_signing_key(), "bench", force=True)


async def measure(pool: asyncpg.Pool, master_key: bytes) -> None:
    settings = Settings(master_key=base64.b64encode(master_key).decode())
    app = create_app(settings, pool=pool, policy=load_reference_policy())
    token, _ = await TokenStore(pool).issue("bench", ["privacy-officer"])
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app),
            base_url="http://api",
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        ) as client,
    ):
        for format in ("json", "html"):
            seconds, size = [], 0
            for _ in range(RUNS):
                started = time.perf_counter()
                answer = await client.get(f"/v1/subjects/{SUBJECT}/report?format={format}")
                seconds.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
                size = len(answer.content)
            print(summary(f"report as {format} ({size:,} bytes)", seconds), flush=True)
        await parts(app, pool)


async def parts(app: Any, pool: asyncpg.Pool) -> None:
    """Where one report's time goes: the reads and opening, then rendering."""
    from consent_ledger.api.routes.subject_report import read_subject_report, report_model

    context = app.state.context
    started = time.perf_counter()
    report = await read_subject_report(context, SUBJECT)
    read = time.perf_counter() - started
    started = time.perf_counter()
    report_model(report).model_dump_json()
    as_json = time.perf_counter() - started
    started = time.perf_counter()
    render_html(report)
    as_html = time.perf_counter() - started
    print(
        f"one report: read, open and assemble {read * 1000:.0f} ms; to JSON "
        f"{as_json * 1000:.0f} ms; to HTML {as_html * 1000:.0f} ms "
        f"({len(report.disclosures):,} disclosures, {len(report.violations):,} violations)"
    )


async def main(disclosures: int) -> None:
    print(describe(), flush=True)
    master_key = os.urandom(32)
    async with fresh_database("bench_report") as dsn:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        try:
            async with pool.acquire() as connection:
                await migrate(connection)
            started = time.perf_counter()
            await fill(pool, master_key, disclosures)
            print(f"recorded {disclosures + 200:,} events of one subject "
                  f"in {time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
            await measure(pool, master_key)
        finally:
            await pool.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5_000))
