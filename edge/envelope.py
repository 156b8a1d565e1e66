"""The signed envelope every gateway-signed payload travels in: ``{<body>: bstr, sig: bstr, key_id: text}``.

The body's bytes are carried exactly as signed, so a consumer checks the signature over the bytes it
received, never a re-encoding. Manifests (body key ``manifest``) and heads (body key ``head``) share this
shape; which structure a body is, is decided by the body's own fields, never by the envelope alone.
"""

from __future__ import annotations

from typing import Any

from edge import cbor
from edge.errors import CodecError
from edge.signing import Verifier

MAX_SIG_BYTES = 80  # DER SM2 signatures are 70-72 bytes
MAX_KEY_ID_CHARS = 64


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


def verify(body: bytes, sig: bytes, key_id: str, verifier: Verifier) -> bool:
    """True when ``sig`` is valid over ``body`` under ``verifier`` and the envelope names that key."""
    return key_id == verifier.key_id and verifier.verify(body, sig)
