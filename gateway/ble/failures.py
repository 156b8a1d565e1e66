"""Why a device's link failed, as a code from a small fixed vocabulary.

The retained device state topic carries one of these codes, never an exception's text: that text comes
from bleak, BlueZ and D-Bus, changes between versions, and carries the device's Bluetooth address. The
scrubbed detail goes to the gateway's log instead. ``docs/mqtt-contract.md`` lists the same codes.
"""

from __future__ import annotations

from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakCharacteristicNotFoundError,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
)
from bleak_retry_connector import BleakAbortedError, BleakNotFoundError, BleakOutOfConnectionSlotsError

ERROR_CODES: dict[str, str] = {
    "not_found": "the Bluetooth stack cannot find the device (out of range, switched off, or forgotten)",
    "timeout": "connecting or discovering its services did not finish in time",
    "refused": "the device or the stack rejected or aborted the connection",
    "silent": "connected, but it stopped notifying: the gateway dropped the link to reconnect",
    "gatt_error": "connected, but reading or subscribing to a characteristic failed",
    "adapter_error": "the gateway's own adapter failed (powered off, busy, no free connection slot)",
    "other": "anything else; the gateway's log has the detail (addresses removed)",
}

_DBUS_CODES = (  # by the D-Bus error name's last part
    (("NotReady", "NotAvailable", "InProgress", "Busy", "NotPowered", "NoMemory"), "adapter_error"),
    (("UnknownObject", "DoesNotExist", "UnknownMethod"), "not_found"),
    (("NoReply", "Timeout", "TimedOut"), "timeout"),
    (
        (
            "NotPermitted",
            "NotAuthorized",
            "AuthenticationFailed",
            "AuthenticationRejected",
            "Rejected",
            "AuthenticationCanceled",
        ),
        "refused",
    ),
)


def _code_of(exc: BaseException, connected: bool) -> str | None:
    """The code one exception in a chain decides by itself, or None if only its causes can tell."""
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is the same class since Python 3.11
        return "timeout"
    if isinstance(exc, BleakDeviceNotFoundError | BleakNotFoundError):
        return "not_found"
    if isinstance(exc, BleakOutOfConnectionSlotsError | BleakBluetoothNotAvailableError):
        return "adapter_error"
    if isinstance(exc, BleakAbortedError):
        return "refused"
    if isinstance(exc, BleakCharacteristicNotFoundError):
        return "gatt_error"
    if isinstance(exc, BleakDBusError):
        name = exc.dbus_error.rsplit(".", 1)[-1]
        for names, code in _DBUS_CODES:
            if name in names:
                return code
        if "abort" in str(exc).lower():  # org.bluez.Error.Failed: le-connection-abort-by-local
            return "refused"
        return "gatt_error" if connected else None
    if isinstance(exc, ConnectionRefusedError | ConnectionAbortedError | ConnectionResetError):
        return "refused"
    if isinstance(exc, OSError):  # an HCI socket or D-Bus connection of our own: the adapter side
        return "adapter_error"
    return None


def error_code(exc: BaseException, *, connected: bool = False) -> str:
    """The code for ``exc``; ``connected`` says the link was up (so a plain bleak error is a GATT one).

    Wrappers (bleak-retry-connector's, our own watchdog's) say less than what they wrap, so the exception
    and then its causes are asked in turn; the first that can tell decides."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen and len(seen) < 16:
        seen.add(id(e))
        code = _code_of(e, connected)
        if code is not None:
            return code
        e = e.__cause__ or e.__context__
    return "gatt_error" if connected and isinstance(exc, BleakError) else "other"
