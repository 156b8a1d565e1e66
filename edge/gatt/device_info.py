"""Device Information strings (manufacturer, model, serial, revisions): UTF-8 text, strictly decoded.

They describe the device, not a measurement, so they are not records; the registry and device state
use them (e.g. to apply per-model quirks).
"""

from __future__ import annotations

from edge.errors import MalformedFrame, UnknownCharacteristic

DEVICE_INFO_STRINGS = {
    0x2A29: "manufacturer",
    0x2A24: "model",
    0x2A25: "serial_number",
    0x2A27: "hardware_revision",
    0x2A26: "firmware_revision",
    0x2A28: "software_revision",
}
MAX_LEN = 248  # longest attribute value that fits a single ATT read response at the default MTU


def decode_device_info(char: int, data: bytes) -> tuple[str, str]:
    """(field name, text); trailing NULs (common in real devices) are dropped, control characters refused."""
    name = DEVICE_INFO_STRINGS.get(char)
    if name is None:
        raise UnknownCharacteristic(f"0x{char:04X} is not a Device Information string")
    if len(data) > MAX_LEN:
        raise MalformedFrame(f"device information {name}: {len(data)} bytes is too long")
    try:
        text = bytes(data).rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedFrame(f"device information {name}: not UTF-8 ({exc.reason})") from exc
    if any(ord(c) < 0x20 for c in text):
        raise MalformedFrame(f"device information {name}: contains control characters")
    return name, text
