"""Consent events: a member's consent per purpose, granted or withdrawn at a time, signed by the gateway.

A platform keeps these to prove it had consent for what it received (PIPL Art. 29: separate consent for
sensitive personal information; Art. 15: withdrawal stops processing from then on). Each event names the
member only by ``sub`` (see :mod:`edge.record`) and chains to the gateway's previous consent event by SM3
digest, so a withheld withdrawal shows as a gap: ``n`` runs 1, 2, ... per gateway and ``prev`` is the SM3
of the previous event's bytes (all zero for the first).

Wire form (body key ``consent`` in the signed envelope): canonical CBOR
``{type: "consent", gw, n, t, sub, purpose, granted, prev}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge import cbor, envelope
from edge.errors import CodecError
from edge.manifest import GENESIS_PREV
from edge.record import check_id, is_sub
from edge.signing import Signer, Verifier
from edge.sm3 import DIGEST_SIZE, sm3

CONSENT_TYPE = "consent"
PURPOSES = ("fitness_service", "health_management", "research", "insurance")
MAX_CONSENT_BYTES = 256
MAX_SIGNED_CONSENT_BYTES = 512
_FIELDS = {"type", "gw", "n", "t", "sub", "purpose", "granted", "prev"}


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    gw: str
    n: int  # 1, 2, ... per gateway
    t: int  # wall ms when staff recorded it; it takes effect for records journaled from then on
    sub: str
    purpose: str
    granted: bool
    prev: bytes  # SM3 of the previous event's bytes; GENESIS_PREV for n = 1

    def __post_init__(self) -> None:
        check_id(self.gw, "consent.gw")
        cbor.check_u64(self.n, "consent.n")
        cbor.check_u64(self.t, "consent.t")
        if self.n < 1:
            raise CodecError("consent.n: events are numbered from 1")
        if not is_sub(self.sub):
            raise CodecError("consent.sub: expected a subject id (sub- and 16 lower-case hex digits)")
        if self.purpose not in PURPOSES:
            raise CodecError(f"consent.purpose: {self.purpose!r} is not one of {', '.join(PURPOSES)}")
        if type(self.granted) is not bool:
            raise CodecError("consent.granted: expected true or false")
        if not isinstance(self.prev, bytes) or len(self.prev) != DIGEST_SIZE:
            raise CodecError(f"consent.prev: expected {DIGEST_SIZE} bytes")
        if (self.n == 1) != (self.prev == GENESIS_PREV):
            raise CodecError("consent.prev: all zero exactly for the first event")

    def __bytes__(self) -> bytes:
        return cbor.dumps(
            {
                "type": CONSENT_TYPE,
                "gw": self.gw,
                "n": self.n,
                "t": self.t,
                "sub": self.sub,
                "purpose": self.purpose,
                "granted": self.granted,
                "prev": self.prev,
            }
        )

    @property
    def digest(self) -> bytes:
        """What the next event's ``prev`` must be."""
        return sm3(bytes(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> ConsentEvent:
        w = "consent"
        m = cbor.expect_map(cbor.loads(envelope.bounded(data, MAX_CONSENT_BYTES, w)), w, _FIELDS)
        if cbor.field(m, "type", str, w) != CONSENT_TYPE:
            raise CodecError(f"consent.type: expected {CONSENT_TYPE!r}")
        return cls(
            gw=cbor.field(m, "gw", str, w),
            n=cbor.uint(m, "n", w),
            t=cbor.uint(m, "t", w),
            sub=cbor.field(m, "sub", str, w),
            purpose=cbor.field(m, "purpose", str, w),
            granted=cbor.field(m, "granted", bool, w),
            prev=cbor.field(m, "prev", bytes, w),
        )


class SignedConsent(envelope.Signed[ConsentEvent]):
    """The signed envelope of one consent event; always holds a well-formed event."""

    __slots__ = ()
    BODY_KEY = CONSENT_TYPE
    WHAT = "signed consent"
    MAX_BYTES = MAX_SIGNED_CONSENT_BYTES

    def _parse(self, body: bytes) -> ConsentEvent:
        return ConsentEvent.from_bytes(body)

    @property
    def event(self) -> ConsentEvent:
        return self._parsed


def sign_consent(event: ConsentEvent, signer: Signer) -> SignedConsent:
    return SignedConsent.sign(bytes(event), signer)


def check_consent_chain(signed: Iterable[bytes], gw: str, verifier: Verifier) -> dict[tuple[str, str], bool]:
    """Verify a gateway's consent events in order (signature, gateway, numbering, ``prev`` chain) and return
    the consent in force after the last: (sub, purpose) → granted. Raises CodecError at the first problem:
    a check that could not pass is never a partial answer."""
    state: dict[tuple[str, str], bool] = {}
    prev, n = GENESIS_PREV, 0
    for data in signed:
        s = SignedConsent.from_bytes(data)
        e = s.event
        if not s.verify(verifier):
            raise CodecError(f"consent event {e.n}: signature does not verify under {verifier.key_id}")
        if e.gw != gw:
            raise CodecError(f"consent event {e.n}: from gateway {e.gw!r}, expected {gw!r}")
        if e.n != n + 1 or e.prev != prev:
            raise CodecError(f"consent event {e.n}: does not continue event {n} (a gap, replay or reorder)")
        state[(e.sub, e.purpose)] = e.granted
        prev, n = e.digest, e.n
    return state
