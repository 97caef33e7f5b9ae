"""RFC 9162 Merkle hashing, proofs and the frontier, checked against an independent model.

The reference functions below (``ref_*``) are a straight transcription of the
RFC's recursive definitions written for this test only; they share no code
with ``consent_ledger.integrity.merkle``. Verifiers are independent too: they
rebuild the roots by recursing over the tree shape instead of running the
RFC's iterative bit-twiddling algorithm the module implements.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_ledger.integrity import merkle

pytestmark = pytest.mark.unit


# --- independent reference model -------------------------------------------------------


def ref_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def ref_split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(hashes: list[bytes]) -> bytes:
    """MTH over leaf hashes, RFC 9162 §2.1.1, recursively."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = ref_split(len(hashes))
    return ref_node(ref_mth(hashes[:k]), ref_mth(hashes[k:]))


def ref_path(m: int, hashes: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]), RFC 9162 §2.1.3.1."""
    if len(hashes) == 1:
        return []
    k = ref_split(len(hashes))
    if m < k:
        return [*ref_path(m, hashes[:k]), ref_mth(hashes[k:])]
    return [*ref_path(m - k, hashes[k:]), ref_mth(hashes[:k])]


def ref_subproof(m: int, hashes: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b), RFC 9162 §2.1.4.1."""
    n = len(hashes)
    if m == n:
        return [] if b else [ref_mth(hashes)]
    k = ref_split(n)
    if m <= k:
        return [*ref_subproof(m, hashes[:k], b), ref_mth(hashes[k:])]
    return [*ref_subproof(m - k, hashes[k:], False), ref_mth(hashes[:k])]


def ref_root_from_path(leaf: bytes, m: int, n: int, path: list[bytes]) -> bytes | None:
    """The root an audit path implies, by recursing over the tree shape; None if ill-formed."""
    if n == 1:
        return leaf if not path else None
    if not path:
        return None
    k = ref_split(n)
    *rest, sibling = path
    if m < k:
        below = ref_root_from_path(leaf, m, k, rest)
        return None if below is None else ref_node(below, sibling)
    below = ref_root_from_path(leaf, m - k, n - k, rest)
    return None if below is None else ref_node(sibling, below)


def ref_roots_from_consistency(
    m: int, n: int, proof: list[bytes], b: bool, old_root: bytes
) -> tuple[bytes, bytes] | None:
    """(old root, new root) a SUBPROOF(m, D[n], b) implies, by recursion; None if ill-formed."""
    if m == n:
        if b:
            return (old_root, old_root) if not proof else None
        return (proof[0], proof[0]) if len(proof) == 1 else None
    if not proof:
        return None
    k = ref_split(n)
    *rest, last = proof
    if m <= k:
        below = ref_roots_from_consistency(m, k, rest, b, old_root)
        return None if below is None else (below[0], ref_node(below[1], last))
    below = ref_roots_from_consistency(m - k, n - k, rest, False, old_root)
    if below is None:
        return None
    return ref_node(last, below[0]), ref_node(last, below[1])


def ref_verify_inclusion(leaf: bytes, m: int, n: int, path: list[bytes], root: bytes) -> bool:
    return 0 <= m < n and ref_root_from_path(leaf, m, n, path) == root


