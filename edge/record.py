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
from edge.errors import CodecError, NotCanonical

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
    if type(value) is str and value in _GOOD_IDS:
        return value
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS or not _ID_RE.fullmatch(value):
        raise CodecError(f"{what} must be 1-{MAX_ID_CHARS} chars of [A-Za-z0-9._-], got {value!r}")
    if len(_GOOD_IDS) < _CACHE_LIMIT:
        _GOOD_IDS.add(value)
    return value


def _is_name(name: Any) -> bool:
    if type(name) is not str:  # (and never hash what came off the wire before knowing it is text)
        return False
    if name in _GOOD_NAMES:
        return True
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
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
        """Parse a record; the input must be canonical so that its hash is unambiguous.

        The single-pass reader (below) accepts the usual shape; whatever it does not recognise is decided by
        decoding with cbor2 and re-encoding canonically, which also words the error."""
        if type(data) is bytes and cls is Record:
            try:
                fields = _read(data)
            except _READ_ERRORS:
                pass
            else:
                return _checked_record(fields)
        return cls._from_bytes_reference(data)

    @classmethod
    def _from_bytes_reference(cls, data: bytes) -> Record:
        """The reference parse: cbor2, canonical re-encoding compared byte for byte, then the field checks."""
        m = cbor.expect_map(cbor.loads(data), "record", _REQUIRED, _OPTIONAL)
        w = "record"
        q = m.get("q", [])
        if not isinstance(q, list):
            raise CodecError("record.q: expected an array")
        if "q" in m and not q:  # no flags is written as no "q": one byte form per record
            raise NotCanonical("record.q: an empty array is written as no q at all")
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
    if type(payload) is bytes:
        try:
            return _split_data(payload, max_records)
        except _READ_ERRORS:
            pass  # the reference path decides, and words the error
    items = cbor.loads(payload)
    if not isinstance(items, list) or not all(isinstance(x, bytes) for x in items):
        raise CodecError("data message: expected a CBOR array of byte strings")
    if len(items) > max_records:
        raise CodecError(f"data message: more than {max_records} records")
    return items


# ----------------------------------------------------------------------------- the single-pass reader
# ``Record.from_bytes`` runs for every record a verifier or an ingest instance receives. Decoding with cbor2 and
# then re-encoding canonically to compare costs ~10x the decode, so the usual shape is read here in one pass over
# the bytes: each head must be the shortest one, keys must come in canonical order, each field is checked as it
# is read, and the input must end exactly where the map does. The reader only ever *accepts*: anything it does
# not recognise (a tag, a bignum, an indefinite length, a long map, an error of any kind) is handed to the
# reference path above (cbor2 + canonical re-encoding), which decides and words the error. Nothing is refused
# that the reference would accept; the one risk is the reader accepting what the reference refuses, which
# ``tests/unit/edge/test_record_reader.py`` rules out on generated records, every mutation of them, and each
# forgery class by name.


# A record's fields in ``Record``'s order: (gw, seq, dev, t, kind, val, raw, salt, q, sub).
RecordFields = tuple[str, int, str, int, str, dict[str, Value], bytes, bytes, tuple[str, ...], str | None]


def read_record(data: bytes) -> RecordFields:
    """A record's fields, accepted or refused exactly as ``Record.from_bytes`` would, without building a ``Record``
    (what a verifier needs per record: the routing fields, once every field is checked)."""
    if type(data) is bytes:
        try:
            return _read(data)
        except _READ_ERRORS:
            pass
    r = Record._from_bytes_reference(data)
    return r.gw, r.seq, r.dev, r.t, r.kind, dict(r.val), r.raw, r.salt, r.q, r.sub


class _Unsure(Exception):
    """The reader does not recognise the input: the reference path decides."""


