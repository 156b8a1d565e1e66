"""The reading record: one decoded measurement, in the exact bytes that are streamed, hashed and proven.

Wire form: a canonical CBOR map ``{gw, seq, dev, t, kind, val, raw, salt}`` (plus optional ``q``,
quality flags, ``sub``, the wearer's pseudonymous subject id while a member is bound to the device, and
``enc``, an audience view record's sealed content, see :mod:`edge.sealing`).
The bytes are produced once, when the record is accepted, and are never re-encoded afterwards: the
journal, the MQTT payload and the Merkle leaf all use the same bytes.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
_OPTIONAL = frozenset({"q", "sub", "enc"})
# A subject id: "sub-" and the first SUB_HEX hex digits of HMAC-SM3(site secret, member id) (64 bits: a
# collision among 100,000 members of a site has odds of about 3e-10). Stable per member per site.
SUB_HEX = 16
_SUB = re.compile(rf"sub-[0-9a-f]{{{SUB_HEX}}}")


# The sealed content of an audience view record (contract 1.3): {kid, iv, ct}; ct is ciphertext + tag.
ENC_IV_BYTES = 12
ENC_TAG_BYTES = 16
# The plaintext is {raw, val}: at most MAX_RAW_BYTES of raw and 64 fields of 64 numbers (< 40 KiB).
MAX_ENC_CT_BYTES = 1 << 16
_ENC_KEYS = {"kid", "iv", "ct"}


def check_enc(enc: Any) -> dict[str, Any]:
    """Validate an ``enc`` map (exact keys, key id text, 12-byte IV, bounded ciphertext with its tag)."""
    w = "record.enc"
    m = cbor.expect_map(dict(enc) if isinstance(enc, Mapping) else enc, w, _ENC_KEYS)
    kid = check_id(cbor.field(m, "kid", str, w), "record.enc.kid")
    iv, ct = cbor.field(m, "iv", bytes, w), cbor.field(m, "ct", bytes, w)
    if len(iv) != ENC_IV_BYTES:
        raise CodecError(f"record.enc.iv: expected exactly {ENC_IV_BYTES} bytes")
    if not ENC_TAG_BYTES <= len(ct) <= MAX_ENC_CT_BYTES:
        raise CodecError(f"record.enc.ct: expected {ENC_TAG_BYTES}..{MAX_ENC_CT_BYTES} bytes (ciphertext and tag)")
    return {"kid": kid, "iv": bytes(iv), "ct": bytes(ct)}


def _check_sealed(enc: Any, val: Any, raw: bytes) -> dict[str, Any]:
    """A sealed record carries its content only in ``enc``: ``val`` empty and ``raw`` empty."""
    out = check_enc(enc)
    if val or raw:
        raise CodecError("record.enc: a sealed record must have val = {} and raw = b''")
    return out


def is_sub(value: object) -> bool:
    """Whether ``value`` is a subject id in its one valid spelling."""
    return type(value) is str and _SUB.fullmatch(value) is not None


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
    _field_order(tuple(val))  # the field names
    out: dict[str, Value] = {}
    for name, v in val.items():
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


def _check_fields(
    gw: str, seq: int, dev: str, t: int, kind: str, raw: bytes, salt: bytes, q: tuple[str, ...], sub: str | None
) -> None:
    if sub is not None and not is_sub(sub):
        raise CodecError(f"record.sub: expected 'sub-' and {SUB_HEX} lower-case hex digits")
    check_id(gw, "record.gw")
    check_id(dev, "record.dev")
    if type(seq) is not int or seq < 0 or seq >= 1 << 64:
        raise CodecError(f"record.seq: expected an unsigned 64-bit int, got {seq!r}")
    if type(t) is not int or t < 0 or t >= 1 << 64:
        raise CodecError(f"record.t: expected an unsigned 64-bit int, got {t!r}")
    if not _is_name(kind):
        raise CodecError(f"record.kind: {kind!r} is not snake_case text")
    if not isinstance(raw, bytes) or len(raw) > MAX_RAW_BYTES:
        raise CodecError(f"record.raw: expected at most {MAX_RAW_BYTES} bytes")
    if not isinstance(salt, bytes) or len(salt) != SALT_BYTES:
        raise CodecError(f"record.salt: expected exactly {SALT_BYTES} bytes")
    if not isinstance(q, tuple) or not all(_is_name(x) for x in q):
        raise CodecError("record.q: expected a tuple of snake_case flags")


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
    sub: str | None = None
    enc: Mapping[str, Any] | None = None  # contract 1.3: sealed {raw, val} of an audience view record

    def __post_init__(self) -> None:
        _check_fields(self.gw, self.seq, self.dev, self.t, self.kind, self.raw, self.salt, self.q, self.sub)
        object.__setattr__(self, "val", _check_val(self.val))
        if self.enc is not None:
            object.__setattr__(self, "enc", _check_sealed(self.enc, self.val, self.raw))

    def to_map(self) -> dict[str, Any]:
        """The record as a map, built in canonical key order (``val`` too)."""
        val = {k: self.val[k] for k, _ in _field_order(tuple(self.val))}
        m = _as_map(self.gw, self.seq, self.dev, self.t, self.kind, val, self.raw, self.salt, self.q, self.sub)
        if self.enc is not None:
            m["enc"] = dict(self.enc)
        return m

    def __bytes__(self) -> bytes:
        """Canonical CBOR, written directly (see :func:`encode_record`)."""
        return _encode(
            self.gw, self.seq, self.dev, self.t, self.kind, self.val, self.raw, self.salt, self.q, self.sub, self.enc
        )

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
            sub=cbor.field(m, "sub", str, w) if "sub" in m else None,
            enc=m.get("enc"),
        )


def _canonical_key(k: str) -> tuple[int, bytes]:
    """RFC 8949 §4.2.1 order of text keys: by encoded length, then bytewise."""
    b = k.encode()
    return len(b), b


# ----------------------------------------------------------------------------- the direct encoder
# Record bytes are hashed into Merkle trees, so they must be canonical CBOR (RFC 8949 §4.2.1) byte for byte,
# and they are made for every reading at ingest. The shape is fixed, so the map is written directly in
# canonical key order from cached pieces (key heads, ids, field names) instead of building a dict for a
# general encoder. ``tests/unit/edge/test_record.py`` checks it against cbor2's canonical mode.

_H = struct.Struct(">H")
_I = struct.Struct(">I")
_Q = struct.Struct(">Q")
_F16 = struct.Struct(">e")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_SHORT_FLOATS = ((_F16, b"\xf9"), (_F32, b"\xfa"))


def _head(major: int, n: int) -> bytes:
    m = major << 5
    if n < 24:
        return bytes((m | n,))
    if n < 0x100:
        return bytes((m | 24, n))
    if n < 0x10000:
        return bytes((m | 25,)) + _H.pack(n)
    if n < 0x100000000:
        return bytes((m | 26,)) + _I.pack(n)
    return bytes((m | 27,)) + _Q.pack(n)


_SMALL_INTS = [_head(0, i) for i in range(256)]


def _int(v: int) -> bytes:
    if 0 <= v < 256:
        return _SMALL_INTS[v]
    if 0x100000000 <= v < 0x10000000000000000:  # millisecond timestamps
        return b"\x1b" + _Q.pack(v)
    if v >= 0:
        return _head(0, v)
    return _head(1, -1 - v)


def _float(x: float) -> bytes:
    """The shortest of float16/32/64 that holds ``x`` exactly (the value is already known to be finite)."""
    for form, tag in _SHORT_FLOATS:
        try:
            packed = form.pack(x)
        except OverflowError:
            continue
        if form.unpack(packed)[0] == x:
            return tag + packed
    return b"\xfb" + _F64.pack(x)


# Sensors repeat values (RR intervals are multiples of 1/1024 s, temperatures of 0.01 °C), so encodings
# are cached. Zeros never are: 0.0 and -0.0 are equal keys but encode differently.
_FLOATS: dict[float, bytes] = {}


def _checked_float(x: float, name: str) -> bytes:
    _check_number(x, "record.val." + name)
    out = _float(x)
    if x != 0.0 and len(_FLOATS) < _CACHE_LIMIT:
        _FLOATS[x] = out
    return out


_TEXT: dict[str, bytes] = {}


def _text(s: str) -> bytes:
    out = _TEXT.get(s)
    if out is None:
        b = s.encode()
        out = _head(3, len(b)) + b
        if len(_TEXT) < _CACHE_LIMIT:
            _TEXT[s] = out
    return out


def _bstr(b: bytes) -> bytes:
    n = len(b)
    return (bytes((0x40 | n,)) if n < 24 else _head(2, n)) + b


_ORDER: dict[tuple[str, ...], tuple[tuple[str, bytes], ...]] = {}
_INT_RANGE = (-(1 << 64), 1 << 64)  # beyond this cbor2 writes bignum tags: leave those to it


def _field_order(names: tuple[str, ...]) -> tuple[tuple[str, bytes], ...]:
    """Check ``val``'s field names and return them in canonical order with their encoded heads; cached per
    tuple of names, so a known shape costs one dict lookup."""
    out = _ORDER.get(names)
    if out is None:
        if len(names) > MAX_VAL_FIELDS:
            raise CodecError(f"record.val: more than {MAX_VAL_FIELDS} fields")
        for name in names:
            if not _is_name(name):
                raise CodecError(f"record.val: field name {name!r} is not snake_case text")
        out = tuple((k, _text(k)) for k in sorted(names, key=_canonical_key))
        if len(_ORDER) < _CACHE_LIMIT:
            _ORDER[names] = out
    return out


def _number(v: Any, name: str) -> bytes | None:
    """A checked number's encoding; None for the rare values left to cbor2 (int subclasses, bignums)."""
    t = type(v)
    if t is float:
        return _FLOATS.get(v) or _checked_float(v, name)
    if t is int:
        return _int(v) if _INT_RANGE[0] <= v < _INT_RANGE[1] else None
    _check_number(v, "record.val." + name)
    return None


