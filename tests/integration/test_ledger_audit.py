"""The audit ledger an auditor can trust, on a real PostgreSQL.

Every test feeds a scenario's records through the real :class:`BatchPipeline`
(three partitions, increasing offsets per partition, batches of 300) into a
fresh database, signs checkpoints with :func:`issue_checkpoint`, and then asks
what an auditor would ask:

- a clean ledger verifies, through :func:`verify_ledger` and ``consent-ledger verify``;
- the service's own (non-superuser) role cannot UPDATE, DELETE or TRUNCATE the
  ledger, and the trigger refuses even a superuser unless triggers are bypassed;
- tampering done "around the trigger" (``session_replication_role = replica``)
  is found, and the first divergence is named exactly (partition, index, event
  id); forged or altered checkpoints are reported as such;
- inclusion and consistency proofs from the database hold under verifiers
  written here from RFC 9162 and the documented formats (not the project's
  ``merkle.py``/``proofs.py``), and under ``consent-ledger verify-proof``;
  tampered proof files fail.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import struct
import sys
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_policy
from consent_ledger.errors import NotCovered, UnknownEvent
from consent_ledger.integrity.checkpoints import generate_signing_key, key_id, public_key_pem
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.store.audit_reads import (
    AuditReport,
    Divergence,
    consistency_proof_between,
    inclusion_proof_for,
    verify_ledger,
)
from consent_ledger.store.checkpoint_issuer import issue_checkpoint
from consent_ledger.store.migrate import migrate
from consent_ledger.worker.pipeline import BatchPipeline

pytestmark = [pytest.mark.integration]

SCENARIOS = Path(__file__).resolve().parents[1] / "data" / "scenarios"
CLI = Path(sys.executable).with_name("consent-ledger")
PARTITIONS = 3
BATCH = 300
LOG_ID = "test-log"


# -- feeding the real pipeline --------------------------------------------------


def scenario_records(name: str, partitions: int = PARTITIONS) -> list[Record]:
    """The scenario's non-blank lines as records, keyed by subject like the publisher
    (unparseable lines go round-robin), offsets increasing per partition."""
    lines = (SCENARIOS / name / "events.jsonl").read_bytes().splitlines()
    records = []
    next_offset = dict.fromkeys(range(partitions), 0)
    for number, line in enumerate(line for line in lines if line.strip()):
        try:
            subject = orjson.loads(line)["subject"]
            partition = zlib.crc32(str(subject).encode()) % partitions
        except (orjson.JSONDecodeError, KeyError, TypeError):
            partition = number % partitions
        records.append(Record(partition, next_offset[partition], line))
        next_offset[partition] += 1
    return records


@dataclass
class Ledger:
    pool: asyncpg.Pool
    database_url: str
    signing_key: Ed25519PrivateKey
    public_pem: Path
    pipeline: BatchPipeline

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()

    async def verify(self) -> AuditReport:
        async with self.pool.acquire() as connection:
            return await verify_ledger(connection, self.public_key)

    async def cli_verify(self) -> tuple[int, str]:
        return await run_cli(
            "verify", "--public-key", str(self.public_pem), database_url=self.database_url
        )


async def feed(pipeline: BatchPipeline, records: Sequence[Record], batch: int = BATCH) -> None:
    for start in range(0, len(records), batch):
        await pipeline.process(records[start : start + batch])


@asynccontextmanager
async def open_ledger(database_url: str, folder: Path, **connect: Any) -> AsyncIterator[Ledger]:
    """A migrated database, a pipeline on it, a signing key and its public key file."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2, **connect)
    try:
        async with pool.acquire() as connection:
            await migrate(connection)
        policy = load_policy(SCENARIOS / "policy.yaml")
        pipeline = BatchPipeline(pool, KeyRing(os.urandom(32)), policy, Settings())
        key = generate_signing_key()
        pem = folder / "ledger.pub"
        pem.write_text(public_key_pem(key))
        yield Ledger(pool, database_url, key, pem, pipeline)
    finally:
        await pool.close()


