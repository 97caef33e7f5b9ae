"""Ledger entry encoding and the offline inclusion / consistency proof documents."""

from __future__ import annotations

import base64
import calendar
import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consent_ledger.integrity.checkpoints import (
    Checkpoint,
    SignedCheckpoint,
    TreeHead,
    generate_signing_key,
    sign_checkpoint,
)
from consent_ledger.integrity.entry import LedgerEntry, decode_entry, encode_entry
from consent_ledger.integrity.merkle import EMPTY_ROOT, consistency_proof, root_from_leaf_hashes
from consent_ledger.integrity.proofs import (
    CONSISTENCY_PROOF_FORMAT,
    INCLUSION_PROOF_FORMAT,
    Failure,
    build_consistency_document,
    build_inclusion_document,
    verify_consistency_document,
    verify_inclusion_document,
)

pytestmark = pytest.mark.unit

LOG_ID = "consent-ledger/test"
T0 = datetime(2026, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)


def make_entries(partition: int, count: int) -> list[LedgerEntry]:
    return [
        LedgerEntry(
            event_id=f"evt-{partition}-{i}",
            partition=partition,
            offset=2 * i + 1,  # offsets skip: rejected records have no leaf
            recorded_at=T0 + timedelta(milliseconds=i),
            payload_sha256=hashlib.sha256(f"sealed {partition} {i}".encode()).digest(),
        )
        for i in range(count)
    ]


ENTRIES = {0: make_entries(0, 40), 1: make_entries(1, 9), 2: make_entries(2, 3)}
LEAVES = {p: [e.leaf_hash() for e in entries] for p, entries in ENTRIES.items()}


def sign_sizes(
    key: Ed25519PrivateKey,
    sizes: dict[int, int],
    issued_at: datetime = T0,
    log_id: str = LOG_ID,
    leaves: dict[int, list[bytes]] = LEAVES,
) -> SignedCheckpoint:
    heads = tuple(TreeHead(p, n, root_from_leaf_hashes(leaves[p][:n])) for p, n in sizes.items())
    return sign_checkpoint(Checkpoint(log_id, issued_at, heads), key)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def checkpoint(key: Ed25519PrivateKey) -> SignedCheckpoint:
    return sign_sizes(key, {0: 37, 1: 9})


@pytest.fixture
def inclusion_doc(checkpoint: SignedCheckpoint) -> dict[str, Any]:
    return build_inclusion_document(ENTRIES[0][17], 17, LEAVES[0], checkpoint)


# --- entry encoding ----------------------------------------------------------------------


def test_entry_encoding_is_the_documented_layout() -> None:
    digest = hashlib.sha256(b"sealed").digest()
    micros = calendar.timegm((2026, 3, 1, 8, 0, 0)) * 1_000_000 + 123456
    expected = (
        b"CLE\x01"
        + (5).to_bytes(2, "big")
        + b"evt-1"
        + (3).to_bytes(4, "big")
        + (41).to_bytes(8, "big")
        + micros.to_bytes(8, "big", signed=True)
        + digest
    )
    entry = LedgerEntry("evt-1", 3, 41, T0, digest)
    assert entry.encode() == expected
    assert encode_entry("evt-1", 3, 41, T0, digest) == expected
    assert entry.leaf_hash() == hashlib.sha256(b"\x00" + expected).digest()
    assert decode_entry(expected) == entry


def test_entry_encoding_separates_fields() -> None:
    digest = hashlib.sha256(b"x").digest()
    encodings = {
        encode_entry("ab", 1, 2, T0, digest),
        encode_entry("a", 1, 2, T0, digest),
        encode_entry("ab", 2, 1, T0, digest),
        encode_entry("ab", 1, 2, T0 + timedelta(microseconds=1), digest),
        encode_entry("ab", 1, 2, T0, hashlib.sha256(b"y").digest()),
    }
    assert len(encodings) == 5


def test_entry_json_round_trip_and_normalisation() -> None:
    oslo = T0.astimezone(timezone(timedelta(hours=1)))
    entry = LedgerEntry("évt", 0, 0, oslo, b"\x00" * 32)
    assert entry.recorded_at.tzinfo == UTC
    data = entry.to_json_dict()
    assert data["recorded_at"] == "2026-03-01T08:00:00.123456Z"
    assert LedgerEntry.from_json_dict(json.loads(json.dumps(data))) == entry
    data["recorded_at"] = "2026-03-01T09:00:00.123456+01:00"
    assert LedgerEntry.from_json_dict(data) == entry


