"""A bleak backend over Bumble, so the unmodified gateway BLE code drives emulated peripherals.

bleak lets callers inject a backend class (``BleakScanner(backend=...)``, ``BleakClient(backend=...)``);
these two classes implement bleak's abstract scanner and client on a Bumble host whose controller sits
on a Bumble link shared with simulated devices (``firmware_sim.bumble_devices``). Nothing above bleak
knows the difference: the gateway's ``BleakSource`` is the same code that runs against BlueZ on a Pi.

Bumble has no radio model (fixed RSSI, no connection limit, no supervision timeout); the gateway's own
watchdogs and slot budget are what the tests exercise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError
from bumble import hci, ll
from bumble.controller import Controller
from bumble.core import BaseBumbleError
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.hci import Address, Role
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from gateway.ble.redact import scrub

log = logging.getLogger("tiyi.ble.bumble")
WITHDRAW_TIMEOUT_S = 5.0  # a withdrawn connect ends within milliseconds; past this, stop waiting for it

BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"
T = TypeVar("T")
_PROPS = {0x02: "read", 0x04: "write-without-response", 0x08: "write", 0x10: "notify", 0x20: "indicate"}


def uuid128(text: str) -> str:
    """bleak's normalised form: 16-bit SIG UUIDs expanded on the Bluetooth base UUID, lower case."""
    t = text.lower().removeprefix("0x")
    return f"0000{t}{BASE_UUID_TAIL}" if len(t) == 4 else t


def parse_advertising_data(data: bytes) -> tuple[str | None, list[str], dict[str, bytes], dict[int, bytes], int | None]:
    """AD structures → (local name, service UUIDs, service data, manufacturer data, tx power).

    Radio input: malformed structures end parsing instead of raising.
    """
    name: str | None = None
    uuids: list[str] = []
    service_data: dict[str, bytes] = {}
    manufacturer: dict[int, bytes] = {}
    tx_power: int | None = None
    i = 0
    while i < len(data):
        length = data[i]
        if length == 0 or i + 1 + length > len(data):
            break
        ad_type, body = data[i + 1], data[i + 2 : i + 1 + length]
        i += 1 + length
        if ad_type in (0x08, 0x09):
            name = body.decode("utf-8", "replace")
        elif ad_type in (0x02, 0x03):
            uuids += [uuid128(body[j : j + 2][::-1].hex()) for j in range(0, len(body) - 1, 2)]
        elif ad_type == 0x16 and len(body) >= 2:
            service_data[uuid128(body[:2][::-1].hex())] = bytes(body[2:])
        elif ad_type == 0xFF and len(body) >= 2:
            manufacturer[int.from_bytes(body[:2], "little")] = bytes(body[2:])
        elif ad_type == 0x0A and len(body) == 1:
            tx_power = int.from_bytes(body, "little", signed=True)
    return name, uuids, service_data, manufacturer, tx_power


