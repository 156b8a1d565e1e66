"""Adapter control: the last resort when discovery stalls and restarting the scanner does not help.

BlueZ discovery sometimes goes quiet without an error (a controller firmware hang, a coexistence lock-up
with Wi-Fi on the Pi's combo chip). After the scanner has been restarted a few times without a single
advertisement, the source power-cycles the adapter through ``AdapterControl``. On Linux that is
``BluezAdapter``: BlueZ's ``org.bluez.Adapter1.Powered`` property over D-Bus, the same switch
``bluetoothctl power off/on`` flips, via ``dbus-fast`` (already installed with bleak on Linux).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger("tiyi.ble")


class AdapterControl(Protocol):
    """Power-cycles one Bluetooth adapter."""

    name: str

    async def reset(self) -> None: ...


class BluezAdapter:
    """``hci0`` and friends, through BlueZ over the system D-Bus."""

    def __init__(self, name: str = "hci0", off_s: float = 1.0) -> None:
        self.name = name
        self.off_s = off_s

    async def reset(self) -> None:
        from dbus_fast import BusType, Variant
        from dbus_fast.aio import MessageBus

        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        try:
            path = f"/org/bluez/{self.name}"
            introspection = await bus.introspect("org.bluez", path)
            props = bus.get_proxy_object("org.bluez", path, introspection).get_interface(
                "org.freedesktop.DBus.Properties"
            )
            for powered in (False, True):
                await props.call_set("org.bluez.Adapter1", "Powered", Variant("b", powered))  # type: ignore[attr-defined]
                if not powered:
                    await asyncio.sleep(self.off_s)
            log.warning("adapter %s power-cycled", self.name)
        finally:
            bus.disconnect()
