"""Frame sources that are not a radio: simulated devices fed straight into the pipeline.

The BLE adapter (bleak) implements the same ``BleSource`` role; this one lets the demo, the tests
and the benchmarks run the whole path without hardware.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from edge.frame import Frame
from firmware_sim.heart_rate_strap import HeartRateStrap


class SimulatedStrapSource:
    """N heart-rate straps notifying every ``interval_s``; ``speed`` > 1 runs session time faster."""

    def __init__(
        self, devices: int, interval_s: float = 1.0, seed: int = 1, speed: float = 1.0, prefix: str = "hr-strap"
    ) -> None:
        self.straps = [HeartRateStrap(f"{prefix}-{i + 1:03d}", seed=seed * 1000 + i) for i in range(devices)]
        self.interval_s = interval_s
        self.speed = speed
        self.frames_sent = 0

    async def quiesce(self) -> None:
        """Nothing in flight: frames are submitted synchronously."""

    async def run(self, submit: Callable[[Frame], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        n = len(self.straps)
        while True:
            session_t = tick * self.interval_s
            for i, strap in enumerate(self.straps):
                # Spread devices across the interval like unsynchronised real straps.
                await submit(strap.frame_at(session_t + i * self.interval_s / max(n, 1)))
                self.frames_sent += 1
            tick += 1
            due = start + tick * self.interval_s / self.speed
            await asyncio.sleep(max(0.0, due - loop.time()))
