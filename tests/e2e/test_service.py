"""The acceptance scenarios through the running service: publish, wait until
/v1/stats has counted every record, query. Also redelivery, arrival order,
a worker killed mid-stream, two workers sharing the partitions, and alerts."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consent_ledger.core.cloudevents import binary_headers
from consent_ledger.core.intake import ValidEvent, validate
from consent_ledger.core.offline import OfflineLedger
from consent_ledger.core.policy import load_policy, load_policy_versions
from consent_ledger.devtools.databases import create_database, drop_database
from tests.e2e.conftest import CLI, SCENARIOS, LedgerService, running_service

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ALL = sorted(path.name for path in SCENARIOS.iterdir() if (path / "expected.json").exists())
# Arrival order changes nothing for these: no erasure, no id reused, no ties in time.
ORDER_FREE = [
    "consent-lifecycle",
    "disclosures-by-recipient",
    "jobseekers-and-visitors",
    "late-arrivals",
]


def lines(name: str) -> list[bytes]:
    return [
        line
        for line in (SCENARIOS / name / "events.jsonl").read_bytes().splitlines()
        if line.strip()
    ]


def policy_of(name: str) -> Path:
    """The scenario's policy: its folder of versions (CONTRACT §3) where it has one."""
    versions = SCENARIOS / name / "policies"
    return versions if versions.is_dir() else SCENARIOS / name / "policy.yaml"


def expected(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCENARIOS / name / "expected.json").read_text())
    return {
        "open": {(v["event_id"], v["rule"]) for v in data["violations"]},
        "rejected": sorted(item["reason"] for item in data["rejected"]),
        "counts": data["counts"],
    }


async def assert_exactly_expected(
    service: LedgerService, want: dict[str, Any], stats: dict[str, Any]
) -> None:
    """Open violations, rejected reasons and counts are exactly the scenario's."""
    assert await service.open_violations() == want["open"]
    assert await service.rejected() == want["rejected"]
    counts = want["counts"]
    assert (stats["accepted"], stats["duplicates"], stats["rejected"]) == (
        counts["accepted"], counts["duplicates"], counts["rejected"],
    )  # fmt: skip


def write(path: Path, records: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(records) + b"\n")
    return path


@pytest.mark.parametrize("name", ALL)
async def test_scenario_gives_its_verdicts_also_when_published_twice(
    ledger_service: LedgerService, name: str
) -> None:
    service, want = ledger_service, expected(name)
    records = len(lines(name))
    service.env["LEDGER_POLICY"] = str(policy_of(name))
    service.start_worker()
    published = service.publish(SCENARIOS / name / "events.jsonl")
    assert published.returncode == 0, published.stderr

    stats = await service.wait_counted(records)
    await assert_exactly_expected(service, want, stats)
    assert stats["violations_open"] == len(want["open"])
    if policy_of(name).is_dir():  # versions: each violation names the one that judged it
        judged = OfflineLedger(load_policy_versions(policy_of(name)))
        judged.ingest_lines(lines(name))
        listed = await service.pages("/v1/violations", status="open")
        assert {(v["event_id"], v["rule"]): v["policy_version"] for v in listed} == {
            v.key: v.policy_version for v in judged.open_violations()
        }
    counts = want["counts"]

    service.publish(SCENARIOS / name / "events.jsonl")
    stats = await service.wait_counted(2 * records)
    assert await service.open_violations() == want["open"]
    assert stats["accepted"] == counts["accepted"]
    assert stats["duplicates"] == 2 * counts["duplicates"] + counts["accepted"]
    assert stats["rejected"] == 2 * counts["rejected"]


async def test_arrival_order_and_redelivery_do_not_change_the_verdicts(
    ledger_service: LedgerService, tmp_path: Path
) -> None:
    everything = [line for name in ORDER_FREE for line in lines(name)]
    shuffled = everything + random.Random(7).sample(everything, 15)  # some redelivered
    random.Random(11).shuffle(shuffled)
    ledger_service.start_worker()
    ledger_service.publish(write(tmp_path / "shuffled.jsonl", shuffled))
    stats = await ledger_service.wait_counted(len(shuffled))
    want = set().union(*(expected(name)["open"] for name in ORDER_FREE))
    assert await ledger_service.open_violations() == want
    assert (stats["accepted"], stats["duplicates"]) == (len(everything), 15)


async def test_a_worker_killed_mid_stream_loses_and_duplicates_nothing(
    ledger_service: LedgerService,
) -> None:
    service, want = ledger_service, expected("random-3000")
    service.env["LEDGER_BATCH_SIZE"] = (
        "100"  # many small transactions, so the kill lands mid-stream
    )
    worker = service.start_worker()
    service.publish(SCENARIOS / "random-3000" / "events.jsonl")

    async def some_committed() -> bool:
        stats = await service.stats()
        return stats["accepted"] + stats["duplicates"] + stats["rejected"] > 0

    await service.wait_for(some_committed, "a first batch")
    service.kill_worker(worker)
    at_kill = await service.stats()
    service.start_worker()
    stats = await service.wait_counted(len(lines("random-3000")))

    await assert_exactly_expected(service, want, stats)
    assert at_kill["accepted"] < want["counts"]["accepted"], "the kill came after the last batch"


