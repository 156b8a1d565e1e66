"""Progress marks of the gateway's long-running loops, for the systemd watchdog.

A task that is still running is not necessarily a loop that still works: one stuck inside an ``await`` (a
future nobody completes, a wait on a thread that hung) looks alive to ``Task.done()``. So each loop marks
every pass it makes (``beat``), and each is expected to make one within its own bound: its longest idle wait
by design (a retention pass every hour, a head every interval) plus :data:`PASS_BOUND_S` for the work of one
pass. A loop idle by design keeps beating because every idle wait it makes is bounded; one whose last beat is
older than its bound is overdue, and the watchdog stops feeding systemd.
"""

from __future__ import annotations

from gateway.clock import monotonic

# The longest one pass of a loop may work before it counts as stuck: journal calls on a slow SD card, a
# publish waiting for room in the in-flight window, a chain call (each bounded by CHAIN_CALL_S).
PASS_BOUND_S = 90.0
# Loops with nothing to do wake at least this often only to say so (a timeout, not a poll of any state).
IDLE_BEAT_S = 1.0


class Heartbeats:
    """``expect`` a loop with its bound, ``beat`` on every pass, ask ``overdue`` (monotonic seconds)."""

    __slots__ = ("_bounds", "_last", "pass_bound_s")

    def __init__(self, pass_bound_s: float = PASS_BOUND_S) -> None:
        self.pass_bound_s = pass_bound_s
        self._bounds: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def expect(self, loop: str, idle_s: float, now: float | None = None) -> None:
        """From now on ``loop`` must beat within ``idle_s`` (its longest idle wait) plus one pass's work."""
        self._bounds[loop] = idle_s + self.pass_bound_s
        self._last[loop] = monotonic() if now is None else now

    def beat(self, loop: str) -> None:
        """One pass of ``loop`` (a loop nobody expects, e.g. a stage run alone in a test, is not tracked)."""
        if loop in self._bounds:
            self._last[loop] = monotonic()

    def bound(self, loop: str) -> float:
        return self._bounds[loop]

    @property
    def loops(self) -> list[str]:
        return sorted(self._bounds)

    def overdue(self, now: float) -> dict[str, float]:
        """Loop → seconds since its last pass, for every loop past its bound."""
        return {n: now - self._last[n] for n, b in self._bounds.items() if now - self._last[n] > b}
