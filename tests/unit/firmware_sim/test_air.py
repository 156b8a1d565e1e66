"""What a simulator compares with the gateway is what reached the gateway's radio: a frame on its way when a
link ended never arrives (as on a real radio), and a stopped device sends nothing more, not even a value read.

Seen with a busy CPU: 'error: 1 simulated frame(s) were neither journaled nor reported' after a chaos run
(a battery value the device served as its link went down was counted as sent)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
from bleak.exc import BleakError
from bumble.device import Advertisement, Connection, Peer
from bumble.gatt_client import CharacteristicProxy

from firmware_sim.air import Air, arrived_frames
from firmware_sim.bumble_devices import BATTERY_LEVEL, BumbleHeartRateStrap
from firmware_sim.heart_rate_strap import HeartRateStrap
from gateway.ble.bumble_backend import BumbleCentral, _gatt
from gateway.cli.demo import BumbleDemoSource

HEART_RATE = 0x2A37
Scenario = Callable[
    [BumbleHeartRateStrap, Connection, dict[int, CharacteristicProxy[Any]], list[bytes]], Awaitable[None]
]


def run(scenario: Scenario) -> tuple[int, int, int]:
    """A strap and a central on an ``Air``, connected and subscribed; ``scenario`` then plays. Returns what the
    strap counts as sent, what the demo's source counts as sent (what the gateway must account for), and what
    the central received."""

    async def main() -> tuple[int, int, int]:
        air = Air()
        strap = BumbleHeartRateStrap(air, "F4:00:00:00:00:01", HeartRateStrap("hr-1", seed=1), 1.0, 0.001)
        central = BumbleCentral(air)
        await central.start()
        await strap.device.power_on()
        await strap._advertise()  # on the air, but not emitting on its own: the scenario sends
        seen: asyncio.Future[Advertisement] = asyncio.get_running_loop().create_future()
        central.device.on("advertisement", lambda adv: seen.done() or seen.set_result(adv))
        await central.scan(True)
        address = (await seen).address
        await central.scan(False)
        conn = await central.connect(
            address, 10.0
        )  # as the gateway's client connects (a link nobody dialled is closed)
        peer = Peer(conn)
        await peer.discover_services()
        chars: dict[int, CharacteristicProxy[Any]] = {}
        for service in peer.services:
            await service.discover_characteristics()
            for c in service.characteristics:
                chars[int(c.uuid.to_hex_str(), 16)] = c
        received: list[bytes] = []
        await peer.subscribe(chars[HEART_RATE], received.append)
        await scenario(strap, conn, chars, received)
        for _ in range(50):  # whatever is still on its way lands (the emulated radio needs a few loop turns)
            await asyncio.sleep(0)
        source = BumbleDemoSource([strap], cast(Any, None), air)
        return strap.frames_emitted, source.frames_sent, len(received)

    return asyncio.run(main())


def test_a_notification_cut_off_by_the_central_disconnecting_is_not_counted() -> None:
    async def scenario(strap: BumbleHeartRateStrap, conn: Connection, _c: Any, received: list[bytes]) -> None:
        await strap._send(HEART_RATE, b"\x00\x48")
        await asyncio.sleep(0.05)
        assert received == [b"\x00\x48"]  # a notification on a live link arrives
        closing = asyncio.ensure_future(conn.disconnect())
        await asyncio.sleep(0)  # the central's controller has dropped the link ...
        await strap._send(HEART_RATE, b"\x00\x49")  # ... while the strap still sees its subscriber
        await closing

    emitted, sent, received = run(scenario)
    assert (emitted, received) == (2, 1)  # the strap counted the second one, the central never got it
    assert sent == received


def test_a_value_read_as_the_link_went_down_is_not_counted() -> None:
    async def scenario(_s: BumbleHeartRateStrap, conn: Connection, chars: Any, received: list[bytes]) -> None:
        reading = asyncio.ensure_future(Peer(conn).read_value(chars[BATTERY_LEVEL]))
        await asyncio.sleep(0)  # the read request is on its way ...
        await conn.disconnect()  # ... when the central drops the link: the strap answers a link that is gone
        with pytest.raises(asyncio.CancelledError):  # (Bumble cancels a request whose link dropped)
            await reading

    emitted, sent, received = run(scenario)
    assert emitted == 1  # the strap served the read
    assert sent == received == 0


def test_a_stopped_device_refuses_reads_so_its_count_stays_final() -> None:
    async def scenario(strap: BumbleHeartRateStrap, conn: Connection, chars: Any, _r: list[bytes]) -> None:
        assert await Peer(conn).read_value(chars[BATTERY_LEVEL]) == b"\x64"
        await strap.stop_notifying()
        before = strap.frames_emitted
        with pytest.raises(BleakError):  # refused, and the gateway's client reports it as bleak does
            await _gatt(Peer(conn).read_value(chars[BATTERY_LEVEL]))
        assert strap.frames_emitted == before

    emitted, sent, _ = run(scenario)
    assert emitted == sent == 1


def test_arrived_frames_take_characteristics_from_what_was_emitted() -> None:
    emitted = [(HEART_RATE, b"\x00\x48"), (BATTERY_LEVEL, b"\x64"), (HEART_RATE, b"\x00\x49")]
    assert arrived_frames(emitted, [b"\x00\x49", b"\x64"]) == [(HEART_RATE, b"\x00\x49"), (BATTERY_LEVEL, b"\x64")]


def test_only_att_data_is_recorded() -> None:
    """Requests and discovery from either side are not frames; their values are never recorded."""

    async def scenario(strap: BumbleHeartRateStrap, conn: Connection, chars: Any, received: list[bytes]) -> None:
        await strap._send(HEART_RATE, b"\x00\x50")
        await asyncio.sleep(0.05)

    emitted, sent, received = run(scenario)
    assert emitted == sent == received == 1
