"""What an auditor asks of the stored ledger: proofs, and a full verification.

:func:`verify_ledger` trusts nothing stored but the signed checkpoints and the
public key: it recomputes every payload digest, leaf and tree from the entries,
checks each partition's log has no gaps and runs in offset order (within a
broker epoch, see migration 003), checks every
checkpoint's signature and that the recomputed trees give its roots, and
reports the first divergence of each partition (partition, index, event id).
It also says how far that reaches (:mod:`consent_ledger.integrity.trust`): per partition, how many
entries a checkpoint whose signature holds covers, and whether the ledger
still holds every tree that the checkpoints the auditor kept elsewhere signed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from consent_ledger.errors import LedgerInconsistent, NotCovered, UnknownCheckpoint, UnknownEvent
from consent_ledger.integrity.checkpoints import SignedCheckpoint, verify_checkpoint
from consent_ledger.integrity.entry import LedgerEntry, from_micros
from consent_ledger.integrity.merkle import MerkleFrontier
from consent_ledger.integrity.proofs import (
    PublicKeys,
    build_consistency_document,
    build_inclusion_document,
    keys_by_id,
)
from consent_ledger.integrity.trust import (
    PartitionCoverage,
    TreeNotHeld,
    TrustedCheckpoint,
    check_trees_held,
)
from consent_ledger.store.merkle_logs import stored_frontiers

ENTRY = """
SELECT event_id, kafka_partition, kafka_offset, recorded_us, payload_sha256, leaf_index
FROM ledger_entries WHERE event_id = $1
"""
LEAF_HASHES = """
SELECT leaf_hash FROM ledger_entries WHERE kafka_partition = $1 AND leaf_index < $2 ORDER BY leaf_index
"""
CHECKPOINT = "SELECT id, document FROM checkpoints WHERE id = $1"
LATEST_CHECKPOINT = "SELECT id, document FROM checkpoints ORDER BY id DESC LIMIT 1"
ALL_CHECKPOINTS = "SELECT id, document FROM checkpoints ORDER BY id"
PARTITIONS = "SELECT DISTINCT kafka_partition FROM ledger_entries ORDER BY 1"
PARTITION_ENTRIES = """
SELECT event_id, kafka_offset, recorded_us, payload, payload_sha256, leaf_index, leaf_hash
FROM ledger_entries WHERE kafka_partition = $1 ORDER BY leaf_index
"""
EPOCH_STARTS = "SELECT kafka_partition, first_leaf_index FROM broker_epochs"
START_EPOCH = """
INSERT INTO broker_epochs (kafka_partition, first_leaf_index)
SELECT kafka_partition, size FROM merkle_logs WHERE size > 0
ON CONFLICT DO NOTHING
"""
RESET_POSITIONS = "UPDATE consumer_positions SET next_offset = 0 WHERE topic = $1"


async def start_broker_epoch(connection: asyncpg.Connection, topic: str) -> None:
    """Record that the broker starts over (a memory-only broker was restarted):
    offsets begin again at 0 after every partition's current last entry."""
    async with connection.transaction():
        await connection.execute(START_EPOCH)
        await connection.execute(RESET_POSITIONS, topic)


async def checkpoint(
    connection: asyncpg.Connection, checkpoint_id: int | None
) -> tuple[int, SignedCheckpoint]:
    """A stored checkpoint by id, or the latest when ``checkpoint_id`` is None.

    Raises :class:`UnknownCheckpoint`, or :class:`LedgerInconsistent` when the
    stored document is not a valid signed checkpoint."""
    row = await (
        connection.fetchrow(LATEST_CHECKPOINT)
        if checkpoint_id is None
        else connection.fetchrow(CHECKPOINT, checkpoint_id)
    )
    if row is None:
        raise UnknownCheckpoint(checkpoint_id)
    return row["id"], stored_checkpoint(row["id"], row["document"])


def stored_checkpoint(number: int, document: str) -> SignedCheckpoint:
    """A stored checkpoint's document, parsed; :class:`LedgerInconsistent` when it
    is not a valid signed checkpoint."""
    try:
        return SignedCheckpoint.from_json(document)
    except ValueError as exc:
        raise LedgerInconsistent(
            f"checkpoint {number} is not a valid signed checkpoint: {exc}"
        ) from None


