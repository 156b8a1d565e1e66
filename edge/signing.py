"""Roles for signing and verifying batch manifests, independent of the SM2 implementation behind them."""

from __future__ import annotations

from typing import Protocol

from edge.sm3 import sm3

# GM/T 0009 default user ID; OpenSSL's default is empty, so it must always be passed explicitly.
DEFAULT_SM2_ID = b"1234567812345678"


def key_id_for(spki_der: bytes) -> str:
    """A short, stable name for a public key: ``sm2:`` + first 8 bytes of SM3(SubjectPublicKeyInfo DER)."""
    return "sm2:" + sm3(spki_der)[:8].hex()


class Verifier(Protocol):
    """Checks signatures under one public key. Never raises on bad input: returns False."""

    @property
    def key_id(self) -> str: ...

    def public_key_pem(self) -> str: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...


class Signer(Verifier, Protocol):
    """Signs with one private key; the signature is DER ``SEQUENCE{r, s}``."""

    def sign(self, message: bytes) -> bytes: ...