_ARRAY_HEADS = [_head(4, n) for n in range(24)]
_MAP_HEADS = [_head(5, n) for n in range(24)]


# Keys in canonical order: q, t, gw, dev, raw, seq, sub, val, kind, salt (by encoded length, then bytewise).
_K_Q, _K_T, _K_GW, _K_DEV, _K_RAW, _K_SEQ, _K_SUB, _K_VAL, _K_KIND, _K_SALT = (
    _text(k) for k in ("q", "t", "gw", "dev", "raw", "seq", "sub", "val", "kind", "salt")
)


def _encode(
    gw: str,
    seq: int,
    dev: str,
    t: int,
    kind: str,
    val: Mapping[str, Value],
    raw: bytes,
    salt: bytes,
    q: tuple[str, ...],
    sub: str | None = None,
    sealed: Mapping[str, Any] | None = None,
) -> bytes:
    """Canonical CBOR of the record; checks ``val`` as it goes (the other fields are checked by the caller)."""
    if not isinstance(val, Mapping):
        raise CodecError(f"record.val: expected a map, got {type(val).__name__}")
    order = _field_order(tuple(val))
    parts = [_MAP_HEADS[8 + bool(q) + (sub is not None) + (sealed is not None)]]
    if q:
        parts += [_K_Q, _head(4, len(q)), *(_text(x) for x in q)]
    parts += [
        _K_T,
        _int(t),
        _K_GW,
        _text(gw),
        _K_DEV,
        _text(dev),
        # ``enc`` sorts after ``dev`` (same length, bytewise): its value is a checked {kid, iv, ct} map
        *((cbor.dumps({"enc": dict(sealed)})[1:],) if sealed is not None else ()),
        _K_RAW,
        _bstr(raw),
        _K_SEQ,
        _int(seq),
        *((_K_SUB, _text(sub)) if sub is not None else ()),
        _K_VAL,
        _MAP_HEADS[len(order)] if len(order) < 24 else _head(5, len(order)),
    ]
    plain = True
    for name, head in order:
        v = val[name]
        tv = type(v)
        if tv is bool:
            parts += (head, b"\xf5" if v else b"\xf4")
        elif tv is list:
            n = len(v)  # type: ignore[arg-type]
            if n > MAX_LIST_ITEMS:
                raise CodecError(f"record.val.{name}: more than {MAX_LIST_ITEMS} items")
            items = [_number(x, name) for x in v]  # type: ignore[union-attr]
            plain = plain and None not in items
            parts.append(head)
            parts.append(_ARRAY_HEADS[n] if n < 24 else _head(4, n))
            parts += items  # type: ignore[arg-type]
        else:
            enc = _number(v, name)
            if enc is None:
                plain = False
            else:
                parts += (head, enc)
    if not plain:  # a value only cbor2 writes (a bignum, an int subclass): the general canonical encoder
        m = _as_map(gw, seq, dev, t, kind, _check_val(val), raw, salt, q, sub)
        if sealed is not None:
            m["enc"] = dict(sealed)
        return cbor.dumps(m)
    parts += [_K_KIND, _text(kind), _K_SALT, _bstr(salt)]
    return b"".join(parts)


