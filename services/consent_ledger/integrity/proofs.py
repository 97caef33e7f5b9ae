"""Proof documents an auditor can check offline, and the functions that build and check them.

Two JSON documents, both self-contained: with the ledger's Ed25519 public key
and nothing else, :func:`verify_inclusion_document` and
:func:`verify_consistency_document` decide whether they hold. Hashes are
standard base64 with padding (32 bytes); ``payload_sha256`` is hex, as
``sha256sum`` prints it, so it can be compared with the stored ciphertext's
digest directly. Unknown fields are refused rather than ignored, so nothing in a
document can look verified without having been checked.

Inclusion proof: "this entry is leaf ``leaf_index`` of partition
``partition``'s log in the tree the checkpoint signs"::

    {
      "format": "consent-ledger/inclusion-proof/v1",
      "entry": {"version": 1, "event_id": "evt-1", "partition": 0, "offset": 41,
                "recorded_at": "2026-03-01T08:00:00.123456Z",
                "payload_sha256": "<64 hex>"},
      "partition": 0,
      "leaf_index": 17,
      "tree_size": 100,
      "leaf_hash": "<base64 of SHA-256(0x00 || encoded entry)>",
      "audit_path": ["<base64>", ...],
      "checkpoint": <signed checkpoint JSON, see checkpoints.py>
    }

``entry`` is the :class:`~.entry.LedgerEntry` JSON form; the leaf hash is
recomputed from it (its canonical encoding), the stated ``leaf_hash`` is only
there to say precisely whether the entry or the path is what broke.
``audit_path`` is RFC 9162 ``PATH(leaf_index, D[tree_size])``, leaf to root.
``leaf_index`` is the position in the partition's Merkle log, not the Kafka
offset (offsets of rejected and duplicate records have no leaf).
``tree_size`` must equal the checkpoint's size for ``partition``.

Consistency proof: "every partition's log in the new checkpoint extends the
same partition's log in the old one, nothing rewritten"::

    {
      "format": "consent-ledger/consistency-proof/v1",
      "old_checkpoint": <signed checkpoint JSON>,
      "new_checkpoint": <signed checkpoint JSON>,
      "partitions": [
        {"partition": 0, "old_size": 12, "new_size": 40, "path": ["<base64>", ...]},
        ...
      ]
    }

``partitions`` has exactly one item per partition of the old checkpoint
(ascending), each ``path`` being RFC 9162 ``PROOF(old_size, D[new_size])``;
it is empty when the sizes are equal or ``old_size`` is 0. Partitions that
only the new checkpoint has need no proof (every log extends the empty log).
Both checkpoints must be signed by the key given, carry the same ``log_id``,
and the new one must not be issued before the old one.

Everything here is pure: no I/O, no clock.

Size: about 530 lines of one concept: the two proof documents, built and
checked, with every way a check fails named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consent_ledger.integrity.checkpoints import (
    SignedCheckpoint,
    b64decode,
    b64encode,
    key_id,
    verify_checkpoint,
)
from consent_ledger.integrity.entry import LedgerEntry, format_timestamp
from consent_ledger.integrity.merkle import (
    HASH_SIZE,
    consistency_proof,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "CONSISTENCY_PROOF_FORMAT",
    "INCLUSION_PROOF_FORMAT",
    "Failure",
    "VerificationResult",
    "build_consistency_document",
    "build_inclusion_document",
    "verify_consistency_document",
    "verify_inclusion_document",
]

INCLUSION_PROOF_FORMAT: Final = "consent-ledger/inclusion-proof/v1"
CONSISTENCY_PROOF_FORMAT: Final = "consent-ledger/consistency-proof/v1"

_INCLUSION_KEYS: Final = frozenset(
    {
        "format",
        "entry",
        "partition",
        "leaf_index",
        "tree_size",
        "leaf_hash",
        "audit_path",
        "checkpoint",
    }
)
_CONSISTENCY_KEYS: Final = frozenset({"format", "old_checkpoint", "new_checkpoint", "partitions"})
_PARTITION_PROOF_KEYS: Final = frozenset({"partition", "old_size", "new_size", "path"})


class Failure(StrEnum):
    """Why a proof document does not hold, one value per distinct cause."""

    MALFORMED = "malformed"
    """Not the documented shape: missing or unknown field, wrong type, bad base64."""
    UNSUPPORTED_FORMAT = "unsupported-format"
    """``format`` names a document type or version this verifier does not know."""
    UNKNOWN_KEY = "unknown-key"
    """A checkpoint's ``key_id`` is not the id of any public key given."""
    BAD_SIGNATURE = "bad-signature"
    """A checkpoint's signature does not match its content: forged or altered."""
    ENTRY_PARTITION_MISMATCH = "entry-partition-mismatch"
    """The entry's own partition differs from the partition the proof is about."""
    PARTITION_NOT_IN_CHECKPOINT = "partition-not-in-checkpoint"
    """The checkpoint has no tree head for the partition."""
    TREE_SIZE_MISMATCH = "tree-size-mismatch"
    """The proof's ``tree_size`` is not the checkpoint's size for the partition."""
    LEAF_INDEX_OUT_OF_RANGE = "leaf-index-out-of-range"
    """``leaf_index`` is not below ``tree_size``."""
    LEAF_HASH_MISMATCH = "leaf-hash-mismatch"
    """The entry fields do not hash to the stated ``leaf_hash``: the entry was altered."""
    INCLUSION_PATH_INVALID = "inclusion-path-invalid"
    """The audit path does not lead from the leaf to the signed root."""
    LOG_ID_MISMATCH = "log-id-mismatch"
    """The two checkpoints are of different logs."""
    CHECKPOINTS_OUT_OF_ORDER = "checkpoints-out-of-order"
    """The new checkpoint was issued before the old one."""
    PARTITION_MISSING = "partition-missing"
    """A partition of the old checkpoint is absent from the new one."""
    PARTITION_PROOF_MISSING = "partition-proof-missing"
    """No proof item for a partition of the old checkpoint."""
    PARTITION_SIZE_MISMATCH = "partition-size-mismatch"
    """A proof item's sizes are not the checkpoints' sizes for that partition."""
    TREE_SHRANK = "tree-shrank"
    """A partition's log is smaller in the new checkpoint than in the old one."""
    CONSISTENCY_PATH_INVALID = "consistency-path-invalid"
    """The path does not show the old tree to be a prefix of the new one."""


