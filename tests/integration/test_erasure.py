"""Erasure by crypto-shredding (CONTRACT §4 "Erasure"), on a real PostgreSQL.

The ``erasure`` scenario goes through the real :class:`BatchPipeline` (spread
over three partitions, offsets increasing per partition), in one batch, one
record per batch, or split around the erasure, with a signed checkpoint before
the erasure and one after it. Then: the open violations are exactly the
scenario's; nothing of subject "ola" can be read back (no key, no facts, no
projection, payloads that no key left in the database opens, none of her
events' distinctive strings anywhere in the database); her violations keep
their event ids and rules; the ledger still verifies and proves inclusion of her
earlier entries; and a disclosure for her arriving later, in a new batch, is
``shared-after-erasure`` with an unreadable payload.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_policy
from consent_ledger.integrity.checkpoints import generate_signing_key
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.integrity.proofs import verify_inclusion_document
from consent_ledger.integrity.shredding import PayloadUnreadable, open_sealed
from consent_ledger.settings import Settings
from consent_ledger.store.audit_reads import inclusion_proof_for, verify_ledger
from consent_ledger.store.checkpoint_issuer import issue_checkpoint
from consent_ledger.store.migrate import migrate
from consent_ledger.store.webhook_deliveries import queue_deliveries
from consent_ledger.webhooks import parse_webhooks
from consent_ledger.worker.pipeline import BatchPipeline
from consent_ledger.worker.webhooks import WebhookDispatcher
from tests.conftest import assert_counts_kept

pytestmark = [pytest.mark.integration]

SCENARIO = Path(__file__).resolve().parents[1] / "data" / "scenarios" / "erasure"
PARTITIONS = 3
ERASED = "ola"
ERASURE_ID = "er-4"
LOG_ID = "test-log"

# A DataShared for ola dated after her erasure, arriving in a batch of its own.
LATE = {
    "specversion": "1.0",
    "id": "er-late-1",
    "source": "urn:system:late-export",
    "type": "DataShared",
    "subject": ERASED,
    "time": "2026-03-02T12:00:00+01:00",
    "data": {
        "purpose": "invoicing",
        "subject_role": "customer_contact",
        "controller": "visma-software-as",
        "recipient": {"kind": "group_company", "id": "visma-spcs-ab", "name": "Late Recipient Ltd"},
        "data_categories": ["payment_card_fragment"],
    },
}
LATE_DISTINCTIVE = (
    "urn:system:late-export",
    "visma-spcs-ab",
    "Late Recipient Ltd",
    "payment_card_fragment",
)


def scenario_events() -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in SCENARIO.joinpath("events.jsonl").read_text().splitlines()
        if line.strip()
    ]


def scenario_records() -> list[Record]:
    """One record per line, round-robin over the partitions (so ola's events span all
    three), offsets increasing per partition; batch order is file order."""
    lines = [
        line for line in SCENARIO.joinpath("events.jsonl").read_bytes().splitlines() if line.strip()
    ]
    return [Record(n % PARTITIONS, n // PARTITIONS, line) for n, line in enumerate(lines)]


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def distinctive_strings() -> set[str]:
    """Values in ola's events (data and source) that no other subject's event has.

    Envelope fields the ledger keeps by design (id, subject, type, time as
    microseconds) are left out, and so are recipient kinds: policy vocabulary that
    a kept violation names in its clause (``recipients.public_authority``).
    """
    events = scenario_events()
    ola: set[str] = set()
    others: set[str] = set()
    for event in events:
        found = {event["source"], *strings_in(event["data"])}
        (ola if event["subject"] == ERASED else others).update(found)
        if event["subject"] != ERASED:
            others.update(strings_in(event))
    kinds = {e["data"]["recipient"]["kind"] for e in events if "recipient" in e["data"]}
    return ola - others - kinds


@dataclass
class Ledger:
    pool: asyncpg.Pool
    keyring: KeyRing
    pipeline: BatchPipeline
    signing_key: Ed25519PrivateKey

    async def feed(self, records: Sequence[Record], batch: int) -> None:
        for start in range(0, len(records), batch):
            await self.pipeline.process(records[start : start + batch])

    async def checkpoint(self) -> None:
        await issue_checkpoint(self.pool, self.signing_key, LOG_ID, force=True)

    async def verify_ok(self) -> None:
        async with self.pool.acquire() as connection:
            report = await verify_ledger(connection, self.signing_key.public_key())
        assert report.ok, (report.divergences, report.forged_checkpoints)
        await assert_counts_kept(self.pool)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.pool.acquire() as connection:
            return list(await connection.fetch(query, *args))


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as connection:
            await migrate(connection)
        keyring = KeyRing(os.urandom(32))
        policy = load_policy(SCENARIO / "policy.yaml")
        pipeline = BatchPipeline(pool, keyring, policy, Settings())
        yield Ledger(pool, keyring, pipeline, generate_signing_key())
    finally:
        await pool.close()


async def feed_scenario(ledger: Ledger, batching: str) -> None:
    """Feed the scenario with a checkpoint signed before the erasure is processed."""
    records = scenario_records()
    erasure_at = next(i for i, r in enumerate(records) if orjson.loads(r.value)["id"] == ERASURE_ID)
    before, after = records[:erasure_at], records[erasure_at:]
    batch = {"one-batch": len(records), "record-per-batch": 1, "split-at-erasure": len(records)}[
        batching
    ]
    if batching == "one-batch":
        await ledger.feed(before[:1], batch)  # something to sign before the erasure
        before, after = [], records[1:]
    await ledger.feed(before, batch)
    await ledger.checkpoint()
    await ledger.feed(after, batch)


async def open_violations(ledger: Ledger) -> list[tuple[str, str]]:
    rows = await ledger.fetch(
        "SELECT event_id, rule FROM violations WHERE status = 'open' ORDER BY 1, 2"
    )
    return [(row["event_id"], row["rule"]) for row in rows]


async def readable_strings(ledger: Ledger, needles: Sequence[str]) -> list[tuple[str, str, str]]:
    """(table, column, string) for every needle found in clear in any column of any table."""
    found = set()
    tables = [
        row[0]
        for row in await ledger.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
    ]
    for table in tables:
        for (text,) in await ledger.fetch(f'SELECT t::text FROM "{table}" t'):
            found.update((table, "*row*", needle) for needle in needles if needle in text)
        for row in await ledger.fetch(f'SELECT * FROM "{table}"'):
            for column, value in row.items():
                if value is None:
                    continue
                haystack = value if isinstance(value, bytes) else str(value).encode()
                found.update(
                    (table, column, needle) for needle in needles if needle.encode() in haystack
                )
    return sorted(found)


async def assert_payloads_unreadable(ledger: Ledger, event_ids: Sequence[str]) -> None:
    """No subject key left in the database opens these entries' payloads."""
    keys = {
        row["subject"]: ledger.keyring.unwrap(row["subject"], row["wrapped_key"])
        for row in await ledger.fetch("SELECT subject, wrapped_key FROM subject_keys")
    }
    assert keys, "the other subjects keep their keys"
    entries = await ledger.fetch(
        "SELECT event_id, subject, payload FROM ledger_entries WHERE event_id = ANY($1::text[])",
        list(event_ids),
    )
    assert sorted(row["event_id"] for row in entries) == sorted(event_ids)
    for row in entries:
        for owner, key in keys.items():
            for subject in {row["subject"], owner}:
                with pytest.raises(PayloadUnreadable):
                    open_sealed(key, subject, row["event_id"], bytes(row["payload"]))
    # The same method does open a payload whose key is still there.
    kept = await ledger.fetch(
        "SELECT event_id, subject, payload FROM ledger_entries WHERE subject = ANY($1::text[]) LIMIT 1",
        list(keys),
    )
    for row in kept:
        body = orjson.loads(
            open_sealed(
                keys[row["subject"]], row["subject"], row["event_id"], bytes(row["payload"])
            )
        )
        assert body["id"] == row["event_id"]