@asynccontextmanager
async def random_ledger(database_url: str, folder: Path, count: int) -> AsyncIterator[Ledger]:
    """The first ``count`` records of random-3000 on three partitions; checkpoint 1
    after half of them, checkpoint 2 at the end."""
    records = scenario_records("random-3000")[:count]
    half = len(records) // 2
    async with open_ledger(database_url, folder) as opened:
        await feed(opened.pipeline, records[:half])
        await issue_checkpoint(opened.pool, opened.signing_key, LOG_ID, force=True)
        await feed(opened.pipeline, records[half:])
        await issue_checkpoint(opened.pool, opened.signing_key, LOG_ID, force=True)
        yield opened


@pytest.fixture
async def ledger(database_url: str, tmp_path: Path) -> AsyncIterator[Ledger]:
    """All of random-3000 (about 3000 accepted entries)."""
    async with random_ledger(database_url, tmp_path, 10_000) as opened:
        yield opened


@pytest.fixture
async def small_ledger(database_url: str, tmp_path: Path) -> AsyncIterator[Ledger]:
    """The first 1200 records of random-3000 (about 400 entries a partition): to tamper with."""
    async with random_ledger(database_url, tmp_path, 1200) as opened:
        yield opened


async def run_cli(*args: str, database_url: str | None = None) -> tuple[int, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("LEDGER_")}
    if database_url is not None:
        env["LEDGER_DATABASE_URL"] = database_url
    process = await asyncio.create_subprocess_exec(
        str(CLI),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


@asynccontextmanager
async def around_the_trigger(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection on which ordinary triggers do not fire."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("SET session_replication_role = replica")
        yield connection
    finally:
        await connection.close()


async def entry_at(ledger: Ledger, partition: int, index: int) -> asyncpg.Record:
    async with ledger.pool.acquire() as connection:
        row = await connection.fetchrow(
            "SELECT * FROM ledger_entries WHERE kafka_partition = $1 AND leaf_index = $2",
            partition,
            index,
        )
    assert row is not None
    return row


async def partition_size(ledger: Ledger, partition: int) -> int:
    async with ledger.pool.acquire() as connection:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM ledger_entries WHERE kafka_partition = $1", partition
            )
        )


async def assert_named(ledger: Ledger, expected: Divergence, problem_words: str) -> None:
    """verify_ledger names exactly this one divergence, and the CLI prints it and exits 1."""
    report = await ledger.verify()
    assert not report.ok
    assert report.forged_checkpoints == []
    assert [(d.partition, d.index, d.event_id) for d in report.divergences] == [
        (expected.partition, expected.index, expected.event_id)
    ], report.divergences
    assert problem_words in report.divergences[0].problem
    status, output = await ledger.cli_verify()
    assert status == 1, output
    where = f"partition {expected.partition}"
    if expected.index is not None:
        where += f", index {expected.index}"
    if expected.event_id is not None:
        where += f", event {expected.event_id}"
    assert f"DIVERGES: {where}: " in output, output
    assert "FAILED" in output


class Rollback(Exception):
    """Raised to roll a transaction back on purpose."""


