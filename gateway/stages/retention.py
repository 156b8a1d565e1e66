"""Retention: readings leave the gateway's disk once they are delivered, anchored final and old enough."""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from gateway.clock import wall_ms
from gateway.config import RetentionConfig
from gateway.errors import JournalError
from gateway.stages.ports import Health, JournalErrorPolicy, Purger, Worker

log = logging.getLogger("tiyi.gateway")

DAY_MS = 86_400_000


class Retention:
    """Runs the journal's purge every ``interval_s``; counts what went (the journal logs each pass)."""

    journal_errors: ClassVar[JournalErrorPolicy] = JournalErrorPolicy.PAUSE

    def __init__(self, cfg: RetentionConfig, purger: Purger, worker: Worker, health: Health) -> None:
        self._cfg, self._purger, self._worker, self._health = cfg, purger, worker, health

    async def purge_once(self, now_ms: int | None = None) -> int:
        """One pass; returns the records purged. The cutoff is taken from the wall clock unless given."""
        cutoff = (wall_ms() if now_ms is None else now_ms) - int(self._cfg.max_age_days * DAY_MS)
        purged = await self._worker.call(self._purger.purge, cutoff)
        if purged is None:
            return 0
        self._health.metrics.records_purged += purged.records
        self._health.metrics.batches_purged += purged.batches
        return purged.records

    async def run(self) -> None:
        while True:
            self._health.beat("retention")
            try:
                await self.purge_once()
            except JournalError as exc:
                self._health.journal_failed(self.journal_errors, "could not purge old records", exc)
            await asyncio.sleep(self._cfg.interval_s)
