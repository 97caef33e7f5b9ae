"""The auditor's endpoints against a ledger the real worker pipeline wrote.

Scenarios from ``tests/data/scenarios`` go through :class:`BatchPipeline` over
two partitions, checkpoints are signed with ``issue_checkpoint`` in between,
and the public key, the checkpoints and the inclusion and consistency proofs
the API serves are then checked by a verifier written here from the documented
formats alone (RFC 9162 §2.1.3.2 and §2.1.4.2, the entry encoding of
``integrity/entry.py``, the signed bytes of ``integrity/checkpoints.py``), not with
the project's own Merkle, proof or entry code, and by ``consent-ledger
verify-proof`` on saved answers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consent_ledger.api.app import create_app
from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_policy
from consent_ledger.integrity.checkpoints import (
    generate_signing_key,
    public_key_pem,
    save_signing_key,
)
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings, SettingsError
from consent_ledger.store.checkpoint_issuer import issue_checkpoint
from consent_ledger.worker.pipeline import BatchPipeline
from tests.conftest import issue_token, signed_in_client

pytestmark = pytest.mark.integration

SCENARIOS = Path(__file__).resolve().parents[1] / "data" / "scenarios"
POLICY = load_policy(SCENARIOS / "policy.yaml")
MASTER_KEY = os.urandom(32)
MASTER_KEY_TEXT = base64.b64encode(MASTER_KEY).decode()
LOG_ID = "test-log"
PARTITIONS = 2
CHECKPOINT_HEADER = "Ledger-Checkpoint-Id"
CLI = Path(sys.executable).parent / "consent-ledger"


# -- an independent verifier, from the documented formats only ---------------------

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EMPTY_ROOT = hashlib.sha256(b"").digest()


def b64(text: str) -> bytes:
    data = base64.b64decode(text, validate=True)
    assert len(data) == 32 or len(data) == 64
    return data


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def encoded_entry(entry: dict[str, Any]) -> bytes:
    """``integrity/entry.py``, format version 1: big-endian, no padding, 58 + n bytes."""
    assert entry["version"] == 1
    event_id = entry["event_id"].encode("utf-8")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", entry["recorded_at"])
    recorded = datetime.strptime(entry["recorded_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    micros = (recorded.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
    digest = bytes.fromhex(entry["payload_sha256"])
    assert len(digest) == 32
    encoded = (
        b"CLE\x01"
        + len(event_id).to_bytes(2, "big")
        + event_id
        + entry["partition"].to_bytes(4, "big")
        + entry["offset"].to_bytes(8, "big")
        + micros.to_bytes(8, "big", signed=True)
        + digest
    )
    assert len(encoded) == 58 + len(event_id)
    return bytes(encoded)


def leaf_of(entry: dict[str, Any]) -> bytes:
    return hashlib.sha256(b"\x00" + encoded_entry(entry)).digest()


def tree_hash(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH over leaf hashes."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)  # largest power of 2 below n
    return node(tree_hash(leaves[:split]), tree_hash(leaves[split:]))


def verify_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: list[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, plus the trivial cases the proof format leaves empty."""
    if first > second:
        return False
    if first == second:
        return not path and first_root == second_root
    if first == 0:
        return not path and first_root == EMPTY_ROOT
    if not path:
        return False
    if first & (first - 1) == 0:  # an exact power of 2
        path = [first_root, *path]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_root and sr == second_root and sn == 0


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def checked_checkpoint(
    checkpoint: dict[str, Any], public_key: Ed25519PublicKey
) -> dict[int, tuple[int, bytes]]:
    """Check the signature over the documented signed bytes; the signed (size, root)
    per partition. Raises InvalidSignature or AssertionError when it does not hold."""
    assert set(checkpoint) == {
        "format", "log_id", "issued_at", "tree_heads", "key_id", "signature",
    }  # fmt: skip
    assert checkpoint["format"] == "consent-ledger/checkpoint/v1"
    assert checkpoint["key_id"] == hashlib.sha256(raw_public_key(public_key)).digest()[:16].hex()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", checkpoint["issued_at"])
    heads = checkpoint["tree_heads"]
    partitions = [head["partition"] for head in heads]
    assert partitions == sorted(set(partitions))
    signed = (
        "consent-ledger checkpoint v1\n"
        f"{checkpoint['log_id']}\n"
        f"{checkpoint['issued_at']}\n"
        + "".join(f"{h['partition']} {h['size']} {h['root']}\n" for h in heads)
    ).encode("utf-8")
    public_key.verify(b64(checkpoint["signature"]), signed)
    return {head["partition"]: (head["size"], b64(head["root"])) for head in heads}