def flip_byte(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


# -- a clean ledger ---------------------------------------------------------------


async def test_clean_ledger_verifies_in_process_and_through_the_cli(ledger: Ledger) -> None:
    async with ledger.pool.acquire() as connection:
        accepted = await connection.fetchval("SELECT sum(accepted) FROM consumer_positions")
        sizes = dict(
            await connection.fetch(
                "SELECT kafka_partition, count(*) FROM ledger_entries GROUP BY 1"
            )
        )
        documents = [
            orjson.loads(row[0])
            for row in await connection.fetch("SELECT document FROM checkpoints ORDER BY id")
        ]
    assert accepted > 2900
    assert len(sizes) == PARTITIONS
    first, last = ({h["partition"]: h["size"] for h in d["tree_heads"]} for d in documents)
    assert last == sizes
    assert all(0 < first[p] < last[p] for p in sizes)

    report = await ledger.verify()
    assert report.ok, report.divergences
    assert (report.entries, report.partitions, report.checkpoints) == (accepted, PARTITIONS, 2)
    assert report.divergences == [] and report.forged_checkpoints == []

    status, output = await ledger.cli_verify()
    assert status == 0, output
    assert output.startswith("OK: ")
    assert f"{accepted} entries in {PARTITIONS} partitions, 2 checkpoints" in output


# -- the database refuses rewrites ------------------------------------------------


async def test_service_role_cannot_update_delete_or_truncate_the_ledger(
    database_url: str, pg_server_dsn: str, unique_name: Any, tmp_path: Path
) -> None:
    role = unique_name("ledger_app")
    database = urlsplit(database_url).path.lstrip("/")
    server = await asyncpg.connect(pg_server_dsn)
    admin = await server.fetchval("SELECT current_user")
    try:
        await server.execute(f"CREATE ROLE {role} LOGIN")
        await server.execute(f'ALTER DATABASE "{database}" OWNER TO {role}')
        try:
            # The service migrates as itself (it owns the tables) and writes through the pipeline.
            async with open_ledger(database_url, tmp_path, user=role) as app:
                await feed(app.pipeline, scenario_records("consent-lifecycle"))
                async with app.pool.acquire() as connection:
                    who = await connection.fetchrow(
                        "SELECT current_user AS name, rolsuper FROM pg_roles"
                        " WHERE rolname = current_user"
                    )
                    assert (who["name"], who["rolsuper"]) == (role, False)
                    owner = await connection.fetchval(
                        "SELECT tableowner FROM pg_tables WHERE tablename = 'ledger_entries'"
                    )
                    assert owner == role
                    count = await connection.fetchval("SELECT count(*) FROM ledger_entries")
                    assert count > 0
                    for privilege, held in (
                        ("SELECT", True), ("INSERT", True),
                        ("UPDATE", False), ("DELETE", False), ("TRUNCATE", False),
                    ):  # fmt: skip
                        assert (
                            await connection.fetchval(
                                "SELECT has_table_privilege('ledger_entries', $1)", privilege
                            )
                            is held
                        ), privilege
                    for statement in (
                        "UPDATE ledger_entries SET subject = 'someone-else'",
                        "UPDATE ledger_entries SET payload = '' WHERE seq = (SELECT min(seq) FROM ledger_entries)",
                        "DELETE FROM ledger_entries",
                        "DELETE FROM ledger_entries WHERE seq = (SELECT max(seq) FROM ledger_entries)",
                        "TRUNCATE ledger_entries",
                    ):
                        with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
                            await connection.execute(statement)
                        assert "permission denied for table ledger_entries" in str(refused.value)
                    assert await connection.fetchval("SELECT count(*) FROM ledger_entries") == count

                # The trigger alone: a superuser has every privilege and is still refused ...
                superuser = await asyncpg.connect(database_url)
                try:
                    for statement, operation in (
                        ("UPDATE ledger_entries SET subject = 'x'", "UPDATE"),
                        ("DELETE FROM ledger_entries", "DELETE"),
                        ("TRUNCATE ledger_entries", "TRUNCATE"),
                    ):
                        with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
                            await superuser.execute(statement)
                        assert f"ledger_entries is append-only: {operation} refused" in str(
                            refused.value
                        )
                    # ... unless triggers are bypassed (session_replication_role is superuser-only;
                    # ALTER TABLE ... DISABLE TRIGGER USER would do as well).
                    with pytest.raises(Rollback):
                        async with superuser.transaction():
                            await superuser.execute("SET LOCAL session_replication_role = replica")
                            changed = await superuser.execute(
                                "UPDATE ledger_entries SET subject = 'x'"
                            )
                            assert changed == f"UPDATE {count}"
                            raise Rollback
                    assert (
                        await superuser.fetchval(
                            "SELECT count(*) FROM ledger_entries WHERE subject = 'x'"
                        )
                        == 0
                    )
                finally:
                    await superuser.close()

                # The service role may not bypass triggers.
                async with app.pool.acquire() as connection:
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await connection.execute("SET session_replication_role = replica")
        finally:
            # Hand everything back so the database and the role can be dropped.
            await server.execute(f'ALTER DATABASE "{database}" OWNER TO "{admin}"')
            owned = await asyncpg.connect(database_url)
            try:
                await owned.execute(f'REASSIGN OWNED BY {role} TO "{admin}"')
                await owned.execute(f"DROP OWNED BY {role}")
            finally:
                await owned.close()
            await server.execute(f"DROP ROLE {role}")
    finally:
        await server.close()


# -- tampering around the trigger is found and named --------------------------------


async def test_one_byte_of_a_payload_changed_is_named(small_ledger: Ledger) -> None:
    target = await entry_at(small_ledger, 1, 150)
    async with around_the_trigger(small_ledger.database_url) as tamper:
        await tamper.execute(
            "UPDATE ledger_entries SET payload = $2 WHERE event_id = $1",
            target["event_id"],
            flip_byte(bytes(target["payload"]), 20),
        )
    await assert_named(small_ledger, Divergence(1, 150, target["event_id"], ""), "payload")


@pytest.mark.parametrize(
    ("column", "problem"),
    [
        ("event_id", "leaf hash"),
        ("payload_sha256", "payload does not match its digest"),
        ("kafka_offset", "leaf hash"),
        ("recorded_us", "leaf hash"),
        ("leaf_hash", "leaf hash"),
    ],
)
async def test_one_byte_of_an_entry_field_changed_is_named(
    small_ledger: Ledger, column: str, problem: str
) -> None:
    target = await entry_at(small_ledger, 2, 277)
    value = target[column]
    if column == "event_id":
        changed: Any = value[:-1] + ("0" if value[-1] != "0" else "1")
    elif isinstance(value, bytes):
        changed = flip_byte(value, 7)
    else:
        changed = value ^ 0x01  # lowest bit: the offset stays between its neighbours' or equals one
    async with around_the_trigger(small_ledger.database_url) as tamper:
        await tamper.execute(
            f"UPDATE ledger_entries SET {column} = $2 WHERE event_id = $1",
            target["event_id"],
            changed,
        )
    named = changed if column == "event_id" else target["event_id"]
    await assert_named(small_ledger, Divergence(2, 277, named, ""), problem)


async def test_a_row_deleted_in_the_middle_is_named_at_the_gap(small_ledger: Ledger) -> None:
    deleted = await entry_at(small_ledger, 0, 200)
    following = await entry_at(small_ledger, 0, 201)
    async with around_the_trigger(small_ledger.database_url) as tamper:
        status = await tamper.execute(
            "DELETE FROM ledger_entries WHERE event_id = $1", deleted["event_id"]
        )
        assert status == "DELETE 1"
    await assert_named(small_ledger, Divergence(0, 200, following["event_id"], ""), "missing")


@pytest.mark.parametrize(("first", "second"), [(100, 105), (300, 301)])
async def test_two_rows_swapped_are_named_at_the_first_swapped_position(
    small_ledger: Ledger, first: int, second: int
) -> None:
    one = await entry_at(small_ledger, 2, first)
    other = await entry_at(small_ledger, 2, second)
    async with around_the_trigger(small_ledger.database_url) as tamper, tamper.transaction():
        swap = "UPDATE ledger_entries SET leaf_index = $2 WHERE event_id = $1"
        await tamper.execute(swap, one["event_id"], -1)
        await tamper.execute(swap, other["event_id"], first)
        await tamper.execute(swap, one["event_id"], second)
    # Position ``first`` now holds the other entry: that is where the log stops being
    # the one the checkpoints signed.
    await assert_named(small_ledger, Divergence(2, first, other["event_id"], ""), "order")


async def test_the_last_rows_of_a_partition_deleted_is_reported_as_truncated(
    small_ledger: Ledger,
) -> None:
    size = await partition_size(small_ledger, 1)
    async with around_the_trigger(small_ledger.database_url) as tamper:
        status = await tamper.execute(
            "DELETE FROM ledger_entries WHERE kafka_partition = 1 AND leaf_index >= $1", size - 5
        )
        assert status == "DELETE 5"
    await assert_named(small_ledger, Divergence(1, size - 5, None, ""), "truncated")


@pytest.mark.parametrize("forgery", ["size", "root", "issued_at", "other-key"])
async def test_a_forged_or_altered_checkpoint_is_reported(
    small_ledger: Ledger, forgery: str
) -> None:
    forged = 2
    async with around_the_trigger(small_ledger.database_url) as tamper:
        if forgery == "size":
            await tamper.execute(
                "UPDATE checkpoints SET document = jsonb_set(document, '{tree_heads,0,size}',"
                " to_jsonb((document #>> '{tree_heads,0,size}')::bigint - 1)) WHERE id = 2"
            )
        elif forgery == "root":
            root = base64.b64encode(hashlib.sha256(b"another tree").digest()).decode()
            await tamper.execute(
                "UPDATE checkpoints SET document = jsonb_set(document, '{tree_heads,1,root}',"
                " to_jsonb($1::text)) WHERE id = 2",
                root,
            )
        elif forgery == "issued_at":
            await tamper.execute(
                "UPDATE checkpoints SET document = jsonb_set(document, '{issued_at}',"
                " to_jsonb('2000-01-01T00:00:00.000000Z'::text)) WHERE id = 1"
            )
            forged = 1
        else:
            other_key = generate_signing_key()
            await issue_checkpoint(small_ledger.pool, other_key, LOG_ID, force=True)
            forged = 3
    report = await small_ledger.verify()
    assert not report.ok
    assert report.forged_checkpoints == [forged]
    assert report.divergences == [], report.divergences  # the entries themselves are intact
    status, output = await small_ledger.cli_verify()
    assert status == 1, output
    assert "FAILED" in output
    # Only a checkpoint that names another key is said to: an altered one names ours.
    if forgery == "other-key":
        other_id = key_id(other_key.public_key())
        assert report.other_keys == {other_id}
        assert report.signed_by_other_key == {forged: other_id}
        assert f"checkpoint {forged}: signed by key {other_id}, which was not given" in output
    else:
        assert report.other_keys == set() and "signed by key" not in output
        assert f"checkpoint {forged}: signature does not verify" in output


# -- proofs, checked by an auditor's own code -----------------------------------------
#
# Written from RFC 9162 §2.1.3.2 / §2.1.4.2 and the formats documented in entry.py,
# checkpoints.py and proofs.py; nothing here calls the project's Merkle or proof code.


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def rfc9162_verify_inclusion(
    leaf_index: int, tree_size: int, leaf: bytes, path: list[bytes], root: bytes
) -> bool:
    if leaf_index >= tree_size:
        return False
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def rfc9162_verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, path: list[bytes]
) -> bool:
    if first == second:
        return not path and first_hash == second_hash
    if first == 0:
        return not path
    if first > second or not path:
        return False
    if first & (first - 1) == 0:  # a power of two: the old root is the first node
        path = [first_hash, *path]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_hash and sr == second_hash


