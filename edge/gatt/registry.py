"""Decoder registry: characteristic UUID → function from payload bytes to readings."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from edge.errors import EdgeError, UnknownCharacteristic

ReadingValue = int | float | bool | list[int | float]
Decoder = Callable[[bytes], list["Reading"]]

_BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"
_UUID16 = re.compile(r"^(0x)?([0-9a-f]{4})$")
_UUID128 = re.compile(r"^0000([0-9a-f]{4})" + re.escape(_BASE_UUID_TAIL) + "$")


class BadUuid(EdgeError, ValueError):
    """A characteristic UUID is not a 16-bit SIG UUID in any accepted spelling."""


class BadQuirk(EdgeError, ValueError):
    """A per-model quirk has an unknown name or value."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One decoded measurement: its ``kind`` and ``val`` go into a record; ``q`` are quality flags."""

    kind: str
    val: dict[str, ReadingValue]
    q: tuple[str, ...] = field(default=())


_DECODERS: dict[int, Decoder] = {}
# Decoders whose output depends on per-device-model quirks (e.g. FTMS 1.0 vs the current definition).
OptionDecoder = Callable[[bytes, Mapping[str, str]], list["Reading"]]
_OPTION_DECODERS: dict[int, OptionDecoder] = {}
QUIRKS = {"ftms_variant": ("ftms_1_0", "current")}


def register_with_options(uuid16: int) -> Callable[[OptionDecoder], OptionDecoder]:
    def deco(fn: OptionDecoder) -> OptionDecoder:
        _OPTION_DECODERS[uuid16] = fn
        return fn

    return deco


def check_quirks(quirks: Mapping[str, str]) -> dict[str, str]:
    """Validate per-model quirks (names and values), e.g. ``{"ftms_variant": "current"}``."""
    for k, v in quirks.items():
        if k not in QUIRKS or v not in QUIRKS[k]:
            allowed = "; ".join(f"{n}: {', '.join(vs)}" for n, vs in QUIRKS.items())
            raise BadQuirk(f"unknown quirk {k}={v!r} (known: {allowed})")
    return dict(quirks)


def register(uuid16: int) -> Callable[[Decoder], Decoder]:
    def deco(fn: Decoder) -> Decoder:
        if uuid16 in _DECODERS:
            raise RuntimeError(f"decoder for 0x{uuid16:04X} registered twice")
        _DECODERS[uuid16] = fn
        return fn

    return deco


def decode(char: int, data: bytes, quirks: Mapping[str, str] | None = None) -> list[Reading]:
    """Decode one payload; raises ``UnknownCharacteristic`` or ``MalformedFrame``, nothing else.

    ``quirks`` carries the device model's deviations from the specification, if any.
    """
    if quirks:
        special = _OPTION_DECODERS.get(char)
        if special is not None:
            return special(bytes(data), quirks)
    fn = _DECODERS.get(char)
    if fn is None:
        raise UnknownCharacteristic(f"no decoder for characteristic 0x{char:04X}")
    return fn(bytes(data))


def known_characteristics() -> list[int]:
    return sorted(_DECODERS)


def parse_uuid(text: str) -> int:
    """Accept ``2a37``, ``0x2A37`` or ``00002a37-0000-1000-8000-00805f9b34fb``."""
    t = text.strip().lower()
    m = _UUID16.match(t) or _UUID128.match(t)
    if m is None:
        raise BadUuid(f"{text!r} is not a 16-bit Bluetooth SIG UUID (try 2a37, 0x2A37 or the 128-bit base form)")
    return int(m.group(m.lastindex or 1), 16)
