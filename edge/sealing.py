"""SM4-GCM sealing of an audience's view records (contract 1.3, the record's ``enc`` field).

A sealed record carries ``enc = {kid, iv, ct}``: ``ct`` is SM4-GCM over the canonical CBOR
``{"raw": raw, "val": val}`` with the record's own bytes (``enc`` removed) as associated data, followed by
the 16-byte tag. The associated data binds the ciphertext to its gateway, seq, device, subject, kind and
time, so a ciphertext moved to another record fails its tag.

The IV is derived, never drawn: HMAC-SM3(key, "tiyi-iv" 0x00 aud 0x00 gw 0x00 seq as 8 bytes ‖ SM3(plaintext)
‖ SM3(aad))[:12]. A view rebuilt after a restart is then byte-identical (its Merkle root does not change).
(aud, gw, seq) names one view record, and the digests of the plaintext and of the associated data keep the IV
apart even if a rebuild ever produced another record for that seq (changed rules, another time or flags, a
different set of readings in an aggregate): GCM must never see one IV with two (plaintext, aad) pairs under
one key, which would reveal the XOR of the plaintexts and let the authentication key be recovered. The 0x00
separators make the message unambiguous (ids never contain NUL; the two digests have a fixed size).

SM4 comes from ``cryptography`` (OpenSSL's implementation), never gmssl's pure-Python SM4.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from edge.errors import BackendUnavailable, CodecError
from edge.record import ENC_IV_BYTES, ENC_TAG_BYTES, check_enc, check_id
from edge.sm3 import sm3

SM4_KEY_BYTES = 16
IV_BYTES = ENC_IV_BYTES
TAG_BYTES = ENC_TAG_BYTES
_IV_LABEL = b"tiyi-iv"


class SealError(CodecError):
    """A sealed value cannot be opened: unknown key id, wrong sizes, or its tag does not verify."""


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != SM4_KEY_BYTES:
        raise SealError(f"an SM4 key is exactly {SM4_KEY_BYTES} bytes")


def hmac_sm3(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SM3 of the concatenation of ``parts`` (OpenSSL's SM3 through hashlib)."""
    mac = hmac.new(key, digestmod="sm3")
    for p in parts:
        mac.update(p)
    return mac.digest()


def labelled(label: bytes, aud: str, gw: str, seq: int) -> bytes:
    """The unambiguous message ``label 0x00 aud 0x00 gw 0x00 seq(8 bytes BE)`` used for IVs and view salts."""
    check_id(aud, "audience id")
    check_id(gw, "gateway id")
    if type(seq) is not int or not 0 <= seq < 1 << 64:
        raise CodecError(f"seq: expected an unsigned 64-bit int, got {seq!r}")
    return b"\x00".join((label, aud.encode(), gw.encode(), seq.to_bytes(8, "big")))


def derive_iv(key: bytes, aud: str, gw: str, seq: int, *, plaintext: bytes, aad: bytes) -> bytes:
    """The deterministic 12-byte IV of view record ``seq`` of gateway ``gw`` for audience ``aud``, sealing
    ``plaintext`` with associated data ``aad``."""
    _check_key(key)
    if not isinstance(plaintext, bytes) or not isinstance(aad, bytes):
        raise SealError("plaintext and associated data must be bytes")
    return hmac_sm3(key, labelled(_IV_LABEL, aud, gw, seq), sm3(plaintext), sm3(aad))[:IV_BYTES]


_backend_ok: bool | None = None


def check_backend() -> None:
    """Raise :class:`BackendUnavailable` unless this OpenSSL does SM4-GCM (checked once, by a round trip).

    The gateway calls this at start-up when an audience encrypts, so a missing cipher stops it there
    instead of at the first batch.
    """
    global _backend_ok  # noqa: PLW0603 - a process-wide, write-once capability flag
    if _backend_ok is None:
        try:
            key, iv = bytes(SM4_KEY_BYTES), bytes(IV_BYTES)
            ct, tag = _encrypt(key, iv, b"tiyi", b"")
            _backend_ok = _decrypt(key, iv, ct, tag, b"") == b"tiyi"
        except (UnsupportedAlgorithm, ValueError, InvalidTag):
            _backend_ok = False
    if not _backend_ok:
        raise BackendUnavailable("this OpenSSL/cryptography has no SM4-GCM; install cryptography >= 50")


def _encrypt(key: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    enc = Cipher(algorithms.SM4(key), modes.GCM(iv)).encryptor()
    enc.authenticate_additional_data(aad)
    ct = enc.update(plaintext) + enc.finalize()
    return ct, enc.tag


def _decrypt(key: bytes, iv: bytes, ct: bytes, tag: bytes, aad: bytes) -> bytes:
    dec = Cipher(algorithms.SM4(key), modes.GCM(iv, tag)).decryptor()
    dec.authenticate_additional_data(aad)
    return dec.update(ct) + dec.finalize()


def seal(key: bytes, kid: str, iv: bytes, plaintext: bytes, aad: bytes) -> dict[str, Any]:
    """The ``enc`` map ``{kid, iv, ct}``: SM4-GCM of ``plaintext`` under ``key``, tag appended to ``ct``."""
    _check_key(key)
    check_id(kid, "key id")
    if not isinstance(iv, bytes) or len(iv) != IV_BYTES:
        raise SealError(f"an SM4-GCM IV here is exactly {IV_BYTES} bytes")
    if not isinstance(plaintext, bytes) or not isinstance(aad, bytes):
        raise SealError("plaintext and associated data must be bytes")
    check_backend()
    ct, tag = _encrypt(key, iv, plaintext, aad)
    return check_enc({"kid": kid, "iv": iv, "ct": ct + tag})


def open_sealed(keys: Mapping[str, bytes], enc: Mapping[str, Any], aad: bytes) -> bytes:
    """The plaintext of a sealed ``enc`` map, or :class:`SealError` (unknown kid, bad sizes, tag mismatch)."""
    try:
        checked = check_enc(enc)
    except CodecError as exc:
        raise SealError(str(exc)) from None
    kid = checked["kid"]
    key = keys.get(kid)
    if key is None:
        raise SealError(f"no key with id {kid!r}")
    _check_key(key)
    check_backend()
    ct = checked["ct"]
    try:
        return _decrypt(key, checked["iv"], ct[:-TAG_BYTES], ct[-TAG_BYTES:], aad)
    except InvalidTag:
        raise SealError(f"SM4-GCM tag does not verify under key {kid!r} (altered ciphertext or record)") from None