def ref_verify_consistency(
    m: int, n: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> bool:
    if not 0 < m < n:
        return False
    roots = ref_roots_from_consistency(m, n, proof, True, old_root)
    return roots == (old_root, new_root)


# --- fixtures shared by the property tests ---------------------------------------------

MAX_SIZE = 300
LEAVES = [ref_leaf(i.to_bytes(4, "big")) for i in range(MAX_SIZE)]
REF_ROOTS = [ref_mth(LEAVES[:n]) for n in range(MAX_SIZE + 1)]

# Leaf data of the Certificate Transparency reference test vectors, with the
# published tree heads for the first n of them: an external anchor for MTH.
CT_LEAF_DATA = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
CT_ROOTS = {
    0: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}


def flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes((data[position] ^ 0x01,)) + data[position + 1 :]


# --- the RFC 9162 §2.1.5 example tree ----------------------------------------------------


class RfcExample:
    """The seven-leaf tree of RFC 9162 §2.1.5, nodes named with the RFC's letters.

    ::
                    hash
                   /    \\
                  k      l
                 / \\    / \\
                g   h  i   j
               / \\ / \\ / \\  |
               a b c d e f  d6
    """

    def __init__(self) -> None:
        self.data = CT_LEAF_DATA[:7]
        self.a, self.b, self.c, self.d, self.e, self.f, self.j = (ref_leaf(x) for x in self.data)
        self.g = ref_node(self.a, self.b)
        self.h = ref_node(self.c, self.d)
        self.i = ref_node(self.e, self.f)
        self.k = ref_node(self.g, self.h)
        self.l = ref_node(self.i, self.j)
        self.root = ref_node(self.k, self.l)
        self.leaves = [self.a, self.b, self.c, self.d, self.e, self.f, self.j]
        # hash0, hash1, hash2 in the RFC: the trees of 3, 4 and 6 leaves.
        self.hash0 = ref_node(self.g, self.c)
        self.hash1 = self.k
        self.hash2 = ref_node(self.k, self.i)


@pytest.fixture
def rfc() -> RfcExample:
    return RfcExample()


def test_leaf_and_node_hash_follow_rfc_9162() -> None:
    assert merkle.leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = b"L" * 32, b"R" * 32
    assert merkle.node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT


@pytest.mark.parametrize("size", sorted(CT_ROOTS))
def test_roots_match_published_ct_test_vectors(size: int) -> None:
    hashes = [merkle.leaf_hash(x) for x in CT_LEAF_DATA[:size]]
    assert merkle.root_from_leaf_hashes(hashes).hex() == CT_ROOTS[size]
    assert merkle.MerkleFrontier.from_leaf_hashes(hashes).root().hex() == CT_ROOTS[size]
    assert ref_mth(hashes).hex() == CT_ROOTS[size]


def test_rfc_example_root(rfc: RfcExample) -> None:
    assert merkle.root_from_leaf_hashes(rfc.leaves) == rfc.root == ref_mth(rfc.leaves)
    assert merkle.root_from_leaf_hashes(rfc.leaves[:3]) == rfc.hash0
    assert merkle.root_from_leaf_hashes(rfc.leaves[:4]) == rfc.hash1
    assert merkle.root_from_leaf_hashes(rfc.leaves[:6]) == rfc.hash2


@pytest.mark.parametrize(
    ("index", "expected"),
    [(0, "b h l"), (3, "c g l"), (4, "f j k")],
)
def test_rfc_example_inclusion_proofs(rfc: RfcExample, index: int, expected: str) -> None:
    path = [getattr(rfc, name) for name in expected.split()]
    assert ref_path(index, rfc.leaves) == path
    assert merkle.inclusion_proof(rfc.leaves, index, 7) == path
    assert merkle.verify_inclusion(rfc.leaves[index], index, 7, path, rfc.root)
    assert ref_verify_inclusion(rfc.leaves[index], index, 7, path, rfc.root)


@pytest.mark.parametrize(
    ("old_size", "old_root", "expected"),
    [(3, "hash0", "c d g l"), (4, "hash1", "l"), (6, "hash2", "i j k")],
)
def test_rfc_example_consistency_proofs(
    rfc: RfcExample, old_size: int, old_root: str, expected: str
) -> None:
    proof = [getattr(rfc, name) for name in expected.split()]
    old = getattr(rfc, old_root)
    assert ref_subproof(old_size, rfc.leaves, True) == proof
    assert merkle.consistency_proof(rfc.leaves, old_size, 7) == proof
    assert merkle.verify_consistency(old_size, 7, old, rfc.root, proof)
    assert ref_verify_consistency(old_size, 7, old, rfc.root, proof)


# --- properties over random sizes -------------------------------------------------------


def test_frontier_root_equals_reference_root_for_every_size() -> None:
    frontier = merkle.MerkleFrontier()
    assert frontier.size == 0
    assert frontier.root() == REF_ROOTS[0]
    for n, leaf in enumerate(LEAVES, start=1):
        assert frontier.append(leaf) == n - 1
        assert frontier.size == n
        assert frontier.root() == REF_ROOTS[n], n
        assert len(frontier.subtree_roots) == n.bit_count()
        restored = merkle.MerkleFrontier.from_bytes(frontier.to_bytes())
        assert restored == frontier
        assert restored.root() == REF_ROOTS[n]


def test_root_from_leaf_hashes_equals_reference_for_every_size() -> None:
    for n in range(MAX_SIZE + 1):
        assert merkle.root_from_leaf_hashes(LEAVES[:n]) == REF_ROOTS[n], n


@given(st.integers(1, MAX_SIZE), st.integers(0, MAX_SIZE - 1))
def test_frontier_restored_from_bytes_keeps_appending_identically(size: int, more: int) -> None:
    frontier = merkle.MerkleFrontier.from_leaf_hashes(LEAVES[:size])
    restored = merkle.MerkleFrontier.from_bytes(frontier.to_bytes())
    end = min(size + more, MAX_SIZE)
    restored.extend(LEAVES[size:end])
    assert restored.size == end
    assert restored.root() == REF_ROOTS[end]


@given(st.data())
def test_every_inclusion_proof_verifies_with_the_independent_verifier(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, MAX_SIZE), label="tree_size")
    index = data.draw(st.integers(0, n - 1), label="index")
    proof = merkle.inclusion_proof(LEAVES, index, n)
    assert proof == ref_path(index, LEAVES[:n])
    assert ref_verify_inclusion(LEAVES[index], index, n, proof, REF_ROOTS[n])
    assert merkle.verify_inclusion(LEAVES[index], index, n, proof, REF_ROOTS[n])


