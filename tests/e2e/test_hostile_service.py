"""Hostile records through the running service, with one worker and then two in
one consumer group: the `hostile-input` scenario and our own cases at every
bound of CONTRACT §1-§2, published raw and keyed by subject (spread over the
topic's four partitions). Each extra case carries the reason written by hand
from the contract, and `check` must agree with it; the service must then give
exactly what `check` gives for the same records, record by record, stay up,
count every record once, and keep a ledger that `verify` accepts.

One stack for the module: phase one feeds the extra cases to a single worker;
phase two starts a second worker, waits until the two split the partitions, and
feeds the scenario and a fresh copy of the extra cases (new ids and subjects).
The scenario alone with one worker is test_service.py's."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from consent_ledger.core.intake import subject_named_in
from tests.e2e.conftest import CLI, SCENARIOS, LedgerService

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCENARIO = SCENARIOS / "hostile-input"
POLICY = SCENARIO / "policy.yaml"
LIMIT_BYTES = 262_144  # CONTRACT §2 too-large: over this many bytes
ACCEPTED = None  # the reason of a record the contract accepts


def event(tag: str, name: str, **attributes: Any) -> dict[str, Any]:
    """A disclosure the reference policy flags (consent-missing): accepted, judged."""
    return {
        "specversion": "1.0", "id": f"{tag}-{name}", "source": "urn:system:hostile",
        "type": "DataShared", "subject": f"{tag}-{name}", "time": "2026-05-01T09:00:00Z",
        "data": {
            "purpose": "marketing", "subject_role": "customer_contact",
            "controller": "visma-software-as",
            "recipient": {"kind": "group_company", "id": "visma-software-as"},
            "data_categories": ["contact_details"],
        },
    } | attributes  # fmt: skip


def text(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def exactly(size: int, body: dict[str, Any]) -> bytes:
    """``body`` padded in an extra data field to exactly ``size`` bytes."""
    bare = len(text(body | {"data": body["data"] | {"padding": ""}}))
    padded = text(body | {"data": body["data"] | {"padding": "p" * (size - bare)}})
    assert len(padded) == size
    return padded


def nested_data(tag: str, name: str, levels: int) -> bytes:
    """An event ``levels`` deep: the event is level 1, data 2, data.deep 3 and on."""
    deep = '{"n":' * (levels - 3) + "{}" + "}" * (levels - 3)
    return text(event(tag, name, data=event(tag, name)["data"] | {"deep": "D"})).replace(
        b'"D"', deep.encode()
    )


def long_string(prefix: str, characters: int) -> str:
    """``characters`` characters, most of them two bytes in UTF-8 (characters count)."""
    return prefix + "å" * (characters - len(prefix))


def with_data(tag: str, name: str, **data: Any) -> dict[str, Any]:
    base = event(tag, name)
    return base | {"data": base["data"] | data}


def subject_spelled(tag: str, name: str, spelling: bytes) -> bytes:
    """An event whose subject is ``spelling`` as it stands in the JSON text."""
    return text(event(tag, name, subject="SUBJECT")).replace(b'"SUBJECT"', b'"' + spelling + b'"')


def extra_cases(tag: str) -> list[tuple[str, bytes, str | None]]:
    """(case, record, reason by CONTRACT §1-§2) for our own hostile records.

    Every id and subject starts with ``tag``, so two copies are independent."""
    d = event(tag, "dup")
    return [
        # §1 limits: id, source and subject at most 256 characters (else
        # invalid-envelope), strings named in data at most 1,024 (else invalid-data)
        ("id of 256", text(event(tag, "id256", id=long_string(f"{tag}-id256-", 256))), ACCEPTED),
        ("id of 257", text(event(tag, "id257", id=long_string(f"{tag}-id257-", 257))),
         "invalid-envelope"),
        ("subject of 256", text(event(tag, "s256", subject=long_string(f"{tag}-s256-", 256))),
         ACCEPTED),
        ("subject of 257", text(event(tag, "s257", subject=long_string(f"{tag}-s257-", 257))),
         "invalid-envelope"),
        ("source of 256", text(event(tag, "src256", source=long_string("urn:", 256))), ACCEPTED),
        ("source of 257", text(event(tag, "src257", source=long_string("urn:", 257))),
         "invalid-envelope"),
        ("purpose of 1,024", text(with_data(tag, "p1024", purpose=long_string("p", 1_024))),
         ACCEPTED),  # judged: unknown-purpose
        ("purpose of 1,025", text(with_data(tag, "p1025", purpose=long_string("p", 1_025))),
         "invalid-data"),
        ("recipient id of 1,024", text(with_data(tag, "r1024", recipient={
            "kind": "group_company", "id": long_string("r", 1_024)})), ACCEPTED),
        ("recipient id of 1,025", text(with_data(tag, "r1025", recipient={
            "kind": "group_company", "id": long_string("r", 1_025)})), "invalid-data"),
        ("category of 1,024", text(with_data(tag, "c1024", data_categories=[
            "contact_details", long_string("c", 1_024)])), ACCEPTED),
        ("category of 1,025", text(with_data(tag, "c1025", data_categories=[
            "contact_details", long_string("c", 1_025)])), "invalid-data"),
        # §2 too-large: over 262,144 bytes
        ("262,144 bytes", exactly(LIMIT_BYTES, event(tag, "b262144")), ACCEPTED),
        ("262,145 bytes", exactly(LIMIT_BYTES + 1, event(tag, "b262145")), "too-large"),
        # §2 I-JSON: nesting at most 32 levels, the event being level 1
        ("32 levels", nested_data(tag, "deep32", 32), ACCEPTED),
        ("33 levels", nested_data(tag, "deep33", 33), "invalid-json"),
        # no U+0000, raw or escaped; no unpaired surrogate; a pair is a character
        ("a raw NUL", subject_spelled(tag, "nulraw", f"{tag}-nul\x00raw".encode()), "invalid-json"),
        ("an escaped NUL", subject_spelled(tag, "nulesc", f"{tag}-nul\\u0000esc".encode()),
         "invalid-json"),
        ("a lone high surrogate", subject_spelled(tag, "high", f"{tag}-\\ud800-high".encode()),
         "invalid-json"),
        ("a lone low surrogate", subject_spelled(tag, "low", f"{tag}-\\udc00-low".encode()),
         "invalid-json"),
        ("a surrogate pair", subject_spelled(tag, "pair", f"{tag}-\\ud83d\\ude00-pair".encode()),
         ACCEPTED),
        # no member name twice in one object, also when equal only once unescaped
        ("a name twice", text(event(tag, "twice")).replace(
            b'"subject":', f'"subject": "{tag}-other", "subject":'.encode()), "invalid-json"),
        ("a name twice once unescaped", text(event(tag, "twice-esc")).replace(
            b'"purpose":', b'"purpos\\u0065": "support", "purpose":'), "invalid-json"),
        # no NaN or Infinity; UTF-8 only
        ("NaN", text(with_data(tag, "nan", score="S")).replace(b'"S"', b"NaN"), "invalid-json"),
        ("Infinity", text(with_data(tag, "inf", score="S")).replace(b'"S"', b"-Infinity"),
         "invalid-json"),
        ("not UTF-8", subject_spelled(tag, "latin1", f"{tag}-bl".encode() + b"\xe5b\xe6r"),
         "invalid-json"),
        ("a stray continuation byte", text(with_data(tag, "cont", note="\x80")).replace(
            "\x80".encode(), b"\x80"), "invalid-json"),
        # not an object
        ("an array", b"[" + text(event(tag, "array")) + b"]", "invalid-json"),
        ("a string", json.dumps(text(event(tag, "string")).decode()).encode(), "invalid-json"),
        ("a number", b"262144", "invalid-json"),
        ("null", b"null", "invalid-json"),
        # an unknown type, a redelivery, an id reused for other content
        ("an unknown type", text(event(tag, "renewed", type="ConsentRenewed")), "unknown-type"),
        ("a disclosure", text(d), ACCEPTED),
        ("its redelivery", json.dumps(d, indent=1, sort_keys=True).replace("\n", "").encode(),
         "duplicate"),
        ("its id reused", text(d | {"time": "2026-05-02T09:00:00Z"}), "id-conflict"),
    ]  # fmt: skip


def check(path: Path) -> dict[str, Any]:
    """What `consent-ledger check --json` gives for ``path`` (the reference)."""
    result = subprocess.run(
        [str(CLI), "check", str(path), "--policy", str(POLICY), "--json"],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    document: dict[str, Any] = orjson.loads(result.stdout)
    return document


def reasons_by_line(document: dict[str, Any]) -> dict[int, str]:
    return {item["line"]: item["reason"] for item in document["rejected"]}


def test_check_gives_what_the_contract_says_for_every_extra_case(tmp_path: Path) -> None:
    """The expected reasons are the contract's, written by hand; `check` agrees
    (a duplicate is counted, not rejected)."""
    cases = extra_cases("c")
    path = tmp_path / "extra.jsonl"
    path.write_bytes(b"\n".join(record for _, record, _ in cases) + b"\n")
    document = check(path)
    got = reasons_by_line(document)
    want = {n: r for n, (_, _, r) in enumerate(cases, 1) if r not in (ACCEPTED, "duplicate")}
    assert {cases[n - 1][0]: r for n, r in got.items()} == {
        cases[n - 1][0]: r for n, r in want.items()
    }
    assert document["counts"]["duplicates"] == 1
    assert document["counts"]["accepted"] == sum(r is ACCEPTED for *_, r in cases)


async def publish(service: LedgerService, records: list[bytes]) -> dict[tuple[int, int], int]:
    """Send each record as it is, keyed by the subject it names (as `publish --raw`
    does; unkeyed records go to any partition); where each went, by list index."""
    producer = AIOKafkaProducer(
        bootstrap_servers=service.env["LEDGER_KAFKA_BOOTSTRAP"], enable_idempotence=False
    )
    await producer.start()
    placed: dict[tuple[int, int], int] = {}
    try:
        for index, record in enumerate(records):
            subject = subject_named_in(record)
            sent = await producer.send_and_wait(
                service.env["LEDGER_EVENTS_TOPIC"],
                record,
                key=subject.encode() if subject else None,
            )
            placed[(sent.partition, sent.offset)] = index
    finally:
        await producer.stop()
    return placed


async def assert_as_check_gives(
    service: LedgerService, records: list[bytes], placed: dict[tuple[int, int], int],
    tmp_path: Path,
) -> None:  # fmt: skip
    """Counts, each rejected record's reason, the accepted ids and the open
    violations are exactly what `check` gives for ``records`` in this order."""
    path = tmp_path / "published.jsonl"
    path.write_bytes(b"\n".join(records) + b"\n")
    reference = check(path)
    counts = reference["counts"]
    stats = await service.wait_counted(len(records))
    assert (stats["accepted"], stats["duplicates"], stats["rejected"]) == (
        counts["accepted"], counts["duplicates"], counts["rejected"],
    )  # fmt: skip
    rejected = {
        placed[(item["partition"], item["offset"])] + 1: item["reason"]
        for item in await service.pages("/v1/rejected")
    }
    assert rejected == reasons_by_line(reference)
    assert await service.open_violations() == {
        (v["event_id"], v["rule"]) for v in reference["violations"]
    }
    valid = set(range(1, len(records) + 1)) - set(reasons_by_line(reference))
    connection = await asyncpg.connect(service.env["LEDGER_DATABASE_URL"])
    try:
        stored = await connection.fetch("SELECT event_id FROM ledger_entries")
    finally:
        await connection.close()
    assert sorted(row["event_id"] for row in stored) == sorted(
        {orjson.loads(records[line - 1])["id"] for line in valid}
    )


def assignment(log: str) -> list[int] | None:
    """The partitions a worker's log says it holds now."""
    lines = re.findall(r'.*"partitions assigned".*', log)
    return json.loads(lines[-1])["partitions"] if lines else None


