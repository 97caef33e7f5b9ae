"""Trusted checkpoints held against a log's leaves, coverage, and proof anchoring."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_ledger.cli.integrity import trusted_checkpoint_held_line
from consent_ledger.integrity.checkpoints import (
    Checkpoint,
    SignedCheckpoint,
    TreeHead,
    generate_signing_key,
    sign_checkpoint,
)
from consent_ledger.integrity.merkle import EMPTY_ROOT, leaf_hash, root_from_leaf_hashes
from consent_ledger.integrity.trust import (
    PartitionCoverage,
    TreeBreak,
    TrustedCheckpoint,
    anchor_consistency,
    anchor_inclusion,
    check_tree_held,
    check_trees_held,
    parse_trusted_checkpoint,
)

pytestmark = pytest.mark.unit

KEY = generate_signing_key()
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def leaves(count: int, salt: str = "") -> list[bytes]:
    return [leaf_hash(f"entry {i}{salt}".encode()) for i in range(count)]


def head(partition: int, hashes: list[bytes]) -> TreeHead:
    return TreeHead(partition, len(hashes), root_from_leaf_hashes(hashes))


def signed(*heads: TreeHead, log_id: str = "log", at: datetime = T0) -> SignedCheckpoint:
    return sign_checkpoint(Checkpoint(log_id, at, heads), KEY)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 100])
@pytest.mark.parametrize("grown", [0, 1, 2, 13, 64])
def test_the_same_tree_or_a_larger_consistent_one_is_held(size: int, grown: int) -> None:
    log = leaves(size + grown)
    assert check_tree_held(head(3, log[:size]), log) is None


def test_the_empty_tree_is_held_by_any_log() -> None:
    assert check_tree_held(TreeHead(0, 0, EMPTY_ROOT), leaves(5)) is None
    assert check_tree_held(TreeHead(0, 0, EMPTY_ROOT), []) is None


@pytest.mark.parametrize(
    ("size", "current", "problem"),
    [(10, 0, TreeBreak.VANISHED), (10, 9, TreeBreak.SHRANK), (1, 0, TreeBreak.VANISHED)],
)
def test_a_log_with_fewer_leaves_vanished_or_shrank(
    size: int, current: int, problem: TreeBreak
) -> None:
    log = leaves(size)
    lost = check_tree_held(head(2, log), log[:current])
    assert lost is not None
    assert (lost.partition, lost.trusted_size, lost.current_size, lost.problem) == (
        2, size, current, problem,
    )  # fmt: skip
    assert f"partition 2 {problem.value}" in lost.describe()


@pytest.mark.parametrize("changed", [0, 5, 9])
@pytest.mark.parametrize("grown", [0, 7])
def test_a_changed_leaf_inside_the_trusted_tree_is_a_divergence(changed: int, grown: int) -> None:
    log = leaves(10 + grown)
    trusted = head(1, log[:10])
    rewritten = list(log)
    rewritten[changed] = leaf_hash(b"rewritten")
    lost = check_tree_held(trusted, rewritten)
    assert lost is not None and lost.problem is TreeBreak.DIVERGED
    assert "partition 1 diverged" in lost.describe()


def test_a_rewrite_after_the_trusted_tree_is_not_its_business() -> None:
    log = leaves(20)
    rewritten = log[:10] + leaves(15, salt="other")
    assert check_tree_held(head(0, log[:10]), rewritten) is None


def test_a_wholesale_rewrite_of_the_same_size_diverges() -> None:
    log = leaves(40)
    lost = check_tree_held(head(0, log), leaves(40, salt="rewritten"))
    assert lost is not None and lost.problem is TreeBreak.DIVERGED


def test_an_empty_tree_with_another_root_diverges() -> None:
    lost = check_tree_held(TreeHead(0, 0, hashlib.sha256(b"x").digest()), leaves(3))
    assert lost is not None and lost.problem is TreeBreak.DIVERGED


def test_both_file_shapes_parse_to_the_same_checkpoint() -> None:
    checkpoint = signed(head(0, leaves(3)), head(1, leaves(5)))
    bare = parse_trusted_checkpoint(checkpoint.to_json().encode(), "bare.json")
    stored = parse_trusted_checkpoint(
        orjson.dumps({"id": 7, "checkpoint": checkpoint.to_json_dict()}), "stored.json"
    )
    assert bare.signed == stored.signed == checkpoint
    assert (bare.stored_id, stored.stored_id) == (None, 7)
    assert (bare.source, stored.source) == ("bare.json", "stored.json")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"not json", "is not JSON"),
        (b"[]", "is not a signed checkpoint"),
        (b'{"id": 0, "checkpoint": {}}', "id must be a positive integer"),
        (b'{"id": 3, "checkpoint": {"format": "x"}}', "is not a signed checkpoint"),
        (b'{"error": {"message": "no checkpoint"}}', "is not a signed checkpoint"),
    ],
)
def test_what_is_not_a_checkpoint_is_refused_naming_the_file(content: bytes, words: str) -> None:
    with pytest.raises(ValueError, match=words) as refused:
        parse_trusted_checkpoint(content, "kept.json")
    assert "kept.json" in str(refused.value)


def test_coverage_counts_the_unsigned_tail() -> None:
    covered = PartitionCoverage(0, 1229, 1200, 7)
    assert covered.unsigned == 29
    assert (
        covered.describe() == "partition 0: 1229 entries, 1200 signed (checkpoint 7), 29 unsigned"
    )
    by_trusted = PartitionCoverage(1, 10, 10, None)
    assert (
        by_trusted.describe()
        == "partition 1: 10 entries, 10 signed (a trusted checkpoint), 0 unsigned"
    )
    assert PartitionCoverage(2, 5, 0).describe() == "partition 2: 5 entries, 0 signed, 5 unsigned"


def test_an_inclusion_proof_is_anchored_only_in_the_trusted_tree() -> None:
    log = leaves(12)
    trusted = signed(head(0, log[:8]), head(1, log[:4]))
    same_tree = signed(head(0, log[:8]), head(1, log[:6]), at=T0.replace(minute=5))
    later = signed(head(0, log), head(1, log[:6]), at=T0.replace(minute=9))
    assert anchor_inclusion(trusted, 0, trusted) is None
    assert anchor_inclusion(same_tree, 0, trusted) is None  # partition 0 did not grow
    assert "trusted checkpoint signed 4" in (anchor_inclusion(same_tree, 1, trusted) or "")
    assert "?checkpoint=" in (anchor_inclusion(later, 0, trusted) or "")
    assert "does not cover partition 5" in (anchor_inclusion(trusted, 5, trusted) or "")


def test_a_consistency_proof_is_anchored_at_either_end() -> None:
    log = leaves(12)
    first = signed(head(0, log[:4]))
    second = signed(head(0, log[:8]), at=T0.replace(minute=1))
    third = signed(head(0, log), at=T0.replace(minute=2))
    assert anchor_consistency(first, second, first) is None
    assert anchor_consistency(first, second, second) is None
    assert "?from=" in (anchor_consistency(second, third, first) or "")
    other_log = signed(head(0, log[:4]), log_id="another")
    assert anchor_consistency(other_log, second, first) is not None


@given(
    size=st.integers(0, 70),
    kept_sizes=st.lists(st.integers(0, 80), max_size=6),
    changed=st.none() | st.integers(0, 69),
)
def test_many_kept_trees_in_one_pass_agree_with_one_proof_each(
    size: int, kept_sizes: list[int], changed: int | None
) -> None:
    """check_trees_held (prefix roots, one pass) decides as check_tree_held (an
    RFC 9162 consistency proof per kept tree) does, whatever was rewritten."""
    original = leaves(80)
    kept = [head(4, original[:n]) for n in kept_sizes]
    log = list(original[:size])
    if changed is not None and changed < size:
        log[changed] = leaf_hash(b"rewritten")
    assert check_trees_held(kept, log) == [check_tree_held(h, log) for h in kept]


def test_many_kept_trees_are_answered_in_the_order_given() -> None:
    log = leaves(30)
    rewritten = [*log[:10], leaf_hash(b"x"), *log[11:]]
    kept = [
        head(0, log[:20]),
        head(0, log[:5]),
        head(0, log[:40] + leaves(5, "more")),
        head(0, log[:20]),
    ]
    answers = check_trees_held(kept, rewritten)
    assert [a.problem if a else None for a in answers] == [
        TreeBreak.DIVERGED, None, TreeBreak.SHRANK, TreeBreak.DIVERGED,
    ]  # fmt: skip


def test_a_held_trusted_checkpoint_is_one_line_naming_its_trees() -> None:
    three = signed(head(0, leaves(22)), head(1, leaves(17)), head(2, leaves(0)))
    line = trusted_checkpoint_held_line(TrustedCheckpoint("kept.json", three))
    assert line == (
        f"trusted checkpoint kept.json (issued 2026-03-01T08:00:00Z, key {three.key_id}): "
        "every partition still holds its signed tree (partition 0: 22 entries, 1: 17, 2: 0)"
    )
    many = signed(*(head(partition, leaves(3)) for partition in range(12)))
    line = trusted_checkpoint_held_line(TrustedCheckpoint("kept.json", many))
    assert line.endswith("still holds its signed tree (12 partitions, 36 entries)")