@dataclass(frozen=True, slots=True)
class VerificationResult:
    """The outcome of checking a proof document; truthy exactly when it holds.

    On failure, ``failure`` is the first check that failed, ``detail`` says it
    in words and ``partition`` names the partition concerned when there is one.
    """

    ok: bool
    detail: str
    failure: Failure | None = None
    partition: int | None = None

    def __bool__(self) -> bool:
        return self.ok

    @classmethod
    def success(cls, detail: str) -> VerificationResult:
        return cls(ok=True, detail=detail)

    @classmethod
    def failed(
        cls, failure: Failure, detail: str, partition: int | None = None
    ) -> VerificationResult:
        return cls(ok=False, detail=detail, failure=failure, partition=partition)


class _Malformed(Exception):
    """Internal: the document is not the documented shape."""


def _int_field(data: Mapping[str, Any], name: str, where: str) -> int:
    value = data[name]
    if type(value) is not int or value < 0:
        raise _Malformed(f"{where}{name} must be a non-negative integer")
    return value


def _hash_list(value: Any, where: str) -> list[bytes]:
    if not isinstance(value, list):
        raise _Malformed(f"{where} must be a list of base64 hashes")
    try:
        return [b64decode(item, HASH_SIZE, f"{where}[{i}]") for i, item in enumerate(value)]
    except ValueError as exc:
        raise _Malformed(str(exc)) from None


def _check_shape(doc: Any, keys: frozenset[str], expected_format: str) -> VerificationResult | None:
    if not isinstance(doc, Mapping):
        return VerificationResult.failed(Failure.MALFORMED, "the document is not a JSON object")
    if "format" not in doc:
        return VerificationResult.failed(Failure.MALFORMED, "the document has no format field")
    if doc["format"] != expected_format:
        return VerificationResult.failed(
            Failure.UNSUPPORTED_FORMAT,
            f"format is {doc['format']!r}, this verifier checks {expected_format!r}",
        )
    if set(doc) != keys:
        missing = sorted(keys - set(doc))
        extra = sorted(set(doc) - keys)
        return VerificationResult.failed(
            Failure.MALFORMED, f"fields wrong: missing {missing}, unexpected {extra}"
        )
    return None


def _parse_checkpoint(data: Any, name: str) -> SignedCheckpoint:
    try:
        return SignedCheckpoint.from_json_dict(data)
    except ValueError as exc:
        raise _Malformed(f"{name}: {exc}") from None