async def test_hostile_records_give_what_check_gives_with_one_worker_then_two(
    ledger_service: LedgerService, tmp_path: Path
) -> None:
    service = ledger_service
    service.env["LEDGER_POLICY"] = str(POLICY)
    first = service.start_worker()
    phase_one = [record for _, record, _ in extra_cases("w1")]
    placed = await publish(service, phase_one)
    await assert_as_check_gives(service, phase_one, placed, tmp_path)

    second = service.start_worker()

    async def partitions_split() -> bool:
        held = [assignment(service.worker_log(number)) or [] for number in (1, 2)]
        return all(held) and sorted(held[0] + held[1]) == [0, 1, 2, 3]

    await service.wait_for(partitions_split, "the two workers to split the partitions")
    scenario = SCENARIO.joinpath("events.jsonl").read_bytes().splitlines()
    phase_two = [line for line in scenario if line.strip()] + [
        record for _, record, _ in extra_cases("w2")
    ]
    placed |= {
        where: len(phase_one) + index
        for where, index in (await publish(service, phase_two)).items()
    }
    await assert_as_check_gives(service, phase_one + phase_two, placed, tmp_path)

    # an empty record is no JSON object: invalid-json (a file cannot hold one)
    empty = await publish(service, [b""])
    published = len(phase_one) + len(phase_two) + 1
    await service.wait_counted(published)
    (where,) = empty
    (item,) = [
        item for item in await service.pages("/v1/rejected")
        if (item["partition"], item["offset"]) == where
    ]  # fmt: skip
    assert item["reason"] == "invalid-json"

    # No restart: the same two processes ran throughout (a supervisor-less stack,
    # so an exit would show here and fail every wait above).
    assert first.poll() is None and second.poll() is None, service.logs()
    for number in (1, 2):
        assert "batch committed" in service.worker_log(number)
    stats = await service.stats()  # counted once: nothing more after the last wait
    assert stats["accepted"] + stats["duplicates"] + stats["rejected"] == published
    assert stats["rejected"] == len(await service.pages("/v1/rejected"))
    verified = await asyncio.to_thread(
        subprocess.run, [str(CLI), "verify"], env=service.env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