def inclusion_holds(proof: dict[str, Any], public_key: Ed25519PublicKey) -> bool:
    assert proof["format"] == "consent-ledger/inclusion-proof/v1"
    try:
        heads = checked_checkpoint(proof["checkpoint"], public_key)
    except InvalidSignature:
        return False
    partition, index, size = proof["partition"], proof["leaf_index"], proof["tree_size"]
    if proof["entry"]["partition"] != partition or heads.get(partition, (None,))[0] != size:
        return False
    leaf = leaf_of(proof["entry"])
    if leaf != b64(proof["leaf_hash"]):
        return False
    path = [b64(item) for item in proof["audit_path"]]
    return verify_inclusion(leaf, index, size, path, heads[partition][1])


def consistency_holds(proof: dict[str, Any], public_key: Ed25519PublicKey) -> bool:
    assert proof["format"] == "consent-ledger/consistency-proof/v1"
    try:
        old = checked_checkpoint(proof["old_checkpoint"], public_key)
        new = checked_checkpoint(proof["new_checkpoint"], public_key)
    except InvalidSignature:
        return False
    if proof["old_checkpoint"]["log_id"] != proof["new_checkpoint"]["log_id"]:
        return False
    items = {item["partition"]: item for item in proof["partitions"]}
    if sorted(items) != sorted(old) or len(items) != len(proof["partitions"]):
        return False
    for partition, (old_size, old_root) in old.items():
        if partition not in new:
            return False
        new_size, new_root = new[partition]
        item = items[partition]
        if (item["old_size"], item["new_size"]) != (old_size, new_size):
            return False
        path = [b64(h) for h in item["path"]]
        if not verify_consistency(old_size, new_size, old_root, new_root, path):
            return False
    return True


def flip_path_byte(path: list[str], position: int = 0) -> list[str]:
    """``path`` with one bit of one byte of its first hash flipped."""
    first = bytearray(b64(path[0]))
    first[position] ^= 0x01
    return [base64.b64encode(bytes(first)).decode(), *path[1:]]


# -- the ledger, written by the real pipeline ----------------------------------------


@dataclass
class Ledger:
    pool: asyncpg.Pool
    settings: Settings
    public_key: Ed25519PublicKey
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # as issued, oldest first
    fed: dict[str, list[str]] = field(default_factory=dict)  # scenario -> ids fed

    async def ids(self) -> list[int]:
        async with self.pool.acquire() as connection:
            return [
                row[0] for row in await connection.fetch("SELECT id FROM checkpoints ORDER BY id")
            ]

    async def entries(self) -> dict[str, asyncpg.Record]:
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                "SELECT event_id, kafka_partition, kafka_offset, recorded_us, payload,"
                " payload_sha256, leaf_index, leaf_hash FROM ledger_entries"
                " ORDER BY kafka_partition, leaf_index"
            )
        return {row["event_id"]: row for row in rows}


class Feeder:
    """Scenario lines as records of a topic with two partitions, through the worker's
    pipeline. A subject's records share a partition, as the producer keys them; the
    (toy) hash puts anna and cy in 0 and bo in 1, so every checkpoint covers both."""

    def __init__(self, pipeline: BatchPipeline) -> None:
        self.pipeline = pipeline
        self.next_offset = dict.fromkeys(range(PARTITIONS), 0)

    async def feed(self, scenario: str) -> list[str]:
        records, ids = [], []
        for line in (SCENARIOS / scenario / "events.jsonl").read_bytes().splitlines():
            if not line.strip():
                continue
            body = orjson.loads(line)
            ids.append(body["id"])
            partition = sum(body["subject"].encode()) % PARTITIONS
            records.append(Record(partition, self.next_offset[partition], line))
            self.next_offset[partition] += 1
        await self.pipeline.process(records)
        return ids


def base_settings(unique_name: Callable[[str], str], **changes: Any) -> Settings:
    return Settings(
        master_key=MASTER_KEY_TEXT,
        events_topic=unique_name("events"),
        log_id=LOG_ID,
        kafka_idempotence=False,
        **changes,
    )