class _Controller(Controller):
    """Bumble's emulated controller, with two things a real one does that the tests need.

    LE Create Connection Cancel ends the pending connect as the Core spec requires (Vol 4 Part E 7.8.13: an
    LE Connection Complete event with Unknown Connection Identifier); Bumble's (0.0.236) acknowledges the
    command but keeps the connect pending, so the host's connect never ends and the controller refuses every
    later one. And a wedged controller hears nothing: no advertisement reaches the host, and no connect can
    complete (an initiator connects in answer to an advertisement it heard)."""

    wedged = False

    def on_hci_le_create_connection_cancel_command(
        self, _command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        failed = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address.address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        # After this command's Command Complete, which the caller queues once this returns.
        asyncio.get_running_loop().call_soon(self.send_hci_packet, failed)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def on_ll_advertising_pdu(self, packet: ll.AdvertisingPdu) -> None:
        if not self.wedged:
            super().on_ll_advertising_pdu(packet)


class BumbleCentral:
    """The gateway's emulated adapter: a Bumble host and controller on a link shared with peripherals."""

    def __init__(self, link: LocalLink, address: str = "C0:FF:EE:00:00:01", name: str = "tiyi-gateway") -> None:
        self.link = link
        self.controller = _Controller(name, link=link, public_address=address)
        self.device = Device(
            name=name, address=Address(address), host=Host(self.controller, AsyncPipeSink(self.controller))
        )
        self._started = False
        self._scan_users = 0
        self._dialled: list[Address] = []  # the peers a client is connecting to right now
        self._made: list[Connection] = []  # links made while dialling (closed if that connect fails)
        self._closing: set[asyncio.Task[None]] = set()
        self.device.on("connection", self._on_connection)
        self.name = name
        self.resets = 0

    @property
    def wedged(self) -> bool:
        """Fault injection for tests: the controller hangs silently until it is power-cycled."""
        return self.controller.wedged

    async def start(self) -> None:
        if not self._started:
            await self.device.power_on()
            self._started = True

    async def scan(self, on: bool) -> None:
        """Reference-counted scanning, because BlueZ-like callers start and stop independently."""
        await self.start()
        if on:
            self._scan_users += 1
            if self._scan_users == 1:
                await self.device.start_scanning(filter_duplicates=False)
        else:
            self._scan_users = max(0, self._scan_users - 1)
            if self._scan_users == 0 and self.device.is_scanning:
                await self.device.stop_scanning()

    async def connect(self, peer: Address, timeout: float) -> Connection:
        """Connect, and when that is given up (timed out, or cancelled because the device moved to a new
        private address) withdraw it as a host does, with LE Create Connection Cancel, before returning.

        The attempt runs as its own task behind a shield and is never cancelled once it has begun: Bumble
        waits for its HCI commands with ``asyncio.wait_for``, which on Python 3.11 loses a cancel that races
        the command's answer (and a command cancelled in flight leaves its answer unclaimed). The
        withdrawal ends it instead, as the controller fails the pending connect."""
        began = asyncio.Event()

        async def attempt() -> Connection:
            began.set()
            return await self.device.connect(peer, timeout=None)

        with self.dialling(peer):  # a link the controller completes as the connect is withdrawn is closed
            dial = asyncio.ensure_future(attempt())
            try:
                async with asyncio.timeout(timeout):
                    return await asyncio.shield(dial)
            except BaseException:
                await self._withdraw(dial, began.is_set())
                raise

    async def _withdraw(self, dial: asyncio.Future[Connection], began: bool) -> None:
        if not began:
            dial.cancel()  # it never ran: nothing was sent
            return
        if not dial.done():
            # Bumble sends one command at a time, in order: this reaches the controller after the connect's.
            with contextlib.suppress(Exception):  # none pending: the connect has just completed, or failed
                await self.device.send_sync_command(hci.HCI_LE_Create_Connection_Cancel_Command())
            await asyncio.wait({dial}, timeout=WITHDRAW_TIMEOUT_S)
        if not dial.done():
            log.warning("a withdrawn connect did not end within %.0f s", WITHDRAW_TIMEOUT_S)
        elif not dial.cancelled():
            dial.exception()  # retrieved: the controller failing it is what the withdrawal asked for

    @contextlib.contextmanager
    def dialling(self, peer: Address) -> Iterator[None]:
        """While a client connects to ``peer``: a link to it is that client's, unless the connect fails (then
        the link, made as the connect was being given up, is closed)."""
        self._dialled.append(peer)
        made = len(self._made)
        try:
            yield
        except BaseException:
            for conn in self._made[made:]:
                if conn.peer_address == peer:
                    self._close(conn)
            raise
        finally:
            self._dialled.remove(peer)
            if not self._dialled:
                self._made.clear()

    def _on_connection(self, conn: Connection) -> None:
        """A link made for a connect that was given up on (the controller completed it as the connect was being
        withdrawn) belongs to no client: close it. Left open, the device stops advertising and can never be
        reached again, and two links to one device (under two private addresses) mix up their data on the
        emulated link, which finds connections by address (seen: notifications delivered to the wrong link,
        'received notification with no subscriber')."""
        if conn.role != Role.CENTRAL:
            return
        if conn.peer_address in self._dialled:
            self._made.append(conn)
        else:
            self._close(conn)

    def _close(self, conn: Connection) -> None:
        log.info("closing a link nobody asked for (a connect given up on completed)")
        closing = asyncio.get_running_loop().create_task(_disconnect_quietly(conn))
        self._closing.add(closing)  # held until done: the loop keeps only a weak reference to a task
        closing.add_done_callback(self._closing.discard)

    async def wedge(self) -> None:
        """Hang the controller the way discovery hangs: no error, just nothing heard (no advertisements, and
        so no connect completes), even after the scanner is restarted."""
        self.controller.wedged = True

    async def reset(self) -> None:
        """``AdapterControl``: power-cycle the emulated adapter; its links drop, a wedge clears."""
        for conn in list(self.device.connections.values()):
            with contextlib.suppress(Exception):
                await conn.disconnect()
        self.controller.wedged = False
        self.resets += 1


class BumbleScanner(BaseBleakScanner):
    """bleak scanner backend: Bumble advertisement reports become bleak detection callbacks."""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        *,
        central: BumbleCentral,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self.central = central
        self._running = False

    def _on_advertisement(self, adv: Advertisement) -> None:
        name, uuids, sdata, mdata, tx = parse_advertising_data(adv.data_bytes)
        if not self.is_allowed_uuid(uuids):
            return
        data = AdvertisementData(
            local_name=name,
            manufacturer_data=mdata,
            service_data=sdata,
            service_uuids=uuids,
            tx_power=tx,
            rssi=adv.rssi,
            platform_data=(adv,),
        )
        address = str(adv.address).split("/")[0]
        device = self.create_or_update_device(address, address, name, adv.address, data)
        self.call_detection_callbacks(device, data)

    async def start(self) -> None:
        if not self._running:
            self.seen_devices = {}
            self.central.device.on("advertisement", self._on_advertisement)
            await self.central.scan(True)
            self._running = True

    async def stop(self) -> None:
        if self._running:
            self.central.device.remove_listener("advertisement", self._on_advertisement)
            await self.central.scan(False)
            self._running = False


class BumbleClient(BaseBleakClient):
    """bleak client backend: connect, discover, read, write and notify through a Bumble GATT client."""

    def __init__(self, address_or_ble_device: BLEDevice | str, *, central: BumbleCentral, **kwargs: Any) -> None:
        super().__init__(
            address_or_ble_device,
            disconnected_callback=kwargs.pop("disconnected_callback", None),
            timeout=kwargs.pop("timeout", 10.0),
        )
        self.central = central
        details = address_or_ble_device.details if isinstance(address_or_ble_device, BLEDevice) else None
        self._peer_address: Address = details if isinstance(details, Address) else Address(self.address)
        self._connection: Connection | None = None
        self._peer: Peer | None = None

    @property
    def mtu_size(self) -> int:
        return 23 if self._connection is None else int(self._connection.att_mtu)

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        await self.central.start()
        try:
            conn = await self.central.connect(self._peer_address, self._timeout)
            self._connection = conn
            # Discovery under a deadline too: a peripheral that drops the link right after accepting it (a
            # "busy" device) must not leave discovery waiting for answers forever.
            await _bounded(self._discover(conn), self._timeout)
        except (TimeoutError, Exception) as exc:  # bumble raises several types; bleak callers expect BleakError
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    await self._connection.disconnect()
            self._connection = None
            self._peer = None
            raise BleakError(f"could not connect: {exc!r}") from exc  # no address: it ends up in logs

    async def _discover(self, conn: Connection) -> None:
        conn.on("disconnection", self._on_disconnection)
        peer = Peer(conn)
        self._peer = peer
        await peer.discover_services()
        collection = BleakGATTServiceCollection()
        for s in peer.services:
            await s.discover_characteristics()
            service = BleakGATTService(s, s.handle, uuid128(str(s.uuid.to_hex_str())))
            collection.add_service(service)
            for c in s.characteristics:
                props: list[Any] = [name for bit, name in _PROPS.items() if int(c.properties) & bit]
                ch = BleakGATTCharacteristic(
                    c, c.handle, uuid128(c.uuid.to_hex_str()), props, lambda: self.mtu_size - 3, service
                )
                collection.add_characteristic(ch)
        self.services = collection

    def _on_disconnection(self, reason: int) -> None:
        self._connection = None
        self._peer = None
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        conn = self._connection
        if conn is not None:
            try:
                await conn.disconnect()
            except Exception as exc:  # already gone
                log.debug("disconnect: %s", scrub(repr(exc)))
            self._connection = None

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("pairing is not emulated")

    async def unpair(self) -> None:
        raise NotImplementedError("pairing is not emulated")

    def _require(self) -> Peer:
        if self._peer is None:
            raise BleakError("not connected")
        return self._peer

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return bytearray(await _gatt(self._require().read_value(characteristic.obj)))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return bytearray(await _gatt(self._require().read_value(descriptor.handle)))

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool) -> None:
        await _gatt(self._require().write_value(characteristic.obj, bytes(data), with_response=response))

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        await _gatt(self._require().write_value(descriptor.handle, bytes(data), with_response=True))

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        await _gatt(self._require().subscribe(characteristic.obj, lambda value: callback(bytearray(value))))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        await _gatt(self._require().unsubscribe(characteristic.obj))