_UNSURE = _Unsure()
_U16 = _H.unpack_from
_U32 = _I.unpack_from
_U64 = _Q.unpack_from
_FLOAT_WIDTH = {0xF9: (3, _F16.unpack_from), 0xFA: (5, _F32.unpack_from), 0xFB: (9, _F64.unpack_from)}
# Texts already read and checked, by their encoded bytes: ids (gw, dev) and names (kind, field names, flags).
_READ_IDS: dict[bytes, str] = {}
_READ_NAMES: dict[bytes, str] = {}
# The same, with their keys: the bytes of ``gw`` and ``dev`` (a pair per device), and of ``kind``.
_GW_DEV: dict[bytes, tuple[str, str]] = {}
_PAIRS_LIMIT = 1 << 16
_KIND: dict[bytes, str] = {}
# ``val`` key sequences already known to be in canonical order, without duplicates.
_CANONICAL_NAMES: set[tuple[str, ...]] = set()


def _read_arg(data: bytes, p: int, info: int) -> tuple[int, int]:
    """The argument of the head at ``p`` whose additional information is ``info``, which must be its shortest
    form: (value, next position)."""
    if info < 24:
        return info, p + 1
    if info == 24:
        v, lo, p = data[p + 1], 24, p + 2
    elif info == 25:
        v, lo, p = _U16(data, p + 1)[0], 0x100, p + 3
    elif info == 26:
        v, lo, p = _U32(data, p + 1)[0], 0x10000, p + 5
    elif info == 27:
        v, lo, p = _U64(data, p + 1)[0], 0x100000000, p + 9
    else:
        raise _UNSURE
    if v < lo:
        raise _UNSURE
    return v, p


def _read_uint(data: bytes, p: int) -> tuple[int, int]:
    """An unsigned int (major type 0: heads 0x00..0x1b, where the head is its own additional information)."""
    return _read_arg(data, p, data[p])


def _read_len(data: bytes, p: int, major: int) -> tuple[int, int]:
    """A definite length of major type ``major`` (bytes, text, array, map) in its shortest head, below 65,536."""
    b = data[p] - (major << 5)
    if 0 <= b < 24:
        return b, p + 1
    if b == 24:
        n = data[p + 1]
        if n < 24:
            raise _UNSURE
        return n, p + 2
    if b == 25:
        n = _U16(data, p + 1)[0]
        if n < 0x100:
            raise _UNSURE
        return n, p + 3
    raise _UNSURE


def _read_text(data: bytes, p: int, cache: dict[bytes, str], check: Any) -> tuple[str, int]:
    n, p = _read_len(data, p, 3)
    end = p + n
    b = data[p:end]
    if len(b) != n:
        raise _UNSURE
    s = cache.get(b)
    if s is None:
        try:
            s = b.decode()
        except UnicodeDecodeError:
            raise _UNSURE from None
        if not check(s):
            raise _UNSURE
        if len(cache) < _CACHE_LIMIT:
            cache[b] = s
    return s, end


def _good_id(s: str) -> bool:
    try:
        check_id(s, "record")
    except CodecError:
        return False
    return True


def _read_bytes(data: bytes, p: int, most: int) -> tuple[bytes, int]:
    n, p = _read_len(data, p, 2)
    end = p + n
    if n > most or end > len(data):
        raise _UNSURE
    return data[p:end], end


def _read_number(data: bytes, p: int) -> tuple[int | float, int]:
    b = data[p]
    if b < 0x20:
        return _read_uint(data, p)
    if b < 0x40:  # major type 1: -1 - n
        n, p = _read_arg(data, p, b - 0x20)
        return -1 - n, p
    got = _FLOAT_WIDTH.get(b)
    if got is None:
        raise _UNSURE
    width, unpack = got
    x = unpack(data, p + 1)[0]
    end = p + width
    if x - x != 0.0 or (_FLOATS.get(x) or _float(x)) != data[p:end]:  # finite, and in its shortest form
        raise _UNSURE
    return x, end


def _read_value(data: bytes, p: int) -> tuple[Value, int]:
    """One ``val`` entry's value: a number, a bool or an array of numbers."""
    b = data[p]
    if b == 0x18:
        v = data[p + 1]
        if v < 0x18:
            raise _UNSURE
        return v, p + 2
    if b in _BOOLS:
        return b == 0xF5, p + 1
    if 0x80 <= b < 0x98:
        items: list[int | float] = []
        p += 1
        for _ in range(b - 0x80):
            x, p = _read_number(data, p)
            items.append(x)
        return items, p
    return _read_number(data, p)


