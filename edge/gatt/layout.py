"""Flag-driven GATT layouts: one table per characteristic, decoded and encoded by the same code.

Most SIG measurement characteristics are a flags field followed by groups of fields that are present
when a flag bit is set (FTMS: bit 0 "More Data" is inverted, so its group is present when the bit is
*clear*). Describing each characteristic as a table keeps decoding and encoding exact inverses of each
other, and lets tests check every flag combination mechanically. Raw values stay raw (integers, the
16/32-bit IEEE 11073 words, the 7-byte Date Time) so re-encoding reproduces the input byte for byte;
unit conversion happens afterwards, in each profile's ``to_reading``.
"""

from __future__ import annotations

import calendar
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from edge.errors import MalformedFrame

Fmt = Literal["u8", "s8", "u16", "s16", "u24", "s24", "u32", "sfloat", "float", "datetime"]
_SIZES: dict[str, int] = {
    "u8": 1,
    "s8": 1,
    "u16": 2,
    "s16": 2,
    "u24": 3,
    "s24": 3,
    "u32": 4,
    "sfloat": 2,
    "float": 4,
    "datetime": 7,
}
Raw = int | bytes
_SIGNED = frozenset({"s8", "s16", "s24"})  # SFLOAT/FLOAT words are kept as unsigned raw words

# IEEE 11073-20601 special values.
SFLOAT_NAN = 0x07FF
SFLOAT_SPECIAL = {SFLOAT_NAN: "nan", 0x0800: "nres", 0x07FE: "pos_inf", 0x0802: "neg_inf", 0x0801: "reserved"}
FLOAT_SPECIAL = {
    0x007FFFFF: "nan",
    0x00800000: "nres",
    0x007FFFFE: "pos_inf",
    0x00800002: "neg_inf",
    0x00800001: "reserved",
}


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    fmt: Fmt


@dataclass(frozen=True, slots=True)
class Group:
    """Fields present when ``flag`` is set (or clear, if ``inverted``); ``flag`` 0 means always."""

    flag: int
    fields: tuple[Field, ...]
    inverted: bool = False

    def present(self, flags: int) -> bool:
        if self.flag == 0:
            return True
        on = bool(flags & self.flag)
        return not on if self.inverted else on


@dataclass(frozen=True, slots=True)
class Layout:
    name: str  # for error messages, e.g. "blood pressure 0x2A35"
    flags_size: int
    groups: tuple[Group, ...]

    def decode(self, data: bytes) -> tuple[int, dict[str, Raw]]:
        flags, out, end = self.decode_at(data, 0)
        if end != len(data):
            raise MalformedFrame(f"{self.name}: {len(data) - end} trailing byte(s) after the announced fields")
        return flags, out

    def decode_at(self, data: bytes, start: int) -> tuple[int, dict[str, Raw], int]:
        """Decode one value that begins at ``start``; also return where it ends (for joined parts)."""
        if len(data) - start < self.flags_size:
            raise MalformedFrame(
                f"{self.name}: {len(data) - start} byte(s), too short for the {self.flags_size}-byte flags"
            )
        flags = int.from_bytes(data[start : start + self.flags_size], "little")
        pos = start + self.flags_size
        out: dict[str, Raw] = {}
        for g in self.groups:
            if not g.present(flags):
                continue
            for f in g.fields:
                size = _SIZES[f.fmt]
                if pos + size > len(data):
                    raise MalformedFrame(
                        f"{self.name}: flags announce {f.name} ({size} bytes at offset {pos}) but the "
                        f"payload has {len(data)} bytes"
                    )
                chunk = data[pos : pos + size]
                out[f.name] = chunk if f.fmt == "datetime" else int.from_bytes(chunk, "little", signed=f.fmt in _SIGNED)
                pos += size
        return flags, out, pos

    def decode_joined(
        self, data: bytes, continue_bit: int, repeatable: frozenset[str] = frozenset()
    ) -> tuple[int, dict[str, Raw], int]:
        """Decode one record sent as several values and joined in arrival order (see ``edge.gatt.assembly``).

        A value with ``continue_bit`` set may be followed by another; the fields of all parts are merged.
        A field may appear in more than one part only if it is ``repeatable`` and has the same value each
        time, so a join can never hide a contradiction. Returns (flags of all parts OR-ed, with
        ``continue_bit`` as the last part has it; merged fields; number of parts).
        """
        flags, merged, pos = self.decode_at(data, 0)
        all_flags, parts = flags, 1
        while pos < len(data):
            if not flags & continue_bit:
                raise MalformedFrame(f"{self.name}: {len(data) - pos} trailing byte(s) after the announced fields")
            flags, fields, pos = self.decode_at(data, pos)
            parts += 1
            for name, value in fields.items():
                if name in merged and (name not in repeatable or merged[name] != value):
                    raise MalformedFrame(f"{self.name}: part {parts} repeats {name}")
                merged[name] = value
            all_flags |= flags
        return (all_flags & ~continue_bit) | (flags & continue_bit), merged, parts

    def encode(self, flags: int, values: Mapping[str, Raw]) -> bytes:
        out = bytearray(flags.to_bytes(self.flags_size, "little"))
        for g in self.groups:
            if not g.present(flags):
                continue
            for f in g.fields:
                v = values[f.name]
                if f.fmt == "datetime":
                    assert isinstance(v, bytes) and len(v) == 7
                    out += v
                else:
                    assert isinstance(v, int)
                    out += v.to_bytes(_SIZES[f.fmt], "little", signed=f.fmt in _SIGNED)
        return bytes(out)


