"""Simulated peripherals on an emulated Bluetooth link (Bumble): the same GATT bytes a real strap sends.

Each device has its own Bumble controller on a shared ``LocalLink``; the gateway's central joins the
same link through the bleak-over-Bumble backend, so the gateway's real BLE code path is exercised.
Misbehaviour is injected here, because Bumble itself never drops, stalls or corrupts anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from bumble import att, gatt
from bumble.controller import Controller
from bumble.device import AdvertisingType, Connection, Device
from bumble.hci import Address, HCI_LE_Set_Random_Address_Command
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink, Transport

from edge.frame import Frame
from firmware_sim.devices import SimDevice
from firmware_sim.heart_rate_strap import HeartRateStrap

log = logging.getLogger("tiyi.sim")

HEART_RATE_SERVICE = "180D"
BATTERY_SERVICE = "180F"


def emulated_device(
    link: LocalLink | None, address: str, name: str, hci: Transport | None = None
) -> tuple[Device, Controller | None]:
    """A Bumble host with its own controller on the shared link: one simulated radio, and its controller (the
    sender whose data ``firmware_sim.air.Air`` records). With ``hci`` the controller lives elsewhere (a hub,
    ``firmware_sim.hub``; None here) and this host talks to it over that transport."""
    if hci is not None:
        return Device(name=name, address=Address(address), host=Host(hci.source, hci.sink)), None
    assert link is not None
    c = Controller(name, link=link, public_address=address)
    return Device(name=name, address=Address(address), host=Host(c, AsyncPipeSink(c))), c


DEVICE_INFORMATION_SERVICE = "180A"
BATTERY_LEVEL = 0x2A19
REJECTED_LIMITED_RESOURCES = 0x0D  # HCI error: connection rejected due to limited resources
# Every emulated advertisement is a few loop callbacks in each controller on the link and a report through the
# gateway's scanner. At 20 ms (32 ms as Bumble's controller times it), a dozen unconnected devices took most of a
# starved CPU, and connecting (discovery, subscribing) became slower than a chaos device keeps its link (seen
# with a busy core: 1-5 connects in a whole run, against 28 and 50 at 100 ms). Real devices advertise at
# 100 ms to seconds.
ADVERTISING_INTERVAL_MS = 100
# A controller that never acknowledges queued data (a hub gone): stop waiting; the count then includes frames
# the gateway may not get, which a simulator reports as lost rather than hiding.
FLUSH_TIMEOUT_S = 10.0


def advertising_data(name: str, services16: list[int], company_id: int | None = None) -> bytes:
    """Flags (LE general discoverable, no BR/EDR), complete 16-bit service list, complete local name, and
    manufacturer data under ``company_id`` if given (how brands mark their devices)."""
    uuids = b"".join(u.to_bytes(2, "little") for u in services16)
    name_b = name.encode()[:20]
    vendor = b"" if company_id is None else bytes([4, 0xFF]) + company_id.to_bytes(2, "little") + b"\x01"
    return bytes([2, 0x01, 0x06, 1 + len(uuids), 0x03]) + uuids + bytes([1 + len(name_b), 0x09]) + name_b + vendor


@dataclass
class Misbehaviour:
    """What real devices do to a gateway, on demand. Every field defaults to a well-behaved device."""

    silent: bool = False  # stay connected, stop notifying
    malformed_every: int = 0  # every n-th notification is truncated garbage (0: never)
    duplicate_every: int = 0  # every n-th notification is sent twice (a retransmission the central sees twice)
    battery_drain_per_min: float = 0.0  # battery percent lost per minute; at 0 % the device switches off
    rename_every_s: float = 0.0  # the advertised name changes (firmware that appends a counter)
    rotate_address_every_s: float = 0.0  # a resolvable private address, renewed with the device's IRK
    refuse_connections: int = 0  # the first n connections are refused at once ("busy")
    disconnect_every_s: float = 0.0  # the device drops its link now and then (range, power saving)
    seed: int = 0


@dataclass
class StrapModel(SimDevice):
    """A ``HeartRateStrap`` seen as a generic model (one notification per second on 0x2A37)."""

    strap: HeartRateStrap | None = None
    char: int = 0x2A37
    services: tuple[int, ...] = (0x180D,)

    def frames_at(self, t: float) -> list[Frame]:
        assert self.strap is not None
        return [self.strap.frame_at(t)]


@dataclass
class BumbleSensor:
    """Any ``firmware_sim.devices`` model as a Bumble peripheral: its measurement characteristics (notify, or
    indicate where the profile says so), Device Information and Battery, and any ``Misbehaviour``."""

    link: LocalLink | None
    address: str
    model: SimDevice
    speed: float = 1.0
    misbehaviour: Misbehaviour = field(default_factory=Misbehaviour)
    sent: list[bytes] = field(default_factory=list, repr=False)
    sent_on: list[int] = field(default_factory=list, repr=False)  # the characteristic of each frame in ``sent``
    battery: float = 100.0
    irk: bytes | None = None  # most significant byte first, as `tiyi devices pair irk:<hex>` takes it
    hci: Transport | None = None  # attach to a hub's controller over this transport instead of ``link``
    company_id: int | None = None  # advertised as manufacturer data (Bluetooth SIG company identifier)

    def __post_init__(self) -> None:
        self.device, self.controller = emulated_device(self.link, self.address, self.model.dev_id, self.hci)
        self._task: asyncio.Task[None] | None = None
        # Stopping is a flag as well as a cancel: Bumble's advertising calls (under asyncio.wait_for, which on
        # 3.11 can swallow a cancel that races its inner future) may eat the cancel, and the loop would go on.
        self._stopping = False
        self._in_flight: set[asyncio.Future[Any]] = set()  # notifications being sent (counted once they are)
        self._rng = random.Random(self.misbehaviour.seed or self.model.seed)  # noqa: S311 - simulation
        self.name = self.model.dev_id
        self.renames = 0
        self.refused = 0
        self.served: list[bytes] = []  # battery values read by a central (reads, not notifications)
        self.switched_off = False
        self.addresses: list[str] = [self.address]
        props = gatt.Characteristic.Properties
        self.chars: dict[int, gatt.Characteristic[bytes]] = {}
        by_service: dict[int, list[gatt.Characteristic[bytes]]] = {}
        services = self.model.services or (0x1800,)
        for i, uuid in enumerate((self.model.char, *self.model.also)):
            c = gatt.Characteristic(
                f"{uuid:04X}",
                props.INDICATE if self.model.indicates(uuid) else props.NOTIFY,
                gatt.Characteristic.READABLE,
                b"",
            )
            self.chars[uuid] = c
            # A model lists the service of each of its characteristics in the same order (a watch: heart
            # rate, then pulse oximetry); extra characteristics share the first service.
            by_service.setdefault(services[i] if i < len(services) else services[0], []).append(c)
        battery_value: gatt.CharacteristicValue[bytes] = gatt.CharacteristicValue(read=self._read_battery)
        self.battery_char: gatt.Characteristic[bytes] = gatt.Characteristic(
            "2A19", props.READ | props.NOTIFY, gatt.Characteristic.READABLE, battery_value
        )
        info = [
            gatt.Characteristic(f"{u:04X}", props.READ, gatt.Characteristic.READABLE, text.encode())
            for u, text in ((0x2A29, "tiyi-sim"), (0x2A24, type(self.model).__name__), (0x2A26, "1.0.0"))
        ]
        self.device.add_services(
            [
                *(gatt.Service(f"{svc:04X}", chars) for svc, chars in by_service.items()),
                gatt.Service(DEVICE_INFORMATION_SERVICE, info),
                gatt.Service(BATTERY_SERVICE, [self.battery_char]),
            ]
        )
        self.device.on("connection", self._on_connection)

    @property
    def dev_id(self) -> str:
        return self.model.dev_id

    @property
    def char_uuid(self) -> int:
        return self.model.char

    @property
    def frames_emitted(self) -> int:
        """Notifications sent plus battery values served: every frame a central could have received."""
        return len(self.sent) + len(self.served)

    def emitted(self) -> list[tuple[int, bytes]]:
        """(characteristic, bytes) of everything a central could have received: notifications, indications
        and battery values read."""
        return [*zip(self.sent_on, self.sent, strict=True), *((BATTERY_LEVEL, v) for v in self.served)]

    def _read_battery(self, _conn: Connection) -> bytes:
        if self._stopping:
            # Stopped: its count is final, so nothing more may leave it. A value served now could arrive after
            # the simulator compared counts (seen: one battery read more than the gateway accounted for).
            raise att.ATT_Error(att.ErrorCode.READ_NOT_PERMITTED)
        value = bytes([round(self.battery)])
        self.served.append(value)
        return value

    def _on_connection(self, conn: Connection) -> None:
        if self.refused < self.misbehaviour.refuse_connections:
            self.refused += 1
            log.info("%s: busy, refusing connection %d", self.dev_id, self.refused)
            asyncio.get_event_loop().create_task(self._refuse(conn))
            return
        conn.on("disconnection", lambda *_: self._on_disconnection())

    async def _refuse(self, conn: Connection) -> None:
        with contextlib.suppress(Exception):
            await conn.disconnect(REJECTED_LIMITED_RESOURCES)
        await self._advertise()

    def _on_disconnection(self) -> None:
        if not self.switched_off:
            asyncio.get_event_loop().create_task(self._advertise())

    def _advertising_data(self) -> bytes:
        return advertising_data(self.name, sorted({*self.model.services, 0x180F}), self.company_id)

    async def _advertise(self) -> None:
        with contextlib.suppress(Exception):
            await self.device.stop_advertising()
        with contextlib.suppress(Exception):
            await self.device.start_advertising(
                advertising_data=self._advertising_data(),
                advertising_interval_min=ADVERTISING_INTERVAL_MS,
                advertising_interval_max=ADVERTISING_INTERVAL_MS,
            )

    async def start(self) -> None:
        await self.device.power_on()
        if self.misbehaviour.rotate_address_every_s:
            await self._rotate_address()  # a private device never shows its identity address
        else:
            await self._advertise()
        self._stopping = False
        self._task = asyncio.create_task(self._loop())

    def _subscribed(self, char: gatt.Characteristic[bytes]) -> bool:
        return any(
            cccd.get(char.handle, b"\x00\x00")[0] & 0x03 for cccd in self.device.gatt_server.subscribers.values()
        )

    async def _send(self, uuid: int, data: bytes) -> None:
        char = self.battery_char if uuid == BATTERY_LEVEL else self.chars[uuid]
        send = (
            self.device.indicate_subscribers
            if self.model.indicates(uuid) and uuid != BATTERY_LEVEL
            else self.device.notify_subscribers
        )
        # Shielded, and counted when the send completes even if the loop was cancelled meanwhile: a
        # notification that went out uncounted made a stopping simulator report one frame fewer than the
        # gateway received ('-1 simulated frame(s) were neither journaled nor reported').
        sending = asyncio.ensure_future(send(char, data))
        self._in_flight.add(sending)
        sending.add_done_callback(lambda f: self._sent(f, uuid, data))
        await asyncio.shield(sending)

    def _sent(self, sending: asyncio.Future[Any], uuid: int, data: bytes) -> None:
        self._in_flight.discard(sending)
        if not sending.cancelled() and sending.exception() is None:
            self.sent.append(data)
            self.sent_on.append(uuid)

    async def _loop(self) -> None:
        m, mis = self.model, self.misbehaviour
        t, n = 0.0, 0
        # Each device keeps its own phase, as real ones do: a room of devices never misbehaves in lockstep.
        next_rename = mis.rename_every_s * self._rng.uniform(0.3, 1.0) or None
        next_drop = mis.disconnect_every_s * self._rng.uniform(0.3, 1.0) or None
        next_rotation = mis.rotate_address_every_s * self._rng.uniform(0.3, 1.0) or None
        while not self.switched_off and not self._stopping:
            await asyncio.sleep(m.interval_s / self.speed)
            t += m.interval_s
            frames = m.frames_at(t)
            if next_rename is not None and t >= next_rename:
                next_rename += mis.rename_every_s
                await self._rename()
            if next_drop is not None and t >= next_drop:
                next_drop += mis.disconnect_every_s
                await self.drop_connections()
            if next_rotation is not None and t >= next_rotation:
                next_rotation += mis.rotate_address_every_s
                await self._rotate_address()
            if mis.battery_drain_per_min:
                await self._drain(m.interval_s)
                if self.switched_off:
                    return
            for f in frames:
                char = self.chars.get(f.char)
                if char is None or mis.silent or not self._subscribed(char):
                    continue  # like a real device: nobody listening, nothing sent (and nothing counted)
                n += 1
                data = f.data
                if mis.malformed_every and n % mis.malformed_every == 0:
                    data = data[:1]  # flags that announce fields which never follow
                await self._send(f.char, data)
                if mis.duplicate_every and n % mis.duplicate_every == 0:
                    await self._send(f.char, data)

    async def _drain(self, dt: float) -> None:
        before = round(self.battery)
        self.battery = max(0.0, self.battery - self.misbehaviour.battery_drain_per_min * dt / 60)
        if round(self.battery) != before and self._subscribed(self.battery_char):
            await self._send(BATTERY_LEVEL, bytes([round(self.battery)]))
        if self.battery <= 0:
            log.info("%s: battery empty, switching off", self.dev_id)
            self.switched_off = True
            with contextlib.suppress(Exception):
                await self.device.stop_advertising()
            await self.drop_connections()

    async def _rename(self) -> None:
        self.renames += 1
        self.name = f"{self.model.dev_id}-{self.renames}"
        if not self.device.connections:
            await self._advertise()

    async def _rotate_address(self) -> None:
        """A new resolvable private address from the device's IRK (Core Vol 6 Part B 1.3.2.2)."""
        if self.irk is None:
            raise ValueError("rotating a resolvable private address needs the device's IRK")
        new = Address.generate_private_address(self.irk[::-1])  # Bumble takes keys least significant byte first
        self.addresses.append(str(new).split("/")[0])
        if self.device.connections:
            return  # the address changes on the next advertising round; the link keeps its address
        with contextlib.suppress(Exception):
            await self.device.stop_advertising()
        if self.device.connections:
            # A central connected just before advertising stopped (the link's event reached the host while
            # it waited): a link keeps the address it was made to, which a real controller never changes.
            return
        self.device.random_address = new
        await self.device.send_sync_command(HCI_LE_Set_Random_Address_Command(random_address=new))
        await self._advertise()

    async def drop_connections(self) -> None:
        """The peripheral disconnects (walks out of range, power-cycles)."""
        for conn in list(self.device.connections.values()):
            with contextlib.suppress(Exception):
                await conn.disconnect()

    async def stop_notifying(self) -> None:
        """Stop emitting; on return ``emitted()`` is final and every notification it counts has left the host
        for the controller (none is still queued here): a stopping simulator compares it with what the
        gateway received, so the count must not change afterwards nor include frames still on their way out.
        Reads are refused from now on (the link stays up, so a central may still ask)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.gather(*self._in_flight, return_exceptions=True)  # counted as they complete
        await self._flushed()

    async def _flushed(self) -> None:
        """Until the controller acknowledged every data packet queued on each connection (Bumble's host flow
        control: a notification can wait in the host for the controller's 'completed packets'); a connection
        that drops meanwhile flushes its queue, which also ends the wait."""
        host = self.device.host
        for handle in list(self.device.connections):
            conn = host.connections.get(handle)
            if conn is not None:
                try:
                    await asyncio.wait_for(conn.acl_packet_queue.drain(handle), FLUSH_TIMEOUT_S)
                except ValueError:
                    pass  # the connection went since it was listed (its queue was flushed)
                except TimeoutError:
                    log.warning("%s: data still queued %.0f s after stopping", self.dev_id, FLUSH_TIMEOUT_S)

    async def stop(self) -> None:
        await self.stop_notifying()
        await self.drop_connections()


class BumbleHeartRateStrap(BumbleSensor):
    """A chest strap on the emulated link (kept as its own class for readability at call sites)."""

    def __init__(
        self,
        link: LocalLink | None,
        address: str,
        strap: HeartRateStrap,
        interval_s: float = 1.0,
        speed: float = 1.0,
        misbehaviour: Misbehaviour | None = None,
        irk: bytes | None = None,
        hci: Transport | None = None,
        company_id: int | None = None,
    ) -> None:
        model = StrapModel(strap.dev_id, seed=strap.seed, strap=strap, interval_s=interval_s)
        super().__init__(
            link,
            address,
            model,
            speed,
            misbehaviour or Misbehaviour(),
            battery=float(strap.battery),
            irk=irk,
            hci=hci,
            company_id=company_id,
        )
        self.strap = strap


@dataclass
class BumbleBroadcaster:
    """An advertisement-only device (a bathroom-style scale): measurements as service data, never connectable."""

    link: LocalLink
    address: str
    model: SimDevice
    speed: float = 1.0
    service: int = 0x181D
    sent: list[bytes] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.device, _ = emulated_device(self.link, self.address, self.model.dev_id)
        self._task: asyncio.Task[None] | None = None
        # Stopping is a flag as well as a cancel: Bumble's advertising calls (under asyncio.wait_for, which on
        # 3.11 can swallow a cancel that races its inner future) may eat the cancel, and the loop would go on.
        self._stopping = False

    @property
    def dev_id(self) -> str:
        return self.model.dev_id

    @property
    def char_uuid(self) -> int:
        return self.model.char

    @property
    def frames_emitted(self) -> int:
        return len(self.sent)

    async def start(self) -> None:
        await self.device.power_on()
        self._stopping = False
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        t = 0.0
        while not self._stopping:
            t += self.model.interval_s
            (frame,) = self.model.frames_at(t)
            name = self.model.dev_id.encode()[:10]
            ad = (
                bytes([2, 0x01, 0x04, 3 + len(frame.data), 0x16])
                + self.service.to_bytes(2, "little")
                + frame.data
                + bytes([1 + len(name), 0x09])
                + name
            )
            with contextlib.suppress(Exception):
                await self.device.stop_advertising()
            await self.device.start_advertising(
                advertising_type=AdvertisingType.UNDIRECTED,
                advertising_data=ad,
                advertising_interval_min=20,
                advertising_interval_max=20,
            )
            self.sent.append(frame.data)
            await asyncio.sleep(self.model.interval_s / self.speed)

    async def stop_notifying(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(Exception):
            await self.device.stop_advertising()

    async def stop(self) -> None:
        await self.stop_notifying()
