"""What upstream systems publish with, against the session's real broker: the typed
producer library (``LedgerProducer``) and ``consent-ledger publish`` without
``--raw``. What reaches ``ledger.events``, keyed how, and what is refused
before anything is sent."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import ConsumerRecord

from consent_ledger.core.intake import Rejection, ValidEvent, validate
from consent_ledger.devtools.kafka_admin import ensure_topics
from consent_ledger.devtools.processes import find_free_port
from consent_ledger.kafka import IdempotenceRefused, end_offsets
from consent_ledger.producer import InvalidEvent, LedgerProducer
from tests.conftest import KAFKA_BOOTSTRAP_ENV
from tests.e2e.conftest import CLI, SCENARIOS

pytestmark = pytest.mark.integration

SOURCE = "urn:system:crm"


async def new_topic(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> str:
    topic = unique_name("events")
    await ensure_topics(kafka_bootstrap, {topic: 4})
    return topic


async def published(bootstrap: str, topic: str, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    """The ``count`` records on ``topic``, read from the start; fails if fewer
    arrive within 30 s or more follow them.

    Not read up to the end offsets: Tansu (0.6) reports a partition's end as its
    last batch's first offset + 1, short of the true end when a producer batched."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + 30
        while len(records) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        assert len(records) == count, f"read {len(records)} of {count} records"
        assert not await consumer.getmany(timeout_ms=300), "more records than were published"
    finally:
        await consumer.stop()
    return records


def checked(record: ConsumerRecord[bytes, bytes]) -> ValidEvent:
    assert record.value is not None
    event = validate(record.value)
    assert not isinstance(event, Rejection), event
    return event


async def test_each_event_type_is_published_valid_and_keyed_by_subject(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_name)
    at = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    async with LedgerProducer(
        kafka_bootstrap, source=SOURCE, topic=topic, enable_idempotence=False
    ) as ledger:
        ids = [
            await ledger.consent_given(
                "subj-1", purpose="marketing", subject_role="customer_contact",
                controller="visma-software-as", expires_at=at + timedelta(days=365), time=at,
            ),
            await ledger.consent_withdrawn(
                "subj-1", purpose="marketing", controller="visma-software-as", channel="web",
            ),
            await ledger.data_shared(
                "subj-2", purpose="delivery", subject_role="user", controller="visma-software-as",
                recipient={"kind": "public_authority", "id": "police"},
                data_categories=["contact_details"],
                legal_basis={"kind": "court_order", "reference": "TOSLO-2026-1"},
            ),
            await ledger.visitor_registered("subj-3", site="oslo-hq", rights_notice="v2"),
            await ledger.erasure_requested("subj-4", requested_via="email", event_id="erase-4"),
        ]  # fmt: skip

    records = await published(kafka_bootstrap, topic, len(ids))
    events = {checked(record).id: (record, checked(record)) for record in records}
    assert sorted(events) == sorted(ids)
    assert ids[-1] == "erase-4"
    types = [events[event_id][1].type for event_id in ids]
    assert types == [
        "ConsentGiven", "ConsentWithdrawn", "DataShared", "VisitorRegistered", "ErasureRequested",
    ]  # fmt: skip
    for record, event in events.values():
        assert record.key == event.subject.encode()
        body = json.loads(record.value or b"")
        assert body["source"] == SOURCE
        assert body["time"].endswith("Z")
    given = json.loads(events[ids[0]][0].value or b"")
    assert given["time"] == "2026-03-01T09:30:00.000000Z"
    assert given["data"]["expires_at"] == "2027-03-01T09:30:00Z"
    assert "channel" not in given["data"]  # None is left out, not sent as null
    # Keyed by subject: one subject's events share a partition, so they stay in order.
    assert events[ids[0]][0].partition == events[ids[1]][0].partition


async def test_an_invalid_event_names_reason_and_field_and_nothing_is_sent(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_name)
    async with LedgerProducer(
        kafka_bootstrap, source=SOURCE, topic=topic, enable_idempotence=False
    ) as ledger:
        with pytest.raises(InvalidEvent) as empty_categories:
            await ledger.data_shared(
                "subj-1", purpose="delivery", subject_role="user", controller="visma-software-as",
                recipient={"kind": "partner", "id": "northwind"}, data_categories=[],
            )  # fmt: skip
        with pytest.raises(InvalidEvent) as unknown_role:
            await ledger.consent_given(
                "subj-1", purpose="marketing", subject_role="robot", controller="visma-software-as"
            )
        with pytest.raises(InvalidEvent) as blank_subject:
            await ledger.visitor_registered("  ", site="oslo-hq", rights_notice="v2")
        valid = {
            "specversion": "1.0", "id": "ok-1", "source": SOURCE, "type": "VisitorRegistered",
            "subject": "subj-9", "time": "2026-03-01T08:00:00Z", "data": {"site": "oslo-hq"},
        }  # fmt: skip
        with pytest.raises(InvalidEvent) as one_of_many:
            await ledger.publish_many([valid, dict(valid, id="bad-1", time="2026-03-01 08:00")])

    assert (empty_categories.value.reason, unknown_role.value.reason) == (
        "invalid-data",
        "invalid-data",
    )
    assert "data_categories" in empty_categories.value.detail
    assert "subject_role" in unknown_role.value.detail
    assert blank_subject.value.reason == "invalid-envelope"
    assert "subject" in blank_subject.value.detail
    assert one_of_many.value.reason == "invalid-envelope"
    assert "time" in one_of_many.value.detail
    # Nothing reached the topic, not even the valid event sent beside an invalid one
    # (a partition that received anything reports an end offset above 0).
    assert sum((await end_offsets(kafka_bootstrap, topic)).values()) == 0


