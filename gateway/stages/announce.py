"""Announcements: signed batch manifests, final anchor receipts and final roll-ups, each until acknowledged;
and the signed head, which names the latest batch whose manifest the broker acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import ClassVar

from edge import cbor
from edge.errors import EdgeError
from edge.head import NO_MANIFEST, Head, sign_head
from edge.rollup import Rollup
from edge.signing import Signer
from edge.topics import Topics
from gateway.clock import monotonic, wall_ms
from gateway.errors import JournalError, PublishError
from gateway.heartbeats import IDLE_BEAT_S
from gateway.journal import BATCH_QUEUE, AnchorQueue, BatchStore
from gateway.mqtt import Publisher
from gateway.stages.ports import Background, Health, JournalErrorPolicy, Wake, Worker, acked

log = logging.getLogger("tiyi.gateway")

HEAD_MIN_SPACING_S = 1.0  # batches can close several times a second: one head signature per second is enough

Notice = tuple[str, str, int]  # (what: batch, receipt or rollup; queue; number)


class Announcements:
    """Publishes what the journal holds unpublished; one in-flight set, cleared on every (re)connect."""

    journal_errors: ClassVar[JournalErrorPolicy] = JournalErrorPolicy.PAUSE

    def __init__(
        self,
        gw: str,
        topics: Topics,
        rollup_targets: Sequence[str],
        batches: BatchStore,
        anchors: AnchorQueue,
        worker: Worker,
        publisher: Publisher,
        health: Health,
        head_wake: Wake,
    ) -> None:
        self._gw, self._topics, self._rollup_targets = gw, topics, tuple(rollup_targets)
        self._batches, self._anchors = batches, anchors
        self._worker, self._publisher, self._health = worker, publisher, health
        self._head_wake = head_wake
        self._inflight: set[Notice] = set()
        self._background = Background()

    def reconnected(self) -> None:
        self._inflight.clear()

    async def publish_once(self) -> bool:
        did = False
        for batch, payload in await self._worker.call(self._batches.unpublished_batches):
            did |= await self._send(("batch", BATCH_QUEUE, batch), self._topics.batch, payload)
        for batch, payload in await self._worker.call(self._anchors.unpublished_receipts, BATCH_QUEUE):
            did |= await self._send(("receipt", BATCH_QUEUE, batch), self._topics.anchor, payload)
        for target in self._rollup_targets:
            for number, receipt in await self._worker.call(self._anchors.unpublished_receipts, target):
                notice = ("rollup", target, number)
                if notice not in self._inflight:
                    did |= await self._send(notice, self._topics.rollup(target), await self._rollup(notice, receipt))
        return did

    async def _rollup(self, notice: Notice, receipt: bytes) -> bytes:
        """A final roll-up goes out with its batch roots, so a platform can check every batch against it."""
        _, target, number = notice
        first, last = await self._worker.call(self._anchors.rollup_range, target, number)
        roots = await self._worker.call(self._batches.batch_roots, first, last)
        return cbor.dumps({"rollup": bytes(Rollup(self._gw, target, number, first, tuple(roots))), "receipt": receipt})

    async def _send(self, notice: Notice, topic: str, payload: bytes) -> bool:
        if notice in self._inflight:
            return False
        self._inflight.add(notice)
        fut = await self._publisher.publish(topic, payload, 1, False)
        fut.add_done_callback(self._on_ack(notice))
        return True

    def _on_ack(self, notice: Notice) -> Callable[[asyncio.Future[None]], None]:
        def done(f: asyncio.Future[None]) -> None:
            if not acked(f):
                self._health.metrics.publish_failures += 1
                self._inflight.discard(notice)
                return
            self._background.spawn(self._record(notice))

        return done

    async def _record(self, notice: Notice) -> None:
        """Count the ack and store it; a batch's ack then lets the head name it (no head outruns the journal)."""
        what, queue, number = notice
        m = self._health.metrics
        try:
            if what == "batch":
                m.batches_published += 1
                await self._worker.call(self._batches.mark_batch_published, number)
                self._head_wake.set()
            elif what == "receipt":
                m.receipts_published += 1
                await self._worker.call(self._anchors.mark_receipt_published, number, queue)
            else:
                m.rollups_published += 1
                await self._worker.call(self._anchors.mark_receipt_published, number, queue)
        except JournalError as exc:  # sent again after a reconnect or restart: platforms ignore duplicates
            self._health.journal_failed(self.journal_errors, f"could not record the ack of {what} {number}", exc)


class HeadPublisher:
    """The signed head: moved on once a batch's publication is recorded, re-signed every ``interval_s``."""

    journal_errors: ClassVar[JournalErrorPolicy] = JournalErrorPolicy.PAUSE

    def __init__(
        self,
        gw: str,
        topics: Topics,
        interval_s: float,
        signer: Signer,
        batches: BatchStore,
        worker: Worker,
        publisher: Publisher,
        health: Health,
        wake: Wake,
    ) -> None:
        self._gw, self._topics, self._interval_s, self._signer = gw, topics, interval_s, signer
        self._batches, self._worker, self._publisher, self._health, self._wake = (
            batches,
            worker,
            publisher,
            health,
            wake,
        )
        self._lock = asyncio.Lock()  # heads go out in the order their journal reads were made
        self._sent = 0.0  # monotonic time of the last head sent

    async def publish(self) -> asyncio.Future[None]:
        """Sign and publish, retained, a head naming the latest batch whose manifest the broker acknowledged.

        The journal is read under the lock, so heads leave in the order of their reads and a later head
        never names an older batch than an earlier one (after a restart too: acks are recorded first).
        """
        async with self._lock:
            row = await self._worker.call(self._batches.last_published_batch)
            head = (
                Head(self._gw, 0, 0, NO_MANIFEST, wall_ms())
                if row is None
                else Head(self._gw, row.batch, row.last_seq, row.digest, wall_ms())
            )
            signed = await asyncio.get_running_loop().run_in_executor(None, sign_head, head, self._signer)
            fut = await self._publisher.publish(self._topics.head, bytes(signed), 1, True)
            self._sent = monotonic()
        fut.add_done_callback(self._on_ack)
        return fut

    async def publish_at_birth(self) -> None:
        """On (re)connect; a head that cannot be made never stops the rest of the birth."""
        try:
            await self.publish()
        except (JournalError, EdgeError) as exc:
            self._failed(exc)
            self._wake.set()

    def _on_ack(self, f: asyncio.Future[None]) -> None:
        if acked(f):
            self._health.metrics.heads_published += 1
        else:
            self._health.metrics.publish_failures += 1

    def _failed(self, exc: JournalError | EdgeError) -> None:
        if isinstance(exc, JournalError):
            self._health.journal_failed(self.journal_errors, "could not make the signed head", exc)
        else:
            log.error("could not make the signed head: %s", exc)

    async def run(self) -> None:
        while True:
            self._health.beat("head")
            await self._wake.wait(max(0.0, self._sent + self._interval_s - monotonic()))
            await asyncio.sleep(max(0.0, self._sent + HEAD_MIN_SPACING_S - monotonic()))
            self._wake.clear()  # this head covers whatever woke it meanwhile
            if not self._publisher.connected:
                with contextlib.suppress(TimeoutError):  # bounded: a loop waiting for the broker still beats
                    await self._publisher.wait_connected(IDLE_BEAT_S)  # the birth on connect sends a fresh head
                continue
            try:
                await self.publish()
            except PublishError as exc:
                log.debug("head not sent: %s", exc)
            except (JournalError, EdgeError) as exc:
                self._failed(exc)
                await asyncio.sleep(1.0)
