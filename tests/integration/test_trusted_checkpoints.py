"""What `verify` vouches for when an insider also removed the stored checkpoints.

The ledger is random-3000's first 1200 records on three partitions (the real
pipeline, a real PostgreSQL), checkpoint 1 after half of them and checkpoint 2
at the end. The auditor kept checkpoint 2 (or 1) in a file, in the shape
``GET /v1/ledger/checkpoints/latest`` answers. Then, as a superuser with
triggers off, every checkpoint is deleted and one partition's entries and
Merkle log are rewritten so that they agree with each other: nothing inside
the database gives the rewrite away. Plain ``verify`` must refuse to say OK
(nothing is signed any more); ``verify --trusted-checkpoint`` must name the
partition.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from consent_ledger.integrity.checkpoints import (
    Checkpoint,
    generate_signing_key,
    sign_checkpoint,
)
from consent_ledger.integrity.entry import LedgerEntry, from_micros
from consent_ledger.integrity.merkle import MerkleFrontier
from consent_ledger.integrity.trust import parse_trusted_checkpoint
from consent_ledger.store.audit_reads import consistency_proof_between, inclusion_proof_for
from consent_ledger.store.checkpoint_issuer import issue_checkpoint
from tests.integration.test_ledger_audit import (
    LOG_ID,
    PARTITIONS,
    Ledger,
    around_the_trigger,
    feed,
    flip_byte,
    random_ledger,
    run_cli,
    scenario_records,
)

pytestmark = [pytest.mark.integration]


@pytest.fixture
async def kept_ledger(database_url: str, tmp_path: Path) -> AsyncIterator[Ledger]:
    async with random_ledger(database_url, tmp_path, 1200) as opened:
        yield opened


async def keep_checkpoint(ledger: Ledger, folder: Path, number: int) -> Path:
    """Write stored checkpoint ``number`` as the API answers it, to a file the auditor keeps."""
    async with ledger.pool.acquire() as connection:
        document = await connection.fetchval(
            "SELECT document FROM checkpoints WHERE id = $1", number
        )
    path = folder / f"kept-{number}.json"
    path.write_bytes(orjson.dumps({"id": number, "checkpoint": orjson.loads(document)}))
    return path


async def verify(ledger: Ledger, *args: str) -> tuple[int, str]:
    return await run_cli(
        "verify", "--public-key", str(ledger.public_pem), *args, database_url=ledger.database_url
    )


async def restore_merkle_log(tamper: asyncpg.Connection, partition: int) -> None:
    """Recompute a partition's stored Merkle log from its (rewritten) entries, as an
    insider covering their tracks would."""
    hashes = await tamper.fetch(
        "SELECT leaf_hash FROM ledger_entries WHERE kafka_partition = $1 ORDER BY leaf_index",
        partition,
    )
    frontier = MerkleFrontier.from_leaf_hashes(bytes(row[0]) for row in hashes)
    await tamper.execute(
        "UPDATE merkle_logs SET size = $2, frontier = $3 WHERE kafka_partition = $1",
        partition,
        frontier.size,
        frontier.to_bytes(),
    )


async def rewrite_partition(ledger: Ledger, partition: int, how: str) -> None:
    """Remove every checkpoint, then change ``partition`` so that its entries, leaf
    hashes and Merkle log agree: ``vanished`` (all of it deleted), ``shrank`` (an entry
    in the middle deleted and the later ones moved up), ``diverged`` (an entry's sealed
    payload replaced, its digest and leaf hash recomputed)."""
    async with around_the_trigger(ledger.database_url) as tamper, tamper.transaction():
        assert await tamper.execute("DELETE FROM checkpoints") == "DELETE 2"
        if how == "vanished":
            await tamper.execute("DELETE FROM ledger_entries WHERE kafka_partition = $1", partition)
            await tamper.execute("DELETE FROM merkle_logs WHERE kafka_partition = $1", partition)
            return
        if how == "shrank":
            await tamper.execute(
                "DELETE FROM ledger_entries WHERE kafka_partition = $1 AND leaf_index = 100",
                partition,
            )
            # Two steps: (partition, leaf_index) is unique, checked row by row.
            await tamper.execute(
                "UPDATE ledger_entries SET leaf_index = -leaf_index"
                " WHERE kafka_partition = $1 AND leaf_index > 100",
                partition,
            )
            await tamper.execute(
                "UPDATE ledger_entries SET leaf_index = -leaf_index - 1"
                " WHERE kafka_partition = $1 AND leaf_index < 0",
                partition,
            )
        else:
            row = await tamper.fetchrow(
                "SELECT * FROM ledger_entries WHERE kafka_partition = $1 AND leaf_index = 50",
                partition,
            )
            payload = flip_byte(bytes(row["payload"]), 30)
            digest = hashlib.sha256(payload).digest()
            entry = LedgerEntry(
                row["event_id"],
                partition,
                row["kafka_offset"],
                from_micros(row["recorded_us"]),
                digest,
            )
            await tamper.execute(
                "UPDATE ledger_entries SET payload = $2, payload_sha256 = $3, leaf_hash = $4"
                " WHERE event_id = $1",
                row["event_id"], payload, digest, entry.leaf_hash(),
            )  # fmt: skip
        await restore_merkle_log(tamper, partition)


@pytest.mark.parametrize(("partition", "how"), [(0, "vanished"), (1, "shrank"), (2, "diverged")])
async def test_a_rewrite_that_removed_the_checkpoints_is_caught_by_a_kept_one(
    kept_ledger: Ledger, tmp_path: Path, partition: int, how: str
) -> None:
    kept = await keep_checkpoint(kept_ledger, tmp_path, 2)
    status, output = await verify(kept_ledger, "--trusted-checkpoint", str(kept))
    assert status == 0, output
    assert output.startswith("OK: ") and ", 0 unsigned" in output
    assert f"trusted checkpoint {kept} (issued " in output  # checked, and says so
    assert "every partition still holds its signed tree (partition 0: " in output

    await rewrite_partition(kept_ledger, partition, how)

    # Inside the database all agrees: no divergence, but nothing signed either.
    report = await kept_ledger.verify()
    assert report.ok and report.divergences == []
    assert report.signed_entries == 0 and report.unsigned_entries == report.entries > 0
    status, output = await verify(kept_ledger)
    assert status == 1, output
    assert output.startswith("UNSIGNED: ") and "0 checkpoints" in output, output
    assert "no signed checkpoint covers any entry" in output
    assert "DIVERGES" not in output and "NOT HELD" not in output

    # The checkpoint the auditor kept names the partition, and only it.
    status, output = await verify(kept_ledger, "--trusted-checkpoint", str(kept))
    assert status == 1, output
    assert f"NOT HELD: partition {partition} {how}" in output, output
    assert output.count("NOT HELD") == 1
    assert "FAILED: " in output
    assert "still holds" not in output


async def test_a_kept_checkpoint_still_holds_after_the_ledger_grew(
    kept_ledger: Ledger, tmp_path: Path
) -> None:
    first = await keep_checkpoint(kept_ledger, tmp_path, 1)
    second = await keep_checkpoint(kept_ledger, tmp_path, 2)
    await feed(kept_ledger.pipeline, scenario_records("random-3000")[1200:1500])

    status, output = await verify(kept_ledger, "--trusted-checkpoint", str(first), str(second))
    assert status == 0, output
    for path in (first, second):  # one line each, naming its trees as it signed them
        kept = parse_trusted_checkpoint(path.read_bytes(), str(path)).signed
        heads = kept.checkpoint.tree_heads
        trees = f"partition {heads[0].partition}: {heads[0].size} entries, " + ", ".join(
            f"{head.partition}: {head.size}" for head in heads[1:]
        )
        issued = kept.checkpoint.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert (
            f"trusted checkpoint {path} (issued {issued}, key {kept.key_id}): "
            f"every partition still holds its signed tree ({trees})\n"
        ) in output, output
    report = await kept_ledger.verify()
    signed = report.signed_entries
    assert report.unsigned_entries > 0 and signed > 0
    assert (
        f"OK: {report.entries} entries in {PARTITIONS} partitions, 2 checkpoints; {signed} signed"
        in output
    )
    for coverage in report.coverage:
        assert (
            f"  partition {coverage.partition}: {coverage.entries} entries, {coverage.signed} signed (checkpoint 2), {coverage.unsigned} unsigned"
            in output
        )

    status, output = await verify(kept_ledger, "--require-signed")
    assert status == 1, output
    assert output.startswith("UNSIGNED: ") and "--require-signed" in output

    await issue_checkpoint(kept_ledger.pool, kept_ledger.signing_key, LOG_ID)
    status, output = await verify(
        kept_ledger, "--require-signed", "--trusted-checkpoint", str(first)
    )
    assert status == 0, output
    assert f"{report.entries} signed, 0 unsigned" in output


async def test_a_kept_checkpoint_signed_by_another_key_altered_or_of_another_log_is_refused(
    kept_ledger: Ledger, tmp_path: Path
) -> None:
    kept = parse_trusted_checkpoint(
        (await keep_checkpoint(kept_ledger, tmp_path, 2)).read_bytes(), ""
    )
    other = tmp_path / "other-key.json"
    other.write_text(sign_checkpoint(kept.signed.checkpoint, generate_signing_key()).to_json())
    altered = tmp_path / "altered.json"
    document = kept.signed.to_json_dict()
    document["tree_heads"][0]["size"] -= 1
    altered.write_bytes(orjson.dumps(document))
    another_log = tmp_path / "another-log.json"
    staging = Checkpoint(
        "staging", kept.signed.checkpoint.issued_at, kept.signed.checkpoint.tree_heads
    )
    another_log.write_text(sign_checkpoint(staging, kept_ledger.signing_key).to_json())
    for path, words in (
        (other, "names signing key"),
        (altered, "signature does not verify: forged or altered"),
        (
            another_log,
            f"is a checkpoint of log 'staging', this ledger's checkpoints are of '{LOG_ID}'",
        ),
    ):
        status, output = await verify(kept_ledger, "--trusted-checkpoint", str(path))
        assert status == 1, output
        assert f"trusted checkpoint {path}: {words}" in output
        assert "FAILED: " in output and "still holds" not in output


async def test_verify_proof_anchors_a_proof_in_a_kept_checkpoint(
    kept_ledger: Ledger, tmp_path: Path
) -> None:
    first = await keep_checkpoint(kept_ledger, tmp_path, 1)
    async with kept_ledger.pool.acquire() as connection:
        event_id = await connection.fetchval(
            "SELECT event_id FROM ledger_entries WHERE kafka_partition = 1 AND leaf_index = 3"
        )
        documents = {
            "inclusion-1": await inclusion_proof_for(connection, event_id, 1),
            "inclusion-2": await inclusion_proof_for(connection, event_id, 2),
            "consistency-1-2": await consistency_proof_between(connection, 1, 2),
        }
    results = {}
    for name, document in documents.items():
        document.pop("checkpoint_id", None)
        path = tmp_path / f"{name}.json"
        path.write_bytes(orjson.dumps(document))
        results[name] = await run_cli(
            "verify-proof", str(path), "--public-key", str(kept_ledger.public_pem),
            "--trusted-checkpoint", str(first),
        )  # fmt: skip
    status, output = results["inclusion-1"]
    assert status == 0 and f"anchored in {first}" in output, output
    status, output = results["consistency-1-2"]
    assert status == 0 and f"anchored in {first}" in output, output
    # Against a later tree the proof holds, but says nothing of the kept one on its own.
    status, output = results["inclusion-2"]
    assert status == 1 and output.startswith("FAILED: ") and "?checkpoint=" in output, output


async def test_a_kept_checkpoint_covers_the_entries_when_the_stored_ones_are_gone(
    kept_ledger: Ledger, tmp_path: Path
) -> None:
    """Deleting the stored checkpoints alone rewrites nothing: the kept one still
    vouches for every entry it signed."""
    kept = await keep_checkpoint(kept_ledger, tmp_path, 2)
    async with around_the_trigger(kept_ledger.database_url) as tamper:
        assert await tamper.execute("DELETE FROM checkpoints") == "DELETE 2"
    status, output = await verify(
        kept_ledger, "--require-signed", "--trusted-checkpoint", str(kept)
    )
    assert status == 0, output
    report = await kept_ledger.verify()
    assert output.startswith(
        f"OK: {report.entries} entries in {PARTITIONS} partitions, 0 checkpoints; "
        f"{report.entries} signed, 0 unsigned"
    )
    assert output.count("signed (a trusted checkpoint), 0 unsigned") == PARTITIONS
