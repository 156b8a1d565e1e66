"""RFC 9162 (Certificate Transparency v2) Merkle trees with SM3 as the hash.

leaf = SM3(0x00 || data), node = SM3(0x01 || left || right); a tree of n leaves splits at the
largest power of two strictly below n. Building level by level and promoting an unpaired last node
produces exactly that shape, so proofs are read straight off the stored levels.

Verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency) step by step: it is
what a platform re-implements, so it must not depend on anything but the hash.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge import sm3 as _sm3
from edge.errors import MerkleError
from edge.sm3 import DIGEST_SIZE, sm3

_LEAF = b"\x00"
_NODE = b"\x01"
# A proof longer than this cannot belong to a tree of fewer than 2**64 leaves.
MAX_PROOF_LEN = 64


# Hashers pre-fed with the domain-separation byte: copying one is ~40% cheaper than a fresh SM3.
_LEAF_H = _sm3.new()
_LEAF_H.update(_LEAF)
_NODE_H = _sm3.new()
_NODE_H.update(_NODE)


def leaf_hash(data: bytes) -> bytes:
    h = _LEAF_H.copy()
    h.update(data)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    h = _NODE_H.copy()
    h.update(left)
    h.update(right)
    return h.digest()


def empty_root() -> bytes:
    """MTH({}) = SM3() per RFC 9162 §2.1.1."""
    return sm3()


def _levels(level: list[bytes]) -> list[list[bytes]]:
    """All levels bottom-up; an unpaired last node is promoted, which yields RFC 9162's shape."""
    levels = [level]
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(nxt)
        level = nxt
    return levels


class MerkleTree:
    """An immutable tree over a list of leaf byte strings, keeping every level for proofs."""

    __slots__ = ("_levels",)

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self._levels = _levels([leaf_hash(x) for x in leaves])

    @classmethod
    def from_leaf_hashes(cls, hashes: Sequence[bytes]) -> MerkleTree:
        """Build from leaf hashes already computed (the verification engine keeps a batch's leaves, not its
        records, once they are proven)."""
        tree = cls([])
        tree._levels = _levels(list(hashes))
        return tree

    @property
    def size(self) -> int:
        return len(self._levels[0])

    @property
    def root(self) -> bytes:
        if self.size == 0:
            return empty_root()
        return self._levels[-1][0]

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The audit path for leaf ``index``, deepest sibling first (RFC 9162 PATH(m, D[n]))."""
        if not 0 <= index < self.size:
            raise MerkleError(f"leaf index {index} out of range for a tree of {self.size}")
        path: list[bytes] = []
        i = index
        for level in self._levels[:-1]:
            sib = i ^ 1
            if sib < len(level):
                path.append(level[sib])
            i >>= 1
        return path

    def _subtree(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for any range inside the tree."""
        n = hi - lo
        if n == 1:
            return self._levels[0][lo]
        k = n.bit_length() - 1
        if n == 1 << k and lo % n == 0:
            return self._levels[k][lo >> k]
        split = 1 << ((n - 1).bit_length() - 1)
        return node_hash(self._subtree(lo, lo + split), self._subtree(lo + split, hi))

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """PROOF(m, D[n]) of RFC 9162 §2.1.4.1, showing the first ``old_size`` leaves are a prefix."""
        if not 0 < old_size <= self.size:
            raise MerkleError(f"old size {old_size} must be in 1..{self.size}")
        return self._subproof(old_size, 0, self.size, True)

    def _subproof(self, m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if complete else [self._subtree(lo, hi)]
        k = 1 << ((n - 1).bit_length() - 1)
        if m <= k:
            return [*self._subproof(m, lo, lo + k, complete), self._subtree(lo + k, hi)]
        return [*self._subproof(m - k, lo + k, hi, False), self._subtree(lo, lo + k)]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    return MerkleTree(leaves).root


def _check_hashes(items: Sequence[bytes]) -> bool:
    return len(items) <= MAX_PROOF_LEN and all(isinstance(h, bytes) and len(h) == DIGEST_SIZE for h in items)


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2 with ``leaf`` given as the record bytes (it is hashed here)."""
    return verify_inclusion_hash(leaf_hash(leaf), index, size, path, root)


def verify_inclusion_hash(leaf_h: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    if not (0 <= index < size) or not _check_hashes(path) or len(root) != DIGEST_SIZE:
        return False
    fn, sn = index, size - 1
    r = leaf_h
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: the tree of ``old_size`` leaves is a prefix of the one of ``new_size``."""
    if not (0 < old_size <= new_size) or not _check_hashes(proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    items = list(proof)
    if old_size & (old_size - 1) == 0:  # exact power of two: the old root is the first node
        items.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = items[0]
    for c in items[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
