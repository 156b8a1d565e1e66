"""A simulated device counts every notification that reaches the central, also one still on its way when the
device is stopped: the demo's accounting (frames sent = records + joined + malformed) depends on it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bumble.link import LocalLink

from firmware_sim.bumble_devices import BumbleHeartRateStrap
from firmware_sim.heart_rate_strap import HeartRateStrap


def test_a_notification_in_flight_when_the_device_stops_is_counted() -> None:
    async def go() -> tuple[int, list[bytes]]:
        strap = BumbleHeartRateStrap(LocalLink(), "F3:00:00:00:00:01", HeartRateStrap("hr-1", 1))  # type: ignore[no-untyped-call]
        entered, release = asyncio.Event(), asyncio.Event()
        delivered: list[bytes] = []

        async def slow_notify(_char: Any, data: bytes) -> None:
            entered.set()
            await release.wait()
            delivered.append(data)  # it reached the central

        strap.device.notify_subscribers = slow_notify  # type: ignore[method-assign,assignment]
        sending = asyncio.create_task(strap._send(strap.model.char, b"\x00\x3c"))
        await entered.wait()
        sending.cancel()  # the device is stopped while the notification is on its way
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await sending
        return strap.frames_emitted, delivered

    emitted, delivered = asyncio.run(go())
    assert delivered == [b"\x00\x3c"] and emitted == 1
