"""The HTTP API against a real PostgreSQL and, where it publishes, a real broker.

Rows are written with plain SQL the way the worker writes them (sealed payloads
under a wrapped subject key, an erased subject, positions, violations), then
every endpoint of CONTRACT §6 is asked about them. Most requests go through
httpx's ASGI transport with the app's lifespan running; one test serves the app
with uvicorn on a real socket.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import json
import os
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import ANY

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consent_ledger.api.app import build_server, create_app
from consent_ledger.api.broker import LogEndOffsets
from consent_ledger.core.intake import compact_json
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.core.timestamps import parse_instant
from consent_ledger.devtools.kafka_admin import ensure_topics
from consent_ledger.devtools.processes import find_free_port
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.integrity.shredding import seal
from consent_ledger.kafka import make_producer
from consent_ledger.settings import Settings
from tests.conftest import bearer, issue_token, signed_in_client

pytestmark = pytest.mark.integration

MASTER_KEY = os.urandom(32)
MASTER_KEY_TEXT = base64.b64encode(MASTER_KEY).decode()
POLICY = load_reference_policy()
T0 = "2026-01-01T00:00:00Z"
NOW = datetime.now(UTC)


def event(
    event_id: str, subject: str, kind: str = "ConsentGiven", time: str = T0, **data: Any
) -> dict[str, Any]:
    """A valid CloudEvent (a ConsentGiven for purpose 'marketing' unless told otherwise)."""
    defaults: dict[str, dict[str, Any]] = {
        "ConsentGiven": {"purpose": "marketing", "subject_role": "user", "controller": "acme"},
        "ConsentWithdrawn": {"purpose": "marketing", "controller": "acme"},
        "VisitorRegistered": {"site": "oslo", "rights_notice": "v1"},
        "ErasureRequested": {},
    }
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "urn:system:test",
        "type": kind,
        "subject": subject,
        "time": time,
        "data": {**defaults.get(kind, {}), **data},
    }


def us(text: str) -> int:
    return parse_instant(text)


# -- the worker's writes, by hand ------------------------------------------------


class LedgerRows:
    """Inserts rows as the worker would, sealing payloads like it does."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.db = connection
        self.keyring = KeyRing(MASTER_KEY)
        self.keys: dict[str, bytes] = {}
        self.seq = 0
        self.leaves: dict[int, int] = {}

    async def entry(self, body: dict[str, Any], *, partition: int = 0) -> None:
        subject, event_id = body["subject"], body["id"]
        if subject not in self.keys:
            key, wrapped = self.keyring.new_key(subject)
            self.keys[subject] = key
            await self.db.execute(
                "INSERT INTO subject_keys (subject, wrapped_key) VALUES ($1, $2)", subject, wrapped
            )
        self.seq += 1
        leaf = self.leaves.get(partition, 0)
        self.leaves[partition] = leaf + 1
        plain = compact_json(body)
        sealed = seal(self.keys[subject], subject, event_id, plain)
        await self.db.execute(
            "INSERT INTO ledger_entries (seq, event_id, subject, type, occurred_us, recorded_at,"
            " recorded_us, kafka_partition, kafka_offset, digest, payload, payload_sha256,"
            " leaf_index, leaf_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
            " $13, $14)",
            self.seq,
            event_id,
            subject,
            body["type"],
            us(body["time"]),
            NOW,
            0,
            partition,
            100 + self.seq,
            hashlib.sha256(plain).digest(),
            sealed,
            hashlib.sha256(sealed).digest(),
            leaf,
            hashlib.sha256(b"leaf" + sealed).digest(),
        )

    async def consent(
        self,
        event_id: str,
        subject: str,
        purpose: str,
        time: str,
        *,
        granted: bool = True,
        expires: str | None = None,
    ) -> None:
        """A consent change, and the current consent when it is the latest by event time."""
        self.seq += 1
        expires_us = us(expires) if expires else None
        await self.db.execute(
            "INSERT INTO consent_changes (event_id, subject, purpose, occurred_us, seq, granted,"
            " expires_us, controller) VALUES ($1, $2, $3, $4, $5, $6, $7, 'acme')",
            event_id,
            subject,
            purpose,
            us(time),
            self.seq,
            granted,
            expires_us,
        )
        await self.db.execute(
            "INSERT INTO current_consents AS c (subject, purpose, event_id, occurred_us, seq,"
            " granted, expires_us) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (subject, purpose) DO UPDATE SET event_id = excluded.event_id,"
            " occurred_us = excluded.occurred_us, seq = excluded.seq, granted = excluded.granted,"
            " expires_us = excluded.expires_us"
            " WHERE (c.occurred_us, c.seq) < (excluded.occurred_us, excluded.seq)",
            subject,
            purpose,
            event_id,
            us(time),
            self.seq,
            granted,
            expires_us,
        )

    async def violation(
        self, event_id: str, rule: str, subject: str, *, status: str = "open"
    ) -> None:
        await self.db.execute(
            "INSERT INTO violations (event_id, rule, subject, severity, clause, explanation,"
            " status, occurred_us, detected_at, updated_at)"
            " VALUES ($1, $2, $3, 'high', '2.1', $4, $5, $6, $7, $7)",
            event_id,
            rule,
            subject,
            f"{event_id} broke {rule}",
            status,
            us(T0),
            NOW,
        )

    async def erasure(self, subject: str, event_id: str, time: str) -> None:
        """What the worker does on an ErasureRequested: record it, shred the key."""
        await self.db.execute(
            "INSERT INTO erasures (subject, event_id, erased_us, recorded_at)"
            " VALUES ($1, $2, $3, $4)",
            subject,
            event_id,
            us(time),
            NOW,
        )
        await self.db.execute("DELETE FROM subject_keys WHERE subject = $1", subject)
        await self.db.execute("DELETE FROM consent_changes WHERE subject = $1", subject)

    async def rejected(self, partition: int, offset: int, reason: str, raw: bytes) -> None:
        await self.db.execute(
            "INSERT INTO rejected_events (kafka_partition, kafka_offset, reason, detail, event_id,"
            " raw, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            partition,
            offset,
            reason,
            f"detail of {offset}",
            None if reason == "invalid-json" else f"ev-{offset}",
            raw,
            NOW,
        )

    async def position(
        self, topic: str, partition: int, next_offset: int, accepted: int, dupes: int, rejected: int
    ) -> None:
        await self.db.execute(
            "INSERT INTO consumer_positions (topic, kafka_partition, next_offset, accepted,"
            " duplicates, rejected) VALUES ($1, $2, $3, $4, $5, $6)",
            topic,
            partition,
            next_offset,
            accepted,
            dupes,
            rejected,
        )


# -- fixtures --------------------------------------------------------------------


@pytest.fixture
async def rows(pool: asyncpg.Pool) -> AsyncIterator[LedgerRows]:
    async with pool.acquire() as connection:
        yield LedgerRows(connection)