def expected_open() -> list[tuple[str, str]]:
    expected = json.loads(SCENARIO.joinpath("expected.json").read_text())
    return sorted((v["event_id"], v["rule"]) for v in expected["violations"])


BATCHINGS = ["one-batch", "record-per-batch", "split-at-erasure"]


@pytest.mark.parametrize("batching", BATCHINGS)
async def test_after_an_erasure_nothing_of_the_subject_can_be_read_back(
    ledger: Ledger, batching: str
) -> None:
    await feed_scenario(ledger, batching)
    events = scenario_events()
    ola_ids = [e["id"] for e in events if e["subject"] == ERASED]

    # The verdicts are the scenario's, exactly; ola's keep their event ids and rules.
    assert await open_violations(ledger) == expected_open()
    ola_violations = await ledger.fetch(
        "SELECT event_id, rule, status, subject, severity FROM violations WHERE subject = $1 ORDER BY 1, 2",
        ERASED,
    )
    assert [(v["event_id"], v["rule"], v["status"]) for v in ola_violations] == [
        (event_id, rule, "open") for event_id, rule in expected_open()
    ]
    assert all(v["severity"] == "critical" for v in ola_violations)

    # The erasure is recorded; the key, the facts and the projection are gone.
    erasures = await ledger.fetch("SELECT subject, event_id FROM erasures")
    assert [(row["subject"], row["event_id"]) for row in erasures] == [(ERASED, ERASURE_ID)]
    for table in ("subject_keys", "consent_changes", "current_consents", "disclosures"):
        assert await ledger.fetch(f"SELECT * FROM {table} WHERE subject = $1", ERASED) == [], table
    assert [row["subject"] for row in await ledger.fetch("SELECT subject FROM subject_keys")] == [
        "pia"
    ]

    # Every entry stays in the ledger, but no key in the database opens ola's payloads.
    entries = await ledger.fetch("SELECT event_id FROM ledger_entries WHERE subject = $1", ERASED)
    assert sorted(row["event_id"] for row in entries) == sorted(ola_ids)
    await assert_payloads_unreadable(ledger, ola_ids)

    # The ledger still verifies against the checkpoint signed before the erasure,
    # and against one signed after it; ola's earlier entries are still provably in it.
    await ledger.verify_ok()
    await ledger.checkpoint()
    await ledger.verify_ok()
    async with ledger.pool.acquire() as connection:
        for event_id in ("er-1", "er-2", ERASURE_ID):
            proof = await inclusion_proof_for(connection, event_id)
            proof.pop("checkpoint_id")
            assert verify_inclusion_document(proof, ledger.signing_key.public_key()), event_id