async def test_publish_sends_the_valid_lines_and_reports_each_refused_one(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """``consent-ledger publish`` (no ``--raw``) checks every line as the ledger
    would, all but id-conflict (which needs the ledger's history): the bad-input
    scenario's refused lines are named on stderr, the rest are sent."""
    topic = await new_topic(kafka_bootstrap, unique_name)
    scenario = SCENARIOS / "bad-input"
    path = scenario / "events.jsonl"
    expected = json.loads((scenario / "expected.json").read_text())
    refused = {
        (r["line"], r["reason"]) for r in expected["rejected"] if r["reason"] != "id-conflict"
    }
    lines = path.read_bytes().splitlines()
    sendable = [line for number, line in enumerate(lines, 1)
                if line.strip() and number not in {n for n, _ in refused}]  # fmt: skip

    env = dict(os.environ, LEDGER_KAFKA_BOOTSTRAP=kafka_bootstrap, LEDGER_EVENTS_TOPIC=topic,
               LEDGER_KAFKA_IDEMPOTENCE="false")  # fmt: skip
    result = await asyncio.to_thread(
        subprocess.run, [str(CLI), "publish", str(path)], env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 1, result.stderr  # refused lines: exit status 1
    reported = {
        (int(line.split(":")[0].removeprefix("line ")), line.split(": ")[1])
        for line in result.stderr.splitlines()
        if line.startswith("line ")
    }
    assert reported == refused
    assert all(line.endswith("(not sent)") for line in result.stderr.splitlines())
    assert f"published {len(sendable)} events" in result.stdout
    assert f"{len(refused)} rejected lines not sent" in result.stdout
    records = await published(kafka_bootstrap, topic, len(sendable))
    assert sorted(record.value or b"" for record in records) == sorted(sendable)


embedded_broker_only = pytest.mark.skipif(
    bool(os.environ.get(KAFKA_BOOTSTRAP_ENV)), reason="Apache Kafka accepts idempotent producers"
)


@embedded_broker_only
async def test_an_idempotent_producer_refused_by_the_embedded_broker_says_what_to_set(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_name)
    with pytest.raises(IdempotenceRefused, match="enable_idempotence=False"):
        async with LedgerProducer(kafka_bootstrap, source=SOURCE, topic=topic):
            pass  # never reached: the broker refuses at start


async def test_an_unreachable_broker_is_not_blamed_on_idempotence() -> None:
    nobody = f"127.0.0.1:{find_free_port()}"
    with pytest.raises(KafkaConnectionError):
        async with LedgerProducer(nobody, source=SOURCE):
            pass
    env = dict(os.environ, LEDGER_KAFKA_BOOTSTRAP=nobody, LEDGER_KAFKA_IDEMPOTENCE="true")
    result = await asyncio.to_thread(
        subprocess.run, [str(CLI), "publish", str(SCENARIOS / "bad-input" / "events.jsonl")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    line = result.stderr.splitlines()[-1]
    assert line.startswith(f"consent-ledger publish: cannot publish to {nobody}")
    assert "idempotent" not in line


@embedded_broker_only
async def test_publish_refused_by_the_embedded_broker_is_one_line_naming_the_setting(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_name)
    env = {name: value for name, value in os.environ.items() if name != "LEDGER_KAFKA_IDEMPOTENCE"}
    env |= {"LEDGER_KAFKA_BOOTSTRAP": kafka_bootstrap, "LEDGER_EVENTS_TOPIC": topic}
    result = await asyncio.to_thread(
        subprocess.run, [str(CLI), "publish", str(SCENARIOS / "bad-input" / "events.jsonl")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    line = result.stderr.splitlines()[-1]  # after aiokafka's own log line, if any
    assert line.startswith("consent-ledger publish: the broker refused an idempotent producer")
    assert "LEDGER_KAFKA_IDEMPOTENCE=false" in line
