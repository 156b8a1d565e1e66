"""``BleakSource``: BLE collection through bleak, the gateway's ``BleSource`` for real radios.

One long-lived scanner; a connection manager that connects serially (BlueZ rejects concurrent
connects with ``InProgress``), within a slot budget (about five links per onboard Pi radio), always
with the scanner's ``BLEDevice`` (an address string triggers a hidden scan), never reusing a client;
a silence watchdog per device (Bumble and BlueZ may both keep a dead link "connected"); reconnects with
exponential backoff and jitter. Notification callbacks only enqueue; one pump submits frames in order.

Device ids are pseudonyms: HMAC-SM3 of the device's identity (its Bluetooth address, or for a device
behind rotating private addresses the IRK it was paired with) under a per-gateway secret, so an address
never leaves the gateway (topics and records carry only the pseudonym) and an RPA device keeps one id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from bleak_retry_connector import establish_connection

from edge.frame import Frame
from edge.gatt import known_characteristics
from gateway.ble.adapter import AdapterControl
from gateway.ble.failures import error_code
from gateway.ble.privacy import IrkResolver
from gateway.ble.redact import describe, scrub
from gateway.registry import DeviceRegistry, SeenDevices, pseudonym

DISCONNECT_TIMEOUT_S = 5.0  # a clean disconnect takes milliseconds; past this the link is gone anyway
log = logging.getLogger("tiyi.ble")

BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"
# Advertisement-only devices (many scales and thermometers) broadcast a measurement as service data.
# Our convention: service data under a measurement's service carries that characteristic's value, and
# service data under a characteristic UUID carries its own value. Vendor formats need per-model quirks.
ADV_SERVICE_TO_CHAR = {0x181D: 0x2A9D, 0x181B: 0x2A9C, 0x1809: 0x2A1C, 0x1810: 0x2A35, 0x1822: 0x2A5E}
HEART_RATE_SERVICE = f"0000180d{BASE_UUID_TAIL}"
BATTERY_LEVEL = 0x2A19


def uuid16(uuid: str) -> int | None:
    u = uuid.lower()
    if u.endswith(BASE_UUID_TAIL) and u.startswith("0000"):
        return int(u[4:8], 16)
    return None


@dataclass(frozen=True, slots=True)
class BleSettings:
    """``allow`` holds upper-case addresses, ``name:<local name>`` or ``irk:<hex>`` entries; nothing else is
    ingested."""

    allow: frozenset[str] = frozenset()
    max_connections: int = 5
    silence_s: float = 10.0  # before a device's rhythm is known
    silence_factor: float = 5.0  # then: this many of its usual notification intervals ...
    silence_floor_s: float = 2.0  # ... but never less than this
    connect_timeout_s: float = 10.0
    connect_attempts: int = 3  # per connect, inside bleak-retry-connector (the adapter is busy meanwhile)
    backoff_min_s: float = 1.0
    backoff_max_s: float = 60.0
    scan_stall_s: float = 30.0
    scan_restarts_before_adapter_reset: int = 2  # then the adapter is power-cycled (if the source may)


@dataclass
class DeviceState:
    """What the gateway knows about one device; becomes metrics and the device state topic."""

    dev: str
    address: str  # the address it advertises from now (changes for RPA devices)
    identity: str = ""  # what it is known by: its address, or irk:<hex> behind rotating addresses
    entry: str = ""  # the allow entry that admitted it (address, name:, irk: or vendor:)
    name: str | None = None
    rssi: int | None = None
    connected: bool = False
    notifications: int = 0
    connects: int = 0
    failures: int = 0
    battery: int | None = None
    last_error: str | None = None  # a code of gateway.ble.failures.ERROR_CODES, never free text
    next_attempt: float = 0.0
    backoff: float = 0.0
    last_seen: float = 0.0
    advertisement_only: bool = False
    last_adv_payload: dict[int, bytes] = field(default_factory=dict)
    ble_device: BLEDevice | None = field(default=None, repr=False)


class DeviceClaims:
    """Which adapter owns which device, shared by the sources of one gateway's adapters, so a device that
    every adapter can hear is collected by exactly one of them (an adapter claims it only when it has a
    free slot, which spreads devices over adapters)."""

    def __init__(self) -> None:
        self._owner: dict[str, str] = {}

    def claim(self, identity: str, adapter: str) -> bool:
        owner = self._owner.setdefault(identity, adapter)
        return owner == adapter

    def release(self, identity: str, adapter: str) -> None:
        if self._owner.get(identity) == adapter:
            del self._owner[identity]

    def owner(self, identity: str) -> str | None:
        return self._owner.get(identity)


class Admission:
    """Who may be collected, and how: the allow list (settings plus paired devices, re-read from the registry),
    the IRKs that resolve rotating addresses, and per device its model's decode quirks and GATT profile."""

    def __init__(self, allow: frozenset[str]) -> None:
        self._base = allow
        self._allow = allow
        self._resolver = IrkResolver(_irks(allow))
        self._quirks: dict[str, Mapping[str, str]] = {}  # dev id → its model's quirks
        self._profiles: dict[str, frozenset[int]] = {}  # allow entry → the only characteristics to subscribe

    def identity(self, address: str, name: str | None, vendors: Iterable[int] = ()) -> tuple[str, str] | None:
        """(what an advertiser is known by, the allow entry that admits it): its address, its IRK (an RPA
        that resolves), its name or its brand (manufacturer data company id); None if not allowed."""
        a = self._allow
        if address in a:
            return address, address
        irk = self._resolver.resolve(address)
        if irk is not None:
            return "irk:" + irk.hex(), "irk:" + irk.hex()
        if name is not None and f"name:{name}" in a:
            return address, f"name:{name}"
        for cid in vendors:
            if f"vendor:{cid:04x}" in a:
                return address, f"vendor:{cid:04x}"
        return None

    def quirks(self, dev: str) -> Mapping[str, str] | None:
        return self._quirks.get(dev)

    def wanted(self, st: DeviceState) -> AbstractSet[int]:
        """The characteristics to subscribe: the device's profile, else every one the gateway can decode."""
        return self._profiles.get(st.entry) or self._profiles.get(st.identity) or set(known_characteristics())

    def refresh(
        self, registry: DeviceRegistry, devices: Iterable[DeviceState], unknown_seen: Mapping[str, str | None]
    ) -> None:
        """Pairings made with `tiyi devices pair` take effect here; what was seen goes back for listing."""
        try:
            self._allow = self._base | registry.allowed()
            self._resolver.update(_irks(self._allow))
            quirks = registry.quirks()
            by_dev: dict[str, Mapping[str, str]] = {}
            for st in devices:
                q = quirks.get(st.entry) or quirks.get(st.identity)
                if q:
                    by_dev[st.dev] = q
            self._quirks = by_dev
            self._profiles = registry.profiles()
            registry.write_seen(unknown_seen)
        except (OSError, ValueError) as exc:
            log.warning("device registry unreadable (%s); keeping the previous allowlist", describe(exc))


