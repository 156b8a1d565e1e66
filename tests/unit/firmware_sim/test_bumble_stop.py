"""A simulated device's count of what it sent is final once it stopped: the simulators compare it with what
the gateway received, so a frame still being sent when stopping is asked must be counted, not lost."""

from __future__ import annotations

import asyncio
from typing import Any

from bumble.link import LocalLink

from firmware_sim.bumble_devices import BumbleHeartRateStrap
from firmware_sim.heart_rate_strap import HeartRateStrap


def test_a_notification_in_flight_when_stopping_is_counted_before_stop_returns() -> None:
    async def scenario() -> tuple[int, int]:
        strap = BumbleHeartRateStrap(LocalLink(), "F4:00:00:00:00:01", HeartRateStrap("hr-1", seed=1), 1.0, 1000.0)  # type: ignore[no-untyped-call]
        sending, release = asyncio.Event(), asyncio.Event()
        went_out = 0

        async def slow_notify(_char: Any, _data: bytes) -> None:
            nonlocal went_out
            sending.set()
            await release.wait()  # the notification is on its way when stopping is asked
            went_out += 1

        strap.device.notify_subscribers = slow_notify  # type: ignore[method-assign]
        strap._subscribed = lambda _char: True  # type: ignore[method-assign]  # a central listens
        await strap.start()
        await sending.wait()
        loop_task = strap._task
        assert loop_task is not None
        stopping = asyncio.create_task(strap.stop_notifying())
        await asyncio.wait([loop_task])  # the device's loop is gone; its notification is still going out
        release.set()
        await stopping
        counted = strap.frames_emitted
        await strap.stop()
        return went_out, counted

    went_out, counted = asyncio.run(scenario())
    assert went_out == 1
    assert counted == went_out
