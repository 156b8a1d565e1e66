"""A raw BLE value as it arrives from a device, before decoding."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Frame:
    """One notification, indication, read or advertisement payload.

    ``char`` is the 16-bit characteristic (or service-data) UUID; ``data`` the exact bytes received.
    """

    dev: str
    char: int
    data: bytes
