"""What a verification vouches for: signed coverage, and checkpoints an auditor kept.

A signed checkpoint is what an outsider can hold the ledger to (CONTRACT §10).
Entries after the latest one are only consistent with each other: anyone who
can write the database can rewrite them, and their Merkle log with them,
without a trace. Two things here say how far a verification reaches:

* :class:`PartitionCoverage`: per partition, how many entries a checkpoint
  whose signature holds covers, and how many follow it unsigned.
* :func:`check_tree_held` (:func:`check_trees_held` for many): whether a
  partition's log still holds a tree that a
  *trusted* checkpoint signed, one the auditor kept outside the database
  (``consent-ledger checkpoint save``, a witness, topic ``ledger.checkpoints``).
  Stored checkpoints can be deleted together with what they signed; a kept
  one cannot. The log holds the trusted tree when its first ``size`` leaves
  give the signed root, which is what an RFC 9162 consistency proof from
  the trusted tree to the current one shows (§2.1.4); the proof is built from
  the current leaves and checked with the RFC's verifier, as an auditor with
  only the two tree heads and the proof would.

A trusted checkpoint file (:func:`parse_trusted_checkpoint`) is UTF-8 JSON in
one of two shapes:

* what ``GET /v1/ledger/checkpoints/latest`` answers and ``consent-ledger
  checkpoint save`` writes: ``{"id": <int>, "checkpoint": <signed checkpoint>}``;
  ``id`` is the ledger's number for it (unsigned: a hint to ask proofs against
  it, ``?checkpoint=<id>``, never evidence);
* a signed checkpoint alone (``SignedCheckpoint.to_json()``), as a witness or
  topic ``ledger.checkpoints`` hands it on.

No I/O here: callers read files and entries and pass the bytes and hashes.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from consent_ledger.integrity.checkpoints import SignedCheckpoint, TreeHead
from consent_ledger.integrity.merkle import (
    EMPTY_ROOT,
    MerkleFrontier,
    consistency_proof,
    root_from_leaf_hashes,
    verify_consistency,
)

__all__ = [
    "PartitionCoverage",
    "TreeBreak",
    "TreeNotHeld",
    "TrustedCheckpoint",
    "anchor_consistency",
    "anchor_inclusion",
    "check_tree_held",
    "check_trees_held",
    "parse_trusted_checkpoint",
]


@dataclass(frozen=True, slots=True)
class TrustedCheckpoint:
    """A signed checkpoint the auditor kept, and where it came from.

    ``stored_id`` is the id the file carried (``{"id", "checkpoint"}`` shape),
    None for a bare signed checkpoint. The signature is not checked here.
    """

    source: str
    signed: SignedCheckpoint
    stored_id: int | None = None


def parse_trusted_checkpoint(content: bytes, source: str) -> TrustedCheckpoint:
    """Parse a trusted checkpoint file (both shapes in the module docstring).

    Raises ValueError naming ``source`` and what is wrong; does not verify.
    """
    try:
        data: Any = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{source} is not JSON: {exc}") from None
    stored_id = None
    if isinstance(data, dict) and set(data) == {"id", "checkpoint"}:
        if type(data["id"]) is not int or data["id"] < 1:
            raise ValueError(f"{source}: id must be a positive integer")
        stored_id, data = data["id"], data["checkpoint"]
    try:
        signed = SignedCheckpoint.from_json_dict(data)
    except ValueError as exc:
        raise ValueError(f"{source} is not a signed checkpoint: {exc}") from None
    return TrustedCheckpoint(source, signed, stored_id)


class TreeBreak(enum.Enum):
    """How a partition's log fails to hold a tree a trusted checkpoint signed."""

    VANISHED = "vanished"
    """The partition has no entries at all, though the trusted tree has some."""
    SHRANK = "shrank"
    """Fewer entries than the trusted tree had."""
    DIVERGED = "diverged"
    """The first ``size`` entries no longer give the signed root: rewritten."""


@dataclass(frozen=True, slots=True)
class TreeNotHeld:
    """One partition that no longer holds the tree a trusted checkpoint signed."""

    partition: int
    trusted_size: int
    current_size: int
    problem: TreeBreak

    def describe(self) -> str:
        """One line for a person: the partition, both sizes, what happened."""
        where = f"partition {self.partition}"
        if self.problem is TreeBreak.VANISHED:
            return f"{where} vanished: the trusted checkpoint signed {self.trusted_size} entries, the ledger holds none"
        if self.problem is TreeBreak.SHRANK:
            return (
                f"{where} shrank: the trusted checkpoint signed {self.trusted_size} entries, "
                f"the ledger holds {self.current_size}"
            )
        return (
            f"{where} diverged: its first {self.trusted_size} of {self.current_size} entries do "
            "not give the root the trusted checkpoint signed (no RFC 9162 consistency proof "
            "leads from it to the current tree): entries were rewritten, removed or inserted"
        )


