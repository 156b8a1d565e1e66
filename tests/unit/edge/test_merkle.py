"""RFC 9162 Merkle trees with SM3: checked against a literal transcription of the RFC's definitions."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import MerkleError
from edge.merkle import (
    MerkleTree,
    empty_root,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_consistency,
    verify_inclusion,
)


def H(data: bytes) -> bytes:
    return hashlib.new("sm3", data).digest()


def k_of(n: int) -> int:
    """The largest power of two smaller than n (RFC 9162 §2.1.1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    if not d:
        return H(b"")
    if len(d) == 1:
        return H(b"\x00" + d[0])
    k = k_of(len(d))
    return H(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = k_of(len(d))
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = k_of(n)
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def leaves(n: int) -> list[bytes]:
    return [f"record {i}".encode() * (i % 3 + 1) for i in range(n)]


def test_golden_values() -> None:
    assert empty_root() == MerkleTree([]).root == H(b"")
    assert empty_root().hex() == "1ab21d8355cfa17f8e61194831e81a8f22bec8c728fefb747ed035eb5082aa2b"
    a, b, c = b"a", b"b", b"c"
    assert merkle_root([a]) == H(b"\x00a")
    assert merkle_root([a, b, c]) == H(b"\x01" + H(b"\x01" + H(b"\x00a") + H(b"\x00b")) + H(b"\x00c"))
    assert leaf_hash(a) == H(b"\x00a") and node_hash(a, b) == H(b"\x01ab")


@pytest.mark.parametrize("n", range(1, 71))
def test_matches_the_rfc_definitions(n: int) -> None:
    d = leaves(n)
    tree = MerkleTree(d)
    assert tree.root == mth(d)
    for m in range(n):
        assert tree.inclusion_proof(m) == path(m, d)
        assert verify_inclusion(d[m], m, n, tree.inclusion_proof(m), tree.root)
    for m in range(1, n + 1):
        proof = tree.consistency_proof(m)
        assert proof == subproof(m, d, True)
        assert verify_consistency(m, n, mth(d[:m]), tree.root, proof)


def test_out_of_range_requests() -> None:
    tree = MerkleTree(leaves(5))
    with pytest.raises(MerkleError):
        tree.inclusion_proof(5)
    with pytest.raises(MerkleError):
        tree.consistency_proof(0)
    assert not verify_inclusion(b"x", 5, 5, [], tree.root)
    assert not verify_inclusion(b"x", 0, 1, [b"\x00" * 32] * 65, tree.root)


def flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=40), st.data())
def test_every_proof_verifies_and_any_flipped_bit_fails(d: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree(d)
    n = len(d)
    m = data.draw(st.integers(0, n - 1))
    proof = tree.inclusion_proof(m)
    assert verify_inclusion(d[m], m, n, proof, tree.root)
    # Flip one bit of the leaf, of one path element, or of the root.
    target = data.draw(st.sampled_from(["leaf", "root"] + (["path"] if proof else [])))
    if target == "leaf":
        bit = data.draw(st.integers(0, len(d[m]) * 8 - 1))
        assert not verify_inclusion(flip(d[m], bit), m, n, proof, tree.root)
    elif target == "root":
        assert not verify_inclusion(d[m], m, n, proof, flip(tree.root, data.draw(st.integers(0, 255))))
    else:
        i = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[i] = flip(bad[i], data.draw(st.integers(0, 255)))
        assert not verify_inclusion(d[m], m, n, bad, tree.root)
    # The proof is bound to its position and tree size too.
    if n > 1:
        assert not verify_inclusion(d[m], (m + 1) % n, n, proof, tree.root) or d[m] == d[(m + 1) % n]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 60), st.data())
def test_consistency_proofs_and_tampering(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    m = data.draw(st.integers(1, n))
    tree = MerkleTree(d)
    old = MerkleTree(d[:m]).root
    proof = tree.consistency_proof(m)
    assert verify_consistency(m, n, old, tree.root, proof)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[i] = flip(bad[i], data.draw(st.integers(0, 255)))
        assert not verify_consistency(m, n, old, tree.root, bad)
    assert not verify_consistency(m, n, flip(old, 3), tree.root, proof)
