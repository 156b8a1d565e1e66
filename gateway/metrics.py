"""Counters the gateway keeps about itself, for progress lines, benchmarks and tests (not published: the status
topic carries only online/offline)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import asdict, dataclass

BATCH_CLOSE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ANCHOR_BUCKETS_S = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


@dataclass
class Metrics:
    frames_in: int = 0
    malformed_frames: int = 0
    unknown_frames: int = 0
    frames_joined: int = 0  # parts of multi-notification records joined into a later record
    records: int = 0
    records_delivered: int = 0
    messages_published: int = 0
    publish_failures: int = 0
    batches: int = 0
    batches_published: int = 0
    heads_published: int = 0  # signed heads the broker acknowledged
    anchors_submitted: int = 0
    anchors_included: int = 0
    anchors_final: int = 0
    anchors_reverted: int = 0
    anchor_conflicts: int = 0  # roots found on chain under someone else's anchor: the job is 'failed'
    anchor_transitions: int = 0  # every state change of a batch or roll-up anchor job
    rollups: int = 0
    rollups_final: int = 0
    rollups_published: int = 0
    receipts_published: int = 0
    chain_errors: int = 0
    journal_errors: int = 0
    clock_jumps: int = 0
    records_purged: int = 0  # removed by the retention policy after delivery and a final anchor
    batches_purged: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


class Latencies:
    """A histogram of durations kept without the Prometheus client (an optional extra), exported at scrape time.

    Buckets are upper bounds, inclusive, as Prometheus's ``le`` means them; the last count is above them all.
    """

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), the last bound being +Inf."""
        out, total = [], 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out