_BOOLS = frozenset((0xF4, 0xF5))


def _read_val(data: bytes, p: int) -> tuple[dict[str, Value], int]:
    n = data[p] - 0xA0
    if 0 <= n < 24:
        p += 1
    else:
        n, p = _read_len(data, p, 5)
    val: dict[str, Value] = {}
    names = _READ_NAMES
    for _ in range(n):
        h = data[p]
        end = p + h - 0x5F
        name = names.get(data[p + 1 : end]) if 0x61 <= h < 0x78 else None  # a short name seen before: inline
        if name is None:
            name, end = _read_text(data, p, names, _is_name)
        b = data[end]
        if b < 0x18:
            val[name], p = b, end + 1
        elif b == 0x18 and data[end + 1] >= 0x18:  # 24..255 (a heart rate): inline
            val[name], p = data[end + 1], end + 2
        else:
            val[name], p = _read_value(data, end)
    if len(val) != n:
        raise _UNSURE  # a name twice: the reference path says so
    key = tuple(val)
    if key not in _CANONICAL_NAMES:
        if tuple(k for k, _ in _field_order(key)) != key:
            raise _UNSURE  # out of order: the reference path says so
        if len(_CANONICAL_NAMES) < _CACHE_LIMIT:
            _CANONICAL_NAMES.add(key)
    return val, p


def _key(data: bytes, p: int, key: bytes) -> int:
    end = p + len(key)
    if data[p:end] != key:
        raise _UNSURE
    return end


_T_HEAD = _K_T + b"\x1b"  # "t": a millisecond timestamp is always an 8-byte uint
_SALT = _K_SALT + b"\x50"  # "salt": h'<16 bytes>'


def _read_start(data: bytes) -> tuple[tuple[str, ...], bool, int, int]:
    """The map head, the flags and ``t``: (q, whether ``sub`` follows, t, next position)."""
    head = data[0]
    if head == 0xA8:
        has_q, has_sub = False, False
    elif head == 0xA9:
        has_q = data[1:3] == _K_Q
        has_sub = not has_q
    elif head == 0xAA:
        has_q, has_sub = True, True
    else:
        raise _UNSURE
    p = 1
    q: tuple[str, ...] = ()
    if has_q:
        nq, p = _read_len(data, _key(data, p, _K_Q), 4)
        if nq == 0:
            raise _UNSURE  # no flags are written as no "q" at all
        flags = []
        for _ in range(nq):
            flag, p = _read_text(data, p, _READ_NAMES, _is_name)
            flags.append(flag)
        q = tuple(flags)
    if data[p : p + 3] == _T_HEAD:
        t = _U64(data, p + 3)[0]
        if t < 0x100000000:
            raise _UNSURE
        return q, has_sub, t, p + 11
    t, p = _read_uint(data, _key(data, p, _K_T))
    return q, has_sub, t, p


def _read_ids(data: bytes, p: int) -> tuple[str, str, int]:
    """``gw`` and ``dev``: one lookup of their canonical bytes (keys, heads, texts) when read before."""
    start = p
    at_dev = p + data[p + 3] - 0x58  # where dev's head is, when gw is short: p + 3 + 1 + len + 4
    end = at_dev + data[at_dev] - 0x5F
    pair = _GW_DEV.get(data[p:end]) if end > p else None  # (a negative end would slice from the back)
    if pair is not None:
        return pair[0], pair[1], end
    gw, p = _read_text(data, _key(data, p, _K_GW), _READ_IDS, _good_id)
    dev, p = _read_text(data, _key(data, p, _K_DEV), _READ_IDS, _good_id)
    if len(_GW_DEV) < _PAIRS_LIMIT:
        _GW_DEV[data[start:p]] = gw, dev
    return gw, dev, p