async def test_a_record_that_cannot_be_stored_is_rejected_and_the_stream_goes_on(
    ledger_service: LedgerService,
) -> None:
    """CONTRACT §2: a record PostgreSQL refuses (here: a trigger refusing one
    event's ledger entry) is isolated from its batch and rejected as
    ``unprocessable``; the worker stays up and everything else is exactly what
    ``check`` gives for the records without it."""
    service, records = ledger_service, lines("random-3000")
    poison = next(
        outcome.id for outcome in map(validate, records[1500:])
        if isinstance(outcome, ValidEvent)
        and sum(line.count(outcome.id.encode()) for line in records) == 1
    )  # fmt: skip
    ledger = OfflineLedger(load_policy(SCENARIOS / "random-3000" / "policy.yaml"))
    for number, line in enumerate(records, start=1):
        if poison.encode() not in line:
            ledger.ingest(line, number)
    await asyncio.to_thread(
        subprocess.run, [str(CLI), "migrate"], env=service.env, check=True, capture_output=True
    )
    connection = await asyncpg.connect(service.env["LEDGER_DATABASE_URL"])
    try:
        await connection.execute(REFUSE_ONE_ENTRY.replace("POISON", poison))
    finally:
        await connection.close()
    service.start_worker()
    service.publish(SCENARIOS / "random-3000" / "events.jsonl")
    stats = await service.wait_counted(len(records))

    counts = ledger.counts
    assert (stats["accepted"], stats["duplicates"], stats["rejected"]) == (
        counts.accepted, counts.duplicates, counts.rejected + 1,
    )  # fmt: skip
    assert await service.open_violations() == {v.key for v in ledger.open_violations()}
    unprocessable = [
        item for item in await service.pages("/v1/rejected") if item["reason"] == "unprocessable"
    ]
    assert [item["event_id"] for item in unprocessable] == [poison]
    assert "injected fault" in unprocessable[0]["detail"]
    assert "poison record isolated" in service.worker_log(1)
    assert service.workers[0].poll() is None, "the worker stopped"


@pytest.fixture(scope="class")
async def working_service(
    kafka_bootstrap: str, pg_server_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LedgerService]:
    """A service whose one healthy worker has counted a scenario, shared by the
    broken workers' tests: each leaves it as it found it, which is what they check."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    database_url = await create_database(pg_server_dsn, name)
    try:
        async with running_service(
            kafka_bootstrap, database_url, name, tmp_path_factory.mktemp("working")
        ) as service:
            service.start_worker()
            service.publish(SCENARIOS / "consent-lifecycle" / "events.jsonl")
            await service.wait_counted(len(lines("consent-lifecycle")))
            yield service
    finally:
        await drop_database(pg_server_dsn, name)


class TestAWorkerThatCouldNotWork:
    @pytest.mark.parametrize(
        ("setting", "value", "mentions"),
        [
            ("LEDGER_MASTER_KEY", "", "master key"),
            ("LEDGER_MASTER_KEY", "not-base64!", "LEDGER_MASTER_KEY"),
            ("LEDGER_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none", "cannot use the database"),
            ("LEDGER_CHECKPOINT_HISTORY_TOPIC", "never.created", "topics never.created do not exist"),
        ],
    )  # fmt: skip
    async def test_does_not_join_its_group(
        self, working_service: LedgerService, setting: str, value: str, mentions: str
    ) -> None:
        """It says why in one line and exits 2 before joining: a worker that joined and
        then crashed would make its group rebalance, stalling the healthy workers."""
        service = working_service
        [healthy] = service.workers
        before = await service.stats()

        broken = dict(service.env) | {setting: value}
        result = await asyncio.to_thread(
            subprocess.run, [str(CLI), "worker"], env=broken, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert "not joining the consumer group" in result.stderr and mentions in result.stderr
        assert "Traceback" not in result.stderr
        assert "partitions revoked" not in service.worker_log(1)  # no rebalance happened
        after = await service.stats()
        del before["outbox"], after["outbox"]  # the relay drains it meanwhile
        assert healthy.poll() is None and after == before


REFUSE_ONE_ENTRY = """
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN IF NEW.event_id = 'POISON' THEN RAISE EXCEPTION 'injected fault'; END IF;
   RETURN NEW; END $$;
