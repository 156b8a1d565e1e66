"""Feeding systemd's watchdog from ``tiyi run``: a ping only when the gateway as a whole still moves.

Every ``interval / 4`` a probe marks what it can see progressing: the event loop itself (the probe ran),
the journal thread (a no-op call returned within half an interval: a hung fsync or a wedged SQLite call
never does) and each stage's loop task (still running; one that ended with an error is stalled for good).
``ProgressWatchdog`` lets a ping through only when all of them progressed since the previous one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from gateway.clock import monotonic
from gateway.sdnotify import Notifier, ProgressWatchdog

log = logging.getLogger("tiyi.gateway")


async def feed_watchdog(
    notifier: Notifier,
    interval_s: float,
    probe_journal: Callable[[], Awaitable[object]],
    loops: Mapping[str, asyncio.Task[None]],
) -> None:
    """Runs until cancelled; ``loops`` are the stage tasks by name."""
    wd = ProgressWatchdog(["event-loop", "journal", *loops], interval_s)
    warned: frozenset[str] = frozenset()
    while True:
        wd.progress("event-loop")
        try:
            await asyncio.wait_for(probe_journal(), interval_s / 2)
            wd.progress("journal")
        except TimeoutError:
            pass
        for name, task in loops.items():
            if not task.done():
                wd.progress(name)
        stalled = wd.stalled()
        if wd.due(monotonic()):
            notifier.watchdog()
            warned = frozenset()
        elif stalled and stalled != warned:
            log.error("no progress in %s: withholding the watchdog ping", ", ".join(sorted(stalled)))
            warned = stalled
        await asyncio.sleep(interval_s / 4)