@given(st.data())
def test_every_consistency_proof_verifies_with_the_independent_verifier(
    data: st.DataObject,
) -> None:
    n = data.draw(st.integers(2, MAX_SIZE), label="new_size")
    m = data.draw(st.integers(1, n - 1), label="old_size")
    proof = merkle.consistency_proof(LEAVES, m, n)
    assert proof == ref_subproof(m, LEAVES[:n], True)
    assert ref_verify_consistency(m, n, REF_ROOTS[m], REF_ROOTS[n], proof)
    assert merkle.verify_consistency(m, n, REF_ROOTS[m], REF_ROOTS[n], proof)


@given(st.data())
def test_tampered_inclusion_proof_or_leaf_fails(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, MAX_SIZE), label="tree_size")
    index = data.draw(st.integers(0, n - 1), label="index")
    proof = merkle.inclusion_proof(LEAVES, index, n)
    root = REF_ROOTS[n]

    element = data.draw(st.integers(0, len(proof) - 1), label="element")
    position = data.draw(st.integers(0, 31), label="byte")
    tampered = list(proof)
    tampered[element] = flip(tampered[element], position)
    assert not merkle.verify_inclusion(LEAVES[index], index, n, tampered, root)
    assert not ref_verify_inclusion(LEAVES[index], index, n, tampered, root)

    bad_leaf = flip(LEAVES[index], position)
    assert not merkle.verify_inclusion(bad_leaf, index, n, proof, root)

    other = data.draw(st.integers(0, n - 1).filter(lambda i: i != index), label="other")
    assert not merkle.verify_inclusion(LEAVES[index], other, n, proof, root)
    assert not merkle.verify_inclusion(LEAVES[index], index, n, proof[:-1], root)
    assert not merkle.verify_inclusion(LEAVES[index], index, n, [*proof, root], root)
    assert not merkle.verify_inclusion(LEAVES[index], index, n, proof, flip(root, position))


@given(st.data())
def test_tampered_consistency_proof_or_root_fails(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, MAX_SIZE), label="new_size")
    m = data.draw(st.integers(1, n - 1), label="old_size")
    proof = merkle.consistency_proof(LEAVES, m, n)
    old, new = REF_ROOTS[m], REF_ROOTS[n]

    element = data.draw(st.integers(0, len(proof) - 1), label="element")
    position = data.draw(st.integers(0, 31), label="byte")
    tampered = list(proof)
    tampered[element] = flip(tampered[element], position)
    assert not merkle.verify_consistency(m, n, old, new, tampered)
    assert not ref_verify_consistency(m, n, old, new, tampered)

    assert not merkle.verify_consistency(m, n, flip(old, position), new, proof)
    assert not merkle.verify_consistency(m, n, old, flip(new, position), proof)
    assert not merkle.verify_consistency(m, n, old, new, proof[:-1])
    assert not merkle.verify_consistency(m, n, old, new, [*proof, new])