def _as_map(
    gw: str,
    seq: int,
    dev: str,
    t: int,
    kind: str,
    val: Mapping[str, Value],
    raw: bytes,
    salt: bytes,
    q: tuple[str, ...],
    sub: str | None = None,
) -> dict[str, Any]:
    m: dict[str, Any] = {"q": list(q)} if q else {}
    m.update(t=t, gw=gw, dev=dev, raw=raw, seq=seq, val=dict(val), kind=kind, salt=salt)
    if sub is not None:
        m["sub"] = sub
    return m


def encode_record(
    gw: str,
    seq: int,
    dev: str,
    t: int,
    kind: str,
    val: Mapping[str, Value],
    raw: bytes,
    salt: bytes,
    q: tuple[str, ...] = (),
    sub: str | None = None,
    enc: Mapping[str, Any] | None = None,
) -> bytes:
    """Validate the fields exactly as :class:`Record` does and return the record's canonical bytes.

    The gateway's ingest path uses this instead of building a ``Record``: the same checks, the same
    bytes, without an object per reading.
    """
    _check_fields(gw, seq, dev, t, kind, raw, salt, q, sub)
    if enc is not None:
        enc = _check_sealed(enc, val, raw)
    return _encode(gw, seq, dev, t, kind, val, raw, salt, q, sub, enc)


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