class DiscoveryWatch:
    """Discovery can stall silently (BlueZ): after ``scan_stall_s`` without an advertisement the scanner is
    restarted; if that keeps not helping, the adapter (when the source may) is power-cycled."""

    def __init__(self, settings: BleSettings, adapter: AdapterControl | None) -> None:
        self._settings = settings
        self._adapter = adapter
        self.last_adv = 0.0
        self.scanner_restarts = 0
        self.adapter_resets = 0
        self._stalled_restarts = 0  # scanner restarts since the last advertisement
        self._resets_in_a_row = 0  # adapter resets since the last advertisement

    def heard(self, now: float) -> None:
        self.last_adv = now
        self._stalled_restarts = self._resets_in_a_row = 0

    def stalled(self, now: float) -> bool:
        return now - self.last_adv > self._settings.scan_stall_s

    async def recover(
        self, scanner: BleakScanner, new_scanner: Callable[[], BleakScanner], quiet_s: float, needed: bool
    ) -> BleakScanner:
        """Restart the scanner, or power-cycle the adapter (its links drop too; the sessions reconnect by
        themselves). ``needed``: a device we wait for is not connected (when all are connected, silence on
        the air is normal), the only case that justifies dropping every link."""
        with contextlib.suppress(Exception):
            await scanner.stop()
        # Each reset in a row doubles the patience, so a site that is simply empty at night is not reset
        # every few minutes.
        patience = self._settings.scan_restarts_before_adapter_reset * 2 ** min(self._resets_in_a_row, 6)
        if self._adapter is not None and needed and self._stalled_restarts >= patience:
            log.error(
                "no advertisements for %.0f s after %d scanner restarts: power-cycling adapter %s",
                quiet_s,
                self._stalled_restarts,
                self._adapter.name,
            )
            try:
                await self._adapter.reset()
                self.adapter_resets += 1
                self._resets_in_a_row += 1
            except Exception as exc:  # reported, retried at the next stall; scanning goes on meanwhile
                log.error("adapter %s could not be reset: %s", self._adapter.name, describe(exc))
            self._stalled_restarts = 0
        else:
            log.warning("no advertisements for %.0f s: restarting the scanner", quiet_s)
            self._stalled_restarts += 1
        self.scanner_restarts += 1
        scanner = new_scanner()
        await scanner.start()
        return scanner