async def leaf_hashes(connection: asyncpg.Connection, partition: int, size: int) -> list[bytes]:
    return [row[0] for row in await connection.fetch(LEAF_HASHES, partition, size)]


async def inclusion_proof_for(
    connection: asyncpg.Connection, event_id: str, checkpoint_id: int | None = None
) -> dict[str, Any]:
    """The inclusion proof document of one ledger entry against a checkpoint (the
    latest when ``checkpoint_id`` is None), with that checkpoint's ``checkpoint_id``.

    Raises :class:`UnknownEvent`, :class:`UnknownCheckpoint` (a named checkpoint),
    :class:`NotCovered` (the entry is newer than the checkpoint, or none is signed
    yet) or :class:`LedgerInconsistent` (the stored leaves do not give the signed
    root)."""
    row = await connection.fetchrow(ENTRY, event_id)
    if row is None:
        raise UnknownEvent(event_id)
    try:
        number, signed = await checkpoint(connection, checkpoint_id)
    except UnknownCheckpoint:
        if checkpoint_id is not None:
            raise
        raise NotCovered(event_id, None, named=False) from None
    head = signed.checkpoint.tree_head(row["kafka_partition"])
    if head is None or row["leaf_index"] >= head.size:
        raise NotCovered(event_id, number, named=checkpoint_id is not None)
    entry = LedgerEntry(
        event_id, row["kafka_partition"], row["kafka_offset"],
        from_micros(row["recorded_us"]), bytes(row["payload_sha256"]),
    )  # fmt: skip
    hashes = await leaf_hashes(connection, entry.partition, head.size)
    try:
        document = build_inclusion_document(entry, row["leaf_index"], hashes, signed)
    except ValueError as exc:
        raise LedgerInconsistent(f"no inclusion proof of {event_id!r}: {exc}") from None
    document["checkpoint_id"] = number
    return document


async def consistency_proof_between(
    connection: asyncpg.Connection, old_id: int, new_id: int
) -> dict[str, Any]:
    """The consistency proof document from checkpoint ``old_id`` to ``new_id``.

    Raises :class:`UnknownCheckpoint`, or :class:`LedgerInconsistent` when no proof
    can be built (different logs, a shrunk or rewritten log)."""
    _, old = await checkpoint(connection, old_id)
    _, new = await checkpoint(connection, new_id)
    hashes = {}
    for head in new.checkpoint.tree_heads:
        hashes[head.partition] = await leaf_hashes(connection, head.partition, head.size)
    try:
        return build_consistency_document(old, new, hashes)
    except ValueError as exc:
        raise LedgerInconsistent(
            f"no consistency proof from checkpoint {old_id} to {new_id}: {exc}"
        ) from None


@dataclass(frozen=True, slots=True)
class Divergence:
    """Where the stored ledger stops agreeing with itself or its checkpoints."""

    partition: int
    index: int | None
    event_id: str | None
    problem: str

    def __str__(self) -> str:
        where = f"partition {self.partition}"
        if self.index is not None:
            where += f", index {self.index}"
        if self.event_id is not None:
            where += f", event {self.event_id}"
        return f"{where}: {self.problem}"


