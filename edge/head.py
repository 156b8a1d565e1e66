"""Signed heads: the gateway's signed word on which batch is its latest, so a withheld tail shows.

Batches chain backwards (each manifest names its predecessor), so a platform that lost the *last* batches
cannot tell from what it holds. Like a transparency log's signed tree head or checkpoint, the gateway
therefore signs and publishes (retained, refreshed) a head naming its latest published batch: number,
last seq and manifest digest, with the wall time it said so. A platform compares the newest head with
the batches it received and, with a chain, with the latest batch anchored there (the chain is the
witness that the gateway is not showing different heads to different people).

The signed bytes carry ``type: "head"``. A manifest has no such field and a head has none of a
manifest's, and both decoders refuse unknown and missing fields, so a signature made over one (both are
signed with the same key) can never be passed off as the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge import cbor, envelope
from edge.errors import CodecError
from edge.manifest import GENESIS_PREV
from edge.record import check_id
from edge.signing import Signer
from edge.sm3 import DIGEST_SIZE

HEAD_TYPE = "head"
NO_MANIFEST = GENESIS_PREV  # the digest of "no batch yet": what batch 1's ``prev`` will be
MAX_HEAD_BYTES = 256  # the largest valid head (64-char gw, 64-bit numbers) is 172 bytes
MAX_SIGNED_HEAD_BYTES = 512  # that, an 80-byte signature and a 64-char key id: 339 bytes

_FIELDS = {"type", "gw", "batch", "last_seq", "manifest", "issued"}


@dataclass(frozen=True, slots=True)
class Head:
    """The latest published batch of ``gw`` as of ``issued`` (wall ms); batch 0 means none yet.

    ``manifest`` is that batch's :attr:`Manifest.digest`, i.e. the ``prev`` the next batch will carry.
    """

    gw: str
    batch: int
    last_seq: int
    manifest: bytes
    issued: int

    def __post_init__(self) -> None:
        check_id(self.gw, "head.gw")
        for name in ("batch", "last_seq", "issued"):
            cbor.check_u64(getattr(self, name), f"head.{name}")
        if not isinstance(self.manifest, bytes) or len(self.manifest) != DIGEST_SIZE:
            raise CodecError(f"head.manifest: expected {DIGEST_SIZE} bytes")
        if self.batch == 0:
            if self.last_seq != 0 or self.manifest != NO_MANIFEST:
                raise CodecError("head: batch 0 (none closed yet) needs last_seq 0 and an all-zero manifest digest")
        elif self.last_seq < self.batch:
            # Batches start at seq 1, adjoin and hold at least one record each.
            raise CodecError(f"head: batch {self.batch} cannot end at seq {self.last_seq}")
        elif self.manifest == NO_MANIFEST:
            raise CodecError("head: a closed batch's manifest digest cannot be all zero")

    def __bytes__(self) -> bytes:
        return cbor.dumps(
            {
                "type": HEAD_TYPE,
                "gw": self.gw,
                "batch": self.batch,
                "last_seq": self.last_seq,
                "manifest": self.manifest,
                "issued": self.issued,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Head:
        w = "head"
        m = cbor.expect_map(cbor.loads(envelope.bounded(data, MAX_HEAD_BYTES, w)), w, _FIELDS)
        if cbor.field(m, "type", str, w) != HEAD_TYPE:
            raise CodecError(f"head.type: expected {HEAD_TYPE!r}, got {m['type']!r}")
        return cls(
            gw=cbor.field(m, "gw", str, w),
            batch=cbor.uint(m, "batch", w),
            last_seq=cbor.uint(m, "last_seq", w),
            manifest=cbor.field(m, "manifest", bytes, w),
            issued=cbor.uint(m, "issued", w),
        )


class SignedHead(envelope.Signed[Head]):
    """The ``head`` topic payload: head bytes exactly as signed, the DER signature, the key id."""

    __slots__ = ()
    BODY_KEY = HEAD_TYPE
    WHAT = "signed head"
    MAX_BYTES = MAX_SIGNED_HEAD_BYTES

    def _parse(self, body: bytes) -> Head:
        return Head.from_bytes(body)

    @property
    def head(self) -> Head:
        return self._parsed


def sign_head(head: Head, signer: Signer) -> SignedHead:
    return SignedHead.sign(bytes(head), signer)
