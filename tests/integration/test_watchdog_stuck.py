"""systemd's watchdog against a real gateway (journal, Mosquitto, in-process chain) over a real datagram
socket: an idle gateway keeps feeding it; a stage loop stuck inside an ``await`` or a chain call that never
returns stops the pings, and the reason is logged once, on one line. Pass bounds are cut to half a second so
that "stuck" is seen quickly; the idle loops must still beat within them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import monotonic
from gateway.sdnotify import Notifier
from gateway.watchdog import feed_watchdog
from tests.integration.api_harness import RunningGateway

INTERVAL_S = 0.4  # WatchdogSec as the gateway sees it; pings come every 0.2 to 0.3 s while all is well
PASS_BOUND_S = 0.5


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    yield sock
    sock.close()


def watch(g: RunningGateway, sock: socket.socket) -> None:
    """Tight pass bounds for every stage loop, and the watchdog fed from the gateway's own loop."""
    assert g.parts is not None
    gw = g.parts.gateway
    gw.health.beats.pass_bound_s = PASS_BOUND_S
    for name, idle in gw.idle_waits().items():
        if name in gw.loops:
            gw.health.beats.expect(name, idle)

    async def nothing() -> None:
        await gw.worker.call(lambda: None)

    async def go() -> None:
        chains = [t.worker for t in gw.anchoring.targets]
        g.watchdog = asyncio.ensure_future(
            feed_watchdog(Notifier(sock.getsockname()), INTERVAL_S, nothing, gw.loops, gw.health.beats, chains)
        )

    g.call(go())


def pings_for(sock: socket.socket, seconds: float) -> list[float]:
    """The times of the pings received during ``seconds`` (each recv waits at most 2 s: a busy CPU)."""
    times: list[float] = []
    end = monotonic() + seconds
    while monotonic() < end:
        sock.settimeout(2.0)
        try:
            assert sock.recv(4096) == b"WATCHDOG=1"
        except TimeoutError:
            return times
        times.append(monotonic())
    return times


def until_withheld(caplog: pytest.LogCaptureFixture, sock: socket.socket, what: str) -> list[str]:
    """Drain pings until the withholding is logged (at most 20 s); then none may come for 3 intervals."""
    end = monotonic() + 20
    while not [r for r in caplog.records if "withholding the watchdog ping" in r.getMessage()]:
        assert monotonic() < end, "the watchdog never withheld a ping"
        sock.settimeout(0.2)
        with contextlib.suppress(TimeoutError):
            sock.recv(4096)
    sock.settimeout(3 * INTERVAL_S)
    with pytest.raises(TimeoutError):
        print("unexpected ping:", sock.recv(4096))
    lines = [r.getMessage() for r in caplog.records if "withholding" in r.getMessage()]
    assert len(lines) == 1 and what in lines[0] and "\n" not in lines[0], lines
    return lines


@pytest.fixture
def gw(gw: RunningGateway) -> Iterator[RunningGateway]:
    """The shared gateway (conftest), whose watchdog task, once ``watch`` started it, ends before it stops."""
    gw.watchdog = None
    yield gw
    if gw.watchdog is not None:
        gw._loop.call_soon_threadsafe(gw.watchdog.cancel)


def test_an_idle_gateway_keeps_feeding_the_watchdog(gw: RunningGateway, systemd: socket.socket) -> None:
    watch(gw, systemd)
    start = monotonic()
    times = pings_for(systemd, 4.0)
    # No frames at all for longer than every idle loop's bound (ingest, publish: 1 s idle + 0.5 s), and the
    # pings never paused: idle by design is not stuck.
    assert times and times[-1] - start > 3.5
    assert max(b - a for a, b in zip([start, *times], times, strict=False)) < 2.0


def test_a_stage_stuck_inside_an_await_stops_the_pings(
    gw: RunningGateway, systemd: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    assert gw.parts is not None
    batching = gw.parts.gateway.batching
    never = asyncio.Event()  # nobody sets it: the loop's task stays alive, its pass never ends

    async def stuck() -> bool:
        await never.wait()
        return False

    batching._maybe_close = stuck  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger="tiyi.gateway")
    watch(gw, systemd)
    assert len(pings_for(systemd, 0.5)) >= 1  # fed until the bound passes
    gw.feed(3)  # the other stages keep working meanwhile
    until_withheld(caplog, systemd, "batching (no pass for")
    assert not gw.parts.gateway.loops["batching"].done()  # alive as a task: only the heartbeat tells
    batching._maybe_close = lambda: asyncio.sleep(0, False)  # type: ignore[method-assign]
    never.set()  # unstuck: pings resume


class HangingChain:
    """The in-process chain, except that preparing an anchor blocks its thread until released."""

    def __init__(self, real: Any) -> None:
        self.real, self.release, self.resynced = real, threading.Event(), threading.Event()
        self.order: list[str] = []

    def prepare_anchor(self, *args: Any) -> Any:
        self.release.wait()
        out = self.real.prepare_anchor(*args)
        self.order.append("prepared")
        return out

    def resync_nonce(self) -> None:
        self.order.append("resync")
        self.real.resync_nonce()
        self.resynced.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_hung_chain_call_stops_the_pings(
    gw: RunningGateway, systemd: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    assert gw.parts is not None
    target = gw.parts.gateway.anchoring.targets[0]
    chain = HangingChain(target.chain)
    target.chain = chain  # type: ignore[assignment]
    target.worker.bound_s = 0.5
    caplog.set_level(logging.WARNING, logger="tiyi.gateway")
    try:
        watch(gw, systemd)
        assert len(pings_for(systemd, 0.5)) >= 1
        gw.feed(5)  # a batch closes; anchoring it calls the chain, which never answers
        until_withheld(caplog, systemd, "tiyi-chain thread (in one call for")
        # The stage itself was not left hanging: the call was given up on and the target paused.
        paused = [r.getMessage() for r in caplog.records if "anchoring on" in r.getMessage()]
        assert paused and "did not return within 0.5 s" in paused[0]
        # When the call does come back, the nonce it may have used is forgotten before any other chain call.
        chain.release.set()
        assert chain.resynced.wait(10)
        assert chain.order[:2] == ["prepared", "resync"], chain.order
    finally:
        chain.release.set()