# Violations written with or after the erasure (e.g. shared-after-erasure) and
# alerts still waiting in the outbox are written or rewritten without details.


def outside_violations_and_outbox(leaks: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [leak for leak in leaks if leak[0] not in ("violations", "outbox")]


@pytest.mark.parametrize("batching", BATCHINGS)
async def test_no_distinctive_string_of_the_erased_subject_is_stored_in_ledger_or_facts(
    ledger: Ledger, batching: str
) -> None:
    needles = sorted(distinctive_strings())
    # What the scenario gives to look for: recipients, purposes, sources, the erasure's channel.
    for needle in (
        "oslo-police-district",
        "visma-enterprise-as",
        "self-service",
        "legal_disclosure",
        "marketing",
    ):
        assert needle in needles
    await feed_scenario(ledger, batching)
    # Sanity: the search finds a string that is still readable (pia's data is in her facts).
    assert ("disclosures", "recipient_id", "northwind-consulting") in await readable_strings(
        ledger, ["northwind-consulting"]
    )
    leaks = await readable_strings(ledger, needles)
    assert outside_violations_and_outbox(leaks) == [], leaks


@pytest.mark.parametrize("batching", BATCHINGS)
async def test_no_distinctive_string_of_the_erased_subject_is_stored_anywhere(
    ledger: Ledger, batching: str
) -> None:
    await feed_scenario(ledger, batching)
    leaks = await readable_strings(ledger, sorted(distinctive_strings()))
    assert leaks == [], leaks


async def test_alerts_queued_for_webhooks_lose_their_details_at_the_erasure(
    ledger: Ledger,
) -> None:
    records = scenario_records()
    erasure_at = next(i for i, r in enumerate(records) if orjson.loads(r.value)["id"] == ERASURE_ID)
    await ledger.feed(records[:erasure_at], len(records))
    # The relay publishes the alerts and queues them for a webhook (receiver down).
    hooks = parse_webhooks(
        {"webhooks": [{"url": "http://127.0.0.1:9/", "secret": "s"}]}, "t", print
    )
    dispatcher = WebhookDispatcher(ledger.pool, hooks, topic=Settings().violations_topic)
    alerts = await ledger.fetch("SELECT topic, value FROM outbox")
    deliveries = dispatcher.deliveries_for([(row["topic"], row["value"]) for row in alerts])
    assert any(delivery.subject == ERASED for delivery in deliveries)
    async with ledger.pool.acquire() as connection:
        await queue_deliveries(connection, deliveries)
    needles = sorted(distinctive_strings())
    assert any(leak[0] == "webhook_deliveries" for leak in await readable_strings(ledger, needles))
    await ledger.feed(records[erasure_at:], len(records))
    leaks = await readable_strings(ledger, needles)
    assert [leak for leak in leaks if leak[0] == "webhook_deliveries"] == []


async def test_a_disclosure_arriving_after_the_erasure_is_judged_and_unreadable(
    ledger: Ledger,
) -> None:
    await feed_scenario(ledger, "split-at-erasure")
    await ledger.feed([Record(1, 100, orjson.dumps(LATE))], 1)
    assert await open_violations(ledger) == sorted(
        [*expected_open(), (LATE["id"], "shared-after-erasure")]
    )
    late = await ledger.fetch(
        "SELECT subject, type FROM ledger_entries WHERE event_id = $1", LATE["id"]
    )
    assert [(row["subject"], row["type"]) for row in late] == [(ERASED, "DataShared")]
    await assert_payloads_unreadable(ledger, [LATE["id"]])
    for table in ("subject_keys", "consent_changes", "current_consents", "disclosures"):
        assert await ledger.fetch(f"SELECT * FROM {table} WHERE subject = $1", ERASED) == [], table
    leaks = await readable_strings(ledger, LATE_DISTINCTIVE)
    assert outside_violations_and_outbox(leaks) == [], leaks
    await ledger.checkpoint()
    await ledger.verify_ok()


async def test_a_disclosure_arriving_after_the_erasure_leaves_nothing_readable(
    ledger: Ledger,
) -> None:
    await feed_scenario(ledger, "split-at-erasure")
    await ledger.feed([Record(1, 100, orjson.dumps(LATE))], 1)
    leaks = await readable_strings(ledger, LATE_DISTINCTIVE)
    assert leaks == [], leaks
