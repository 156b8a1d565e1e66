"""Delivery: every journaled record to its device's data topic, at least once, and the acks back as ranges."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import ClassVar, Protocol

from edge.record import encode_data_message
from edge.topics import Topics
from gateway.errors import JournalError, PublishError
from gateway.heartbeats import IDLE_BEAT_S
from gateway.mqtt import Publisher
from gateway.stages.ingest import Row
from gateway.stages.ports import DeliveryLog, Health, JournalErrorPolicy, Wake, Worker, acked

log = logging.getLogger("tiyi.gateway")

UNDELIVERED_FETCH = 5_000
FRESH_MAX = 20_000  # just-journaled records kept for the publisher (about 4 MB)
ACK_FLUSH_S = 0.2


class Delivery:
    """The cursor through the journal, the fresh cache, per-device chunks and the acks waiting to be recorded."""

    journal_errors: ClassVar[JournalErrorPolicy] = JournalErrorPolicy.RESEND_LATER

    def __init__(
        self,
        topics: Topics,
        per_message: int,
        records: DeliveryLog,
        worker: Worker,
        publisher: Publisher,
        health: Health,
        wake: Wake,
    ) -> None:
        self._topics, self._per_message = topics, per_message
        self._records, self._worker, self._publisher, self._health, self._wake = (
            records,
            worker,
            publisher,
            health,
            wake,
        )
        self._cursor = 0  # the last seq handed to the publisher in this connection
        self._fresh: list[tuple[int, str, bytes]] = []  # journaled, not yet published: see journaled()
        self._acked: list[int] = []  # acknowledged seqs not yet recorded
        self._generation = 0  # one per connection: acks of an older one must not move the cursor

    def journaled(self, rows: list[Row]) -> None:
        """Keep just-journaled records in memory so the publisher sends them without reading them back.

        The journal stays the source of truth: the fresh list is only used while it continues exactly where
        the cursor is, and it is bounded (past the bound, the publisher reads SQLite as after a restart).
        """
        fresh = self._fresh
        if fresh and (fresh[-1][0] + 1 != rows[0][0] or len(fresh) + len(rows) > FRESH_MAX):
            fresh.clear()
        fresh.extend((q, dev, data) for q, dev, _, data in rows)
        self._wake.set()

    def reconnected(self) -> None:
        """A new connection: everything not acknowledged is re-read from the journal and sent again."""
        self._generation += 1
        self._cursor = 0
        self._fresh.clear()

    async def publish_once(self) -> bool:
        """Send the next undelivered records; whether there were any."""
        gen = self._generation
        rows = self._take_fresh(UNDELIVERED_FETCH)
        if rows is None:
            rows = await self._worker.call(self._records.undelivered, self._cursor, UNDELIVERED_FETCH)
        if not rows:
            return False
        by_dev: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
        for seq, dev, data in rows:
            by_dev[dev].append((seq, data))
        n = self._per_message
        for dev, items in by_dev.items():
            for i in range(0, len(items), n):
                chunk = items[i : i + n]
                fut = await self._publisher.publish(
                    self._topics.data(dev), encode_data_message([d for _, d in chunk]), 1, False
                )
                fut.add_done_callback(self._on_ack([s for s, _ in chunk]))
                self._health.metrics.messages_published += 1
        if gen == self._generation:
            self._cursor = rows[-1][0]
        return True

    def _take_fresh(self, limit: int) -> list[tuple[int, str, bytes]] | None:
        """Up to ``limit`` fresh records right after the cursor, or None when the journal must be read."""
        fresh = self._fresh
        if fresh and fresh[0][0] <= self._cursor:  # already published through the journal
            del fresh[: self._cursor - fresh[0][0] + 1]
        if not fresh or fresh[0][0] != self._cursor + 1:
            return None
        rows = fresh[:limit]
        del fresh[:limit]
        return rows

    def _on_ack(self, seqs: list[int]) -> Callable[[asyncio.Future[None]], None]:
        def done(f: asyncio.Future[None]) -> None:
            if not acked(f):
                self._health.metrics.publish_failures += 1
                return
            self._acked.extend(seqs)
            self._health.metrics.records_delivered += len(seqs)

        return done

    async def flush_acks(self) -> None:
        """Record the acknowledged seqs now (the ack loop does it every ``ACK_FLUSH_S``)."""
        if not self._acked:
            return
        seqs, self._acked = self._acked, []
        try:
            await self._worker.call(self._records.mark_delivered, seqs)
        except (JournalError, RuntimeError) as exc:
            # Losing these marks only causes identical re-sends after a restart.
            self._health.journal_failed(self.journal_errors, f"could not record {len(seqs)} deliveries", exc)

    async def ack_loop(self) -> None:
        while True:
            self._health.beat("acks")
            await asyncio.sleep(ACK_FLUSH_S)
            await self.flush_acks()


class Announcer(Protocol):
    """Anything else the publish loop sends each round (the announcements stage)."""

    async def publish_once(self) -> bool: ...


class PublishLoop:
    """Runs the publishing rounds (records, then announcements) while connected; idles until woken."""

    def __init__(
        self, publisher: Publisher, health: Health, wake: Wake, delivery: Delivery, announcements: Announcer
    ) -> None:
        self._publisher, self._health, self._wake = publisher, health, wake
        self._delivery, self._announcements = delivery, announcements

    async def run(self) -> None:
        while True:
            self._health.beat("publish")
            if not self._publisher.connected:
                with contextlib.suppress(TimeoutError):  # bounded: a loop waiting for the broker still beats
                    await self._publisher.wait_connected(IDLE_BEAT_S)
                continue
            try:
                did = await self._delivery.publish_once()
                did |= await self._announcements.publish_once()
            except PublishError as exc:
                self._health.metrics.publish_failures += 1
                log.debug("publish interrupted: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if not did:
                await self._wake.wait(0.5)
