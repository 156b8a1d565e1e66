"""The journal's parts share one file, and a stage needs only the small port it uses: a test builds a stage
with a fake of that port instead of a journal."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.manifest import GENESIS_PREV, build_manifest, sign_manifest
from edge.record import Record
from edge.sm2 import generate_signer
from gateway.config import RetentionConfig
from gateway.journal import Purged, SqliteJournal
from gateway.stages.ports import Health, Worker
from gateway.stages.retention import DAY_MS, Retention

SIGNER = generate_signer()


def _record(seq: int) -> Record:
    return Record(
        gw="gw-1",
        seq=seq,
        dev="dev-1",
        t=1_700_000_000_000 + seq,
        kind="heart_rate",
        val={"heart_rate": 60},
        raw=bytes([0, 60]),
        salt=bytes(16),
    )


def test_what_one_part_writes_the_others_see_in_the_same_file(tmp_path: Path) -> None:
    j = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")
    j.records.append([_record(s) for s in (1, 2, 3)])
    assert j.batches.unbatched_range() == (1, 3)
    manifest = build_manifest("gw-1", 1, 1, j.records.read(1, 3), GENESIS_PREV, 1_700_000_100_000)
    j.batches.add_batch(manifest, sign_manifest(manifest, SIGNER))
    (job,) = j.anchors.anchor_jobs(["pending"])  # closing a batch queued its anchor job
    assert (job.number, job.root, job.count) == (1, manifest.root, 3)
    assert j.batches.unbatched_range() is None and j.stats().batches == 1
    j.close()
    again = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")
    assert again.records.next_seq == 4 and [r.number for r in again.anchors.anchor_jobs(["pending"])] == [1]
    again.close()


class FakePurger:
    def __init__(self, result: Purged | None) -> None:
        self.result, self.cutoffs = result, list[int]()

    def purge(self, older_than_t: int, max_batches: int = 1000) -> Purged | None:
        self.cutoffs.append(older_than_t)
        return self.result


def test_the_retention_stage_runs_on_a_fake_purger_and_counts_what_it_removed() -> None:
    purger, health, worker = FakePurger(Purged(2, 150, 1, 150)), Health(), Worker("test-journal")
    stage = Retention(RetentionConfig(max_age_days=2), purger, worker, health)
    try:
        assert asyncio.run(stage.purge_once(now_ms=10 * DAY_MS)) == 150
    finally:
        worker.shutdown()
    assert purger.cutoffs == [8 * DAY_MS]  # everything older than two days qualifies
    assert (health.metrics.records_purged, health.metrics.batches_purged) == (150, 2)
