"""Canonical CBOR helpers (RFC 8949 §4.2.1 core deterministic encoding).

Signed and hashed structures must have exactly one byte form; decoding therefore re-encodes and
rejects any input whose bytes differ from the canonical form of its value.
"""

from __future__ import annotations

from typing import Any

import cbor2

from edge.errors import CodecError, NotCanonical

# Inputs come from the network: cap their size so a hostile payload cannot make us allocate much.
MAX_ITEM_BYTES = 1 << 20


def dumps(value: Any) -> bytes:
    """Encode ``value`` canonically."""
    return cbor2.dumps(value, canonical=True)


def loads(data: bytes, *, canonical: bool = True) -> Any:
    """Decode one CBOR item; with ``canonical`` the input must be its value's canonical form."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_ITEM_BYTES:
        raise CodecError(f"CBOR item of {len(data)} bytes exceeds the {MAX_ITEM_BYTES}-byte limit")
    try:
        value = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several unrelated types on bad input
        raise CodecError(f"invalid CBOR: {exc}") from exc
    if canonical:
        try:
            again = dumps(value)
        except Exception as exc:
            raise CodecError(f"CBOR value cannot be re-encoded: {exc}") from exc
        if again != data:
            raise NotCanonical("CBOR input is not in canonical (deterministic) form")
    return value


def expect_map(value: Any, what: str, required: set[str], optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Check that ``value`` is a text-keyed map with exactly the required (and allowed optional) keys."""
    if not isinstance(value, dict):
        raise CodecError(f"{what}: expected a CBOR map, got {type(value).__name__}")
    keys = set(value)
    if not all(isinstance(k, str) for k in keys):
        raise CodecError(f"{what}: map keys must be text")
    missing = required - keys
    if missing:
        raise CodecError(f"{what}: missing field(s) {sorted(missing)}")
    extra = keys - required - optional
    if extra:
        raise CodecError(f"{what}: unexpected field(s) {sorted(extra)}")
    return value


def field(m: dict[str, Any], name: str, typ: type | tuple[type, ...], what: str) -> Any:
    """Fetch a field and check its type; ``bool`` never passes for ``int``."""
    v = m[name]
    if isinstance(v, bool) and typ is int:
        raise CodecError(f"{what}.{name}: expected int, got bool")
    if not isinstance(v, typ):
        raise CodecError(f"{what}.{name}: expected {typ}, got {type(v).__name__}")
    return v


def uint(m: dict[str, Any], name: str, what: str) -> int:
    v: int = field(m, name, int, what)
    if v < 0:
        raise CodecError(f"{what}.{name}: must not be negative")
    return v


def check_u64(v: Any, what: str) -> None:
    """Signed structures carry unsigned 64-bit ints only: what every consumer can hold without overflow."""
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
        raise CodecError(f"{what}: expected an unsigned 64-bit int, got {v!r}")
