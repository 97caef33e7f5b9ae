"""Publishing policy versions to the running service (CONTRACT §9) on a real
PostgreSQL, through the worker's own pipeline: the open violations converge to
what ``check`` gives with every version present from the start; a publication
concurrent with a late event for the same subject loses neither; the text's
hash is an entry of the ledger's policy log that a checkpoint signs and
``verify`` checks; the table is append-only; the API publishes and lists."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Callable

import asyncpg
import orjson
import pytest

from consent_ledger.api.app import create_app
from consent_ledger.core.batch import Record
from consent_ledger.core.offline import OfflineLedger
from consent_ledger.core.policy import PolicyError, load_policy_versions
from consent_ledger.integrity.checkpoints import generate_signing_key
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.store.audit_reads import verify_ledger
from consent_ledger.store.checkpoint_issuer import issue_checkpoint
from consent_ledger.store.policy_versions import (
    POLICY_LOG_PARTITION,
    publish_version,
    published_versions,
)
from consent_ledger.store.rebuild import rebuild_read_models
from consent_ledger.worker.pipeline import BatchPipeline
from tests.conftest import assert_counts_kept, issue_token, signed_in_client
from tests.e2e.conftest import SCENARIOS

pytestmark = [pytest.mark.integration]

SCENARIO = SCENARIOS / "policy-versions"
FOLDER = SCENARIO / "policies"
MASTER_KEY = os.urandom(32)
LINES = [line for line in (SCENARIO / "events.jsonl").read_bytes().splitlines() if line]


def text_of(version: int) -> str:
    return (FOLDER / f"v{version}.yaml").read_text(encoding="utf-8")


def offline_open(lines: list[bytes]) -> dict[tuple[str, str], str | None]:
    """What check gives with every version present from the start."""
    ledger = OfflineLedger(load_policy_versions(FOLDER))
    ledger.ingest_lines(lines)
    return {violation.key: violation.policy_version for violation in ledger.open_violations()}


def pipeline_on(pool: asyncpg.Pool, settings: Settings) -> BatchPipeline:
    return BatchPipeline(
        pool, KeyRing(MASTER_KEY), load_policy_versions(FOLDER / "v1.yaml"), settings
    )


def settings_for(unique_name: Callable[[str], str]) -> Settings:
    return Settings(
        master_key=base64.b64encode(MASTER_KEY).decode(),
        violations_topic=unique_name("violations"),
    )


async def rejudge_all(pipeline: BatchPipeline) -> int:
    steps = 0
    while await pipeline.rejudge(subjects=2) is not None:  # small steps: several of them
        steps += 1
        assert steps < 100, "re-judging does not finish"
    return steps


async def stored_open(pool: asyncpg.Pool) -> dict[tuple[str, str], str | None]:
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT event_id, rule, policy_version FROM violations WHERE status = 'open'"
        )
    return {(row["event_id"], row["rule"]): row["policy_version"] for row in rows}


async def test_versions_published_while_the_service_runs_converge_to_check(
    pool: asyncpg.Pool, unique_name: Callable[[str], str]
) -> None:
    settings = settings_for(unique_name)
    pipeline = pipeline_on(pool, settings)
    records = [Record(number % 2, number // 2, line) for number, line in enumerate(LINES)]
    await pipeline.process(records)
    only_v1 = await stored_open(pool)
    assert set(only_v1.values()) == {"1"}
    steps = 0
    for version in (2, 3):  # each publication re-judged before the next (see rebuild below)
        async with pool.acquire() as connection:
            await publish_version(connection, pipeline.policies.configured, text_of(version), "dpo")
        steps += await rejudge_all(pipeline)
    assert steps >= 2

    want = offline_open(LINES)
    assert await stored_open(pool) == want
    assert want != only_v1  # the publications changed verdicts, not only their labels
    async with pool.acquire() as connection:
        alerts = [
            orjson.loads(value)
            for (value,) in await connection.fetch(
                "SELECT value FROM outbox WHERE topic = $1 ORDER BY id", settings.violations_topic
            )
        ]
        done = await connection.fetch("SELECT done_at FROM policy_rejudging")
    opened = {a["violation"]["event_id"] for a in alerts if a["type"] == "ViolationOpened"}
    retracted = {a["violation"]["event_id"] for a in alerts if a["type"] == "ViolationRetracted"}
    assert {event_id for event_id, _ in set(want) - set(only_v1)} <= opened
    assert {event_id for event_id, _ in set(only_v1) - set(want)} <= retracted
    assert all(row["done_at"] is not None for row in done) and len(done) == 2

    # Nothing is owed any more: more steps change nothing.
    assert await pipeline.rejudge() is None
    assert await stored_open(pool) == want
    # The read models rebuilt from the ledger (which holds the published texts
    # where they were published) are the ones re-judging left.
    async with pool.acquire() as connection:
        report = await rebuild_read_models(
            connection, KeyRing(MASTER_KEY), pipeline.policies.configured, settings.events_topic
        )
    assert report.equal, "\n".join(
        map(str, [*report.differences, *report.count_differences, *report.count_drift])
    )
    await assert_counts_kept(pool)


async def test_a_batch_after_a_publication_judges_under_the_new_set(
    pool: asyncpg.Pool, unique_name: Callable[[str], str]
) -> None:
    """Another worker published (this pipeline's set is stale): the batch reads the
    revision in its transaction and reloads before judging."""
    pipeline = pipeline_on(pool, settings_for(unique_name))
    await pipeline.process([Record(0, 0, LINES[0])])  # loads revision 0
    async with pool.acquire() as connection:
        for version in (2, 3):
            await publish_version(connection, pipeline.policies.configured, text_of(version), "dpo")
    records = [Record(0, number, line) for number, line in enumerate(LINES) if number]
    await pipeline.process(records)
    assert len(pipeline.policies.versions) == 3
    await rejudge_all(pipeline)
    assert await stored_open(pool) == offline_open(LINES)


async def test_a_publication_concurrent_with_a_late_event_for_the_same_subject(
    pool: asyncpg.Pool, unique_name: Callable[[str], str]
) -> None:
    """kari's late consent (pv-9) and version 2 (which judges kari's pv-5) race:
    whichever commits first, the end is what check gives."""
    settings = settings_for(unique_name)
    late = next(line for line in LINES if b'"pv-9"' in line)
    early = [line for line in LINES if line is not late]
    pipeline = pipeline_on(pool, settings)
    other_worker = pipeline_on(pool, settings)
    await pipeline.process([Record(0, number, line) for number, line in enumerate(early)])

    async def publish() -> None:
        async with pool.acquire() as connection:
            await publish_version(connection, pipeline.policies.configured, text_of(2), "dpo")
            await publish_version(connection, pipeline.policies.configured, text_of(3), "dpo")

    await asyncio.gather(publish(), other_worker.process([Record(0, len(early), late)]))
    await rejudge_all(pipeline)
    assert await stored_open(pool) == offline_open([*early, late])


async def test_the_published_text_is_in_the_ledger_signed_and_verified(
    pool: asyncpg.Pool, unique_name: Callable[[str], str]
) -> None:
    pipeline = pipeline_on(pool, settings_for(unique_name))
    await pipeline.process([Record(0, number, line) for number, line in enumerate(LINES)])
    async with pool.acquire() as connection:
        published = await publish_version(
            connection, pipeline.policies.configured, text_of(2), "dpo"
        )
    key = generate_signing_key()
    signed = await issue_checkpoint(pool, key, "test-log")
    assert signed is not None
    head = signed.checkpoint.tree_head(POLICY_LOG_PARTITION)
    assert head is not None and head.size == 1
    async with pool.acquire() as connection:
        entry = await connection.fetchrow(
            "SELECT payload, payload_sha256, kafka_partition FROM ledger_entries WHERE event_id = $1",
            published.event_id,
        )
        report = await verify_ledger(connection, key.public_key())
    assert bytes(entry["payload_sha256"]) == hashlib.sha256(text_of(2).encode()).digest()
    assert bytes(entry["payload"]).decode() == text_of(2)
    assert published.sha256 == bytes(entry["payload_sha256"])
    assert report.ok, report.divergences

    async with pool.acquire() as connection:
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await connection.execute("UPDATE policy_versions SET publisher = 'mallory'")
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await connection.execute("DELETE FROM policy_versions")


async def test_a_clashing_or_invalid_version_is_refused_and_nothing_is_stored(
    pool: asyncpg.Pool,
) -> None:
    configured = load_policy_versions(FOLDER / "v1.yaml")
    async with pool.acquire() as connection:
        with pytest.raises(PolicyError, match="version"):
            await publish_version(connection, configured, text_of(1), "dpo")  # same version
        with pytest.raises(PolicyError, match="purposes"):
            await publish_version(connection, configured, "version: 9\n", "dpo")
        await publish_version(connection, configured, text_of(2), "dpo")
        with pytest.raises(PolicyError, match="version"):
            await publish_version(connection, configured, text_of(2), "dpo")
        assert [item.version for item in await published_versions(connection)] == ["2"]
        assert await connection.fetchval("SELECT revision FROM policy_revision") == 1
        assert (
            await connection.fetchval(
                "SELECT count(*) FROM ledger_entries WHERE kafka_partition = $1",
                POLICY_LOG_PARTITION,
            )
            == 1
        )


async def test_a_visitor_registration_is_rejudged_under_a_published_version(
    pool: asyncpg.Pool, unique_name: Callable[[str], str]
) -> None:
    """Registrations are kept sealed in the ledger only: re-judging opens them."""
    pipeline = pipeline_on(pool, settings_for(unique_name))
    registration = orjson.dumps({
        "specversion": "1.0", "id": "visit-1", "source": "urn:system:reception",
        "type": "VisitorRegistered", "subject": "guest", "time": "2026-06-01T09:00:00Z",
        "data": {"site": "oslo", "rights_notice": None},
    })  # fmt: skip
    await pipeline.process([Record(0, 0, registration)])
    assert set(await stored_open(pool)) == {("visit-1", "visitor-not-informed")}
    lenient = text_of(3).replace("require_rights_notice: true", "require_rights_notice: false")
    assert lenient != text_of(3)
    lenient = lenient.replace("version: 3", "version: 3-lenient")
    async with pool.acquire() as connection:
        await publish_version(connection, pipeline.policies.configured, lenient, "dpo")
    await rejudge_all(pipeline)
    assert await stored_open(pool) == {}


async def test_the_api_publishes_and_lists_versions(
    pool: asyncpg.Pool, unique_name: Callable[[str], str]
) -> None:
    settings = settings_for(unique_name)
    configured = load_policy_versions(FOLDER / "v1.yaml")
    app = create_app(settings, pool=pool, policy=configured)
    async with signed_in_client(app, await issue_token(pool, "admin", name="dpo-admin")) as client:
        created = await client.post(
            "/v1/policy/versions",
            content=text_of(2).encode(),
            headers={"content-type": "application/yaml"},
        )
        clash = await client.post(
            "/v1/policy/versions",
            content=text_of(2).encode(),
            headers={"content-type": "application/yaml"},
        )
        form = await client.post(
            "/v1/policy/versions", content=b"x=1", headers={"content-type": "text/plain"}
        )
        listed = await client.get("/v1/policy/versions")
    assert created.status_code == 201, created.text
    assert created.json()["sha256"] == hashlib.sha256(text_of(2).encode()).hexdigest()
    assert created.json()["effective_from"] == "2026-04-01T00:00:00Z"
    assert clash.status_code == 422 and "version" in clash.json()["error"]["message"]
    assert form.status_code == 415
    items = listed.json()["items"]
    assert [(item["version"], item["origin"]) for item in items] == [
        ("1", "configured"),
        ("2", "published"),
    ]
    assert items[1]["publisher"] == "dpo-admin" and items[1]["ledger_event_id"].startswith(
        "policy-version/1/"
    )
