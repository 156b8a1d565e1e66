"""What the stages need from outside and from each other: small protocols and the plumbing they share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar, runtime_checkable

from edge.frame import Frame
from gateway.metrics import ANCHOR_BUCKETS_S, BATCH_CLOSE_BUCKETS_S, Latencies, Metrics

T = TypeVar("T")


@runtime_checkable
class FrameSource(Protocol):
    """Where frames come from: a BLE adapter, the simulator, a replay. ``run`` submits until cancelled."""

    async def run(self, submit: Callable[[Frame], Awaitable[None]]) -> None: ...


class DeviceDirectory(Protocol):
    """What the gateway knows about devices besides their frames: decoding quirks and a state to publish."""

    def decode_quirks(self, dev: str) -> Mapping[str, str] | None: ...

    def device_states(self) -> dict[str, dict[str, Any]]: ...


class NoDevices:
    """The directory of a source that knows nothing about its devices (simulators, replays)."""

    def decode_quirks(self, dev: str) -> Mapping[str, str] | None:
        return None

    def device_states(self) -> dict[str, dict[str, Any]]:
        return {}


NO_DEVICES = NoDevices()


class JournalErrorPolicy(StrEnum):
    """What a stage does when the journal fails it; each stage has exactly one."""

    RETRY_SAME = "retry the same work"  # ingest: nothing was written and no seq spent; try the same records again
    RESEND_LATER = "re-send later"  # delivery marks: a lost mark only causes an identical re-send after restart
    PAUSE = "pause and retry"  # batching, head: nothing changed; try again in a moment
    PAUSE_TARGET = "pause the target"  # anchoring: resync the nonce (a prepared tx may be lost), retry later


MAX_TIMED_BATCHES = 4096


@dataclass
class Health:
    """Counters and the last error an operator should see, shared by all stages."""

    metrics: Metrics = field(default_factory=Metrics)
    last_error: str | None = None
    device_records: Counter[str] = field(default_factory=Counter)  # journaled records per (pseudonymous) device
    device_last: dict[str, tuple[int, int, bytes]] = field(default_factory=dict)  # dev → (seq, t, record bytes)
    batch_close_s: Latencies = field(default_factory=lambda: Latencies(BATCH_CLOSE_BUCKETS_S))
    anchor_final_s: Latencies = field(default_factory=lambda: Latencies(ANCHOR_BUCKETS_S))  # batch closed → final
    closed_at: dict[int, float] = field(default_factory=dict)  # batch → monotonic close time, until final

    def journaled(self, rows: list[tuple[int, str, int, bytes]]) -> None:
        """Per-device counts and each device's latest record, for /metrics and the dashboard."""
        for row in rows:
            self.device_records[row[1]] += 1
            self.device_last[row[1]] = (row[0], row[2], row[3])

    def batch_closed(self, batch: int, took_s: float, now: float) -> None:
        self.batch_close_s.observe(took_s)
        self.closed_at[batch] = now
        if len(self.closed_at) > MAX_TIMED_BATCHES:  # no chain, or one that is down: keep the newest only
            del self.closed_at[next(iter(self.closed_at))]

    def batch_final(self, batch: int, now: float) -> None:
        """A batch closed by this process reached ``final`` (those closed before a restart are not timed)."""
        closed = self.closed_at.pop(batch, None)
        if closed is not None:
            self.anchor_final_s.observe(now - closed)

    def journal_failed(self, policy: JournalErrorPolicy, what: str, exc: Exception) -> None:
        self.metrics.journal_errors += 1
        self.last_error = f"journal: {exc}"
        logging.getLogger("tiyi.gateway").error("%s: %s (%s)", what, exc, policy)


class Wake:
    """A nudge from one stage to another's loop (an event that its waiter clears)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float | None) -> None:
        """Until nudged or ``timeout`` passed; the nudge is consumed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


@dataclass(frozen=True)
class Wakes:
    publish: Wake = field(default_factory=Wake)
    batch: Wake = field(default_factory=Wake)
    anchor: Wake = field(default_factory=Wake)
    head: Wake = field(default_factory=Wake)  # a batch's publication was recorded: the head can move on
    views: Wake = field(default_factory=Wake)  # a batch closed: the audiences' views are due


class Worker:
    """One dedicated thread for blocking work (the journal: SQLite is one writer and fsync must not stall the
    loop; or a chain client)."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


class Background:
    """Fire-and-forget coroutines kept referenced until done (the loop holds only weak references)."""

    def __init__(self) -> None:
        self._running: set[asyncio.Future[None]] = set()

    def spawn(self, aw: Awaitable[None]) -> None:
        fut = asyncio.ensure_future(aw)
        self._running.add(fut)
        fut.add_done_callback(self._running.discard)


def acked(f: asyncio.Future[None]) -> bool:
    """Whether a publish future ended in the broker's acknowledgement."""
    return not f.cancelled() and f.exception() is None