@pytest.fixture
async def ledger(pool: asyncpg.Pool, tmp_path: Path, unique_name: Callable[[str], str]) -> Ledger:
    """consent-lifecycle, checkpoint 1, late-arrivals and erasure, checkpoint 2,
    then jobseekers-and-visitors, which no checkpoint covers."""
    signing_key = generate_signing_key()
    key_file = tmp_path / "signing.pem"
    save_signing_key(signing_key, key_file)
    settings = base_settings(unique_name, signing_key_file=key_file)
    feeder = Feeder(BatchPipeline(pool, KeyRing(MASTER_KEY), POLICY, settings))
    result = Ledger(pool, settings, signing_key.public_key())
    for scenario in ("consent-lifecycle",):
        result.fed[scenario] = await feeder.feed(scenario)
    first = await issue_checkpoint(pool, signing_key, LOG_ID, force=True)
    for scenario in ("late-arrivals", "erasure"):
        result.fed[scenario] = await feeder.feed(scenario)
    second = await issue_checkpoint(pool, signing_key, LOG_ID, force=True)
    result.fed["jobseekers-and-visitors"] = await feeder.feed("jobseekers-and-visitors")
    assert first is not None and second is not None
    result.checkpoints = [first.to_json_dict(), second.to_json_dict()]
    return result


