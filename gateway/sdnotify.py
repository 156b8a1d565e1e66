"""systemd's service notification protocol (``sd_notify``) without libsystemd: one datagram per message.

The unit runs the gateway with ``Type=notify`` and ``WatchdogSec=``: systemd considers it started only
after ``READY=1`` and restarts it when ``WATCHDOG=1`` stops arriving. A watchdog ping must mean "the
loops are making progress", not "the process is alive", so :class:`ProgressWatchdog` only lets a ping
through when every registered loop has reported progress since the previous one.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op that returns ``False``; a malformed
environment or a message that could smuggle extra assignments is refused with :class:`NotifyError`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping

from gateway.errors import GatewayError

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL of a path.
_MAX_ADDRESS = 107
# systemd reads notifications into a buffer of this size (NOTIFY_BUFFER_MAX); a longer datagram is cut.
_MAX_MESSAGE = 4096
# WATCHDOG_USEC above a day is a misconfiguration, not a watchdog.
_MAX_WATCHDOG_USEC = 86_400 * 1_000_000


class NotifyError(GatewayError, ValueError):
    """The notification socket or a message is malformed; nothing was sent."""


def _address(raw: str) -> str:
    """The socket address systemd gave us: an absolute path, or ``@name`` for the abstract namespace."""
    if not raw or "\0" in raw or len(raw.encode()) > _MAX_ADDRESS:
        raise NotifyError("NOTIFY_SOCKET is empty, too long or contains NUL")
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if not raw.startswith("/"):
        # systemd also knows vsock: addresses (VMs); a gateway runs on the host, so anything else is refused.
        raise NotifyError("NOTIFY_SOCKET must be an absolute path or @abstract name")
    return raw


def _field(key: str, value: str) -> str:
    """One ``KEY=value`` line; a newline in a value would forge another assignment (e.g. ``READY=1``)."""
    if not key or not key.isascii() or not all(c.isupper() or c.isdigit() or c == "_" for c in key):
        raise NotifyError(f"notification key {key!r} must be upper-case ASCII letters, digits and _")
    if "\n" in value or "\0" in value:
        raise NotifyError(f"notification value for {key} must not contain a newline or NUL")
    return f"{key}={value}"


class Notifier:
    """Sends ``KEY=value`` notifications to systemd. Construct with :meth:`from_environment`."""

    __slots__ = ("_address",)

    def __init__(self, address: str | None) -> None:
        self._address = None if address is None else _address(address)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """The notifier for this process (``NOTIFY_SOCKET`` unset: not under systemd, every send is a no-op)."""
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, fields: Iterable[tuple[str, str]]) -> bool:
        """Send one datagram; True if sent, False when not under systemd. OSError if systemd's socket is gone."""
        text = "\n".join(_field(k, v) for k, v in fields)
        data = text.encode("utf-8")
        if not data or len(data) > _MAX_MESSAGE:
            raise NotifyError(f"a notification must be 1..{_MAX_MESSAGE} bytes, not {len(data)}")
        if self._address is None:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(data, self._address)
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete (journal open, stages running): systemd's start job finishes here."""
        return self.send([("READY", "1"), *([("STATUS", status)] if status is not None else [])])

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status``."""
        return self.send([("STATUS", text)])

    def stopping(self) -> bool:
        """A clean stop has begun (draining); systemd stops expecting watchdog pings."""
        return self.send([("STOPPING", "1")])

    def watchdog(self) -> bool:
        """One keep-alive ping. Send it through :class:`ProgressWatchdog`, never from a bare timer."""
        return self.send([("WATCHDOG", "1")])


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds within which systemd expects a ping (``WATCHDOG_USEC``), or None when no watchdog is asked of
    this process (unset, or ``WATCHDOG_PID`` names another process). Ping at half this interval."""
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC")
    if raw is None:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner is not None:
        if not owner.isdigit():
            raise NotifyError(f"WATCHDOG_PID must be a process id, not {owner!r}")
        if int(owner) != (os.getpid() if pid is None else pid):
            return None
    if not raw.isdigit() or not 0 < int(raw) <= _MAX_WATCHDOG_USEC:
        raise NotifyError(f"WATCHDOG_USEC must be a whole number of microseconds from 1 to {_MAX_WATCHDOG_USEC}")
    return int(raw) / 1_000_000


class ProgressWatchdog:
    """Lets a watchdog ping through only while every registered loop makes progress.

    Each loop calls :meth:`progress` when it completes a unit of work or an idle wait (an idle loop is
    healthy; a wedged one never returns to call it). A timer calls :meth:`due` every ``interval / 2``
    with a monotonic time; it returns True, and forgets the marks, when a ping should be sent now.
    Pure: no clock, no socket, so the rule is tested without systemd.
    """

    __slots__ = ("_interval", "_last_ping", "_loops", "_marked")

    def __init__(self, loops: Iterable[str], interval_s: float) -> None:
        names = tuple(loops)
        if not names or len(set(names)) != len(names):
            raise NotifyError("a progress watchdog needs one or more distinct loop names")
        if not interval_s > 0:
            raise NotifyError("the watchdog interval must be positive")
        self._loops = frozenset(names)
        self._interval = interval_s
        self._marked: set[str] = set()
        self._last_ping: float | None = None

    def progress(self, loop: str) -> None:
        if loop not in self._loops:
            raise NotifyError(f"unknown loop {loop!r} (registered: {', '.join(sorted(self._loops))})")
        self._marked.add(loop)

    def stalled(self) -> frozenset[str]:
        """The loops that have not reported progress since the last ping (for the log line)."""
        return self._loops - self._marked

    def due(self, now: float) -> bool:
        """True when every loop progressed since the last ping and half an interval has passed since it."""
        if self._marked != self._loops:
            return False
        if self._last_ping is not None and now - self._last_ping < self._interval / 2:
            return False
        self._last_ping = now
        self._marked.clear()
        return True