PublicKeys = Ed25519PublicKey | Sequence[Ed25519PublicKey]
"""One public key, or several (a ledger whose signing key rotated): each
checkpoint is checked with the key its ``key_id`` names."""


def keys_by_id(public_keys: PublicKeys) -> dict[str, Ed25519PublicKey]:
    keys = [public_keys] if isinstance(public_keys, Ed25519PublicKey) else public_keys
    return {key_id(key): key for key in keys}


def _check_signature(
    signed: SignedCheckpoint, public_keys: PublicKeys, name: str
) -> VerificationResult | None:
    given = keys_by_id(public_keys)
    public_key = given.get(signed.key_id)
    if public_key is None:
        return VerificationResult.failed(
            Failure.UNKNOWN_KEY,
            f"{name} names key {signed.key_id!r}, which is not among the keys given "
            f"({', '.join(repr(known) for known in given)})",
        )
    if not verify_checkpoint(signed, public_key):
        return VerificationResult.failed(
            Failure.BAD_SIGNATURE,
            f"{name}'s signature does not match its content (forged or altered)",
        )
    return None


def verify_inclusion_document(doc: Any, public_key: PublicKeys) -> VerificationResult:
    """Check an inclusion proof document (format in the module docstring).

    In order: shape, checkpoint signature, that the checkpoint covers the
    partition at ``tree_size``, that the entry hashes to ``leaf_hash``, that
    the audit path leads to the signed root. Never raises on bad input.
    """
    problem = _check_shape(doc, _INCLUSION_KEYS, INCLUSION_PROOF_FORMAT)
    if problem is not None:
        return problem
    try:
        try:
            entry = LedgerEntry.from_json_dict(doc["entry"])
        except ValueError as exc:
            raise _Malformed(f"entry: {exc}") from None
        partition = _int_field(doc, "partition", "")
        leaf_index = _int_field(doc, "leaf_index", "")
        tree_size = _int_field(doc, "tree_size", "")
        try:
            stated_leaf_hash = b64decode(doc["leaf_hash"], HASH_SIZE, "leaf_hash")
        except ValueError as exc:
            raise _Malformed(str(exc)) from None
        path = _hash_list(doc["audit_path"], "audit_path")
        signed = _parse_checkpoint(doc["checkpoint"], "checkpoint")
    except _Malformed as exc:
        return VerificationResult.failed(Failure.MALFORMED, str(exc))

    problem = _check_signature(signed, public_key, "checkpoint")
    if problem is not None:
        return problem
    if entry.partition != partition:
        return VerificationResult.failed(
            Failure.ENTRY_PARTITION_MISMATCH,
            f"the entry is in partition {entry.partition}, the proof is for {partition}",
            partition,
        )
    head = signed.checkpoint.tree_head(partition)
    if head is None:
        return VerificationResult.failed(
            Failure.PARTITION_NOT_IN_CHECKPOINT,
            f"the checkpoint has no tree head for partition {partition}",
            partition,
        )
    if head.size != tree_size:
        return VerificationResult.failed(
            Failure.TREE_SIZE_MISMATCH,
            f"the proof is for tree size {tree_size}, the checkpoint signs size {head.size}",
            partition,
        )
    if leaf_index >= tree_size:
        return VerificationResult.failed(
            Failure.LEAF_INDEX_OUT_OF_RANGE,
            f"leaf index {leaf_index} is not below tree size {tree_size}",
            partition,
        )
    computed = entry.leaf_hash()
    if computed != stated_leaf_hash:
        return VerificationResult.failed(
            Failure.LEAF_HASH_MISMATCH,
            f"the entry fields hash to {b64encode(computed)}, the proof states "
            f"{b64encode(stated_leaf_hash)}: the entry was altered",
            partition,
        )
    if not verify_inclusion(computed, leaf_index, tree_size, path, head.root):
        return VerificationResult.failed(
            Failure.INCLUSION_PATH_INVALID,
            f"the audit path does not lead from leaf {leaf_index} to the signed root "
            f"of partition {partition} at size {tree_size}",
            partition,
        )
    return VerificationResult.success(
        f"event {entry.event_id!r} is leaf {leaf_index} of partition {partition} "
        f"(size {tree_size}) in checkpoint {signed.checkpoint.log_id!r} issued "
        f"{format_timestamp(signed.checkpoint.issued_at)}, signed by key {signed.key_id}"
    )


