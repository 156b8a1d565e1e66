"""Simulated peripherals on an emulated Bluetooth link (Bumble): the same GATT bytes a real strap sends.

Each device has its own Bumble controller on a shared ``LocalLink``; the gateway's central joins the
same link through the bleak-over-Bumble backend, so the gateway's real BLE code path is exercised.
Misbehaviour is injected here, because Bumble itself never drops, stalls or corrupts anything.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from bumble import gatt
from bumble.controller import Controller
from bumble.device import AdvertisingType, Connection, Device
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from firmware_sim.devices import SimDevice
from firmware_sim.heart_rate_strap import HeartRateStrap

HEART_RATE_SERVICE = "180D"
BATTERY_SERVICE = "180F"


def emulated_device(link: LocalLink, address: str, name: str) -> Device:
    """A Bumble host with its own controller on the shared link: one simulated radio."""
    c = Controller(name, link=link, public_address=address)
    return Device(name=name, address=Address(address), host=Host(c, AsyncPipeSink(c)))


def advertising_data(name: str, services16: list[int]) -> bytes:
    """Flags (LE general discoverable, no BR/EDR), complete 16-bit service list, complete local name."""
    uuids = b"".join(u.to_bytes(2, "little") for u in services16)
    name_b = name.encode()[:20]
    return bytes([2, 0x01, 0x06, 1 + len(uuids), 0x03]) + uuids + bytes([1 + len(name_b), 0x09]) + name_b


@dataclass
class Misbehaviour:
    silent: bool = False  # stay connected, stop notifying
    malformed_every: int = 0  # every n-th notification is truncated garbage (0: never)


@dataclass
class BumbleHeartRateStrap:
    link: LocalLink
    address: str
    strap: HeartRateStrap
    interval_s: float = 1.0
    speed: float = 1.0
    misbehaviour: Misbehaviour = field(default_factory=Misbehaviour)
    sent: list[bytes] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.device = emulated_device(self.link, self.address, self.strap.dev_id)
        self.hrm = gatt.Characteristic("2A37", gatt.Characteristic.Properties.NOTIFY, gatt.Characteristic.READABLE,
                                       b"")
        battery_value: gatt.CharacteristicValue[bytes] = gatt.CharacteristicValue(read=self._read_battery)
        self.battery: gatt.Characteristic[bytes] = gatt.Characteristic(
            "2A19", gatt.Characteristic.Properties.READ, gatt.Characteristic.READABLE, battery_value)
        self.battery_reads = 0
        self.device.add_services([gatt.Service(HEART_RATE_SERVICE, [self.hrm]),
                                  gatt.Service(BATTERY_SERVICE, [self.battery])])
        self._task: asyncio.Task[None] | None = None
        self._connections: list[Connection] = []
        self.device.on("connection", self._on_connection)

    @property
    def dev_id(self) -> str:
        return self.strap.dev_id

    @property
    def char_uuid(self) -> int:
        return 0x2A37

    def _read_battery(self, _conn: Connection) -> bytes:
        self.battery_reads += 1
        return bytes([self.strap.battery])

    @property
    def frames_emitted(self) -> int:
        """Notifications sent plus battery values served: every frame a central could have received."""
        return len(self.sent) + self.battery_reads

    def _on_connection(self, conn: Connection) -> None:
        self._connections.append(conn)
        conn.on("disconnection", lambda _reason: self._forget(conn))
        # Stay connectable for a reconnect after this connection drops.

    def _forget(self, conn: Connection) -> None:
        if conn in self._connections:
            self._connections.remove(conn)
        asyncio.get_event_loop().create_task(self._advertise())

    async def _advertise(self) -> None:
        with contextlib.suppress(Exception):
            await self.device.start_advertising(advertising_data=advertising_data(self.strap.dev_id, [0x180D, 0x180F]),
                                                advertising_interval_min=20, advertising_interval_max=20)

    async def start(self) -> None:
        await self.device.power_on()
        await self._advertise()
        self._task = asyncio.create_task(self._notify_loop())

    async def _notify_loop(self) -> None:
        t = 0.0
        n = 0
        while True:
            await asyncio.sleep(self.interval_s / self.speed)
            t += self.interval_s
            frame = self.strap.frame_at(t)
            n += 1
            data = frame.data
            if self.misbehaviour.malformed_every and n % self.misbehaviour.malformed_every == 0:
                data = b"\x11"  # flags announce a u16 heart rate, and nothing follows
            if self.misbehaviour.silent or not self._subscribed():
                continue  # like a real strap: nobody listening, nothing sent (and nothing counted)
            # Shielded, and counted only once sent, so stopping never leaves a half-counted notification.
            await asyncio.shield(self.device.notify_subscribers(self.hrm, data))
            self.sent.append(data)

    def _subscribed(self) -> bool:
        subs = self.device.gatt_server.subscribers.values()
        return any(cccd.get(self.hrm.handle, b"\x00\x00")[0] & 0x01 for cccd in subs)

    async def drop_connections(self) -> None:
        """The peripheral disconnects (walks out of range, power-cycles)."""
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                await conn.disconnect()

    async def stop_notifying(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def stop(self) -> None:
        await self.stop_notifying()
        await self.drop_connections()


@dataclass
class _ModelPeripheral:
    """What every model-driven peripheral shares: identity, what it sent, and stopping its loop."""

    link: LocalLink
    address: str
    model: SimDevice
    speed: float = 1.0
    sent: list[bytes] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.device = emulated_device(self.link, self.address, self.model.dev_id)
        self._task: asyncio.Task[None] | None = None

    @property
    def dev_id(self) -> str:
        return self.model.dev_id

    @property
    def char_uuid(self) -> int:
        return self.model.char

    @property
    def frames_emitted(self) -> int:
        return len(self.sent)

    async def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


@dataclass
class BumbleSensor(_ModelPeripheral):
    """Any ``firmware_sim.devices`` model as a Bumble peripheral: notifications or indications, as the
    profile prescribes (blood-pressure cuffs, thermometers and scales indicate)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        kind = gatt.Characteristic.Properties
        props = kind.INDICATE if self.model.indicate else kind.NOTIFY
        self.char = gatt.Characteristic(f"{self.model.char:04X}", props, gatt.Characteristic.READABLE, b"")
        service = self.model.services[0] if self.model.services else 0x1800
        self.device.add_services([gatt.Service(f"{service:04X}", [self.char])])

    async def start(self) -> None:
        await self.device.power_on()
        self.device.on("disconnection", lambda *_: asyncio.get_event_loop().create_task(self._advertise()))
        await self._advertise()
        self._task = asyncio.create_task(self._loop())

    async def _advertise(self) -> None:
        with contextlib.suppress(Exception):
            await self.device.start_advertising(
                advertising_data=advertising_data(self.model.dev_id, list(self.model.services)),
                advertising_interval_min=20, advertising_interval_max=20)

    def _subscribed(self) -> bool:
        return any(cccd.get(self.char.handle, b"\x00\x00")[0] & 0x03
                   for cccd in self.device.gatt_server.subscribers.values())

    async def _loop(self) -> None:
        t = 0.0
        while True:
            await asyncio.sleep(self.model.interval_s / self.speed)
            t += self.model.interval_s
            frames = self.model.frames_at(t)
            if not self._subscribed():
                continue
            for f in frames:
                send = self.device.indicate_subscribers if self.model.indicate else self.device.notify_subscribers
                await asyncio.shield(send(self.char, f.data))
                self.sent.append(f.data)

    async def stop(self) -> None:
        await self._cancel()

    async def stop_notifying(self) -> None:
        await self._cancel()


@dataclass
class BumbleBroadcaster(_ModelPeripheral):
    """An advertisement-only device (a bathroom-style scale): measurements as service data, never connectable."""

    service: int = 0x181D

    async def start(self) -> None:
        await self.device.power_on()
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        t = 0.0
        while True:
            t += self.model.interval_s
            (frame,) = self.model.frames_at(t)
            name = self.model.dev_id.encode()[:10]
            ad = (bytes([2, 0x01, 0x04, 3 + len(frame.data), 0x16]) + self.service.to_bytes(2, "little") + frame.data
                  + bytes([1 + len(name), 0x09]) + name)
            with contextlib.suppress(Exception):
                await self.device.stop_advertising()
            await self.device.start_advertising(advertising_type=AdvertisingType.UNDIRECTED, advertising_data=ad,
                                                advertising_interval_min=20, advertising_interval_max=20)
            self.sent.append(frame.data)
            await asyncio.sleep(self.model.interval_s / self.speed)

    async def stop_notifying(self) -> None:
        await self._cancel()
        with contextlib.suppress(Exception):
            await self.device.stop_advertising()

    async def stop(self) -> None:
        await self.stop_notifying()
