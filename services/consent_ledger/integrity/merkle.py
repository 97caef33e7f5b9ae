"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing, proofs and verifiers.

Each ledger partition is one Merkle log. Hashing follows RFC 9162 §2.1.1 exactly:

* leaf:  ``SHA-256(0x00 || entry)``
* node:  ``SHA-256(0x01 || left || right)``
* the tree over ``n > 1`` leaves splits at ``k``, the largest power of two
  smaller than ``n``: ``MTH(D[n]) = node(MTH(D[0:k]), MTH(D[k:n]))``;
  the empty tree's hash is ``SHA-256("")``.

Proof generation (:func:`inclusion_proof`, :func:`consistency_proof`) follows
§2.1.3.1 (``PATH``) and §2.1.4.1 (``SUBPROOF``) and needs the leaf hashes of the
tree; it costs O(n) hashing. Verification (:func:`verify_inclusion`,
:func:`verify_consistency`) follows §2.1.3.2 and §2.1.4.2 and costs O(log n).

:class:`MerkleFrontier` is the incremental form a worker keeps per partition:
the roots of the perfect subtrees the tree decomposes into (a Merkle mountain
range / CT "compact range"), at most 64 hashes, enough to append a leaf and to
compute the current root without reloading any leaf.

Everything here is pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from typing import Final

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleFrontier",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
"""Bytes in every hash handled here (SHA-256)."""

_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"
_sha256 = hashlib.sha256

EMPTY_ROOT: Final = _sha256(b"").digest()
"""``MTH({})``: the root of a tree with no leaves."""


