"""Keeping Bluetooth addresses out of logs and payloads.

A device's address identifies a person's wearable; the gateway publishes only pseudonyms. But text the
gateway does not write itself — exception messages from bleak, bleak-retry-connector, BlueZ and D-Bus,
names a device advertises — often carries the address (``Device with address AA:BB:... was not found``,
``/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF``). :func:`scrub` removes addresses from such text; every
place where third-party text enters a log line or a payload goes through it, and :class:`ScrubFilter`
applies it to every record a log handler emits, including records the libraries log themselves.

The bare 12-hex-digit form is scrubbed too, except where it is plainly something else: our own device
pseudonyms (``ble-`` + 12 hex digits) and the last group of a UUID. Over-scrubbing a number in a log is
harmless; leaking an address is not.
"""

from __future__ import annotations

import logging
import re

REDACTED = "<bt-addr>"

_HEX = "[0-9A-Fa-f]"
_NOT_AFTER_HEX = f"(?<!{_HEX})"
_NOT_BEFORE_HEX = f"(?!{_HEX})"
_ADDRESS = re.compile(
    # AA:BB:CC:DD:EE:FF, AA-BB-CC-DD-EE-FF, AA_BB_CC_DD_EE_FF (BlueZ D-Bus paths: .../dev_AA_BB_...), any case
    f"{_NOT_AFTER_HEX}{_HEX}{{2}}([:_-]){_HEX}{{2}}(?:\\1{_HEX}{{2}}){{4}}{_NOT_BEFORE_HEX}"
    # AABBCCDDEEFF, but not a device pseudonym (ble-...) nor the last group of a UUID (...-0000-...)
    f"|{_NOT_AFTER_HEX}(?<!ble-)(?<!{_HEX}{{4}}-){_HEX}{{12}}{_NOT_BEFORE_HEX}"
)


def scrub(text: object) -> str:
    """``str(text)`` with every Bluetooth address replaced by ``<bt-addr>``."""
    return _ADDRESS.sub(REDACTED, str(text))


def describe(exc: BaseException) -> str:
    """An exception's text for a log line, scrubbed (its class name if it has no text)."""
    return scrub(str(exc) or type(exc).__name__)


class ScrubFilter(logging.Filter):
    """A handler filter that scrubs each record's formatted message, traceback and stack.

    On a handler (not a logger) it sees every record that handler emits, whichever library logged it.
    The record is rewritten in place (message pre-formatted, arguments dropped), so every formatter and
    handler after it gets the scrubbed text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record must still be logged, and scrubbed
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def install_scrub_filter(logger: logging.Logger | None = None) -> None:
    """Add :class:`ScrubFilter` to each handler of ``logger`` (default: the root logger), once."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(ScrubFilter())