def _parse_partition_proofs(value: Any) -> dict[int, tuple[int, int, list[bytes]]]:
    if not isinstance(value, list):
        raise _Malformed("partitions must be a list")
    proofs: dict[int, tuple[int, int, list[bytes]]] = {}
    for i, item in enumerate(value):
        where = f"partitions[{i}]."
        if not isinstance(item, Mapping) or set(item) != _PARTITION_PROOF_KEYS:
            raise _Malformed(
                f"partitions[{i}] must have exactly partition, old_size, new_size, path"
            )
        partition = _int_field(item, "partition", where)
        if partition in proofs:
            raise _Malformed(f"partition {partition} has two proof items")
        proofs[partition] = (
            _int_field(item, "old_size", where),
            _int_field(item, "new_size", where),
            _hash_list(item["path"], f"{where}path"),
        )
    return proofs


def verify_consistency_document(doc: Any, public_key: PublicKeys) -> VerificationResult:
    """Check a consistency proof document (format in the module docstring).

    In order: shape, both signatures, same log, issue order, then per
    partition of the old checkpoint (ascending): present in the new one, a
    proof item with the checkpoints' sizes, no shrinking, a valid path. The
    first failure is returned. Never raises on bad input.
    """
    problem = _check_shape(doc, _CONSISTENCY_KEYS, CONSISTENCY_PROOF_FORMAT)
    if problem is not None:
        return problem
    try:
        old = _parse_checkpoint(doc["old_checkpoint"], "old_checkpoint")
        new = _parse_checkpoint(doc["new_checkpoint"], "new_checkpoint")
        proofs = _parse_partition_proofs(doc["partitions"])
    except _Malformed as exc:
        return VerificationResult.failed(Failure.MALFORMED, str(exc))

    for signed, name in ((old, "old_checkpoint"), (new, "new_checkpoint")):
        problem = _check_signature(signed, public_key, name)
        if problem is not None:
            return problem
    old_cp, new_cp = old.checkpoint, new.checkpoint
    if old_cp.log_id != new_cp.log_id:
        return VerificationResult.failed(
            Failure.LOG_ID_MISMATCH,
            f"old checkpoint is of log {old_cp.log_id!r}, new one of {new_cp.log_id!r}",
        )
    if new_cp.issued_at < old_cp.issued_at:
        return VerificationResult.failed(
            Failure.CHECKPOINTS_OUT_OF_ORDER,
            f"new checkpoint issued {format_timestamp(new_cp.issued_at)}, before the old one "
            f"({format_timestamp(old_cp.issued_at)})",
        )
    old_partitions = {head.partition for head in old_cp.tree_heads}
    stray = sorted(set(proofs) - old_partitions)
    if stray:
        return VerificationResult.failed(
            Failure.MALFORMED,
            f"proof items for partitions {stray}, which the old checkpoint does not cover",
            stray[0],
        )
    for old_head in old_cp.tree_heads:
        p = old_head.partition
        new_head = new_cp.tree_head(p)
        if new_head is None:
            return VerificationResult.failed(
                Failure.PARTITION_MISSING, f"partition {p} is missing from the new checkpoint", p
            )
        if p not in proofs:
            return VerificationResult.failed(
                Failure.PARTITION_PROOF_MISSING, f"no proof item for partition {p}", p
            )
        old_size, new_size, path = proofs[p]
        if (old_size, new_size) != (old_head.size, new_head.size):
            return VerificationResult.failed(
                Failure.PARTITION_SIZE_MISMATCH,
                f"partition {p}: proof is for sizes {old_size} -> {new_size}, the checkpoints "
                f"sign {old_head.size} -> {new_head.size}",
                p,
            )
        if new_size < old_size:
            return VerificationResult.failed(
                Failure.TREE_SHRANK,
                f"partition {p} shrank from {old_size} to {new_size} leaves",
                p,
            )
        if not verify_consistency(old_size, new_size, old_head.root, new_head.root, path):
            return VerificationResult.failed(
                Failure.CONSISTENCY_PATH_INVALID,
                f"partition {p}: the path does not show the tree of {old_size} leaves to be "
                f"a prefix of the tree of {new_size} leaves",
                p,
            )
    return VerificationResult.success(
        f"log {new_cp.log_id!r}: checkpoint issued {format_timestamp(new_cp.issued_at)} extends "
        f"the one issued {format_timestamp(old_cp.issued_at)} in all "
        f"{len(old_cp.tree_heads)} partition(s), signed by key {new.key_id}"
    )