CREATE TRIGGER refuse BEFORE INSERT ON ledger_entries FOR EACH ROW EXECUTE FUNCTION refuse();
"""


async def test_two_workers_share_the_partitions(ledger_service: LedgerService) -> None:
    service, want = ledger_service, expected("random-3000")
    service.start_worker()
    service.start_worker()
    service.publish(SCENARIOS / "random-3000" / "events.jsonl")
    stats = await service.wait_counted(len(lines("random-3000")))
    assert await service.open_violations() == want["open"]
    assert stats["accepted"] == want["counts"]["accepted"]
    assert stats["duplicates"] == want["counts"]["duplicates"]
    assert "batch committed" in service.worker_log(1)
    assert "batch committed" in service.worker_log(2)


async def test_worker_logs_are_json_lines_also_from_the_libraries(
    ledger_service: LedgerService,
) -> None:
    """A second worker joining makes the first rebalance, and the libraries
    (aiokafka, faust) warn about it through the standard library: those lines
    are JSON too, with the logger's name."""
    service = ledger_service
    service.start_worker()
    service.publish(SCENARIOS / "consent-lifecycle" / "events.jsonl")
    await service.wait_counted(len(lines("consent-lifecycle")))
    service.start_worker()
    service.publish(SCENARIOS / "late-arrivals" / "events.jsonl")
    await service.wait_counted(len(lines("consent-lifecycle")) + len(lines("late-arrivals")))

    async def rebalanced() -> bool:
        return "partitions revoked" in service.worker_log(1)

    await service.wait_for(rebalanced, "the first worker to give up partitions to the second")
    records = [
        json.loads(line) for number in (1, 2) for line in service.worker_log(number).splitlines()
    ]
    assert all(isinstance(record, dict) for record in records)
    foreign = [record for record in records if "logger" in record]
    assert foreign, "no library log line to check"
    assert all(record["level"] in ("warning", "error", "critical") for record in foreign)


async def test_every_violation_change_is_alerted_once(ledger_service: LedgerService) -> None:
    service = ledger_service
    service.start_worker()
    service.publish(SCENARIOS / "late-arrivals" / "events.jsonl")
    await service.wait_counted(len(lines("late-arrivals")))
    open_now = await service.open_violations()

    consumer = AIOKafkaConsumer(
        service.env["LEDGER_VIOLATIONS_TOPIC"],
        bootstrap_servers=service.env["LEDGER_KAFKA_BOOTSTRAP"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    messages: list[dict[str, Any]] = []
    try:

        async def all_alerts_read() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            messages.extend(
                orjson.loads(record.value) for records in batch.values() for record in records
            )
            state: dict[tuple[str, str], str] = {}
            for message in messages:
                violation = message["violation"]
                state[(violation["event_id"], violation["rule"])] = message["type"]
            return {key for key, kind in state.items() if kind == "ViolationOpened"} == open_now

        await service.wait_for(all_alerts_read, "the alerts")
    finally:
        await consumer.stop()
    ids = [message["id"] for message in messages]
    assert len(ids) == len(set(ids)), "an alert was sent twice"
    kinds = {message["type"] for message in messages}
    assert kinds == {"ViolationOpened", "ViolationRetracted"}  # late events retract verdicts here


async def test_events_posted_over_http_are_judged(ledger_service: LedgerService) -> None:
    service = ledger_service
    service.start_worker()
    events = [orjson.loads(line) for line in lines("consent-lifecycle")]
    response = await service.client.post("/v1/events", json=events)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == [event["id"] for event in events]
    await service.wait_counted(len(events))
    assert await service.open_violations() == expected("consent-lifecycle")["open"]

    bad = dict(events[0], time="yesterday")
    response = await service.client.post("/v1/events", json=[events[1], bad])
    assert response.status_code == 422
    assert response.json()["rejected"][0]["index"] == 1
    assert response.json()["rejected"][0]["reason"] == "invalid-envelope"


async def test_binary_mode_cloudevents_are_accepted_like_structured_ones(
    ledger_service: LedgerService,
) -> None:
    """CloudEvents binary mode: attributes in ce_* headers, data in the value."""
    service = ledger_service
    service.start_worker()
    events = [orjson.loads(line) for line in lines("consent-lifecycle")]
    producer = AIOKafkaProducer(
        bootstrap_servers=service.env["LEDGER_KAFKA_BOOTSTRAP"], enable_idempotence=False
    )
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(
                service.env["LEDGER_EVENTS_TOPIC"],
                orjson.dumps(event["data"]),
                key=event["subject"].encode(),
                headers=binary_headers(event),
            )
        broken = dict(events[0], id="binary-bad", time="not a time")
        await producer.send_and_wait(
            service.env["LEDGER_EVENTS_TOPIC"],
            orjson.dumps(broken["data"]),
            headers=binary_headers(broken),
        )
    finally:
        await producer.stop()
    stats = await service.wait_counted(len(events) + 1)
    assert (stats["accepted"], stats["rejected"]) == (len(events), 1)
    assert await service.open_violations() == expected("consent-lifecycle")["open"]
    assert await service.rejected() == ["invalid-envelope"]