class ConnectionSlots:
    """The links of one adapter: serial connects (BlueZ rejects concurrent ones with ``InProgress``) within a
    slot budget, one session per device with a silence watchdog, and backoff with jitter between attempts."""

    def __init__(
        self,
        settings: BleSettings,
        admission: Admission,
        frames: asyncio.Queue[Frame],
        backend_kwargs: dict[str, Any],
        client_backend: type | None,
        claims: DeviceClaims | None,
        name: str,
    ) -> None:
        self._settings = settings
        self._admission = admission
        self._frames = frames
        self._kw = backend_kwargs
        self._client_backend = client_backend
        self._claims = claims
        self._name = name
        self._connect_lock = asyncio.Lock()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._dialing: dict[str, str] = {}  # identity → the address a connect is under way to

    def abort_stale_dial(self, identity: str, address: str) -> None:
        """The device now advertises from ``address``: a connect under way to another address can only time
        out, and meanwhile it holds the adapter. Abort it, once; the next try dials the new address.

        Once: a backend withdraws a cancelled connect before it ends (LE Create Connection Cancel and its
        answer), and a device that rotates again meanwhile must not cancel that withdrawal half-way; the
        connect would stay pending in the adapter, which then refuses every later one."""
        dialled = self._dialing.get(identity)
        task = self._tasks.get(identity)
        if dialled is not None and dialled != address and task is not None and not task.done():
            del self._dialing[identity]  # being aborted: later addresses leave it alone
            task.cancel()

    def start_due(self, devices: Iterable[DeviceState], now: float) -> None:
        """Start a session for each device whose next attempt is due, while slots are free."""
        busy = sum(1 for t in self._tasks.values() if not t.done())
        # Devices paired one by one (address, IRK) come before those admitted wholesale (by name
        # or brand): when slots are short, the ones the gym registered individually get them.
        for st in sorted(devices, key=lambda s: (s.entry.startswith(("name:", "vendor:")), s.next_attempt)):
            if busy >= self._settings.max_connections:
                break
            task = self._tasks.get(st.identity)
            if st.advertisement_only:
                continue
            if (task is None or task.done()) and st.ble_device is not None and now >= st.next_attempt:
                if self._claims is not None and not self._claims.claim(st.identity, self._name):
                    continue  # another adapter holds it
                self._tasks[st.identity] = asyncio.create_task(self._session(st), name=f"ble-{st.dev}")
                busy += 1

    async def close(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def silence_limit(self, gaps: list[float]) -> float:
        """A strap that notifies every second is suspicious after seconds; a cuff that indicates once a
        minute only after minutes: the limit follows each device's own rhythm once three gaps are seen."""
        s = self._settings
        if len(gaps) < 3:
            return s.silence_s
        typical = sorted(gaps)[len(gaps) // 2]
        return max(s.silence_floor_s, s.silence_factor * typical)

    async def _connect(self, st: DeviceState, on_disconnect: Callable[[BleakClient], None]) -> BleakClient:
        """A fresh client, connected with ``bleak-retry-connector``: it retries the transient failures BlueZ
        is known for (aborted or cancelled connects, stale services) with its own short backoff, and
        translates the rest into typed errors; our backoff per device takes over when it gives up."""
        assert st.ble_device is not None
        # A watchdog over the whole attempt: a backend that hangs (a link dropped mid-discovery, a wedged
        # controller) must never hold this adapter's connect slot, which every other device waits for.
        # Retrying the same address is pointless for a device behind private addresses: by then it may
        # advertise from a new one, which the next try (with the scanner's latest address) will use.
        attempts = 1 if st.identity.startswith("irk:") else self._settings.connect_attempts
        limit = attempts * (self._settings.connect_timeout_s + 5.0)
        # The watchdog also bounds an aborted attempt, so it is a deadline in this task, not wait_for: on
        # Python 3.11 wait_for runs the attempt as a task of its own and, once cancelled, waits for it
        # without bound; a library that loses the cancel (3.11's own wait_for does when the awaited
        # result arrives in the same loop pass, as Bumble's HCI commands' do) would hold the adapter for
        # good. Here the deadline cancels again, in the very frame the attempt waits in.
        try:
            async with asyncio.timeout(limit):
                return await establish_connection(
                    BleakClient,
                    st.ble_device,
                    st.dev,
                    disconnected_callback=on_disconnect,
                    max_attempts=attempts,
                    use_services_cache=False,
                    timeout=self._settings.connect_timeout_s,
                    backend=self._client_backend,
                    **self._kw,
                )
        except TimeoutError as exc:
            raise BleakError(f"connecting to {st.dev} did not finish within {limit:.0f} s") from exc

    async def _session(self, st: DeviceState) -> None:
        """One connection's life: connect, subscribe, watch for silence, and schedule the next attempt."""
        loop = asyncio.get_running_loop()
        client: BleakClient | None = None
        dialled = st.address  # a private-address device may move on while we dial its old address
        link = _Link(st, self._frames)
        try:
            async with self._connect_lock:  # one connect at a time per adapter
                self._dialing[st.identity] = dialled
                try:
                    client = await self._connect(st, lambda _c: link.disconnected.set())
                finally:
                    self._dialing.pop(st.identity, None)
            st.connected, st.connects = True, st.connects + 1
            log.info("connected to %s (%s)", st.dev, scrub(st.name))
            await link.subscribe(client, self._admission.wanted(st))
            st.backoff = 0.0
            await link.watch(self.silence_limit)
        except (BleakError, TimeoutError, OSError) as exc:
            # The state topic gets a code; the log gets the library's text, minus the device's address.
            st.failures += 1
            st.last_error = error_code(exc, connected=st.connected)
            log.warning("%s: %s (%s)", st.dev, st.last_error, describe(exc))
        finally:
            st.connected = False
            if client is not None:
                # Bounded like the connect: a backend waiting for a disconnection event that never comes (the
                # device already dropped the link) must not keep this session, and so the source's close, alive.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), DISCONNECT_TIMEOUT_S)
            if self._claims is not None:
                self._claims.release(st.identity, self._name)  # any adapter with a free slot may take it next
            if st.address == dialled:
                st.backoff = min(self._settings.backoff_max_s, max(self._settings.backoff_min_s, st.backoff * 2))
            # else: it failed because the device rotated its address meanwhile; the next try uses the new one
            # without a longer wait (the failure says nothing about the device).
            st.next_attempt = loop.time() + st.backoff * random.uniform(0.8, 1.2)  # noqa: S311 - jitter


class BleakSource:
    """Collects from allowed devices through one adapter; ``run(submit)`` until cancelled. It owns the scanner
    and the frame queue; who is admitted (``Admission``), discovery stalls (``DiscoveryWatch``) and the links
    (``ConnectionSlots``) are its parts."""

    def __init__(
        self,
        settings: BleSettings,
        pseudonym_key: bytes,
        backend_kwargs: dict[str, Any] | None = None,
        scanner_backend: type | None = None,
        client_backend: type | None = None,
        registry: DeviceRegistry | None = None,
        adapter: AdapterControl | None = None,
        name: str = "hci0",
        claims: DeviceClaims | None = None,
        unknown_seen: MutableMapping[str, str | None] | None = None,
    ) -> None:
        """``registry`` adds paired devices to ``settings.allow``, re-read while running; ``adapter`` is
        power-cycled when restarting the scanner does not end a stall. With several adapters, each has a
        source ``name``d after it, and they share ``claims`` and ``unknown_seen``."""
        self.settings = settings
        self.registry = registry
        self._key = pseudonym_key
        self._kw = backend_kwargs or {}
        self._scanner_backend = scanner_backend
        self.devices: dict[str, DeviceState] = {}  # by identity (see DeviceState.identity)
        # For `devices list`: bounded, forgetting, hashed at rest (see SeenDevices).
        self.unknown_seen: MutableMapping[str, str | None] = SeenDevices() if unknown_seen is None else unknown_seen
        self.name = name
        self.claims = claims
        self._frames: asyncio.Queue[Frame] = asyncio.Queue()
        self._admission = Admission(settings.allow)
        self._discovery = DiscoveryWatch(settings, adapter)
        self._slots = ConnectionSlots(settings, self._admission, self._frames, self._kw, client_backend, claims, name)

    @property
    def scanner_restarts(self) -> int:
        return self._discovery.scanner_restarts

    @property
    def adapter_resets(self) -> int:
        return self._discovery.adapter_resets

    def dev_id(self, address: str) -> str:
        return pseudonym(self._key, address)

    def _on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        loop = asyncio.get_running_loop()
        self._discovery.heard(loop.time())
        address = device.address.upper()
        admitted = self._admission.identity(address, adv.local_name, adv.manufacturer_data)
        if admitted is None:
            brands = "".join(f" [vendor:0x{cid:04X}]" for cid in adv.manufacturer_data)
            self.unknown_seen[address] = f"{adv.local_name or ''}{brands}".strip() or None
            return
        identity, entry = admitted
        st = self.devices.get(identity)
        if st is None:
            st = self.devices[identity] = DeviceState(self.dev_id(identity), address, identity, entry)
            log.info("allowed device %s seen; its records use id %s", scrub(adv.local_name), st.dev)
        elif st.address != address and not st.connected:
            log.debug("%s now advertises from a new private address", st.dev)
            st.address = address
            self._slots.abort_stale_dial(identity, address)
        st.name, st.rssi, st.ble_device, st.last_seen = adv.local_name, adv.rssi, device, loop.time()
        self._collect_service_data(st, adv)

    def _collect_service_data(self, st: DeviceState, adv: AdvertisementData) -> None:
        """Measurements broadcast as service data become frames (once per distinct value)."""
        known = set(known_characteristics())
        for uuid, payload in adv.service_data.items():
            u = uuid16(uuid)
            char = ADV_SERVICE_TO_CHAR.get(u) if u is not None else None
            char = char or (u if u in known else None)
            if char is None:
                continue
            st.advertisement_only = True  # its data arrives in advertisements: never spend a link on it
            if self.claims is not None and not self.claims.claim(st.identity, self.name):
                continue  # another adapter collects this broadcaster
            if st.last_adv_payload.get(char) != payload:  # advertisements repeat one measurement many times
                st.last_adv_payload[char] = payload
                st.notifications += 1
                self._frames.put_nowait(Frame(st.dev, char, bytes(payload)))

    async def run(self, submit: Callable[[Frame], Awaitable[None]]) -> None:
        pump = asyncio.create_task(self._pump(submit))
        scanner = self._new_scanner()
        await scanner.start()
        loop = asyncio.get_running_loop()
        self._discovery.last_adv = loop.time()
        last_registry = 0.0
        try:
            while True:
                await asyncio.sleep(0.2)
                now = loop.time()
                if self.registry is not None and now - last_registry >= 5.0:
                    last_registry = now
                    self._refresh_registry(self.registry)
                if self._discovery.stalled(now):
                    scanner = await self._discovery.recover(
                        scanner, self._new_scanner, now - self._discovery.last_adv, self._discovery_needed()
                    )
                    self._discovery.last_adv = loop.time()
                self._slots.start_due(self.devices.values(), now)
        finally:
            await self._slots.close()
            with contextlib.suppress(Exception):
                await scanner.stop()
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    def _discovery_needed(self) -> bool:
        """A device we wait for is not connected (or none was seen yet)."""
        return not self.devices or any(not st.connected and not st.advertisement_only for st in self.devices.values())

    def _silence_limit(self, gaps: list[float]) -> float:
        return self._slots.silence_limit(gaps)

    def decode_quirks(self, dev: str) -> Mapping[str, str] | None:
        """The quirks the gateway must decode this device's frames with (from its registry entry)."""
        return self._admission.quirks(dev)

    def device_states(self) -> dict[str, dict[str, Any]]:
        """What the gateway publishes per device: no address, only the pseudonymous id."""
        return {
            st.dev: {
                "connected": st.connected,
                "rssi": st.rssi,
                "battery": st.battery,
                "connects": st.connects,
                "failures": st.failures,
                "notifications": st.notifications,
                "error": st.last_error,
            }
            for st in self.devices.values()
        }

    def _refresh_registry(self, registry: DeviceRegistry) -> None:
        self._admission.refresh(registry, self.devices.values(), self.unknown_seen)

    def _new_scanner(self) -> BleakScanner:
        return BleakScanner(self._on_advertisement, backend=self._scanner_backend, **self._kw)

    async def _pump(self, submit: Callable[[Frame], Awaitable[None]]) -> None:
        while True:
            await submit(await self._frames.get())


class _Link:
    """One connection's notifications: frames out, and the gaps between them for the silence watchdog."""

    def __init__(self, st: DeviceState, frames: asyncio.Queue[Frame]) -> None:
        self._st, self._frames, self._loop = st, frames, asyncio.get_running_loop()
        self.disconnected = asyncio.Event()
        self._last_note = self._loop.time()
        self._gaps: list[float] = []

    def on_notify(self, char: Any, data: bytearray) -> None:
        u = uuid16(char.uuid)
        if u is None:
            return
        now = self._loop.time()
        self._gaps.append(now - self._last_note)
        del self._gaps[:-10]
        self._last_note = now
        st = self._st
        st.notifications += 1
        if u == BATTERY_LEVEL and len(data) == 1:
            st.battery = data[0]
        self._frames.put_nowait(Frame(st.dev, u, bytes(data)))

    async def subscribe(self, client: BleakClient, wanted: AbstractSet[int]) -> None:
        st = self._st
        for service in client.services or []:
            for char in service.characteristics:
                u = uuid16(char.uuid)
                if u is None or u not in wanted:
                    continue
                if u == BATTERY_LEVEL and "read" in char.properties:
                    # The level now; a battery that also notifies reports changes from here on.
                    value = bytes(await client.read_gatt_char(char))
                    st.battery = value[0] if len(value) == 1 else None
                    self._frames.put_nowait(Frame(st.dev, u, value))
                if "notify" in char.properties or "indicate" in char.properties:
                    await client.start_notify(char, self.on_notify)

    async def watch(self, silence_limit: Callable[[list[float]], float]) -> None:
        """Until the link drops, or stays silent longer than the device's rhythm allows."""
        st = self._st
        while not self.disconnected.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.disconnected.wait(), 1.0)
            limit = silence_limit(self._gaps)
            if self._loop.time() - self._last_note > limit:
                log.warning("%s silent for %.1f s: dropping the link to reconnect", st.dev, limit)
                st.last_error = "silent"
                return
        log.info("%s disconnected", st.dev)


def _irks(allow: frozenset[str]) -> list[bytes]:
    return sorted(bytes.fromhex(e[4:]) for e in allow if e.startswith("irk:"))


class MultiAdapterSource:
    """One gateway, several adapters (USB dongles for more slots): a ``BleakSource`` per adapter, sharing
    device claims, the list of unknown devices and the pseudonym key, run together."""

    def __init__(self, sources: list[BleakSource]) -> None:
        if not sources:
            raise ValueError("at least one adapter")
        self.sources = sources

    async def run(self, submit: Callable[[Frame], Awaitable[None]]) -> None:
        await asyncio.gather(*(s.run(submit) for s in self.sources))

    @property
    def devices(self) -> dict[str, DeviceState]:
        """Each device as seen by the adapter that holds it (or by any, if none does)."""
        out: dict[str, DeviceState] = {}
        for s in self.sources:
            for identity, st in s.devices.items():
                owner = s.claims.owner(identity) if s.claims is not None else None
                if identity not in out or owner == s.name:
                    out[identity] = st
        return out

    def dev_id(self, identity: str) -> str:
        return self.sources[0].dev_id(identity)

    def decode_quirks(self, dev: str) -> Mapping[str, str] | None:
        for s in self.sources:
            q = s.decode_quirks(dev)
            if q:
                return q
        return None

    def device_states(self) -> dict[str, dict[str, Any]]:
        states: dict[str, dict[str, Any]] = {}
        for s in self.sources:
            for dev, state in s.device_states().items():
                old = states.get(dev)
                # The adapter that holds the device (connected, else the one that collected most) reports it.
                if old is None or (state["connected"], state["notifications"]) > (
                    old["connected"],
                    old["notifications"],
                ):
                    states[dev] = {**state, "adapter": s.name}
        return states
