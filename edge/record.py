"""The reading record: one decoded measurement, in the exact bytes that are streamed, hashed and proven.

Wire form: a canonical CBOR map ``{gw, seq, dev, t, kind, val, raw, salt}`` (plus optional ``q``,
quality flags). The bytes are produced once, when the record is accepted, and are never re-encoded
afterwards: the journal, the MQTT payload and the Merkle leaf all use the same bytes.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

from edge import cbor
from edge.errors import CodecError

SALT_BYTES = 16
# A single BLE attribute value is at most 512 bytes (Core spec Vol 3 Part F §3.2.9); merged
# multi-notification records (FTMS, body composition) stay well below this bound.
MAX_RAW_BYTES = 2048
MAX_ID_CHARS = 64
MAX_VAL_FIELDS = 64
MAX_LIST_ITEMS = 64
# ids appear in MQTT topics: keep them to characters that are safe there and in file names.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

Value = int | float | bool | list[int | float]

_REQUIRED = {"gw", "seq", "dev", "t", "kind", "val", "raw", "salt"}
_OPTIONAL = frozenset({"q"})


# Names and ids already checked, so the hot path pays for each regex once per distinct string. Bounded:
# strings are few (field names, device ids) but come from the network on the verifier side.
_GOOD_NAMES: set[str] = set()
_GOOD_IDS: set[str] = set()
_CACHE_LIMIT = 4096


def check_id(value: str, what: str) -> str:
    """Validate a gateway or device id (text safe for topics, bounded)."""
    if value in _GOOD_IDS:
        return value
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS or not _ID_RE.match(value):
        raise CodecError(f"{what} must be 1-{MAX_ID_CHARS} chars of [A-Za-z0-9._-], got {value!r}")
    if len(_GOOD_IDS) < _CACHE_LIMIT:
        _GOOD_IDS.add(value)
    return value


def _is_name(name: Any) -> bool:
    if name in _GOOD_NAMES:
        return True
    if not isinstance(name, str) or not _NAME_RE.match(name):
        return False
    if len(_GOOD_NAMES) < _CACHE_LIMIT:
        _GOOD_NAMES.add(name)
    return True


def _check_number(v: Any, where: str) -> int | float:
    t = type(v)
    if t is int:
        return v  # type: ignore[no-any-return]
    if t is float:
        if v - v != 0.0:  # inf - inf and nan - nan are nan: cheaper than math.isfinite's call
            raise CodecError(f"{where}: non-finite numbers are not allowed (use a quality flag)")
        return v  # type: ignore[no-any-return]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise CodecError(f"{where}: expected a number, got {type(v).__name__}")
    if isinstance(v, float) and not math.isfinite(v):
        raise CodecError(f"{where}: non-finite numbers are not allowed (use a quality flag)")
    return v


def _check_val(val: Any) -> dict[str, Value]:
    if not isinstance(val, Mapping):
        raise CodecError(f"record.val: expected a map, got {type(val).__name__}")
    if len(val) > MAX_VAL_FIELDS:
        raise CodecError(f"record.val: more than {MAX_VAL_FIELDS} fields")
    out: dict[str, Value] = {}
    for name, v in val.items():
        if not _is_name(name):
            raise CodecError(f"record.val: field name {name!r} is not snake_case text")
        t = type(v)
        if t is bool:
            out[name] = v
        elif t is list:
            if len(v) > MAX_LIST_ITEMS:
                raise CodecError(f"record.val.{name}: more than {MAX_LIST_ITEMS} items")
            out[name] = [_check_number(x, "record.val." + name) for x in v]
        else:
            out[name] = _check_number(v, "record.val." + name)
    return out


@dataclass(frozen=True, slots=True)
class Record:
    """One accepted measurement. ``t`` is the gateway's receive time in ms since the Unix epoch."""

    gw: str
    seq: int
    dev: str
    t: int
    kind: str
    val: Mapping[str, Value]
    raw: bytes
    salt: bytes
    q: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        check_id(self.gw, "record.gw")
        check_id(self.dev, "record.dev")
        for name, v in (("seq", self.seq), ("t", self.t)):
            if type(v) is not int or v < 0 or v >= 1 << 64:
                raise CodecError(f"record.{name}: expected an unsigned 64-bit int, got {v!r}")
        if not _is_name(self.kind):
            raise CodecError(f"record.kind: {self.kind!r} is not snake_case text")
        object.__setattr__(self, "val", _check_val(self.val))
        if not isinstance(self.raw, bytes) or len(self.raw) > MAX_RAW_BYTES:
            raise CodecError(f"record.raw: expected at most {MAX_RAW_BYTES} bytes")
        if not isinstance(self.salt, bytes) or len(self.salt) != SALT_BYTES:
            raise CodecError(f"record.salt: expected exactly {SALT_BYTES} bytes")
        if not isinstance(self.q, tuple) or not all(_is_name(x) for x in self.q):
            raise CodecError("record.q: expected a tuple of snake_case flags")

    def to_map(self) -> dict[str, Any]:
        """The record as a map, built in canonical key order (``val`` too)."""
        val = self.val
        if len(val) > 1:
            val = {k: val[k] for k in sorted(val, key=_canonical_key)}
        m: dict[str, Any] = {"q": list(self.q)} if self.q else {}
        m.update(t=self.t, gw=self.gw, dev=self.dev, raw=self.raw, seq=self.seq, val=dict(val), kind=self.kind,
                 salt=self.salt)
        return m

    def __bytes__(self) -> bytes:
        """Canonical CBOR. The map is already in canonical key order, so when no value needs a shorter float
        form, plain encoding yields the canonical bytes and skips the sort (the hot path)."""
        m = self.to_map()
        if all(_plain_ok(v) for v in m["val"].values()):
            return cbor2.dumps(m)
        return cbor.dumps(m)

    @classmethod
    def from_bytes(cls, data: bytes) -> Record:
        """Parse a record; the input must be canonical so that its hash is unambiguous."""
        m = cbor.expect_map(cbor.loads(data), "record", _REQUIRED, _OPTIONAL)
        w = "record"
        q = m.get("q", [])
        if not isinstance(q, list):
            raise CodecError("record.q: expected an array")
        return cls(
            gw=cbor.field(m, "gw", str, w),
            seq=cbor.uint(m, "seq", w),
            dev=cbor.field(m, "dev", str, w),
            t=cbor.uint(m, "t", w),
            kind=cbor.field(m, "kind", str, w),
            val=cbor.field(m, "val", dict, w),
            raw=cbor.field(m, "raw", bytes, w),
            salt=cbor.field(m, "salt", bytes, w),
            q=tuple(q),
        )