@pytest.fixture
def settings(unique_name: Callable[[str], str]) -> Settings:
    """No broker unless a test adds one; a topic name of its own."""
    return Settings(
        master_key=MASTER_KEY_TEXT,
        events_topic=unique_name("events"),
        kafka_idempotence=False,
    )


def closed_port_bootstrap() -> str:
    return f"127.0.0.1:{find_free_port()}"


JSON = {"Content-Type": "application/json"}


@asynccontextmanager
async def api(
    settings: Settings,
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer | None = None,
    *,
    token: str | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app, with its lifespan running, that signs in with ``token``,
    by default one holding every role (test_api_auth.py asks each role on its own)."""
    app = create_app(settings, pool=pool, producer=producer, policy=POLICY)
    token = token or await issue_token(pool, "admin", "publisher", "eraser")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://api", headers=bearer(token)
        ) as client,
    ):
        yield client


def collect_unstarted_consumers() -> None:
    """Collect, quietly, the consumer ``kafka.end_offsets`` leaves unclosed when the
    broker cannot be reached (its ``start()`` is outside its ``try``/``finally``):
    its ResourceWarning would otherwise surface in whichever test runs the next GC."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body


async def read_topic(bootstrap: str, topic: str, expected: int) -> list[Any]:
    """Every record of ``topic``, waiting (bounded) until ``expected`` have arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = asyncio.get_running_loop().time() + 10
        while len(records) < expected and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def topic_size(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


# -- violations --------------------------------------------------------------------


async def seed_violations(rows: LedgerRows) -> None:
    await rows.violation("e1", "consent-missing", "alice")
    await rows.violation("e2", "consent-withdrawn", "bob")
    await rows.violation("e3", "consent-missing", "alice", status="retracted")
    await rows.violation("e4", "partner-not-certified", "alice")
    await rows.violation("e5", "consent-missing", "bob")
    await rows.violation("e6", "visitor-not-informed", "carol", status="retracted")
    await rows.violation("e7", "consent-missing", "alice")


async def test_violations_are_paged_in_detection_order(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows
) -> None:
    await seed_violations(rows)
    async with api(settings, pool) as client:
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
            response = await client.get("/v1/violations", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            pages += 1
            seen += [item["event_id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen == ["e1", "e2", "e3", "e4", "e5", "e6", "e7"]

        exact = (await client.get("/v1/violations", params={"limit": 7})).json()
        assert len(exact["items"]) == 7 and exact["next_cursor"] is None
        first = exact["items"][0]
        assert first == {
            "event_id": "e1",
            "rule": "consent-missing",
            "subject": "alice",
            "severity": "high",
            "status": "open",
            "clause": "2.1",
            "clause_title": None,  # the policy gives no words for a clause "2.1"
            "explanation": "e1 broke consent-missing",
            "detected_at": first["detected_at"],
            "occurred_at": "2026-01-01T00:00:00Z",
            "updated_at": first["updated_at"],
            "policy_version": None,  # written by hand, without the version that judged it
        }
        assert first["detected_at"].endswith("Z")


async def test_violations_filter_by_status_subject_and_rule(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows
) -> None:
    await seed_violations(rows)
    async with api(settings, pool) as client:

        async def ids(**params: Any) -> list[str]:
            response = await client.get("/v1/violations", params=params)
            assert response.status_code == 200, response.text
            return [item["event_id"] for item in response.json()["items"]]

        assert await ids(status="open") == ["e1", "e2", "e4", "e5", "e7"]
        assert await ids(status="retracted") == ["e3", "e6"]
        assert await ids(subject="alice") == ["e1", "e3", "e4", "e7"]
        assert await ids(rule="consent-missing") == ["e1", "e3", "e5", "e7"]
        assert await ids(status="open", subject="alice", rule="consent-missing") == ["e1", "e7"]
        assert await ids(subject="nobody") == []
        # A filtered listing pages too, and its cursor carries on after the last item.
        first = (await client.get("/v1/violations", params={"subject": "alice", "limit": 2})).json()
        assert [item["event_id"] for item in first["items"]] == ["e1", "e3"]
        rest = await ids(subject="alice", cursor=first["next_cursor"])
        assert rest == ["e4", "e7"]


@pytest.mark.parametrize(
    ("params", "parameter", "mentions"),
    [
        ({"status": "closed"}, "status", "open"),
        ({"status": ""}, "status", "retracted"),
        ({"rule": "bogus"}, "rule", "consent-missing"),
        ({"limit": 0}, "limit", "greater than or equal to 1"),
        ({"limit": 1001}, "limit", "1000"),
        ({"limit": "ten"}, "limit", "integer"),
        ({"cursor": "!!!"}, "cursor", "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"rejected:5").decode()}, "cursor", "listing"),
        # Nineteen digits, but beyond a bigint either way: refused, not a database error.
        (
            {"cursor": base64.urlsafe_b64encode(b"violations:9223372036854775808").decode()},
            "cursor",
            "cursor",
        ),
        (
            {"cursor": base64.urlsafe_b64encode(b"violations:-9223372036854775809").decode()},
            "cursor",
            "cursor",
        ),
        ({"subject": ""}, "subject", "at least 1"),
    ],
)
async def test_bad_violation_parameters_are_400_naming_the_parameter(
    settings: Settings, pool: asyncpg.Pool, params: dict[str, Any], parameter: str, mentions: str
) -> None:
    async with api(settings, pool) as client:
        response = await client.get("/v1/violations", params=params)
    body = assert_error(response, 400, "invalid-parameter")
    assert body["error"]["parameter"] == parameter
    assert mentions in body["error"]["message"]


# -- subjects: consents ------------------------------------------------------------


async def seed_consents(rows: LedgerRows) -> None:
    # marketing: granted at 01-10 with expiry 03-01; analytics: granted 01-05,
    # withdrawn 02-01; profiling: granted late (event time 02-15) but ingested last.
    await rows.consent(
        "c-mkt", "alice", "marketing", "2026-01-10T00:00:00Z", expires="2026-03-01T00:00:00Z"
    )
    await rows.consent("c-ana", "alice", "analytics", "2026-01-05T00:00:00Z")
    await rows.consent("w-ana", "alice", "analytics", "2026-02-01T00:00:00Z", granted=False)
    await rows.consent("c-prof", "alice", "profiling", "2026-02-15T00:00:00+01:00")


async def consents_at(client: httpx.AsyncClient, as_of: str | None) -> dict[str, Any]:
    params = {"as_of": as_of} if as_of else {}
    response = await client.get("/v1/subjects/alice/consents", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_consents_as_of_before_and_after_a_withdrawal_and_an_expiry(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows
) -> None:
    await seed_consents(rows)
    async with api(settings, pool) as client:
        before_all = await consents_at(client, "2026-01-01T00:00:00Z")
        assert before_all == {"subject": "alice", "as_of": "2026-01-01T00:00:00Z", "consents": []}

        january = await consents_at(client, "2026-01-20T12:00:00+01:00")
        assert january["as_of"] == "2026-01-20T11:00:00Z"
        assert january["consents"] == [
            {
                "purpose": "analytics",
                "status": "granted",
                "since": "2026-01-05T00:00:00Z",
                "event_id": "c-ana",
                "expires_at": None,
            },
            {
                "purpose": "marketing",
                "status": "granted",
                "since": "2026-01-10T00:00:00Z",
                "event_id": "c-mkt",
                "expires_at": "2026-03-01T00:00:00Z",
            },
        ]

        # The withdrawal counts from its own instant on.
        at_withdrawal = await consents_at(client, "2026-02-01T00:00:00Z")
        analytics = {c["purpose"]: c for c in at_withdrawal["consents"]}["analytics"]
        assert analytics == {
            "purpose": "analytics",
            "status": "withdrawn",
            "since": "2026-02-01T00:00:00Z",
            "event_id": "w-ana",
            "expires_at": None,
        }
        just_before = await consents_at(client, "2026-01-31T23:59:59.999999Z")
        assert {c["purpose"]: c["status"] for c in just_before["consents"]} == {
            "analytics": "granted",
            "marketing": "granted",
        }

        # The late grant (14:00 +01:00 is 23:00 UTC the day before) is there by event time.
        mid_feb = await consents_at(client, "2026-02-14T23:00:00Z")
        assert [c["purpose"] for c in mid_feb["consents"]] == [
            "analytics",
            "marketing",
            "profiling",
        ]

        after_expiry = await consents_at(client, "2026-03-01T00:00:00Z")
        statuses = {c["purpose"]: (c["status"], c["since"]) for c in after_expiry["consents"]}
        assert statuses == {
            "analytics": ("withdrawn", "2026-02-01T00:00:00Z"),
            "marketing": ("expired", "2026-03-01T00:00:00Z"),
            "profiling": ("granted", "2026-02-14T23:00:00Z"),
        }

        # Without as_of, the marketing expiry is compared with the clock.
        now = await consents_at(client, None)
        assert now["as_of"].endswith("Z")
        current = {c["purpose"]: c["status"] for c in now["consents"]}
        marketing_expired = datetime(2026, 3, 1, tzinfo=UTC) <= NOW
        assert current == {
            "analytics": "withdrawn",
            "marketing": "expired" if marketing_expired else "granted",
            "profiling": "granted",
        }


async def test_current_consent_expires_relative_to_now(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows
) -> None:
    past = (NOW - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    future = (NOW + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    await rows.consent("c1", "bob", "marketing", "2020-01-01T00:00:00Z", expires=past)
    await rows.consent("c2", "bob", "analytics", "2020-01-01T00:00:00Z", expires=future)
    async with api(settings, pool) as client:
        response = await client.get("/v1/subjects/bob/consents")
    consents = {c["purpose"]: c for c in response.json()["consents"]}
    assert consents["marketing"]["status"] == "expired"
    assert consents["marketing"]["since"] == consents["marketing"]["expires_at"]
    assert consents["analytics"]["status"] == "granted"
    assert consents["analytics"]["since"] == "2020-01-01T00:00:00Z"


async def test_current_consent_is_what_holds_now_not_what_is_dated_later(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows
) -> None:
    """A change dated after now (a withdrawal scheduled ahead, a clock running
    fast upstream) is the projection's latest, but not yet the status."""
    now = NOW.isoformat().replace("+00:00", "Z")
    later = (NOW + timedelta(days=30)).isoformat().replace("+00:00", "Z")
    await rows.consent("c1", "carol", "marketing", "2020-01-01T00:00:00Z")
    await rows.consent("w1", "carol", "marketing", later, granted=False)
    await rows.consent("c2", "carol", "analytics", later)
    await rows.consent("c3", "carol", "profiling", "2020-01-01T00:00:00Z")
    async with api(settings, pool) as client:
        current = await client.get("/v1/subjects/carol/consents")
        at_now = await client.get("/v1/subjects/carol/consents", params={"as_of": now})
        after = await client.get("/v1/subjects/carol/consents", params={"as_of": later})

    def statuses(response: httpx.Response) -> dict[str, tuple[str, str]]:
        assert response.status_code == 200, response.text
        return {c["purpose"]: (c["status"], c["event_id"]) for c in response.json()["consents"]}

    assert statuses(current) == {"marketing": ("granted", "c1"), "profiling": ("granted", "c3")}
    assert statuses(current) == statuses(at_now)
    assert statuses(after) == {
        "analytics": ("granted", "c2"),
        "marketing": ("withdrawn", "w1"),
        "profiling": ("granted", "c3"),
    }


async def test_a_subject_who_never_consented_has_no_consents(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with api(settings, pool) as client:
        now = await client.get("/v1/subjects/nobody/consents")
        then = await client.get("/v1/subjects/nobody/consents", params={"as_of": T0})
    assert now.status_code == 200 and now.json()["consents"] == []
    assert then.status_code == 200 and then.json()["consents"] == []


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/v1/subjects/anna%00/consents", "subject"),
        ("/v1/subjects/anna%00/events", "subject"),
        ("/v1/subjects//consents", "subject"),
        ("/v1/subjects/%20/events", "subject"),
        ("/v1/violations?subject=a%00b", "subject"),
        ("/v1/violations?subject=%20", "subject"),
        ("/v1/subjects/anna/consents?as_of=2026%00", "as_of"),
        ("/v1/violations?cursor=%00", "cursor"),
        ("/v1/ledger/proofs/inclusion/ev%00", "event_id"),
    ],
)
async def test_nul_or_an_empty_subject_is_a_400_naming_it(
    settings: Settings, pool: asyncpg.Pool, path: str, parameter: str
) -> None:
    async with api(settings, pool) as client:
        response = await client.get(path)
    assert assert_error(response, 400, "invalid-parameter")["error"]["parameter"] == parameter


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/subjects/{'s' * 257}/consents",
        f"/v1/subjects/{'s' * 60_000}/events",
        f"/v1/violations?subject={'s' * 257}",
    ],
)
async def test_a_subject_over_the_limit_is_a_422_naming_it(
    settings: Settings, pool: asyncpg.Pool, path: str
) -> None:
    async with api(settings, pool) as client:
        response = await client.get(path)
    assert assert_error(response, 422, "invalid-parameter")["error"]["parameter"] == "subject"


