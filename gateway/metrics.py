"""Counters the gateway keeps about itself, for progress lines, benchmarks and tests (not published: the status
topic carries only online/offline)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
