"""Feeding systemd's watchdog from ``tiyi run``: a ping only when the gateway as a whole still moves.

Every ``interval / 4`` a probe marks what it can see progressing: the event loop itself (the probe ran),
the journal thread (a no-op call returned within half an interval: a hung fsync or a wedged SQLite call
never does) and each stage's loop task (still running; one that ended with an error is stalled for good).
A running task can still be stuck inside an ``await``, so each stage loop also beats on every pass
(``gateway.heartbeats``) and must do so within its bound; and a chain client's thread can hang in a call
that no timeout reaches, so each chain worker reports a call running past its bound. Either withholds the
ping; the reason is logged once, on one line, until it changes or the pings resume.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from gateway.clock import monotonic
from gateway.heartbeats import Heartbeats
from gateway.sdnotify import Notifier, ProgressWatchdog
from gateway.stages.ports import Worker

log = logging.getLogger("tiyi.gateway")


def stuck(beats: Heartbeats | None, workers: Sequence[Worker], now: float) -> dict[str, str]:
    """What is stuck now, by name: loops past their bound since their last pass, threads hung in a call."""
    out: dict[str, str] = {}
    if beats is not None:
        for name, age in beats.overdue(now).items():
            out[name] = f"{name} (no pass for {age:.0f} s, bound {beats.bound(name):g} s)"
    for w in workers:
        hung = w.hung_for(now)
        if hung is not None:
            out[w.name] = f"{w.name} thread (in one call for {hung:.0f} s, bound {w.bound_s:g} s)"
    return out


async def feed_watchdog(
    notifier: Notifier,
    interval_s: float,
    probe_journal: Callable[[], Awaitable[object]],
    loops: Mapping[str, asyncio.Task[None]],
    beats: Heartbeats | None = None,
    workers: Sequence[Worker] = (),
) -> None:
    """Runs until cancelled; ``loops`` are the stage tasks by name, ``beats`` their passes, ``workers`` the
    bounded threads (chain clients)."""
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
        now = monotonic()
        wedged = stuck(beats, workers, now)
        if not wedged and wd.due(now):
            notifier.watchdog()
            warned = frozenset()
            await asyncio.sleep(interval_s / 4)
            continue
        reasons = {n: f"{n} (stopped or not answering)" for n in wd.stalled()} | wedged
        if reasons and frozenset(reasons) != warned:
            log.error(
                "withholding the watchdog ping, no progress in: %s", "; ".join(reasons[n] for n in sorted(reasons))
            )
            warned = frozenset(reasons)
        await asyncio.sleep(interval_s / 4)
