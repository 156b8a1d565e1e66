"""Battery Level (0x2A19): one u8, 0-100 %."""

from __future__ import annotations

from edge.errors import MalformedFrame
from edge.gatt.registry import Reading, register

UUID = 0x2A19


@register(UUID)
def decode_battery(data: bytes) -> list[Reading]:
    if len(data) != 1:
        raise MalformedFrame(f"battery level 0x2A19: expected 1 byte, got {len(data)}")
    if data[0] > 100:
        raise MalformedFrame(f"battery level 0x2A19: {data[0]} % is outside 0..100")
    return [Reading(kind="battery", val={"battery_level": data[0]})]
