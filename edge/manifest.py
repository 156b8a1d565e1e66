"""Batch manifests: what a gateway signs so that a platform can prove completeness and order.

A batch covers the consecutive records ``first_seq..last_seq``. Its manifest links to the previous
one through ``prev`` (SM3 of the previous manifest's bytes), so dropping, reordering or replaying a
batch breaks the chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge import cbor, envelope
from edge.errors import CodecError
from edge.merkle import merkle_root
from edge.record import check_id
from edge.signing import Signer
from edge.sm3 import DIGEST_SIZE, sm3

GENESIS_PREV = bytes(DIGEST_SIZE)
HASH_NAME = "sm3"
MAX_SIGNED_MANIFEST_BYTES = 512  # the largest valid one (64-char gw and key id, 64-bit numbers, 80-byte sig): 404

_MANIFEST_FIELDS = {"gw", "batch", "first_seq", "last_seq", "count", "root", "prev", "hash", "created"}


@dataclass(frozen=True, slots=True)
class Manifest:
    gw: str
    batch: int
    first_seq: int
    last_seq: int
    count: int
    root: bytes
    prev: bytes
    created: int
    hash: str = HASH_NAME

    def __post_init__(self) -> None:
        check_id(self.gw, "manifest.gw")
        for name in ("batch", "first_seq", "last_seq", "count", "created"):
            cbor.check_u64(getattr(self, name), f"manifest.{name}")
        if self.last_seq < self.first_seq:
            raise CodecError("manifest: last_seq precedes first_seq")
        if self.count != self.last_seq - self.first_seq + 1:
            raise CodecError("manifest: count does not match first_seq..last_seq")
        for name in ("root", "prev"):
            v = getattr(self, name)
            if not isinstance(v, bytes) or len(v) != DIGEST_SIZE:
                raise CodecError(f"manifest.{name}: expected {DIGEST_SIZE} bytes")
        if self.hash != HASH_NAME:
            raise CodecError(f"manifest.hash: only {HASH_NAME!r} is supported, got {self.hash!r}")

    def __bytes__(self) -> bytes:
        return cbor.dumps(
            {
                "gw": self.gw,
                "batch": self.batch,
                "first_seq": self.first_seq,
                "last_seq": self.last_seq,
                "count": self.count,
                "root": self.root,
                "prev": self.prev,
                "hash": self.hash,
                "created": self.created,
            }
        )

    @property
    def digest(self) -> bytes:
        """SM3 of the manifest bytes: the next manifest's ``prev``."""
        return sm3(bytes(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        m = cbor.expect_map(cbor.loads(data), "manifest", _MANIFEST_FIELDS)
        w = "manifest"
        return cls(
            gw=cbor.field(m, "gw", str, w),
            batch=cbor.uint(m, "batch", w),
            first_seq=cbor.uint(m, "first_seq", w),
            last_seq=cbor.uint(m, "last_seq", w),
            count=cbor.uint(m, "count", w),
            root=cbor.field(m, "root", bytes, w),
            prev=cbor.field(m, "prev", bytes, w),
            hash=cbor.field(m, "hash", str, w),
            created=cbor.uint(m, "created", w),
        )


def build_manifest(
    gw: str, batch: int, first_seq: int, records: Sequence[bytes], prev: bytes, created: int
) -> Manifest:
    """The manifest for ``records`` (their exact bytes, in seq order from ``first_seq``)."""
    if not records:
        raise CodecError("a batch needs at least one record")
    return Manifest(
        gw=gw,
        batch=batch,
        first_seq=first_seq,
        last_seq=first_seq + len(records) - 1,
        count=len(records),
        root=merkle_root(records),
        prev=prev,
        created=created,
    )


class SignedManifest(envelope.Signed[Manifest]):
    """The ``batch`` topic payload: manifest bytes exactly as signed, the DER signature, the key id."""

    __slots__ = ()
    BODY_KEY = "manifest"
    WHAT = "signed manifest"
    MAX_BYTES = MAX_SIGNED_MANIFEST_BYTES

    def _parse(self, body: bytes) -> Manifest:
        return Manifest.from_bytes(body)

    @property
    def manifest(self) -> Manifest:
        return self._parsed


def sign_manifest(manifest: Manifest, signer: Signer) -> SignedManifest:
    return SignedManifest.sign(bytes(manifest), signer)
