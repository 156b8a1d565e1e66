"""Retention: readings leave the gateway's disk once they are delivered, anchored final and old enough."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import ClassVar

from gateway.clock import wall_ms
from gateway.config import RetentionConfig
from gateway.errors import JournalError
from gateway.journal import Purged
from gateway.stages.ports import Health, JournalErrorPolicy, PurgeLimit, Purger, Worker

log = logging.getLogger("tiyi.gateway")

DAY_MS = 86_400_000
MAX_BATCHES_PER_PASS = 1000


class Retention:
    """Runs the journal's purge every ``interval_s``; counts what went (the journal logs each pass). Records a
    configured audience's view still needs (not yet built, or built and not published) are never purged: the
    view is rebuilt from them to be (re)published."""

    journal_errors: ClassVar[JournalErrorPolicy] = JournalErrorPolicy.PAUSE

    def __init__(
        self,
        cfg: RetentionConfig,
        purger: Purger,
        worker: Worker,
        health: Health,
        views: PurgeLimit | None = None,
        audiences: Sequence[str] = (),
    ) -> None:
        self._cfg, self._purger, self._worker, self._health = cfg, purger, worker, health
        self._views, self._audiences = views, tuple(audiences)

    def _purge(self, cutoff: int) -> Purged | None:
        """Runs on the journal thread: the purge, bounded before the first batch an audience still needs."""
        limit = MAX_BATCHES_PER_PASS
        if self._views is not None and self._audiences:
            limit = self._views.purge_limit(self._audiences, MAX_BATCHES_PER_PASS)
        return self._purger.purge(cutoff, limit) if limit > 0 else None

    async def purge_once(self, now_ms: int | None = None) -> int:
        """One pass; returns the records purged. The cutoff is taken from the wall clock unless given."""
        cutoff = (wall_ms() if now_ms is None else now_ms) - int(self._cfg.max_age_days * DAY_MS)
        purged = await self._worker.call(self._purge, cutoff)
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