@given(st.data())
def test_rewritten_history_breaks_consistency(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, MAX_SIZE), label="new_size")
    m = data.draw(st.integers(1, n - 1), label="old_size")
    victim = data.draw(st.integers(0, m - 1), label="rewritten leaf")
    rewritten = list(LEAVES[:n])
    rewritten[victim] = ref_leaf(b"forged")
    forged_root = ref_mth(rewritten)
    proof = merkle.consistency_proof(rewritten, m, n)
    assert not merkle.verify_consistency(m, n, REF_ROOTS[m], forged_root, proof)


# --- edges and errors --------------------------------------------------------------------


def test_trivial_consistency_cases() -> None:
    assert merkle.consistency_proof(LEAVES, 0, 10) == []
    assert merkle.consistency_proof(LEAVES, 10, 10) == []
    assert merkle.verify_consistency(0, 10, merkle.EMPTY_ROOT, REF_ROOTS[10], [])
    assert not merkle.verify_consistency(0, 10, REF_ROOTS[1], REF_ROOTS[10], [])
    assert merkle.verify_consistency(10, 10, REF_ROOTS[10], REF_ROOTS[10], [])
    assert not merkle.verify_consistency(10, 10, REF_ROOTS[10], REF_ROOTS[9], [])
    assert not merkle.verify_consistency(10, 10, REF_ROOTS[10], REF_ROOTS[10], [LEAVES[0]])
    assert not merkle.verify_consistency(5, 10, REF_ROOTS[5], REF_ROOTS[10], [])
    assert not merkle.verify_consistency(10, 5, REF_ROOTS[10], REF_ROOTS[5], [])


def test_single_leaf_tree() -> None:
    assert merkle.inclusion_proof(LEAVES, 0, 1) == []
    assert merkle.verify_inclusion(LEAVES[0], 0, 1, [], LEAVES[0])
    assert not merkle.verify_inclusion(LEAVES[0], 0, 1, [LEAVES[1]], LEAVES[0])


@pytest.mark.parametrize(
    ("index", "size"),
    [(-1, 5), (5, 5), (0, 0), (0, MAX_SIZE + 1)],
)
def test_inclusion_proof_refuses_out_of_range(index: int, size: int) -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_proof(LEAVES, index, size)


@pytest.mark.parametrize(("old", "new"), [(-1, 5), (6, 5), (1, MAX_SIZE + 1)])
def test_consistency_proof_refuses_out_of_range(old: int, new: int) -> None:
    with pytest.raises(ValueError):
        merkle.consistency_proof(LEAVES, old, new)


def test_verifiers_reject_malformed_input_without_raising() -> None:
    proof = merkle.inclusion_proof(LEAVES, 3, 10)
    assert not merkle.verify_inclusion(LEAVES[3], 3, 10, [proof[0][:31], *proof[1:]], REF_ROOTS[10])
    assert not merkle.verify_inclusion(LEAVES[3][:31], 3, 10, proof, REF_ROOTS[10])
    assert not merkle.verify_inclusion(LEAVES[3], -1, 10, proof, REF_ROOTS[10])
    assert not merkle.verify_inclusion(LEAVES[3], 3, 0, proof, REF_ROOTS[10])
    cproof = merkle.consistency_proof(LEAVES, 3, 10)
    assert not merkle.verify_consistency(3, 10, REF_ROOTS[3], REF_ROOTS[10][:31], cproof)
    assert not merkle.verify_consistency(-1, 10, REF_ROOTS[3], REF_ROOTS[10], cproof)


def test_frontier_rejects_bad_leaf_and_bad_bytes() -> None:
    frontier = merkle.MerkleFrontier()
    with pytest.raises(ValueError):
        frontier.append(b"short")
    frontier.extend(LEAVES[:5])
    data = frontier.to_bytes()
    assert len(data) == 9 + 2 * 32
    with pytest.raises(ValueError):
        merkle.MerkleFrontier.from_bytes(data[:-1])
    with pytest.raises(ValueError):
        merkle.MerkleFrontier.from_bytes(data + LEAVES[0])
    with pytest.raises(ValueError):
        merkle.MerkleFrontier.from_bytes(b"\x02" + data[1:])
    with pytest.raises(ValueError):
        merkle.MerkleFrontier.from_bytes(b"\x01")


def test_frontier_copy_is_independent() -> None:
    frontier = merkle.MerkleFrontier.from_leaf_hashes(LEAVES[:7])
    trial = frontier.copy()
    trial.append(LEAVES[7])
    assert frontier.size == 7
    assert frontier.root() == REF_ROOTS[7]
    assert trial.root() == REF_ROOTS[8]