async def test_a_subject_of_256_characters_is_asked_about(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with api(settings, pool) as client:
        response = await client.get(f"/v1/subjects/{'s' * 256}/consents")
        with_a_line_break = await client.get("/v1/subjects/a%0Ab/events")
    assert response.status_code == 200 and response.json()["consents"] == []
    assert with_a_line_break.status_code == 200, with_a_line_break.text
    assert with_a_line_break.json()["subject"] == "a\nb"


async def test_an_echoed_parameter_is_cut(settings: Settings, pool: asyncpg.Pool) -> None:
    async with api(settings, pool) as client:
        response = await client.get("/v1/subjects/anna/consents", params={"as_of": "q" * 50_000})
    body = assert_error(response, 400, "invalid-parameter")
    assert len(response.content) < 1_000
    assert body["error"]["message"].startswith("as_of: 'qqq")
    assert "more characters" in body["error"]["message"]


@pytest.mark.parametrize(
    ("as_of", "mentions"),
    [
        ("yesterday", "RFC 3339"),
        ("2026-03-01T08:00Z", "RFC 3339"),  # no seconds
        ("2026-03-01T08:00:00", "RFC 3339"),  # no offset
        ("2026-02-30T08:00:00Z", "real date"),
        ("2026-03-01T08:00:00 01:00", "%2B"),  # an unencoded '+' arrives as a space
    ],
)
async def test_bad_as_of_is_400(
    settings: Settings, pool: asyncpg.Pool, as_of: str, mentions: str
) -> None:
    async with api(settings, pool) as client:
        response = await client.get("/v1/subjects/alice/consents", params={"as_of": as_of})
    body = assert_error(response, 400, "invalid-parameter")
    assert body["error"]["parameter"] == "as_of"
    assert mentions in body["error"]["message"]


async def test_an_offset_sent_as_percent_2b_is_understood(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows
) -> None:
    await seed_consents(rows)
    async with api(settings, pool) as client:
        response = await client.get("/v1/subjects/alice/consents?as_of=2026-02-01T01:00:00%2B01:00")
    assert response.status_code == 200, response.text
    statuses = {c["purpose"]: c["status"] for c in response.json()["consents"]}
    assert statuses["analytics"] == "withdrawn"


# -- subjects: events and erasure ---------------------------------------------------


async def test_subject_events_are_decrypted_in_event_time_order_and_paged(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows
) -> None:
    late = event("a-3", "alice", time="2026-01-03T00:00:00Z")
    early = event("a-1", "alice", "ConsentWithdrawn", time="2026-01-01T00:00:00+02:00")
    tied = event("a-2", "alice", "VisitorRegistered", time="2025-12-31T22:00:00Z", extra=[1, 2])
    await rows.entry(late, partition=1)
    await rows.entry(early, partition=2)
    await rows.entry(tied, partition=2)  # same instant as `early`, ingested later
    await rows.entry(event("b-1", "bob"), partition=1)
    async with api(settings, pool) as client:
        response = await client.get("/v1/subjects/alice/events", params={"limit": 2})
        assert response.status_code == 200, response.text
        first = response.json()
        assert first["subject"] == "alice"
        assert [item["event_id"] for item in first["items"]] == ["a-1", "a-2"]
        assert first["next_cursor"] is not None
        rest = (
            await client.get("/v1/subjects/alice/events", params={"cursor": first["next_cursor"]})
        ).json()
    assert [item["event_id"] for item in rest["items"]] == ["a-3"]
    assert rest["next_cursor"] is None
    a1 = first["items"][0]
    assert a1["event"] == early
    assert a1["type"] == "ConsentWithdrawn"
    assert a1["occurred_at"] == "2025-12-31T22:00:00Z"
    assert a1["partition"] == 2 and a1["leaf_index"] == 0 and a1["offset"] == 102
    assert a1["recorded_at"].endswith("Z")
    assert first["items"][1]["event"] == tied
    assert rest["items"][0]["event"] == late


async def test_subject_events_keep_integers_beyond_64_bits_exact(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows
) -> None:
    huge = 2**70 + 1
    await rows.entry(event("big-1", "carol", count=huge))
    async with api(settings, pool) as client:
        response = await client.get("/v1/subjects/carol/events")
    assert response.status_code == 200, response.text
    assert response.json()["items"][0]["event"]["data"]["count"] == huge


async def test_erased_subject_is_gone_for_consents_and_events(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows
) -> None:
    await rows.entry(event("c-1", "carol"))
    await rows.consent("c-1", "carol", "marketing", T0)
    await rows.entry(event("x-1", "carol", "ErasureRequested", time="2026-02-01T10:00:00+01:00"))
    await rows.erasure("carol", "x-1", "2026-02-01T10:00:00+01:00")
    async with api(settings, pool) as client:
        answers = [
            await client.get("/v1/subjects/carol/consents"),
            await client.get("/v1/subjects/carol/consents", params={"as_of": T0}),
            await client.get("/v1/subjects/carol/events"),
        ]
    for response in answers:
        body = assert_error(response, 410, "subject-erased")
        assert body["subject"] == "carol"
        assert body["erased"] is True
        assert body["erased_at"] == "2026-02-01T09:00:00Z"
        assert "forgotten" in body["detail"]


async def test_subject_ids_with_slashes_and_spaces_are_path_parameters(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows
) -> None:
    subject = "urn:crm/customer 42"
    await rows.entry(event("s-1", subject))
    await rows.consent("s-1", subject, "marketing", T0)
    async with api(settings, pool) as client:
        events = await client.get("/v1/subjects/urn:crm%2Fcustomer%2042/events")
        consents = await client.get("/v1/subjects/urn:crm%2Fcustomer%2042/consents")
    assert events.status_code == 200, events.text
    assert events.json()["subject"] == subject
    assert [item["event_id"] for item in events.json()["items"]] == ["s-1"]
    assert consents.json()["consents"][0]["event_id"] == "s-1"


# -- rejected ---------------------------------------------------------------------


async def test_rejected_records_with_raw_text_or_base64(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows
) -> None:
    await rows.rejected(0, 5, "invalid-json", b"{not json")
    await rows.rejected(1, 7, "invalid-json", b"\xff\xfe binary")
    await rows.rejected(0, 9, "unknown-type", b'{"type": "Nope"}')
    async with api(settings, pool) as client:
        first = (await client.get("/v1/rejected", params={"limit": 2})).json()
        rest = (
            await client.get("/v1/rejected", params={"limit": 2, "cursor": first["next_cursor"]})
        ).json()
        bad_cursor = await client.get("/v1/rejected", params={"cursor": first["next_cursor"][:-2]})
    assert rest["next_cursor"] is None
    items = first["items"] + rest["items"]
    assert [(item["partition"], item["offset"]) for item in items] == [(0, 5), (1, 7), (0, 9)]
    text, binary, unknown = items
    assert text["raw"] == "{not json" and text["raw_encoding"] == "utf-8"
    assert text["reason"] == "invalid-json" and text["event_id"] is None
    assert binary["raw_encoding"] == "base64"
    assert base64.b64decode(binary["raw"]) == b"\xff\xfe binary"
    assert unknown["reason"] == "unknown-type" and unknown["event_id"] == "ev-9"
    assert unknown["detail"] == "detail of 9" and unknown["recorded_at"].endswith("Z")
    assert [(item["raw_bytes"], item["raw_truncated"]) for item in items] == [
        (9, False), (9, False), (16, False)
    ]  # fmt: skip
    assert assert_error(bad_cursor, 400)["error"]["parameter"] == "cursor"


async def test_a_page_of_rejected_records_is_bounded_in_bytes(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows
) -> None:
    # Control characters are UTF-8 that JSON escapes six bytes each: ten records
    # of 1 MB would be 62 MB on one page.
    huge = b"\x01" * 1_000_000
    for offset in range(10):
        await rows.rejected(0, offset, "invalid-json", huge)
    await rows.rejected(0, 10, "invalid-json", b"{small")
    await rows.rejected(0, 11, "invalid-json", b"\xff" * 400_000)  # base64: 533,336 bytes
    await rows.rejected(0, 12, "invalid-json", b"\xfe" * 400_000)
    pages: list[dict[str, Any]] = []
    sizes: list[int] = []
    async with api(settings, pool) as client:
        cursor = None
        while len(pages) < 20:
            params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
            response = await client.get("/v1/rejected", params=params)
            assert response.status_code == 200, response.text[:300]
            sizes.append(len(response.content))
            pages.append(response.json())
            cursor = pages[-1]["next_cursor"]
            if cursor is None:
                break
    assert max(sizes) <= 1_001_000, sizes
    listed = [(item["offset"], item["raw_truncated"]) for page in pages for item in page["items"]]
    # Each record over a page on its own is shown cut, filling its page; the
    # small one shares a page with a 533 KB one, but two of those do not fit.
    assert listed == [(n, True) for n in range(10)] + [(10, False), (11, False), (12, False)]
    assert [len(page["items"]) for page in pages] == [1] * 10 + [2, 1]
    first = pages[0]["items"][0]
    assert first["raw_bytes"] == 1_000_000 and first["raw_encoding"] == "utf-8"
    assert 100_000 < len(first["raw"]) < 1_000_000 and set(first["raw"]) == {"\x01"}
    assert base64.b64decode(pages[10]["items"][1]["raw"]) == b"\xff" * 400_000


async def test_a_cut_rejected_record_keeps_whole_characters_and_long_texts_are_cut(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows
) -> None:
    await rows.db.execute(
        "INSERT INTO rejected_events (kafka_partition, kafka_offset, reason, detail, event_id,"
        " subject, raw, recorded_at) VALUES (0, 1, 'invalid-json', $1, NULL, $2, $3, $4)",
        "d" * 5_000,
        "s" * 3_000,
        "é".encode() * 700_000,  # 1.4 MB of two-byte characters
        NOW,
    )
    async with api(settings, pool) as client:
        body = (await client.get("/v1/rejected")).json()
    [item] = body["items"]
    assert body["next_cursor"] is None
    assert item["raw_truncated"] and item["raw_encoding"] == "utf-8"
    assert set(item["raw"]) == {"é"} and item["raw_bytes"] == 1_400_000
    assert item["detail"] == "d" * 1_024 + "…" and item["subject"] == "s" * 1_024 + "…"


# -- stats, health, metrics ----------------------------------------------------------


async def test_stats_sum_positions_and_say_lag_null_without_a_broker(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows
) -> None:
    await seed_violations(rows)
    await rows.position(settings.events_topic, 0, 10, 7, 1, 2)
    await rows.position(settings.events_topic, 1, 5, 4, 0, 1)
    await rows.position("some.other.topic", 0, 99, 99, 99, 99)
    unreachable = settings.with_(kafka_bootstrap=closed_port_bootstrap())
    for configured in (settings, unreachable):
        async with api(configured, pool) as client:
            response = await client.get("/v1/stats")
        collect_unstarted_consumers()
        assert response.status_code == 200, response.text
        assert response.json() == {
            "accepted": 11,
            "duplicates": 1,
            "rejected": 3,
            "violations_open": 5,
            "violations_retracted": 2,
            "lag": None,
            "outbox": {"depth": 0, "oldest_age_s": 0.0, "dead": 0},
            "webhooks": {"delivered": 0, "failed_attempts": 0, "pending": 0, "dead": 0, "urls": []},
        }


async def test_stats_lag_from_the_broker(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows, kafka_bootstrap: str
) -> None:
    topic = settings.events_topic
    await ensure_topics(kafka_bootstrap, {topic: 2})
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for _ in range(5):
            await producer.send_and_wait(topic, b"x", partition=0)
        for _ in range(3):
            await producer.send_and_wait(topic, b"y", partition=1)
    finally:
        await producer.stop()
    await rows.position(topic, 0, 4, 4, 0, 0)  # partition 1 never read: all 3 lag
    async with api(settings.with_(kafka_bootstrap=kafka_bootstrap), pool) as client:
        stats = (await client.get("/v1/stats")).json()
        metrics = (await client.get("/metrics")).text
    assert stats["lag"] == 1 + 3
    assert stats["accepted"] == 4
    assert f'consent_ledger_consumer_lag{{topic="{topic}",partition="0"}} 1' in metrics
    assert f'consent_ledger_consumer_lag{{topic="{topic}",partition="1"}} 3' in metrics
    assert "consent_ledger_broker_up 1" in metrics


async def test_stats_and_metrics_ask_the_broker_over_one_kept_consumer(
    settings: Settings, pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    """One consumer for every lag the API gives, started on the first and stopped
    with the app, not one per call (its start was most of /v1/stats' time)."""
    configured = settings.with_(kafka_bootstrap=kafka_bootstrap)
    await ensure_topics(kafka_bootstrap, {configured.events_topic: 1})
    app = create_app(configured, pool=pool, policy=POLICY)
    log_end = app.state.context.log_end
    async with signed_in_client(app, await issue_token(pool, "admin")) as client:
        first = (await client.get("/v1/stats")).json()
        second = (await client.get("/v1/stats")).json()
        metrics = (await client.get("/metrics")).text
        assert log_end.connected
    assert first["lag"] == second["lag"] == 0
    assert "consent_ledger_broker_up 1" in metrics
    assert log_end.consumers_started == 1
    assert not log_end.connected  # stopped with the app


async def test_the_lag_consumer_is_dropped_when_the_broker_fails_and_made_again() -> None:
    log_end = LogEndOffsets(closed_port_bootstrap(), timeout_s=1.0)
    assert await log_end.of("ledger.events") is None
    assert not log_end.connected  # not kept broken
    assert await log_end.of("ledger.events") is None
    assert log_end.consumers_started == 2  # a new try each time the broker failed
    await log_end.close()
    collect_unstarted_consumers()
    assert await LogEndOffsets(None).of("ledger.events") is None  # no broker configured


async def test_healthz_and_readyz(
    settings: Settings, pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    async with api(settings.with_(kafka_bootstrap=kafka_bootstrap), pool) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {
            "status": "ready",
            "checks": {"database": "ok", "broker": "ok", "outbox": "ok"},
        }
    async with api(settings.with_(kafka_bootstrap=closed_port_bootstrap()), pool) as client:
        assert (await client.get("/healthz")).status_code == 200
        not_ready = await client.get("/readyz")
    body = assert_error(not_ready, 503, "not-ready")
    assert body["error"]["failed"] == ["broker"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] != "ok"


async def test_readyz_names_the_database_when_it_is_down(
    settings: Settings, database_url: str
) -> None:
    pool: asyncpg.Pool = await asyncpg.create_pool(database_url, min_size=0, max_size=1)
    await pool.close()  # a closed pool answers nothing, nor looks a token up
    async with api(settings, pool, token="clt_never-looked-up") as client:
        response = await client.get("/readyz")
        stats = await client.get("/v1/stats")
    body = assert_error(response, 503, "not-ready")
    assert "database" in body["error"]["failed"]
    assert_error(stats, 503, "database-unavailable")


async def test_outbox_figures_and_a_stuck_relay_degrade_readiness(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows, kafka_bootstrap: str
) -> None:
    """Outbox depth, oldest age and dead count in /v1/stats and /metrics; /readyz
    answers 200 ``degraded`` while messages wait a minute with no relay progress."""
    await rows.rejected(0, 1, "unprocessable", b"{}")
    async with pool.acquire() as connection:
        for age in (timedelta(minutes=2), timedelta(seconds=1)):
            await connection.execute(
                "INSERT INTO outbox (topic, value, created_at) VALUES ('t', 'v', now() - $1::interval)",
                age,
            )
        await connection.execute(
            "INSERT INTO outbox_dead (id, topic, value, headers, created_at, reason)"
            " VALUES (999, 't', 'v', '[]', now(), 'MessageSizeTooLargeError: too large')"
        )
        await connection.execute("UPDATE outbox_relay SET progressed_at = now() - interval '90 s'")
    async with api(settings.with_(kafka_bootstrap=kafka_bootstrap), pool) as client:
        stats = (await client.get("/v1/stats")).json()
        metrics = set((await client.get("/metrics")).text.splitlines())
        degraded = await client.get("/readyz")
        async with pool.acquire() as connection:  # a relay sent something
            await connection.execute("UPDATE outbox_relay SET progressed_at = now()")
        ready = await client.get("/readyz")
    assert (stats["outbox"]["depth"], stats["outbox"]["dead"]) == (2, 1)
    assert 120 <= stats["outbox"]["oldest_age_s"] < 180
    assert {"consent_ledger_outbox_depth 2", "consent_ledger_outbox_dead 1"} <= metrics
    assert f'consent_ledger_records_isolated_total{{topic="{settings.events_topic}"}} 1' in metrics
    (age,) = [
        line for line in metrics if line.startswith("consent_ledger_outbox_oldest_age_seconds ")
    ]
    assert float(age.split()[1]) >= 120
    assert degraded.status_code == 200
    assert degraded.json()["status"] == "degraded"
    assert "2 messages waiting" in degraded.json()["checks"]["outbox"]
    assert (ready.status_code, ready.json()["status"], ready.json()["checks"]["outbox"]) == (
        200, "ready", "ok",
    )  # fmt: skip


async def test_metrics_in_prometheus_text_format(
    settings: Settings, pool: asyncpg.Pool, rows: LedgerRows
) -> None:
    await seed_violations(rows)
    await rows.entry(event("m-1", "alice"))
    await rows.entry(event("m-2", "alice", "ConsentWithdrawn"))
    await rows.entry(event("m-3", "bob"))
    await rows.rejected(0, 1, "invalid-json", b"{")
    await rows.position(settings.events_topic, 0, 4, 3, 0, 1)
    async with api(settings, pool) as client:
        await client.get("/v1/violations")
        await client.get("/v1/subjects/alice/consents")
        await client.get("/v1/violations", params={"limit": 0})
        await client.get("/nowhere")
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    lines = set(response.text.splitlines())
    for expected in [
        "# TYPE consent_ledger_events gauge",
        'consent_ledger_events{type="ConsentGiven"} 2',
        'consent_ledger_events{type="ConsentWithdrawn"} 1',
        'consent_ledger_rejected_events{reason="invalid-json"} 1',
        'consent_ledger_violations{rule="consent-missing",status="open"} 3',
        'consent_ledger_violations{rule="consent-missing",status="retracted"} 1',
        f'consent_ledger_records_total{{topic="{settings.events_topic}",outcome="accepted"}} 3',
        f'consent_ledger_records_total{{topic="{settings.events_topic}",outcome="rejected"}} 1',
        "consent_ledger_broker_up 0",
        f'consent_ledger_batches_total{{topic="{settings.events_topic}",partition="0"}} 0',
        'consent_ledger_http_requests_total{method="GET",route="/v1/violations",status="200"} 1',
        'consent_ledger_http_requests_total{method="GET",route="/v1/violations",status="400"} 1',
        'consent_ledger_http_requests_total{method="GET",route="/v1/subjects/{subject}/consents",status="200"} 1',
        'consent_ledger_http_requests_total{method="GET",route="unmatched",status="404"} 1',
    ]:
        assert expected in lines, expected
    for line in lines:  # every sample line is `name{labels} number`
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


# -- errors everywhere are JSON --------------------------------------------------------


async def test_unknown_routes_and_methods_answer_json(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with api(settings, pool) as client:
        missing = await client.get("/v1/nothing-here")
        wrong_method = await client.delete("/v1/violations")
    assert "/v1/nothing-here" in assert_error(missing, 404, "not-found")["error"]["message"]
    assert_error(wrong_method, 405, "method-not-allowed")


async def test_openapi_describes_every_endpoint(settings: Settings, pool: asyncpg.Pool) -> None:
    async with api(settings, pool) as client:
        schema = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert docs.status_code == 200
    assert set(schema["paths"]) == {
        "/v1/events",
        "/v1/violations",
        "/v1/subjects/{subject}/consents",
        "/v1/subjects/{subject}/events",
        "/v1/subjects/{subject}/report",
        "/v1/rejected",
        "/v1/reports/violations",
        "/v1/reports/disclosures",
        "/v1/policy",
        "/v1/policy/versions",
        "/v1/policy/whatif",
        "/v1/stats",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/ledger/public-key",
        "/v1/ledger/checkpoints",
        "/v1/ledger/checkpoints/latest",
        "/v1/ledger/checkpoints/{checkpoint_id}",
        "/v1/ledger/proofs/inclusion/{event_id}",
        "/v1/ledger/proofs/consistency",
        "/v1/tokens",
        "/v1/tokens/{name}",
        "/v1/access-log",
    }
    # Every route but the two probes names the bearer scheme, so /docs can sign in.
    assert schema["components"]["securitySchemes"] == {
        "BearerToken": {"type": "http", "scheme": "bearer", "description": ANY}
    }
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            expected = [] if path in ("/healthz", "/readyz") else [{"BearerToken": []}]
            assert operation.get("security", []) == expected, path
    post = schema["paths"]["/v1/events"]["post"]
    assert set(post["responses"]) >= {"202", "400", "413", "422", "503"}
    assert "ConsentGiven" in schema["components"]["schemas"]
    policy = schema["paths"]["/v1/policy"]["get"]["responses"]["200"]["content"]
    assert policy["application/json"]["schema"] == {"$ref": "#/components/schemas/PolicyDocument"}
    violations = schema["paths"]["/v1/violations"]["get"]
    assert "422" not in violations["responses"]
    assert violations["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ViolationPage"
    }


async def test_an_unexpected_failure_is_a_json_500(settings: Settings, database_url: str) -> None:
    pool: asyncpg.Pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:  # a database without the schema: every query fails
        app = create_app(settings, pool=pool, policy=POLICY)
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            response = await client.get("/v1/violations", headers=bearer("clt_any"))
    finally:
        await pool.close()
    assert_error(response, 500, "internal-error")


# -- POST /v1/events -----------------------------------------------------------------


async def test_post_publishes_every_event_keyed_by_subject(
    settings: Settings, pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    configured = settings.with_(kafka_bootstrap=kafka_bootstrap)
    topic = configured.events_topic
    await ensure_topics(kafka_bootstrap, {topic: 3})
    batch = [event("p-1", "alice"), event("p-2", "bøb", "ConsentWithdrawn")]
    single = event("p-3", "carol", "VisitorRegistered", time="2026-01-01T09:00:00.5+01:00")
    async with api(configured, pool) as client:
        many = await client.post("/v1/events", json=batch)
        one = await client.post(
            "/v1/events",
            # spaces in the text, specversion first: published as compact JSON
            content=b'{ "specversion": "1.0", '
            + orjson.dumps({k: v for k, v in single.items() if k != "specversion"})[1:],
            headers={"content-type": "application/cloudevents+json"},
        )
    assert many.status_code == 202, many.text
    assert many.json() == {"accepted": ["p-1", "p-2"]}
    assert one.status_code == 202, one.text
    assert one.json() == {"accepted": ["p-3"]}
    records = await read_topic(kafka_bootstrap, topic, 3)
    by_key = {record.key: record.value for record in records}
    assert len(records) == 3
    assert by_key == {
        b"alice": orjson.dumps(batch[0]),
        "bøb".encode(): orjson.dumps(batch[1]),
        b"carol": orjson.dumps({"specversion": "1.0"} | single),
    }


async def test_post_publishes_integers_beyond_64_bits_exactly(
    settings: Settings, pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    configured = settings.with_(kafka_bootstrap=kafka_bootstrap)
    await ensure_topics(kafka_bootstrap, {configured.events_topic: 1})
    body = orjson.dumps(event("p-big", "dora"))[:-2] + b', "count": 1180591620717411303425}}'
    async with api(configured, pool) as client:
        response = await client.post("/v1/events", content=body, headers=JSON)
    assert response.status_code == 202, response.text
    [record] = await read_topic(kafka_bootstrap, configured.events_topic, 1)
    assert b'"count":1180591620717411303425' in record.value


async def test_post_with_a_given_producer(
    settings: Settings, pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    configured = settings.with_(kafka_bootstrap=kafka_bootstrap)
    await ensure_topics(kafka_bootstrap, {configured.events_topic: 1})
    producer = make_producer(configured)
    await producer.start()
    try:
        async with api(configured, pool, producer) as client:
            response = await client.post("/v1/events", json=event("g-1", "dora"))
        assert response.status_code == 202, response.text
        # The app leaves a producer it was given running.
        await producer.send_and_wait(configured.events_topic, b"after", key=b"k")
    finally:
        await producer.stop()
    records = await read_topic(kafka_bootstrap, configured.events_topic, 2)
    assert [record.key for record in records] == [b"dora", b"k"]


async def test_post_with_an_invalid_event_publishes_nothing(
    settings: Settings, pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    configured = settings.with_(kafka_bootstrap=kafka_bootstrap)
    topic = configured.events_topic
    await ensure_topics(kafka_bootstrap, {topic: 2})
    no_time = event("bad-2", "bob")
    del no_time["time"]
    batch = [
        event("ok-1", "alice"),
        event("bad-1", "alice", "ConsentTaken"),
        no_time,
        "not an object",
        event("bad-3", "carol", "ConsentGiven", subject_role="robot"),
    ]
    async with api(configured, pool) as client:
        response = await client.post("/v1/events", json=batch)
        single = await client.post("/v1/events", json=event("", "alice"))
    body = assert_error(response, 422, "invalid-events")
    assert "none was published" in body["error"]["message"]
    assert [(r["index"], r["reason"], r["event_id"]) for r in body["rejected"]] == [
        (1, "unknown-type", "bad-1"),
        (2, "invalid-envelope", "bad-2"),
        (3, "invalid-json", None),
        (4, "invalid-data", "bad-3"),
    ]
    assert "time" in body["rejected"][1]["detail"]
    assert "subject_role" in body["rejected"][3]["detail"]
    single_body = assert_error(single, 422)
    assert single_body["rejected"] == [
        {
            "index": 0,
            "reason": "invalid-envelope",
            "detail": single_body["rejected"][0]["detail"],
            "event_id": None,
        }
    ]
    assert await topic_size(kafka_bootstrap, topic) == 0


async def test_post_holds_each_event_to_the_record_limits(
    settings: Settings, pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    """Each event of an array is a record of its own: over 262,144 bytes it is
    too-large, and a subject over 256 characters is an invalid envelope."""
    configured = settings.with_(kafka_bootstrap=kafka_bootstrap)
    await ensure_topics(kafka_bootstrap, {configured.events_topic: 1})
    small = event("ok-1", "alice")
    bare = len(json.dumps(event("big-1", "alice", padding=""), separators=(",", ":")))
    exact = event("big-1", "alice", padding="p" * (262_144 - bare))
    over = event("big-2", "alice", padding="p" * (262_145 - bare))
    batch = [small, exact, over, event("long-1", "s" * 257)]
    async with api(configured, pool) as client:
        response = await client.post(
            "/v1/events",
            content=json.dumps(batch, separators=(",", ":")).encode(),
            headers={"content-type": "application/json"},
        )
    body = assert_error(response, 422, "invalid-events")
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
        (2, "too-large"),
        (3, "invalid-envelope"),
    ]
    assert await topic_size(kafka_bootstrap, configured.events_topic) == 0


@pytest.mark.parametrize(
    ("content", "mentions"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2", "not valid JSON"),
        (b'{"id": NaN}', "NaN"),
        (b'{"id": "e", "x": 1e400}', "out of range"),  # no float holds it: intake refuses it too
        (b"42", "got a number"),
        # I-JSON (CONTRACT §2): what once was a 500 or a worker crash
        (b'{"a":' * 999 + b"1" + b"}" * 999, "nested deeper than 32"),
        (b"[" * 999 + b"]" * 999, "nested deeper than 32"),
        (b'{"subject": "nul\\u0000subject"}', "U+0000"),
        (b'[{"subject": "surrogate-\\ud800"}]', "unpaired surrogate"),
        (b'{"id": "a", "id": "b"}', "appears twice"),
    ],
)
async def test_post_that_is_not_json_is_one_invalid_json_event(
    settings: Settings, pool: asyncpg.Pool, content: bytes, mentions: str
) -> None:
    """As a record that is not JSON is rejected as invalid-json, so is such a body:
    one event, index 0, and a 422 like any other invalid event."""
    async with api(settings, pool) as client:
        response = await client.post(
            "/v1/events", content=content, headers={"content-type": "application/json"}
        )
    body = assert_error(response, 422, "invalid-events")
    [rejected] = body["rejected"]
    assert (rejected["index"], rejected["reason"]) == (0, "invalid-json")
    assert mentions in rejected["detail"]


async def test_post_lists_the_first_100_invalid_events_and_counts_them_all(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    zeros = b"[" + b"0," * 489_999 + b"0]"  # 980 KB: 490,000 invalid events
    unknown = [event(f"u{n}", "ann", kind="Nope" + "x" * 2_000) for n in range(150)]
    async with api(settings, pool) as client:
        many = await client.post("/v1/events", content=zeros, headers=JSON)
        long_details = await client.post("/v1/events", json=[event("ok", "ann"), *unknown])
    body = assert_error(many, 422, "invalid-events")
    assert len(many.content) < 20_000
    assert body["rejected_total"] == 490_000 and len(body["rejected"]) == 100
    assert [item["index"] for item in body["rejected"]] == list(range(100))
    assert {item["reason"] for item in body["rejected"]} == {"invalid-json"}
    assert "490000 of 490000" in body["error"]["message"]
    body = assert_error(long_details, 422, "invalid-events")
    assert body["rejected_total"] == 150
    assert [item["index"] for item in body["rejected"]] == list(range(1, 101))
    assert all(len(item["detail"]) < 600 for item in body["rejected"])


async def test_post_nested_999_deep_is_invalid_json(settings: Settings, pool: asyncpg.Pool) -> None:
    async with api(settings, pool) as client:
        arrays = await client.post("/v1/events", content=b"[" * 999 + b"]" * 999, headers=JSON)
        objects = await client.post(
            "/v1/events", content=b'{"a":' * 999 + b"1" + b"}" * 999, headers=JSON
        )
    for response in (arrays, objects):
        body = assert_error(response, 422, "invalid-events")
        assert [item["reason"] for item in body["rejected"]] == ["invalid-json"]
        assert body["rejected_total"] == 1


@pytest.mark.parametrize(
    ("content", "code"), [(b"", "empty-body"), (b" \n", "empty-body"), (b"[]", "empty-batch")]
)
async def test_post_without_events_is_400(
    settings: Settings, pool: asyncpg.Pool, content: bytes, code: str
) -> None:
    async with api(settings, pool) as client:
        response = await client.post(
            "/v1/events", content=content, headers={"content-type": "application/json"}
        )
    assert_error(response, 400, code)


async def test_post_over_the_size_limit_is_413(settings: Settings, pool: asyncpg.Pool) -> None:
    small = settings.with_(max_request_bytes=2_000)
    batch = [event(f"big-{n}", "alice") for n in range(20)]
    content = orjson.dumps(batch)
    assert len(content) > 2_000

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length to trust
        for start in range(0, len(content), 500):
            yield content[start : start + 500]

    async with api(small, pool) as client:
        declared = await client.post("/v1/events", content=content, headers=JSON)
        streamed = await client.post("/v1/events", content=chunked(), headers=JSON)
    for response in (declared, streamed):
        body = assert_error(response, 413, "payload-too-large")
        assert body["error"]["limit"] == 2_000


async def test_post_when_the_broker_is_down_is_503(settings: Settings, pool: asyncpg.Pool) -> None:
    for configured in (settings, settings.with_(kafka_bootstrap=closed_port_bootstrap())):
        async with api(configured, pool) as client:
            response = await client.post("/v1/events", json=event("d-1", "alice"))
        assert_error(response, 503, "broker-unavailable")


# -- a real server ---------------------------------------------------------------------


async def test_served_by_uvicorn_on_a_socket_with_its_own_pool(
    settings: Settings, database_url: str, kafka_bootstrap: str
) -> None:
    configured = settings.with_(
        database_url=database_url, kafka_bootstrap=kafka_bootstrap, api_port=0
    )
    await ensure_topics(kafka_bootstrap, {configured.events_topic: 2})
    token = await issue_token(database_url, "admin", "publisher")
    server = build_server(configured, policy=POLICY)
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or serving.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=bearer(token)
        ) as client:
            assert (await client.get("/readyz")).status_code == 200
            # The lifespan migrated the fresh database: the tables answer.
            assert (await client.get("/v1/violations")).json() == {
                "items": [],
                "next_cursor": None,
            }
            posted = await client.post("/v1/events", json=[event("srv-1", "erin")])
            assert posted.status_code == 202, posted.text
            missing = await client.get("/v1/missing")
            assert_error(missing, 404)
            huge = await client.post(
                "/v1/events", content=b"[" + b" " * 2_000_000 + b"]", headers=JSON
            )
            assert_error(huge, 413)
            # A body the decoder takes a second or more over is checked off the
            # event loop: /healthz keeps answering while it is being checked (with
            # the check on the loop, one answer came before it and one after).
            zeros = asyncio.create_task(
                client.post(
                    "/v1/events",
                    content=b"[" + b"0," * 489_999 + b"0]",
                    headers=JSON,
                    timeout=120,
                )
            )
            answered = 0
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as other:
                while not zeros.done():  # bounded: the POST is answered
                    assert (await other.get("/healthz", timeout=120)).status_code == 200
                    answered += 1
                    await asyncio.sleep(0.05)  # a pace, not a wait: leave the check CPU
            assert answered >= 5
            assert (await zeros).status_code == 422
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
    records = await read_topic(kafka_bootstrap, configured.events_topic, 1)
    assert [(record.key, orjson.loads(record.value)["id"]) for record in records] == [
        (b"erin", "srv-1")
    ]
