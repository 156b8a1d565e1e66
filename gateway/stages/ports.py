"""What the stages need from outside and from each other: small protocols and the plumbing they share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar, runtime_checkable

from anchoring.lifecycle import Job, Step
from edge.frame import Frame
from gateway.clock import monotonic
from gateway.heartbeats import Heartbeats
from gateway.journal import Purged
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


# What each stage uses of the journal (``gateway.journal``'s parts satisfy them), so a test builds a stage with
# a fake of just that. Batching and announcements use most of the batch and anchor parts and take those.
class RecordAppender(Protocol):
    """Ingest: seqs continue from ``next_seq``; ``append_encoded`` stores ``(seq, dev, t, bytes)`` rows durably."""

    @property
    def next_seq(self) -> int: ...

    def append_encoded(self, rows: Sequence[tuple[int, str, int, bytes]]) -> None: ...


class DeliveryLog(Protocol):
    """Delivery: what is not yet acknowledged after a cursor, and the acknowledgements to store."""

    def undelivered(self, after_seq: int, limit: int) -> list[tuple[int, str, bytes]]: ...

    def mark_delivered(self, seqs: Iterable[int]) -> None: ...


class AnchorJobs(Protocol):
    """The anchor driver: one target's open jobs, and each lifecycle step to store."""

    def anchor_jobs(self, states: Collection[str], queue: str = ...) -> list[Job]: ...

    def advance(self, number: int, step: Step, queue: str = ...) -> None: ...


class Purger(Protocol):
    """Retention: remove the records that qualify (see ``gateway.journal.Maintenance.purge``)."""

    def purge(self, older_than_t: int, max_batches: int = ...) -> Purged | None: ...


class PurgeLimit(Protocol):
    """Retention: how many batches may be considered without taking records an audience's view still needs."""

    def purge_limit(self, auds: Sequence[str], most: int) -> int: ...


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
    beats: Heartbeats = field(default_factory=Heartbeats)  # each stage loop's passes, for the watchdog

    def beat(self, loop: str) -> None:
        self.beats.beat(loop)

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


class CallHung(TimeoutError):
    """A call on a bounded worker did not return within its bound; the thread is still inside it."""


class Worker:
    """One dedicated thread for blocking work (the journal: SQLite is one writer and fsync must not stall the
    loop; or a chain client).

    With ``bound_s`` (a chain client: a node that accepts the connection and never answers) each call is
    given up on after that long with :class:`CallHung`, and the worker reports how long the call its thread
    is stuck in has run (``hung_for``): nothing can stop a thread, so the watchdog lets systemd restart us.
    """

    def __init__(self, name: str, bound_s: float | None = None) -> None:
        self.name, self.bound_s = name, bound_s
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._running_since: float | None = None  # set and cleared on the worker's thread

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        fut = asyncio.get_running_loop().run_in_executor(self._pool, self._timed, fn, args)
        if self.bound_s is None:
            return await fut
        try:
            return await asyncio.wait_for(fut, self.bound_s)
        except TimeoutError:
            raise CallHung(
                f"{getattr(fn, '__name__', 'a call')} on {self.name} did not return within {self.bound_s:g} s"
            ) from None

    def enqueue(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the worker's thread after the calls already queued, without waiting for it."""
        self._pool.submit(self._timed, fn, ())

    def _timed(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        self._running_since = monotonic()
        try:
            return fn(*args)
        finally:
            self._running_since = None

    def hung_for(self, now: float) -> float | None:
        """Seconds the current call has run when that is past the bound, else None (idle, or within it)."""
        since = self._running_since
        if self.bound_s is None or since is None or now - since <= self.bound_s:
            return None
        return now - since

    def shutdown(self) -> None:
        # A thread stuck in a call would hold the process's exit forever; its queued calls are dropped.
        hung = self.hung_for(monotonic()) is not None
        self._pool.shutdown(wait=not hung, cancel_futures=hung)


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
