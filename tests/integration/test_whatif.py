"""What-if over the database (CONTRACT §9) on a real PostgreSQL: the recorded
history judged under the current policy and a draft gives what the offline
what-if gives over the same events (less erased subjects, whose facts are
gone), visitor registrations opened from the sealed ledger included; and it
writes nothing. Through the CLI and POST /v1/policy/whatif."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import orjson
import pytest

from consent_ledger.api.app import create_app
from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_policy_versions
from consent_ledger.core.whatif import whatif_lines
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.worker.pipeline import BatchPipeline
from tests.conftest import issue_token, signed_in_client
from tests.e2e.conftest import SCENARIOS

pytestmark = [pytest.mark.integration]

MASTER_KEY = os.urandom(32)
EVENTS = SCENARIOS / "random-3000" / "events.jsonl"
CLI = Path(sys.executable).with_name("consent-ledger")
TABLES = ("violations", "outbox", "ledger_entries", "policy_versions", "disclosures")


def draft_text() -> str:
    """Marketing on legitimate interest, visitors need no rights notice, one
    partner no longer certified: violations close and others open."""
    text = (SCENARIOS / "policy.yaml").read_text()
    draft = (
        text.replace("basis: consent", "basis: legitimate_interest", 1)
        .replace("require_rights_notice: true", "require_rights_notice: false")
        .replace(
            "certified: [northwind-consulting, fjord-it-partner]",
            "certified: [northwind-consulting]",
        )
    )
    assert draft.count("require_rights_notice: false") == 1
    assert "certified: [northwind-consulting]" in draft
    return draft


def parsed(line: bytes) -> dict[str, object]:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return {}  # the scenario's malformed lines
    return event if isinstance(event, dict) else {}


async def counts(pool: asyncpg.Pool) -> dict[str, int]:
    async with pool.acquire() as connection:
        return {
            table: await connection.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES
        }


async def test_whatif_over_the_database_equals_the_offline_whatif(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    current = load_policy_versions(SCENARIOS / "policy.yaml")
    draft_path = tmp_path / "draft.yaml"
    draft_path.write_text(draft_text())
    draft = load_policy_versions(draft_path)
    lines = [line for line in EVENTS.read_bytes().splitlines() if line.strip()]
    settings = Settings(
        master_key=base64.b64encode(MASTER_KEY).decode(), violations_topic=unique_name("v")
    )
    pipeline = BatchPipeline(pool, KeyRing(MASTER_KEY), current, settings)
    records = [Record(number % 3, number // 3, line) for number, line in enumerate(lines)]
    for start in range(0, len(records), 250):
        await pipeline.process(records[start : start + 250])

    offline = whatif_lines(lines, current, draft)
    erased = {
        event["subject"] for event in map(parsed, lines) if event.get("type") == "ErasureRequested"
    }
    want_open = {(v.event_id, str(v.rule)) for v in offline.would_open if v.subject not in erased}
    want_close = {(v.event_id, str(v.rule)) for v in offline.would_close if v.subject not in erased}
    assert any(rule == "visitor-not-informed" for _, rule in want_close)
    assert want_open and want_close
    before = await counts(pool)

    env = dict(
        os.environ, LEDGER_DATABASE_URL=database_url, LEDGER_MASTER_KEY=settings.master_key or "",
        LEDGER_POLICY=str(SCENARIOS / "policy.yaml"),
    )  # fmt: skip
    result = await asyncio.to_thread(
        subprocess.run, [str(CLI), "whatif", "--draft", str(draft_path), "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    assert {(v["event_id"], v["rule"]) for v in document["would_open"]} == want_open
    assert {(v["event_id"], v["rule"]) for v in document["would_close"]} == want_close

    app = create_app(settings, pool=pool, policy=current)
    async with signed_in_client(app, await issue_token(pool, "analyst")) as client:
        answer = await client.post(
            "/v1/policy/whatif",
            content=draft_text().encode(),
            headers={"content-type": "application/yaml"},
        )
        dated = await client.post(  # a new version, from then on, beside the current one
            "/v1/policy/whatif",
            params={"effective_from": "2999-01-01T00:00:00Z"},
            content=draft_text().replace("version: 1", "version: 2-draft").encode(),
            headers={"content-type": "application/yaml"},
        )
        bad = await client.post(
            "/v1/policy/whatif",
            content=b"purposes: 3",
            headers={"content-type": "application/yaml"},
        )
    assert answer.status_code == 200, answer.text
    assert {(v["event_id"], v["rule"]) for v in answer.json()["would_open"]} == want_open
    assert {(v["event_id"], v["rule"]) for v in answer.json()["would_close"]} == want_close
    # From a future date the draft judges nothing recorded.
    assert (dated.json()["would_open"], dated.json()["would_close"]) == ([], [])
    assert bad.status_code == 422 and "purposes" in bad.json()["error"]["message"]
    assert await counts(pool) == before  # nothing written
