"""Decoder registry: characteristic UUID → function from payload bytes to readings."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.errors import EdgeError, UnknownCharacteristic

ReadingValue = int | float | bool | list[int | float]
Decoder = Callable[[bytes], list["Reading"]]

_BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"
_UUID16 = re.compile(r"^(0x)?([0-9a-f]{4})$")
_UUID128 = re.compile(r"^0000([0-9a-f]{4})" + re.escape(_BASE_UUID_TAIL) + "$")


class BadUuid(EdgeError, ValueError):
    """A characteristic UUID is not a 16-bit SIG UUID in any accepted spelling."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One decoded measurement: its ``kind`` and ``val`` go into a record; ``q`` are quality flags."""

    kind: str
    val: dict[str, ReadingValue]
    q: tuple[str, ...] = field(default=())


_DECODERS: dict[int, Decoder] = {}


def register(uuid16: int) -> Callable[[Decoder], Decoder]:
    def deco(fn: Decoder) -> Decoder:
        if uuid16 in _DECODERS:
            raise RuntimeError(f"decoder for 0x{uuid16:04X} registered twice")
        _DECODERS[uuid16] = fn
        return fn
    return deco


def decode(char: int, data: bytes) -> list[Reading]:
    """Decode one payload; raises ``UnknownCharacteristic`` or ``MalformedFrame``, nothing else."""
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