@pytest.mark.parametrize(
    "kwargs",
    [
        {"event_id": ""},
        {"event_id": "x" * 65536},
        {"partition": -1},
        {"partition": 2**32},
        {"offset": -1},
        {"recorded_at": datetime(2026, 3, 1)},  # naive on purpose
        {"payload_sha256": b"short"},
        {"version": 2},
    ],
)
def test_invalid_entries_are_refused(kwargs: dict[str, Any]) -> None:
    fields: dict[str, Any] = {
        "event_id": "evt",
        "partition": 0,
        "offset": 0,
        "recorded_at": T0,
        "payload_sha256": b"\x00" * 32,
    }
    fields.update(kwargs)
    with pytest.raises(ValueError):
        LedgerEntry(**fields)


@pytest.mark.parametrize(
    "data",
    [b"", b"XYZ\x01\x00\x01a", b"CLE\x02" + b"\x00" * 60, ENTRIES[0][0].encode()[:-1]],
)
def test_decode_refuses_bad_bytes(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_entry(data)


# --- inclusion proofs ----------------------------------------------------------------------


def test_every_built_inclusion_proof_verifies(
    key: Ed25519PrivateKey, checkpoint: SignedCheckpoint
) -> None:
    for partition, size in ((0, 37), (1, 9)):
        for index in range(size):
            entry = ENTRIES[partition][index]
            doc = build_inclusion_document(entry, index, LEAVES[partition], checkpoint)
            carried = json.loads(json.dumps(doc))
            result = verify_inclusion_document(carried, key.public_key())
            assert result.ok, result
            assert result
            assert result.failure is None


def test_inclusion_document_shape(
    inclusion_doc: dict[str, Any], checkpoint: SignedCheckpoint
) -> None:
    assert inclusion_doc["format"] == INCLUSION_PROOF_FORMAT
    assert inclusion_doc["entry"] == ENTRIES[0][17].to_json_dict()
    assert (inclusion_doc["partition"], inclusion_doc["leaf_index"]) == (0, 17)
    assert inclusion_doc["tree_size"] == 37
    assert base64.b64decode(inclusion_doc["leaf_hash"]) == LEAVES[0][17]
    assert len(inclusion_doc["audit_path"]) == 6
    assert inclusion_doc["checkpoint"] == checkpoint.to_json_dict()


def _mutate(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(doc)
    *parents, last = path.split(".")
    target: Any = changed
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return changed


def _flip_b64(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[0] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    ("path", "value", "failure"),
    [
        ("entry.offset", 36, Failure.LEAF_HASH_MISMATCH),
        ("entry.event_id", "evt-0-99", Failure.LEAF_HASH_MISMATCH),
        ("entry.recorded_at", "2026-03-01T08:00:00.140457Z", Failure.LEAF_HASH_MISMATCH),
        ("entry.payload_sha256", "00" * 32, Failure.LEAF_HASH_MISMATCH),
        ("leaf_index", 16, Failure.INCLUSION_PATH_INVALID),
        ("leaf_index", 37, Failure.LEAF_INDEX_OUT_OF_RANGE),
        ("tree_size", 36, Failure.TREE_SIZE_MISMATCH),
        ("partition", 1, Failure.ENTRY_PARTITION_MISMATCH),
        ("checkpoint.tree_heads.0.size", 38, Failure.BAD_SIGNATURE),
        ("checkpoint.issued_at", "2026-03-01T08:00:01.123456Z", Failure.BAD_SIGNATURE),
        ("checkpoint.log_id", "someone-else", Failure.BAD_SIGNATURE),
        ("checkpoint.key_id", "00" * 16, Failure.UNKNOWN_KEY),
        ("format", "consent-ledger/inclusion-proof/v9", Failure.UNSUPPORTED_FORMAT),
        ("leaf_hash", "AAAA", Failure.MALFORMED),
        ("audit_path", "nope", Failure.MALFORMED),
        ("leaf_index", -1, Failure.MALFORMED),
        ("tree_size", "37", Failure.MALFORMED),
        ("entry.partition", True, Failure.MALFORMED),
        ("checkpoint.signature", "AAAA", Failure.MALFORMED),
    ],
)
def test_altered_inclusion_document_fails_precisely(
    key: Ed25519PrivateKey,
    inclusion_doc: dict[str, Any],
    path: str,
    value: Any,
    failure: Failure,
) -> None:
    result = verify_inclusion_document(_mutate(inclusion_doc, path, value), key.public_key())
    assert not result
    assert result.failure is failure, result


def test_altered_audit_path_fails(key: Ed25519PrivateKey, inclusion_doc: dict[str, Any]) -> None:
    for i, element in enumerate(inclusion_doc["audit_path"]):
        doc = _mutate(inclusion_doc, f"audit_path.{i}", _flip_b64(element))
        assert (
            verify_inclusion_document(doc, key.public_key()).failure
            is Failure.INCLUSION_PATH_INVALID
        )
    shortened = _mutate(inclusion_doc, "audit_path", inclusion_doc["audit_path"][:-1])
    result = verify_inclusion_document(shortened, key.public_key())
    assert result.failure is Failure.INCLUSION_PATH_INVALID


def test_entry_and_leaf_hash_altered_together_fail_on_the_path(
    key: Ed25519PrivateKey, inclusion_doc: dict[str, Any]
) -> None:
    forged = LedgerEntry.from_json_dict({**inclusion_doc["entry"], "offset": 99})
    doc = _mutate(inclusion_doc, "entry", forged.to_json_dict())
    doc["leaf_hash"] = base64.b64encode(forged.leaf_hash()).decode()
    result = verify_inclusion_document(doc, key.public_key())
    assert result.failure is Failure.INCLUSION_PATH_INVALID


def test_partition_absent_from_checkpoint(
    key: Ed25519PrivateKey, checkpoint: SignedCheckpoint
) -> None:
    doc = build_inclusion_document(ENTRIES[0][3], 3, LEAVES[0], checkpoint)
    entry = LedgerEntry.from_json_dict({**doc["entry"], "partition": 2})
    doc = {**doc, "entry": entry.to_json_dict(), "partition": 2}
    result = verify_inclusion_document(doc, key.public_key())
    assert result.failure is Failure.PARTITION_NOT_IN_CHECKPOINT
    assert result.partition == 2


def test_inclusion_checked_with_another_public_key_fails(inclusion_doc: dict[str, Any]) -> None:
    result = verify_inclusion_document(inclusion_doc, generate_signing_key().public_key())
    assert result.failure is Failure.UNKNOWN_KEY


def test_inclusion_document_resigned_by_an_intruder_fails(
    key: Ed25519PrivateKey, inclusion_doc: dict[str, Any]
) -> None:
    intruder_cp = sign_sizes(generate_signing_key(), {0: 37, 1: 9})
    doc = {**inclusion_doc, "checkpoint": intruder_cp.to_json_dict()}
    doc["checkpoint"]["key_id"] = inclusion_doc["checkpoint"]["key_id"]
    assert verify_inclusion_document(doc, key.public_key()).failure is Failure.BAD_SIGNATURE


@pytest.mark.parametrize("doc", [None, [], "proof", {"entry": {}}])
def test_inclusion_garbage_is_malformed(key: Ed25519PrivateKey, doc: Any) -> None:
    assert verify_inclusion_document(doc, key.public_key()).failure is Failure.MALFORMED


def test_inclusion_unknown_fields_are_refused(
    key: Ed25519PrivateKey, inclusion_doc: dict[str, Any]
) -> None:
    doc = {**inclusion_doc, "verified": True}
    assert verify_inclusion_document(doc, key.public_key()).failure is Failure.MALFORMED


def test_build_inclusion_refuses_wrong_input(checkpoint: SignedCheckpoint) -> None:
    with pytest.raises(ValueError, match="not this entry"):
        build_inclusion_document(ENTRIES[0][4], 5, LEAVES[0], checkpoint)
    with pytest.raises(ValueError, match="outside"):
        build_inclusion_document(ENTRIES[0][38], 38, LEAVES[0], checkpoint)
    with pytest.raises(ValueError, match="does not cover"):
        build_inclusion_document(ENTRIES[2][0], 0, LEAVES[2], checkpoint)
    with pytest.raises(ValueError, match="leaf hashes"):
        build_inclusion_document(ENTRIES[0][0], 0, LEAVES[0][:20], checkpoint)
    forged_leaves = list(LEAVES[0])
    forged_leaves[30] = hashlib.sha256(b"forged").digest()
    with pytest.raises(ValueError, match="signed root"):
        build_inclusion_document(ENTRIES[0][0], 0, forged_leaves, checkpoint)


# --- consistency proofs --------------------------------------------------------------------


@pytest.fixture(scope="module")
def old_cp(key: Ed25519PrivateKey) -> SignedCheckpoint:
    return sign_sizes(key, {0: 13, 1: 0}, issued_at=T0)


@pytest.fixture(scope="module")
def new_cp(key: Ed25519PrivateKey) -> SignedCheckpoint:
    return sign_sizes(key, {0: 40, 1: 9, 2: 3}, issued_at=T0 + timedelta(minutes=5))


@pytest.fixture
def consistency_doc(old_cp: SignedCheckpoint, new_cp: SignedCheckpoint) -> dict[str, Any]:
    return build_consistency_document(old_cp, new_cp, {0: LEAVES[0]})


def test_consistency_document_verifies(
    key: Ed25519PrivateKey, consistency_doc: dict[str, Any]
) -> None:
    assert consistency_doc["format"] == CONSISTENCY_PROOF_FORMAT
    assert [
        (p["partition"], p["old_size"], p["new_size"]) for p in consistency_doc["partitions"]
    ] == [(0, 13, 40), (1, 0, 9)]
    assert consistency_doc["partitions"][1]["path"] == []
    result = verify_consistency_document(json.loads(json.dumps(consistency_doc)), key.public_key())
    assert result.ok, result


def test_consistency_for_every_pair_of_sizes(key: Ed25519PrivateKey) -> None:
    checkpoints = [sign_sizes(key, {1: n}, issued_at=T0 + timedelta(seconds=n)) for n in range(10)]
    for m in range(10):
        for n in range(m, 10):
            doc = build_consistency_document(checkpoints[m], checkpoints[n], LEAVES)
            assert verify_consistency_document(doc, key.public_key()).ok, (m, n)


@pytest.mark.parametrize(
    ("path", "value", "failure"),
    [
        ("partitions.0.old_size", 12, Failure.PARTITION_SIZE_MISMATCH),
        ("partitions.0.new_size", 41, Failure.PARTITION_SIZE_MISMATCH),
        ("partitions.1.partition", 0, Failure.MALFORMED),
        ("partitions.1.partition", 7, Failure.MALFORMED),
        ("partitions.0.path", ["AAAA"], Failure.MALFORMED),
        ("new_checkpoint.tree_heads.0.size", 41, Failure.BAD_SIGNATURE),
        (
            "old_checkpoint.tree_heads.0.root",
            base64.b64encode(EMPTY_ROOT).decode(),
            Failure.BAD_SIGNATURE,
        ),
        ("old_checkpoint.key_id", "ab" * 16, Failure.UNKNOWN_KEY),
        ("format", "consent-ledger/inclusion-proof/v1", Failure.UNSUPPORTED_FORMAT),
    ],
)
def test_altered_consistency_document_fails_precisely(
    key: Ed25519PrivateKey,
    consistency_doc: dict[str, Any],
    path: str,
    value: Any,
    failure: Failure,
) -> None:
    result = verify_consistency_document(_mutate(consistency_doc, path, value), key.public_key())
    assert not result
    assert result.failure is failure, result


def test_altered_consistency_path_fails(
    key: Ed25519PrivateKey, consistency_doc: dict[str, Any]
) -> None:
    path = consistency_doc["partitions"][0]["path"]
    assert path
    for i, element in enumerate(path):
        doc = _mutate(consistency_doc, f"partitions.0.path.{i}", _flip_b64(element))
        result = verify_consistency_document(doc, key.public_key())
        assert result.failure is Failure.CONSISTENCY_PATH_INVALID
        assert result.partition == 0


def test_missing_partition_proof(key: Ed25519PrivateKey, consistency_doc: dict[str, Any]) -> None:
    doc = {**consistency_doc, "partitions": consistency_doc["partitions"][:1]}
    result = verify_consistency_document(doc, key.public_key())
    assert result.failure is Failure.PARTITION_PROOF_MISSING
    assert result.partition == 1


def test_rewritten_history_is_detected(key: Ed25519PrivateKey, old_cp: SignedCheckpoint) -> None:
    rewritten = {p: list(h) for p, h in LEAVES.items()}
    rewritten[0][5] = hashlib.sha256(b"quietly edited").digest()
    new = sign_sizes(key, {0: 40, 1: 9}, issued_at=T0 + timedelta(minutes=5), leaves=rewritten)
    with pytest.raises(ValueError, match="not consistent"):
        build_consistency_document(old_cp, new, rewritten)
    # A server that ships a proof anyway is caught by the auditor.
    doc = build_consistency_document(old_cp, old_cp, {})
    doc["new_checkpoint"] = new.to_json_dict()
    doc["partitions"] = [
        {
            "partition": 0,
            "old_size": 13,
            "new_size": 40,
            "path": [base64.b64encode(h).decode() for h in consistency_proof(rewritten[0], 13, 40)],
        },
        {"partition": 1, "old_size": 0, "new_size": 9, "path": []},
    ]
    result = verify_consistency_document(doc, key.public_key())
    assert result.failure is Failure.CONSISTENCY_PATH_INVALID
    assert result.partition == 0


def test_partition_dropped_from_new_checkpoint(
    key: Ed25519PrivateKey, old_cp: SignedCheckpoint
) -> None:
    new = sign_sizes(key, {0: 13}, issued_at=T0 + timedelta(minutes=5))
    doc = build_consistency_document(old_cp, old_cp, {})
    doc["new_checkpoint"] = new.to_json_dict()
    result = verify_consistency_document(doc, key.public_key())
    assert result.failure is Failure.PARTITION_MISSING
    assert result.partition == 1
    with pytest.raises(ValueError, match="missing"):
        build_consistency_document(old_cp, new, LEAVES)


def test_shrunk_partition(key: Ed25519PrivateKey, old_cp: SignedCheckpoint) -> None:
    new = sign_sizes(key, {0: 10, 1: 9}, issued_at=T0 + timedelta(minutes=5))
    doc = build_consistency_document(old_cp, old_cp, {})
    doc["new_checkpoint"] = new.to_json_dict()
    doc["partitions"][0]["new_size"] = 10
    doc["partitions"][1]["new_size"] = 9
    result = verify_consistency_document(doc, key.public_key())
    assert result.failure is Failure.TREE_SHRANK
    with pytest.raises(ValueError, match="shrank"):
        build_consistency_document(old_cp, new, LEAVES)


def test_checkpoints_out_of_order(key: Ed25519PrivateKey, old_cp: SignedCheckpoint) -> None:
    earlier = sign_sizes(key, {0: 20, 1: 0}, issued_at=T0 - timedelta(seconds=1))
    doc = build_consistency_document(old_cp, earlier, LEAVES)
    assert (
        verify_consistency_document(doc, key.public_key()).failure
        is Failure.CHECKPOINTS_OUT_OF_ORDER
    )


def test_checkpoints_of_different_logs(key: Ed25519PrivateKey, old_cp: SignedCheckpoint) -> None:
    other = sign_sizes(key, {0: 20, 1: 0}, issued_at=T0 + timedelta(seconds=1), log_id="other")
    with pytest.raises(ValueError, match="different logs"):
        build_consistency_document(old_cp, other, LEAVES)
    doc = build_consistency_document(old_cp, old_cp, {})
    doc["new_checkpoint"] = other.to_json_dict()
    assert verify_consistency_document(doc, key.public_key()).failure is Failure.LOG_ID_MISMATCH


def test_consistency_checked_with_another_key_fails(consistency_doc: dict[str, Any]) -> None:
    result = verify_consistency_document(consistency_doc, generate_signing_key().public_key())
    assert result.failure is Failure.UNKNOWN_KEY


def test_build_consistency_needs_leaves_of_grown_partitions(
    old_cp: SignedCheckpoint, new_cp: SignedCheckpoint
) -> None:
    with pytest.raises(ValueError, match="leaf hashes"):
        build_consistency_document(old_cp, new_cp, {})


@pytest.mark.parametrize("doc", [None, 3, {"format": CONSISTENCY_PROOF_FORMAT}])
def test_consistency_garbage_is_malformed(key: Ed25519PrivateKey, doc: Any) -> None:
    assert verify_consistency_document(doc, key.public_key()).failure is Failure.MALFORMED