def build_inclusion_document(
    entry: LedgerEntry,
    leaf_index: int,
    leaf_hashes: Sequence[bytes],
    signed: SignedCheckpoint,
) -> dict[str, Any]:
    """The inclusion proof of ``entry`` against ``signed``, as a JSON-ready dict.

    ``leaf_hashes`` are the leaf hashes of the entry's partition in log order,
    at least as many as the checkpoint's size for that partition (extra later
    leaves are ignored). Costs O(tree size) hashing. The path is verified
    against the signed root before it is returned, so a document built here
    never fails :func:`verify_inclusion_document` for a wrong-leaves reason.

    Raises:
        ValueError: the checkpoint does not cover the partition, the index is
            outside the signed tree, ``leaf_hashes[leaf_index]`` is not the
            entry's leaf hash, or the leaf hashes do not give the signed root.
    """
    head = signed.checkpoint.tree_head(entry.partition)
    if head is None:
        raise ValueError(f"the checkpoint does not cover partition {entry.partition}")
    if not 0 <= leaf_index < head.size:
        raise ValueError(f"leaf index {leaf_index} is outside the signed tree of {head.size}")
    if len(leaf_hashes) < head.size:
        raise ValueError(f"{len(leaf_hashes)} leaf hashes given, the signed tree has {head.size}")
    computed = entry.leaf_hash()
    if leaf_hashes[leaf_index] != computed:
        raise ValueError(f"leaf {leaf_index} of partition {entry.partition} is not this entry")
    path = inclusion_proof(leaf_hashes, leaf_index, head.size)
    if not verify_inclusion(computed, leaf_index, head.size, path, head.root):
        raise ValueError(
            f"the leaf hashes of partition {entry.partition} do not give the signed root"
        )
    return {
        "format": INCLUSION_PROOF_FORMAT,
        "entry": entry.to_json_dict(),
        "partition": entry.partition,
        "leaf_index": leaf_index,
        "tree_size": head.size,
        "leaf_hash": b64encode(computed),
        "audit_path": [b64encode(h) for h in path],
        "checkpoint": signed.to_json_dict(),
    }


def build_consistency_document(
    old: SignedCheckpoint,
    new: SignedCheckpoint,
    leaf_hashes: Mapping[int, Sequence[bytes]],
) -> dict[str, Any]:
    """The consistency proof from ``old`` to ``new``, as a JSON-ready dict.

    ``leaf_hashes`` maps a partition to its leaf hashes in log order (at least
    the new checkpoint's size); only partitions that grew from a non-empty
    tree need to be present. Each path is verified against both signed roots
    before it is returned.

    Raises:
        ValueError: different logs, a partition missing from ``new`` or
            shrunk, leaf hashes missing or too few, or leaf hashes that do
            not give the signed roots (the log was rewritten).
    """
    old_cp, new_cp = old.checkpoint, new.checkpoint
    if old_cp.log_id != new_cp.log_id:
        raise ValueError(f"checkpoints of different logs: {old_cp.log_id!r}, {new_cp.log_id!r}")
    items: list[dict[str, Any]] = []
    for old_head in old_cp.tree_heads:
        p = old_head.partition
        new_head = new_cp.tree_head(p)
        if new_head is None:
            raise ValueError(f"partition {p} is missing from the new checkpoint")
        if new_head.size < old_head.size:
            raise ValueError(f"partition {p} shrank from {old_head.size} to {new_head.size}")
        path: list[bytes] = []
        if 0 < old_head.size < new_head.size:
            hashes = leaf_hashes.get(p)
            if hashes is None or len(hashes) < new_head.size:
                raise ValueError(f"partition {p} needs {new_head.size} leaf hashes")
            path = consistency_proof(hashes, old_head.size, new_head.size)
        if not verify_consistency(old_head.size, new_head.size, old_head.root, new_head.root, path):
            raise ValueError(f"partition {p}: the signed roots are not consistent")
        items.append(
            {
                "partition": p,
                "old_size": old_head.size,
                "new_size": new_head.size,
                "path": [b64encode(h) for h in path],
            }
        )
    return {
        "format": CONSISTENCY_PROOF_FORMAT,
        "old_checkpoint": old.to_json_dict(),
        "new_checkpoint": new.to_json_dict(),
        "partitions": items,
    }
