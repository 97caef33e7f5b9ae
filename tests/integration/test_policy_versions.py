"""Policy versions through the service's own code on a real PostgreSQL: the
worker's pipeline judges each event under the version in force at its time and
stores the version with each violation; the alert and the API's listing carry
it; a violation loaded back for re-judging keeps it."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

import asyncpg
import orjson
import pytest

from consent_ledger.api.app import create_app
from consent_ledger.core.batch import Record
from consent_ledger.core.offline import OfflineLedger
from consent_ledger.core.policy import load_policy_versions
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.worker.pipeline import BatchPipeline
from tests.conftest import issue_token, signed_in_client
from tests.e2e.conftest import SCENARIOS

pytestmark = [pytest.mark.integration]

SCENARIO = SCENARIOS / "policy-versions"
MASTER_KEY = os.urandom(32)


@pytest.mark.parametrize("batch_size", [1, 4, 100])
async def test_each_violation_is_stored_alerted_and_listed_with_its_version(
    pool: asyncpg.Pool, unique_name: Callable[[str], str], batch_size: int
) -> None:
    versions = load_policy_versions(SCENARIO / "policies")
    lines = [line for line in (SCENARIO / "events.jsonl").read_bytes().splitlines() if line]
    offline = OfflineLedger(versions)
    offline.ingest_lines(lines)
    want = {violation.key: violation.policy_version for violation in offline.open_violations()}
    settings = Settings(
        master_key=base64.b64encode(MASTER_KEY).decode(),
        violations_topic=unique_name("violations"),
    )
    pipeline = BatchPipeline(pool, KeyRing(MASTER_KEY), versions, settings)
    records = [Record(number % 2, number // 2, line) for number, line in enumerate(lines)]
    for start in range(0, len(records), batch_size):
        await pipeline.process(records[start : start + batch_size])

    async with pool.acquire() as connection:
        stored = await connection.fetch(
            "SELECT event_id, rule, status, policy_version FROM violations"
        )
        alerts = [
            orjson.loads(row["value"])
            for row in await connection.fetch(
                "SELECT value FROM outbox WHERE topic = $1 ORDER BY id", settings.violations_topic
            )
        ]
    assert {
        (row["event_id"], row["rule"]): row["policy_version"]
        for row in stored
        if row["status"] == "open"
    } == want
    # pv-5 (2026-04-10, under version 2) lacked consent until the late pv-9
    # granted it; the retraction names the version that judged it.
    assert {
        (row["event_id"], row["rule"], row["policy_version"])
        for row in stored
        if row["status"] == "retracted"
    } == {("pv-5", "consent-missing", "2")}
    assert {
        (alert["type"], alert["violation"]["event_id"], alert["violation"]["policy_version"])
        for alert in alerts
    } == {("ViolationOpened", event_id, version) for (event_id, _), version in want.items()} | {
        ("ViolationOpened", "pv-5", "2"),
        ("ViolationRetracted", "pv-5", "2"),
    }

    app = create_app(settings, pool=pool, policy=versions)
    async with signed_in_client(app, await issue_token(pool, "analyst")) as client:
        response = await client.get("/v1/violations", params={"limit": 100})
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert {
        (item["event_id"], item["rule"]): item["policy_version"]
        for item in items
        if item["status"] == "open"
    } == want
    assert all(item["policy_version"] for item in items)


async def test_a_violation_stored_before_versions_were_recorded_lists_none(
    pool: asyncpg.Pool, unique_name: Callable[[str], str]
) -> None:
    """Rows written before migration 005 have no version: the API says null,
    and re-judging them (a late consent) retracts them as before."""
    versions = load_policy_versions(SCENARIO / "policies")
    settings = Settings(
        master_key=base64.b64encode(MASTER_KEY).decode(),
        violations_topic=unique_name("violations"),
    )
    pipeline = BatchPipeline(pool, KeyRing(MASTER_KEY), versions, settings)
    lines = {
        orjson.loads(line)["id"]: line
        for line in (SCENARIO / "events.jsonl").read_bytes().splitlines()
        if line
    }
    await pipeline.process([Record(0, 0, lines["pv-5"])])
    async with pool.acquire() as connection:
        await connection.execute("UPDATE violations SET policy_version = NULL")

    await pipeline.process([Record(0, 1, lines["pv-9"])])  # the late consent

    async with pool.acquire() as connection:
        (row,) = await connection.fetch("SELECT status, policy_version FROM violations")
        (retraction,) = [
            orjson.loads(value)
            for (value,) in await connection.fetch(
                "SELECT value FROM outbox WHERE topic = $1 ORDER BY id OFFSET 1",
                settings.violations_topic,
            )
        ]
    assert (row["status"], row["policy_version"]) == ("retracted", None)
    assert retraction["type"] == "ViolationRetracted"
    assert retraction["violation"]["policy_version"] is None

    app = create_app(settings, pool=pool, policy=versions)
    async with signed_in_client(app, await issue_token(pool, "analyst")) as client:
        (item,) = (await client.get("/v1/violations")).json()["items"]
    assert item["policy_version"] is None