@asynccontextmanager
async def api(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app that signs in as an auditor (proofs) and a privacy
    officer (what an erasure hides)."""
    app = create_app(settings, pool=pool, policy=POLICY)
    token = await issue_token(pool, "auditor", "privacy-officer")
    async with signed_in_client(app, token) as client:
        yield client


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


def load_pem(pem: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    assert isinstance(key, Ed25519PublicKey)
    return key


async def verify_proof_cli(proof: dict[str, Any], folder: Path, public_key: str) -> int:
    """Exit status of ``consent-ledger verify-proof`` on ``proof`` saved to a file."""
    proof_file, key_file = folder / "proof.json", folder / "public.pem"
    proof_file.write_bytes(orjson.dumps(proof))
    key_file.write_text(public_key)
    process = await asyncio.create_subprocess_exec(
        str(CLI), "verify-proof", str(proof_file), "--public-key", str(key_file),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await process.communicate()
    assert process.returncode is not None
    return process.returncode


# -- the ledger the pipeline wrote is what the test thinks it is ------------------------


async def test_the_scenario_ledger_spans_two_partitions_and_two_checkpoints(
    ledger: Ledger,
) -> None:
    """Recompute every tree from the stored entries here and compare with what was signed."""
    entries = await ledger.entries()
    by_partition: dict[int, list[asyncpg.Record]] = {}
    for row in entries.values():
        by_partition.setdefault(row["kafka_partition"], []).append(row)
    assert sorted(by_partition) == [0, 1]
    for partition, rows in by_partition.items():
        assert [row["leaf_index"] for row in rows] == list(range(len(rows)))
        leaves = []
        for row in rows:
            assert hashlib.sha256(row["payload"]).digest() == row["payload_sha256"]
            entry = {
                "version": 1,
                "event_id": row["event_id"],
                "partition": partition,
                "offset": row["kafka_offset"],
                "recorded_at": (EPOCH + timedelta(microseconds=row["recorded_us"])).strftime(
                    "%Y-%m-%dT%H:%M:%S.%fZ"
                ),
                "payload_sha256": row["payload_sha256"].hex(),
            }
            assert leaf_of(entry) == row["leaf_hash"]
            leaves.append(leaf_of(entry))
        for checkpoint in ledger.checkpoints:
            heads = checked_checkpoint(checkpoint, ledger.public_key)
            size, root = heads[partition]
            assert tree_hash(leaves[:size]) == root
    first, second = (checked_checkpoint(cp, ledger.public_key) for cp in ledger.checkpoints)
    assert all(0 < first[p][0] < second[p][0] for p in (0, 1))  # both grew from non-empty
    assert set(ledger.fed["consent-lifecycle"]) <= set(entries)
    assert "jv-1" in entries


# -- public key ---------------------------------------------------------------------


async def test_public_key_is_the_public_half_of_the_signing_key(ledger: Ledger) -> None:
    async with api(ledger.settings, ledger.pool) as client:
        response = await client.get("/v1/ledger/public-key")
    assert response.status_code == 200, response.text
    body = response.json()
    # The shape before rotation, kept, and every key with its period (CONTRACT §7).
    assert set(body) == {"key_id", "algorithm", "public_key_pem", "log_id", "keys"}
    [only] = body["keys"]
    assert only["current"] and only["key_id"] == body["key_id"]
    assert only["public_key_pem"] == body["public_key_pem"]
    assert body["algorithm"] == "Ed25519"
    assert body["log_id"] == LOG_ID
    served = load_pem(body["public_key_pem"])
    assert raw_public_key(served) == raw_public_key(ledger.public_key)
    assert body["key_id"] == hashlib.sha256(raw_public_key(served)).digest()[:16].hex()
    assert body["key_id"] == ledger.checkpoints[0]["key_id"]
    assert "PRIVATE" not in response.text


async def test_the_api_can_serve_a_public_key_file_without_the_private_key(
    ledger: Ledger, tmp_path: Path
) -> None:
    public_file = tmp_path / "public.pem"
    public_file.write_text(public_key_pem(ledger.public_key))
    settings = replace(ledger.settings, signing_key_file=None, public_key_file=public_file)
    async with api(settings, ledger.pool) as client:
        response = await client.get("/v1/ledger/public-key")
    assert response.status_code == 200, response.text
    assert raw_public_key(load_pem(response.json()["public_key_pem"])) == raw_public_key(
        ledger.public_key
    )


async def test_without_a_signing_key_the_public_key_is_404(
    pool: asyncpg.Pool, unique_name: Callable[[str], str]
) -> None:
    async with api(base_settings(unique_name), pool) as client:
        response = await client.get("/v1/ledger/public-key")
        listing = await client.get("/v1/ledger/checkpoints")
    body = assert_error(response, 404, "checkpoints-not-signed")
    assert "not signed here" in body["error"]["message"]
    assert "LEDGER_SIGNING_KEY_FILE" in body["error"]["message"]
    assert listing.status_code == 200 and listing.json() == {"items": [], "next_cursor": None}


async def test_an_unreadable_signing_key_stops_the_app(
    tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    not_a_key = tmp_path / "signing.pem"
    not_a_key.write_text("not a key\n")
    for path in (not_a_key, tmp_path / "missing.pem"):
        with pytest.raises(SettingsError, match="LEDGER_SIGNING_KEY_FILE"):
            create_app(base_settings(unique_name, signing_key_file=path), policy=POLICY)


# -- checkpoints ----------------------------------------------------------------------


async def test_checkpoints_are_the_signed_documents_newest_first(ledger: Ledger) -> None:
    ids = await ledger.ids()
    async with api(ledger.settings, ledger.pool) as client:
        whole = (await client.get("/v1/ledger/checkpoints")).json()
        first_page = (await client.get("/v1/ledger/checkpoints", params={"limit": 1})).json()
        cursor = first_page["next_cursor"]
        second_page = (
            await client.get("/v1/ledger/checkpoints", params={"limit": 1, "cursor": cursor})
        ).json()
        latest = await client.get("/v1/ledger/checkpoints/latest")
        by_id = [(await client.get(f"/v1/ledger/checkpoints/{number}")).json() for number in ids]
    expected: list[dict[str, Any]] = [
        {"id": number, "checkpoint": document}
        for number, document in zip(ids, ledger.checkpoints, strict=True)
    ]
    assert whole == {"items": expected[::-1], "next_cursor": None}
    assert first_page["items"] == [expected[1]] and cursor
    assert second_page == {"items": [expected[0]], "next_cursor": None}
    assert latest.status_code == 200 and latest.json() == expected[1]
    assert by_id == expected
    for item in expected:
        checked_checkpoint(item["checkpoint"], ledger.public_key)
        assert item["checkpoint"]["log_id"] == LOG_ID


async def test_checkpoint_errors(ledger: Ledger, pool: asyncpg.Pool) -> None:
    async with api(ledger.settings, ledger.pool) as client:
        assert_error(await client.get("/v1/ledger/checkpoints/99"), 404, "unknown-checkpoint")
        for bad in ("abc", "0", "-1", "1.5", str(2**63)):
            body = assert_error(
                await client.get(f"/v1/ledger/checkpoints/{bad}"), 400, "invalid-parameter"
            )
            assert body["error"]["parameter"] == "checkpoint_id"
        body = assert_error(
            await client.get("/v1/ledger/checkpoints", params={"cursor": "nonsense"}), 400
        )
        assert body["error"]["parameter"] == "cursor"
        assert_error(await client.get("/v1/ledger/checkpoints", params={"limit": 0}), 400)


async def test_without_checkpoints_latest_is_404_and_proofs_say_why(
    pool: asyncpg.Pool, unique_name: Callable[[str], str]
) -> None:
    settings = base_settings(unique_name)
    await Feeder(BatchPipeline(pool, KeyRing(MASTER_KEY), POLICY, settings)).feed(
        "consent-lifecycle"
    )
    async with api(settings, pool) as client:
        latest = await client.get("/v1/ledger/checkpoints/latest")
        proof = await client.get("/v1/ledger/proofs/inclusion/cl-1")
    assert (
        "LEDGER_CHECKPOINT_INTERVAL_S"
        in assert_error(latest, 404, "no-checkpoint")["error"]["message"]
    )
    message = assert_error(proof, 404, "not-yet-checkpointed")["error"]["message"]
    assert "not covered by a checkpoint yet" in message
    assert "LEDGER_CHECKPOINT_INTERVAL_S" in message


# -- inclusion proofs ---------------------------------------------------------------------


async def test_inclusion_proofs_verify_independently(ledger: Ledger) -> None:
    ids = await ledger.ids()
    entries = await ledger.entries()
    old_events = [e for e in ledger.fed["consent-lifecycle"] if e in entries]
    new_events = [e for e in ledger.fed["late-arrivals"] + ledger.fed["erasure"] if e in entries]
    chosen = old_events[:3] + old_events[-2:] + new_events[:2] + new_events[-2:]
    assert {entries[e]["kafka_partition"] for e in chosen} == {0, 1}
    async with api(ledger.settings, ledger.pool) as client:
        public_key = load_pem((await client.get("/v1/ledger/public-key")).json()["public_key_pem"])
        answers: list[tuple[str, int | None, httpx.Response]] = [
            (event_id, None, await client.get(f"/v1/ledger/proofs/inclusion/{event_id}"))
            for event_id in chosen
        ]
        answers += [
            (
                event_id,
                ids[0],
                await client.get(
                    f"/v1/ledger/proofs/inclusion/{event_id}", params={"checkpoint": ids[0]}
                ),
            )
            for event_id in old_events[:2] + old_events[-1:]
        ]
    for event_id, asked, response in answers:
        assert response.status_code == 200, response.text
        proof = response.json()
        number = asked if asked is not None else ids[-1]
        assert response.headers[CHECKPOINT_HEADER] == str(number)
        assert proof["checkpoint"] == ledger.checkpoints[ids.index(number)]
        row = entries[event_id]
        assert proof["entry"]["event_id"] == event_id
        assert proof["partition"] == row["kafka_partition"]
        assert proof["leaf_index"] == row["leaf_index"]
        assert b64(proof["leaf_hash"]) == row["leaf_hash"]
        assert inclusion_holds(proof, public_key), event_id
        # The independent verifier is not vacuous: any change breaks it.
        if proof["audit_path"]:
            altered = {**proof, "audit_path": flip_path_byte(proof["audit_path"])}
            assert not inclusion_holds(altered, public_key)
        moved = {**proof, "entry": {**proof["entry"], "offset": proof["entry"]["offset"] + 1}}
        assert not inclusion_holds(moved, public_key)


async def test_erasure_does_not_hide_proofs(ledger: Ledger) -> None:
    """ola asked to be forgotten: her events are unreadable, and still provable."""
    entries = await ledger.entries()
    async with api(ledger.settings, ledger.pool) as client:
        erased = await client.get("/v1/subjects/ola/events")
        proof = await client.get("/v1/ledger/proofs/inclusion/er-2")
    assert_error(erased, 410, "subject-erased")
    assert proof.status_code == 200, proof.text
    assert "er-2" in entries and inclusion_holds(proof.json(), ledger.public_key)
    assert "ola" not in proof.text  # no personal data in a proof


async def test_saved_proofs_pass_the_cli_verifier_and_one_flipped_byte_fails_it(
    ledger: Ledger, tmp_path: Path
) -> None:
    async with api(ledger.settings, ledger.pool) as client:
        key_document = (await client.get("/v1/ledger/public-key")).text
        pem = json.loads(key_document)["public_key_pem"]
        ids = await ledger.ids()
        inclusion = (await client.get("/v1/ledger/proofs/inclusion/cl-1")).json()
        consistency = (
            await client.get("/v1/ledger/proofs/consistency", params={"from": ids[0], "to": ids[1]})
        ).json()
    assert inclusion["audit_path"]
    assert await verify_proof_cli(inclusion, tmp_path, pem) == 0
    flipped = {**inclusion, "audit_path": flip_path_byte(inclusion["audit_path"], 7)}
    assert await verify_proof_cli(flipped, tmp_path, pem) == 1
    # The key as the API answered it, saved as it came, serves as well as its PEM.
    assert await verify_proof_cli(inclusion, tmp_path, key_document) == 0
    assert await verify_proof_cli(flipped, tmp_path, key_document) == 1

    assert await verify_proof_cli(consistency, tmp_path, pem) == 0
    items = consistency["partitions"]
    broken = {**items[0], "path": flip_path_byte(items[0]["path"], 31)}
    assert (
        await verify_proof_cli({**consistency, "partitions": [broken, *items[1:]]}, tmp_path, pem)
        == 1
    )


async def test_inclusion_errors(ledger: Ledger) -> None:
    ids = await ledger.ids()
    async with api(ledger.settings, ledger.pool) as client:
        unknown = await client.get("/v1/ledger/proofs/inclusion/no-such-event")
        too_new = await client.get("/v1/ledger/proofs/inclusion/jv-1")
        after_first = await client.get(
            "/v1/ledger/proofs/inclusion/la-1", params={"checkpoint": ids[0]}
        )
        unknown_checkpoint = await client.get(
            "/v1/ledger/proofs/inclusion/cl-1", params={"checkpoint": 99}
        )
        bad = [
            await client.get("/v1/ledger/proofs/inclusion/cl-1", params={"checkpoint": value})
            for value in ("abc", "0", "-3", "", str(2**63))
        ]
    assert "no-such-event" in assert_error(unknown, 404, "unknown-event")["error"]["message"]
    body = assert_error(too_new, 404, "not-yet-checkpointed")
    message = body["error"]["message"]
    assert "not covered by a checkpoint yet" in message
    assert "LEDGER_CHECKPOINT_INTERVAL_S" in message
    assert f"checkpoint {ids[1]}" in message
    assert body["error"]["checkpoint_id"] == ids[1]
    assert_error(after_first, 404, "not-in-checkpoint")
    assert_error(unknown_checkpoint, 404, "unknown-checkpoint")
    for response in bad:
        body = assert_error(response, 400, "invalid-parameter")
        assert body["error"]["parameter"] == "checkpoint"


async def test_an_error_saved_as_a_proof_is_a_usage_error_of_the_cli(
    ledger: Ledger, tmp_path: Path
) -> None:
    """A user who saved the API's answer without looking is told it is not a proof,
    with the API's message, rather than that a proof failed."""
    async with api(ledger.settings, ledger.pool) as client:
        key = (await client.get("/v1/ledger/public-key")).text
        error = (await client.get("/v1/ledger/proofs/inclusion/jv-1")).json()
    proof_file, key_file = tmp_path / "proof.json", tmp_path / "key.json"
    proof_file.write_bytes(orjson.dumps(error))
    key_file.write_text(key)
    result = await asyncio.to_thread(
        subprocess.run, [str(CLI), "verify-proof", str(proof_file), "--public-key", str(key_file)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "is an error the API answered, not a proof" in result.stderr
    assert "not covered by a checkpoint yet" in result.stderr


# -- consistency proofs ----------------------------------------------------------------------


async def test_consistency_proof_verifies_independently(ledger: Ledger) -> None:
    ids = await ledger.ids()
    async with api(ledger.settings, ledger.pool) as client:
        proof_response = await client.get(
            "/v1/ledger/proofs/consistency", params={"from": ids[0], "to": ids[1]}
        )
        same = await client.get(
            "/v1/ledger/proofs/consistency", params={"from": ids[1], "to": ids[1]}
        )
    assert proof_response.status_code == 200, proof_response.text
    proof = proof_response.json()
    assert proof["old_checkpoint"] == ledger.checkpoints[0]
    assert proof["new_checkpoint"] == ledger.checkpoints[1]
    assert [item["partition"] for item in proof["partitions"]] == [0, 1]
    assert all(item["path"] for item in proof["partitions"])
    assert consistency_holds(proof, ledger.public_key)
    for index in range(len(proof["partitions"])):
        items = list(proof["partitions"])
        items[index] = {**items[index], "path": flip_path_byte(items[index]["path"])}
        assert not consistency_holds({**proof, "partitions": items}, ledger.public_key)
    assert same.status_code == 200, same.text
    assert all(not item["path"] for item in same.json()["partitions"])
    assert consistency_holds(same.json(), ledger.public_key)


async def test_consistency_errors(ledger: Ledger) -> None:
    ids = await ledger.ids()
    url = "/v1/ledger/proofs/consistency"
    async with api(ledger.settings, ledger.pool) as client:
        backwards = await client.get(url, params={"from": ids[1], "to": ids[0]})
        missing_to = await client.get(url, params={"from": ids[0]})
        missing_both = await client.get(url)
        invalid = await client.get(url, params={"from": "one", "to": ids[1]})
        zero = await client.get(url, params={"from": 0, "to": ids[1]})
        unknown = await client.get(url, params={"from": ids[0], "to": 99})
    body = assert_error(backwards, 400, "invalid-parameter")
    assert body["error"]["parameter"] == "from"
    assert assert_error(missing_to, 400, "invalid-parameter")["error"]["parameter"] == "to"
    assert assert_error(missing_both, 400, "invalid-parameter")["error"]["parameter"] == "from"
    assert assert_error(invalid, 400, "invalid-parameter")["error"]["parameter"] == "from"
    assert assert_error(zero, 400, "invalid-parameter")["error"]["parameter"] == "from"
    assert "99" in assert_error(unknown, 404, "unknown-checkpoint")["error"]["message"]


async def test_a_rewritten_log_gets_no_proof_but_a_500_naming_the_check(ledger: Ledger) -> None:
    """A stored leaf that no longer gives the signed roots: the API refuses to
    build proofs from it rather than serve one that cannot verify."""
    ids = await ledger.ids()
    async with ledger.pool.acquire() as connection, connection.transaction():
        await connection.execute("SET LOCAL session_replication_role = replica")  # past the trigger
        await connection.execute(
            "UPDATE ledger_entries SET leaf_hash = $1 WHERE event_id = 'cl-1'", bytes(32)
        )
    async with api(ledger.settings, ledger.pool) as client:
        inclusion = await client.get("/v1/ledger/proofs/inclusion/cl-1")
        consistency = await client.get(
            "/v1/ledger/proofs/consistency", params={"from": ids[0], "to": ids[1]}
        )
    for response in (inclusion, consistency):
        message = assert_error(response, 500, "ledger-inconsistent")["error"]["message"]
        assert "consent-ledger verify" in message


# -- documentation ------------------------------------------------------------------------------


async def test_the_auditor_endpoints_are_documented(ledger: Ledger) -> None:
    async with api(ledger.settings, ledger.pool) as client:
        schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    expected = {
        "/v1/ledger/public-key": "PublicKey",
        "/v1/ledger/checkpoints": "CheckpointPage",
        "/v1/ledger/checkpoints/latest": "StoredCheckpoint",
        "/v1/ledger/checkpoints/{checkpoint_id}": "StoredCheckpoint",
        "/v1/ledger/proofs/inclusion/{event_id}": "InclusionProof",
        "/v1/ledger/proofs/consistency": "ConsistencyProof",
    }
    for path, model in expected.items():
        responses = paths[path]["get"]["responses"]
        assert responses["200"]["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{model}"
        }
        if path != "/v1/ledger/checkpoints":  # a listing is never 404
            assert responses["404"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorResponse"
            }
        assert "422" not in responses
    inclusion = paths["/v1/ledger/proofs/inclusion/{event_id}"]["get"]
    assert CHECKPOINT_HEADER in inclusion["responses"]["200"]["headers"]
    consistency = paths["/v1/ledger/proofs/consistency"]["get"]
    assert {p["name"] for p in consistency["parameters"]} == {"from", "to"}
    assert all(p["required"] for p in consistency["parameters"])
    components = schema["components"]["schemas"]
    assert set(components["InclusionProof"]["required"]) == {
        "format", "entry", "partition", "leaf_index", "tree_size", "leaf_hash", "audit_path",
        "checkpoint",
    }  # fmt: skip
