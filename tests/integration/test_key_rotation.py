"""Key rotation on a real PostgreSQL, through the worker's own pipeline
(CONTRACT §7): the master key re-wrapped in interrupted and resumed batches
while a worker with the old key file goes on writing, no subject key lost, the
old key retired and refused afterwards; checkpoints signed by two signing keys,
each checked with its own key, and one checked without its key named."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.integrity.checkpoints import generate_signing_key, key_id
from consent_ledger.integrity.keyring import (
    KeyRing,
    MasterKeyUnavailable,
    load_keyring,
    master_key_id,
    wrapped_by,
)
from consent_ledger.integrity.proofs import Failure, verify_inclusion_document
from consent_ledger.integrity.shredding import KeyWrapper, open_sealed
from consent_ledger.settings import Settings
from consent_ledger.store.audit_reads import inclusion_proof_for, verify_ledger
from consent_ledger.store.checkpoint_issuer import issue_checkpoint
from consent_ledger.store.key_rotation import (
    RETIRED_MASTER_KEY_SQLSTATE,
    MasterRotation,
    keys_not_wrapped_by,
    rotate_master_key,
)
from consent_ledger.store.migrate import migrate
from consent_ledger.worker.isolation import is_transient
from consent_ledger.worker.pipeline import BatchPipeline

pytestmark = pytest.mark.integration

OLD, NEW = os.urandom(32), os.urandom(32)


def consent(number: int, subject: str) -> bytes:
    return orjson.dumps({
        "specversion": "1.0", "id": f"ev-{number}", "source": "urn:system:crm",
        "type": "ConsentGiven", "subject": subject, "time": "2026-03-01T08:00:00Z",
        "data": {"purpose": "marketing", "subject_role": "customer_contact",
                 "controller": "visma-software-as", "note": f"secret-{number}"},
    })  # fmt: skip


class Offsets:
    def __init__(self) -> None:
        self.next = 0

    def records(self, subjects: list[str]) -> list[Record]:
        made = []
        for subject in subjects:
            made.append(Record(0, self.next, consent(self.next, subject)))
            self.next += 1
        return made


def key_file(path: Path, *keys: bytes) -> Path:
    path.write_text("".join(base64.b64encode(key).decode() + "\n" for key in keys))
    return path


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    async with pool.acquire() as connection:
        await migrate(connection)
    try:
        yield pool
    finally:
        await pool.close()


def pipeline(pool: asyncpg.Pool, keyring: KeyRing) -> BatchPipeline:
    return BatchPipeline(pool, keyring, load_reference_policy(), Settings())


async def readable_payloads(pool: asyncpg.Pool, keyring: KeyRing) -> int:
    """Open every stored payload with the subject's key as ``keyring`` unwraps it
    (raises if any cannot be opened); return how many."""
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT e.event_id, e.subject, e.payload, k.wrapped_key FROM ledger_entries e "
            "JOIN subject_keys k USING (subject)"
        )
    for row in rows:
        key = keyring.unwrap(row["subject"], row["wrapped_key"])
        plain = orjson.loads(open_sealed(key, row["subject"], row["event_id"], row["payload"]))
        assert plain["data"]["note"] == f"secret-{row['event_id'].removeprefix('ev-')}"
    return len(rows)


async def test_an_interrupted_master_rotation_resumes_and_loses_no_subject_key(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    offsets = Offsets()
    old_only = KeyRing(OLD)
    await pipeline(pool, old_only).process(offsets.records([f"s{n:02}" for n in range(20)]))
    # Three subject keys as the ledger wrote them before rotation existed (version 1).
    async with pool.acquire() as connection:
        for subject in ("s00", "s07", "s13"):
            wrapped = await connection.fetchval(
                "SELECT wrapped_key FROM subject_keys WHERE subject = $1", subject
            )
            legacy = KeyWrapper(OLD).wrap(subject, old_only.unwrap(subject, wrapped))
            await connection.execute(
                "UPDATE subject_keys SET wrapped_key = $2 WHERE subject = $1", subject, legacy
            )

    both = load_keyring(key_file(tmp_path / "master-keys", OLD, NEW), None)
    assert both.newest_id == master_key_id(NEW)

    class Interrupted(Exception):
        pass

    def stop_after_two_batches(report: MasterRotation) -> None:
        if report.batches == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        await rotate_master_key(pool, both, batch_size=4, on_batch=stop_after_two_batches)
    async with pool.acquire() as connection:
        assert await keys_not_wrapped_by(connection, master_key_id(NEW)) == 20 - 8
    assert await readable_payloads(pool, both) == 20  # half-rotated, all readable

    # A worker still on the old key file goes on meanwhile: new subjects' keys
    # are wrapped by the old key (not retired yet); a subject key already
    # re-wrapped it cannot open, and it waits (an outage), rejecting nothing.
    stale = pipeline(pool, KeyRing(OLD))
    await stale.process(offsets.records(["late-1", "late-2"]))
    with pytest.raises(MasterKeyUnavailable) as unavailable:
        await stale.process(offsets.records(["s01"]))  # re-wrapped in the first batches
    assert is_transient(unavailable.value)
    assert master_key_id(NEW).hex() in str(unavailable.value)

    report = await rotate_master_key(pool, both, batch_size=4)  # run again: it resumes
    assert report.rewrapped == 20 - 8 + 2  # what was left, and the stale worker's two
    assert report.retired == [master_key_id(OLD).hex()]
    async with pool.acquire() as connection:
        assert await keys_not_wrapped_by(connection, master_key_id(NEW)) == 0
        wrapped = [row[0] for row in await connection.fetch("SELECT wrapped_key FROM subject_keys")]
    assert {wrapped_by(w) for w in wrapped} == {master_key_id(NEW)}
    # The old key may leave the file: every payload opens with the new key alone.
    assert await readable_payloads(pool, KeyRing(NEW)) == 22

    # A worker that still has only the retired key cannot store a new subject
    # key under it: the database refuses, as an outage to wait out, not as the
    # record's fault (nothing is rejected, nothing committed).
    late_record = offsets.records(["after-retirement"])
    with pytest.raises(asyncpg.PostgresError) as refused:
        await stale.process(late_record)
    assert refused.value.sqlstate == RETIRED_MASTER_KEY_SQLSTATE
    assert is_transient(refused.value)
    async with pool.acquire() as connection:
        assert await connection.fetchval("SELECT count(*) FROM rejected_events") == 0
    # Given the new key file, the same record goes in.
    await pipeline(pool, KeyRing(NEW)).process(late_record)
    assert await readable_payloads(pool, KeyRing(NEW)) == 23

    # Nothing left to do: running it again changes nothing; the retired key never returns.
    again = await rotate_master_key(pool, KeyRing(NEW))
    assert (again.rewrapped, again.retired) == (0, [])
    with pytest.raises(ValueError, match="was retired"):
        await rotate_master_key(pool, KeyRing([NEW, OLD]))


async def test_a_worker_takes_up_a_changed_key_file_before_its_next_batch(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    path = key_file(tmp_path / "master-keys", OLD)
    keyring = load_keyring(path, None)
    worker = pipeline(pool, keyring)
    offsets = Offsets()
    await worker.process(offsets.records(["before"]))
    key_file(path, OLD, NEW)  # an operator adds the new key; no restart
    await worker.process(offsets.records(["after"]))
    async with pool.acquire() as connection:
        rows = dict(await connection.fetch("SELECT subject, wrapped_key FROM subject_keys"))
    assert wrapped_by(rows["before"]) == master_key_id(OLD)
    assert wrapped_by(rows["after"]) == master_key_id(NEW)


async def test_each_checkpoint_is_checked_with_the_key_it_names(pool: asyncpg.Pool) -> None:
    first, second = generate_signing_key(), generate_signing_key()
    offsets = Offsets()
    worker = pipeline(pool, KeyRing(OLD))
    await worker.process(offsets.records(["a", "b"]))
    await issue_checkpoint(pool, first, "test-log", force=True)
    await worker.process(offsets.records(["c"]))
    await issue_checkpoint(pool, second, "test-log", force=True)  # rotated
    both = [first.public_key(), second.public_key()]
    async with pool.acquire() as connection:
        report = await verify_ledger(connection, both)
        assert report.ok and report.checkpoints == 2
        only_new = await verify_ledger(connection, second.public_key())
        proof = await inclusion_proof_for(connection, "ev-0", checkpoint_id=1)
    assert not only_new.ok
    assert only_new.signed_by_other_key == {1: key_id(first)}  # named, not called forged
    proof.pop("checkpoint_id")  # the API's addition; the document is the rest
    assert verify_inclusion_document(proof, both).ok
    refused = verify_inclusion_document(proof, second.public_key())
    assert refused.failure is Failure.UNKNOWN_KEY
    assert key_id(first) in refused.detail
