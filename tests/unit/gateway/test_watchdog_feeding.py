"""The watchdog is fed over a real datagram socket only while the event loop, the journal thread and every
stage loop progress: a hung journal call or a stage loop that died withholds the pings."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sdnotify import Notifier
from gateway.watchdog import feed_watchdog

INTERVAL_S = 0.2  # pings every 0.1 s at most; the probe runs every 0.05 s


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    yield sock
    sock.close()


def pings(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            assert sock.recv(4096) == b"WATCHDOG=1"
        except BlockingIOError:
            return n
        n += 1


async def forever() -> None:
    await asyncio.Event().wait()


async def crashes() -> None:
    await asyncio.sleep(0.3)
    raise RuntimeError("a stage loop died")


def run(sock: socket.socket, hang_journal: bool = False, second: str = "forever") -> tuple[int, int]:
    """Pings in the first 0.3 s, and in 0.5 s after that (the journal hung then, if asked; ``second`` the
    stage loop that may die at 0.3 s)."""
    journal_hangs = False

    hung = asyncio.Event()  # never set: a journal call made after the hang does not return

    async def journal() -> None:
        if journal_hangs:
            await hung.wait()

    async def main() -> tuple[int, int]:
        loops = {"ingest": asyncio.create_task(forever()), "publish": asyncio.create_task(globals()[second]())}
        dog = asyncio.create_task(feed_watchdog(Notifier(sock.getsockname()), INTERVAL_S, journal, loops))
        await asyncio.sleep(0.3)
        before = pings(sock)
        nonlocal journal_hangs
        journal_hangs = hang_journal
        await asyncio.sleep(0.25)  # a crash or hang, and the one ping the progress made before it still earns
        pings(sock)
        await asyncio.sleep(0.5)
        after = pings(sock)
        dog.cancel()
        for t in loops.values():
            t.cancel()
        await asyncio.gather(dog, *loops.values(), return_exceptions=True)
        return before, after

    return asyncio.run(main())


def test_pings_flow_while_everything_progresses(systemd: socket.socket) -> None:
    before, after = run(systemd)
    assert before >= 2 and after >= 3


def test_a_stage_loop_that_died_stops_the_pings(systemd: socket.socket) -> None:
    before, after = run(systemd, second="crashes")
    assert before >= 2 and after == 0


def test_a_hung_journal_thread_stops_the_pings(systemd: socket.socket) -> None:
    before, after = run(systemd, hang_journal=True)
    assert before >= 2 and after == 0