def leaf_hash(entry: bytes) -> bytes:
    """``SHA-256(0x00 || entry)``: the hash of one leaf's encoded entry."""
    return _sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an interior node."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_root(leaf_hashes: Sequence[bytes], start: int, end: int) -> bytes:
    """``MTH(D[start:end])`` for a non-empty range.

    Pairs neighbours level by level and carries an odd last node up unchanged;
    this builds exactly the RFC's left-heavy shape (the split point ``k`` is a
    power of two, so pairs never straddle it) without recursion.
    """
    level = list(leaf_hashes[start:end])
    sha = _sha256
    prefix = _NODE_PREFIX
    while len(level) > 1:
        paired = [
            sha(prefix + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """``MTH(D[n])`` over the given leaf hashes (already ``leaf_hash``-ed)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    return _subtree_root(leaf_hashes, 0, len(leaf_hashes))


def _check_sizes(leaf_hashes: Sequence[bytes], tree_size: int) -> None:
    if tree_size < 0 or tree_size > len(leaf_hashes):
        raise ValueError(
            f"tree_size {tree_size} is outside 0..{len(leaf_hashes)} (the leaf hashes given)"
        )


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, tree_size: int) -> list[bytes]:
    """The audit path ``PATH(index, D[tree_size])`` of RFC 9162 §2.1.3.1.

    Only the first ``tree_size`` leaf hashes are used, so a caller may pass the
    whole partition and ask about an older tree. Hashes are ordered from the
    leaf's sibling up to the child of the root.

    Raises:
        ValueError: ``index`` is not in ``0..tree_size-1`` or ``tree_size``
            exceeds the leaf hashes given.
    """
    _check_sizes(leaf_hashes, tree_size)
    if not 0 <= index < tree_size:
        raise ValueError(f"leaf index {index} is outside 0..{tree_size - 1}")
    path: list[bytes] = []
    start, end, m = 0, tree_size, index
    # Walk down from the root, collecting siblings; reverse at the end so the
    # path reads leaf-to-root as the RFC lists it.
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if m < k:
            path.append(_subtree_root(leaf_hashes, start + k, end))
            end = start + k
        else:
            path.append(_subtree_root(leaf_hashes, start, start + k))
            start += k
            m -= k
    path.reverse()
    return path


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """The consistency proof ``PROOF(old_size, D[new_size])`` of RFC 9162 §2.1.4.1.

    The RFC defines proofs for ``0 < old_size < new_size``; for ``old_size == 0``
    (every tree extends the empty tree) and ``old_size == new_size`` this
    returns ``[]``, which :func:`verify_consistency` accepts for those sizes.

    Raises:
        ValueError: not ``0 <= old_size <= new_size <= len(leaf_hashes)``.
    """
    _check_sizes(leaf_hashes, new_size)
    if not 0 <= old_size <= new_size:
        raise ValueError(f"old_size {old_size} is outside 0..{new_size} (new_size)")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    start, end, m = 0, new_size, old_size
    complete = True  # the RFC's flag b: the old tree is a complete subtree of the walk so far
    while m != end - start:
        k = _largest_power_of_two_below(end - start)
        if m <= k:
            proof.append(_subtree_root(leaf_hashes, start + k, end))
            end = start + k
        else:
            proof.append(_subtree_root(leaf_hashes, start, start + k))
            start += k
            m -= k
            complete = False
    if not complete:
        proof.append(_subtree_root(leaf_hashes, start, end))
    proof.reverse()
    return proof


def _well_formed(proof: Sequence[bytes]) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in proof)


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Check an audit path with the algorithm of RFC 9162 §2.1.3.2.

    True when ``leaf_hash`` is the leaf at ``index`` of the tree of
    ``tree_size`` leaves whose root is ``root``. Malformed input (a hash that is
    not 32 bytes, a negative size, a path of the wrong length) gives False,
    never an exception.
    """
    if not 0 <= index < tree_size or not _well_formed(proof):
        return False
    if len(leaf_hash) != HASH_SIZE or len(root) != HASH_SIZE:
        return False
    fn, sn = index, tree_size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _sha256(_NODE_PREFIX + p + r).digest()
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = _sha256(_NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Check a consistency proof with the algorithm of RFC 9162 §2.1.4.2.

    True when the tree of ``old_size`` leaves with root ``old_root`` is a prefix
    of the tree of ``new_size`` leaves with root ``new_root``. Beyond the RFC's
    ``0 < old_size < new_size``: ``old_size == 0`` holds when the proof is empty
    and ``old_root`` is :data:`EMPTY_ROOT`; ``old_size == new_size`` holds when
    the proof is empty and the roots are equal. Malformed input gives False.
    """
    if not 0 <= old_size <= new_size or not _well_formed(proof):
        return False
    if len(old_root) != HASH_SIZE or len(new_root) != HASH_SIZE:
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is itself a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE_PREFIX + c + fr).digest()
            sr = _sha256(_NODE_PREFIX + c + sr).digest()
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(_NODE_PREFIX + sr + c).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


_FRONTIER_VERSION: Final = 1
_FRONTIER_HEADER = struct.Struct(">BQ")  # version, tree size


class MerkleFrontier:
    """The compact state of an append-only Merkle log: size plus perfect-subtree roots.

    A tree of ``n`` leaves is a sequence of perfect subtrees, one per set bit of
    ``n``, largest (leftmost) first; their roots are all that is needed to
    append and to compute ``MTH``. :meth:`append` costs amortised one node hash,
    :meth:`root` at most ``popcount(n) - 1``.

    :meth:`to_bytes` is what a worker stores per partition (one row, at most
    9 + 64*32 bytes); :meth:`from_bytes` restores it. Not thread-safe: one
    frontier belongs to one partition's single writer.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Iterable[bytes]) -> MerkleFrontier:
        """A frontier with the given leaf hashes appended in order."""
        frontier = cls()
        frontier.extend(leaf_hashes)
        return frontier

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    @property
    def subtree_roots(self) -> tuple[bytes, ...]:
        """The perfect-subtree roots, leftmost (largest) first."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> int:
        """Append one leaf (already ``leaf_hash``-ed); return its leaf index."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, got {len(leaf_hash)}")
        index = self._size
        hashes = self._hashes
        node = leaf_hash
        n = index
        # Each trailing one bit of the old size is a perfect subtree of the
        # same height as ``node``: merge them, lowest first.
        while n & 1:
            node = _sha256(_NODE_PREFIX + hashes.pop() + node).digest()
            n >>= 1
        hashes.append(node)
        self._size = index + 1
        return index

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append several leaves in order."""
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        """``MTH`` of the leaves appended so far (:data:`EMPTY_ROOT` when none)."""
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        r = hashes[-1]
        for h in reversed(hashes[:-1]):
            r = _sha256(_NODE_PREFIX + h + r).digest()
        return r

    def copy(self) -> MerkleFrontier:
        """An independent frontier in the same state (to try a batch before committing)."""
        other = MerkleFrontier()
        other._size = self._size
        other._hashes = list(self._hashes)
        return other

    def to_bytes(self) -> bytes:
        """Serialise: ``version u8 (=1) || size u64 BE || popcount(size) hashes``.

        Hashes are the subtree roots leftmost first, 32 bytes each, no separators.
        """
        return _FRONTIER_HEADER.pack(_FRONTIER_VERSION, self._size) + b"".join(self._hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> MerkleFrontier:
        """Restore a frontier written by :meth:`to_bytes`.

        Raises:
            ValueError: unknown version, or a length that does not match the size.
        """
        if len(data) < _FRONTIER_HEADER.size:
            raise ValueError("frontier data is shorter than its header")
        version, size = _FRONTIER_HEADER.unpack_from(data)
        if version != _FRONTIER_VERSION:
            raise ValueError(f"unknown frontier format version {version}")
        count = size.bit_count()
        body = data[_FRONTIER_HEADER.size :]
        if len(body) != count * HASH_SIZE:
            raise ValueError(
                f"frontier of size {size} needs {count} hashes, found {len(body) / HASH_SIZE:g}"
            )
        frontier = cls()
        frontier._size = size
        frontier._hashes = [body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)]
        return frontier

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MerkleFrontier):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]  # mutable: equal frontiers may diverge

    def __repr__(self) -> str:
        return f"MerkleFrontier(size={self._size}, root={self.root().hex()})"
