"""Bluetooth addresses are scrubbed from any text bound for a log or a payload; link failures become codes."""

from __future__ import annotations

import errno
import io
import logging

import pytest
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakCharacteristicNotFoundError,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
)
from bleak_retry_connector import BleakAbortedError, BleakConnectionError, BleakNotFoundError

from gateway.ble.failures import ERROR_CODES, error_code
from gateway.ble.redact import REDACTED, ScrubFilter, describe, install_scrub_filter, scrub


@pytest.mark.parametrize(
    "text",
    [
        "Device with address C8:3F:0A:11:22:33 was not found.",
        "device c8:3f:0a:11:22:33 gone",
        "C8-3F-0A-11-22-33 refused",
        "c8-3f-0a-11-22-33",
        "[org.bluez.Error.Failed] /org/bluez/hci0/dev_C8_3F_0A_11_22_33/service000c/char000d",
        "path /org/bluez/hci1/dev_c8_3f_0a_11_22_33",
        "address=C83F0A112233;",
        "c83f0a112233",
        "ble-x - C8:3F:0A:11:22:33: Failed to connect after 1 attempt(s)",
        "Address('C8:3F:0A:11:22:33/P')",
    ],
)
def test_every_form_of_an_address_is_scrubbed(text: str) -> None:
    out = scrub(text)
    assert REDACTED in out
    for needle in ("c83f0a112233", "c8:3f", "c8-3f", "c8_3f", "11:22:33", "11_22_33", "11-22-33"):
        assert needle not in out.lower()


@pytest.mark.parametrize(
    "text",
    [
        "ble-3fa2c10b9e41 silent for 2.0 s",  # our own pseudonyms stay readable
        "Characteristic 00002a37-0000-1000-8000-00805f9b34fb was not found!",  # UUIDs too
        "key sm2:0123456789abcdef, tx 0x" + "ab" * 32,
        "12:30:45 connected (MQTT 5), AA:BB:CC partial",
        "2001:db8::1 and fe80::aa:bb:cc",
    ],
)
def test_text_without_an_address_is_left_alone(text: str) -> None:
    assert scrub(text) == text


def test_describe_gives_a_scrubbed_text_or_the_class_name() -> None:
    assert describe(TimeoutError()) == "TimeoutError"
    assert describe(BleakError("lost C8:3F:0A:11:22:33")) == f"lost {REDACTED}"


def _record(name: str, msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, exc_info)


def test_the_log_filter_scrubs_messages_arguments_and_tracebacks_of_any_logger() -> None:
    try:
        raise BleakDBusError("org.bluez.Error.Failed", ["at /org/bluez/hci0/dev_C8_3F_0A_11_22_33"])
    except BleakDBusError as exc:
        rec = _record(
            "bleak_retry_connector", "%s - %s: Failed to connect", "ble-3fa2c10b9e41", "C8:3F:0A:11:22:33", exc=exc
        )
    assert ScrubFilter().filter(rec)
    line = logging.Formatter("%(name)s: %(message)s").format(rec)
    assert "C8" not in line.replace("ble-", "") and "dev_C8" not in line
    assert "ble-3fa2c10b9e41" in line and "Traceback" in line and REDACTED in line


def test_tiyi_installs_the_filter_on_its_log_handlers() -> None:
    root = logging.getLogger("scrub-test")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    root.propagate = False
    try:
        install_scrub_filter(root)
        install_scrub_filter(root)  # idempotent
        assert sum(isinstance(f, ScrubFilter) for f in handler.filters) == 1
        logging.getLogger("scrub-test.bleak").warning("Device with address %s was not found", "c8:3f:0a:11:22:33")
    finally:
        root.removeHandler(handler)
    assert stream.getvalue() == f"Device with address {REDACTED} was not found\n"


def _caused(outer: BaseException, inner: BaseException) -> BaseException:
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(
    "exc,connected,code",
    [
        (
            BleakDeviceNotFoundError("C8:3F:0A:11:22:33", "Device with address C8:3F:0A:11:22:33 was not found."),
            False,
            "not_found",
        ),
        (BleakNotFoundError("ble-x - C8:3F:0A:11:22:33: Failed to connect after 3 attempt(s)"), False, "not_found"),
        (TimeoutError(), False, "timeout"),
        (_caused(BleakError("connecting to ble-x did not finish within 45 s"), TimeoutError()), False, "timeout"),
        (BleakAbortedError("... interference"), False, "refused"),
        (_caused(BleakConnectionError("failed"), ConnectionRefusedError()), False, "refused"),
        (BleakDBusError("org.bluez.Error.Failed", ["le-connection-abort-by-local"]), False, "refused"),
        (BleakDBusError("org.bluez.Error.NotReady", ["Resource Not Ready"]), False, "adapter_error"),
        (BleakDBusError("org.bluez.Error.InProgress", ["Operation already in progress"]), False, "adapter_error"),
        (
            BleakDBusError("org.freedesktop.DBus.Error.UnknownObject", ["no /org/bluez/hci0/dev_C8_3F_0A_11_22_33"]),
            False,
            "not_found",
        ),
        (BleakDBusError("org.freedesktop.DBus.Error.NoReply", []), True, "timeout"),
        (BleakDBusError("org.bluez.Error.NotAuthorized", []), True, "refused"),
        (BleakDBusError("org.bluez.Error.Failed", ["ATT error: 0x0e"]), True, "gatt_error"),
        (BleakCharacteristicNotFoundError(0x2A37), True, "gatt_error"),
        (BleakError("not connected"), True, "gatt_error"),
        (BleakBluetoothNotAvailableError("off", BleakBluetoothNotAvailableReason.POWERED_OFF), False, "adapter_error"),
        (OSError(errno.EBUSY, "busy"), False, "adapter_error"),
        (BleakError("something new in bleak 4"), False, "other"),
        (_caused(BleakConnectionError("failed"), BleakError("?")), False, "other"),
    ],
)
def test_failures_map_to_a_small_documented_vocabulary(exc: BaseException, connected: bool, code: str) -> None:
    assert error_code(exc, connected=connected) == code
    assert code in ERROR_CODES


def test_a_cause_cycle_does_not_hang_the_classifier() -> None:
    a, b = BleakError("a"), BleakError("b")
    a.__cause__, b.__cause__ = b, a
    assert error_code(a) == "other"
