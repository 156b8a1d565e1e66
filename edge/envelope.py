"""The signed envelope every gateway-signed payload travels in: ``{<body>: bstr, sig: bstr, key_id: text}``.

The body's bytes are carried exactly as signed, so a consumer checks the signature over the bytes it
received, never a re-encoding. Manifests (body key ``manifest``), heads (``head``), consent events
(``consent``) and view manifests (``view``) share this shape; which structure a body is, is decided by the
body's own fields, never by the envelope alone.

:class:`Signed` is their one implementation: a subclass names its body key, its size bound and how its body
parses, and gets construction, encoding, decoding, signing and verification from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Self, TypeVar

from edge import cbor
from edge.errors import CodecError
from edge.signing import Signer, Verifier

MAX_SIG_BYTES = 80  # DER SM2 signatures are 70-72 bytes
MAX_KEY_ID_CHARS = 64

B = TypeVar("B")


def encode(body_key: str, body: bytes, sig: bytes, key_id: str) -> bytes:
    return cbor.dumps({body_key: body, "sig": sig, "key_id": key_id})


def decode(data: bytes, body_key: str, what: str) -> tuple[bytes, bytes, str]:
    """(body bytes, DER signature, key id) of a canonical envelope; sizes are bounded before any use."""
    m: dict[str, Any] = cbor.expect_map(cbor.loads(data), what, {body_key, "sig", "key_id"})
    sig = cbor.field(m, "sig", bytes, what)
    key_id = cbor.field(m, "key_id", str, what)
    if len(sig) > MAX_SIG_BYTES or len(key_id) > MAX_KEY_ID_CHARS:
        raise CodecError(f"{what}: signature or key id too long")
    return cbor.field(m, body_key, bytes, what), sig, key_id


def signature_valid(body: bytes, sig: bytes, key_id: str, verifier: Verifier) -> bool:
    """True when ``sig`` is valid over ``body`` under ``verifier`` and the envelope names that key."""
    return key_id == verifier.key_id and verifier.verify(body, sig)


def bounded(data: bytes, limit: int, what: str) -> bytes:
    """Refuse input that is not bytes or is larger than ``limit`` before decoding anything in it."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > limit:
        raise CodecError(f"{what}: {len(data)} bytes exceeds the {limit}-byte limit")
    return bytes(data)


@dataclass(frozen=True, slots=True)
class Signed(Generic[B]):
    """A signed payload: the body's bytes exactly as signed, the DER signature, the signing key's id.

    The body is parsed once, at construction, so an instance always holds a well-formed body of its kind: a
    forged or mistyped body fails where the message is decoded, never later where it is read. Subclasses set
    ``BODY_KEY`` (the envelope key, also the body's ``type`` where it has one), ``WHAT`` (for errors) and
    ``MAX_BYTES`` (the largest valid envelope), and implement :meth:`_parse`.
    """

    body: bytes
    sig: bytes
    key_id: str
    _parsed: B = field(init=False, repr=False, compare=False)

    BODY_KEY: ClassVar[str]
    WHAT: ClassVar[str]
    MAX_BYTES: ClassVar[int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_parsed", self._parse(self.body))

    def _parse(self, body: bytes) -> B:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        return encode(self.BODY_KEY, self.body, self.sig, self.key_id)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        body, sig, key_id = decode(bounded(data, cls.MAX_BYTES, cls.WHAT), cls.BODY_KEY, cls.WHAT)
        return cls(body, sig, key_id)

    @classmethod
    def sign(cls, body: bytes, signer: Signer) -> Self:
        """``body`` (a structure's canonical bytes) signed by ``signer``."""
        return cls(body, signer.sign(body), signer.key_id)

    def verify(self, verifier: Verifier) -> bool:
        """True when the signature is valid under ``verifier`` and the key ids agree."""
        return signature_valid(self.body, self.sig, self.key_id, verifier)
