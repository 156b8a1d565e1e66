"""Batching: records into signed Merkle batches, and batches into roll-ups for the second anchor targets."""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from edge.manifest import GENESIS_PREV, build_manifest, sign_manifest
from edge.rollup import Rollup
from edge.signing import Signer
from gateway.clock import monotonic, wall_ms
from gateway.config import BatchConfig, RollupConfig
from gateway.errors import JournalError
from gateway.journal import AnchorQueue, BatchStore, RecordLog
from gateway.stages.ports import Health, JournalErrorPolicy, Wakes, Worker

log = logging.getLogger("tiyi.gateway")


class Batching:
    """Closes a batch at ``max_records`` or ``max_age_s``; when draining, at once. Rolls batches up per target."""

    journal_errors: ClassVar[JournalErrorPolicy] = JournalErrorPolicy.PAUSE

    def __init__(
        self,
        gw: str,
        cfg: BatchConfig,
        signer: Signer,
        records: RecordLog,
        batches: BatchStore,
        anchors: AnchorQueue,
        worker: Worker,
        health: Health,
        wakes: Wakes,
    ) -> None:
        self._gw, self._cfg, self._signer = gw, cfg, signer
        self._records, self._batches, self._anchors = records, batches, anchors
        self._worker, self._health, self._wakes = worker, health, wakes
        self._unbatched_since: float | None = None
        self._flushing = False  # draining: close what there is now

    def flush(self) -> None:
        self._flushing = True
        self._wakes.batch.set()

    async def run(self) -> None:
        while True:
            self._health.beat("batching")
            await self._wakes.batch.wait(0.1)
            try:
                while await self._maybe_close():
                    self._health.beat("batching")
            except JournalError as exc:
                self._health.journal_failed(self.journal_errors, "could not close a batch", exc)
                await asyncio.sleep(1.0)

    async def _maybe_close(self) -> bool:
        rng = await self._worker.call(self._batches.unbatched_range)
        if rng is None:
            self._unbatched_since = None
            return False
        first, last = rng
        now = monotonic()
        if self._unbatched_since is None:
            self._unbatched_since = now
        if last - first + 1 >= self._cfg.max_records:
            last = first + self._cfg.max_records - 1
        elif not (self._flushing or now - self._unbatched_since >= self._cfg.max_age_s):
            return False
        await self._close(first, last)
        self._unbatched_since = None if last == rng[1] else now
        return True

    async def _close(self, first: int, last: int) -> None:
        started = monotonic()
        records = await self._worker.call(self._records.read, first, last)
        prev_row = await self._worker.call(self._batches.last_batch)
        number = 1 if prev_row is None else prev_row.batch + 1
        prev = GENESIS_PREV if prev_row is None else prev_row.digest
        manifest = build_manifest(self._gw, number, first, records, prev, wall_ms())
        signed = await asyncio.get_running_loop().run_in_executor(None, sign_manifest, manifest, self._signer)
        await self._worker.call(self._batches.add_batch, manifest, signed)
        self._health.metrics.batches += 1
        now = monotonic()
        self._health.batch_closed(number, now - started, now)
        log.info(
            "batch %d closed: seq %d..%d (%d records), root %s",
            number,
            first,
            last,
            manifest.count,
            manifest.root.hex()[:16],
        )
        self._wakes.publish.set()
        self._wakes.anchor.set()
        self._wakes.views.set()

    async def rollup_loop(self, rollup: RollupConfig) -> None:
        """Every period (and when draining), roll up the batches closed since the previous roll-up."""
        period = rollup.period_s
        due = monotonic() + period
        while True:
            self._health.beat(f"rollup-{rollup.target}")
            await asyncio.sleep(min(1.0, max(0.05, due - monotonic())))
            if not (self._flushing or monotonic() >= due):
                continue
            if self._flushing and await self._worker.call(self._batches.unbatched_range) is not None:
                continue  # the last batch is still to close; roll it up too
            try:
                made = await self._worker.call(self._make_rollup, rollup.target)
            except JournalError as exc:
                self._health.journal_failed(self.journal_errors, f"could not store a roll-up for {rollup.target}", exc)
                continue
            if made is not None:
                log.info(
                    "roll-up %d for %s: batches %d..%d, root %s",
                    made.number,
                    rollup.target,
                    made.first_batch,
                    made.last_batch,
                    made.root.hex()[:16],
                )
                self._health.metrics.rollups += 1
                self._wakes.anchor.set()
            if monotonic() >= due:
                due = monotonic() + period

    def _make_rollup(self, target: str) -> Rollup | None:
        """Runs on the journal thread: read the new batch roots, build the tree, store the job."""
        last = self._batches.last_batch()
        prev = self._anchors.last_rollup(target)
        first = 1 if prev is None else prev[1] + 1
        if last is None or last.batch < first:
            return None
        number = 1 if prev is None else prev[0] + 1
        rollup = Rollup(self._gw, target, number, first, tuple(self._batches.batch_roots(first, last.batch)))
        self._anchors.add_rollup(target, number, first, rollup.last_batch, rollup.root)
        return rollup

    def rollups_behind(self, targets: list[str]) -> int:
        """Runs on the journal thread: roll-ups not final or not published, plus batches not yet rolled up."""
        if not targets:
            return 0
        last = self._batches.last_batch()
        behind = 0
        for target in targets:
            prev = self._anchors.last_rollup(target)
            behind += (0 if last is None else last.batch) - (0 if prev is None else prev[1])
        return self._anchors.rollups_open() + behind