def entry_leaf_hash(entry: dict[str, Any]) -> bytes:
    """RFC 9162 leaf hash of the version-1 entry encoding (entry.py's docstring)."""
    assert entry["version"] == 1
    recorded = datetime.strptime(entry["recorded_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    micros = (recorded - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    event_id = entry["event_id"].encode()
    encoded = (
        b"CLE\x01"
        + struct.pack(">H", len(event_id))
        + event_id
        + struct.pack(">IQq", entry["partition"], entry["offset"], micros)
        + bytes.fromhex(entry["payload_sha256"])
    )
    return hashlib.sha256(b"\x00" + encoded).digest()


def checkpoint_roots(
    signed: dict[str, Any], public_key: Ed25519PublicKey
) -> dict[int, tuple[int, bytes]] | None:
    """{partition: (size, root)} of a signed checkpoint whose signature holds, else None."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if signed["key_id"] != hashlib.sha256(raw).digest()[:16].hex():
        return None
    heads = sorted(signed["tree_heads"], key=lambda head: head["partition"])
    lines = ["consent-ledger checkpoint v1", signed["log_id"], signed["issued_at"]]
    lines += [f"{h['partition']} {h['size']} {h['root']}" for h in heads]
    try:
        public_key.verify(base64.b64decode(signed["signature"]), ("\n".join(lines) + "\n").encode())
    except InvalidSignature:
        return None
    return {h["partition"]: (h["size"], base64.b64decode(h["root"])) for h in heads}


def auditor_checks_inclusion(doc: dict[str, Any], public_key: Ed25519PublicKey) -> bool:
    roots = checkpoint_roots(doc["checkpoint"], public_key)
    if roots is None or doc["partition"] not in roots:
        return False
    size, root = roots[doc["partition"]]
    if doc["entry"]["partition"] != doc["partition"] or doc["tree_size"] != size:
        return False
    path = [base64.b64decode(item) for item in doc["audit_path"]]
    return rfc9162_verify_inclusion(
        doc["leaf_index"], size, entry_leaf_hash(doc["entry"]), path, root
    )


def auditor_checks_consistency(doc: dict[str, Any], public_key: Ed25519PublicKey) -> bool:
    old = checkpoint_roots(doc["old_checkpoint"], public_key)
    new = checkpoint_roots(doc["new_checkpoint"], public_key)
    if old is None or new is None:
        return False
    proofs = {item["partition"]: item for item in doc["partitions"]}
    if set(proofs) != set(old):
        return False
    for partition, (old_size, old_root) in old.items():
        if partition not in new:
            return False
        new_size, new_root = new[partition]
        item = proofs[partition]
        if (item["old_size"], item["new_size"]) != (old_size, new_size):
            return False
        path = [base64.b64decode(hashed) for hashed in item["path"]]
        if not rfc9162_verify_consistency(old_size, new_size, old_root, new_root, path):
            return False
    return True


async def cli_verify_proof(ledger: Ledger, folder: Path, doc: dict[str, Any]) -> tuple[int, str]:
    path = folder / f"proof-{hashlib.sha256(orjson.dumps(doc)).hexdigest()[:12]}.json"
    path.write_bytes(orjson.dumps(doc))
    return await run_cli("verify-proof", str(path), "--public-key", str(ledger.public_pem))


async def test_inclusion_proofs_hold_for_an_independent_verifier_and_the_cli(
    ledger: Ledger, tmp_path: Path
) -> None:
    async with ledger.pool.acquire() as connection:
        first_sizes = {
            head["partition"]: head["size"]
            for head in orjson.loads(
                await connection.fetchval("SELECT document FROM checkpoints WHERE id = 1")
            )["tree_heads"]
        }
        wanted = []  # (event id, checkpoint id or None for the latest)
        for partition in range(PARTITIONS):
            size = await partition_size(ledger, partition)
            for index in {0, 1, 2, size // 3, size - 2, size - 1}:
                wanted.append(((await entry_at(ledger, partition, index))["event_id"], None))
            for index in (0, first_sizes[partition] // 2, first_sizes[partition] - 1):
                wanted.append(((await entry_at(ledger, partition, index))["event_id"], 1))
        late = (await entry_at(ledger, 0, first_sizes[0]))["event_id"]
        with pytest.raises(NotCovered) as not_covered:
            await inclusion_proof_for(connection, late, 1)
        assert (not_covered.value.checkpoint_id, not_covered.value.named) == (1, True)
        with pytest.raises(UnknownEvent):
            await inclusion_proof_for(connection, "no-such-event")

        documents = []
        for event_id, checkpoint_id in wanted:
            doc = await inclusion_proof_for(connection, event_id, checkpoint_id)
            # The database hands back which checkpoint it used; the saved proof (as the
            # API serves it) is the documented format without it.
            assert doc.pop("checkpoint_id") == (checkpoint_id or 2)
            row = await connection.fetchrow(
                "SELECT * FROM ledger_entries WHERE event_id = $1", event_id
            )
            assert doc["entry"]["event_id"] == event_id
            assert (doc["partition"], doc["leaf_index"]) == (
                row["kafka_partition"],
                row["leaf_index"],
            )
            assert doc["entry"]["offset"] == row["kafka_offset"]
            assert doc["entry"]["payload_sha256"] == hashlib.sha256(row["payload"]).hexdigest()
            assert base64.b64decode(doc["leaf_hash"]) == bytes(row["leaf_hash"])
            assert auditor_checks_inclusion(doc, ledger.public_key), (event_id, checkpoint_id)
            documents.append(doc)

    for doc in (documents[0], documents[-1]):  # against the latest checkpoint, and checkpoint 1
        status, output = await cli_verify_proof(ledger, tmp_path, doc)
        assert status == 0, output
        assert output.startswith("OK: ")

    doc = next(d for d in documents if len(d["audit_path"]) > 3)
    path_byte = orjson.loads(orjson.dumps(doc))
    hashed = base64.b64decode(path_byte["audit_path"][2])
    path_byte["audit_path"][2] = base64.b64encode(flip_byte(hashed, 31)).decode()
    moved = orjson.loads(orjson.dumps(doc))
    moved["entry"]["offset"] += 1
    index_moved = orjson.loads(orjson.dumps(doc))
    index_moved["leaf_index"] ^= 1
    for tampered in (path_byte, moved, index_moved):
        assert not auditor_checks_inclusion(tampered, ledger.public_key)
        status, output = await cli_verify_proof(ledger, tmp_path, tampered)
        assert status == 1, output
        assert output.startswith("FAILED: ")


async def test_consistency_proof_between_the_checkpoints_holds(
    ledger: Ledger, tmp_path: Path
) -> None:
    async with ledger.pool.acquire() as connection:
        doc = await consistency_proof_between(connection, 1, 2)
        same = await consistency_proof_between(connection, 2, 2)
    assert [item["partition"] for item in doc["partitions"]] == list(range(PARTITIONS))
    assert all(0 < item["old_size"] < item["new_size"] for item in doc["partitions"])
    assert all(item["path"] for item in doc["partitions"])
    assert auditor_checks_consistency(doc, ledger.public_key)
    assert auditor_checks_consistency(same, ledger.public_key)
    for document in (doc, same):
        status, output = await cli_verify_proof(ledger, tmp_path, document)
        assert status == 0, output
        assert output.startswith("OK: ")

    path_byte = orjson.loads(orjson.dumps(doc))
    hashed = base64.b64decode(path_byte["partitions"][1]["path"][0])
    path_byte["partitions"][1]["path"][0] = base64.b64encode(flip_byte(hashed, 0)).decode()
    swapped = orjson.loads(orjson.dumps(doc))
    swapped["old_checkpoint"], swapped["new_checkpoint"] = (
        swapped["new_checkpoint"],
        swapped["old_checkpoint"],
    )
    for tampered in (path_byte, swapped):
        assert not auditor_checks_consistency(tampered, ledger.public_key)
        status, output = await cli_verify_proof(ledger, tmp_path, tampered)
        assert status == 1, output
        assert output.startswith("FAILED: ")


# -- the auditor's role ---------------------------------------------------------------

DEPLOY_GUIDE = Path(__file__).resolve().parents[2] / "deploy" / "README.md"


async def test_the_auditor_role_of_the_deploy_guide_can_verify_and_nothing_less_can(
    small_ledger: Ledger, pg_server_dsn: str, unique_name: Any
) -> None:
    """deploy/README.md's grants for the read-only auditor are enough for `verify`;
    without them `verify` says it cannot read the ledger and exits 2, not 1 (which
    means tampering)."""
    guide = DEPLOY_GUIDE.read_text()
    [grant] = re.findall(r"^GRANT SELECT ON .+ TO ledger_auditor;", guide, re.MULTILINE)
    role = unique_name("auditor")
    server = await asyncpg.connect(pg_server_dsn)
    try:
        await server.execute(f"CREATE ROLE {role} LOGIN")
        address = urlsplit(small_ledger.database_url)
        host = address.netloc.rpartition("@")[2]
        as_auditor = urlunsplit(address._replace(netloc=f"{role}@{host}"))
        args = ("verify", "--public-key", str(small_ledger.public_pem))

        status, output = await run_cli(*args, database_url=as_auditor)
        assert status == 2, output
        assert "cannot read the ledger" in output and "permission denied" in output

        async with small_ledger.pool.acquire() as owner:
            await owner.execute(grant.replace("ledger_auditor", role))
        status, output = await run_cli(*args, database_url=as_auditor)
        assert status == 0, output
        assert output.startswith("OK:")
    finally:
        async with small_ledger.pool.acquire() as owner:
            await owner.execute(f"DROP OWNED BY {role}")  # the grants, in the ledger's database
        await server.execute(f"DROP ROLE {role}")
        await server.close()