@dataclass(slots=True)
class AuditReport:
    entries: int = 0
    partitions: int = 0
    checkpoints: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    forged_checkpoints: list[int] = field(default_factory=list)  # signature does not verify
    other_keys: set[str] = field(default_factory=set)  # key ids those claim, not the given key's
    coverage: list[PartitionCoverage] = field(default_factory=list)  # by partition
    # Trusted checkpoints whose signature does not verify (source, why), and the
    # partitions that no longer hold a tree one of the others signed (source, how).
    untrusted: list[tuple[str, str]] = field(default_factory=list)
    trees_not_held: list[tuple[str, TreeNotHeld]] = field(default_factory=list)
    # Trusted checkpoints whose signature holds, of this ledger's log: each
    # held unless it is named in trees_not_held (see ``trusted_still_held``).
    trusted_checked: list[TrustedCheckpoint] = field(default_factory=list)
    # Checkpoint number: the key id it names, when no key given has that id (it
    # cannot be checked; counted among forged_checkpoints, as it proves nothing).
    signed_by_other_key: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Nothing is wrong: no divergence, forgery, or trusted tree lost."""
        return (
            not self.divergences
            and not self.forged_checkpoints
            and not self.untrusted
            and not self.trees_not_held
        )

    @property
    def trusted_still_held(self) -> list[TrustedCheckpoint]:
        """The trusted checkpoints every partition still holds the signed tree of:
        what lets ``verify`` say so, one line each, rather than stay silent."""
        lost = {source for source, _ in self.trees_not_held}
        return [kept for kept in self.trusted_checked if kept.source not in lost]

    @property
    def signed_entries(self) -> int:
        return sum(partition.signed for partition in self.coverage)

    @property
    def unsigned_entries(self) -> int:
        return sum(partition.unsigned for partition in self.coverage)


async def verify_ledger(
    connection: asyncpg.Connection,
    public_key: PublicKeys,
    kept_elsewhere: Sequence[TrustedCheckpoint] = (),
) -> AuditReport:
    """Recompute everything from the stored entries; see the module docstring.

    ``kept_elsewhere``: checkpoints the auditor kept outside the database; each must
    verify under ``public_key``, and every partition must still hold the tree
    each signed. Their partitions are verified even when the ledger no longer
    has any entry or Merkle log of them. Each checkpoint is checked with the key
    its key id names, among those given (several after a rotation)."""
    keys = keys_by_id(public_key)
    report = AuditReport()
    held = []  # the trusted checkpoints whose signature holds
    for kept in kept_elsewhere:
        kept_key = keys.get(kept.signed.key_id)
        if kept_key is not None and verify_checkpoint(kept.signed, kept_key):
            held.append(kept)
        elif kept_key is None:
            report.untrusted.append(
                (kept.source, f"names signing key {kept.signed.key_id}, which was not given "
                 f"(given: {', '.join(keys)})")
            )  # fmt: skip
        else:
            report.untrusted.append((kept.source, "signature does not verify: forged or altered"))
    checkpoints = [
        (row["id"], SignedCheckpoint.from_json(row["document"]))
        for row in await connection.fetch(ALL_CHECKPOINTS)
    ]
    report.checkpoints = len(checkpoints)
    trusted = []  # a checkpoint whose signature fails proves nothing about the entries
    for number, signed in checkpoints:
        key = keys.get(signed.key_id)
        if key is not None and verify_checkpoint(signed, key):
            trusted.append((number, signed))
        else:
            report.forged_checkpoints.append(number)
            if key is None:
                report.other_keys.add(signed.key_id)
                report.signed_by_other_key[number] = signed.key_id
    checkpoints = trusted
    logs = {signed.checkpoint.log_id for _, signed in checkpoints}
    for kept in list(held):
        if logs and kept.signed.checkpoint.log_id not in logs:
            # Another ledger's checkpoint (staging, another LEDGER_LOG_ID) would
            # read as a rewrite of every partition: say what it is instead.
            held.remove(kept)
            report.untrusted.append(
                (kept.source, f"is a checkpoint of log {kept.signed.checkpoint.log_id!r}, "
                 f"this ledger's checkpoints are of {', '.join(map(repr, sorted(logs)))}")
            )  # fmt: skip
    partitions = {row[0] for row in await connection.fetch(PARTITIONS)}
    partitions |= {
        head.partition for _, signed in checkpoints for head in signed.checkpoint.tree_heads
    }
    stored_logs = await stored_frontiers(connection)
    partitions |= set(stored_logs)
    partitions |= {head.partition for kept in held for head in kept.signed.checkpoint.tree_heads}
    epoch_starts: dict[int, set[int]] = {}
    for row in await connection.fetch(EPOCH_STARTS):
        epoch_starts.setdefault(row[0], set()).add(row[1])
    report.partitions = len(partitions)
    report.trusted_checked = list(held)
    for partition in sorted(partitions):
        rows = await connection.fetch(PARTITION_ENTRIES, partition)
        report.entries += len(rows)
        sizes = {
            head.size: (number, head.root)
            for number, signed in checkpoints
            for head in signed.checkpoint.tree_heads
            if head.partition == partition
        }
        divergence = _verify_partition(
            partition, rows, sizes, stored_logs.get(partition), epoch_starts.get(partition, set())
        )
        if divergence is not None:
            report.divergences.append(divergence)
        leaves = [bytes(row["leaf_hash"]) for row in rows]  # recomputed above, when no divergence
        signed_size, signed_by = max(
            ((size, number) for size, (number, _) in sizes.items()), default=(0, None)
        )
        kept_heads = [
            (kept.source, head)
            for kept in held
            if (head := kept.signed.checkpoint.tree_head(partition)) is not None
        ]
        answers = check_trees_held([head for _, head in kept_heads], leaves)
        for (source, head), lost in zip(kept_heads, answers, strict=True):
            if lost is not None:
                report.trees_not_held.append((source, lost))
            elif head.size > signed_size:
                signed_size, signed_by = head.size, None
        covered = min(signed_size, len(rows))
        report.coverage.append(
            PartitionCoverage(partition, len(rows), covered, signed_by if covered else None)
        )
    return report


def _verify_partition(
    partition: int,
    rows: Sequence[asyncpg.Record],
    signed_roots: dict[int, tuple[int, bytes]],
    stored_log: MerkleFrontier | None,
    epoch_starts: set[int],
) -> Divergence | None:
    """The first divergence in one partition's log, or None when it all holds.
    Offsets increase along the log, starting over only where a broker epoch begins."""
    frontier = MerkleFrontier()
    previous_offset = before_previous_offset = -1
    last_good = (None, None)
    for expected_index, row in enumerate(rows):
        index, event_id = row["leaf_index"], row["event_id"]
        if index != expected_index:
            return Divergence(
                partition, expected_index, event_id,
                f"entry missing: the log jumps from index {expected_index - 1} to {index}",
            )  # fmt: skip
        payload_sha256 = hashlib.sha256(row["payload"]).digest()
        if payload_sha256 != row["payload_sha256"]:
            return Divergence(
                partition, index, event_id, "stored payload does not match its digest"
            )
        entry = LedgerEntry(
            event_id,
            partition,
            row["kafka_offset"],
            from_micros(row["recorded_us"]),
            payload_sha256,
        )
        leaf = entry.leaf_hash()
        if leaf != row["leaf_hash"]:
            return Divergence(
                partition, index, event_id, "entry does not match its stored leaf hash"
            )
        offset = row["kafka_offset"]
        if index in epoch_starts:
            previous_offset = before_previous_offset = -1
        if previous_offset >= offset > before_previous_offset and last_good[0] != index - 1:
            # This entry still follows the one before the previous, and no checkpoint
            # vouches for the previous one: the previous entry is the one out of place
            # (moved forward, e.g. swapped with a later one).
            return Divergence(
                partition, index - 1, rows[index - 1]["event_id"],
                f"out of order: offset {previous_offset} comes before offset {offset} at index {index}",
            )  # fmt: skip
        if offset <= previous_offset:
            return Divergence(
                partition, index, event_id,
                f"out of order: offset {offset} follows offset {previous_offset}",
            )  # fmt: skip
        previous_offset, before_previous_offset = offset, previous_offset
        frontier.append(leaf)
        signed = signed_roots.get(frontier.size)
        if signed is not None and frontier.root() != signed[1]:
            return Divergence(
                partition, index, event_id,
                f"the first {frontier.size} entries do not give the root checkpoint {signed[0]} signed"
                f" (an entry after index {last_good[0]} was changed, swapped or inserted)",
            )  # fmt: skip
        if signed is not None:
            last_good = (index, event_id)
    largest = max(signed_roots, default=0)
    if largest > frontier.size:
        number = signed_roots[largest][0]
        return Divergence(
            partition, frontier.size, None,
            f"log truncated: {frontier.size} entries, checkpoint {number} signed {largest}",
        )  # fmt: skip
    if stored_log is not None and (stored_log.size, stored_log.root()) != (
        frontier.size,
        frontier.root(),
    ):
        return Divergence(
            partition, min(stored_log.size, frontier.size), None,
            f"the stored Merkle log head (size {stored_log.size}) differs from the entries ({frontier.size})",
        )  # fmt: skip
    return None