def _canonical_key(k: str) -> tuple[int, bytes]:
    """RFC 8949 §4.2.1 order of text keys: by encoded length, then bytewise."""
    b = k.encode()
    return len(b), b


def _float64_only(x: float) -> bool:
    """True if canonical CBOR keeps ``x`` as a float64 (no float32 holds it exactly)."""
    try:
        return bool(struct.unpack("<f", struct.pack("<f", x))[0] != x)
    except OverflowError:
        return True


def _plain_ok(v: Any) -> bool:
    if type(v) is float:
        return _float64_only(v)
    if type(v) is list:
        return all(type(x) is not float or _float64_only(x) for x in v)
    return True


def encode_data_message(records: list[bytes]) -> bytes:
    """The ``data`` topic payload: a CBOR array of byte strings, each one record's exact bytes."""
    return cbor.dumps(list(records))


def decode_data_message(payload: bytes, max_records: int = 10_000) -> list[bytes]:
    """Split a ``data`` payload into record byte strings (not yet parsed)."""
    items = cbor.loads(payload)
    if not isinstance(items, list) or not all(isinstance(x, bytes) for x in items):
        raise CodecError("data message: expected a CBOR array of byte strings")
    if len(items) > max_records:
        raise CodecError(f"data message: more than {max_records} records")
    return items
