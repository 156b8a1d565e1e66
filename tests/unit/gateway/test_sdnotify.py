"""sd_notify: what systemd receives on a real unix datagram socket, what is refused, and when a ping is due."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import GatewayError
from gateway.sdnotify import Notifier, NotifyError, ProgressWatchdog, watchdog_interval


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's notification socket."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(65536).decode().split("\n")


def test_ready_status_watchdog_and_stopping_reach_the_socket(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    n = Notifier.from_environment({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready(status="journal open, 3 devices")
    assert received(sock) == ["READY=1", "STATUS=journal open, 3 devices"]
    assert n.watchdog()
    assert received(sock) == ["WATCHDOG=1"]
    assert n.status("draining 12 records")
    assert received(sock) == ["STATUS=draining 12 records"]
    assert n.stopping()
    assert received(sock) == ["STOPPING=1"]


def test_abstract_namespace_address(tmp_path: Path) -> None:
    name = f"tiyi-test-{os.getpid()}-{tmp_path.name}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert Notifier.from_environment({"NOTIFY_SOCKET": "@" + name}).ready()
        assert received(sock) == ["READY=1"]


def test_without_systemd_every_call_is_a_no_op() -> None:
    n = Notifier.from_environment({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False


def test_a_vanished_socket_is_an_oserror_not_silence(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        Notifier(str(tmp_path / "gone")).watchdog()


@pytest.mark.parametrize("raw", ["", "relative/notify", "vsock:2:1234", "/tmp/a\0b", "/" + "x" * 107])
def test_malformed_notify_socket_is_refused(raw: str) -> None:
    with pytest.raises(NotifyError) as info:
        Notifier(raw)
    assert isinstance(info.value, GatewayError | ValueError)


def test_a_newline_cannot_forge_readiness(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    n = Notifier(path)
    for text in ("ok\nREADY=1", "ok\0READY=1"):
        with pytest.raises(NotifyError, match="newline or NUL"):
            n.status(text)
    with pytest.raises(NotifyError, match="upper-case"):
        n.send([("READY=1\nX", "1")])
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(65536)  # nothing at all was sent


def test_oversized_and_empty_messages_are_refused(systemd_socket: tuple[socket.socket, str]) -> None:
    _, path = systemd_socket
    with pytest.raises(NotifyError, match=r"1\.\.4096 bytes"):
        Notifier(path).status("x" * 5000)
    with pytest.raises(NotifyError, match=r"1\.\.4096 bytes"):
        Notifier(path).send([])


def test_watchdog_interval_from_the_environment() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, pid=42) is None  # not ours


@pytest.mark.parametrize(
    "env",
    [
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "30s"},
        {"WATCHDOG_USEC": ""},
        {"WATCHDOG_USEC": str(86_400_000_001)},
        {"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "me"},
    ],
)
def test_malformed_watchdog_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(NotifyError):
        watchdog_interval(env, pid=1)


def test_ping_only_when_every_loop_progressed() -> None:
    wd = ProgressWatchdog(["ingest", "delivery", "anchoring"], interval_s=30)
    assert not wd.due(0.0)
    wd.progress("ingest")
    wd.progress("delivery")
    assert not wd.due(1.0)
    assert wd.stalled() == {"anchoring"}
    wd.progress("anchoring")
    assert wd.due(2.0)
    # the marks are consumed: a wedged loop stops the pings even though the others keep going
    wd.progress("ingest")
    wd.progress("delivery")
    assert not wd.due(100.0)
    assert wd.stalled() == {"anchoring"}


def test_pings_are_spaced_by_half_an_interval() -> None:
    wd = ProgressWatchdog(["a"], interval_s=10)
    wd.progress("a")
    assert wd.due(0.0)
    wd.progress("a")
    assert not wd.due(4.9)
    assert wd.due(5.0)


def test_progress_watchdog_refuses_unknown_loops_and_bad_settings() -> None:
    with pytest.raises(NotifyError):
        ProgressWatchdog([], 10)
    with pytest.raises(NotifyError):
        ProgressWatchdog(["a", "a"], 10)
    with pytest.raises(NotifyError):
        ProgressWatchdog(["a"], float("nan"))
    with pytest.raises(NotifyError, match="unknown loop"):
        ProgressWatchdog(["a"], 10).progress("b")
