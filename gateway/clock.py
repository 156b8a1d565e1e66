"""The only place the gateway reads clocks: monotonic time inside, wall time at the record boundary."""

from __future__ import annotations

import time


def wall_ms() -> int:
    """Milliseconds since the Unix epoch (the record's ``t`` and the manifest's ``created``)."""
    return time.time_ns() // 1_000_000


def monotonic() -> float:
    return time.monotonic()