def _read_raw_seq(data: bytes, p: int) -> tuple[bytes, int, int]:
    h = data[p + 4]
    if data[p : p + 4] != _K_RAW:
        raise _UNSURE
    if 0x40 <= h < 0x58:
        end = p + h - 0x3B
        raw = data[p + 5 : end]
        p = end
    else:
        raw, p = _read_bytes(data, p + 4, MAX_RAW_BYTES)
    b = data[p + 4]
    if data[p : p + 4] != _K_SEQ:
        raise _UNSURE
    if b < 0x18:
        return raw, b, p + 5
    if b == 0x19:  # seq 256..65535: inline, the usual case once a gateway has run a while
        seq = _U16(data, p + 5)[0]
        if seq < 0x100:
            raise _UNSURE
        return raw, seq, p + 7
    seq, p = _read_uint(data, p + 4)
    return raw, seq, p


def _read_end(data: bytes, p: int) -> tuple[str, bytes]:
    """``kind`` and ``salt``, which must end the input."""
    h = data[p + 5]
    end = p + h - 0x5A
    kind = _KIND.get(data[p:end]) if end > p else None
    if kind is not None:
        p = end
    else:
        start = p
        kind, p = _read_text(data, _key(data, p, _K_KIND), _READ_NAMES, _is_name)
        if len(_KIND) < _CACHE_LIMIT:
            _KIND[data[start:p]] = kind
    if data[p : p + 6] != _SALT or p + 22 != len(data):
        raise _UNSURE
    return kind, data[p + 6 :]


def _read(data: bytes) -> RecordFields:
    """The record's fields, every one checked, if ``data`` is the canonical form of a valid record in the usual
    shape; raises ``_Unsure`` (or an ``IndexError``, ``struct.error``, ``CodecError``) otherwise, including for
    valid records in an unusual shape. Positions only move forward by what each head declares, and the input must
    end exactly where the map does, so a short read anywhere fails the last check."""
    q, has_sub, t, p = _read_start(data)
    gw, dev, p = _read_ids(data, p)
    raw, seq, p = _read_raw_seq(data, p)
    sub = None
    if has_sub:
        sub, p = _read_text(data, _key(data, p, _K_SUB), {}, is_sub)
    if data[p : p + 4] != _K_VAL:
        raise _UNSURE
    val, p = _read_val(data, p + 4)
    kind, salt = _read_end(data, p)
    return gw, seq, dev, t, kind, val, raw, salt, q, sub


_READ_ERRORS = (_Unsure, IndexError, struct.error, CodecError)


def _split_data(payload: bytes, max_records: int) -> list[bytes]:
    """A data message read in one pass: a canonical array head, then byte strings in their shortest heads, ending
    exactly at the end of the payload; raises ``_Unsure`` for anything else (the reference path decides)."""
    h = payload[0]
    if 0x81 <= h < 0x98:
        n, p = h - 0x80, 1
    else:
        n, p = _read_len(payload, 0, 4)
    if not 0 < n <= max_records:
        raise _UNSURE
    items = []
    for _ in range(n):
        h = payload[p]
        if h == 0x58:
            size = payload[p + 1]
            if size < 24:
                raise _UNSURE
            p += 2
        else:
            size, p = _read_len(payload, p, 2)
        end = p + size
        items.append(payload[p:end])
        p = end
    if p != len(payload) or len(payload) > cbor.MAX_ITEM_BYTES:
        raise _UNSURE
    return items


_set = object.__setattr__
_new = object.__new__


def _checked_record(fields: RecordFields) -> Record:
    """A ``Record`` from fields ``_read`` has already checked (``__init__`` would check them all again)."""
    r = _new(Record)
    gw, seq, dev, t, kind, val, raw, salt, q, sub = fields
    _set(r, "gw", gw)
    _set(r, "seq", seq)
    _set(r, "dev", dev)
    _set(r, "t", t)
    _set(r, "kind", kind)
    _set(r, "val", val)
    _set(r, "raw", raw)
    _set(r, "salt", salt)
    _set(r, "q", q)
    _set(r, "sub", sub)
    _set(r, "enc", None)  # the reader only accepts records without ``enc``; sealed ones take the reference path
    return r