def sfloat(word: int) -> tuple[float | None, str | None]:
    """IEEE 11073 16-bit SFLOAT: 4-bit signed exponent, 12-bit signed mantissa; specials → (None, name)."""
    word &= 0xFFFF
    if word in SFLOAT_SPECIAL:
        return None, SFLOAT_SPECIAL[word]
    mantissa = word & 0x0FFF
    exponent = word >> 12
    if mantissa >= 0x0800:
        mantissa -= 0x1000
    if exponent >= 0x8:
        exponent -= 0x10
    return _scaled(mantissa, exponent), None


def float32(word: int) -> tuple[float | None, str | None]:
    """IEEE 11073 32-bit FLOAT: 8-bit signed exponent, 24-bit signed mantissa."""
    word &= 0xFFFFFFFF
    if word in FLOAT_SPECIAL:
        return None, FLOAT_SPECIAL[word]
    mantissa = word & 0xFFFFFF
    exponent = word >> 24
    if mantissa >= 0x800000:
        mantissa -= 0x1000000
    if exponent >= 0x80:
        exponent -= 0x100
    return _scaled(mantissa, exponent), None


def _scaled(mantissa: int, exponent: int) -> float:
    # Decimal scaling done with integers where possible so 366e-1 is exactly the float nearest 36.6.
    if exponent >= 0:
        return float(mantissa * int(10**exponent))
    return mantissa / int(10**-exponent)


def encode_sfloat(mantissa: int, exponent: int) -> int:
    if not (-2048 <= mantissa <= 2047 and -8 <= exponent <= 7):
        raise ValueError("SFLOAT mantissa or exponent out of range")
    return ((exponent & 0xF) << 12) | (mantissa & 0x0FFF)


def encode_float32(mantissa: int, exponent: int) -> int:
    if not (-(2**23) <= mantissa < 2**23 and -128 <= exponent <= 127):
        raise ValueError("FLOAT mantissa or exponent out of range")
    return ((exponent & 0xFF) << 24) | (mantissa & 0xFFFFFF)


# Quality flags a Date Time value can raise. Named here only; decoders and docs use these.
DEVICE_TIME_UNKNOWN = "device_time_unknown"  # year, month and day all 0: the device's clock is not set
DEVICE_TIME_PARTIAL = "device_time_partial"  # some of year/month/day 0: the known parts are kept as fields
DEVICE_TIME_INVALID = "device_time_invalid"  # a field out of range (month 13, 31 April, 24:00): nothing kept


def date_time(raw: bytes) -> tuple[dict[str, int], str | None]:
    """Date Time (year u16, month, day, hours, minutes, seconds) → record fields and at most one flag.

    The characteristic has no time zone; the device's clock is kept as given and the gateway's own
    receive time sits next to it in the record. Year, month and day 0 each mean "not known" (hours,
    minutes and seconds have no such value). A complete value becomes ``device_time`` (Unix seconds, read
    as UTC). An incomplete one is not guessed at: its known parts become ``device_year``,
    ``device_month``, ``device_day`` and ``device_time_of_day`` (s since midnight) with
    ``device_time_partial``, so a platform can still place it (with the receive time) at its resolution.
    With no date part at all the time of day is that of an unset clock (time since power-on), so nothing
    is kept. Every present field is range-checked first: a value that is wrong is never partly believed.
    """
    year = int.from_bytes(raw[:2], "little")
    month, day, hour, minute, second = raw[2:7]
    if year > 9999 or month > 12 or hour > 23 or minute > 59 or second > 59 or day > _days_in_month(year, month):
        return {}, DEVICE_TIME_INVALID
    if year == month == day == 0:
        return {}, DEVICE_TIME_UNKNOWN
    if year and month and day:
        return {"device_time": int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())}, None
    known = {"device_year": year, "device_month": month, "device_day": day}
    fields = {k: v for k, v in known.items() if v}
    fields["device_time_of_day"] = hour * 3600 + minute * 60 + second
    return fields, DEVICE_TIME_PARTIAL


def _days_in_month(year: int, month: int) -> int:
    """The largest valid day: 31 when the month is not known, 29 in February of an unknown year."""
    if month == 0:
        return 31
    if month == 2 and year == 0:
        return 29
    return calendar.monthrange(year or 2001, month)[1]


def encode_date_time(ts: int) -> bytes:
    d = datetime.fromtimestamp(ts, UTC)
    return d.year.to_bytes(2, "little") + bytes([d.month, d.day, d.hour, d.minute, d.second])


def finite(x: float) -> bool:
    return math.isfinite(x)


def pack(fmt: str, *values: int) -> bytes:
    return struct.pack(fmt, *values)