def check_tree_held(head: TreeHead, leaf_hashes: Sequence[bytes]) -> TreeNotHeld | None:
    """None when the log whose leaves are ``leaf_hashes`` (in log order) still holds
    the tree ``head`` signed: the same tree, or a larger one consistent with it.

    Costs O(n) hashing for n current leaves (the proof's subtree roots).
    """
    current = len(leaf_hashes)
    if current < head.size:
        problem = TreeBreak.VANISHED if current == 0 else TreeBreak.SHRANK
        return TreeNotHeld(head.partition, head.size, current, problem)
    if head.size == 0:
        if head.root == EMPTY_ROOT:
            return None
        return TreeNotHeld(head.partition, 0, current, TreeBreak.DIVERGED)
    proof = consistency_proof(leaf_hashes, head.size, current)
    current_root = root_from_leaf_hashes(leaf_hashes)
    if verify_consistency(head.size, current, head.root, current_root, proof):
        return None
    return TreeNotHeld(head.partition, head.size, current, TreeBreak.DIVERGED)


def check_trees_held(
    heads: Sequence[TreeHead], leaf_hashes: Sequence[bytes]
) -> list[TreeNotHeld | None]:
    """:func:`check_tree_held` for several kept trees of one partition, in one pass.

    An auditor who saves a checkpoint every hour holds thousands; a proof per
    kept tree would cost a pass over the leaves each. Here a
    :class:`~consent_ledger.integrity.merkle.MerkleFrontier` runs over the leaves
    once and gives the root of the first ``m`` leaves at every kept size ``m``
    (O(n + k log n) hashing): a kept tree is held exactly when that root is
    the kept one, which is when an RFC 9162 consistency proof from it to the
    current tree exists. The largest held tree is then proven consistent with
    the current tree by that proof (:func:`check_tree_held`); the smaller held
    ones are prefixes of the same leaves.

    Returns one answer per head, in the order given.
    """
    current = len(leaf_hashes)
    wanted = sorted({head.size for head in heads if head.size <= current})
    roots: dict[int, bytes] = {}
    frontier = MerkleFrontier()
    for size in wanted:
        frontier.extend(leaf_hashes[frontier.size : size])
        roots[size] = frontier.root()
    answers: list[TreeNotHeld | None] = []
    largest_held: TreeHead | None = None
    for head in heads:
        if head.size > current:
            problem = TreeBreak.VANISHED if current == 0 else TreeBreak.SHRANK
            answers.append(TreeNotHeld(head.partition, head.size, current, problem))
        elif roots[head.size] != head.root:
            answers.append(TreeNotHeld(head.partition, head.size, current, TreeBreak.DIVERGED))
        else:
            answers.append(None)
            if largest_held is None or head.size > largest_held.size:
                largest_held = head
    if largest_held is not None and check_tree_held(largest_held, leaf_hashes) is not None:
        # Not reached while merkle.py agrees with itself: the prefix root matched.
        raise AssertionError("a prefix root matched but its consistency proof does not verify")
    return answers


@dataclass(frozen=True, slots=True)
class PartitionCoverage:
    """How much of one partition a checkpoint whose signature holds vouches for.

    ``signed`` entries (the log's first ``signed`` leaves) are covered by
    checkpoint ``checkpoint_id`` (a stored checkpoint's id; None when only a
    trusted checkpoint, or nothing, covers them); the ``entries - signed``
    after them are the unsigned tail.
    """

    partition: int
    entries: int
    signed: int
    checkpoint_id: int | None = None

    @property
    def unsigned(self) -> int:
        return max(self.entries - self.signed, 0)

    def describe(self) -> str:
        """``partition 0: 1229 entries, 1200 signed (checkpoint 7), 29 unsigned``."""
        by = f" (checkpoint {self.checkpoint_id})" if self.checkpoint_id is not None else ""
        if self.signed and self.checkpoint_id is None:
            by = " (a trusted checkpoint)"
        return (
            f"partition {self.partition}: {self.entries} entries, "
            f"{self.signed} signed{by}, {self.unsigned} unsigned"
        )


def anchor_inclusion(
    proved: SignedCheckpoint, partition: int, trusted: SignedCheckpoint
) -> str | None:
    """None when an inclusion proof against ``proved`` (already verified) shows
    the entry in the very tree ``trusted`` signed for ``partition``; else why not.

    The tree must be the same (size and root): a proof against another tree
    says nothing about the trusted one until a consistency proof joins them.
    """
    head, kept = proved.checkpoint.tree_head(partition), trusted.checkpoint.tree_head(partition)
    if kept is None:
        return f"the trusted checkpoint does not cover partition {partition}"
    if head == kept:
        return None
    size = head.size if head is not None else 0
    return (
        f"the proof is against partition {partition}'s tree of {size} entries, the trusted "
        f"checkpoint signed {kept.size}: ask the inclusion proof against the trusted "
        "checkpoint (?checkpoint=<its id>), or first check a consistency proof from it"
    )


def anchor_consistency(
    old: SignedCheckpoint, new: SignedCheckpoint, trusted: SignedCheckpoint
) -> str | None:
    """None when a consistency proof from ``old`` to ``new`` (already verified)
    starts or ends at the trees ``trusted`` signed: every tree head and the
    log the same. Else why not."""
    kept = trusted.checkpoint
    for end in (old.checkpoint, new.checkpoint):
        if end.log_id == kept.log_id and end.tree_heads == kept.tree_heads:
            return None
    return (
        "neither checkpoint of the proof signs the trees of the trusted checkpoint (issued "
        f"{kept.issued_at.isoformat()}): ask the proof from it (?from=<its id>)"
    )
