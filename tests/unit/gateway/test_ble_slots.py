"""Aborting a dial to an address a private device has left (``ConnectionSlots``), against a fake backend.

A real backend does not end a cancelled connect at once: it withdraws it from the adapter first (LE Create
Connection Cancel and its answer), and on Python 3.11 a cancel can even be lost on the way (``wait_for``
drops it when the awaited result lands in the same loop pass). The adapter's connect slot must stay taken
until the connect has really ended, and never longer than the connect watchdog.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice

from gateway.ble.source import Admission, BleSettings, ConnectionSlots, DeviceState

IDENTITY = "irk:" + "00" * 16


@dataclass
class Backend:
    """What the fake connects saw, in order, and how the next one behaves."""

    lose_first_cancel: bool = False
    withdraw_s: float = 0.05  # how long a cancelled connect takes to end
    events: list[str] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0
    dialled: asyncio.Event = field(default_factory=asyncio.Event)  # set at each dial


class NeverAnswers(BaseBleakClient):
    """A connect to an address nobody advertises from any more: it only ends when cancelled."""

    backend = Backend()  # set by each test

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        b = self.backend
        b.in_flight += 1
        b.peak = max(b.peak, b.in_flight)
        b.events.append(f"dial {self.address}")
        b.dialled.set()
        try:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                b.events.append("cancelled")
                if not b.lose_first_cancel:
                    raise
                b.lose_first_cancel = False  # lost, as 3.11's wait_for loses one: keep waiting
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            try:
                await asyncio.sleep(b.withdraw_s)  # LE Create Connection Cancel, and its answer
            except asyncio.CancelledError:
                b.events.append("withdrawal cancelled")
                raise
            b.events.append("withdrawn")
            raise
        finally:
            b.in_flight -= 1

    async def disconnect(self) -> None:
        pass

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    async def unpair(self) -> None:
        raise NotImplementedError

    @property
    def is_connected(self) -> bool:
        return False

    @property
    def mtu_size(self) -> int:
        return 23

    async def read_gatt_char(self, *args: Any, **kwargs: Any) -> bytearray:
        raise NotImplementedError

    async def read_gatt_descriptor(self, *args: Any, **kwargs: Any) -> bytearray:
        raise NotImplementedError

    async def write_gatt_char(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    async def write_gatt_descriptor(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    async def start_notify(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    async def stop_notify(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError


def device_at(address: str) -> BLEDevice:
    return BLEDevice(address, None, None)


async def dialling(settings: BleSettings) -> tuple[ConnectionSlots, DeviceState, asyncio.Task[None]]:
    slots = ConnectionSlots(settings, Admission(settings.allow), asyncio.Queue(), {}, NeverAnswers, None, "hci0")
    st = DeviceState("ble-x", "70:00:00:00:00:01", IDENTITY, IDENTITY, ble_device=device_at("70:00:00:00:00:01"))
    slots.start_due([st], asyncio.get_running_loop().time())
    await NeverAnswers.backend.dialled.wait()
    return slots, st, slots._tasks[IDENTITY]


def moves(slots: ConnectionSlots, st: DeviceState, address: str) -> None:
    """What ``BleakSource`` does when the device shows up at a new private address."""
    st.address, st.ble_device = address, device_at(address)
    slots.abort_stale_dial(IDENTITY, address)


def test_a_device_that_rotates_again_while_its_dial_is_withdrawn_does_not_cut_the_withdrawal_short() -> None:
    async def main() -> None:
        b = NeverAnswers.backend = Backend(withdraw_s=0.2)
        slots, st, session = await dialling(BleSettings(allow=frozenset({IDENTITY}), backoff_min_s=0.01))
        moves(slots, st, "70:00:00:00:00:02")
        await asyncio.sleep(0.05)  # the first abort is being withdrawn ...
        moves(slots, st, "70:00:00:00:00:03")  # ... when the device moves on again
        await asyncio.gather(session, return_exceptions=True)
        # the adapter's connect slot was held until the connect had ended, and the withdrawal ran to its end
        assert b.events == ["dial 70:00:00:00:00:01", "cancelled", "withdrawn"]
        assert b.in_flight == 0
        # no backoff charged: the next try, at once, dials where the device is now
        assert st.next_attempt <= asyncio.get_running_loop().time() + 0.05
        b.dialled.clear()
        slots.start_due([st], asyncio.get_running_loop().time() + 0.05)
        await b.dialled.wait()
        assert b.events[3] == "dial 70:00:00:00:00:03" and b.peak == 1
        await slots.close()

    asyncio.run(main())


def test_a_cancel_the_backend_loses_is_delivered_again_by_the_connect_watchdog() -> None:
    async def main() -> None:
        b = NeverAnswers.backend = Backend(lose_first_cancel=True, withdraw_s=0.0)
        # The watchdog: one attempt (an IRK device) of 0.1 s, plus the fixed 5 s of slack.
        slots, st, session = await dialling(BleSettings(allow=frozenset({IDENTITY}), connect_timeout_s=0.1))
        loop = asyncio.get_running_loop()
        started = loop.time()
        moves(slots, st, "70:00:00:00:00:02")
        done, _ = await asyncio.wait({session}, timeout=15.0)
        assert done, "an aborted connect whose cancel was lost held the adapter past its watchdog"
        assert b.events == ["dial 70:00:00:00:00:01", "cancelled", "withdrawn"]
        assert loop.time() - started < 7.0
        await slots.close()

    asyncio.run(main())
