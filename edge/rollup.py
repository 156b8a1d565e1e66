"""Roll-ups: one Merkle tree over a period's batch roots, anchored once on a second target.

A gateway anchors every batch on its regional sub-chain; a supervision chain gets one transaction per
period instead. The roll-up tree is RFC 9162 with SM3, exactly like a batch tree, whose leaves are the
batch Merkle roots of consecutive batches in batch order. A reading is then provable against either
target: record → batch root (inclusion path) → roll-up root (roll-up path) → the roll-up's anchor.

On chain a roll-up is anchored under the gateway's own id with the contract's ``kind`` set to roll-up, its
roll-up number as the number and the number of batches as the count, so it can never be mistaken for a
batch anchor (the kind is an argument of its own, not a suffix a gateway id could imitate). Pure: no I/O,
no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from edge import cbor
from edge.errors import CodecError
from edge.merkle import MAX_PROOF_LEN, MerkleTree, verify_inclusion
from edge.record import check_id
from edge.sm3 import DIGEST_SIZE

MAX_BATCHES = 1 << 20  # a roll-up of a day of one-second batches is ~86k; this bounds a malicious message


@dataclass(frozen=True)
class Rollup:
    """Roll-up ``number`` of gateway ``gw`` for ``target``: batches first_batch..first_batch+len(roots)-1."""

    gw: str
    target: str
    number: int
    first_batch: int
    roots: tuple[bytes, ...]

    def __post_init__(self) -> None:
        check_id(self.gw, "rollup.gw")
        check_id(self.target, "rollup.target")
        for name in ("number", "first_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v < 1 << 63:
                raise CodecError(f"rollup.{name}: expected a positive integer, got {v!r}")
        if not 1 <= len(self.roots) <= MAX_BATCHES:
            raise CodecError(f"rollup.roots: 1..{MAX_BATCHES} batch roots, got {len(self.roots)}")
        if not all(isinstance(r, bytes) and len(r) == DIGEST_SIZE for r in self.roots):
            raise CodecError("rollup.roots: every batch root is 32 bytes")

    @property
    def last_batch(self) -> int:
        return self.first_batch + len(self.roots) - 1

    @cached_property
    def tree(self) -> MerkleTree:
        return MerkleTree(self.roots)

    @property
    def root(self) -> bytes:
        return self.tree.root

    def path(self, batch: int) -> list[bytes]:
        """The roll-up path of ``batch``'s root (RFC 9162 inclusion proof)."""
        if not self.first_batch <= batch <= self.last_batch:
            raise CodecError(f"batch {batch} is not in roll-up {self.number} ({self.first_batch}..{self.last_batch})")
        return self.tree.inclusion_proof(batch - self.first_batch)

    def __bytes__(self) -> bytes:
        return cbor.dumps(
            {
                "gw": self.gw,
                "target": self.target,
                "rollup": self.number,
                "first_batch": self.first_batch,
                "roots": list(self.roots),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Rollup:
        m = cbor.expect_map(cbor.loads(data), "rollup", {"gw", "target", "rollup", "first_batch", "roots"})
        roots = m.get("roots")
        if not isinstance(roots, list):
            raise CodecError("rollup.roots: expected a list")
        return cls(
            gw=cbor.field(m, "gw", str, "rollup"),
            target=cbor.field(m, "target", str, "rollup"),
            number=cbor.uint(m, "rollup", "rollup"),
            first_batch=cbor.uint(m, "first_batch", "rollup"),
            roots=tuple(roots),
        )


def verify_rollup_path(batch_root: bytes, index: int, size: int, path: Sequence[bytes], rollup_root: bytes) -> bool:
    """Is ``batch_root`` leaf ``index`` of the ``size``-leaf roll-up tree with root ``rollup_root``?"""
    return len(path) <= MAX_PROOF_LEN and verify_inclusion(batch_root, index, size, path, rollup_root)