CANCEL_AGAIN_S = 0.05  # how soon a task given up on is cancelled again if it is still running


async def _bounded(work: Awaitable[T], timeout: float | None) -> T:
    """``work`` in a task of its own, within ``timeout`` if given (TimeoutError past it). Given up on (timed
    out, or the caller was cancelled), the task is cancelled until it has ended, and only then does this
    return: on Python 3.11 an ``asyncio.wait_for`` inside Bumble returns its inner result when a cancel lands
    just as that result arrives, swallowing the cancel; an abandoned connect then waited for ever, and the
    host refused every later one as 'connection already pending' (seen on a busy CPU: whole runs without a
    single connection). Work that Bumble cancelled from inside (a GATT request whose link dropped) is a
    failure, not a cancel of the caller."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:
        await _end(task)
        raise
    if not done:
        await _end(task)
        raise TimeoutError
    if task.cancelled():
        raise ConnectionError("the link went down meanwhile")
    return task.result()


async def _end(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` until it has ended, and wait for that (a second cancel of the caller stops the wait, not
    the cancelling)."""
    task.add_done_callback(_retrieve)
    _cancel_for_good(task)
    await asyncio.wait({task})


def _cancel_for_good(task: asyncio.Future[Any]) -> None:
    if not task.done():
        task.cancel()
        asyncio.get_running_loop().call_later(CANCEL_AGAIN_S, _cancel_for_good, task)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Take an abandoned task's outcome, so asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()


async def _disconnect_quietly(conn: Connection) -> None:
    with contextlib.suppress(Exception):
        await conn.disconnect()


async def _gatt(operation: Awaitable[T]) -> T:
    """A GATT operation whose refusal (an ATT error response) or failure (its link dropped) surfaces as
    ``BleakError``, as bleak reports it over BlueZ, so callers handle it like any failed operation rather than
    as a crash or as a cancel of their own task."""
    try:
        return await _bounded(operation, None)
    except (BaseBumbleError, ConnectionError) as exc:
        raise BleakError(f"GATT operation failed: {exc!r}") from exc
